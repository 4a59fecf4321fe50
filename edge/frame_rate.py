"""Frames per second over a sliding window of recent frames: the one meter of the camera loop and the demo's live mode.

    meter = FrameRateMeter(window=10)     # the rate over the last 10 intervals between frames
    fps = meter.update(0.1)               # the camera loop: a frame 0.1 s after the previous one
    meter.tick(time.monotonic())          # the demo's live mode: a frame answered now
    meter.fps                             # None until two frames are known

`edge/camera.py` counts the interval since the previous frame ended
(`update`); `demo/live.py` counts the times frames were answered (`tick`).
Both keep the times themselves, so the rate is the number of intervals over
the time they span. Standard library only.
"""

from __future__ import annotations

import collections


class FrameRateMeter:
    """Frames per second over the last `window` intervals between frames."""

    def __init__(self, window: int):
        # One time more than intervals: `window` intervals lie between `window + 1` frames.
        self._times: collections.deque[float] = collections.deque(maxlen=window + 1)

    @property
    def times(self) -> collections.deque[float]:
        """The times of the frames in the window, oldest first (the demo shows how many it holds)."""
        return self._times

    def tick(self, now: float) -> float | None:
        """Count a frame at time `now` (seconds, any clock that only goes forward); the rate since."""
        self._times.append(now)
        return self.fps

    def update(self, interval_seconds: float) -> float:
        """Count a frame `interval_seconds` after the previous one (or after the start); the rate, 0.0 if unknown."""
        if not self._times:
            self._times.append(0.0)  # The start: the first interval runs from it.
        fps = self.tick(self._times[-1] + interval_seconds)
        return fps if fps is not None else 0.0

    @property
    def fps(self) -> float | None:
        """Frames per second over the window; None until two frames are known or while they span no time."""
        if len(self._times) < 2 or self._times[-1] <= self._times[0]:
            return None
        return (len(self._times) - 1) / (self._times[-1] - self._times[0])
