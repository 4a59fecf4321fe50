"""How a stage of a training run optimizes: its optimizer, its learning-rate schedule, its loss and metrics.

Used by train/stages.py, and by benchmarks/train_throughput.py to compile as a run does; not a
command. It imports Keras at module level, so it is imported only once a run has started (inside
train/run.py's run(), after train/devices.py has hidden the GPUs from TensorFlow under JAX).

- `compile_for_stage`: the stage's optimizer, schedule, loss and metrics on the model.
- `learning_rate_schedule`: linear warm-up then cosine decay (`--schedule cosine`), or the
  constant peak rate that `--schedule plateau` lowers through `schedule_callbacks`.
- `build_optimizer`: SGD with Nesterov momentum, AdamW or Adam, weight decay on weights only.
"""

from __future__ import annotations

import keras

from train import devices
from train.config import TrainConfig

#: The most of a stage that linear warm-up may take; the rest is cosine decay.
MAX_WARMUP_SHARE = 0.3
#: ReduceLROnPlateau as the seed project used it: halve after 5 flat epochs, down to 1e-6.
PLATEAU_FACTOR, PLATEAU_PATIENCE, PLATEAU_MIN_LR = 0.5, 5, 1e-6


def compile_for_stage(
    model,
    config: TrainConfig,
    num_classes: int,
    learning_rate: float,
    *,
    steps_per_epoch: int,
    epochs: int,
    jit_compile: bool | str = "auto",
) -> None:
    """Compile `model` with the stage's optimizer, schedule, loss and metrics (also used by the benchmark)."""
    config = config.with_recipe()  # A config built by hand (the benchmark, tests) may leave recipe options unset.
    schedule = learning_rate_schedule(config, learning_rate, steps_per_epoch=steps_per_epoch, epochs=epochs)
    # The optimizer's and the metrics' variables are made here: under tf.distribute they must be made in
    # the strategy's scope that built the model, or the first `fit` fails ("Mixing different
    # tf.distribute.Strategy objects").
    with devices.strategy_scope_of(model):
        model.compile(
            optimizer=build_optimizer(config, schedule),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
            metrics=["accuracy", keras.metrics.TopKCategoricalAccuracy(k=min(5, num_classes), name="top5")],
            steps_per_execution=config.steps_per_execution,
            jit_compile=jit_compile,
        )


def learning_rate_schedule(
    config: TrainConfig, learning_rate: float, *, steps_per_epoch: int, epochs: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The stage's learning rate by step: warm-up to `learning_rate`, then cosine decay, for `--schedule cosine`;
    `learning_rate` itself otherwise (`--schedule plateau` lowers it from a callback, schedule_callbacks)."""
    if config.schedule != "cosine":
        return learning_rate
    # A short stage (the one-epoch head) warms up for part of itself, not all of it.
    warmup_epochs = min(config.warmup_epochs, epochs * MAX_WARMUP_SHARE)
    warmup_steps = int(warmup_epochs * steps_per_epoch)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=learning_rate / 100,
        decay_steps=max(epochs * steps_per_epoch - warmup_steps, 1),
        warmup_target=learning_rate,
        warmup_steps=warmup_steps,
        alpha=0.01,
    )


def build_optimizer(config: TrainConfig, schedule) -> keras.optimizers.Optimizer:
    """`--optimizer` at `schedule` (a learning rate or a schedule), with `--weight-decay` on weights only."""
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(
            schedule, momentum=0.9, nesterov=True, weight_decay=config.weight_decay or None
        )
    elif config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(schedule)
    if config.weight_decay:
        # Decay shrinks weights, not biases or normalization scales and offsets.
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def schedule_callbacks(config: TrainConfig, has_validation: bool) -> list[keras.callbacks.Callback]:
    """The callbacks that change the learning rate during `fit`: ReduceLROnPlateau for `--schedule plateau`,
    which needs a validation split to watch."""
    if config.schedule == "plateau" and has_validation:
        return [
            keras.callbacks.ReduceLROnPlateau(
                "val_loss", factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE, min_lr=PLATEAU_MIN_LR, verbose=1
            )
        ]
    return []
