"""Command lines and config files built from one documented dataclass.

Each stage (training, export, camera, demo) keeps its options in a dataclass
whose fields carry `metadata={"help": ..., "group": ...}`. This module derives
the argparse flags from it, reads YAML or JSON config files, and rejects
unknown keys and wrong types with a message that names them, so options are
never listed twice. The command harness (edge.common.command) puts these
together: precedence, lowest first, is the dataclass defaults, a preset, a
config file, flags given on the command line.

Standard library only (PyYAML is imported when a YAML file is read).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from edge.common.errors import UserError

ConfigT = TypeVar("ConfigT")


class ConfigError(UserError):
    """A config file or flag is wrong; the message names the key and what was expected."""


def _help_text(text: str, default: Any) -> str:
    """The flag's help with "(default: ...)" appended, unless the text already says what the default is."""
    if "default" not in text.lower():
        text = f"{text} (default: {default!r})"
    return text.replace("%", "%%")  # argparse formats help with %


def option(default: Any, help: str, group: str = "Options", **argparse_options: Any) -> Any:
    """A dataclass field with its help text and `--help` group.

    `argparse_options` go to `add_argument` (for example `metavar`).
    """
    metadata = {"help": help, "group": group, "argparse": argparse_options}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_types(config_class: type) -> dict[str, Any]:
    """The resolved type of every field (annotations may be strings)."""
    return typing.get_type_hints(config_class)


def add_arguments(parser: argparse.ArgumentParser, config_class: type, skip: Sequence[str] = ()) -> None:
    """Add one flag per field of `config_class` (except those in `skip`), grouped as the fields say.

    Defaults are suppressed so that `parse_args` returns only what the user
    typed; `build_config` then layers it over the other sources.
    """
    groups: dict[str, argparse._ArgumentGroup] = {}
    hints = field_types(config_class)
    for spec in dataclasses.fields(config_class):
        if spec.name in skip:
            continue
        metadata = spec.metadata
        group_name = metadata.get("group", "Options")
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(group_name)
        group = groups[group_name]
        flag = "--" + spec.name.replace("_", "-")
        kind, choices, optional = _describe(hints[spec.name])
        default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()  # type: ignore[misc]
        help_text = _help_text(metadata.get("help", ""), default)
        extra = dict(metadata.get("argparse", {}))
        if kind is bool:
            group.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text, **extra
            )
            continue
        if kind in (list, tuple):
            extra.setdefault("nargs", "+")
        group.add_argument(
            flag, default=argparse.SUPPRESS, help=help_text, choices=choices, type=_parser_for(kind, optional), **extra
        )


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml, .yml) or JSON file holding a mapping of option names to values."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml  # Only needed for YAML files; JSON works without it.

        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})") from None
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: not valid JSON ({error})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got {type(values).__name__}")
    return {str(key).replace("-", "_"): value for key, value in values.items()}


def build_config(config_class: type[ConfigT], *layers: Mapping[str, Any], source: str = "config") -> ConfigT:
    """Make a `config_class` from mappings applied in order (later ones win).

    Unknown keys and values of the wrong type raise `ConfigError` naming the key.
    """
    hints = field_types(config_class)
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key not in hints:
                known = ", ".join(sorted(hints))
                raise ConfigError(f"unknown option {key!r} in {source}; known options: {known}")
            merged[key] = coerce(key, value, hints[key])
    return config_class(**merged)


def coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check `value` against the field's type; convert where it is lossless (int to float, list to tuple)."""
    kind, choices, optional = _describe(annotation)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"option {name!r} may not be null")
    if choices is not None and value not in choices:
        raise ConfigError(f"option {name!r} must be one of {list(choices)}, got {value!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, (str, Path)):
            return str(value)
    elif kind in (list, tuple):
        if isinstance(value, (list, tuple)):
            return kind(value)
    else:
        return value
    raise ConfigError(f"option {name!r} expects {kind.__name__}, got {type(value).__name__} {value!r}")


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain JSON-ready values."""
    return {
        key: (list(value) if isinstance(value, tuple) else value) for key, value in dataclasses.asdict(config).items()
    }


def _describe(annotation: Any) -> tuple[type, tuple | None, bool]:
    """Reduce a field annotation to (base type, allowed values or None, optional)."""
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        arguments = [argument for argument in typing.get_args(annotation) if argument is not type(None)]
        optional = len(arguments) < len(typing.get_args(annotation))
        annotation = arguments[0] if len(arguments) == 1 else str
        origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        return type(choices[0]), choices, optional
    if origin in (list, tuple):
        return origin, None, optional
    if annotation in (bool, int, float, str, list, tuple):
        return annotation, None, optional
    return object, None, optional


def _parser_for(kind: type, optional: bool):
    """An argparse `type=` callable; `none` on the command line means null for optional fields."""

    def parse(text: str) -> Any:
        if optional and text.lower() in ("none", "null"):
            return None
        if kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        return text

    return parse
