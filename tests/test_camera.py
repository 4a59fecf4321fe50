"""The camera loop: `python edge/camera.py` on a generated video and image folder, and its failure paths.

    .venv/bin/pytest tests/test_camera.py -x -q

End-to-end tests run the script in a subprocess on the int8 model of the shared
smoke run (tests/conftest.py's `smoke_run`; marked slow: it trains and converts).
Unit tests drive `run()` with a fake camera and a fake classifier, so they need
no model.

The `--serve` tests run `run()` in a thread on a folder, with a fake classifier
and the server on 127.0.0.1 port 0 (the system picks a free port, which the
test reads from the server before the loop starts), and talk HTTP to it; one
runs the script end to end, one opens the page in Chromium (marked browser).

The stop-signal tests start the script with SIGINT explicitly ignored or
explicitly at its default (a child inherits an ignored SIGINT, e.g. from a
background job of a non-interactive shell, so leaving it to the test runner's
own state made them flaky), and wait for the first frame line before signalling
rather than sleeping.
"""
from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge import camera, overlay, runtime, serve, sources, stopping
from edge.common import configuration, errors

REPOSITORY = Path(__file__).resolve().parents[1]
SCRIPT = REPOSITORY / "edge" / "camera.py"
LABELS = ["apple", "bicycle", "castle", "dolphin", "elephant"]
VIDEO_FRAMES = 12
FOLDER_IMAGES = 6
#: Images of the folder the stop-signal tests classify at 1 frame/s: about a minute that a signal must cut short.
LONG_FOLDER_IMAGES = 60
#: Seconds a subprocess may take; generous because the test machine's CPUs are shared.
SUBPROCESS_TIMEOUT = 120


# -- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny_model(request, tmp_path_factory) -> Path:
    """The int8 model of the shared smoke run (tests/conftest.py), else a tiny one made here."""
    try:
        run_dir = request.getfixturevalue("smoke_run")
    except pytest.FixtureLookupError:
        return _make_tiny_model(tmp_path_factory.mktemp("tiny_model"))
    return run_dir / "tflite" / "model_int8.tflite"


@pytest.fixture(scope="session")
def model_labels(tiny_model) -> list[str]:
    return [line.strip() for line in (tiny_model.parent / "labels.txt").read_text().splitlines() if line.strip()]


def _make_tiny_model(folder: Path) -> Path:
    """A tiny int8 TFLite classifier with the project's contract (uint8 32x32x3 in, softmax out) and labels.txt."""
    tensorflow = pytest.importorskip("tensorflow")
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    features = keras.layers.Rescaling(1 / 255)(inputs)
    features = keras.layers.Conv2D(4, 3, activation="relu")(features)
    features = keras.layers.GlobalAveragePooling2D()(features)
    outputs = keras.layers.Dense(len(LABELS), activation="softmax")(features)
    model = keras.Model(inputs, outputs)

    def representative_images():
        generator = np.random.default_rng(0)
        for _ in range(8):
            yield [generator.integers(0, 256, (1, 32, 32, 3)).astype(np.uint8)]

    converter = tensorflow.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tensorflow.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_images
    (folder / "model_int8.tflite").write_bytes(converter.convert())
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return folder / "model_int8.tflite"


def _frame(index: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A frame that changes with `index` (a moving bright block on a tinted background)."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:, :, index % 3] = 20 * index
    frame[10:30, 4 * index:4 * index + 10] = 255
    return frame


@pytest.fixture(scope="module")
def video_file(tmp_path_factory) -> Path:
    cv2 = pytest.importorskip("cv2")
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened(), "OpenCV cannot write MJPG .avi here"
    for index in range(VIDEO_FRAMES):
        writer.write(_frame(index))
    writer.release()
    return path


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for index in range(FOLDER_IMAGES):
        Image.fromarray(_frame(index, 40, 50)).save(folder / f"image_{index:02d}.png")
    (folder / "notes.txt").write_text("not an image, and not an image suffix: ignored")
    return folder


@pytest.fixture(scope="module")
def long_image_folder(tmp_path_factory) -> Path:
    """A folder that takes about a minute at --fps-limit 1, so a stopped run cannot be mistaken for a finished one."""
    folder = tmp_path_factory.mktemp("long_images")
    for index in range(LONG_FOLDER_IMAGES):
        Image.fromarray(_frame(index % 12, 40, 50)).save(folder / f"image_{index:03d}.png")
    return folder


def run_script(*arguments: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True,
                          cwd=REPOSITORY, timeout=SUBPROCESS_TIMEOUT, env=env)


def no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr, result.stderr


# -- end to end: the script on files --------------------------------------------------------------

@pytest.mark.slow
def test_headless_on_a_video_prints_one_line_per_frame(tiny_model, model_labels, video_file):
    result = run_script("--model", str(tiny_model), "--source", str(video_file), "--headless", "--frames", "5")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5
    for number, line in enumerate(lines, start=1):
        assert line.startswith(f"frame {number}: ")
        assert line.endswith(" fps") and " ms | " in line
        assert any(label in line for label in model_labels)
    assert f"source video:{video_file}" in result.stderr
    assert "stopped: frame limit" in result.stderr
    no_traceback(result)


@pytest.mark.slow
def test_json_on_a_folder_gives_sorted_predictions(tiny_model, model_labels, image_folder):
    top_k = 3
    result = run_script("--model", str(tiny_model), "--source", str(image_folder), "--json",
                        "--frames", str(FOLDER_IMAGES - 1), "--top-k", str(top_k))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [record["frame"] for record in records] == list(range(1, FOLDER_IMAGES))
    for record in records:
        assert {"frame", "source", "predictions", "latency_ms", "fps"} <= set(record)
        assert record["source"] == f"folder:{image_folder}"
        scores = [prediction["score"] for prediction in record["predictions"]]
        assert len(scores) == top_k
        assert scores == sorted(scores, reverse=True)
        assert all(0.0 <= score <= 1.0 for score in scores)
        assert {prediction["label"] for prediction in record["predictions"]} <= set(model_labels)
        assert record["latency_ms"] > 0 and record["fps"] > 0


@pytest.mark.slow
def test_every_frame_of_a_file_is_classified_in_order(tiny_model, video_file):
    # Files are never subject to stale-frame dropping: without --frames, every frame comes out once.
    result = run_script("--model", str(tiny_model), "--source", str(video_file), "--json")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [record["frame"] for record in records] == list(range(1, VIDEO_FRAMES + 1))
    assert "stopped: end of source" in result.stderr


@pytest.mark.slow
def test_save_writes_annotated_frames_and_threshold_filters(tiny_model, image_folder, tmp_path):
    saved = tmp_path / "annotated"
    # Above 1/5: the top five probabilities sum to at most 1, so they cannot all reach it.
    threshold = 0.21
    result = run_script("--model", str(tiny_model), "--source", str(image_folder), "--json",
                        "--threshold", str(threshold), "--top-k", "5", "--save", str(saved))
    assert result.returncode == 0, result.stderr
    files = sorted(saved.glob("*.jpg"))
    assert [path.name for path in files] == [f"frame_{number:06d}.jpg" for number in range(1, FOLDER_IMAGES + 1)]
    with Image.open(files[0]) as first:
        assert first.size == (50, 40)  # The source frame's size: the overlay is drawn on the frame itself.
    records = [json.loads(line) for line in result.stdout.splitlines()]
    scores = [prediction["score"] for record in records for prediction in record["predictions"]]
    assert all(score >= threshold for score in scores)
    assert any(len(record["predictions"]) < 5 for record in records), "the threshold removed nothing"


@pytest.mark.slow
def test_no_tensorflow_is_imported(tiny_model, video_file):
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from edge import camera; "
            "status = camera.main(['--model', sys.argv[2], '--source', sys.argv[3], '--headless', '--frames', '2']); "
            "heavy = sorted(name for name in sys.modules if name.split('.')[0] in ('tensorflow', 'keras')); "
            "print('HEAVY', heavy, file=sys.stderr); sys.exit(status or (1 if heavy else 0))")
    result = subprocess.run([sys.executable, "-c", code, str(REPOSITORY), str(tiny_model), str(video_file)],
                            capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("TFLITE_RUNTIME_PYTHON"),
                    reason="set TFLITE_RUNTIME_PYTHON to a venv with tflite-runtime and numpy<2 "
                           "(see tests/test_tflite_runtime_compat.py)")
def test_tflite_runtime_and_numpy_1(tiny_model, image_folder):
    # The Pi's other runtime, in an environment like Bookworm's (numpy 1.x).
    # `-m` with the checkout as the working folder: that venv has the runtime, not this project installed.
    result = subprocess.run([os.environ["TFLITE_RUNTIME_PYTHON"], "-m", "edge.camera", "--runtime", "tflite-runtime",
                             "--model", str(tiny_model), "--source", str(image_folder), "--json", "--frames", "3"],
                            capture_output=True, text=True, cwd=REPOSITORY, timeout=SUBPROCESS_TIMEOUT)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [record["frame"] for record in records] == [1, 2, 3]
    assert "(tflite-runtime, input " in result.stderr


@pytest.mark.slow
def test_a_bad_model_file_is_one_line_and_exit_2(tmp_path, image_folder):
    model = tmp_path / "model_int8.tflite"
    model.write_bytes(b"this is not a flatbuffer")
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    result = run_script("--model", str(model), "--source", str(image_folder), "--headless")
    assert result.returncode == errors.EXIT_USAGE
    assert result.stderr.strip().splitlines()[-1].startswith(f"camera: error: {model}")
    no_traceback(result)


@pytest.mark.slow
def test_an_unwritable_save_folder_is_one_line_and_exit_1(tiny_model, image_folder, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where the folder's parent should be")
    result = run_script("--model", str(tiny_model), "--source", str(image_folder), "--headless",
                        "--save", str(blocker / "annotated"))
    assert result.returncode == camera.EXIT_FAILURE
    assert result.stderr.strip().splitlines()[-1] == f"camera: error: {blocker / 'annotated'}: Not a directory"
    no_traceback(result)


def run_and_stop_with_signal(model: Path, folder: Path, stop_signal: signal.Signals,
                             sigint_at_start: signal.Handlers, output_folder: Path,
                             arguments: tuple[str, ...] = ()) -> tuple[int, list[str], str]:
    """Start the script at --fps-limit 1, send `stop_signal` once it has printed its first frame, and wait.

    `sigint_at_start` (SIG_IGN or SIG_DFL) is SIGINT's disposition when the
    script starts, set in the child before it executes Python; SIGTERM starts
    at its default. `arguments` go first on the command line; the model, the
    folder, --headless and --fps-limit 1 follow them (and so win). Returns the
    exit status, the frame lines and stderr.
    Output goes to files, so that no pipe can fill up while the test waits.
    """
    def set_start_signals() -> None:  # Runs in the child, between fork and exec.
        signal.signal(signal.SIGINT, sigint_at_start)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    stdout_path, stderr_path = output_folder / "stdout.txt", output_folder / "stderr.txt"
    with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
        process = subprocess.Popen([sys.executable, str(SCRIPT), *arguments, "--model", str(model),
                                    "--source", str(folder), "--headless", "--fps-limit", "1"],
                                   cwd=REPOSITORY, stdout=stdout, stderr=stderr, preexec_fn=set_start_signals)
    try:
        # Signal only once the loop is running: after a whole first line, not after a guessed delay.
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT
        while "\n" not in stdout_path.read_text() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stdout_path.read_text().startswith("frame 1: "), stderr_path.read_text()
        assert process.poll() is None, "the script ended before it was signalled"
        process.send_signal(stop_signal)
        process.wait(timeout=SUBPROCESS_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, stdout_path.read_text().splitlines(), stderr_path.read_text()


def assert_stopped_cleanly(lines: list[str], error: str, signal_name: str) -> None:
    """The summary line names the signal and counts the frames printed, and the run ended before its source did."""
    assert "Traceback" not in error, error
    summary = error.strip().splitlines()[-1]
    assert summary.startswith("camera: ") and summary.endswith(f"; stopped: {signal_name}"), error
    assert summary.startswith(f"camera: {len(lines)} frames in "), error
    assert 1 <= len(lines) < LONG_FOLDER_IMAGES
    assert all(line.startswith(f"frame {number}: ") for number, line in enumerate(lines, start=1))


@pytest.mark.slow
@pytest.mark.parametrize("sigint_at_start", [signal.SIG_IGN, signal.SIG_DFL],
                         ids=["sigint-ignored-at-start", "sigint-default-at-start"])
@pytest.mark.parametrize("stop_signal, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl-c", "sigterm"])
def test_a_stop_signal_stops_cleanly(tiny_model, long_image_folder, tmp_path, sigint_at_start, stop_signal,
                                     exit_code):
    # SIGINT ignored at start is the case that lost Ctrl-C: Python installs no KeyboardInterrupt handler
    # then. SIGTERM is what `kill` and `systemctl stop` send: without a handler the loop would die
    # without its summary.
    returncode, lines, error = run_and_stop_with_signal(tiny_model, long_image_folder, stop_signal,
                                                        sigint_at_start, tmp_path)
    assert returncode == stopping.exit_code_for(stop_signal) == exit_code, error
    assert exit_code == (camera.EXIT_INTERRUPTED if stop_signal == signal.SIGINT else camera.EXIT_TERMINATED)
    assert_stopped_cleanly(lines, error, stop_signal.name)


SERVICE_FILE = REPOSITORY / "edge" / "cifar-camera.service"


def service_settings() -> dict[str, list[str]]:
    """edge/cifar-camera.service as {key: [values]} (a key may repeat), comments and section lines left out."""
    settings: dict[str, list[str]] = {}
    for line in SERVICE_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def service_camera_arguments() -> list[str]:
    """The camera's own arguments on the unit's ExecStart line, after the venv's python and edge/camera.py."""
    (command,) = service_settings()["ExecStart"]
    python, script, *arguments = shlex.split(command)
    (working_directory,) = service_settings()["WorkingDirectory"]
    assert python == f"{working_directory}/.venv/bin/python", "the project's venv, as docs/raspberry-pi.md makes it"
    assert script == "edge/camera.py"  # relative to WorkingDirectory: the checkout
    return arguments


def test_the_service_runs_the_camera_with_options_its_parser_accepts():
    options = camera.parse_options(service_camera_arguments())
    assert options.serve is not None and not options.preview  # the live view over HTTP, no window at boot
    assert options.model is None  # the default model: models/ of the checkout (docs/raspberry-pi.md)
    settings = service_settings()
    assert settings["Restart"] == ["on-failure"]
    # The camera's SIGTERM exit is a clean stop for systemd, so `systemctl stop` is not marked failed.
    assert str(camera.EXIT_TERMINATED) in " ".join(settings["SuccessExitStatus"]).split()
    assert settings.get("KillSignal", ["SIGTERM"]) == ["SIGTERM"]


@pytest.mark.slow
def test_sigterm_stops_the_service_command_cleanly(tiny_model, long_image_folder, tmp_path):
    """What `systemctl stop` does: SIGTERM to a camera started with the unit's options, serving on a free port."""
    arguments = (*service_camera_arguments(), "--serve", "127.0.0.1:0")  # the last --serve wins: no fixed port
    returncode, lines, error = run_and_stop_with_signal(tiny_model, long_image_folder, signal.SIGTERM,
                                                        signal.SIG_DFL, tmp_path, arguments)
    assert returncode == camera.EXIT_TERMINATED == 143, error
    assert "camera: serving http://127.0.0.1:" in error
    assert_stopped_cleanly(lines, error, "SIGTERM")


# -- end to end: failures that need no model -------------------------------------------------------

def test_preview_without_a_display_is_one_line_and_exit_2(image_folder):
    environment = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = run_script("--source", str(image_folder), env=environment)
    assert result.returncode == errors.EXIT_USAGE
    assert result.stderr.strip().splitlines() == [
        "camera: error: no display for the preview window (DISPLAY and WAYLAND_DISPLAY are unset); "
        "run with --headless or --json (and --save DIR to keep annotated frames)"]


def _has_a_camera() -> bool:
    try:
        import picamera2  # noqa: F401
        return True
    except ImportError:
        return Path("/dev/video0").exists()


@pytest.mark.skipif(_has_a_camera(), reason="this machine has a camera, so 'no camera' cannot be shown")
def test_no_camera_is_a_camera_error(tmp_path):
    # The script opens the camera after loading the model; here the source alone, without a model.
    with pytest.raises(sources.CameraError, match="no camera found"):
        sources.open_source("auto")
    with pytest.raises(sources.CameraError, match="no such file or folder"):
        sources.open_source(str(tmp_path / "missing.avi"))


@pytest.mark.slow
@pytest.mark.skipif(_has_a_camera(), reason="this machine has a camera, so 'no camera' cannot be shown")
def test_no_camera_from_the_script(tiny_model):
    result = run_script("--model", str(tiny_model), "--headless")
    assert result.returncode == errors.EXIT_USAGE
    assert result.stderr.strip().splitlines()[-1].startswith("camera: error: no camera found: ")
    no_traceback(result)


# -- unit: run() with a fake camera and a fake classifier ---------------------------------------------

class FakeClassifier:
    """Stands in for runtime.Classifier: fixed, distinct probabilities; can raise after some frames."""

    top_k = runtime.Classifier.top_k  # The real ranking (the loop relies on it).

    def __init__(self, interrupt_after: int | None = None):
        self.model_path = Path("fake.tflite")
        self.runtime_name = "fake"
        self.input_size = (8, 8)
        self.labels = LABELS
        self.calls = 0
        self.interrupt_after = interrupt_after

    def predict(self, images: np.ndarray) -> np.ndarray:
        assert images.shape == (1, 8, 8, 3) and images.dtype == np.uint8
        self.calls += 1
        if self.interrupt_after is not None and self.calls > self.interrupt_after:
            raise KeyboardInterrupt
        return np.array([[0.1, 0.4, 0.2, 0.25, 0.05]], np.float32)


class FakeCamera:
    """A live camera that gives `good_frames` frames, then fails every read (as if unplugged)."""

    live = True
    name = "fake-camera"

    def __init__(self, good_frames: int, failure: type[Exception] | None = None):
        self.good_frames = good_frames
        self.failure = failure
        self.reads = 0
        self.closed = False

    def read(self):
        self.reads += 1
        if self.reads > self.good_frames:
            if self.failure is not None:
                raise self.failure("device disconnected")
            return None
        time.sleep(0.01)  # A camera paces its frames; this also lets the loop take each one.
        return _frame(self.reads)

    def close(self):
        self.closed = True


def _options(**changes) -> camera.CameraConfig:
    return camera.CameraConfig(headless=True, **changes)


@pytest.mark.parametrize("failure", [None, OSError])
def test_a_camera_lost_mid_run_ends_cleanly(failure, capsys):
    fake_camera = FakeCamera(good_frames=3, failure=failure)
    summary = camera.run(_options(), source=fake_camera, classifier=FakeClassifier())
    assert summary["stopped"] == "camera lost"
    assert summary["exit_code"] == camera.EXIT_FAILURE
    assert f"failed {sources.MAX_CONSECUTIVE_READ_FAILURES} reads in a row" in summary["message"]
    assert 1 <= summary["frames"] <= 3
    assert fake_camera.closed
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == summary["frames"]
    assert lines[0].startswith("frame 1: bicycle 0.400, dolphin 0.250, castle 0.200 | ")
    assert "camera lost" in camera.describe(summary)


def test_keyboard_interrupt_releases_the_camera():
    fake_camera = FakeCamera(good_frames=1000)
    summary = camera.run(_options(), source=fake_camera, classifier=FakeClassifier(interrupt_after=2),
                         stream=open(os.devnull, "w"))
    assert summary["stopped"] == "interrupted"
    assert summary["exit_code"] == camera.EXIT_INTERRUPTED
    assert summary["frames"] == 2
    assert fake_camera.closed


class StoppingClassifier(FakeClassifier):
    """A FakeClassifier that asks `stop` to stop, as a signal handler would, while it classifies frame `stop_at`."""

    def __init__(self, stop: stopping.StopRequest, stop_at: int, stop_signal: int = signal.SIGTERM):
        super().__init__()
        self.stop, self.stop_at, self.stop_signal = stop, stop_at, stop_signal

    def predict(self, images: np.ndarray) -> np.ndarray:
        probabilities = super().predict(images)
        if self.calls == self.stop_at:
            self.stop.request(self.stop_signal)
        return probabilities


def _signal_handlers() -> dict[int, object]:
    return {number: signal.getsignal(number) for number in stopping.STOP_SIGNALS}


@pytest.mark.parametrize("stop_signal, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_a_stop_request_ends_the_loop_and_releases_the_camera(stop_signal, exit_code, capsys):
    fake_camera = FakeCamera(good_frames=1000)
    stop = stopping.StopRequest()
    summary = camera.run(_options(), source=fake_camera, classifier=StoppingClassifier(stop, 2, stop_signal),
                         stop=stop)
    # The frame being classified when the stop came is finished and printed; no further frame is read.
    assert summary["frames"] == 2
    assert summary["stopped"] == stop_signal.name
    assert summary["exit_code"] == exit_code
    assert fake_camera.closed
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert camera.describe(summary).endswith(f"; stopped: {stop_signal.name}")


def test_a_stop_request_cuts_the_frame_rate_pause_short():
    # At 0.01 frames/s the pause after the first frame is 100 s; the stop must end it at once.
    stop = stopping.StopRequest()
    summary = camera.run(_options(fps_limit=0.01), source=FakeCamera(good_frames=1000),
                         classifier=StoppingClassifier(stop, 1), stream=io.StringIO(), stop=stop)
    assert summary["frames"] == 1 and summary["stopped"] == "SIGTERM"
    assert summary["seconds"] < 50


def test_run_installs_no_signal_handlers():
    # A library or test calling run() keeps its own handlers; only main() installs the camera's.
    before = _signal_handlers()
    summary = camera.run(_options(frames=2), source=FakeCamera(good_frames=1000), classifier=FakeClassifier(),
                         stream=io.StringIO())
    assert summary["stopped"] == "frame limit"
    assert _signal_handlers() == before


def test_stop_signals_set_the_flag_and_put_the_old_handlers_back():
    before = _signal_handlers()
    with stopping.StopSignals() as stop:
        assert all(signal.getsignal(number) != before[number] for number in stopping.STOP_SIGNALS)
        signal.raise_signal(signal.SIGTERM)
        assert stop.wait(SUBPROCESS_TIMEOUT), "the SIGTERM handler did not set the flag"
        assert (stop.signal_name, stop.exit_code) == ("SIGTERM", 143)
        # A second signal is for a user who will not wait: it interrupts, still naming the signal.
        with pytest.raises(stopping.ForcedStop) as forced:
            signal.raise_signal(signal.SIGINT)
            for _ in range(1000):  # The Python-level handler runs between bytecodes, at once in practice.
                time.sleep(0.01)
        assert forced.value.signal_name == "SIGINT" and isinstance(forced.value, KeyboardInterrupt)
    assert _signal_handlers() == before


def test_stop_signals_handle_sigint_ignored_at_start():
    # The state a background job of a non-interactive shell starts in: Python itself would never see Ctrl-C.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stopping.StopSignals() as stop:
            signal.raise_signal(signal.SIGINT)
            assert stop.wait(SUBPROCESS_TIMEOUT)
            assert (stop.signal_name, stop.exit_code) == ("SIGINT", 130)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_stop_signals_outside_the_main_thread_install_nothing():
    before = _signal_handlers()
    seen: dict[int, object] = {}

    def enter_and_leave():
        with stopping.StopSignals():
            seen.update(_signal_handlers())

    thread = threading.Thread(target=enter_and_leave)
    thread.start()
    thread.join(SUBPROCESS_TIMEOUT)
    assert seen == before == _signal_handlers()


def test_main_puts_the_signal_handlers_back(tmp_path, image_folder, capsys):
    before = _signal_handlers()
    status = camera.main(["--model", str(tmp_path / "missing.tflite"), "--source", str(image_folder), "--headless"])
    assert status == errors.EXIT_USAGE
    assert "model file not found" in capsys.readouterr().err
    assert _signal_handlers() == before


def test_a_live_camera_drops_stale_frames():
    class FastCamera(FakeCamera):
        def read(self):
            self.reads += 1
            time.sleep(0.001)
            return _frame(self.reads % 10)

    fake_camera = FastCamera(good_frames=0)
    grabber = sources.FrameGrabber(fake_camera).start()
    try:
        for _ in range(3):
            assert grabber.next_frame() is not None
            time.sleep(0.05)  # A slow "interpreter": the camera produces many frames meanwhile.
    finally:
        grabber.stop()
    assert grabber.dropped > 0
    assert grabber.captured > 3


def test_frame_rate_meter_averages_over_its_window():
    meter = camera.FrameRateMeter(window=4)
    assert meter.update(0.5) == pytest.approx(2.0)
    for _ in range(4):
        rate = meter.update(0.1)
    assert rate == pytest.approx(10.0)  # The 0.5 s interval has left the window.


def test_default_model_is_models_folder_else_newest_run(tmp_path):
    with pytest.raises(runtime.ModelError, match="no model given"):
        camera.find_default_model(tmp_path)
    older = tmp_path / "runs" / "a" / "tflite" / camera.DEFAULT_MODEL_FILE
    newer = tmp_path / "runs" / "b" / "tflite" / camera.DEFAULT_MODEL_FILE
    for path, age in ((older, 100), (newer, 0)):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
        (path.parent / "metadata.json").write_text('{"served": "int8"}')  # as a finished export leaves it
        os.utime(path, (time.time() - age, time.time() - age))
    assert camera.find_default_model(tmp_path) == newer
    copied = tmp_path / "models" / camera.DEFAULT_MODEL_FILE
    copied.parent.mkdir()
    copied.write_bytes(b"")
    (copied.parent / "metadata.json").write_text('{"served": "int8"}')
    assert camera.find_default_model(tmp_path) == copied
    # The folder's metadata.json names what to serve (the export's "served"): the camera follows it.
    mixed = copied.parent / "model_int8_mixed.tflite"
    mixed.write_bytes(b"")
    (copied.parent / "metadata.json").write_text('{"served": "int8_mixed"}')
    assert camera.find_default_model(tmp_path) == mixed


def test_an_unchecked_default_model_is_refused_in_one_line(tmp_path, tiny_model, image_folder, capsys):
    """A run whose export was killed after model_int8.tflite, before the check (no metadata.json): the
    camera does not serve it by default, and says how to fix it; named with --model, it is served."""
    folder = tmp_path / "runs" / "killed" / "tflite"
    folder.mkdir(parents=True)
    for name in (tiny_model.name, "labels.txt"):
        (folder / name).write_bytes((tiny_model.parent / name).read_bytes())
    with pytest.raises(runtime.run_folder.UncheckedModelError) as refused:
        camera.find_default_model(tmp_path)
    assert errors.report(refused.value, command="camera") == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and f"python train/export.py --run {folder.parent}" in lines[0]
    assert camera.main(["--model", str(folder / tiny_model.name), "--source", str(image_folder), "--frames", "1",
                        "--headless"]) == 0


def test_options_reject_bad_values():
    with pytest.raises(SystemExit):
        camera.parse_options(["--top-k", "0"])
    with pytest.raises(SystemExit):
        camera.parse_options(["--threshold", "1.5"])
    options = camera.parse_options(["--json", "--frames", "3", "--source", "opencv:1"])
    assert options.json and not options.preview and options.frames == 3 and options.source == "opencv:1"


# -- unit: the picamera2 source, against a stand-in for the library (no Pi here) ----------------------

class FakePicamera2:
    """The part of picamera2's API the source uses; frames come in libcamera's RGB888 layout (B, G, R)."""

    cameras = [{"Model": "imx708", "Num": 0}]
    instances: list["FakePicamera2"] = []

    def __init__(self, index: int = 0):
        self.index = index
        self.running = self.closed = False
        FakePicamera2.instances.append(self)

    @staticmethod
    def global_camera_info():
        return FakePicamera2.cameras

    def create_preview_configuration(self, main, buffer_count):
        return {"main": dict(main), "buffer_count": buffer_count}

    def configure(self, configuration):
        self.camera_config = configuration

    def start(self):
        self.running = True

    def capture_array(self, stream):
        width, height = self.camera_config["main"]["size"]
        frame = np.zeros((height, width, 3), np.uint8)
        frame[..., 0] = 255  # Blue, in B, G, R order.
        return frame

    def stop(self):
        self.running = False

    def close(self):
        self.closed = True


@pytest.fixture
def fake_picamera2(monkeypatch):
    import types
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2
    monkeypatch.setitem(sys.modules, "picamera2", module)
    monkeypatch.setattr(FakePicamera2, "instances", [])
    return FakePicamera2


def test_auto_prefers_picamera2_and_gives_rgb(fake_picamera2):
    source = sources.open_source("auto", width=64, height=48)
    try:
        assert source.live and source.name == "picamera2:0 (64x48)"
        frame = source.read()
        assert frame.shape == (48, 64, 3) and frame.flags["C_CONTIGUOUS"]
        assert frame[0, 0].tolist() == [0, 0, 255]  # Blue stays blue once flipped to R, G, B.
    finally:
        source.close()
    camera_object = fake_picamera2.instances[0]
    assert camera_object.closed and not camera_object.running


def test_picamera2_without_a_camera_says_so(fake_picamera2, monkeypatch):
    monkeypatch.setattr(fake_picamera2, "cameras", [])
    with pytest.raises(sources.CameraError, match="picamera2 finds no camera 0"):
        sources.open_source("picamera2")


# -- --serve: the live view over HTTP (edge/serve.py) ----------------------------------------------

#: Seconds one HTTP exchange or a serving run may take here before the test fails (the CPUs are shared).
HTTP_TIMEOUT = 60
#: JPEG parts the stream tests read from /stream.mjpg.
STREAM_PARTS = 3
#: The start of every JPEG file (the SOI marker).
JPEG_START = b"\xff\xd8"
#: Frames per second of the in-process serving runs: the long folder then lasts 12 s, far longer than a test needs
#: (each test stops the run itself once it has seen what it came for).
SERVING_FPS = 5


class Serving:
    """`camera.run` serving on a free loopback port in a thread (see `serving_camera`)."""

    def __init__(self, server: serve.LiveServer, stop: stopping.StopRequest, thread: threading.Thread,
                 output: io.StringIO, result: dict):
        self.server, self.port, self.stop, self.thread, self.output, self.result = (
            server, server.port, stop, thread, output, result)

    def printed_records(self) -> list[dict]:
        return [json.loads(line) for line in self.output.getvalue().splitlines()]

    def finish(self) -> dict:
        """Stop the run (as SIGTERM would) and return its summary."""
        self.stop.request(signal.SIGTERM)
        self.thread.join(HTTP_TIMEOUT)
        assert not self.thread.is_alive(), "the camera loop did not stop"
        return self.result["summary"]


@contextlib.contextmanager
def serving_camera(source: Path, **changes):
    """`camera.run(--json --serve 127.0.0.1:0)` on `source` with a fake classifier, in a thread; stopped on exit.

    The server is bound here, so the test knows its port (the system's choice) before the loop starts.
    """
    options = camera.CameraConfig(source=str(source), json=True, serve="127.0.0.1:0", **changes)
    server = serve.LiveServer("127.0.0.1", 0)
    stop, output, result = stopping.StopRequest(), io.StringIO(), {}

    def work() -> None:
        result["summary"] = camera.run(options, classifier=FakeClassifier(), stream=output, stop=stop, server=server)

    thread = threading.Thread(target=work, name="camera-under-test")
    thread.start()
    serving = Serving(server, stop, thread, output, result)
    try:
        yield serving
    finally:
        if thread.is_alive():
            serving.finish()


def http_get(port: int, path: str) -> tuple[int, str, bytes]:
    """(status, Content-Type, body) of GET `path`, sent exactly as written (no normalising of `..`)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def latest_record(port: int, after: int = 0) -> dict:
    """/predictions.json, polled until its frame number is above `after` (bounded)."""
    deadline = time.monotonic() + HTTP_TIMEOUT
    while True:
        status, content_type, body = http_get(port, "/predictions.json")
        assert status == 200 and content_type == "application/json", (status, body)
        record = json.loads(body)
        if record["frame"] > after or time.monotonic() > deadline:
            return record
        time.sleep(0.05)


def read_parts(stream: io.BufferedReader, boundary: str, count: int) -> list[bytes]:
    """The bodies of the next `count` parts of a multipart/x-mixed-replace stream."""
    parts = []
    while len(parts) < count:
        line = stream.readline()
        assert line, "the stream ended early"
        if line.strip() != f"--{boundary}".encode():
            continue  # The CRLF that ends the previous part.
        headers = {}
        while (line := stream.readline().strip()):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        assert headers["content-type"] == "image/jpeg"
        parts.append(stream.read(int(headers["content-length"])))
    return parts


def open_stream(port: int) -> tuple[socket.socket, io.BufferedReader, str]:
    """GET /stream.mjpg on a plain socket (so a test can reset it); returns it, its reader and the boundary."""
    client = socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT)
    client.sendall(b"GET /stream.mjpg HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    reader = client.makefile("rb")
    status = reader.readline()
    assert status.split()[1] == b"200", status
    headers = {}
    while (line := reader.readline().strip()):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    content_type = headers["content-type"]
    assert content_type.startswith("multipart/x-mixed-replace; boundary="), content_type
    return client, reader, content_type.partition("boundary=")[2]


def assert_refused(port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT).close()


@pytest.mark.parametrize("text, address", [
    ("8000", ("127.0.0.1", 8000)), ("0.0.0.0:8000", ("0.0.0.0", 8000)), ("localhost:0", ("localhost", 0)),
    ("[::1]:8080", ("::1", 8080)), (" 8000 ", ("127.0.0.1", 8000))])
def test_serve_addresses(text, address):
    assert serve.parse_address(text) == address


@pytest.mark.parametrize("text", ["", "http", "80x", "-1", "65536", ":8000", "0.0.0.0:", "::1:8000", "a b:80",
                                  "host/path:80"])
def test_a_bad_serve_address_is_a_config_error(text):
    with pytest.raises(configuration.ConfigError, match="serve: "):
        camera.CameraConfig(serve=text)


def test_a_bad_serve_address_on_the_command_line_is_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        camera.parse_options(["--serve", "0.0.0.0:http"])
    assert exit_info.value.code == errors.EXIT_USAGE
    assert "serve: bad port in '0.0.0.0:http'" in capsys.readouterr().err


def test_serve_alone_needs_no_preview_window():
    assert not camera.CameraConfig(serve="8000").preview
    assert camera.CameraConfig().preview


def test_annotate_draws_only_its_corner_and_leaves_the_frame_alone():
    # --serve draws every streamed frame: annotate blends only the text box, and must not write into the loop's frame.
    frame = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    original = frame.copy()
    annotated = np.asarray(overlay.annotate(frame, [("apple", 0.5), ("castle", 0.25)], 12.5, 30.0))
    assert np.array_equal(frame, original)
    changed = np.argwhere((annotated != original).any(axis=2))
    assert len(changed) > 0
    bottom, right = changed.max(axis=0)
    assert bottom < 120 // 2 and right < 160 // 2  # The box sits in the top-left corner.
    assert np.array_equal(annotated[bottom + 1:], original[bottom + 1:])
    assert np.array_equal(annotated[:, right + 1:], original[:, right + 1:])
    tiny = np.zeros((6, 5, 3), np.uint8)  # A box larger than the frame is cut to it.
    assert np.asarray(overlay.annotate(tiny, [("apple", 1.0)], None)).shape == (6, 5, 3)


def test_a_frame_is_encoded_once_and_only_when_watched():
    latest = serve.LatestFrame()
    renders = []

    def render() -> Image.Image:
        renders.append(1)
        return Image.new("RGB", (16, 12), (200, 30, 30))

    latest.publish(1, {"frame": 1}, render)
    latest.publish(2, {"frame": 2}, render)
    assert renders == [] and latest.encoded_frames == 0  # Nobody asked: nothing drawn, nothing encoded.
    frame = latest.wait_newer(0, timeout=0)
    assert frame.number == 2 and frame.record == {"frame": 2}  # The newest; frame 1 was skipped.
    number, jpeg = latest.jpeg(frame)
    assert (number, jpeg) == latest.jpeg(frame)  # A second client gets the cached bytes.
    assert number == 2 and jpeg.startswith(JPEG_START)
    assert len(renders) == 1 and latest.encoded_frames == 1
    assert latest.wait_newer(2, timeout=0) is None  # Nothing newer yet.
    latest.close()
    assert latest.wait_newer(0, timeout=0) is None  # Closed: waiting clients end.


def test_a_port_in_use_is_one_line_and_exit_2(image_folder):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(serve.ServeError, match="the port is in use"):
            serve.LiveServer("127.0.0.1", port)
        # No --model: the port is bound before the model loads, so a taken port fails first.
        result = run_script("--source", str(image_folder), "--serve", f"127.0.0.1:{port}")
    assert result.returncode == errors.EXIT_USAGE
    assert result.stderr.strip().splitlines() == [
        f"camera: error: cannot serve on 127.0.0.1:{port}: the port is in use (another camera or server?); "
        "pick another PORT"]


def test_predictions_json_is_the_json_record_and_changes(long_image_folder):
    with serving_camera(long_image_folder, fps_limit=SERVING_FPS) as serving:
        first = latest_record(serving.port)
        second = latest_record(serving.port, after=first["frame"])
        assert second["frame"] > first["frame"]
        assert set(first) == {"frame", "source", "predictions", "latency_ms", "inference_ms", "fps"}
        assert first["source"] == f"folder:{long_image_folder}"
        assert [prediction["label"] for prediction in first["predictions"]] == ["bicycle", "dolphin", "castle"]
        summary = serving.finish()
        printed = serving.printed_records()
    # The very object --json printed for that frame.
    assert printed[first["frame"] - 1] == first and printed[second["frame"] - 1] == second
    assert summary["stopped"] == "SIGTERM" and summary["frames"] == len(printed)
    assert serving.server.latest.encoded_frames == 0  # No one watched the stream: no frame was encoded.


def test_the_page_and_unknown_paths(long_image_folder):
    with serving_camera(long_image_folder, fps_limit=SERVING_FPS) as serving:
        status, content_type, body = http_get(serving.port, "/")
        assert status == 200 and content_type == "text/html; charset=utf-8"
        assert b'<img src="/stream.mjpg"' in body and b"/predictions.json" in body
        for path in ("/favicon.ico", "/../etc/passwd", "/index.html", "/stream.mjpg/x", "/predictions.json/",
                     "//etc/passwd", "/edge/camera.py", "/%2e%2e/README.md"):
            status, _, body = http_get(serving.port, path)
            assert status == 404, path
            assert b"import" not in body and b"passwd" not in body
        assert http_get(serving.port, "/predictions.json?cache=1")[0] == 200  # A query string is ignored.


def test_the_stream_delivers_jpeg_parts(long_image_folder):
    with serving_camera(long_image_folder, fps_limit=SERVING_FPS) as serving:
        client, reader, boundary = open_stream(serving.port)
        try:
            parts = read_parts(reader, boundary, STREAM_PARTS)
        finally:
            reader.close()
            client.close()
        summary = serving.finish()
    assert len(parts) == STREAM_PARTS
    for part in parts:
        assert part.startswith(JPEG_START) and part.endswith(b"\xff\xd9")
        with Image.open(io.BytesIO(part)) as image:
            assert image.format == "JPEG" and image.size == (50, 40)  # The annotated frame, at the source's size.
    assert len(set(parts)) == STREAM_PARTS  # Three different frames.
    assert serving.server.latest.encoded_frames <= summary["frames"]  # At most once per frame.


def reset(client: socket.socket) -> None:
    """Close `client` with a TCP reset (SO_LINGER 0), as a crashed browser or a dropped Wi-Fi link can."""
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def test_a_client_leaving_mid_stream_or_stalling_leaves_the_loop_running(long_image_folder, capfd):
    with serving_camera(long_image_folder, fps_limit=SERVING_FPS) as serving:
        # One client resets before it even sends its request.
        reset(socket.create_connection(("127.0.0.1", serving.port), timeout=HTTP_TIMEOUT))
        # One client stops reading altogether, and stays connected until the end.
        stalled = socket.create_connection(("127.0.0.1", serving.port), timeout=HTTP_TIMEOUT)
        stalled.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
        # Another reads one part, then vanishes with a reset.
        client, reader, boundary = open_stream(serving.port)
        read_parts(reader, boundary, 1)
        reader.close()
        reset(client)
        left_at = latest_record(serving.port)["frame"]
        later = latest_record(serving.port, after=left_at + 2)
        assert later["frame"] > left_at + 2, "the loop stopped classifying after a client left"
        assert serving.thread.is_alive()
        summary = serving.finish()
        stalled.close()
    assert summary["stopped"] == "SIGTERM" and summary["frames"] >= later["frame"]
    assert summary["exit_code"] == camera.EXIT_TERMINATED
    assert "Traceback" not in capfd.readouterr().err  # Clients failing are not the camera's errors.


def test_stopping_the_camera_closes_the_server(image_folder):
    # The folder ends by itself (after at least a second at this rate), with a stream client still connected.
    with serving_camera(image_folder, fps_limit=SERVING_FPS) as serving:
        client, reader, boundary = open_stream(serving.port)
        read_parts(reader, boundary, 1)
        serving.thread.join(HTTP_TIMEOUT)
        assert not serving.thread.is_alive()
        summary = serving.result["summary"]
        reader.read()  # Returns: the server closed the stream's connection (a hang would time out and fail).
        reader.close()
        client.close()
    assert summary["stopped"] == "end of source" and summary["frames"] == FOLDER_IMAGES
    assert_refused(serving.port)
    assert not [thread for thread in threading.enumerate() if thread.name == "live-view-server"]


def test_a_lost_camera_closes_the_server_too():
    server = serve.LiveServer("127.0.0.1", 0)
    summary = camera.run(camera.CameraConfig(serve="127.0.0.1:0"), source=FakeCamera(good_frames=3, failure=OSError),
                         classifier=FakeClassifier(), server=server)
    assert summary["stopped"] == "camera lost" and summary["exit_code"] == camera.EXIT_FAILURE
    assert 1 <= summary["frames"] <= 3
    assert_refused(server.port)


@pytest.mark.slow
def test_serve_from_the_script(tiny_model, long_image_folder, tmp_path):
    # The whole command, with the int8 model: serves on the port the system chose, then Ctrl-C closes it.
    stdout_path, stderr_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
        process = subprocess.Popen([sys.executable, str(SCRIPT), "--model", str(tiny_model),
                                    "--source", str(long_image_folder), "--headless", "--fps-limit", "5",
                                    "--serve", "127.0.0.1:0"], cwd=REPOSITORY, stdout=stdout, stderr=stderr)
    try:
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT
        pattern = re.compile(r"^camera: serving http://127\.0\.0\.1:(\d+)/ \(MJPEG at /stream\.mjpg, "
                             r"JSON at /predictions\.json\)$", re.MULTILINE)
        while not (found := pattern.search(stderr_path.read_text())) and process.poll() is None:
            assert time.monotonic() < deadline, stderr_path.read_text()
            time.sleep(0.05)
        assert found, stderr_path.read_text()
        port = int(found.group(1))
        first = latest_record(port)
        second = latest_record(port, after=first["frame"])
        assert second["frame"] > first["frame"] and second["source"] == f"folder:{long_image_folder}"
        client, reader, boundary = open_stream(port)
        try:
            assert all(part.startswith(JPEG_START) for part in read_parts(reader, boundary, STREAM_PARTS))
        finally:
            reader.close()
            client.close()
        assert http_get(port, "/favicon.ico")[0] == 404
        assert process.poll() is None, "the camera ended before it was stopped"
        process.send_signal(signal.SIGINT)
        process.wait(timeout=SUBPROCESS_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    error = stderr_path.read_text()
    assert process.returncode == camera.EXIT_INTERRUPTED, error
    lines = stdout_path.read_text().splitlines()
    assert_stopped_cleanly(lines, error, "SIGINT")
    assert_refused(port)


@pytest.mark.slow
def test_the_loop_benchmark_measures_with_and_without_serve(tiny_model, capsys, load_benchmark):
    # Only that it measures and prints both; the figures themselves depend on the machine.
    benchmark = load_benchmark("camera_loop")
    frames = 12
    result = benchmark.run(benchmark.LoopBenchmarkConfig(model=str(tiny_model), frames=frames, rounds=1,
                                                         width=160, height=120))
    assert result["loop_fps"] > 0 and result["serve_loop_fps"] > 0
    assert 1 <= result["serve_stream_parts"] <= frames
    assert result["serve_encoded_frames"] <= frames
    text = benchmark.render(result)
    assert "camera loop with --serve, one client reading /stream.mjpg" in text
    without = benchmark.run(benchmark.LoopBenchmarkConfig(model=str(tiny_model), frames=frames, rounds=1,
                                                          width=160, height=120, serve=False))
    assert without["serve_loop_fps"] is None and "--serve" not in benchmark.render(without)


CHROMIUM = Path("/usr/bin/chromium")
#: Milliseconds the page may take to show a frame and its predictions (a busy 2-core machine).
PAGE_TIMEOUT_MS = 60_000


@pytest.mark.slow
@pytest.mark.browser
def test_the_live_view_page_in_chromium(long_image_folder):
    # The page at / in a real browser: the MJPEG image shows frames and the predictions follow the loop.
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed")
    with serving_camera(long_image_folder, fps_limit=SERVING_FPS) as serving, \
            playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            # Not "load": an MJPEG image never finishes loading.
            page.goto(f"http://127.0.0.1:{serving.port}/", wait_until="domcontentloaded")
            page.wait_for_function("document.querySelector('img').naturalWidth === 50", timeout=PAGE_TIMEOUT_MS)
            page.wait_for_function("document.getElementById('predictions').textContent.includes('bicycle')",
                                   timeout=PAGE_TIMEOUT_MS)
            first = page.text_content("#status")
            assert first.startswith("frame ") and f"from folder:{long_image_folder}" in first
            cells = page.eval_on_selector_all("#predictions td", "cells => cells.map(cell => cell.textContent)")
            assert cells == ["bicycle", "40.0%", "dolphin", "25.0%", "castle", "20.0%"]
            page.wait_for_function(f"document.getElementById('status').textContent !== {json.dumps(first)}",
                                   timeout=PAGE_TIMEOUT_MS)  # The next frame's record replaced it.
            (REPOSITORY / "test-artifacts").mkdir(exist_ok=True)
            page.screenshot(path=str(REPOSITORY / "test-artifacts" / "pi_live_view.png"))  # docs/images/pi-live-view.png
        finally:
            browser.close()
        serving.finish()
