"""Training throughput of a model on synthetic batches: images per second on this backend and device.

    python benchmarks/train_throughput.py                       # EfficientNet-B0 at 224, batch 128
    KERAS_BACKEND=jax python benchmarks/train_throughput.py --batch-size 256 --steps 50

A benchmark, not a test: it measures and prints. The model, compile step and mixed-precision
choice are the training run's own (train/run.py), fed random uint8 images at CIFAR's native
32x32; the first `--warmup-steps` (compilation) are left out of the timing.
"""
from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from typing import Optional, Sequence

import numpy as np

from edge import configuration
from edge.configuration import option


@dataclasses.dataclass
class ThroughputConfig:
    """What to measure."""

    model: str = option("efficientnet_b0", "a --model of train/run.py")
    image_size: Optional[int] = option(None, "in-graph image size (default: the model's, 224 for ImageNet backbones)")
    batch_size: int = option(128, "images per step")
    steps: int = option(20, "timed training steps")
    warmup_steps: int = option(3, "untimed steps first (compilation, autotuning)")
    precision: str = option("auto", "auto, float32, mixed_bfloat16 or mixed_float16")
    unfreeze: str = option("all", "which backbone layers train: all, none, or a fraction")
    json: Optional[str] = option(None, "also write the result to this JSON file")


def run(config: ThroughputConfig) -> dict:
    import keras  # Loaded by run() already; imported here so --help never pays for it.

    from train import models
    from train import run as training
    from train.config import TrainConfig

    train_config = TrainConfig(model=config.model, weights="none", image_size=config.image_size,
                               batch_size=config.batch_size, precision=config.precision, unfreeze=config.unfreeze)
    precision = training._resolve_precision(config.precision)
    keras.mixed_precision.set_global_policy(precision)
    num_classes = 100
    model, backbone = models.build_model(train_config, num_classes, (32, 32, 3))
    models.set_backbone_trainable(backbone, train_config.unfreeze_fraction, pretrained=False)
    training.compile_for_stage(model, train_config, num_classes, 1e-3, config.steps, 1)
    random = np.random.default_rng(0)
    images = random.integers(0, 256, (config.batch_size, 32, 32, 3), dtype=np.uint8)
    targets = np.eye(num_classes, dtype="float32")[random.integers(0, num_classes, config.batch_size)]
    for _ in range(config.warmup_steps):
        model.train_on_batch(images, targets)
    started = time.perf_counter()
    for _ in range(config.steps):
        loss = model.train_on_batch(images, targets)
    np.asarray(loss)  # Waits for asynchronous backends to finish the last step.
    seconds = time.perf_counter() - started
    result = {
        "model": config.model, "image_size": train_config.resolved_image_size, "batch_size": config.batch_size,
        "precision": precision, "backend": keras.backend.backend(), "device": _device_name(),
        "images_per_second": round(config.batch_size * config.steps / seconds, 1),
        "seconds_per_step": round(seconds / config.steps, 4), "python": platform.python_version(),
        "keras": keras.__version__,
    }
    return result


def _device_name() -> str:
    gpus = training_gpu_names()
    return ", ".join(gpus) if gpus else f"CPU ({platform.processor() or platform.machine()})"


def training_gpu_names() -> list[str]:
    import keras  # Loaded by run() already; imported here so --help never pays for it.
    if keras.backend.backend() == "jax":
        import jax  # Only the backend in use is imported; the others need not be installed.
        return [device.device_kind for device in jax.devices() if device.platform == "gpu"]
    if keras.backend.backend() == "torch":
        import torch  # Only the backend in use is imported; the others need not be installed.
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    import tensorflow as tf  # Only the backend in use is imported; the others need not be installed.
    return [gpu.name for gpu in tf.config.list_physical_devices("GPU")]


def main(argv: Sequence[str] | None = None) -> int:
    config = configuration.parse_command_line(ThroughputConfig, argv, prog="python benchmarks/train_throughput.py",
                                              description=__doc__.split("\n")[0])
    result = run(config)
    print(json.dumps(result, indent=2))
    if config.json:
        from edge.artifacts import write_json
        write_json(config.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
