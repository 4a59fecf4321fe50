"""The camera command: `python edge/camera.py` on a generated video and image folder, its loop and its failure paths.

    .venv/bin/pytest tests/test_camera.py -x -q

End-to-end tests run the script in a subprocess on the int8 model of the shared
smoke run (tests/conftest.py's `smoke_run`; marked slow: it trains and converts).
Unit tests drive `run()` with a fake camera and a fake classifier
(tests/camera_support.py), so they need no model.

The stop-signal tests start the script with SIGINT explicitly ignored or
explicitly at its default (a child inherits an ignored SIGINT, e.g. from a
background job of a non-interactive shell, so leaving it to the test runner's
own state made them flaky), and wait for the first frame line before signalling
rather than sleeping. The stop flag and the handlers themselves are tested in
tests/test_stopping.py; the sources in test_sources.py; `--serve` in test_serve.py.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from camera_support import (
    FOLDER_IMAGES,
    LABELS,
    REPOSITORY,
    SCRIPT,
    SUBPROCESS_TIMEOUT,
    FakeCamera,
    FakeClassifier,
    _frame,
    _has_a_camera,
    _signal_handlers,
    assert_stopped_cleanly,
    no_traceback,
    run_script,
)
from PIL import Image

from edge import camera, sources, stopping
from edge.common import configuration, errors, run_folder

VIDEO_FRAMES = 12


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def model_labels(tiny_model) -> list[str]:
    return [line.strip() for line in (tiny_model.parent / "labels.txt").read_text().splitlines() if line.strip()]


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
    result = run_script(
        "--model",
        str(tiny_model),
        "--source",
        str(image_folder),
        "--json",
        "--frames",
        str(FOLDER_IMAGES - 1),
        "--top-k",
        str(top_k),
    )
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
    result = run_script(
        "--model",
        str(tiny_model),
        "--source",
        str(image_folder),
        "--json",
        "--threshold",
        str(threshold),
        "--top-k",
        "5",
        "--save",
        str(saved),
    )
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
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from edge import camera; "
        "status = camera.main(['--model', sys.argv[2], '--source', sys.argv[3], '--headless', '--frames', '2']); "
        "heavy = sorted(name for name in sys.modules if name.split('.')[0] in ('tensorflow', 'keras')); "
        "print('HEAVY', heavy, file=sys.stderr); sys.exit(status or (1 if heavy else 0))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(REPOSITORY), str(tiny_model), str(video_file)],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("TFLITE_RUNTIME_PYTHON"),
    reason="set TFLITE_RUNTIME_PYTHON to a venv with tflite-runtime and numpy<2 "
    "(see tests/test_tflite_runtime_compat.py)",
)
def test_tflite_runtime_and_numpy_1(tiny_model, image_folder):
    # The Pi's other runtime, in an environment like Bookworm's (numpy 1.x).
    # `-m` with the checkout as the working folder: that venv has the runtime, not this project installed.
    result = subprocess.run(
        [
            os.environ["TFLITE_RUNTIME_PYTHON"],
            "-m",
            "edge.camera",
            "--runtime",
            "tflite-runtime",
            "--model",
            str(tiny_model),
            "--source",
            str(image_folder),
            "--json",
            "--frames",
            "3",
        ],
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
        timeout=SUBPROCESS_TIMEOUT,
    )
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
    result = run_script(
        "--model", str(tiny_model), "--source", str(image_folder), "--headless", "--save", str(blocker / "annotated")
    )
    assert result.returncode == camera.EXIT_FAILURE
    assert result.stderr.strip().splitlines()[-1] == f"camera: error: {blocker / 'annotated'}: Not a directory"
    no_traceback(result)


def run_and_stop_with_signal(
    model: Path,
    folder: Path,
    stop_signal: signal.Signals,
    sigint_at_start: signal.Handlers,
    output_folder: Path,
    arguments: tuple[str, ...] = (),
) -> tuple[int, list[str], str]:
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
        process = subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                *arguments,
                "--model",
                str(model),
                "--source",
                str(folder),
                "--headless",
                "--fps-limit",
                "1",
            ],
            cwd=REPOSITORY,
            stdout=stdout,
            stderr=stderr,
            preexec_fn=set_start_signals,
        )
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


@pytest.mark.slow
@pytest.mark.parametrize(
    "sigint_at_start", [signal.SIG_IGN, signal.SIG_DFL], ids=["sigint-ignored-at-start", "sigint-default-at-start"]
)
@pytest.mark.parametrize(
    "stop_signal, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"]
)
def test_a_stop_signal_stops_cleanly(tiny_model, long_image_folder, tmp_path, sigint_at_start, stop_signal, exit_code):
    # SIGINT ignored at start is the case that lost Ctrl-C: Python installs no KeyboardInterrupt handler
    # then. SIGTERM is what `kill` and `systemctl stop` send: without a handler the loop would die
    # without its summary.
    returncode, lines, error = run_and_stop_with_signal(
        tiny_model, long_image_folder, stop_signal, sigint_at_start, tmp_path
    )
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
    returncode, lines, error = run_and_stop_with_signal(
        tiny_model, long_image_folder, signal.SIGTERM, signal.SIG_DFL, tmp_path, arguments
    )
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
        "run with --headless or --json (and --save DIR to keep annotated frames)"
    ]


@pytest.mark.slow
@pytest.mark.skipif(_has_a_camera(), reason="this machine has a camera, so 'no camera' cannot be shown")
def test_no_camera_from_the_script(tiny_model):
    result = run_script("--model", str(tiny_model), "--headless")
    assert result.returncode == errors.EXIT_USAGE
    assert result.stderr.strip().splitlines()[-1].startswith("camera: error: no camera found: ")
    no_traceback(result)


# -- unit: run() with a fake camera and a fake classifier ---------------------------------------------


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
    summary = camera.run(
        _options(), source=fake_camera, classifier=FakeClassifier(interrupt_after=2), stream=open(os.devnull, "w")
    )
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


@pytest.mark.parametrize(
    "stop_signal, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_a_stop_request_ends_the_loop_and_releases_the_camera(stop_signal, exit_code, capsys):
    fake_camera = FakeCamera(good_frames=1000)
    stop = stopping.StopRequest()
    summary = camera.run(_options(), source=fake_camera, classifier=StoppingClassifier(stop, 2, stop_signal), stop=stop)
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
    summary = camera.run(
        _options(fps_limit=0.01),
        source=FakeCamera(good_frames=1000),
        classifier=StoppingClassifier(stop, 1),
        stream=io.StringIO(),
        stop=stop,
    )
    assert summary["frames"] == 1 and summary["stopped"] == "SIGTERM"
    assert summary["seconds"] < 50


def test_run_installs_no_signal_handlers():
    # A library or test calling run() keeps its own handlers; only main() installs the camera's.
    before = _signal_handlers()
    summary = camera.run(
        _options(frames=2), source=FakeCamera(good_frames=1000), classifier=FakeClassifier(), stream=io.StringIO()
    )
    assert summary["stopped"] == "frame limit"
    assert _signal_handlers() == before


def test_main_puts_the_signal_handlers_back(tmp_path, image_folder, capsys):
    before = _signal_handlers()
    status = camera.main(["--model", str(tmp_path / "missing.tflite"), "--source", str(image_folder), "--headless"])
    assert status == errors.EXIT_USAGE
    assert "model file not found" in capsys.readouterr().err
    assert _signal_handlers() == before


# -- the default model and the options -------------------------------------------------------------


def test_default_model_is_models_folder_else_newest_run(tmp_path):
    with pytest.raises(run_folder.ModelFilesError, match="no model given"):
        run_folder.find_default_model(tmp_path)
    older = tmp_path / "runs" / "a" / "tflite" / camera.DEFAULT_MODEL_FILE
    newer = tmp_path / "runs" / "b" / "tflite" / camera.DEFAULT_MODEL_FILE
    for path, age in ((older, 100), (newer, 0)):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
        (path.parent / "metadata.json").write_text('{"served": "int8"}')  # as a finished export leaves it
        os.utime(path, (time.time() - age, time.time() - age))
    assert run_folder.find_default_model(tmp_path) == newer
    copied = tmp_path / "models" / camera.DEFAULT_MODEL_FILE
    copied.parent.mkdir()
    copied.write_bytes(b"")
    (copied.parent / "metadata.json").write_text('{"served": "int8"}')
    assert run_folder.find_default_model(tmp_path) == copied
    # The folder's metadata.json names what to serve (the export's "served"): the camera follows it.
    mixed = copied.parent / "model_int8_mixed.tflite"
    mixed.write_bytes(b"")
    (copied.parent / "metadata.json").write_text('{"served": "int8_mixed"}')
    assert run_folder.find_default_model(tmp_path) == mixed


def test_an_unchecked_default_model_is_refused_in_one_line(tmp_path, tiny_model, image_folder, capsys):
    """A run whose export was killed after model_int8.tflite, before the check (no metadata.json): the
    camera does not serve it by default, and says how to fix it; named with --model, it is served."""
    folder = tmp_path / "runs" / "killed" / "tflite"
    folder.mkdir(parents=True)
    for name in (tiny_model.name, "labels.txt"):
        (folder / name).write_bytes((tiny_model.parent / name).read_bytes())
    with pytest.raises(run_folder.UncheckedModelError) as refused:
        run_folder.find_default_model(tmp_path)
    assert errors.report(refused.value, command="camera") == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and f"python train/export.py --run {folder.parent}" in lines[0]
    assert (
        camera.main(
            ["--model", str(folder / tiny_model.name), "--source", str(image_folder), "--frames", "1", "--headless"]
        )
        == 0
    )


def test_options_reject_bad_values():
    with pytest.raises(SystemExit):
        camera.parse_options(["--top-k", "0"])
    with pytest.raises(SystemExit):
        camera.parse_options(["--threshold", "1.5"])
    options = camera.parse_options(["--json", "--frames", "3", "--source", "opencv:1"])
    assert options.json and not options.preview and options.frames == 3 and options.source == "opencv:1"


@pytest.mark.parametrize(
    "text", ["", "http", "80x", "-1", "65536", ":8000", "0.0.0.0:", "::1:8000", "a b:80", "host/path:80"]
)
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
