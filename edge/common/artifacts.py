"""Reading and writing the files that travel with a model.

Every artifact of a run (edge/common/run_folder.py names them) is written through
`write_atomic`, so a run killed half-way never leaves a half-written file: the
bytes go to a temporary file in the same folder, which is then renamed over the
target in one step. Imports nothing heavier than the standard library, so the
Pi and the Space can use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge.common.errors import UserError

#: The name every temporary file of `atomic_path` starts with: hidden from listings, and what
#: `remove_partial_files` looks for when a killed writer left one behind.
PARTIAL_PREFIX = ".partial-"


class ArtifactError(UserError):
    """A model-side file (labels, metadata) is missing or malformed; the message names it."""


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `target`; rename it onto `target` on success.

    For writers that want a file name rather than bytes (Keras' `model.save`,
    matplotlib's `savefig`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name ends with the whole target name: writers such as Keras check
    # endings like ".weights.h5" or ".keras", and the dot prefix hides it from listings.
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=PARTIAL_PREFIX, suffix=f"-{target.name}")
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        # mkstemp creates the file private (0600); give it the mode any new file would get.
        os.chmod(temporary_path, 0o666 & ~_current_umask())
        os.replace(temporary_path, target)
    finally:
        if temporary_path.exists():
            temporary_path.unlink()


def remove_partial_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (`PARTIAL_PREFIX`) that a writer killed inside `atomic_path` left
    in `folder`; return them. Only for a folder no other process is writing into at the time."""
    removed = []
    for path in sorted(Path(folder).glob(f"{PARTIAL_PREFIX}*")):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_atomic(target: str | os.PathLike, data: bytes | str) -> Path:
    """Write `data` (text is UTF-8 encoded) to `target` atomically and return the path."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(target) as temporary:
        with open(temporary, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
    return Path(target)


def write_json(target: str | os.PathLike, value: Any) -> Path:
    """Write `value` as indented JSON, atomically."""
    return write_atomic(target, json.dumps(value, indent=2, sort_keys=False, default=_to_json) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, naming the file in the error if it is missing or malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{path}: not valid JSON ({error})") from None


def write_labels(target: str | os.PathLike, labels: list[str]) -> Path:
    """Write one class name per line, in the model's output order."""
    for label in labels:
        if not label or "\n" in label:
            raise ArtifactError(f"label {label!r} cannot be written to {target}: empty or multi-line")
    return write_atomic(target, "\n".join(labels) + "\n")


def read_labels(path: str | os.PathLike) -> list[str]:
    """Read a labels file written by `write_labels`; blank trailing lines are ignored."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactError(f"{path}: labels file not found") from None
    except UnicodeDecodeError:
        raise ArtifactError(f"{path}: labels file is not UTF-8 text") from None
    labels = [line.strip() for line in text.splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels or any(not label for label in labels):
        raise ArtifactError(f"{path}: labels file is empty or has blank lines")
    return labels


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _to_json(value: Any) -> Any:
    """Let numpy scalars and arrays, and paths, go into JSON without the caller converting them."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
