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

import collections
import dataclasses
import functools
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Literal, Optional, TextIO

import numpy as np

from edge import overlay, preprocess, runtime, serve, sources, stopping
from edge.common import command, configuration, errors, run_folder
from edge.common.configuration import option
from edge.common.errors import UserError

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_FILE = run_folder.INT8_MODEL_FILE
#: The frame rate shown is the mean over this many recent frames: steady, yet quick to follow a change.
FPS_WINDOW_FRAMES = 10
WINDOW_TITLE = "cifar-edge camera (q or Esc to quit)"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INTERRUPTED = stopping.exit_code_for(signal.SIGINT)  # 130: the shell's convention for Ctrl-C (128 + SIGINT).
EXIT_TERMINATED = stopping.exit_code_for(signal.SIGTERM)  # 143: 128 + SIGTERM, as `kill` or `systemctl stop` sends.


@dataclasses.dataclass
class CameraConfig:
    """Everything `python edge/camera.py` can be told. Sizes are in pixels, rates in frames per second."""

    # Source
    source: str = option("auto", "auto (picamera2, else OpenCV camera 0), picamera2[:N], opencv:N, "
                         "a video file, an image file or a folder of images", "Source")
    width: int = option(640, "camera capture width", "Source")
    height: int = option(480, "camera capture height", "Source")
    frames: Optional[int] = option(None, "stop after this many frames; none runs until the source "
                                   "ends or Ctrl-C", "Source", metavar="N")
    fps_limit: Optional[float] = option(None, "classify at most this many frames per second; none runs "
                                        "as fast as the model does", "Source")

    # Model
    model: Optional[str] = option(None, f"the .tflite file; none looks for {DEFAULT_MODEL_FILE} in models/ "
                                  "or edge/models/ of this repository, else in the newest runs/*/tflite/", "Model")
    labels: Optional[str] = option(None, "the labels file; none reads labels.txt next to the model", "Model")
    runtime: Optional[Literal["litert", "tflite-runtime"]] = option(
        None, "TFLite runtime; none picks ai-edge-litert if installed, else tflite-runtime", "Model")
    threads: Optional[int] = option(None, "interpreter threads; none leaves it to the runtime (4 suits a Pi 4 or 5)", "Model")
    delegate: Optional[str] = option(None, "a delegate library to load, e.g. libedgetpu.so.1 for a "
                                     "Coral Edge TPU (needs a model compiled for it)", "Model")
    top_k: int = option(3, "labels shown per frame", "Model")
    threshold: float = option(0.0, "hide labels whose probability is below this (0-1)", "Model")

    # Output
    headless: bool = option(False, "no preview window: print one line per frame", "Output")
    json: bool = option(False, "no preview window: print one JSON object per frame (frame, source, "
                        "predictions, latency_ms, inference_ms, fps)", "Output")
    save: Optional[str] = option(None, "write each annotated frame as a JPEG into this folder", "Output",
                                 metavar="DIR")
    serve: Optional[str] = option(None, "serve the live view over HTTP: a page at /, MJPEG at /stream.mjpg, "
                                  "the latest --json record at /predictions.json; binds to 127.0.0.1 unless "
                                  "HOST is given (0.0.0.0: the whole network, no authentication); no preview "
                                  "window", "Output", metavar="[HOST:]PORT")

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


class PreviewError(UserError):
    """The preview window cannot be shown (no display, or OpenCV without GUI support)."""


def run(options: CameraConfig, source: Optional[sources.FrameSource] = None,
        classifier: Optional[runtime.Classifier] = None, stream: Optional[TextIO] = None,
        stop: Optional[stopping.StopRequest] = None, server: Optional[serve.LiveServer] = None) -> dict[str, Any]:
    """Classify frames until the frame limit, the end of the source, a lost camera, a stop request or Ctrl-C.

    `source`, `classifier`, `stream` (stdout by default) and `server` (a bound
    `serve.LiveServer`, whose port a test can read before the loop starts) may
    be given by a test or benchmark; the loop closes the source and the server
    when it ends. Without `server`, `--serve` binds one before the model and
    the camera open, so a port in use fails first. `stop` is
    checked once per frame (and wakes the --fps-limit pause): `main` passes the
    one its SIGINT and SIGTERM handlers set. run() installs no signal handlers
    itself, so a library caller keeps its own; there a KeyboardInterrupt still
    ends the loop cleanly ("interrupted"). Raises PreviewError, serve.ServeError,
    runtime.ModelError or sources.CameraError when it cannot start; returns a
    summary whose "stopped" says why it ended ("SIGINT", "SIGTERM", "end of
    source", ...) and whose "exit_code" is the script's exit status for that.
    """
    stream = stream if stream is not None else sys.stdout
    stop = stop if stop is not None else stopping.StopRequest()
    preview = PreviewWindow() if options.preview else None
    try:
        if server is None and options.serve is not None:
            server = serve.LiveServer(*serve.parse_address(options.serve))
        if classifier is None:
            classifier = load_classifier(options)
        if source is None:
            source = sources.open_source(options.source, options.width, options.height)
    except BaseException:
        if preview is not None:
            preview.close()
        if server is not None:
            server.close()
        if source is not None:  # A source handed in is ours to release, even when the model fails.
            source.close()
        raise
    print(f"camera: source {source.name}; model {classifier.model_path} "
          f"({classifier.runtime_name}, input {classifier.input_size[0]}x{classifier.input_size[1]})",
          file=sys.stderr)
    if server is not None:
        server.start()
        print(server.describe(), file=sys.stderr, flush=True)
    save_dir = Path(options.save) if options.save else None
    grabber = sources.FrameGrabber(source)
    meter = FrameRateMeter(FPS_WINDOW_FRAMES)
    frames, stopped, message = 0, "frame limit", None
    exit_code = EXIT_OK
    latency_total = inference_total = 0.0
    started = previous_end = time.perf_counter()
    try:
        if save_dir is not None:
            save_dir.mkdir(parents=True, exist_ok=True)
        grabber.start()
        while options.frames is None or frames < options.frames:
            frame = None if stop.requested else grabber.next_frame()
            if stop.requested:  # Checked after the read too: a live camera's read can wait for its frame.
                stopped, exit_code = stop.signal_name, stop.exit_code
                break
            if frame is None:
                stopped = "end of source"
                break
            began = time.perf_counter()
            image = preprocess.prepare_image(frame, classifier.input_size)
            model_began = time.perf_counter()
            probabilities = classifier.predict(image[np.newaxis])[0]
            finished = time.perf_counter()
            predictions = [(label, score) for label, score in classifier.top_k(probabilities, options.top_k)
                           if score >= options.threshold]
            frames += 1
            latency_ms, inference_ms = 1000 * (finished - began), 1000 * (finished - model_began)
            latency_total += latency_ms
            inference_total += inference_ms
            if options.fps_limit:
                # Not one long sleep: a stop request ends the pause within stopping.WAIT_POLL_SECONDS.
                stop.wait(previous_end + 1.0 / options.fps_limit - time.perf_counter())
            now = time.perf_counter()
            fps = meter.update(now - previous_end)
            previous_end = now

            # One record per frame, shared by --json and /predictions.json: the same object in both.
            record = (frame_record(frames, source.name, predictions, latency_ms, inference_ms, fps)
                      if options.json or server is not None else None)
            if options.json:
                print(json.dumps(record), file=stream, flush=True)
            elif options.headless:
                print(overlay.format_line(frames, predictions, latency_ms, fps), file=stream, flush=True)
            annotated = None
            if save_dir is not None or preview is not None:
                annotated = overlay.annotate(frame, predictions, fps, latency_ms)
                if save_dir is not None:
                    annotated.save(save_dir / f"frame_{frames:06d}.jpg", quality=90)
            if server is not None:
                # Drawn lazily by the first stream client that wants this frame, so nobody watching costs nothing.
                render = ((lambda image=annotated: image) if annotated is not None else
                          functools.partial(overlay.annotate, frame, predictions, fps, latency_ms))
                server.latest.publish(frames, record, render)
            if preview is not None and not preview.show(annotated):
                stopped = "window closed"
                break
    except sources.CameraError as error:
        stopped, message = ("camera lost" if source.live else "source failed"), str(error)
        exit_code = EXIT_FAILURE
    except stopping.ForcedStop as forced:  # A second signal, while the first was still being honoured.
        stopped, exit_code = forced.signal_name, stopping.exit_code_for(forced.signal_number)
    except KeyboardInterrupt:  # Only where no handler of ours is installed (run() from a library or a test).
        stopped, exit_code = "interrupted", EXIT_INTERRUPTED
    finally:
        if server is not None:  # First: clients see the stream end while the camera is still being released.
            server.close()
        grabber.stop()
        source.close()
        if preview is not None:
            preview.close()
    seconds = time.perf_counter() - started
    return {
        "frames": frames, "source": source.name, "model": str(classifier.model_path),
        "runtime": classifier.runtime_name, "threads": options.threads, "seconds": seconds,
        "fps": frames / seconds if seconds > 0 else 0.0,
        "mean_latency_ms": latency_total / frames if frames else None,
        "mean_inference_ms": inference_total / frames if frames else None,
        "captured_frames": grabber.captured, "dropped_frames": grabber.dropped,
        "stopped": stopped, "message": message, "exit_code": exit_code,
    }


def frame_record(number: int, source_name: str, predictions: list[tuple[str, float]], latency_ms: float,
                 inference_ms: float, fps: float) -> dict[str, Any]:
    """One frame as `--json` prints it and /predictions.json serves it."""
    return {"frame": number, "source": source_name,
            "predictions": [{"label": label, "score": round(score, 6)} for label, score in predictions],
            "latency_ms": round(latency_ms, 3), "inference_ms": round(inference_ms, 3), "fps": round(fps, 3)}


def load_classifier(options: CameraConfig) -> runtime.Classifier:
    """The classifier for `options.model`, or for the default model when none is given."""
    model_path = Path(options.model) if options.model else find_default_model()
    return runtime.Classifier(model_path, labels_path=options.labels, runtime=options.runtime,
                              threads=options.threads, delegate=options.delegate)


def find_default_model(repository: Path = REPOSITORY) -> Path:
    """models/model_int8.tflite (or edge/models/), else the newest runs/*/tflite/model_int8.tflite."""
    return runtime.find_default_model(repository)


class FrameRateMeter:
    """Frames per second over the last `window` frame intervals."""

    def __init__(self, window: int):
        self._intervals: collections.deque[float] = collections.deque(maxlen=window)

    def update(self, interval_seconds: float) -> float:
        self._intervals.append(interval_seconds)
        total = sum(self._intervals)
        return len(self._intervals) / total if total > 0 else 0.0


def has_display() -> bool:
    """Whether a window can be opened: on Linux an X11 or Wayland display must be named."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class PreviewWindow:
    """An OpenCV window showing the annotated frames; checked when made, so a failure comes before the camera opens."""

    def __init__(self) -> None:
        hint = "run with --headless or --json (and --save DIR to keep annotated frames)"
        if not has_display():
            raise PreviewError(f"no display for the preview window (DISPLAY and WAYLAND_DISPLAY are unset); {hint}")
        try:
            import cv2  # Optional: only the preview window needs OpenCV.
        except ImportError:
            raise PreviewError(f"the preview window needs OpenCV (sudo apt install python3-opencv); {hint}") from None
        try:
            cv2.namedWindow(WINDOW_TITLE, cv2.WINDOW_AUTOSIZE)
        except cv2.error:
            raise PreviewError("this OpenCV has no GUI support (opencv-python-headless?); on a Pi use apt's "
                               f"python3-opencv, elsewhere pip's opencv-python; or {hint}") from None
        self._cv2 = cv2

    def show(self, image) -> bool:
        """Show a PIL image; False once the user pressed q or Esc or closed the window."""
        cv2 = self._cv2
        cv2.imshow(WINDOW_TITLE, np.asarray(image)[:, :, ::-1])  # OpenCV shows BGR.
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            return False
        return cv2.getWindowProperty(WINDOW_TITLE, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        cv2, self._cv2 = getattr(self, "_cv2", None), None
        if cv2 is not None:
            try:
                cv2.destroyWindow(WINDOW_TITLE)
                cv2.waitKey(1)  # Lets the GUI thread actually remove the window.
            except cv2.error:
                pass


def describe(summary: dict[str, Any]) -> str:
    """The one line printed when the loop ends."""
    line = (f"camera: {summary['frames']} frames in {summary['seconds']:.1f} s, {summary['fps']:.1f} fps")
    if summary["mean_latency_ms"] is not None:
        line += (f", mean latency {summary['mean_latency_ms']:.1f} ms "
                 f"(interpreter {summary['mean_inference_ms']:.1f} ms)")
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
    name="camera", prog="python edge/camera.py",
    description="Classify camera frames (or a video file, or a folder of images) with the int8 TFLite model.",
    config_class=CameraConfig, run=run_with_stop_signals, exit_status=lambda options, summary: summary["exit_code"],
    error_prefix="camera",
    handlers=((stopping.ForcedStop, _forced_stop), (KeyboardInterrupt, _interrupted),
              (BrokenPipeError, _broken_pipe), (OSError, _unwritable)))


def main(argv: list[str] | None = None) -> int:
    """The command line: run the loop with SIGINT and SIGTERM handled, print the summary, return the exit status."""
    return command.execute(COMMAND, argv)


if __name__ == "__main__":
    sys.exit(main())
