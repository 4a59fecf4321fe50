"""Train a CIFAR classifier and write a self-describing run directory.

    python train/run.py --preset smoke          # offline, CPU, a few minutes
    python train/run.py                         # EfficientNet-B0 on CIFAR-100 (needs a GPU to be quick)
    python train/run.py --resume --out runs/X   # continue an interrupted run

Two stages: the new head with the backbone frozen, then fine-tuning of the unfrozen part.
The run ends with the test-set evaluation (train/evaluate.py) and, unless --no-export,
the TFLite export with its float-vs-int8 check (train/export.py). The run directory's
layout is edge/common/run_folder.py (and docs/architecture.md).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.util
import os
import platform
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edge import stopping
from edge.common import artifacts, command, configuration, errors, machine, run_folder
from edge.common.errors import UserError
from train import config as train_config
from train.config import TrainConfig

#: The most of a stage that linear warm-up may take; the rest is cosine decay.
MAX_WARMUP_SHARE = 0.3
#: The GPU-less refusal: an ImageNet backbone at this many pixels a side or more ...
CPU_REFUSAL_MIN_IMAGE_SIZE = 128
#: ... on a dataset of this many training images or more (CIFAR's 45,000 after validation) takes
#: days on a CPU (7.4 images/s measured here: README, Throughput). Smaller runs still train.
CPU_REFUSAL_MIN_TRAIN_IMAGES = 10_000
#: Training-set size of CIFAR-10 and CIFAR-100, known before loading them.
CIFAR_TRAIN_IMAGES = 50_000
#: bfloat16 runs fast from NVIDIA's Ampere GPUs on (compute capability 8.0: A100, RTX 30xx, L4, H100);
#: older ones (T4 7.5, V100 7.0, P100 6.0) run float16 fast and bfloat16 slowly or not at all.
BFLOAT16_MIN_COMPUTE_CAPABILITY = (8, 0)
#: ReduceLROnPlateau as the seed project used it: halve after 5 flat epochs, down to 1e-6.
PLATEAU_FACTOR, PLATEAU_PATIENCE, PLATEAU_MIN_LR = 0.5, 5, 1e-6


def _stopped(interruption: BaseException, config: TrainConfig) -> int:
    """Ctrl-C, SIGINT or SIGTERM: say what is saved and how to continue; exit 130 or 143."""
    signal_number = getattr(interruption, "signal_number", signal.SIGINT)
    print(f"\n{signal.Signals(signal_number).name}: stopped; the last whole epoch is saved. Continue with: "
          f"python train/run.py --resume --out {config.out or 'RUN_DIR'}", file=sys.stderr)
    return stopping.exit_code_for(signal_number)


def _gate_status(config: TrainConfig, result: dict) -> int:
    """0, or 1 when the exported int8 model failed the float-vs-int8 gate."""
    quantization = result.get("quantization")
    if quantization is not None and not quantization.get("passed", False):
        print("error: the int8 model failed the float-vs-int8 gate; see quantization.json", file=sys.stderr)
        return 1
    return 0


def run_with_stop_signals(config: TrainConfig) -> dict:
    """`run(config)` with SIGINT and SIGTERM raising StopSignal (see stop_signals)."""
    with stop_signals():
        return run(config)


class StopSignal(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: a KeyboardInterrupt, so it ends a run as Ctrl-C does, with the signal named."""

    def __init__(self, signal_number: int):
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = int(signal_number)


def _raise_stop(signal_number, frame):
    raise StopSignal(signal_number)


@contextlib.contextmanager
def stop_signals():
    """While in this context, SIGINT and SIGTERM raise StopSignal, which main() turns into exit 130 or 143.

    Why: a background job of a non-interactive shell (`bash -c 'python train/run.py ... &'`) starts
    with SIGINT ignored, so Python installs no KeyboardInterrupt handler and `kill -INT` did
    nothing; SIGTERM has no Python handler at all. Unlike the camera (edge/stopping.py, which only
    sets a flag because its clean-up must run), the run raises at once: every file it writes is
    written atomically (edge.common.artifacts), so an exception mid-write leaves the old file, and
    the last whole epoch's backup (train/backup.py) is what --resume continues from.
    """
    if threading.current_thread() is not threading.main_thread():  # Handlers can be set there only.
        yield
        return
    previous = {number: signal.signal(number, _raise_stop) for number in stopping.STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)


def run(config: TrainConfig) -> dict:
    """Train, evaluate and export as `config` says; return the headline numbers and the run directory."""
    run_dir = _prepare_run_dir(config)
    if config.resume:
        config = dataclasses.replace(TrainConfig.from_run(run_dir), resume=True)
        print(f"resuming {run_dir}")
    config = dataclasses.replace(config, out=str(run_dir))

    # Keras (and the modules built on it) load only once a run really starts, so `--help` and
    # configuration errors answer at once; the backend is fixed at this import (KERAS_BACKEND).
    from train import gpu_setup
    gpu_setup.hide_gpus_from_tensorflow()  # Under JAX: before Keras imports TensorFlow.
    import keras

    from train import backup, callbacks, data, evaluate, models  # These load Keras too.

    keras.utils.set_random_seed(config.seed)
    gpus = gpu_names()
    if config.dataset in ("cifar100", "cifar10"):  # Refuse before a download that would be wasted.
        refuse_cpu_training(config, round(CIFAR_TRAIN_IMAGES * (1 - config.val_split)), gpus)
    capabilities = gpu_compute_capabilities() if gpus and config.precision == "auto" else []
    precision, precision_reason = resolve_precision(config.precision, gpus, capabilities)
    keras.mixed_precision.set_global_policy(precision)
    splits = data.load_splits(config)
    refuse_cpu_training(config, len(splits.train_labels), gpus)
    config = from_scratch_weights(config.with_recipe(len(splits.train_labels)))
    distribution = _distribution(gpus)
    config = fit_batch_to_replicas(config, distribution.replicas)

    with distribution.scope():
        model, backbone = models.build_model(config, splits.num_classes, splits.input_shape)
    # The run folder's first files: every refusal (no GPU, no data, no weights) came before them, so a
    # refused run leaves no folder behind (_prepare_run_dir makes none).
    artifacts.write_json(run_dir / run_folder.CONFIG_FILE, configuration.to_dict(config))
    artifacts.write_labels(run_dir / run_folder.LABELS_FILE, splits.labels)
    jit_compile = resolve_jit_compile(model, gpus)
    training = {"backend": keras.backend.backend(), "devices": gpus or [cpu_name()], "precision": precision,
                "precision_reason": precision_reason, "replicas": distribution.replicas, "jit_compile": jit_compile, "images_per_second": None}
    print(f"training on {', '.join(training['devices'])}: backend {training['backend']}, precision {precision}, "
          f"XLA {'on' if jit_compile else 'off'}" + ("" if jit_compile else f" ({_why_no_xla(model, gpus)})"))
    metadata = _metadata(config, splits, model, precision)
    metadata["training"] = training
    artifacts.write_json(run_dir / run_folder.METADATA_FILE, metadata)

    state = callbacks.resume_state(run_dir) if config.resume else {"completed_stages": [], "best": None}
    started = time.perf_counter()
    throughput: dict[str, float | None] = {}  # Training images/s by stage, this session's.
    pretrained = config.pretrained
    stages = [("head", 0, config.head_epochs, config.head_learning_rate, 0.0),
              ("finetune", config.head_epochs, config.epochs, config.learning_rate, config.unfreeze_fraction)]
    if not pretrained:  # A network trained from scratch has no frozen stage: all of it trains throughout.
        stages = [("finetune", 0, config.head_epochs + config.epochs, config.learning_rate, 1.0)]
    for stage, first_epoch, epochs, learning_rate, fraction in stages:
        if epochs == 0:
            continue
        stage_weights = run_dir / "checkpoints" / f"after_{stage}.weights.h5"
        if stage in state["completed_stages"] and _restore_finished_stage(model, stage, stage_weights):
            continue
        models.set_backbone_trainable(backbone, fraction, pretrained, train_batchnorm=config.batchnorm == "train",
                                      batchnorm_momentum=config.batchnorm_momentum(
                                          len(splits.train_labels) // config.batch_size))
        recorder = callbacks.RunRecorder(run_dir, stage, state, save_every_epoch=len(splits.val_labels) == 0)
        rate = callbacks.TrainingRate(config.batch_size)
        _fit_stage(keras, config, model, splits, stage, first_epoch, epochs, learning_rate, [recorder, rate],
                   run_dir, jit_compile)
        throughput[stage] = rate.images_per_second
        with artifacts.atomic_path(stage_weights) as temporary:
            model.save_weights(temporary)
        state["completed_stages"] = [*state["completed_stages"], stage]
        callbacks.write_state(run_dir, state)
        backup.discard(stage_backup_dir(run_dir, stage))
    training_seconds = time.perf_counter() - started

    # The fine-tune stage's rate: it trains the whole network, as a GPU's figure should be judged; the
    # head stage's (a frozen backbone, no backward pass through it) only when there is no other.
    rate_stage = next((stage for stage in ("finetune", "head") if throughput.get(stage)), None)
    images_per_second = round(throughput[rate_stage], 1) if rate_stage else None
    training.update(images_per_second=images_per_second, images_per_second_stage=rate_stage)
    metadata.update(training_seconds=round(training_seconds, 1), images_per_second=images_per_second,
                    best_epoch=callbacks.best_epoch_from_one(state.get("best")), training=training)
    artifacts.write_json(run_dir / run_folder.METADATA_FILE, metadata)

    # Evaluate the best checkpoint as saved: this also proves that model.keras reloads. Its test-split
    # output is computed once, for the evaluation and for the float-vs-int8 check's reference.
    best_model = models.load_model(run_dir / run_folder.MODEL_FILE)
    test_probabilities = best_model.predict(splits.test_images, batch_size=config.batch_size, verbose=0)
    metrics = evaluate.evaluate_run(run_dir, model=best_model, splits=splits, probabilities=test_probabilities)

    result = {"run_dir": str(run_dir), "top1": metrics["top1"], "top5": metrics["top5"],
              "loss": metrics["loss"], "training_seconds": training_seconds,
              "images_per_second": metadata["images_per_second"], "quantization": None}
    if config.export:
        result["quantization"] = _export(run_dir, best_model, splits, config, test_probabilities)
    _print_summary(result)
    return result


def compile_for_stage(model, config: TrainConfig, num_classes: int, learning_rate: float,
                      steps_per_epoch: int, epochs: int, jit_compile: bool | str = "auto") -> None:
    """Compile `model` with the stage's optimizer, schedule, loss and metrics (also used by the benchmark)."""
    import keras  # Loaded by run() already; imported here so --help never pays for it.
    config = config.with_recipe()  # A config built by hand (the benchmark, tests) may leave recipe options unset.
    schedule = learning_rate
    if config.schedule == "cosine":
        # A short stage (the one-epoch head) warms up for part of itself, not all of it.
        warmup_epochs = min(config.warmup_epochs, epochs * MAX_WARMUP_SHARE)
        warmup_steps = int(warmup_epochs * steps_per_epoch)
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=learning_rate / 100, decay_steps=max(epochs * steps_per_epoch - warmup_steps, 1),
            warmup_target=learning_rate, warmup_steps=warmup_steps, alpha=0.01)
    # The optimizer's and the metrics' variables are made here: under tf.distribute they must be made in
    # the strategy's scope that built the model, or the first `fit` fails ("Mixing different
    # tf.distribute.Strategy objects").
    with _strategy_scope_of(model):
        model.compile(
            optimizer=_optimizer(keras, config, schedule),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
            metrics=["accuracy", keras.metrics.TopKCategoricalAccuracy(k=min(5, num_classes), name="top5")],
            steps_per_execution=config.steps_per_execution, jit_compile=jit_compile)


def _strategy_scope_of(model):
    """The tf.distribute strategy scope `model` was built in (TensorFlow's default one when none was); no
    scope under the other backends."""
    strategy = getattr(model, "distribute_strategy", None)  # The TensorFlow backend's models only.
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def fit_batch_to_replicas(config: TrainConfig, replicas: int) -> TrainConfig:
    """`config` with its global batch rounded down to a multiple of `replicas`, saying so when it changes.

    Data parallelism splits every batch evenly over the devices, so 128 images cannot train on 3 or 6
    GPUs. Rounded down, not refused: a few images less per step (126 on 3 or 6 GPUs) changes the
    recipe far less than a run that does not start; config.json records the batch that trained.
    """
    if replicas < 2 or config.batch_size % replicas == 0:
        return config
    batch_size = max(config.batch_size // replicas * replicas, replicas)
    print(f"note: batch size {config.batch_size} does not divide over {replicas} devices; "
          f"training with {batch_size} ({batch_size // replicas} per device)")
    return dataclasses.replace(config, batch_size=batch_size)


def resolve_jit_compile(model, gpus: list[str]) -> bool:
    """Whether the training step compiles with XLA: yes when every layer can, on a GPU and under JAX.

    Not Keras' "auto", which also says no under tf.distribute. Off for the torch backend, under
    TensorFlow with several GPUs (MirroredStrategy; Keras turns XLA off there too), and under
    TensorFlow on a CPU only: XLA's CPU convolutions are slower than TensorFlow's oneDNN kernels,
    measured here 60 s against 6 s for an epoch of the cnn (README, Throughput).
    """
    import keras  # Loaded by run() already; imported here so --help never pays for it.
    backend = keras.backend.backend()
    if backend == "torch" or (backend == "tensorflow" and len(gpus) != 1):
        return False
    return all(layer.supports_jit for layer in model._flatten_layers())


def _why_no_xla(model, gpus: list[str]) -> str:
    import keras  # Loaded by run() already; imported here so --help never pays for it.
    refusing = sorted({type(layer).__name__ for layer in model._flatten_layers() if not layer.supports_jit})
    if refusing:
        return f"{', '.join(refusing)} cannot compile"
    if keras.backend.backend() == "torch":
        return "the torch backend runs eagerly"
    return "TensorFlow's XLA is slower than its own kernels on a CPU" if not gpus else "MirroredStrategy"


def refuse_cpu_training(config: TrainConfig, train_images: int, gpus: list[str], backend: str | None = None) -> None:
    """Stop a run that would take days: an ImageNet backbone at 128 px or more on a full-size dataset, no GPU.

    The smoke preset, the from-scratch CNNs and small datasets are not affected; --allow-cpu overrides.
    The message says what to install for `backend` (default: Keras' own), and what TensorFlow saw
    when the machine seems to have a GPU (train/gpu_setup.py).
    """
    size = config.resolved_image_size or 0
    if (gpus or config.allow_cpu or config.model not in train_config.IMAGENET_MODELS
            or size < CPU_REFUSAL_MIN_IMAGE_SIZE or train_images < CPU_REFUSAL_MIN_TRAIN_IMAGES):
        return
    from train import gpu_setup
    if backend is None:
        import keras  # Loaded by run() already; imported here so --help never pays for it.
        backend = keras.backend.backend()
    raise TrainingDeviceError(
        f"no GPU found: {config.model} at {size} px on {train_images:,} training images would take days on "
        f"this CPU. To train on a GPU, {gpu_setup.missing_gpu_advice(backend)}; "
        "or pass --allow-cpu to train on the CPU anyway, or try --preset smoke")


class TrainingDeviceError(UserError):
    """The run needs a GPU that the machine does not have (or the backend cannot see)."""


def _fit_stage(keras, config, model, splits, stage, first_epoch, epochs, learning_rate, stage_callbacks, run_dir,
               jit_compile):
    """One `fit` call: compile with this stage's optimizer and schedule, train with the run's and `stage_callbacks`."""
    from train import backup, callbacks  # Keras loads with them: see run().
    training_data = _training_data(keras, config, splits)
    steps_per_epoch = len(training_data)
    compile_for_stage(model, config, splits.num_classes, learning_rate, steps_per_epoch, epochs, jit_compile)
    backup_dir = stage_backup_dir(run_dir, stage)
    # Passed to fit as initial_epoch, not left in the model (as BackupAndRestore does, for every later fit too).
    resumed_epoch = backup.restore(model, backup_dir, stage) if config.resume else None
    fit_callbacks = [backup.EpochBackup(backup_dir), *stage_callbacks]
    has_validation = len(splits.val_labels) > 0
    if config.schedule == "plateau" and has_validation:
        fit_callbacks.append(keras.callbacks.ReduceLROnPlateau(
            "val_loss", factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE, min_lr=PLATEAU_MIN_LR, verbose=1))
    if config.early_stopping and has_validation:
        fit_callbacks.append(keras.callbacks.EarlyStopping(
            "val_loss", patience=config.early_stopping, restore_best_weights=True, verbose=1))
    fit_callbacks += _logging_callbacks(keras, config, run_dir)
    num_classes = splits.num_classes
    validation = (splits.val_images, _one_hot(splits.val_labels, num_classes)) if has_validation else None
    print(f"stage {stage}: {epochs} epoch(s), {steps_per_epoch} steps each, peak learning rate {learning_rate:g}")
    verbose = progress_verbosity(config.verbose, sys.stdout)
    if config.verbose == "auto" and verbose == 0:
        fit_callbacks.append(callbacks.EpochLines(stage, first_epoch + epochs))
    model.fit(training_data, epochs=first_epoch + epochs, initial_epoch=resumed_epoch or first_epoch,
              validation_data=validation, validation_batch_size=config.batch_size, callbacks=fit_callbacks,
              verbose=verbose)


def stage_backup_dir(run_dir: Path, stage: str) -> Path:
    """Where a stage's per-epoch backups live (train/backup.py)."""
    return run_dir / "checkpoints" / f"backup_{stage}"


def _restore_finished_stage(model, stage: str, stage_weights: Path) -> bool:
    """Load a finished stage's end weights; False (the stage trains again) when the file is missing or damaged."""
    from train import backup  # Keras loads with it: see run().
    problem = "it is missing" if not stage_weights.exists() else backup.unreadable(stage_weights)
    if problem:
        print(f"note: stage {stage} finished, but {stage_weights} cannot be read ({problem}); training it again")
        return False
    model.load_weights(stage_weights)
    print(f"stage {stage}: already complete, weights restored")
    return True


def progress_verbosity(verbose: str, stream) -> int:
    """Keras' `verbose` for fit: `auto` is the progress bar on a terminal, else silence plus
    `callbacks.EpochLines` (one line an epoch, no carriage returns in a log file)."""
    if verbose != "auto":
        return int(verbose)
    return 1 if hasattr(stream, "isatty") and stream.isatty() else 0


def _training_data(keras, config, splits):
    """Batches of uint8 images and one-hot labels; MixUp/CutMix mix them on the host."""
    from train import batches  # Keras loads with it: see run().
    return batches.MixedBatches(splits.train_images, splits.train_labels, splits.num_classes,
                        config.batch_size, config.mix, config.seed)


def _optimizer(keras, config, schedule):
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=config.weight_decay or None)
    elif config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(schedule)
    if config.weight_decay:
        # Decay shrinks weights, not biases or normalization scales and offsets.
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def _logging_callbacks(keras, config, run_dir):
    found = []
    if config.tensorboard:
        missing = [name for name in ("tensorflow", "tensorboard") if importlib.util.find_spec(name) is None]
        if missing:
            print(f"note: TensorBoard logging skipped: it needs {' and '.join(missing)} installed "
                  "(pip install '.[train]')")
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


def _export(run_dir: Path, model, splits, config: TrainConfig, test_probabilities) -> dict | None:
    if importlib.util.find_spec("tensorflow") is None:
        print("note: TFLite export skipped: it needs tensorflow (pip install '.[train]'); "
              f"run python train/export.py --run {run_dir} where it is installed")
        return None
    from train import export  # TensorFlow is optional for training (the JAX backend) and needed here.
    return export.export_run(run_dir, model=model, splits=splits, max_drop=config.max_drop,
                              calibration_samples=config.calibration_samples,
                              reference_probabilities=test_probabilities)


def _prepare_run_dir(config: TrainConfig) -> Path:
    if config.out:
        run_dir = Path(config.out)
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        dataset = Path(config.dataset).name if config.dataset not in ("cifar100", "cifar10", "smoke") else config.dataset
        run_dir = Path("runs") / f"{dataset}-{config.model}-{stamp}"
    if config.resume and not (run_dir / run_folder.CONFIG_FILE).exists():
        raise configuration.ConfigError(f"--resume: {run_dir} holds no config.json; nothing to resume")
    if not config.resume and (run_dir / run_folder.CONFIG_FILE).exists():
        raise configuration.ConfigError(
            f"{run_dir} already holds a run; use --resume to continue it or choose another --out")
    return run_dir  # Not made yet: the first file written makes it (edge.common.artifacts), after every refusal.


def from_scratch_weights(config: TrainConfig) -> TrainConfig:
    """`config` with weights "none" for the networks that have no pretrained weights (cnn, se_cnn).

    `--weights` defaults to imagenet, which only the ImageNet backbones use: a from-scratch network
    recorded it as if it had been pretrained (config.json, metadata.json, report.md).
    """
    if config.model in train_config.IMAGENET_MODELS or config.weights == "none":
        return config
    if config.weights != "imagenet":
        print(f"note: --weights {config.weights} is ignored: {config.model} has no pretrained backbone and "
              "trains from scratch")
    return dataclasses.replace(config, weights="none")


def resolve_precision(precision: str, gpus: list[str],
                      capabilities: Sequence[tuple[int, int] | None]) -> tuple[str, str]:
    """The Keras dtype policy for `--precision` and why: (policy, reason), the reason as metadata.json records it.

    "auto" is mixed_bfloat16 on GPUs of compute capability 8.0 or more (`capabilities`, one per GPU of
    `gpus`; the lowest counts), mixed_float16 below that or when it is unknown, float32 on a CPU.
    Free Colab and Kaggle GPUs are T4s (7.5) and P100s (6.0): no fast bfloat16 there, fast float16.
    Keras wraps the optimizer of a mixed_float16 model in a LossScaleOptimizer by itself
    (`compile(auto_scale_loss=True)`, its default), so float16 gradients do not underflow.
    """
    if precision != "auto":
        return precision, "chosen with --precision"
    if not gpus:
        return "float32", "no GPU: mixed precision brings a CPU no speed"
    known = [capability for capability in capabilities if capability is not None]
    if not known or len(known) < len(gpus):
        return "mixed_float16", ("GPU compute capability unknown: float16, which every CUDA GPU runs fast, "
                                 "with loss scaling")
    lowest = min(known)
    described = f"compute capability {lowest[0]}.{lowest[1]}"
    if lowest >= BFLOAT16_MIN_COMPUTE_CAPABILITY:
        return "mixed_bfloat16", f"{described} runs bfloat16 fast (8.0 or more), and bfloat16 needs no loss scaling"
    return "mixed_float16", f"{described} has no fast bfloat16 (below 8.0): float16 with loss scaling"


def gpu_compute_capabilities() -> list[tuple[int, int] | None]:
    """CUDA compute capability (major, minor) of each GPU gpu_names() lists, None where the backend does not say."""
    import keras  # Loaded by run() already; imported here so --help never pays for it.
    backend = keras.backend.backend()
    if backend == "jax":
        import jax  # Only the backend in use is imported; the others need not be installed.
        return [_capability(getattr(device, "compute_capability", None))
                for device in jax.devices() if device.platform == "gpu"]
    if backend == "torch":
        import torch  # Only the backend in use is imported; the others need not be installed.
        return [_capability(torch.cuda.get_device_capability(index)) for index in range(torch.cuda.device_count())]
    import tensorflow as tf  # Only the backend in use is imported; the others need not be installed.
    return [_capability(tf.config.experimental.get_device_details(gpu).get("compute_capability"))
            for gpu in tf.config.list_physical_devices("GPU")]


def _capability(value) -> tuple[int, int] | None:
    """(major, minor) from what a backend reports: (8, 0) (TensorFlow, torch) or "8.0" (JAX)."""
    try:
        major, minor = (value.split(".") if isinstance(value, str) else value)[:2]
        return int(major), int(minor)
    except (AttributeError, TypeError, ValueError):
        return None


def gpu_names() -> list[str]:
    """The GPUs the Keras backend sees, by name (such as "NVIDIA H100 80GB HBM3"); empty on a CPU."""
    import keras  # Loaded by run() already; imported here so --help never pays for it.
    backend = keras.backend.backend()
    if backend == "jax":
        import jax  # Only the backend in use is imported; the others need not be installed.
        return [device.device_kind for device in jax.devices() if device.platform == "gpu"]
    if backend == "torch":
        import torch  # Only the backend in use is imported; the others need not be installed.
        return [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
    import tensorflow as tf  # Only the backend in use is imported; the others need not be installed.
    return [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
            for gpu in tf.config.list_physical_devices("GPU")]


def cpu_name() -> str:
    """The device a GPU-less run trains on, as metadata.json's "devices" names it."""
    return f"CPU ({machine.processor_name()}, {os.cpu_count()} cores)"


@dataclasses.dataclass(frozen=True)
class Distribution:
    """How a run spreads over its devices: `scope` builds the model in it, `replicas` devices train in sync."""

    scope: Callable[[], contextlib.AbstractContextManager]
    replicas: int = 1


def _distribution(gpus: list[str]) -> Distribution:
    """Data parallelism across GPUs (`gpus`: gpu_names()) through the backend's own engine, when there are several."""
    import keras  # Loaded by run() already; imported here so --help never pays for it.
    single = Distribution(scope=contextlib.nullcontext)
    if len(gpus) < 2:
        return single
    if keras.backend.backend() == "jax":
        data_parallel = keras.distribution.DataParallel()  # Over every device JAX sees.
        keras.distribution.set_distribution(data_parallel)
        return Distribution(scope=contextlib.nullcontext, replicas=len(data_parallel.device_mesh.devices.flatten()))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # Only the backend in use is imported; the others need not be installed.
        strategy = tf.distribute.MirroredStrategy(devices=mirrored_devices())
        return Distribution(scope=strategy.scope, replicas=strategy.num_replicas_in_sync)
    print("note: several GPUs found, but multi-GPU training is implemented for the jax and tensorflow backends only")
    return single


def mirrored_devices() -> list[str]:
    """The devices TensorFlow's MirroredStrategy trains on: every GPU TensorFlow sees (its own default)."""
    import tensorflow as tf  # Only the backend in use is imported; the others need not be installed.
    return [device.name for device in tf.config.list_logical_devices("GPU")]


def _metadata(config: TrainConfig, splits, model, precision: str) -> dict:
    import keras  # Loaded by run() already; imported here so --help never pays for it.
    versions = {"python": platform.python_version(), "keras": keras.__version__,
                "backend": keras.backend.backend(), "numpy": np.__version__}
    if "tensorflow" in sys.modules:
        versions["tensorflow"] = sys.modules["tensorflow"].__version__
    height, width, _ = splits.input_shape
    return {
        "input_size": [height, width], "input_dtype": "uint8",
        "image_size": config.resolved_image_size or height, "model": config.model,
        "weights": config.weights, "dataset": splits.dataset, "label_mode": config.label_mode,
        "num_classes": splits.num_classes, "labels_file": run_folder.LABELS_FILE,
        "superclasses": splits.superclasses,
        "superclass_of": None if splits.superclass_of is None else [int(i) for i in splits.superclass_of],
        "parameters": int(model.count_params()), "precision": precision,
        "unfreeze": config.unfreeze, "epochs": _stage_epochs(config),
        "train_images": int(len(splits.train_labels)), "val_images": int(len(splits.val_labels)),
        "test_images": int(len(splits.test_labels)),
        "versions": versions, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _stage_epochs(config: TrainConfig) -> dict:
    """Epochs by stage as they train: a from-scratch network trains all of them in its one stage."""
    if config.pretrained:
        return {"head": config.head_epochs, "finetune": config.epochs}
    return {"head": 0, "finetune": config.head_epochs + config.epochs}


def _one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype="float32")[labels]


def _print_summary(result: dict) -> None:
    rate = result["images_per_second"]
    print(f"\nrun directory: {result['run_dir']}\n"
          f"test top-1 {result['top1']:.2%}  top-5 {result['top5']:.2%}  loss {result['loss']:.3f}\n"
          f"training {result['training_seconds']:.0f} s"
          + (f", {rate:.0f} images/s" if rate else ""))
    quantization = result.get("quantization")
    if quantization:
        int8 = quantization["variants"].get("int8", {})
        print(f"int8 top-1 {int8.get('top1', float('nan')):.2%} against float {quantization['reference']['top1']:.2%}: "
              + ("within" if quantization["passed"] else "OUTSIDE") + f" the {quantization['max_drop']} point gate")


COMMAND = command.Command(
    name="train", prog="python train/run.py",
    description="Train a CIFAR classifier (EfficientNet-B0 transfer learning by default) and write a run directory.",
    config_class=TrainConfig, run=run_with_stop_signals, exit_status=_gate_status,
    presets=train_config.PRESETS, handlers=((KeyboardInterrupt, _stopped),))


def main(argv: Sequence[str] | None = None) -> int:
    # TensorFlow 2.21 still prints a few start-up lines (oneDNN, no CUDA) before its logger reads the
    # level the harness sets (edge.common.command.quiet_tensorflow, also run by train/__init__.py).
    return command.execute(COMMAND, argv)


if __name__ == "__main__":
    sys.exit(main())
