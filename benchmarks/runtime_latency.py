"""Latency of the exported models on this machine, for each variant and installed runtime.

For every variant found next to `--model` (model_float32 / float16 / dynamic /
int8 .tflite in the same folder; only the given file when it has another name
or `--only` is set) and every installed TFLite runtime (or the one `--runtime`
names), it warms up, then times two things `--runs` times:

- invoke: the interpreter call alone (`interpreter.invoke()` on a prepared input);
- end to end: a decoded photo (a 640 x 480 RGB array, as a camera delivers it)
  through `prepare_image`, quantization, the interpreter, dequantization and top-k.

It prints the median and 90th percentile in milliseconds, and writes them as
JSON with `--json`. A variant that a runtime cannot load gets a row saying why
(and the exit status is 1). TensorFlow is not needed.

    python benchmarks/runtime_latency.py --model runs/NAME/tflite/model_int8.tflite [--runtime litert]
        [--threads 4] [--runs 100] [--json benchmarks/this_machine.json]
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge import preprocess, runtime
from edge.common import command, configuration, formatting, machine, run_folder
from edge.common.configuration import option

# The decoded photo of the end-to-end timing: the size picamera2's preview and most
# USB webcams deliver, so the crop and resize cost what they cost on a Pi.
PHOTO_SIZE = (480, 640)  # (height, width)


@dataclasses.dataclass
class BenchmarkConfig:
    """Options of `python benchmarks/runtime_latency.py`."""

    model: str | None = option(
        None, "a .tflite file; its sibling variants in the same folder are measured too", "Model", metavar="FILE"
    )
    only: bool = option(False, "measure only the given file, not its sibling variants", "Model")
    runtime: Literal["litert", "tflite-runtime"] | None = option(
        None, "runtime to measure; none means every installed one", "Runtime"
    )
    threads: int | None = option(None, "interpreter threads; none lets the runtime choose", "Runtime")
    delegate: str | None = option(None, "external delegate library, e.g. libedgetpu.so.1", "Runtime")
    runs: int = option(50, "timed runs per measurement", "Timing")
    warmup: int = option(5, "untimed runs first (XNNPACK packs weights and caches fill on the first call)", "Timing")
    image: str | None = option(
        None, "photo for the end-to-end timing; none means a generated 640x480 one", "Timing", metavar="FILE"
    )
    top_k: int = option(5, "labels returned by the end-to-end path", "Timing")
    json: str | None = option(None, "write the results here as JSON", "Output", metavar="OUT")


def find_variants(model: Path, only: bool = False) -> dict[str, Path]:
    """{variant name: path}: the converter's variants next to `model`, or just `model` itself."""
    if not model.is_file():
        raise runtime.ModelError(f"{model}: model file not found")
    known = {run_folder.variant_file(variant): variant for variant in run_folder.VARIANTS}
    if only or model.name not in known:
        return {known.get(model.name, model.stem): model}
    return {variant: model.parent / name for name, variant in known.items() if (model.parent / name).is_file()}


def generated_photo(seed: int = 0) -> np.ndarray:
    """A deterministic photo-sized RGB array: smooth colour fields plus sensor-like noise."""
    height, width = PHOTO_SIZE
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [
        127 + 100 * np.sin(rows / (40 + 30 * index) + columns / (70 + 20 * index) + index) for index in range(3)
    ]
    photo = np.stack(channels, axis=-1) + rng.normal(0, 8, (height, width, 3))
    return np.clip(photo, 0, 255).astype(np.uint8)


def measure(classifier: runtime.Classifier, photo: np.ndarray, runs: int, warmup: int, top_k: int) -> dict[str, Any]:
    """Median and p90 (ms) of `interpreter.invoke()` alone and of photo -> top-k."""
    prepared = preprocess.prepare_image(photo, classifier.input_size)
    for _ in range(warmup):
        classifier.classify(photo, top_k)
    classifier.predict(prepared)  # leaves the input tensor set for the invoke-only timing
    invoke_times = []
    for _ in range(runs):
        start = time.perf_counter()
        classifier.interpreter.invoke()
        invoke_times.append(time.perf_counter() - start)
    end_to_end_times = []
    for _ in range(runs):
        start = time.perf_counter()
        classifier.classify(photo, top_k)
        end_to_end_times.append(time.perf_counter() - start)
    return {"invoke_ms": _summary(invoke_times), "end_to_end_ms": _summary(end_to_end_times)}


def _summary(seconds: list[float]) -> dict[str, float]:
    milliseconds = np.asarray(seconds) * 1000
    return {"median": round(float(np.median(milliseconds)), 3), "p90": round(float(np.percentile(milliseconds, 90)), 3)}


def machine_description() -> dict[str, Any]:
    """Where the numbers come from; latency means nothing without it."""
    return {**machine.describe(), "numpy": np.__version__}


def run(config: BenchmarkConfig) -> dict[str, Any]:
    """Measure every variant with every runtime; return {"machine", "config", "results"}.

    A variant that a runtime cannot load gets a row with "error" instead of timings.
    """
    if not config.model:
        raise configuration.ConfigError("--model is required")
    if config.runs < 1 or config.warmup < 0 or config.top_k < 1:
        raise configuration.ConfigError("--runs and --top-k must be at least 1, --warmup at least 0")
    variants = find_variants(Path(config.model), config.only)
    runtimes = [config.runtime] if config.runtime else runtime.available_runtimes()
    if not runtimes:
        raise runtime.ModelError("no TFLite runtime is installed (pip install ai-edge-litert)")
    photo = np.asarray(preprocess.load_image(config.image)) if config.image else generated_photo()
    results = []
    for variant, path in variants.items():
        for runtime_name in runtimes:
            row = {
                "variant": variant,
                "file": str(path),
                "size_bytes": path.stat().st_size,
                "runtime": runtime_name,
                "runtime_version": runtime.runtime_version(runtime_name),
                "threads": config.threads,
            }
            try:
                classifier = runtime.Classifier(
                    path, runtime=runtime_name, threads=config.threads, delegate=config.delegate
                )
            except runtime.ModelError as error:
                # One variant a runtime cannot load (an op version newer than the runtime, say) is a
                # finding for the table, not a reason to drop the other measurements.
                results.append({**row, "error": str(error)})
                continue
            timings = measure(classifier, photo, config.runs, config.warmup, config.top_k)
            results.append(
                {
                    **row,
                    "input_size": list(classifier.input_size),
                    "input_dtype": str(classifier.input_dtype),
                    **timings,
                }
            )
    return {
        "machine": machine_description(),
        "config": configuration.to_dict(config),
        "photo_size": list(photo.shape[:2]),
        "results": results,
    }


def format_table(result: dict[str, Any]) -> str:
    """A Markdown table of `run`'s result, with the machine it was measured on."""
    machine = result["machine"]
    lines = [
        f"{machine['processor']} ({machine['machine']}, {machine['cpu_count']} CPUs), "
        f"Python {machine['python']}, threads: {result['config']['threads'] or 'runtime default'}, "
        f"runs: {result['config']['runs']}, photo {result['photo_size'][1]}x{result['photo_size'][0]}",
        "",
        "| variant | runtime | size | invoke median (ms) | invoke p90 (ms) | photo to top-k median (ms) | p90 (ms) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["results"]:
        if "error" in row:
            reason = row["error"].splitlines()[0].replace("|", "/")
            lines.append(
                f"| {row['variant']} | {row['runtime']} {row['runtime_version'] or ''} | "
                f"{formatting.size(row['size_bytes'])} | cannot load: {reason} | | | |"
            )
            continue
        lines.append(
            f"| {row['variant']} | {row['runtime']} {row['runtime_version'] or ''} | "
            f"{formatting.size(row['size_bytes'])} | "
            f"{row['invoke_ms']['median']:.2f} | {row['invoke_ms']['p90']:.2f} | "
            f"{row['end_to_end_ms']['median']:.2f} | {row['end_to_end_ms']['p90']:.2f} |"
        )
    return "\n".join(lines)


COMMAND = command.Command(
    name="runtime_latency",
    prog="python benchmarks/runtime_latency.py",
    description="Time .tflite variants: interpreter alone and photo to top-k.",
    config_class=BenchmarkConfig,
    run=run,
    render=lambda config, result: format_table(result),
    json_file="json",
    exit_status=lambda config, result: 1 if any("error" in row for row in result["results"]) else 0,
)


main = command.entry_point(COMMAND)


if __name__ == "__main__":
    raise SystemExit(main())
