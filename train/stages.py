"""The stages of a training run (the new head, then fine-tuning) and the one `fit` that trains each.

Used by train/run.py, which loops over `plan(config)` and calls `train_stage` for each; not a
command. It imports Keras at module level (with train/backup.py, train/callbacks.py and
train/models.py), so it is imported only once a run has started: inside run(), after
train/devices.py has hidden the GPUs from TensorFlow under JAX.

A stage is done when its end weights are saved (checkpoints/after_STAGE.weights.h5) and
state.json lists it: --resume restores such a stage instead of training it again, and continues
an unfinished one from its last whole epoch (train/backup.py).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from typing import TextIO

import keras
import numpy as np

from edge.common import artifacts, configuration
from train import backup, batches, callbacks, models, optimization
from train.config import TrainConfig
from train.splitting import Splits


@dataclasses.dataclass(frozen=True)
class Stage:
    """One `fit` of a run: `epochs` epochs from Keras' epoch index `first_epoch` (counted over both stages),
    at the peak learning rate `learning_rate`, with the top `unfreeze_fraction` of the backbone trainable."""

    name: str  # "head" or "finetune": history.csv's stage column, state.json's completed_stages.
    first_epoch: int
    epochs: int
    learning_rate: float
    unfreeze_fraction: float

    @property
    def last_epoch(self) -> int:
        """The epoch index the stage ends at: `fit`'s `epochs`, and the N of `EpochLines`' "epoch 3/N"."""
        return self.first_epoch + self.epochs


def plan(config: TrainConfig) -> list[Stage]:
    """The stages of a run of `config` (recipe applied), in order; a stage of 0 epochs is listed, and skipped.

    A pretrained backbone: the head with the backbone frozen, then fine-tuning of the unfrozen part.
    A network trained from scratch has no frozen stage: all of it trains throughout, in one stage.
    """
    if not config.pretrained:
        return [Stage("finetune", 0, config.head_epochs + config.epochs, config.learning_rate, 1.0)]
    return [
        Stage("head", 0, config.head_epochs, config.head_learning_rate, 0.0),
        Stage("finetune", config.head_epochs, config.epochs, config.learning_rate, config.unfreeze_fraction),
    ]


def epochs_by_stage(config: TrainConfig) -> dict[str, int]:
    """Epochs by stage as they train (metadata.json's "epochs"): a from-scratch network trains all of them in
    its one stage, and its head stage has none."""
    return {"head": 0, "finetune": 0} | {stage.name: stage.epochs for stage in plan(config)}


def train_stage(
    stage: Stage,
    model: keras.Model,
    backbone: keras.Model | None,
    splits: Splits,
    state: dict,
    *,
    config: TrainConfig,
    run_dir: Path,
    jit_compile: bool,
) -> float | None:
    """Train `stage` of the run in `run_dir` and record it as done in `state` (state.json); return its training
    images per second (callbacks.TrainingRate), None when it had nothing to train or was done already."""
    if stage.epochs == 0:
        return None
    stage_weights = run_dir / "checkpoints" / f"after_{stage.name}.weights.h5"
    if stage.name in state["completed_stages"] and _restore_finished_stage(model, stage.name, stage_weights):
        return None
    models.set_backbone_trainable(
        backbone,
        stage.unfreeze_fraction,
        config.pretrained,
        train_batchnorm=config.batchnorm == "train",
        batchnorm_momentum=config.batchnorm_momentum(len(splits.train_labels) // config.batch_size),
    )
    recorder = callbacks.RunRecorder(run_dir, stage.name, state, save_every_epoch=len(splits.val_labels) == 0)
    rate = callbacks.TrainingRate(config.batch_size)
    _fit_stage(stage, model, splits, [recorder, rate], config=config, run_dir=run_dir, jit_compile=jit_compile)
    with artifacts.atomic_path(stage_weights) as temporary:
        model.save_weights(temporary)
    state["completed_stages"] = [*state["completed_stages"], stage.name]
    callbacks.write_state(run_dir, state)
    backup.discard(stage_backup_dir(run_dir, stage.name))
    return rate.images_per_second


def _fit_stage(
    stage: Stage,
    model: keras.Model,
    splits: Splits,
    stage_callbacks: list[keras.callbacks.Callback],
    *,
    config: TrainConfig,
    run_dir: Path,
    jit_compile: bool,
) -> None:
    """One `fit` call: compile with this stage's optimizer and schedule, train with the run's and `stage_callbacks`."""
    training_data = _training_data(config, splits)
    steps_per_epoch = len(training_data)
    optimization.compile_for_stage(
        model,
        config,
        splits.num_classes,
        stage.learning_rate,
        steps_per_epoch=steps_per_epoch,
        epochs=stage.epochs,
        jit_compile=jit_compile,
    )
    backup_dir = stage_backup_dir(run_dir, stage.name)
    # Passed to fit as initial_epoch, not left in the model (as BackupAndRestore does, for every later fit too).
    resumed_epoch = backup.restore(model, backup_dir, stage.name) if config.resume else None
    fit_callbacks = [backup.EpochBackup(backup_dir), *stage_callbacks]
    has_validation = len(splits.val_labels) > 0
    fit_callbacks += optimization.schedule_callbacks(config, has_validation)
    if config.early_stopping and has_validation:
        fit_callbacks.append(
            keras.callbacks.EarlyStopping(
                "val_loss", patience=config.early_stopping, restore_best_weights=True, verbose=1
            )
        )
    fit_callbacks += _logging_callbacks(config, run_dir)
    num_classes = splits.num_classes
    validation = (splits.val_images, _one_hot(splits.val_labels, num_classes)) if has_validation else None
    print(
        f"stage {stage.name}: {stage.epochs} epoch(s), {steps_per_epoch} steps each, "
        f"peak learning rate {stage.learning_rate:g}"
    )
    verbose = progress_verbosity(config.verbose, sys.stdout)
    if config.verbose == "auto" and verbose == 0:
        fit_callbacks.append(callbacks.EpochLines(stage.name, stage.last_epoch))
    model.fit(
        training_data,
        epochs=stage.last_epoch,
        initial_epoch=resumed_epoch or stage.first_epoch,
        validation_data=validation,
        validation_batch_size=config.batch_size,
        callbacks=fit_callbacks,
        verbose=verbose,
    )


def stage_backup_dir(run_dir: Path, stage: str) -> Path:
    """Where a stage's per-epoch backups live (train/backup.py)."""
    return run_dir / "checkpoints" / f"backup_{stage}"


def _restore_finished_stage(model: keras.Model, stage: str, stage_weights: Path) -> bool:
    """Load a finished stage's end weights; False (the stage trains again) when the file is missing or damaged."""
    problem = "it is missing" if not stage_weights.exists() else backup.unreadable(stage_weights)
    if problem:
        print(f"note: stage {stage} finished, but {stage_weights} cannot be read ({problem}); training it again")
        return False
    model.load_weights(stage_weights)
    print(f"stage {stage}: already complete, weights restored")
    return True


def progress_verbosity(verbose: str, stream: TextIO) -> int:
    """Keras' `verbose` for fit: `auto` is the progress bar on a terminal, else silence plus
    `callbacks.EpochLines` (one line an epoch, no carriage returns in a log file)."""
    if verbose != "auto":
        return int(verbose)
    return 1 if hasattr(stream, "isatty") and stream.isatty() else 0


def _training_data(config: TrainConfig, splits: Splits) -> batches.MixedBatches:
    """Batches of uint8 images and one-hot labels; MixUp/CutMix mix them on the host."""
    return batches.MixedBatches(
        splits.train_images, splits.train_labels, splits.num_classes, config.batch_size, config.mix, config.seed
    )


def _logging_callbacks(config: TrainConfig, run_dir: Path) -> list[keras.callbacks.Callback]:
    """TensorBoard (--tensorboard) and Weights & Biases (--wandb) logging, each skipped with a note when its
    packages are not installed."""
    found = []
    if config.tensorboard:
        missing = [name for name in ("tensorflow", "tensorboard") if importlib.util.find_spec(name) is None]
        if missing:
            print(
                f"note: TensorBoard logging skipped: it needs {' and '.join(missing)} installed "
                "(pip install '.[train]')"
            )
        else:
            found.append(keras.callbacks.TensorBoard(str(run_dir / "logs")))
    if config.wandb:
        try:
            import wandb  # Optional: only with --wandb.
            from wandb.integration.keras import WandbMetricsLogger
        except ImportError:
            print("note: --wandb skipped: the wandb package is not installed (pip install wandb)")
        else:
            if wandb.run is None:
                wandb.init(project=config.wandb, config=configuration.to_dict(config), dir=str(run_dir))
            found.append(WandbMetricsLogger())
    return found


def _one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype="float32")[labels]
