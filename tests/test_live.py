"""Live mode of the demo (demo/live.py): the per-frame function in-process, and its place on the page.

    .venv/bin/pytest tests/test_live.py -x -q

The model is tests/conftest.py's `smoke_run`. The real webcam stream, in Chromium
with a fake camera, is tested in tests/test_browser.py.
"""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from conftest import as_upload
from PIL import Image

from demo import inputs, live, ui
from demo import models as demo_models
from edge.common import formatting, run_folder

REPOSITORY = Path(__file__).resolve().parents[1]
PHOTO = REPOSITORY / "demo" / "examples" / "rocket.jpg"


@pytest.fixture(scope="module")
def models(smoke_run) -> demo_models.DemoModels:
    return demo_models.load_models(run_folder.find_model_files(folder=smoke_run))


def _jpeg_data_url(pixels: np.ndarray) -> str:
    """A frame as the browser streams it: the canvas as a JPEG data URL."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _frame(pixels: np.ndarray) -> dict:
    """What the stream hands classify_frame with preprocess=False."""
    return {"url": _jpeg_data_url(pixels), "is_stream": False}


def _camera_pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (480, 640, 3), dtype=np.uint8)


def test_a_frame_gives_the_top5_and_a_status_line(models):
    classify_frame = live.make_classify_frame(models.model, ui.TOP_K)
    pixels = _camera_pixels(0)
    answer, status, meter = classify_frame(_frame(pixels), None)
    expected = dict(
        models.model.classify(
            Image.open(io.BytesIO(base64.b64decode(_jpeg_data_url(pixels).split(",", 1)[1]))), ui.TOP_K
        )
    )
    assert answer == expected and len(answer) == min(ui.TOP_K, len(models.model.labels))
    assert status.startswith("Frame 1: measuring fps, ") and status.endswith(" ms per frame")
    for _ in range(3):
        answer, status, meter = classify_frame(_frame(pixels), meter)
    assert meter.frames == 4 and status.startswith("Frame 4: ") and " fps, " in status
    assert meter.fps is not None and meter.fps > 0 and meter.mean_cost_ms > 0


def test_every_frame_form_is_accepted(models):
    """The browser's {"url": data URL}, a bare data URL, an uploaded file's payload and an array give one answer."""
    classify_frame = live.make_classify_frame(models.model, ui.TOP_K)
    photo = np.asarray(Image.open(PHOTO).convert("RGB"))
    expected = dict(models.model.classify(PHOTO, ui.TOP_K))
    uploaded = as_upload(PHOTO)
    for frame in ({"path": str(uploaded), "url": None}, str(uploaded), photo):
        assert classify_frame(frame, None)[0] == expected
    encoded = "data:image/jpeg;base64," + base64.b64encode(PHOTO.read_bytes()).decode("ascii")
    assert classify_frame(encoded, None)[0] == classify_frame({"url": encoded}, None)[0] == expected


def test_a_bad_frame_is_reported_and_the_stream_goes_on(models):
    classify_frame = live.make_classify_frame(models.model, ui.TOP_K)
    answer, _, meter = classify_frame(_frame(_camera_pixels(1)), None)
    bad_frames = {
        "not an image": {"url": "data:image/jpeg;base64," + base64.b64encode(b"not a picture").decode()},
        "malformed": {"url": "data:image/jpeg;base64"},
        "no image data": {"url": None, "path": None},
        "unsupported input": 42,
    }
    for words, frame in bad_frames.items():
        kept, status, meter = classify_frame(frame, meter)  # no exception: it would end the visitor's stream
        assert kept == answer, words  # the last answer stays on the page
        assert status.startswith("Frame skipped: ") and words in status, status
    assert meter.frames == 1 and meter.skipped == len(bad_frames)
    assert f"({len(bad_frames)} unreadable frames skipped)" in status
    # Before any answer, a bad frame says only what is wrong.
    assert classify_frame(bad_frames["not an image"], None)[:2] == (
        None,
        "Frame skipped: not an image (the format was not recognised).",
    )
    # No frame (the camera is not on yet) is not an error either.
    assert classify_frame(None, None)[:2] == (None, "Waiting for the camera...")


def test_a_frame_naming_a_server_file_or_too_much_data_is_skipped(models):
    """A frame is held to the still photo's rules (demo/inputs.py): an upload or inline data under the cap."""
    cap = PHOTO.stat().st_size  # the photo, inline, fits exactly; a noisy 640 x 480 camera frame does not
    small = {"url": "data:image/jpeg;base64," + base64.b64encode(PHOTO.read_bytes()).decode("ascii")}
    large = _frame(_camera_pixels(1))
    assert len(base64.b64decode(large["url"].partition(",")[2])) > cap
    classify_frame = live.make_classify_frame(models.model, ui.TOP_K, max_bytes=lambda: cap)
    for frame in ({"path": str(PHOTO), "url": None}, str(PHOTO), {"path": "/etc/passwd"}, "/no/such/file.png"):
        answer, status, _ = classify_frame(frame, None)
        assert answer is None and status == f"Frame skipped: {inputs.REFUSED}", status
    answer, status, _ = classify_frame(small, None)  # a frame within the cap still passes
    assert answer is not None, status
    answer, status, _ = classify_frame(large, None)
    assert answer is None and f"larger than the {formatting.size(cap)} limit" in status, status


def test_two_sessions_keep_their_own_meters(models):
    """Each visitor's gr.State holds their own meter: one visitor's frames never move the other's count."""
    classify_frame = live.make_classify_frame(models.model, ui.TOP_K)
    first, second = None, None
    for index in range(3):
        _, first_status, first = classify_frame(_frame(_camera_pixels(index)), first)
    _, second_status, second = classify_frame(_frame(_camera_pixels(9)), second)
    assert first is not second and (first.frames, second.frames) == (3, 1)
    assert first_status.startswith("Frame 3: ") and second_status.startswith("Frame 1: measuring fps")
    assert len(first.arrivals) == 3 and len(second.arrivals) == 1


def test_meter_measures_the_rate_over_its_window():
    meter = live.FrameMeter()
    assert meter.fps is None and meter.mean_cost_ms is None
    for index in range(live.METER_WINDOW_FRAMES + 5):  # 4 frames per second, older ones leave the window
        meter.record(100.0 + index * 0.25, 2.0 + index, {"a": 1.0})
    assert meter.fps == pytest.approx(4.0) and meter.frames == live.METER_WINDOW_FRAMES + 5
    assert meter.mean_cost_ms == pytest.approx(2.0 + np.mean(range(5, live.METER_WINDOW_FRAMES + 5)))
    assert meter.status() == f"Frame {meter.frames}: 4.0 fps, {meter.mean_cost_ms:.1f} ms per frame"


def test_the_page_streams_the_webcam_to_the_served_model(models):
    """build_demo adds the live section: a streaming webcam input wired to its own throttled, bounded queue."""
    demo = ui.build_demo(models)
    cameras = [
        block
        for block in demo.blocks.values()
        if isinstance(block, gr.Image) and getattr(block, "elem_id", None) == "live-camera"
    ]
    assert len(cameras) == 1 and cameras[0].streaming and cameras[0].sources == ["webcam"]
    streams = [
        dependency for dependency in demo.fns.values() if any(event == "stream" for _, event in dependency.targets)
    ]
    assert len(streams) == 1
    stream = streams[0]
    assert stream.stream_every == live.STREAM_EVERY_S and stream.time_limit == live.TIME_LIMIT_S
    assert stream.concurrency_limit == live.LIVE_CONCURRENCY_LIMIT and stream.concurrency_id == live.LIVE_CONCURRENCY_ID
    # "always_last" would make the page defer every frame after the first (see demo/live.py).
    assert stream.trigger_mode == "multiple" and stream.preprocess is False
    # The still-photo flow is unchanged and keeps its own queue.
    assert any(
        dependency.api_name == "compare" and dependency.concurrency_id == "models" for dependency in demo.fns.values()
    )


def test_only_a_session_the_page_opened_may_stream(models):
    """The stream refuses a session the page's load event did not mark (a raw API call), at its first call."""
    classify_page_frame = live.page_only(live.make_classify_frame(models.model, ui.TOP_K))
    with pytest.raises(gr.Error, match="open the page"):
        classify_page_frame(_frame(_camera_pixels(0)), None, False)
    answer, status, meter = classify_page_frame(_frame(_camera_pixels(0)), None, live.mark_page_session())
    assert answer and status.startswith("Frame 1: ") and meter.frames == 1
    demo = ui.build_demo(models)
    stream = next(
        dependency for dependency in demo.fns.values() if any(event == "stream" for _, event in dependency.targets)
    )
    marks = [dependency for dependency in demo.fns.values() if dependency.fn is live.mark_page_session]
    assert len(marks) == 1 and [event for _, event in marks[0].targets] == ["load"]
    assert marks[0].outputs[0] is stream.inputs[-1]  # the load event sets the very State the stream reads


def test_frame_benchmark_runs(smoke_run):
    """benchmarks/live_frame.py on the smoke model: a few frames, no frame skipped, the figures printed."""
    result = subprocess.run(
        [
            sys.executable,
            str(REPOSITORY / "benchmarks" / "live_frame.py"),
            "--run",
            str(smoke_run),
            "--frames",
            "3",
            "--warmup",
            "1",
        ],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "0 skipped" in result.stdout and "frame function p50" in result.stdout and "interpreter alone" in result.stdout
    )
    refused = subprocess.run(
        [sys.executable, str(REPOSITORY / "benchmarks" / "live_frame.py"), "--run", str(smoke_run), "--frames", "0"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 2 and "--frames" in refused.stderr
