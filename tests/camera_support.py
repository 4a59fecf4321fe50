"""What the camera-side tests share: generated frames, a fake camera and classifier, and running the script.

Used by tests/test_camera.py, test_serve.py, test_sources.py and test_stopping.py,
and by tests/conftest.py's image-folder fixtures. Not a test file itself.
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edge import runtime, stopping

REPOSITORY = Path(__file__).resolve().parents[1]
SCRIPT = REPOSITORY / "edge" / "camera.py"
LABELS = ["apple", "bicycle", "castle", "dolphin", "elephant"]
FOLDER_IMAGES = 6
#: Images of the folder the stop-signal tests classify at 1 frame/s: about a minute that a signal must cut short.
LONG_FOLDER_IMAGES = 60
#: Seconds a subprocess may take; generous because the test machine's CPUs are shared.
SUBPROCESS_TIMEOUT = 120


def _frame(index: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A frame that changes with `index` (a moving bright block on a tinted background)."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:, :, index % 3] = 20 * index
    frame[10:30, 4 * index : 4 * index + 10] = 255
    return frame


def run_script(*arguments: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *arguments],
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
        timeout=SUBPROCESS_TIMEOUT,
        env=env,
    )


def no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr, result.stderr


def assert_stopped_cleanly(lines: list[str], error: str, signal_name: str) -> None:
    """The summary line names the signal and counts the frames printed, and the run ended before its source did."""
    assert "Traceback" not in error, error
    summary = error.strip().splitlines()[-1]
    assert summary.startswith("camera: ") and summary.endswith(f"; stopped: {signal_name}"), error
    assert summary.startswith(f"camera: {len(lines)} frames in "), error
    assert 1 <= len(lines) < LONG_FOLDER_IMAGES
    assert all(line.startswith(f"frame {number}: ") for number, line in enumerate(lines, start=1))


def _has_a_camera() -> bool:
    # Looked up, not imported: whether picamera2 is installed is all this needs to know.
    return importlib.util.find_spec("picamera2") is not None or Path("/dev/video0").exists()


def _signal_handlers() -> dict[int, object]:
    return {number: signal.getsignal(number) for number in stopping.STOP_SIGNALS}


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
