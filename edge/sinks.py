"""The camera loop's outputs: one small object per output, all with the same three calls.

    outputs = SinkGroup([TextLines(sys.stdout), SaveFrames(Path("annotated"))])
    outputs.start()                         # once, before the first frame (a folder is made, a server starts)
    reason = outputs.handle(frame_result)   # each frame; a reason ("window closed") asks the loop to stop
    outputs.close()                         # once, when the loop ends, however it ends

`edge/camera.py` picks the sinks from its options once (`output_sinks`) and
its loop hands every classified frame to them as a `FrameResult`:

- `JsonLines`: `--json`, one JSON object per frame;
- `TextLines`: `--headless`, one text line per frame (`edge.overlay.format_line`);
- `SaveFrames`: `--save DIR`, each annotated frame as a JPEG;
- `LiveView`: `--serve`, the newest frame and its record for `edge.serve`'s HTTP clients;
- `PreviewWindow`: the OpenCV window shown when no other output was asked for.

A sink that can fail to open (no display, a port in use) fails when it is
made, so the camera can make them before it loads the model and opens the
camera. numpy, Pillow and the standard library; OpenCV only inside the preview.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from PIL import Image

from edge import overlay, serve
from edge.common.errors import UserError

WINDOW_TITLE = "cifar-edge camera (q or Esc to quit)"
#: JPEG quality of the frames --save writes.
SAVE_JPEG_QUALITY = 90


class PreviewError(UserError):
    """The preview window cannot be shown (no display, or OpenCV without GUI support)."""


@dataclasses.dataclass(kw_only=True)
class FrameResult:
    """One classified frame, as every sink receives it: the frame, its predictions and what it cost."""

    number: int
    source_name: str
    frame: np.ndarray
    predictions: list[tuple[str, float]]
    latency_ms: float
    inference_ms: float
    fps: float
    # The annotated frame is drawn at most once, by the loop (--save, the preview) or by the first live-view
    # client that wants it (another thread), whichever comes first: the lock makes it one drawing.
    _annotated: Image.Image | None = dataclasses.field(default=None, init=False, repr=False, compare=False)
    _annotate_lock: threading.Lock = dataclasses.field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    @functools.cached_property
    def record(self) -> dict[str, Any]:
        """The frame as `--json` prints it and /predictions.json serves it: one object, shared by both."""
        return frame_record(
            self.number, self.source_name, self.predictions, self.latency_ms, self.inference_ms, self.fps
        )

    def annotated(self) -> Image.Image:
        """The frame with its labels and rate drawn on (`edge.overlay.annotate`), drawn on the first call only."""
        with self._annotate_lock:
            if self._annotated is None:
                self._annotated = overlay.annotate(self.frame, self.predictions, self.fps, self.latency_ms)
            return self._annotated


def frame_record(
    number: int,
    source_name: str,
    predictions: list[tuple[str, float]],
    latency_ms: float,
    inference_ms: float,
    fps: float,
) -> dict[str, Any]:
    """One frame as `--json` prints it and /predictions.json serves it."""
    return {
        "frame": number,
        "source": source_name,
        "predictions": [{"label": label, "score": round(score, 6)} for label, score in predictions],
        "latency_ms": round(latency_ms, 3),
        "inference_ms": round(inference_ms, 3),
        "fps": round(fps, 3),
    }


class Sink:
    """One output of the camera loop: `start` once, `handle` each frame, `close` once (also after a failure)."""

    def start(self) -> None:
        """Get ready for the first frame; nothing to do unless a sink says otherwise."""

    def handle(self, result: FrameResult) -> str | None:
        """Take one frame; return None to go on, or the reason the loop should stop (the summary's "stopped")."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the sink holds; nothing to do unless a sink says otherwise."""


class JsonLines(Sink):
    """`--json`: one JSON object per frame, flushed at once so a reader of a pipe sees each frame as it comes."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def handle(self, result: FrameResult) -> None:
        print(json.dumps(result.record), file=self._stream, flush=True)


class TextLines(Sink):
    """`--headless`: one text line per frame (`edge.overlay.format_line`), flushed at once."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def handle(self, result: FrameResult) -> None:
        print(
            overlay.format_line(result.number, result.predictions, result.latency_ms, result.fps),
            file=self._stream,
            flush=True,
        )


class SaveFrames(Sink):
    """`--save DIR`: each annotated frame as DIR/frame_NNNNNN.jpg; the folder is made when the loop starts."""

    def __init__(self, folder: Path):
        self._folder = folder

    def start(self) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)

    def handle(self, result: FrameResult) -> None:
        result.annotated().save(self._folder / f"frame_{result.number:06d}.jpg", quality=SAVE_JPEG_QUALITY)


class LiveView(Sink):
    """`--serve`: publishes each frame to a bound `serve.LiveServer`, which it starts, announces and closes."""

    def __init__(self, server: serve.LiveServer):
        self.server = server

    def start(self) -> None:
        self.server.start()
        print(self.server.describe(), file=sys.stderr, flush=True)

    def handle(self, result: FrameResult) -> None:
        # Drawn lazily by the first stream client that wants this frame, so nobody watching costs nothing.
        self.server.latest.publish(result.number, result.record, result.annotated)

    def close(self) -> None:
        self.server.close()


def has_display() -> bool:
    """Whether a window can be opened: on Linux an X11 or Wayland display must be named."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class PreviewWindow(Sink):
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
            raise PreviewError(
                "this OpenCV has no GUI support (opencv-python-headless?); on a Pi use apt's "
                f"python3-opencv, elsewhere pip's opencv-python; or {hint}"
            ) from None
        self._cv2 = cv2

    def handle(self, result: FrameResult) -> str | None:
        return None if self.show(result.annotated()) else "window closed"

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


class SinkGroup(Sink):
    """Several sinks as one, in order: each frame goes to each in turn until one asks the loop to stop."""

    def __init__(self, sinks: list[Sink]):
        self.sinks = sinks

    def start(self) -> None:
        for sink in self.sinks:
            sink.start()

    def handle(self, result: FrameResult) -> str | None:
        for sink in self.sinks:
            reason = sink.handle(result)
            if reason is not None:
                return reason
        return None

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
