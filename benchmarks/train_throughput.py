"""Training throughput of the real model through the real data path: images per second on this backend and device.

    python benchmarks/train_throughput.py                       # EfficientNet-B0 at 224, batch 128, XLA on
    KERAS_BACKEND=jax python benchmarks/train_throughput.py --batch-size 256 --steps 50
    python benchmarks/train_throughput.py --weights efficientnetb0_notop.h5   # ImageNet weights from a file

A benchmark, not a test: it measures and prints. What it times is what `train/run.py` trains
while fine-tuning: the ImageNet structure of the backbone (the stem Keras builds for
`weights="imagenet"`, with weights from `--weights FILE`, else random ones saved to a file and
loaded the same way), its BatchNorm frozen, drop-connect on, the run's compile step
(optimizer, schedule, loss, metrics) with XLA as chosen, and the run's own batches
(`train.batches.MixedBatches`: a reshuffled array of uint8 32x32 images, a new batch every
step) through the in-graph augmentation and resize. The first `--warmup-steps` (compilation)
are left out of the timing.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge.common import command
from edge.common.configuration import option

#: Classes of the head (CIFAR-100's).
NUM_CLASSES = 100


@dataclasses.dataclass
class ThroughputConfig:
    """What to measure."""

    model: str = option("efficientnet_b0", "a --model of train/run.py")
    weights: str | None = option(
        None,
        "backbone weights file (default: random weights, saved and loaded as a "
        "file, so the ImageNet structure and the frozen BatchNorm are the same)",
    )
    image_size: int | None = option(None, "in-graph image size (default: the model's, 224 for ImageNet backbones)")
    batch_size: int = option(128, "images per step")
    steps: int = option(20, "timed training steps")
    warmup_steps: int = option(3, "untimed steps first (compilation, autotuning)")
    precision: str = option("auto", "auto, float32, mixed_bfloat16 or mixed_float16")
    unfreeze: str = option("all", "which backbone layers train: all, none, or a fraction")
    augment: str = option("basic", "augmentation in the graph, as train/run.py's --augment")
    jit_compile: bool = option(True, "compile the training step with XLA (--no-jit-compile: without)")
    json: str | None = option(None, "also write the result to this JSON file")


def run(config: ThroughputConfig) -> dict:
    import keras  # Loaded here so --help never pays for it.

    from train import batches, devices, models, optimization
    from train.config import IMAGENET_MODELS, TrainConfig

    gpus = devices.gpu_names()
    precision, _ = devices.set_precision(config.precision, gpus)
    with tempfile.TemporaryDirectory() as scratch:
        weights = "none"
        if config.model in IMAGENET_MODELS:
            weights = config.weights or _random_weights_file(keras, config, Path(scratch))
        train_config = TrainConfig(
            model=config.model,
            weights=weights,
            image_size=config.image_size,
            batch_size=config.batch_size,
            precision=config.precision,
            unfreeze=config.unfreeze,
            augment=config.augment,
            learning_rate=1e-4,
        )
        model, backbone = models.build_model(train_config, NUM_CLASSES, (32, 32, 3))
    models.set_backbone_trainable(backbone, train_config.unfreeze_fraction, pretrained=train_config.pretrained)
    total = config.warmup_steps + config.steps
    optimization.compile_for_stage(
        model, train_config, NUM_CLASSES, 1e-4, steps_per_epoch=total, epochs=1, jit_compile=config.jit_compile
    )
    random = np.random.default_rng(0)

    def data(steps: int):
        images = random.integers(0, 256, (steps * config.batch_size, 32, 32, 3), dtype=np.uint8)
        labels = random.integers(0, NUM_CLASSES, steps * config.batch_size)
        return batches.MixedBatches(images, labels, NUM_CLASSES, config.batch_size, seed=int(random.integers(1 << 30)))

    model.fit(data(config.warmup_steps), epochs=1, verbose=0)  # Compiles; not timed.
    timed = data(config.steps)
    started = time.perf_counter()
    history = model.fit(timed, epochs=1, verbose=0)
    float(history.history["loss"][-1])  # The loss of the last step: every step has finished.
    seconds = time.perf_counter() - started
    return {
        "model": config.model,
        "weights": config.weights or "random (ImageNet structure, frozen BatchNorm)",
        "image_size": train_config.resolved_image_size,
        "batch_size": config.batch_size,
        "precision": precision,
        "jit_compile": bool(model.jit_compile),
        "augment": config.augment,
        "backend": keras.backend.backend(),
        "device": ", ".join(gpus) or devices.cpu_name(),
        "images_per_second": round(config.batch_size * config.steps / seconds, 1),
        "seconds_per_step": round(seconds / config.steps, 4),
        "python": platform.python_version(),
        "keras": keras.__version__,
    }


def _random_weights_file(keras, config: ThroughputConfig, folder: Path) -> str:
    """Random weights of the backbone, saved as a file: loaded like a pretrained file, frozen BatchNorm and all."""
    from train import models
    from train.config import TrainConfig

    size = TrainConfig(model=config.model, image_size=config.image_size).resolved_image_size
    _, backbone = models.build_model(
        TrainConfig(model=config.model, weights="none", image_size=size, augment="none"), NUM_CLASSES, (32, 32, 3)
    )
    path = folder / f"{config.model}_random.weights.h5"
    backbone.save_weights(path)
    return str(path)


COMMAND = command.Command(
    name="train_throughput",
    prog="python benchmarks/train_throughput.py",
    description=__doc__.split("\n")[0],
    config_class=ThroughputConfig,
    run=run,
    render=lambda config, result: json.dumps(result, indent=2),
    json_file="json",
)


main = command.entry_point(COMMAND)


if __name__ == "__main__":
    sys.exit(main())
