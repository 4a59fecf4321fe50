"""The cost of one occlusion map ("Where it looked") with an exported model, at 1 and 2 threads.

    python benchmarks/occlusion_cost.py --model runs/bench-efficientnet-b0/tflite/model_int8.tflite
    python benchmarks/occlusion_cost.py --model models/model_int8.tflite --threads 1 2 4 --runs 5

For each thread count it loads the model in `edge.runtime.Classifier`, makes
one untimed map (the first invocation at a new batch size allocates tensors
and packs weights), then times `--runs` whole maps: the original image and
its `edge.occlusion.GRID ** 2` greyed copies through `Classifier.predict`, the
drop grid, and the overlay. It prints the median milliseconds per map, the
images per map and the interpreter invocations per map, counted by wrapping
`interpreter.invoke`, next to the same map made one image per invocation
(what batching saves) and one single-image prediction for scale, taking
turns. Each timed map includes the interpreter's resize from batch 1 to 50,
as in the demo, where the answer (one image) comes just before the map. The
image is a deterministic generated photo, so runs are comparable. The load
average before and after is printed: on a shared machine it says how far to
trust the numbers.

A benchmark, not a test: numbers depend on the machine and on what else runs
on it. TensorFlow is not needed.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge import occlusion, preprocess, runtime
from edge.common import command, configuration, formatting, machine
from edge.common.configuration import option

#: Untimed maps before timing: the first call at a new batch size allocates and packs weights.
WARMUP_MAPS = 1
#: The generated photo's size, (height, width): a typical camera frame.
PHOTO_SIZE = (480, 640)


@dataclasses.dataclass
class OcclusionBenchmarkConfig:
    """Options of `python benchmarks/occlusion_cost.py`."""

    model: str | None = option(None, "the .tflite file (labels.txt next to it)", "Model", metavar="FILE")
    threads: list = option([1, 2], "interpreter thread counts to measure, one after the other", "Model")
    runs: int = option(5, "timed maps per thread count", "Timing")
    json: str | None = option(None, "also write the results here as JSON", "Output", metavar="OUT")

    def __post_init__(self) -> None:
        try:  # The command line gives strings; a config file or a caller may give ints.
            self.threads = [int(threads) for threads in self.threads]
        except (TypeError, ValueError):
            raise configuration.ConfigError(f"--threads takes whole numbers, got {self.threads!r}") from None
        if not self.threads or min(self.threads) < 1 or self.runs < 1:
            raise configuration.ConfigError(
                f"--threads values and --runs must be at least 1, got {self.threads} and {self.runs}"
            )


def generated_photo(seed: int = 0) -> np.ndarray:
    """A deterministic photo-sized RGB array: smooth colour fields, a bright disc, sensor-like noise."""
    height, width = PHOTO_SIZE
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [127 + 90 * np.sin(rows / (50 + 30 * index) + columns / (80 + 20 * index) + index) for index in range(3)]
    photo = np.stack(channels, axis=-1)
    disc = (rows - height / 2) ** 2 + (columns - width / 2) ** 2 < (height / 5) ** 2
    photo[disc] = (240, 200, 60)
    photo += rng.normal(0, 8, photo.shape)
    return np.clip(photo, 0, 255).astype(np.uint8)


def measure(classifier: runtime.Classifier, photo: np.ndarray, runs: int) -> dict[str, Any]:
    """Median ms of one map (maps, overlay included) and of one single-image predict; invocations per map."""
    invocations = []
    original_invoke = classifier.interpreter.invoke

    def counting_invoke():
        invocations.append(1)
        return original_invoke()

    classifier.interpreter.invoke = counting_invoke
    pixels = preprocess.prepare_image(photo, classifier.input_size)
    background = preprocess.prepare_image(photo, occlusion.DISPLAY_SIZE)
    try:
        for _ in range(WARMUP_MAPS):
            occlusion.occlusion_map(pixels, classifier.predict).overlay(background)
        map_ms, unbatched_ms, single_ms, invocations_per_map = [], [], [], set()
        # The three timings take turns, so a burst of load on a shared machine hits them alike.
        for _ in range(runs):
            invocations.clear()
            start = time.perf_counter()
            result = occlusion.occlusion_map(pixels, classifier.predict)
            result.overlay(background)
            map_ms.append((time.perf_counter() - start) * 1000.0)
            invocations_per_map.add(len(invocations))
            # The same map with one image per invocation: what batching saves.
            start = time.perf_counter()
            occlusion.occlusion_map(pixels, classifier.predict, batch_size=1).overlay(background)
            unbatched_ms.append((time.perf_counter() - start) * 1000.0)
            start = time.perf_counter()
            classifier.predict(pixels)
            single_ms.append((time.perf_counter() - start) * 1000.0)
    finally:
        classifier.interpreter.invoke = original_invoke
    return {
        "threads": classifier.num_threads,
        "map_ms": statistics.median(map_ms),
        "single_image_ms": statistics.median(single_ms),
        "unbatched_map_ms": statistics.median(unbatched_ms),
        "images_per_map": result.images,
        "invocations_per_map": max(invocations_per_map),
        "grid": [occlusion.GRID, occlusion.GRID],
        "input_size": list(classifier.input_size),
    }


def run(config: OcclusionBenchmarkConfig) -> dict[str, Any]:
    """Measure each thread count; return {"machine", "model", "results": [one row per thread count]}."""
    if not config.model:
        raise configuration.ConfigError("--model is required")
    model = Path(config.model)
    if not model.is_file():
        raise runtime.ModelError(f"{model}: model file not found")
    photo = generated_photo()
    load_before = _load_average()
    results = [measure(runtime.Classifier(model, threads=threads), photo, config.runs) for threads in config.threads]
    return {
        "machine": machine.describe(),
        "model": str(model),
        "size_bytes": model.stat().st_size,
        "runs": config.runs,
        "load_average": [load_before, _load_average()],
        "results": results,
    }


def _load_average() -> float | None:
    """The 1-minute load average, where the system has one."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def format_table(result: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    before, after = result["load_average"]
    rows = [
        f"{result['model']} ({formatting.size(result['size_bytes'])}), median of {result['runs']} maps; "
        f"{result['machine']['cpu_count']} CPUs, load average {before} before, {after} after",
        "",
        "| threads | one map (ms) | images per map | interpreter invocations | "
        "the map, one image per invocation (ms) | one image alone (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["results"]:
        rows.append(
            f"| {row['threads']} | {row['map_ms']:.0f} | {row['images_per_map']} "
            f"| {row['invocations_per_map']} | {row['unbatched_map_ms']:.0f} | {row['single_image_ms']:.1f} |"
        )
    return "\n".join(rows)


COMMAND = command.Command(
    name="occlusion_cost",
    prog="python benchmarks/occlusion_cost.py",
    description="Time one occlusion map (Where it looked) with a .tflite model.",
    config_class=OcclusionBenchmarkConfig,
    run=run,
    render=lambda config, result: format_table(result),
    json_file="json",
)


main = command.entry_point(COMMAND)


if __name__ == "__main__":
    raise SystemExit(main())
