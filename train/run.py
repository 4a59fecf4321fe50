"""Train a CIFAR classifier and write a self-describing run directory.

    python train/run.py --preset smoke          # offline, CPU, a few minutes
    python train/run.py                         # EfficientNet-B0 on CIFAR-100 (needs a GPU to be quick)
    python train/run.py --resume --out runs/X   # continue an interrupted run

Two stages: the new head with the backbone frozen, then fine-tuning of the unfrozen part.
The run ends with the test-set evaluation (train/evaluate.py) and, unless --no-export,
the TFLite export with its float-vs-int8 check (train/export.py). The run directory's
layout is edge/common/run_folder.py (and docs/architecture.md).

run() is the sequence; its parts are train/devices.py (the GPUs, precision, distribution, XLA and the
no-GPU refusal), train/stages.py (the stages and the `fit` of each), train/optimization.py (the
optimizer, the learning-rate schedule, the loss) and train/callbacks.py (the history, the best
checkpoint and the training rate).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.util
import platform
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from edge import stopping
from edge.common import artifacts, command, configuration, run_folder
from train import config as train_config
from train.config import TrainConfig

#: Training-set size of CIFAR-10 and CIFAR-100, known before loading them: the no-GPU refusal
#: (train/devices.py) comes before a download that would be wasted.
CIFAR_TRAIN_IMAGES = 50_000


def _stopped(interruption: BaseException, config: TrainConfig) -> int:
    """Ctrl-C, SIGINT or SIGTERM: say what is saved and how to continue; exit 130 or 143."""
    signal_number = getattr(interruption, "signal_number", signal.SIGINT)
    print(
        f"\n{signal.Signals(signal_number).name}: stopped; the last whole epoch is saved. Continue with: "
        f"python train/run.py --resume --out {config.out or 'RUN_DIR'}",
        file=sys.stderr,
    )
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
    run_dir, config = _open_run_dir(config)

    # Keras (and the modules built on it) load only once a run really starts, so `--help` and
    # configuration errors answer at once; the backend is fixed at this import (KERAS_BACKEND).
    from train import devices

    devices.hide_gpus_from_tensorflow()  # Under JAX: before Keras imports TensorFlow.
    import keras

    from train import callbacks, data, evaluate, models, stages  # These load Keras too.

    # Where it trains: the GPUs, the precision they run fast, the distribution over them.
    keras.utils.set_random_seed(config.seed)
    gpus = devices.gpu_names()
    if config.dataset in ("cifar100", "cifar10"):  # Refuse before a download that would be wasted.
        devices.refuse_cpu_training(config, round(CIFAR_TRAIN_IMAGES * (1 - config.val_split)), gpus)
    precision, precision_reason = devices.set_precision(config.precision, gpus)
    splits = data.load_splits(config)
    devices.refuse_cpu_training(config, len(splits.train_labels), gpus)
    config = from_scratch_weights(config.with_recipe(len(splits.train_labels)))
    distribution = devices.distribution_for(gpus)
    config = devices.fit_batch_to_replicas(config, distribution.replicas)

    with distribution.scope():
        model, backbone = models.build_model(config, splits.num_classes, splits.input_shape)
    # The run folder's first files: every refusal (no GPU, no data, no weights) came before them, so a
    # refused run leaves no folder behind (_prepare_run_dir makes none).
    artifacts.write_json(run_dir / run_folder.CONFIG_FILE, configuration.to_dict(config))
    artifacts.write_labels(run_dir / run_folder.LABELS_FILE, splits.labels)
    jit_compile = devices.resolve_jit_compile(model, gpus)
    training = devices.training_record(
        model,
        gpus,
        precision=precision,
        precision_reason=precision_reason,
        replicas=distribution.replicas,
        jit_compile=jit_compile,
    )
    metadata = {**_metadata(config, splits, model, precision), "training": training}
    artifacts.write_json(run_dir / run_folder.METADATA_FILE, metadata)

    # The stages, head then fine-tuning; a resumed run restores those already done.
    state = callbacks.resume_state(run_dir) if config.resume else {"completed_stages": [], "best": None}
    started = time.perf_counter()
    rates: dict[str, float | None] = {}  # Training images/s by stage, this session's.
    for stage in stages.plan(config):
        rates[stage.name] = stages.train_stage(
            stage, model, backbone, splits, state, config=config, run_dir=run_dir, jit_compile=jit_compile
        )
    training_seconds = time.perf_counter() - started
    training.update(callbacks.run_rate(rates))
    metadata.update(
        training_seconds=round(training_seconds, 1),
        images_per_second=training["images_per_second"],
        best_epoch=callbacks.best_epoch_from_one(state.get("best")),
        training=training,
    )
    artifacts.write_json(run_dir / run_folder.METADATA_FILE, metadata)

    # Evaluate the best checkpoint as saved: this also proves that model.keras reloads. Its test-split
    # output is computed once, for the evaluation and for the float-vs-int8 check's reference.
    best_model = models.load_model(run_dir / run_folder.MODEL_FILE)
    test_probabilities = best_model.predict(splits.test_images, batch_size=config.batch_size, verbose=0)
    metrics = evaluate.evaluate_run(run_dir, model=best_model, splits=splits, probabilities=test_probabilities)

    result = {
        "run_dir": str(run_dir),
        "top1": metrics["top1"],
        "top5": metrics["top5"],
        "loss": metrics["loss"],
        "training_seconds": training_seconds,
        "images_per_second": metadata["images_per_second"],
        "quantization": None,
    }
    if config.export:
        result["quantization"] = _export(run_dir, best_model, splits, config, test_probabilities)
    _print_summary(result)
    return result


def _open_run_dir(config: TrainConfig) -> tuple[Path, TrainConfig]:
    """The run directory of `config` (not made yet) and the config to run there: a resumed run's own from
    its config.json, with `out` set to the directory either way."""
    run_dir = _prepare_run_dir(config)
    if config.resume:
        config = dataclasses.replace(TrainConfig.from_run(run_dir), resume=True)
        print(f"resuming {run_dir}")
    return run_dir, dataclasses.replace(config, out=str(run_dir))


def _export(run_dir: Path, model, splits, config: TrainConfig, test_probabilities) -> dict | None:
    if importlib.util.find_spec("tensorflow") is None:
        print(
            "note: TFLite export skipped: it needs tensorflow (pip install '.[train]'); "
            f"run python train/export.py --run {run_dir} where it is installed"
        )
        return None
    from train import export  # TensorFlow is optional for training (the JAX backend) and needed here.

    return export.export_run(
        run_dir,
        model=model,
        splits=splits,
        max_drop=config.max_drop,
        calibration_samples=config.calibration_samples,
        reference_probabilities=test_probabilities,
    )


def _prepare_run_dir(config: TrainConfig) -> Path:
    if config.out:
        run_dir = Path(config.out)
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        dataset = (
            Path(config.dataset).name if config.dataset not in ("cifar100", "cifar10", "smoke") else config.dataset
        )
        run_dir = Path("runs") / f"{dataset}-{config.model}-{stamp}"
    if config.resume and not (run_dir / run_folder.CONFIG_FILE).exists():
        raise configuration.ConfigError(f"--resume: {run_dir} holds no config.json; nothing to resume")
    if not config.resume and (run_dir / run_folder.CONFIG_FILE).exists():
        raise configuration.ConfigError(
            f"{run_dir} already holds a run; use --resume to continue it or choose another --out"
        )
    return run_dir  # Not made yet: the first file written makes it (edge.common.artifacts), after every refusal.


def from_scratch_weights(config: TrainConfig) -> TrainConfig:
    """`config` with weights "none" for the networks that have no pretrained weights (cnn, se_cnn).

    `--weights` defaults to imagenet, which only the ImageNet backbones use: a from-scratch network
    recorded it as if it had been pretrained (config.json, metadata.json, report.md).
    """
    if config.model in train_config.IMAGENET_MODELS or config.weights == "none":
        return config
    if config.weights != "imagenet":
        print(
            f"note: --weights {config.weights} is ignored: {config.model} has no pretrained backbone and "
            "trains from scratch"
        )
    return dataclasses.replace(config, weights="none")


def _metadata(config: TrainConfig, splits, model, precision: str) -> dict:
    """metadata.json as the run starts; run() adds its "training" block and, after the stages, their numbers."""
    import keras  # Loaded by run() already; imported here so --help never pays for it.

    from train import stages  # Keras loads with it: see run().

    versions = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "numpy": np.__version__,
    }
    if "tensorflow" in sys.modules:
        versions["tensorflow"] = sys.modules["tensorflow"].__version__
    height, width, _ = splits.input_shape
    return {
        "input_size": [height, width],
        "input_dtype": "uint8",
        "image_size": config.resolved_image_size or height,
        "model": config.model,
        "weights": config.weights,
        "dataset": splits.dataset,
        "label_mode": config.label_mode,
        "num_classes": splits.num_classes,
        "labels_file": run_folder.LABELS_FILE,
        "superclasses": splits.superclasses,
        "superclass_of": None if splits.superclass_of is None else [int(i) for i in splits.superclass_of],
        "parameters": int(model.count_params()),
        "precision": precision,
        "unfreeze": config.unfreeze,
        "epochs": stages.epochs_by_stage(config),
        "train_images": int(len(splits.train_labels)),
        "val_images": int(len(splits.val_labels)),
        "test_images": int(len(splits.test_labels)),
        "versions": versions,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _print_summary(result: dict) -> None:
    rate = result["images_per_second"]
    print(
        f"\nrun directory: {result['run_dir']}\n"
        f"test top-1 {result['top1']:.2%}  top-5 {result['top5']:.2%}  loss {result['loss']:.3f}\n"
        f"training {result['training_seconds']:.0f} s" + (f", {rate:.0f} images/s" if rate else "")
    )
    quantization = result.get("quantization")
    if quantization:
        int8 = quantization["variants"].get("int8", {})
        print(
            f"int8 top-1 {int8.get('top1', float('nan')):.2%} against float {quantization['reference']['top1']:.2%}: "
            + ("within" if quantization["passed"] else "OUTSIDE")
            + f" the {quantization['max_drop']} point gate"
        )


COMMAND = command.Command(
    name="train",
    prog="python train/run.py",
    description="Train a CIFAR classifier (EfficientNet-B0 transfer learning by default) and write a run directory.",
    config_class=TrainConfig,
    run=run_with_stop_signals,
    exit_status=_gate_status,
    presets=train_config.PRESETS,
    handlers=((KeyboardInterrupt, _stopped),),
)


# TensorFlow 2.21 still prints a few start-up lines (oneDNN, no CUDA) before its logger reads the
# level the harness sets (edge.common.command.quiet_tensorflow, also run by train/__init__.py).
main = command.entry_point(COMMAND)


if __name__ == "__main__":
    sys.exit(main())
