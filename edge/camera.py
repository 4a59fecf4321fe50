"""Classify what a camera sees, live, with the int8 TFLite model: the Raspberry Pi side of the project.

    python edge/camera.py                                    # Pi camera (else webcam 0), preview window
    python edge/camera.py --headless --threads 4             # one line per frame, over SSH
    python edge/camera.py --source clip.avi --json --frames 20
    python edge/camera.py --source photos/ --headless --save annotated/
    python edge/camera.py --headless --serve 0.0.0.0:8000   # live view in a browser, for a headless Pi

Each frame goes through the project's one preprocessing function
(`edge.preprocess.prepare_image`: centre crop, antialiased resize to the
model's input) and the TFLite interpreter (`edge.runtime.Classifier`). Capture
runs on its own thread (`edge.sources.FrameGrabber`), so the loop runs at the
interpreter's rate; a live camera's stale frames are dropped, while a video
file or image folder is classified frame by frame, in order, none dropped.

`run()` is the loop: a frame from the source, classified, handed to the
outputs. Each output (`--json`, `--headless`, `--save`, `--serve`, the
preview window) is a sink of `edge.sinks`, picked from the options once by
`output_sinks`; the frame rate is `edge.frame_rate`'s meter.

`--serve [HOST:]PORT` serves the live view over HTTP (`edge.serve`): a page
at /, the annotated frames as MJPEG at /stream.mjpg and the latest frame's
`--json` record at /predictions.json. It binds to 127.0.0.1 unless a host is
given (0.0.0.0: every interface, no authentication) and needs no display.

Ctrl-C (SIGINT) and SIGTERM (`kill`, `systemctl stop`) stop the loop cleanly:
the camera is released and the summary line says which signal stopped it
(`stopped: SIGINT`). The script installs its own handlers for both
(`edge.stopping`), so Ctrl-C works even where the script started with SIGINT
ignored, as a background job of a non-interactive shell does.

Needs numpy, Pillow, a TFLite runtime (ai-edge-litert or tflite-runtime) and,
for a camera or the preview, picamera2 or OpenCV. Never TensorFlow.
Exit status: 0 done, 1 the source failed mid-run (camera lost) or an output
could not be written, 2 nothing could start (no camera, bad model or labels,
no display for the preview, the --serve port in use), 130 stopped by SIGINT
(Ctrl-C), 143 stopped by SIGTERM; never a traceback for these.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np

from edge import preprocess, runtime, serve, sinks, sources, stopping
from edge.common import command, configuration, run_folder
from edge.common.configuration import option
from edge.frame_rate import FrameRateMeter

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_FILE = run_folder.INT8_MODEL_FILE
#: The frame rate shown is the mean over this many recent frames: steady, yet quick to follow a change.
FPS_WINDOW_FRAMES = 10

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INTERRUPTED = stopping.exit_code_for(signal.SIGINT)  # 130: the shell's convention for Ctrl-C (128 + SIGINT).
EXIT_TERMINATED = stopping.exit_code_for(signal.SIGTERM)  # 143: 128 + SIGTERM, as `kill` or `systemctl stop` sends.


@dataclasses.dataclass
class CameraConfig:
    """Everything `python edge/camera.py` can be told. Sizes are in pixels, rates in frames per second."""

    # Source
    source: str = option(
        "auto",
        "auto (picamera2, else OpenCV camera 0), picamera2[:N], opencv:N, "
        "a video file, an image file or a folder of images",
        "Source",
    )
    width: int = option(640, "camera capture width", "Source")
    height: int = option(480, "camera capture height", "Source")
    frames: int | None = option(
        None, "stop after this many frames; none runs until the source ends or Ctrl-C", "Source", metavar="N"
    )
    fps_limit: float | None = option(
        None, "classify at most this many frames per second; none runs as fast as the model does", "Source"
    )

    # Model
    model: str | None = option(
        None,
        f"the .tflite file; none looks for {DEFAULT_MODEL_FILE} in models/ "
        "or edge/models/ of this repository, else in the newest runs/*/tflite/",
        "Model",
    )
    labels: str | None = option(None, "the labels file; none reads labels.txt next to the model", "Model")
    runtime: Literal["litert", "tflite-runtime"] | None = option(
        None, "TFLite runtime; none picks ai-edge-litert if installed, else tflite-runtime", "Model"
    )
    threads: int | None = option(
        None, "interpreter threads; none leaves it to the runtime (4 suits a Pi 4 or 5)", "Model"
    )
    delegate: str | None = option(
        None,
        "a delegate library to load, e.g. libedgetpu.so.1 for a Coral Edge TPU (needs a model compiled for it)",
        "Model",
    )
    top_k: int = option(3, "labels shown per frame", "Model")
    threshold: float = option(0.0, "hide labels whose probability is below this (0-1)", "Model")

    # Output
    headless: bool = option(False, "no preview window: print one line per frame", "Output")
    json: bool = option(
        False,
        "no preview window: print one JSON object per frame (frame, source, "
        "predictions, latency_ms, inference_ms, fps)",
        "Output",
    )
    save: str | None = option(None, "write each annotated frame as a JPEG into this folder", "Output", metavar="DIR")
    serve: str | None = option(
        None,
        "serve the live view over HTTP: a page at /, MJPEG at /stream.mjpg, "
        "the latest --json record at /predictions.json; binds to 127.0.0.1 unless "
        "HOST is given (0.0.0.0: the whole network, no authentication); no preview "
        "window",
        "Output",
        metavar="[HOST:]PORT",
    )

    def __post_init__(self) -> None:
        for name in ("width", "height", "top_k"):
            if getattr(self, name) < 1:
                raise configuration.ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("frames", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise configuration.ConfigError(f"{name} must be >= 1, got {value}")
        if self.fps_limit is not None and self.fps_limit <= 0:
            raise configuration.ConfigError(f"fps_limit must be > 0, got {self.fps_limit}")
        if not 0.0 <= self.threshold <= 1.0:
            raise configuration.ConfigError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.serve is not None:
            serve.parse_address(self.serve)  # Raises ConfigError naming what is wrong.

    @property
    def preview(self) -> bool:
        """The preview window is shown unless a text output or the live view over HTTP was asked for."""
        return not (self.headless or self.json or self.serve)


def run(
    options: CameraConfig,
    source: sources.FrameSource | None = None,
    classifier: runtime.Classifier | None = None,
    stream: TextIO | None = None,
    stop: stopping.StopRequest | None = None,
    server: serve.LiveServer | None = None,
) -> dict[str, Any]:
    """Classify frames until the frame limit, the end of the source, a lost camera, a stop request or Ctrl-C.

    `source`, `classifier`, `stream` (stdout by default) and `server` (a bound
    `serve.LiveServer`, whose port a test can read before the loop starts) may
    be given by a test or benchmark; the loop closes the source and the server
    when it ends. Without `server`, `--serve` binds one before the model and
    the camera open, so a port in use fails first. `stop` is
    checked once per frame (and wakes the --fps-limit pause): `main` passes the
    one its SIGINT and SIGTERM handlers set. run() installs no signal handlers
    itself, so a library caller keeps its own; there a KeyboardInterrupt still
    ends the loop cleanly ("interrupted"). Raises sinks.PreviewError, serve.ServeError,
    runtime.ModelError or sources.CameraError when it cannot start; returns a
    summary whose "stopped" says why it ended ("SIGINT", "SIGTERM", "end of
    source", ...) and whose "exit_code" is the script's exit status for that.
    """
    stop = stop if stop is not None else stopping.StopRequest()
    outputs, classifier, source = open_parts(
        options,
        stream=stream if stream is not None else sys.stdout,
        server=server,
        classifier=classifier,
        source=source,
    )
    print(
        f"camera: source {source.name}; model {classifier.model_path} "
        f"({classifier.runtime_name}, input {classifier.input_size[0]}x{classifier.input_size[1]})",
        file=sys.stderr,
    )
    grabber = sources.FrameGrabber(source)
    tally = LoopTally()
    started = time.perf_counter()
    pacer = FramePacer(options.fps_limit, stop=stop, started=started)
    try:
        with tally.ending(source_is_live=source.live):
            outputs.start()
            grabber.start()
            while options.frames is None or tally.frames < options.frames:
                frame = None if stop.requested else grabber.next_frame()
                if stop.requested:  # Checked after the read too: a live camera's read can wait for its frame.
                    tally.end(stop.signal_name, stop.exit_code)
                    break
                if frame is None:
                    tally.end("end of source")
                    break
                predictions, latency_ms, inference_ms = classify(classifier, frame, options)
                tally.count(latency_ms, inference_ms)
                fps = pacer.frame_done()
                reason = outputs.handle(
                    sinks.FrameResult(
                        number=tally.frames,
                        source_name=source.name,
                        frame=frame,
                        predictions=predictions,
                        latency_ms=latency_ms,
                        inference_ms=inference_ms,
                        fps=fps,
                    )
                )
                if reason is not None:  # The preview window was closed.
                    tally.end(reason)
                    break
    finally:
        # The outputs first: live-view clients see the stream end while the camera is still being released.
        outputs.close()
        grabber.stop()
        source.close()
    return tally.summary(
        seconds=time.perf_counter() - started, options=options, source=source, classifier=classifier, grabber=grabber
    )


def open_parts(
    options: CameraConfig,
    *,
    stream: TextIO,
    server: serve.LiveServer | None,
    classifier: runtime.Classifier | None,
    source: sources.FrameSource | None,
) -> tuple[sinks.SinkGroup, runtime.Classifier, sources.FrameSource]:
    """(the outputs, the classifier, the source) of a run, each opened unless given; all released if one fails."""
    outputs = sinks.SinkGroup([])
    try:
        # The outputs first: no display or a port in use fails before the model and the camera open.
        outputs = output_sinks(options, stream=stream, server=server)
        if classifier is None:
            classifier = load_classifier(options)
        if source is None:
            source = sources.open_source(options.source, options.width, options.height)
    except BaseException:
        outputs.close()
        if source is not None:  # A source handed in is ours to release, even when the model fails.
            source.close()
        raise
    return outputs, classifier, source


def output_sinks(options: CameraConfig, *, stream: TextIO, server: serve.LiveServer | None = None) -> sinks.SinkGroup:
    """The outputs `options` asks for, in the order each frame goes through them, opened now.

    A text output (`--json` wins over `--headless`), the live view (`server`
    if given, else one bound for `--serve`), `--save`, then the preview window.
    The preview is shown only when neither a text output nor `--serve` was
    asked for, so it never comes with the live view that `options` asks for.
    Whatever was opened is closed again if a later sink fails to open.
    """
    opened: list[sinks.Sink] = []
    try:
        if options.json:
            opened.append(sinks.JsonLines(stream))
        elif options.headless:
            opened.append(sinks.TextLines(stream))
        if server is None and options.serve is not None:
            server = serve.LiveServer(*serve.parse_address(options.serve))
        if server is not None:
            # Before --save: a frame is published first, and whichever of the two wants the drawing first draws it.
            opened.append(sinks.LiveView(server))
        if options.save:
            opened.append(sinks.SaveFrames(Path(options.save)))
        if options.preview:
            opened.append(sinks.PreviewWindow())
    except BaseException:
        sinks.SinkGroup(opened).close()
        raise
    return sinks.SinkGroup(opened)


def classify(
    classifier: runtime.Classifier, frame: np.ndarray, options: CameraConfig
) -> tuple[list[tuple[str, float]], float, float]:
    """(the top labels at or above the threshold, latency in ms, interpreter time in ms) of one frame.

    The latency counts the preprocessing and the interpreter; the interpreter time only the latter.
    """
    began = time.perf_counter()
    image = preprocess.prepare_image(frame, classifier.input_size)
    model_began = time.perf_counter()
    probabilities = classifier.predict(image[np.newaxis])[0]
    finished = time.perf_counter()
    predictions = [
        (label, score) for label, score in classifier.top_k(probabilities, options.top_k) if score >= options.threshold
    ]
    return predictions, 1000 * (finished - began), 1000 * (finished - model_began)


class FramePacer:
    """Holds the loop to --fps-limit, and measures the frame rate it runs at (`edge.frame_rate`)."""

    def __init__(self, fps_limit: float | None, *, stop: stopping.StopRequest, started: float):
        self._fps_limit = fps_limit
        self._stop = stop
        self._previous_end = started  # The first frame's interval runs from the start of the loop.
        self._meter = FrameRateMeter(FPS_WINDOW_FRAMES)

    def frame_done(self) -> float:
        """Wait out the rest of this frame's share of --fps-limit, if any; the frame rate, this frame counted."""
        if self._fps_limit:
            # Not one long sleep: a stop request ends the pause within stopping.WAIT_POLL_SECONDS.
            self._stop.wait(self._previous_end + 1.0 / self._fps_limit - time.perf_counter())
        now = time.perf_counter()
        fps = self._meter.update(now - self._previous_end)
        self._previous_end = now
        return fps


@dataclasses.dataclass
class LoopTally:
    """What the loop counted, and why it ended: the makings of run()'s summary."""

    frames: int = 0
    latency_total_ms: float = 0.0
    inference_total_ms: float = 0.0
    stopped: str = "frame limit"
    message: str | None = None
    exit_code: int = EXIT_OK

    def count(self, latency_ms: float, inference_ms: float) -> None:
        self.frames += 1
        self.latency_total_ms += latency_ms
        self.inference_total_ms += inference_ms

    def end(self, stopped: str, exit_code: int = EXIT_OK, message: str | None = None) -> None:
        """Why the loop ended (the summary's "stopped"), the script's exit status for that, and any detail."""
        self.stopped, self.exit_code, self.message = stopped, exit_code, message

    @contextlib.contextmanager
    def ending(self, *, source_is_live: bool) -> Iterator[None]:
        """Around the loop: a lost source or an interruption ends it cleanly, recorded here instead of raised."""
        try:
            yield
        except sources.CameraError as error:
            self.end("camera lost" if source_is_live else "source failed", EXIT_FAILURE, str(error))
        except stopping.ForcedStop as forced:  # A second signal, while the first was still being honoured.
            self.end(forced.signal_name, stopping.exit_code_for(forced.signal_number))
        except KeyboardInterrupt:  # Only where no handler of ours is installed (run() from a library or a test).
            self.end("interrupted", EXIT_INTERRUPTED)

    def summary(
        self,
        *,
        seconds: float,
        options: CameraConfig,
        source: sources.FrameSource,
        classifier: runtime.Classifier,
        grabber: sources.FrameGrabber,
    ) -> dict[str, Any]:
        """run()'s return value: what `describe` prints, and the exit status."""
        frames = self.frames
        return {
            "frames": frames,
            "source": source.name,
            "model": str(classifier.model_path),
            "runtime": classifier.runtime_name,
            "threads": options.threads,
            "seconds": seconds,
            "fps": frames / seconds if seconds > 0 else 0.0,
            "mean_latency_ms": self.latency_total_ms / frames if frames else None,
            "mean_inference_ms": self.inference_total_ms / frames if frames else None,
            "captured_frames": grabber.captured,
            "dropped_frames": grabber.dropped,
            "stopped": self.stopped,
            "message": self.message,
            "exit_code": self.exit_code,
        }


def load_classifier(options: CameraConfig) -> runtime.Classifier:
    """The classifier for `options.model`, or for the default model when none is given."""
    model_path = Path(options.model) if options.model else run_folder.find_default_model(REPOSITORY)
    return runtime.Classifier(
        model_path,
        labels_path=options.labels,
        runtime=options.runtime,
        threads=options.threads,
        delegate=options.delegate,
    )


def describe(summary: dict[str, Any]) -> str:
    """The one line printed when the loop ends."""
    line = f"camera: {summary['frames']} frames in {summary['seconds']:.1f} s, {summary['fps']:.1f} fps"
    if summary["mean_latency_ms"] is not None:
        line += (
            f", mean latency {summary['mean_latency_ms']:.1f} ms (interpreter {summary['mean_inference_ms']:.1f} ms)"
        )
    if summary["dropped_frames"]:
        line += f", {summary['dropped_frames']} stale camera frames dropped"
    line += f"; stopped: {summary['stopped']}"
    if summary["message"]:
        line += f" ({summary['message']})"
    return line


def parse_options(argv: list[str] | None = None) -> CameraConfig:
    """CameraConfig from the command line (the harness's parser, for tests and the benchmark)."""
    return command.parse_config(COMMAND, argv)


def run_with_stop_signals(options: CameraConfig) -> dict:
    """`run` with SIGINT and SIGTERM handled (edge.stopping), then the summary on stderr."""
    # The handlers live only as long as the loop and its summary; the previous ones are put back after.
    with stopping.StopSignals() as stop:
        summary = run(options, stop=stop)
        print(describe(summary), file=sys.stderr)
    return summary


def _forced_stop(forced: BaseException, options: CameraConfig) -> int:
    """A second signal while the model or camera was still opening."""
    print(f"camera: stopped: {forced.signal_name}", file=sys.stderr)
    return stopping.exit_code_for(forced.signal_number)


def _interrupted(interruption: BaseException, options: CameraConfig) -> int:
    """Ctrl-C before the handlers were installed."""
    print("camera: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def _broken_pipe(error: BaseException, options: CameraConfig) -> int:
    """The reader of our output went away (e.g. `| head`): stop quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # Python's final flush of stdout would fail again.
    return EXIT_OK


def _unwritable(error: BaseException, options: CameraConfig) -> int:
    """--save into a folder that cannot be written, a full disk."""
    print(f"camera: error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
    return EXIT_FAILURE


# A bad model or labels file, no camera, no display, a port in use: a UserError, "camera: error: ...", exit 2.
COMMAND = command.Command(
    name="camera",
    prog="python edge/camera.py",
    description="Classify camera frames (or a video file, or a folder of images) with the int8 TFLite model.",
    config_class=CameraConfig,
    run=run_with_stop_signals,
    exit_status=lambda options, summary: summary["exit_code"],
    error_prefix="camera",
    handlers=(
        (stopping.ForcedStop, _forced_stop),
        (KeyboardInterrupt, _interrupted),
        (BrokenPipeError, _broken_pipe),
        (OSError, _unwritable),
    ),
)


main = command.entry_point(COMMAND)


if __name__ == "__main__":
    sys.exit(main())
