"""EfficientNet-B0 against EfficientNet-Lite0 as TFLite files on this CPU: size and single-image latency.

    python benchmarks/backbone_latency.py [--threads 1 4] [--runs 50]

Both networks are built at 224 x 224 with a 1000-class head through train.models.build_model, the
way a run builds them, and converted by the project's own export steps (train/export_tflite.py):
float32, and full-integer int8 calibrated on `--calibration` crops of the starter's calibration
photos (train/photos.py). Latency depends on the architecture, not on the weights, so B0 is built
with random weights (Keras' ImageNet file cannot be downloaded here) and Lite0 too, for a like-for-like
pair; accuracy is not measured by this script. Prints one row per file and thread count: the median
and 90th percentile of `interpreter.invoke()` on a prepared input, in milliseconds. Needs TensorFlow
(the converter) and the lite extra (the photos).
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge import runtime
from edge.common import command, formatting, machine
from edge.common.configuration import option

NETWORKS = ("efficientnet_b0", "efficientnet_lite0")
SIZE = 224


@dataclasses.dataclass
class BackboneConfig:
    """Options of `python benchmarks/backbone_latency.py`."""

    threads: list = option([1, 4], "interpreter thread counts to time")
    runs: int = option(50, "timed invocations per file and thread count")
    calibration: int = option(32, "calibration crops for the int8 files")


def convert(name: str, workspace: Path, calibration: np.ndarray) -> dict[str, Path]:
    from train import export_tflite, models
    from train.config import TrainConfig

    config = TrainConfig(model=name, weights="none", augment="none", image_size=SIZE)
    model, _ = models.build_model(config, 1000, (SIZE, SIZE, 3))
    logits = models.logits_model(model)
    saved = export_tflite.export_saved_model(model, workspace / f"{name}_float", workspace)
    saved_logits = export_tflite.export_saved_model(
        logits, workspace / f"{name}_logits", workspace, output_name=runtime.LOGITS_OUTPUT
    )
    paths = {"float32": workspace / f"{name}_float32.tflite", "int8": workspace / f"{name}_int8.tflite"}
    paths["float32"].write_bytes(export_tflite.convert_float(saved, "float32"))
    paths["int8"].write_bytes(export_tflite.quantize(export_tflite.calibrate(saved_logits, calibration)))
    return paths


def time_invoke(path: Path, threads: int, runs: int, image: np.ndarray) -> tuple[float, float]:
    classifier = runtime.Classifier(path, threads=threads)
    classifier.predict(image[None])  # Prepares the input tensor at batch one.
    timings = []
    for index in range(runs + 5):
        started = time.perf_counter()
        classifier.interpreter.invoke()
        if index >= 5:
            timings.append(1000 * (time.perf_counter() - started))
    return float(np.median(timings)), float(np.percentile(timings, 90))


def run(config: BackboneConfig) -> list[dict]:
    from train import photos

    calibration = photos.calibration_views(SIZE, config.calibration)
    rows = []
    with tempfile.TemporaryDirectory(prefix="backbones-") as workspace:
        (Path(workspace) / "labels.txt").write_text("".join(f"class{index}\n" for index in range(1000)))
        for name in NETWORKS:
            for variant, path in convert(name, Path(workspace), calibration).items():
                for threads in config.threads:
                    median, p90 = time_invoke(path, int(threads), config.runs, calibration[0])
                    rows.append(
                        {
                            "network": name,
                            "variant": variant,
                            "threads": int(threads),
                            "size": formatting.size(path.stat().st_size),
                            "median_ms": round(median, 2),
                            "p90_ms": round(p90, 2),
                        }
                    )
    return rows


def _table(config: BackboneConfig, rows: list[dict]) -> str:
    return "\n".join(
        [f"{machine.processor_name()}, TFLite runtime: {runtime.available_runtimes()}"]
        + [
            f"{row['network']:18} {row['variant']:8} {row['threads']} thread(s)  {row['size']:>10}  "
            f"median {row['median_ms']:.2f} ms  p90 {row['p90_ms']:.2f} ms"
            for row in rows
        ]
    )


COMMAND = command.Command(
    name="backbone_latency",
    prog="python benchmarks/backbone_latency.py",
    description=__doc__.split("\n")[0],
    config_class=BackboneConfig,
    run=run,
    render=_table,
)


main = command.entry_point(COMMAND)


if __name__ == "__main__":
    sys.exit(main())
