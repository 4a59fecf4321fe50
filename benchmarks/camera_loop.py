"""How fast the camera loop runs, next to the interpreter's own rate, and with `--serve` and a viewer.

    python benchmarks/camera_loop.py --model runs/NAME/tflite/model_int8.tflite --threads 4
    python benchmarks/camera_loop.py --model models/model_int8.tflite --frames 300 --json-out loop.json
    python benchmarks/camera_loop.py --model MODEL --frames 100 --no-serve   # without the --serve measurement

Writes a synthetic MJPG video at camera resolution (640x480 by default) to a
temporary folder and plays it through `edge.camera.run` with `--headless`
output thrown away: decode (on the capture thread), the shared preprocessing
(centre crop and antialiased resize of each frame), the interpreter, and the
text line. Then it times `Classifier.predict` alone on one prepared image, the
interpreter's own rate. The difference per frame is the loop's overhead.
Unless `--no-serve`, it plays the video once more with `--serve` on a free
loopback port and one client thread reading /stream.mjpg throughout (as a
browser watching the live view does): the cost of annotating and
JPEG-encoding each frame, and of sending it, on the same CPUs.

A benchmark, not a test: numbers depend on the machine and on what else runs
on it. Needs OpenCV (to write and read the video) and a TFLite runtime.
"""

import dataclasses
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge import camera, preprocess, runtime, serve, sources
from edge.common import command, configuration, machine, run_folder
from edge.common.configuration import option

#: Interpreter calls before timing starts: the first calls allocate and warm caches.
WARMUP_CALLS = 10
#: Frame rate written into the video's header; the loop ignores it and reads as fast as it can.
VIDEO_FPS = 30
#: Seconds the stream client waits on its socket before giving up (it is closed by the server when the loop ends).
CLIENT_TIMEOUT_SECONDS = 60
#: Bytes the stream client reads at a time.
CLIENT_READ_BYTES = 65536


@dataclasses.dataclass
class LoopBenchmarkConfig:
    """What `python benchmarks/camera_loop.py` measures. Sizes in pixels."""

    model: str | None = option(None, "the .tflite file; none uses the camera's default model", "Model")
    runtime: Literal["litert", "tflite-runtime"] | None = option(
        None, "TFLite runtime; none picks the first installed", "Model"
    )
    threads: int | None = option(None, "interpreter threads; none leaves it to the runtime", "Model")
    frames: int = option(200, "frames in the generated video, and interpreter calls timed alone", "Benchmark")
    rounds: int = option(
        3,
        "interleaved rounds of both measurements; the best of each is reported "
        "(on a shared machine the best is the least disturbed)",
        "Benchmark",
    )
    width: int = option(640, "video frame width (a typical camera resolution)", "Benchmark")
    height: int = option(480, "video frame height", "Benchmark")
    serve: bool = option(True, "also time the loop with --serve and one client reading /stream.mjpg", "Benchmark")
    json_out: str | None = option(None, "also write the results to this JSON file", "Benchmark", metavar="FILE")

    def __post_init__(self) -> None:
        for name in ("frames", "rounds", "width", "height"):
            if getattr(self, name) < 1:
                raise configuration.ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")


def write_video(path: Path, frames: int, width: int, height: int) -> Path:
    """A synthetic MJPG .avi: a colour gradient with a moving square, so every frame differs."""
    cv2 = sources.import_opencv()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, (width, height))
    if not writer.isOpened():
        raise sources.CameraError(f"OpenCV cannot write an MJPG video to {path}")
    rows, columns = np.mgrid[0:height, 0:width]
    base = np.stack(
        [columns * 255 // max(1, width - 1), rows * 255 // max(1, height - 1), np.full_like(rows, 96)], axis=-1
    ).astype(np.uint8)
    side = min(width, height) // 4
    for index in range(frames):
        frame = base.copy()
        left = (index * 7) % max(1, width - side)
        top = (index * 5) % max(1, height - side)
        frame[top : top + side, left : left + side] = (255 - 3 * index % 256, 40, 200)
        writer.write(frame)
    writer.release()
    return path


def time_interpreter(classifier: runtime.Classifier, image: np.ndarray, calls: int) -> np.ndarray:
    """Seconds of each of `calls` `Classifier.predict` calls on one prepared image, after a warm-up."""
    batch = image[np.newaxis]
    for _ in range(WARMUP_CALLS):
        classifier.predict(batch)
    seconds = np.empty(calls)
    for call in range(calls):
        started = time.perf_counter()
        classifier.predict(batch)
        seconds[call] = time.perf_counter() - started
    return seconds


class StreamClient:
    """A thread reading /stream.mjpg until the server closes it, counting the JPEG parts, as a browser would."""

    def __init__(self, port: int):
        self.parts = 0
        self.bytes = 0
        # Connected now: the server has bound its socket, so the request waits in its backlog until it serves.
        self._socket = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_SECONDS)
        self._socket.sendall(b"GET /stream.mjpg HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        self._thread = threading.Thread(target=self._read, name="stream-client", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        marker, tail = f"--{serve.BOUNDARY}\r\n".encode(), b""
        try:
            while chunk := self._socket.recv(CLIENT_READ_BYTES):
                self.bytes += len(chunk)
                # Count boundary lines, including one split across two reads (the tail carries it over).
                self.parts += (tail + chunk).count(marker)
                tail = chunk[-(len(marker) - 1) :]
        except OSError:  # The server shut the connection as the loop ended.
            pass

    def close(self) -> None:
        self._thread.join(CLIENT_TIMEOUT_SECONDS)
        self._socket.close()


def run_served(loop_options: camera.CameraConfig, classifier: runtime.Classifier) -> dict[str, Any]:
    """The loop's summary with --serve on a free loopback port and one client reading the stream throughout."""
    server = serve.LiveServer("127.0.0.1", 0)
    client = StreamClient(server.port)
    try:
        with open(os.devnull, "w") as discard:
            summary = camera.run(loop_options, classifier=classifier, stream=discard, server=server)
    finally:
        client.close()  # run() closed the server, so the client's read has ended.
    return dict(
        summary, stream_parts=client.parts, stream_bytes=client.bytes, encoded_frames=server.latest.encoded_frames
    )


def check_frames(summary: dict[str, Any], frames: int) -> None:
    if summary["frames"] != frames:
        raise RuntimeError(
            f"the loop classified {summary['frames']} of {frames} frames (stopped: {summary['stopped']})"
        )


def run(options: LoopBenchmarkConfig) -> dict[str, Any]:
    """Measure the loop and the interpreter alone; return the numbers (ms per frame, frames per second)."""
    model_path = Path(options.model) if options.model else run_folder.find_default_model(camera.REPOSITORY)
    classifier = runtime.Classifier(model_path, runtime=options.runtime, threads=options.threads)
    with tempfile.TemporaryDirectory(prefix="camera-loop-") as folder:
        video = write_video(Path(folder) / "benchmark.avi", options.frames, options.width, options.height)
        first_frame = sources.OpenCVSource(str(video), live=False)
        try:
            image = preprocess.prepare_image(first_frame.read(), classifier.input_size)
        finally:
            first_frame.close()
        loop_options = camera.CameraConfig(
            source=str(video), headless=True, threads=options.threads, runtime=options.runtime
        )
        alone, summary, served = None, None, None
        for _ in range(options.rounds):
            seconds = time_interpreter(classifier, image, options.frames)
            if alone is None or seconds.mean() < alone.mean():
                alone = seconds
            with open(os.devnull, "w") as discard:
                candidate = camera.run(loop_options, classifier=classifier, stream=discard)
            check_frames(candidate, options.frames)
            if summary is None or candidate["fps"] > summary["fps"]:
                summary = candidate
            if options.serve:
                candidate = run_served(dataclasses.replace(loop_options, serve="127.0.0.1:0"), classifier)
                check_frames(candidate, options.frames)
                if served is None or candidate["fps"] > served["fps"]:
                    served = candidate
    loop_ms = 1000 / summary["fps"]
    return {
        "model": str(model_path),
        "runtime": classifier.runtime_name,
        "runtime_version": classifier.runtime_version,
        "threads": options.threads,
        "input_size": list(classifier.input_size),
        "frames": options.frames,
        "rounds": options.rounds,
        "frame_size": [options.width, options.height],
        "interpreter_ms": 1000 * alone.mean(),
        "interpreter_median_ms": 1000 * float(np.median(alone)),
        "interpreter_fps": 1 / alone.mean(),
        "loop_ms": loop_ms,
        "loop_fps": summary["fps"],
        "loop_inference_ms": summary["mean_inference_ms"],
        "preprocess_ms": summary["mean_latency_ms"] - summary["mean_inference_ms"],
        "rest_ms": loop_ms - summary["mean_latency_ms"],
        "overhead_ms": loop_ms - summary["mean_inference_ms"],
        "serve_loop_fps": served["fps"] if served else None,
        "serve_loop_ms": 1000 / served["fps"] if served else None,
        "serve_stream_parts": served["stream_parts"] if served else None,
        "serve_stream_kib_per_part": (
            served["stream_bytes"] / 1024 / served["stream_parts"] if served and served["stream_parts"] else None
        ),
        "serve_encoded_frames": served["encoded_frames"] if served else None,
        "machine": f"{machine.processor_name()} ({platform.machine()}), {os.cpu_count()} CPUs visible",
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def render(result: dict[str, Any]) -> str:
    """The results as a small Markdown table."""
    threads = result["threads"] if result["threads"] is not None else "default"
    served = []
    if result["serve_loop_fps"] is not None:
        served = [
            f"| camera loop with --serve, one client reading /stream.mjpg | {result['serve_loop_ms']:.2f} "
            f"| {result['serve_loop_fps']:.1f} |",
            f"| - cost of serving (with - without) | {result['serve_loop_ms'] - result['loop_ms']:.2f} | |",
        ]
    notes = []
    if result["serve_stream_parts"] is not None:
        notes = [
            "",
            f"with --serve: the client received {result['serve_stream_parts']} of {result['frames']} frames "
            f"(a slow client skips frames), {result['serve_stream_kib_per_part'] or 0:.1f} KiB per JPEG; "
            f"{result['serve_encoded_frames']} frames encoded",
        ]
    return "\n".join(
        [
            f"model {result['model']} ({result['runtime']} {result['runtime_version']}, threads {threads}, "
            f"input {result['input_size'][0]}x{result['input_size'][1]}); {result['frames']} frames of "
            f"{result['frame_size'][0]}x{result['frame_size'][1]}, best of {result['rounds']} rounds",
            "",
            "| measured (means, best round) | ms per frame | frames per second |",
            "| --- | ---: | ---: |",
            f"| interpreter alone (Classifier.predict; median {result['interpreter_median_ms']:.2f} ms) "
            f"| {result['interpreter_ms']:.2f} | {result['interpreter_fps']:.1f} |",
            f"| camera loop (video file, --headless) | {result['loop_ms']:.2f} | {result['loop_fps']:.1f} |",
            f"| - the interpreter, inside the loop | {result['loop_inference_ms']:.2f} | |",
            f"| - preprocessing (centre crop + resize of the frame) | {result['preprocess_ms']:.2f} | |",
            f"| - the rest (waiting for the frame, output line, thread hand-off) | {result['rest_ms']:.2f} | |",
            f"| loop overhead outside the interpreter (loop - interpreter inside it) | {result['overhead_ms']:.2f} | |",
            *served,
            *notes,
            "",
            f"machine: {result['machine']}; load average {result['load_average']}",
        ]
    )


COMMAND = command.Command(
    name="camera_loop",
    prog="python benchmarks/camera_loop.py",
    description="Camera loop frame rate next to the interpreter's own rate.",
    config_class=LoopBenchmarkConfig,
    run=run,
    render=lambda options, result: render(result),
    json_file="json_out",
)


main = command.entry_point(COMMAND)


if __name__ == "__main__":
    sys.exit(main())
