"""Each stage's training state at the end of every epoch, so a killed run resumes at its last whole epoch.

    python train/run.py --resume --out runs/NAME   # what reads it

Used by train/run.py; not a command. In place of Keras' `BackupAndRestore`, for two reasons:

- it rewrites `latest.weights.h5` and `training_metadata.json` in place, so a SIGKILL while it
  writes leaves a file that cannot be read, and `--resume` then died on it ("OSError: file
  signature not found");
- it hands the epoch to continue from to `fit` by setting `model._initial_epoch`, which nothing
  resets: the next stage's `fit` on the same model started at that epoch, trained one epoch too
  many and wrote a duplicate history row.

Here each backup is one file, written under a temporary name and renamed into place, whose name
carries the epoch (`epoch-0003.weights.h5`: the weights and optimizer state after three whole
epochs, counted over the run as `fit` counts them), so there is no second file to disagree with
it. The last `KEPT_BACKUPS` are kept; `restore` takes the newest one that reads, says which, and
falls back past any that does not. The caller passes the epoch it returns to `fit` as
`initial_epoch`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import keras

from edge.common import artifacts
from edge.common.errors import UserError

#: Backups kept per stage: the newest, and the one before it in case the newest cannot be read.
KEPT_BACKUPS = 2
#: A backup's file name; the number is the count of whole epochs (over the run) it holds.
BACKUP_PATTERN = re.compile(r"^epoch-(\d+)\.weights\.h5$")
#: What Keras' BackupAndRestore wrote, in runs made before this module: still read, as a last resort.
LEGACY_WEIGHTS, LEGACY_METADATA = "latest.weights.h5", "training_metadata.json"


class BackupError(UserError):
    """A readable backup does not fit the model (not damage from a kill: another model or version)."""


def backup_name(epochs_done: int) -> str:
    return f"epoch-{epochs_done:04d}.weights.h5"


class EpochBackup(keras.callbacks.Callback):
    """Writes `directory/epoch-N.weights.h5` atomically at every epoch end and keeps the last two."""

    def __init__(self, directory: Path):
        super().__init__()
        self.directory = Path(directory)

    def on_epoch_end(self, epoch, logs=None):
        with artifacts.atomic_path(self.directory / backup_name(epoch + 1)) as temporary:
            self.model.save_weights(temporary)
        for old in backups(self.directory)[KEPT_BACKUPS:]:
            old[1].unlink(missing_ok=True)


def backups(directory: Path) -> list[tuple[int, Path]]:
    """(epochs done, file) of every backup in `directory`, newest first; [] when there is none."""
    if not directory.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in directory.iterdir() if (match := BACKUP_PATTERN.match(path.name))]
    return sorted(found, reverse=True)


def restore(model: keras.Model, directory: Path, stage: str, say: Callable[[str], None] = print) -> int | None:
    """Load the newest readable backup of `stage` into `model` (compiled); return its epoch count, or
    None when there is none to resume from. Damaged files are named and passed over."""
    for epochs_done, path in _candidates(directory, say):
        problem = unreadable(path)
        if problem:
            say(f"note: {path} is damaged ({problem}); trying an older backup")
            continue
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # Its variables must exist to be loaded.
        try:
            model.load_weights(path)
        except Exception as error:  # Keras raises several types for a file of another model.
            raise BackupError(
                f"{path} does not fit this model ({type(error).__name__}: {error}); "
                f"delete {directory} to train stage {stage} again from its start"
            ) from None
        say(f"stage {stage}: resuming after epoch {epochs_done} from {path}")
        return epochs_done
    if directory.is_dir() and any(directory.iterdir()):
        say(f"note: no readable backup of stage {stage} in {directory}; the stage starts again from its first epoch")
    return None


def unreadable(path: Path) -> str | None:
    """Why the weights file at `path` cannot be read (what a kill while writing leaves), or None when it can.

    Every dataset is read, not only the header: a file cut short can open and still fail later.
    """
    import h5py  # A Keras dependency: its weights files are HDF5.

    try:
        with h5py.File(path, "r") as weights:
            weights.visititems(lambda name, item: item[()] if isinstance(item, h5py.Dataset) else None)
    except Exception as error:  # h5py raises OSError, KeyError, ValueError... for damaged files.
        return f"{type(error).__name__}: {error}"
    return None


def _candidates(directory: Path, say: Callable[[str], None]) -> list[tuple[int, Path]]:
    """This module's backups, newest first, then a BackupAndRestore pair of an older version's run."""
    found = backups(directory)
    legacy_weights, legacy_metadata = directory / LEGACY_WEIGHTS, directory / LEGACY_METADATA
    if legacy_weights.exists():
        try:
            found.append((int(json.loads(legacy_metadata.read_text(encoding="utf-8"))["epoch"]), legacy_weights))
        except (OSError, ValueError, KeyError, TypeError) as error:
            say(
                f"note: {legacy_metadata} cannot be read ({type(error).__name__}: {error}); "
                f"{legacy_weights} is not used"
            )
    return found


def discard(directory: Path) -> None:
    """Remove a finished stage's backups: its after_STAGE.weights.h5 now holds its end state."""
    for _, path in backups(directory):
        path.unlink(missing_ok=True)
    for name in (LEGACY_WEIGHTS, LEGACY_METADATA, f"{LEGACY_WEIGHTS}.bkp", f"{LEGACY_METADATA}.bkp"):
        (directory / name).unlink(missing_ok=True)
    for leftover in directory.glob(".partial-*") if directory.is_dir() else ():
        leftover.unlink(missing_ok=True)  # A temporary file of a write that a kill cut short.
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
