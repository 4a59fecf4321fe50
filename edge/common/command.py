"""The one command harness: every command's `main` is `command.entry_point(COMMAND)`.

    COMMAND = command.Command(name="evaluate", prog="python train/evaluate.py", description=...,
                              config_class=EvaluateConfig, run=run, render=format_result)
    main = command.entry_point(COMMAND)

A command registers its config dataclass and its `run(config)`; the harness owns the rest, so
that no command wires it again:
- the flags, built from the dataclass (edge.common.configuration), plus `--config FILE` (YAML or
  JSON) on every command and `--preset NAME` where the command has presets. Precedence, lowest
  first: the dataclass defaults, the preset, the file, the flags. A wrong key or value ends with
  argparse's one-line usage error, exit 2;
- logging and TensorFlow's C++ log level (`quiet_tensorflow`), set before `run` imports anything;
- the errors rule: a `UserError` prints one line on stderr and exits 2 (`errors.EXIT_USAGE`);
  anything else is a bug and keeps its traceback. A command may name further exceptions it turns
  into an exit status (the camera's broken pipe, a training run's Ctrl-C);
- printing the result: `render(config, result)`, or `to_json(result)` where the command names a
  boolean `json_output` field and it is set (predict's `--json`); where it names a `json_file`
  field (a benchmark's `--json FILE`), the result is also written there. `exit_status(config,
  result)` is the exit code.

`umbrella` is the `cifar-edge MODE ...` entry point (as `yolo MODE` or `huggingface-cli` have it):
it finds the command by name in `COMMANDS` and runs it with the same harness. The table names
modules, not imports, because a Pi or Space holds only edge/ (and demo/): `cifar-edge camera`
must work there, and a training command asked for on such a machine answers with one line
saying which part is missing instead of an ImportError.

Standard library only.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edge.common import artifacts, configuration, errors
from edge.common.errors import UserError

#: TensorFlow's C++ log level for every command, set before anything imports TensorFlow (it reads the
#: setting once, at import). 3 hides its INFO, WARNING and ERROR lines, among them "failed call to
#: cuInit: ... (303)", which on a machine without an NVIDIA driver only says there is no GPU.
#: TensorFlow's real errors still arrive as Python exceptions; TF_CPP_MIN_LOG_LEVEL=0 shows its whole
#: log, and train/devices.py reads it so when a GPU was expected and none was found.
QUIET_TENSORFLOW_LOG_LEVEL = "3"
#: How a library's log records look on stderr: warnings and worse, each naming its logger.
LOG_FORMAT = "%(name)s: %(levelname)s: %(message)s"


def quiet_tensorflow() -> None:
    """Quiet TensorFlow's C++ log unless the user chose a level (an environment variable wins)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_TENSORFLOW_LOG_LEVEL)


@dataclasses.dataclass(frozen=True)
class Positional:
    """A positional argument; its values become the config field of the same name."""

    name: str
    metavar: str
    help: str
    nargs: str | None = "+"  # argparse's: "+" one or more, "?" optional, None exactly one


def _no_output(config: Any, result: Any) -> None:
    return None


def _success(config: Any, result: Any) -> int:
    return 0


def _as_json(result: Any) -> Any:
    return dataclasses.asdict(result) if dataclasses.is_dataclass(result) else result


@dataclasses.dataclass(frozen=True)
class Command:
    """One command: its name, its config dataclass, its `run(config)` and how its result is shown."""

    name: str  # the MODE of `cifar-edge MODE`
    prog: str  # what --help and usage errors call it: the script path
    description: str
    config_class: type
    run: Callable[[Any], Any]
    #: The text printed on stdout after `run` (None prints nothing).
    render: Callable[[Any, Any], str | None] = _no_output
    #: The exit status for a finished run (0 unless the command says otherwise: a failed gate is 1).
    exit_status: Callable[[Any, Any], int] = _success
    #: The result as JSON-ready values, for `json_output` and `json_file`.
    to_json: Callable[[Any], Any] = _as_json
    #: The config's boolean field asking for the result as JSON on stdout instead of `render` (predict's --json).
    json_output: str | None = None
    #: The config's path field naming a file to write the result to as JSON (a benchmark's --json FILE).
    json_file: str | None = None
    positional: tuple[Positional, ...] = ()
    #: Fields that must be set (by a flag, the preset or the file): argparse's usage error otherwise.
    required: tuple[str, ...] = ()
    presets: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    epilog: str | None = None
    #: What a UserError's line starts with: "camera: error: ..." (None: "error: ...").
    error_prefix: str | None = None
    #: Further exceptions the command ends with an exit status of its own (checked in order, after UserError).
    handlers: tuple[tuple[type[BaseException], Callable[[BaseException, Any], int]], ...] = ()


#: The exit status of a command that handled some of its inputs and could not read others
#: (predict, classify): 0 all done, this when some failed, errors.EXIT_USAGE when nothing ran.
EXIT_SOME_FAILED = 1


def report_failed_inputs(failures: Sequence[Mapping[str, str]]) -> int:
    """Name each input a command could not read on stderr ("error: FILE: reason"); the exit status:
    EXIT_SOME_FAILED when there was one, else 0. The inputs that could be read were answered."""
    for failure in failures:
        print(f"error: {failure['file']}: {failure['error']}", file=sys.stderr)
    return EXIT_SOME_FAILED if failures else 0


def build_parser(command: Command) -> argparse.ArgumentParser:
    """The command's argparse parser: its positionals, --preset, --config, then one flag per config field."""
    parser = argparse.ArgumentParser(prog=command.prog, description=command.description, epilog=command.epilog)
    for positional in command.positional:
        parser.add_argument(positional.name, nargs=positional.nargs, metavar=positional.metavar, help=positional.help)
    if command.presets:
        parser.add_argument("--preset", choices=sorted(command.presets), help="start from a named recipe")
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file setting any option below")
    configuration.add_arguments(
        parser, command.config_class, skip=[positional.name for positional in command.positional]
    )
    return parser


def parse_config(command: Command, argv: Sequence[str] | None = None) -> Any:
    """The command's config from the command line: defaults < --preset < --config FILE < flags."""
    parser = build_parser(command)
    arguments = vars(parser.parse_args(argv))
    preset_name = arguments.pop("preset", None)
    config_file = arguments.pop("config", None)
    layers = [command.presets[preset_name]] if preset_name else []
    try:
        if config_file:
            layers.append(configuration.read_config_file(config_file))
        layers.append(arguments)
        config = configuration.build_config(command.config_class, *layers, source=config_file or "the command line")
    except configuration.ConfigError as error:
        parser.error(str(error))  # Exits 2 with the usage line.
    for name in command.required:
        if not getattr(config, name):
            parser.error(f"--{name.replace('_', '-')} is required")
    return config


def execute(command: Command, argv: Sequence[str] | None = None) -> int:
    """Parse, run, print and return the exit status, by the rules in this module's docstring."""
    quiet_tensorflow()
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)  # No-op when the caller configured logging.
    config = parse_config(command, argv)
    try:
        result = command.run(config)
    except UserError as error:
        return errors.report(error, command=command.error_prefix)
    except BaseException as error:  # noqa: BLE001 - only the command's own handlers; the rest is re-raised.
        for kind, handle in command.handlers:
            if isinstance(error, kind):
                return handle(error, config)
        raise
    if command.json_output and getattr(config, command.json_output):  # --json: the result, for a program.
        print(json.dumps(command.to_json(result), indent=2))
    else:
        text = command.render(config, result)
        if text is not None:
            print(text)
    json_file = getattr(config, command.json_file) if command.json_file else None
    if json_file:  # --json FILE (the benchmarks): the result kept beside what was printed.
        artifacts.write_json(json_file, command.to_json(result))
        print(f"wrote {json_file}")
    return command.exit_status(config, result)


def entry_point(registered: Command) -> Callable[[Sequence[str] | None], int]:
    """The `main(argv=None) -> int` of a registered command: what its console script, `python FILE`
    and `python -m MODULE` call. It carries the command as `main.command`."""

    def main(argv: Sequence[str] | None = None) -> int:
        return execute(registered, argv)

    main.__doc__ = f"{registered.prog}: {registered.description}"
    main.command = registered  # type: ignore[attr-defined]
    return main


#: `cifar-edge MODE`: each mode's module, which holds its `COMMAND`. Imported only when asked for.
COMMANDS = {
    "train": "train.run",
    "pretrained": "train.pretrained",
    "evaluate": "train.evaluate",
    "export": "train.export",
    "check": "train.check",
    "predict": "train.predict",
    "compare": "train.compare",
    "classify": "edge.classify",
    "camera": "edge.camera",
    "demo": "demo.app",
    "deploy": "hf_space.deploy",
}
#: What each top-level package needs installed, for the one line a missing side gets.
INSTALL_HINTS = {
    "train": 'the training side: pip install -e ".[train]"',
    "demo": 'the demo: pip install -e ".[demo]"',
    "hf_space": 'the Space tools: pip install -e ".[demo,hub]"',
    "edge": 'the device side: pip install -e ".[edge]"',
}


def load_command(mode: str) -> Command:
    """The registered Command of `mode`; a UserError naming what to install when its side is absent."""
    module_name = COMMANDS[mode]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        package = module_name.split(".")[0]
        raise UserError(f"cifar-edge {mode} needs {INSTALL_HINTS[package]} ({error})") from None
    return module.COMMAND


def umbrella(argv: Sequence[str] | None = None) -> int:
    """`cifar-edge MODE [OPTIONS]`: run one of the project's commands (`cifar-edge MODE --help` for its options)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: cifar-edge {" + ",".join(COMMANDS) + "} [OPTIONS]  (cifar-edge MODE --help for a mode's options)"
    if not arguments or arguments[0] in ("-h", "--help"):
        print(usage)
        return 0 if arguments else errors.EXIT_USAGE
    mode, rest = arguments[0], arguments[1:]
    if mode not in COMMANDS:
        print(f"{usage}\ncifar-edge: error: unknown mode {mode!r}", file=sys.stderr)
        return errors.EXIT_USAGE
    try:
        command = load_command(mode)
    except UserError as error:
        return errors.report(error, command="cifar-edge")
    return execute(dataclasses.replace(command, prog=f"cifar-edge {mode}"), rest)


if __name__ == "__main__":
    raise SystemExit(umbrella())
