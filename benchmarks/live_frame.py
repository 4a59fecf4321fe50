"""Per-frame cost of the demo's live mode on the server: demo/live.py's frame function, in-process.

    python benchmarks/live_frame.py --run runs/NAME                   # the run's int8 model
    python benchmarks/live_frame.py --model runs/NAME/tflite/model_int8.tflite --frames 200 --width 1280 --height 720

Each frame is what the browser streams: a camera-sized picture (a photo of
demo/examples/ moving across the frame) as a JPEG data URL, the form Chromium's
`canvas.toDataURL("image/jpeg")` sends (quality 0.92). Times the whole frame
function (decode the data URL, edge.preprocess.prepare_image, the interpreter,
the top-5; the "ms per frame" of the page's status line) and the interpreter
call alone, and prints p50/p95. Gradio's own transport (upload of the frame,
the event stream back) is not included: it depends on the network and the
browser. The fps a visitor sees is shown on the page itself.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from demo import live, ui
from demo.models import load_models
from edge.common import command, configuration, formatting, run_folder
from edge.common.configuration import option

REPOSITORY = Path(__file__).resolve().parents[1]
BROWSER_JPEG_QUALITY = 92  # canvas.toDataURL("image/jpeg") without a quality argument uses 0.92


@dataclasses.dataclass
class LiveFrameConfig:
    """Options of the live-mode frame benchmark."""

    run: str | None = option(None, "run folder (or its tflite/) whose int8 model to time", "Model")
    model: str | None = option(None, "one .tflite file to time (labels.txt beside it)", "Model")
    threads: int | None = option(None, "interpreter threads (default: the runtime's)", "Model")
    frames: int = option(100, "timed frames", "Frames")
    warmup: int = option(5, "frames before timing starts (not counted)", "Frames")
    width: int = option(640, "camera frame width in pixels", "Frames")
    height: int = option(480, "camera frame height in pixels", "Frames")
    photo: str = option(str(REPOSITORY / "demo" / "examples" / "rocket.jpg"), "the photo the frames show", "Frames")
    json: str | None = option(None, "also write the results to this JSON file", "Output")


def camera_frames(photo: str, width: int, height: int, count: int) -> list[dict]:
    """`count` distinct frames as the stream delivers them: {"url": JPEG data URL}, the photo sliding across."""
    scene = Image.open(photo).convert("RGB").resize((width * 2, height))
    frames = []
    for index in range(count):
        left = (index * 7) % width  # a few pixels per frame, like a slow pan
        buffer = io.BytesIO()
        scene.crop((left, 0, left + width, height)).save(buffer, format="JPEG", quality=BROWSER_JPEG_QUALITY)
        frames.append({"url": "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")})
    return frames


def run(config: LiveFrameConfig) -> dict[str, Any]:
    """Time the frame function and the interpreter over `frames` frames; milliseconds."""
    if config.frames < 1 or config.warmup < 0 or config.width < 1 or config.height < 1:
        raise configuration.ConfigError("--frames, --width and --height must be at least 1, --warmup at least 0")
    files = run_folder.find_model_files(folder=config.run, model=config.model)
    classifier = load_models(files, threads=config.threads).model
    classify_frame = live.make_classify_frame(classifier, ui.TOP_K)
    frames = camera_frames(config.photo, config.width, config.height, config.warmup + config.frames)
    meter = None
    frame_ms, model_ms = [], []
    for index, frame in enumerate(frames):
        started = time.perf_counter()
        _, _, meter = classify_frame(frame, meter)
        elapsed = (time.perf_counter() - started) * 1000.0
        pixels = np.zeros((*classifier.input_size, 3), np.uint8)
        started = time.perf_counter()
        classifier.predict(pixels)
        model_elapsed = (time.perf_counter() - started) * 1000.0
        if index >= config.warmup:
            frame_ms.append(elapsed)
            model_ms.append(model_elapsed)
    frame_values, model_values = np.array(frame_ms), np.array(model_ms)
    return {
        "model": str(files.model),
        "size_bytes": files.model.stat().st_size,
        "runtime": classifier.runtime_name,
        "frames": config.frames,
        "frame_size": [config.width, config.height],
        "frame_bytes_median": int(np.median([len(frame["url"]) for frame in frames])),
        "frame_p50_ms": float(np.percentile(frame_values, 50)),
        "frame_p95_ms": float(np.percentile(frame_values, 95)),
        "model_p50_ms": float(np.percentile(model_values, 50)),
        "model_p95_ms": float(np.percentile(model_values, 95)),
        "skipped": meter.skipped,
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
    }


COMMAND = command.Command(
    name="live_frame",
    prog="python benchmarks/live_frame.py",
    description=__doc__.split("\n\n")[0],
    config_class=LiveFrameConfig,
    run=lambda config: run(config),
    render=lambda config, result: render(result),
    json_file="json",
    exit_status=lambda config, result: 1 if result["skipped"] else 0,
)


main = command.entry_point(COMMAND)


def render(result: dict) -> str:
    """Two lines: the model and the frames, then the frame function's and the interpreter's times."""
    width, height = result["frame_size"]
    return (
        f"{Path(result['model']).name} ({formatting.size(result['size_bytes'])}, {result['runtime']}), "
        f"{result['frames']} frames of {width}x{height} "
        f"(data URL {formatting.size(result['frame_bytes_median'])} median), {result['skipped']} skipped\n"
        f"frame function p50 {result['frame_p50_ms']:.1f} ms, p95 {result['frame_p95_ms']:.1f} ms; "
        f"interpreter alone p50 {result['model_p50_ms']:.1f} ms, p95 {result['model_p95_ms']:.1f} ms "
        f"({result['cpu_count']} CPUs, load average {result['load_average_1min']:.1f})"
    )


if __name__ == "__main__":
    raise SystemExit(main())
