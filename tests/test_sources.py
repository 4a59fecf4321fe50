"""edge/sources.py: opening a source, the capture thread's stale-frame dropping, and the picamera2 source.

    .venv/bin/pytest tests/test_sources.py -q

picamera2 is replaced by a stand-in module (there is no Pi here); the other
tests use tests/camera_support.py's fake camera.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
from camera_support import FakeCamera, _frame, _has_a_camera

from edge import sources


@pytest.mark.skipif(_has_a_camera(), reason="this machine has a camera, so 'no camera' cannot be shown")
def test_no_camera_is_a_camera_error(tmp_path):
    # The script opens the camera after loading the model; here the source alone, without a model.
    with pytest.raises(sources.CameraError, match="no camera found"):
        sources.open_source("auto")
    with pytest.raises(sources.CameraError, match="no such file or folder"):
        sources.open_source(str(tmp_path / "missing.avi"))


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


# -- the picamera2 source, against a stand-in for the library (no Pi here) ----------------------


class FakePicamera2:
    """The part of picamera2's API the source uses; frames come in libcamera's RGB888 layout (B, G, R)."""

    cameras = [{"Model": "imx708", "Num": 0}]
    instances: list[FakePicamera2] = []

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
