"""Keras callbacks that write the run directory as training goes.

They exist beside Keras' own (`EarlyStopping`, `ReduceLROnPlateau`, `TensorBoard`; the
per-epoch backup is train/backup.py) because a run spans two `fit` calls (head, then
fine-tuning) and may be resumed: the history and the best checkpoint must survive both, and every file must be
written atomically (`edge.common.artifacts`), which `CSVLogger` and `ModelCheckpoint` do not do.
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

import keras

from edge.common import run_folder
from edge.common.artifacts import ArtifactError, atomic_path, write_atomic, write_json

HISTORY_COLUMNS = (
    "stage",
    "epoch",
    "loss",
    "accuracy",
    "top5",
    "val_loss",
    "val_accuracy",
    "val_top5",
    "learning_rate",
    "seconds",
)


def read_state(run_dir: Path) -> dict:
    """Progress of a run: completed stages and the best validation accuracy so far."""
    return run_folder.read_optional_json(run_dir / run_folder.STATE_FILE) or {"completed_stages": [], "best": None}


def resume_state(run_dir: Path, say=print) -> dict:
    """`read_state` for --resume, which survives a damaged state.json: the state is then rebuilt from
    what the run folder holds (the stages with an after_STAGE.weights.h5, the best epoch of history.csv)."""
    try:
        return read_state(run_dir)
    except ArtifactError as error:
        state = {
            "completed_stages": [
                stage
                for stage in ("head", "finetune")
                if (run_dir / "checkpoints" / f"after_{stage}.weights.h5").exists()
            ],
            "best": _best_in_history(run_dir / run_folder.HISTORY_FILE),
        }
        say(
            f"note: {error}; rebuilt from the run folder: stages done {state['completed_stages'] or 'none'}, "
            f"best epoch {best_epoch_from_one(state['best'])}"
        )
        return state


def best_epoch_from_one(best: dict | None) -> dict | None:
    """state.json's best epoch as metadata.json and the console give it: "epoch" counted from 1 over both
    stages, as `EpochLines` prints "epoch 3/12" and the plots number their x axis. state.json and
    history.csv keep Keras' epoch index, from 0 (what `fit`'s initial_epoch and --resume use)."""
    return None if best is None else {**best, "epoch": int(best["epoch"]) + 1}


def _best_in_history(history_path: Path) -> dict | None:
    """The row of history.csv with the highest validation accuracy, as state.json records it."""
    best = None
    for row in run_folder.read_history(history_path):
        try:
            score = float(row.get("val_accuracy") or "nan")
        except ValueError:
            continue
        if math.isfinite(score) and (best is None or score > best["val_accuracy"]):
            best = {"val_accuracy": score, "stage": row["stage"], "epoch": int(row["epoch"])}
    return best


def write_state(run_dir: Path, state: dict) -> None:
    write_json(run_dir / run_folder.STATE_FILE, state)


def current_learning_rate(optimizer) -> float:
    """The learning rate the optimizer applies now (schedules are evaluated at the current step)."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class RunRecorder(keras.callbacks.Callback):
    """Appends one row per epoch to history.csv and saves model.keras when validation accuracy improves.

    `stage` is "head" or "finetune". Rows of earlier stages (or of an interrupted attempt at this
    stage that a resumed run redoes) are kept or replaced by (stage, epoch).
    """

    def __init__(self, run_dir: Path, stage: str, state: dict, save_every_epoch: bool = False):
        super().__init__()
        self.run_dir = run_dir
        self.stage = stage
        self.state = state
        self.save_every_epoch = save_every_epoch
        self.history_path = run_dir / run_folder.HISTORY_FILE
        self._epoch_start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        seconds = time.perf_counter() - self._epoch_start
        row = {column: "" for column in HISTORY_COLUMNS}
        row.update(
            stage=self.stage,
            epoch=epoch,
            seconds=f"{seconds:.2f}",
            learning_rate=f"{logs.get('learning_rate', current_learning_rate(self.model.optimizer)):.6g}",
        )
        for column in HISTORY_COLUMNS[2:8]:
            if column in logs:
                row[column] = f"{float(logs[column]):.6f}"
        rows = [
            r
            for r in run_folder.read_history(self.history_path)
            if not (r["stage"] == self.stage and int(r["epoch"]) >= epoch)
        ]
        rows.append(row)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(self.history_path, buffer.getvalue())

        score = logs.get("val_accuracy")
        best = self.state.get("best")
        improved = score is not None and math.isfinite(score) and (best is None or score > best["val_accuracy"])
        if improved or self.save_every_epoch:
            with atomic_path(self.run_dir / run_folder.MODEL_FILE) as temporary:
                self.model.save(temporary)
        if improved:
            self.state["best"] = {"val_accuracy": float(score), "stage": self.stage, "epoch": int(epoch)}
            write_state(self.run_dir, self.state)


class EpochLines(keras.callbacks.Callback):
    """One line per epoch, for a log file or CI: Keras' progress bar there is a flood of carriage returns.

    `epoch 3/12 finetune: loss 0.4120 accuracy 0.8840 val_loss 0.3522 val_accuracy 0.9012 (12.3 s)`
    """

    def __init__(self, stage: str, last_epoch: int, print_function=print):
        super().__init__()
        self.stage, self.last_epoch, self.print_function = stage, last_epoch, print_function
        self._epoch_start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._epoch_start
        values = " ".join(
            f"{name} {float(value):.4f}"
            for name, value in (logs or {}).items()
            if name != "learning_rate" and math.isfinite(float(value))
        )
        self.print_function(f"epoch {epoch + 1}/{self.last_epoch} {self.stage}: {values} ({seconds:.1f} s)", flush=True)


#: Training batches of a stage's first epoch left out of the rate: the first compiles the step (and
#: XLA may compile again on the second call), and the input pipeline starts up. Later epochs are
#: timed from their first batch.
WARMUP_BATCHES = 3


class TrainingRate(keras.callbacks.Callback):
    """Steady-state training throughput: images per second of the training steps alone.

    In the first epoch of the `fit` the clock starts at the begin of batch `WARMUP_BATCHES`
    (compilation left out), in later ones at their first batch; it stops in every epoch where
    training ends and validation begins (validation left out). Both ends first
    wait for the device: reading the optimizer's step counter waits until every step dispatched
    has run, which JAX's and TensorFlow's asynchronous dispatch would otherwise hide. Only batch
    begin hooks are used: a batch end hook would make Keras fetch every step's logs, a wait per step.
    A first epoch of `WARMUP_BATCHES` batches or fewer is not measured.
    """

    def __init__(self, batch_size: int, warmup_batches: int = WARMUP_BATCHES, clock=time.perf_counter):
        super().__init__()
        self.batch_size, self.warmup_batches, self.clock = batch_size, warmup_batches, clock
        self.images, self.seconds = 0, 0.0
        self._started_at: float | None = None
        self._first_timed_batch = 0
        self._warmup = warmup_batches  # Batches still to skip: only in the first epoch.

    @property
    def images_per_second(self) -> float | None:
        return self.images / self.seconds if self.images and self.seconds > 0 else None

    def on_train_begin(self, logs=None):
        self._warmup = self.warmup_batches

    def on_epoch_begin(self, epoch, logs=None):
        self._started_at = None

    def on_train_batch_begin(self, batch, logs=None):
        if self._started_at is None and batch >= self._warmup:
            self._wait_for_device()
            self._started_at, self._first_timed_batch = self.clock(), batch

    def on_test_begin(self, logs=None):
        self._stop()

    def on_epoch_end(self, epoch, logs=None):
        self._stop()  # An epoch without validation; after validation there is nothing left to time.
        self._warmup = 0  # Compiled by now: the next epochs are timed whole.

    def _stop(self):
        if self._started_at is None:
            return
        self._wait_for_device()
        self.seconds += self.clock() - self._started_at
        self.images += (self.params["steps"] - self._first_timed_batch) * self.batch_size
        self._started_at = None

    def _wait_for_device(self):
        keras.ops.convert_to_numpy(self.model.optimizer.iterations)


#: The stages whose TrainingRate a run reports, the first that has one: the fine-tune stage trains the whole
#: network, as a GPU's figure should be judged; the head stage's (a frozen backbone, no backward pass through
#: it) only when there is no other.
RATE_STAGES = ("finetune", "head")


def run_rate(rates: dict[str, float | None]) -> dict:
    """metadata.json's "images_per_second" (rounded) and "images_per_second_stage" from the TrainingRate of
    each stage that trained in this session (`rates`, by stage name); None for both when none was measured."""
    stage = next((name for name in RATE_STAGES if rates.get(name)), None)
    return {"images_per_second": round(rates[stage], 1) if stage else None, "images_per_second_stage": stage}
