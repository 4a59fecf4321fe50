"""Live mode of the demo: the visitor's webcam streams frames to the served (int8) model, the top-5 follows.

    python demo/app.py --run runs/NAME      # open "Live camera", allow the camera, press the record button

`demo/ui.py`'s `build_demo` adds the section with `add_live_section`; the
Space gets it the same way. Each frame goes through the one preprocessing
function (`edge.preprocess.prepare_image`) and the served model, and the page
shows the top-5 and a status line: "Frame N: F fps, M ms per frame".

Throttling, newest frame wins (Gradio 6's streaming input, checked in its source):
- the browser captures a frame every `STREAM_EVERY_S` seconds, and skips the
  capture while the previous frame is still pending;
- the server keeps only the newest frame of each stream: a frame that arrives
  while the model is busy replaces the waiting one (`/stream/{event_id}` overwrites
  the event's data), so a slow server drops frames instead of queueing them.
  The event keeps Gradio's default `trigger_mode="multiple"` for streams: with
  "always_last" the page defers every frame after the first until the stream
  ends, so nothing would update.

Only the page streams: `/live_frame` is not an API, yet Gradio still starts a stream for a
raw `POST /gradio_api/call/live_frame`, which then held a live slot for the whole time
limit without sending a frame or reading an answer. So the page's load event marks its
session (a `gr.State` set on the server, which no request can write), and a stream from a
session that is not marked is refused at its first call, which ends it and frees its slot
at once. A caller must then play the page's whole protocol to hold a slot.

Concurrency: an open stream holds one worker of its own queue (`concurrency_id="live"`)
for up to `TIME_LIMIT_S` seconds, so live visitors never take the workers of the
still-photo flow; at most `LIVE_CONCURRENCY_LIMIT` streams run at once, later ones wait
in the queue. Each visitor's frame-rate meter is their own `gr.State`; the
interpreter itself is shared and serialised by `edge.runtime.Classifier`'s lock.

Gradio, numpy, Pillow and a TFLite runtime (through edge.runtime); never TensorFlow.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import gradio as gr
import numpy as np

from demo import inputs
from edge import preprocess, runtime
from edge.frame_rate import FrameRateMeter

# Seconds between two frames the browser captures: at most 10 frames per second per
# visitor. The int8 EfficientNet-B0 answers in about 6 ms on this project's 2-vCPU
# test machine (docs/demo.md), so the round trip over the network, not the model, is
# what limits the rate; a smaller interval would only send frames the server drops.
STREAM_EVERY_S = 0.1

# Seconds one stream may run before Gradio closes it (the visitor presses record
# again): a tab left open with its camera on cannot hold a worker forever.
TIME_LIMIT_S = 120

# Live streams served at once, each holding one worker for as long as it runs.
# Their frames share the int8 interpreter with the still photos (one lock), and a
# frame costs a few milliseconds, so 4 streams at 10 fps keep well under one CPU.
LIVE_CONCURRENCY_LIMIT = 4
LIVE_CONCURRENCY_ID = "live"

# Why a stream not opened by the page is refused: the caller sees this, not a server trace.
NOT_FROM_THE_PAGE = "Live mode runs in this demo's page: open the page and press record."

# The frame rate is measured over the last this-many answered frames: long enough
# to smooth the network's jitter, short enough to follow a change within a second or two.
METER_WINDOW_FRAMES = 10


@dataclasses.dataclass
class FrameMeter:
    """One visitor's live session: frames answered, their arrival times and costs, the last answer.

    Kept in that visitor's `gr.State`, so two visitors never share a count or a rate.
    The rate is the camera's own meter (`edge.frame_rate`), fed the arrival times.
    """

    frames: int = 0  # frames answered
    skipped: int = 0  # frames that could not be read
    # METER_WINDOW_FRAMES frames span one interval fewer: the meter's window counts intervals.
    frame_rate: FrameRateMeter = dataclasses.field(default_factory=lambda: FrameRateMeter(METER_WINDOW_FRAMES - 1))
    costs_ms: collections.deque = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=METER_WINDOW_FRAMES)
    )
    last_answer: dict[str, float] | None = None

    def record(self, arrived_at: float, cost_ms: float, answer: dict[str, float]) -> None:
        self.frames += 1
        self.frame_rate.tick(arrived_at)
        self.costs_ms.append(cost_ms)
        self.last_answer = answer

    @property
    def arrivals(self) -> collections.deque[float]:
        """The arrival times of the answered frames in the window, oldest first."""
        return self.frame_rate.times

    @property
    def fps(self) -> float | None:
        """Frames answered per second over the window; None until two frames have been answered."""
        return self.frame_rate.fps

    @property
    def mean_cost_ms(self) -> float | None:
        return sum(self.costs_ms) / len(self.costs_ms) if self.costs_ms else None

    def status(self) -> str:
        """'Frame N: F fps, M ms per frame', the line under the live top-5."""
        fps = self.fps
        rate = f"{fps:.1f} fps" if fps is not None else "measuring fps"
        line = f"Frame {self.frames}: {rate}, {self.mean_cost_ms:.1f} ms per frame"
        if self.skipped:
            line += f" ({self.skipped} unreadable frame{'s' if self.skipped > 1 else ''} skipped)"
        return line


def frame_source(frame: Any, max_bytes: int | None = None) -> preprocess.ImageSource:
    """What edge.preprocess reads, from one streamed frame.

    The stream runs with `preprocess=False`, so the frame arrives as the browser sent
    it: `{"url": "data:image/jpeg;base64,..."}`. A data URL string or a file payload
    (`{"path": ...}`) are checked like a still photo (demo/inputs.py: an upload, or
    inline data within `max_bytes`); a numpy array (direct Python calls) is taken as is.
    Raises preprocess.ImageError with demo/inputs.py's reason otherwise.
    """
    if isinstance(frame, np.ndarray):
        return frame
    try:
        return inputs.image_source(frame, max_bytes)[0]
    except inputs.RefusedInput as error:
        raise preprocess.ImageError(str(error)) from None


def make_classify_frame(
    classifier: runtime.Classifier, top_k: int, max_bytes: Callable[[], int | None] = inputs.default_max_bytes
):
    """The per-frame function: (frame, this visitor's meter) -> (top-k {label: probability}, status line, meter).

    A frame that cannot be read is skipped: the status line says why and the last
    answer stays on the page; the stream goes on (an exception would end it).
    """

    def classify_frame(frame: Any, meter: FrameMeter | None):
        meter = meter if meter is not None else FrameMeter()
        if frame is None:
            return meter.last_answer, (meter.status() if meter.frames else "Waiting for the camera..."), meter
        start = time.perf_counter()
        try:
            pixels = preprocess.prepare_image(frame_source(frame, max_bytes()), classifier.input_size)
        except preprocess.ImageError as error:
            meter.skipped += 1
            so_far = f" {meter.status()}" if meter.frames else ""
            return meter.last_answer, f"Frame skipped: {error.reason.rstrip('.')}.{so_far}", meter
        probabilities = classifier.predict(pixels)[0]
        answer = dict(classifier.top_k(probabilities, top_k))
        meter.record(time.monotonic(), (time.perf_counter() - start) * 1000.0, answer)
        return answer, meter.status(), meter

    return classify_frame


def mark_page_session() -> bool:
    """The page's load event: its session may stream (kept in that session's gr.State, on the server)."""
    return True


def page_only(classify_frame: Callable):
    """`classify_frame` for sessions the page opened; a stream from any other is refused at its first call.

    Raising ends the stream, so a refused caller holds its live slot only for this call.
    """

    def classify_page_frame(frame: Any, meter: FrameMeter | None, opened_by_page: bool):
        if not opened_by_page:
            raise gr.Error(NOT_FROM_THE_PAGE, title="Not the page", print_exception=False)
        return classify_frame(frame, meter)

    return classify_page_frame


def add_live_section(
    page: gr.Blocks,
    classifier: runtime.Classifier,
    top_k: int,
    max_bytes: Callable[[], int | None] = inputs.default_max_bytes,
) -> None:
    """The "Live camera" section, inside `page` (the caller's gr.Blocks): webcam stream in, top-k and status out."""
    with gr.Accordion("Live camera", open=False, elem_id="live"):
        gr.Markdown(
            f"Point your webcam at something: each frame goes to `{classifier.model_path.name}` "
            f"and the top {top_k} follows. Up to {1 / STREAM_EVERY_S:.0f} frames per second; "
            "when the server is busy it answers the newest frame and drops the ones in between. "
            f"A stream stops after {TIME_LIMIT_S} s: press record again."
        )
        with gr.Row():
            with gr.Column(scale=1):
                camera = gr.Image(
                    label="Webcam",
                    sources=["webcam"],
                    streaming=True,
                    type="filepath",
                    height=320,
                    elem_id="live-camera",
                )
            with gr.Column(scale=1):
                answer = gr.Label(
                    label=f"{classifier.model_path.name}: top {top_k}", num_top_classes=top_k, elem_id="live-answer"
                )
                status = gr.Markdown(elem_id="live-status")
        meter = gr.State(None)
        opened_by_page = gr.State(False)  # set by the page's load event, never by a request's data
        page.load(mark_page_session, outputs=[opened_by_page], api_visibility="private", show_progress="hidden")
        # preprocess=False: frames reach classify_frame as the browser's data URL (see frame_source).
        # api_visibility="private": the stream is the page's, not an API. gradio_client cannot
        # drive a stream (it fails on the "process_streaming" message, then waits), so listing it
        # only invited callers that hold a live slot without sending frames.
        camera.stream(
            page_only(make_classify_frame(classifier, top_k, max_bytes)),
            inputs=[camera, meter, opened_by_page],
            outputs=[answer, status, meter],
            stream_every=STREAM_EVERY_S,
            time_limit=TIME_LIMIT_S,
            concurrency_limit=LIVE_CONCURRENCY_LIMIT,
            concurrency_id=LIVE_CONCURRENCY_ID,
            preprocess=False,
            show_progress="hidden",
            api_name="live_frame",
            api_visibility="private",
        )
