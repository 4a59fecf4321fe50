"""Where the camera loop's frames come from, and the thread that captures them.

Used by `edge/camera.py` (`--source`); not a script of its own. A source gives
RGB uint8 frames (H, W, 3):

- `picamera2` (or `picamera2:N`): the Raspberry Pi camera through libcamera.
  OpenCV cannot open these cameras on current Raspberry Pi OS
  (raspberrypi/picamera2#617), so they need picamera2, which comes from apt.
- `opencv:N` (or `opencv:/dev/videoN`): a USB webcam through OpenCV.
- a video file (anything OpenCV's VideoCapture reads), a folder of images (read
  with Pillow in name order), or a single image file: for testing anywhere.
- `auto` (the default): picamera2, else OpenCV camera 0.

`FrameGrabber` reads the source on its own thread so that capture overlaps
inference. A live camera keeps only the newest frame (a stale frame is
dropped: the loop should name what is in front of the camera now). A file or
folder is queued instead, so that every frame is classified, in order.

OpenCV and picamera2 are imported only when a source needs them.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from edge import preprocess
from edge.common.errors import UserError

#: A live camera whose reads fail this many times in a row is taken as lost (unplugged, crashed).
MAX_CONSECUTIVE_READ_FAILURES = 10
#: Pause between failed reads of a live camera, in seconds (a USB camera can hiccup for a frame or two).
READ_RETRY_DELAY_SECONDS = 0.05
#: A live camera that delivers no frame for this long is taken as lost, in seconds.
CAMERA_TIMEOUT_SECONDS = 10.0
#: Frames decoded ahead of the classifier for files and folders; small, to bound memory.
FILE_QUEUE_FRAMES = 8
#: How long `FrameGrabber.stop` waits for the capture thread, in seconds.
STOP_TIMEOUT_SECONDS = 2.0

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


class CameraError(UserError):
    """No usable frame source (no camera, unreadable file), or the camera was lost mid-run."""


class FrameSource(Protocol):
    """What the loop needs from a source."""

    name: str  # Shown to the user and written in every JSON line.
    live: bool  # True for cameras: stale frames may be dropped and failed reads retried.

    def read(self) -> np.ndarray | None:
        """The next RGB uint8 frame; None at the end of a file (or a failed read of a live camera)."""

    def close(self) -> None:
        """Release the device or file. Safe to call twice."""


class PiCameraSource:
    """The Raspberry Pi camera through picamera2 (libcamera)."""

    live = True

    def __init__(self, index: int = 0, width: int = 640, height: int = 480):
        try:
            from picamera2 import Picamera2  # Optional: only a Pi camera needs it (from apt).
        except ImportError as error:
            raise CameraError(
                f"picamera2 is not importable ({error}); on Raspberry Pi OS: "
                "sudo apt install python3-picamera2, and make the venv with "
                "--system-site-packages"
            ) from None
        if index >= len(Picamera2.global_camera_info()):
            raise CameraError(
                f"picamera2 finds no camera {index} (is the ribbon cable seated? "
                "does `rpicam-hello --list-cameras` list it?)"
            )
        try:
            self._camera = Picamera2(index)
            # libcamera's "RGB888" is laid out B, G, R in memory (OpenCV's order); `read` flips it.
            configuration = self._camera.create_preview_configuration(
                main={"format": "RGB888", "size": (width, height)}, buffer_count=4
            )
            self._camera.configure(configuration)
            self._camera.start()
        except Exception as error:  # picamera2 raises bare RuntimeErrors (camera busy, bad size).
            self.close()
            raise CameraError(f"picamera2 cannot start camera {index}: {error}") from None
        size = self._camera.camera_config["main"]["size"]  # As libcamera adjusted it.
        self.name = f"picamera2:{index} ({size[0]}x{size[1]})"

    def read(self) -> np.ndarray | None:
        frame = self._camera.capture_array("main")
        return np.ascontiguousarray(frame[..., 2::-1])  # BGR(X) -> RGB

    def close(self) -> None:
        camera = getattr(self, "_camera", None)
        if camera is not None:
            self._camera = None
            with contextlib.suppress(Exception):  # Closing must not mask the error that led here.
                camera.stop()
            with contextlib.suppress(Exception):
                camera.close()


class OpenCVSource:
    """A USB webcam (`device` an index or a /dev path) or a video file through OpenCV."""

    def __init__(self, device: int | str, width: int | None = None, height: int | None = None, live: bool = True):
        cv2 = import_opencv()
        self.live = live
        with quiet_opencv(cv2):  # OpenCV prints its own warnings when a device is missing.
            self._capture = cv2.VideoCapture(device)
        if not self._capture.isOpened():
            self.close()
            what = f"camera {device}" if live else f"video file {device}"
            raise CameraError(f"OpenCV cannot open {what}")
        if live:
            # Ask the driver to keep one buffered frame, so a read returns a recent one.
            self._capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            if width and height:
                self._capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
                self._capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self._to_rgb = lambda frame: cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        # Read one frame now: some devices open but never deliver, and a file may be unreadable.
        self._first: np.ndarray | None = self._read_raw()
        if self._first is None:
            self.close()
            what = f"camera {device}" if live else f"video file {device}"
            raise CameraError(f"OpenCV opened {what} but read no frame from it")
        height_read, width_read = self._first.shape[:2]
        self.name = f"opencv:{device} ({width_read}x{height_read})" if live else f"video:{device}"

    def _read_raw(self) -> np.ndarray | None:
        ok, frame = self._capture.read()
        return self._to_rgb(frame) if ok and frame is not None else None

    def read(self) -> np.ndarray | None:
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        return self._read_raw()

    def close(self) -> None:
        capture = getattr(self, "_capture", None)
        if capture is not None:
            self._capture = None
            capture.release()


class ImageFilesSource:
    """Image files read with Pillow (through the shared loader), in name order; unreadable ones are skipped."""

    live = False

    def __init__(self, path: Path):
        if path.is_dir():
            self._files = sorted(
                item for item in path.iterdir() if item.is_file() and item.suffix.lower() in IMAGE_SUFFIXES
            )
            if not self._files:
                raise CameraError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            self.name = f"folder:{path}"
        else:
            self._files = [path]
            self.name = f"image:{path}"
        self._next = 0

    def read(self) -> np.ndarray | None:
        while self._next < len(self._files):
            path = self._files[self._next]
            self._next += 1
            try:
                return np.asarray(preprocess.load_image(path))
            except preprocess.ImageError as error:
                print(f"camera: skipping an unreadable image: {error}", file=sys.stderr)
        return None

    def close(self) -> None:
        self._next = len(self._files)


def open_source(spec: str, width: int = 640, height: int = 480) -> FrameSource:
    """Open the source named by `--source` (see the module docstring), or raise CameraError."""
    if spec == "auto":
        reasons = []
        for candidate in ("picamera2", "opencv:0"):
            try:
                return open_source(candidate, width, height)
            except CameraError as error:
                reasons.append(str(error))
        raise CameraError(
            "no camera found: "
            + "; ".join(reasons)
            + ". Use --source VIDEO_FILE or --source IMAGE_FOLDER to run without one"
        )
    kind, _, argument = spec.partition(":")
    if kind == "picamera2":
        return PiCameraSource(_device_index(spec, argument or "0"), width, height)
    if kind == "opencv":
        device = argument or "0"
        return OpenCVSource(int(device) if device.isdigit() else device, width, height, live=True)
    path = Path(spec).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES):
        return ImageFilesSource(path)
    if path.is_file():
        return OpenCVSource(str(path), live=False)
    raise CameraError(f"--source {spec!r}: no such file or folder, and not auto, picamera2[:N] or opencv:N")


def import_opencv():
    """OpenCV, or a CameraError that says how to install it."""
    try:
        import cv2  # Optional: only video files and USB cameras need OpenCV.
    except ImportError as error:
        raise CameraError(
            f"OpenCV is not importable ({error}); install python3-opencv (apt) or opencv-python (pip)"
        ) from None
    return cv2


@contextlib.contextmanager
def quiet_opencv(cv2) -> Iterator[None]:
    """Silence OpenCV's own log lines while probing devices; our message says what failed."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    previous = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(previous)


def _device_index(spec: str, text: str) -> int:
    if not text.isdigit():
        raise CameraError(f"--source {spec!r}: the camera number must be a whole number")
    return int(text)


_END = object()  # Queued after the last frame of a file.


class FrameGrabber:
    """Reads `source` on a background thread; `next_frame` hands the frames to the loop.

    Live sources: only the newest frame is kept (older ones are counted in
    `dropped` and discarded); reads that fail `max_failures` times in a row, or
    no frame for `timeout` seconds, raise CameraError ("camera lost").
    Files and folders: every frame is queued, in order, and none is dropped.
    """

    def __init__(
        self,
        source: FrameSource,
        max_failures: int = MAX_CONSECUTIVE_READ_FAILURES,
        retry_delay: float = READ_RETRY_DELAY_SECONDS,
        timeout: float = CAMERA_TIMEOUT_SECONDS,
    ):
        self.source = source
        self.max_failures = max_failures
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.captured = 0
        self.dropped = 0
        self._stop = threading.Event()
        self._condition = threading.Condition()
        self._latest: np.ndarray | None = None  # Live sources: the newest unread frame.
        self._error: BaseException | None = None
        self._ended = False
        self._queue: queue.Queue[object] = queue.Queue(maxsize=FILE_QUEUE_FRAMES)
        self._thread = threading.Thread(target=self._capture, name="frame-capture", daemon=True)

    def start(self) -> FrameGrabber:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the capture thread (the caller closes the source afterwards)."""
        self._stop.set()
        with self._condition:
            self._condition.notify_all()
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT_SECONDS)

    def next_frame(self) -> np.ndarray | None:
        """The next frame to classify; None when a file or folder has ended."""
        if self.source.live:
            return self._next_live()
        while True:
            try:
                item = self._queue.get(timeout=0.1)  # Short waits keep Ctrl-C responsive.
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    return None
                continue
            if item is _END:
                return None
            if isinstance(item, BaseException):
                raise CameraError(f"{self.source.name}: reading failed: {item}")
            return item  # type: ignore[return-value]

    def _next_live(self) -> np.ndarray | None:
        deadline = time.monotonic() + self.timeout
        with self._condition:
            while self._latest is None:
                if self._error is not None:
                    raise CameraError(f"camera lost: {self._error}")
                if self._ended:
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CameraError(f"camera lost: no frame from {self.source.name} for {self.timeout:g} s")
                self._condition.wait(min(remaining, 0.1))
            frame, self._latest = self._latest, None
            return frame

    def _capture(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                frame = self.source.read()
            except Exception as error:  # Reported to the loop, which owns the user-facing message.
                if not self.source.live:
                    self._put(error)
                    return
                frame, last_error = None, error
            else:
                last_error = None
            if frame is None:
                if not self.source.live:
                    self._put(_END)
                    return
                failures += 1
                if failures >= self.max_failures:
                    reason = f": {last_error}" if last_error else ""
                    self._finish_live(
                        error=RuntimeError(f"{self.source.name} failed {failures} reads in a row{reason}")
                    )
                    return
                time.sleep(self.retry_delay)
                continue
            failures = 0
            self.captured += 1
            if self.source.live:
                with self._condition:
                    if self._latest is not None:
                        self.dropped += 1
                    self._latest = frame
                    self._condition.notify_all()
            elif not self._put(frame):
                return

    def _put(self, item: object) -> bool:
        """Queue an item for the loop, waiting for room; False if stopped meanwhile."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _finish_live(self, error: BaseException | None) -> None:
        with self._condition:
            self._error = error
            self._ended = True
            self._condition.notify_all()
