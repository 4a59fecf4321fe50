"""edge/frame_rate.py: the frame-rate meter of the camera loop and the demo's live mode.

    .venv/bin/pytest tests/test_frame_rate.py -q

The demo's use of it (a meter per visitor) is tested in tests/test_live.py.
"""

from __future__ import annotations

import pytest

from edge import frame_rate


def test_frame_rate_meter_averages_over_its_window():
    meter = frame_rate.FrameRateMeter(window=4)
    assert meter.update(0.5) == pytest.approx(2.0)
    for _ in range(4):
        rate = meter.update(0.1)
    assert rate == pytest.approx(10.0)  # The 0.5 s interval has left the window.
