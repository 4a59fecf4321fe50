"""edge/overlay.py: the annotated frame the preview, --save and --serve show.

.venv/bin/pytest tests/test_overlay.py -q
"""

from __future__ import annotations

import numpy as np

from edge import overlay


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
    assert np.array_equal(annotated[bottom + 1 :], original[bottom + 1 :])
    assert np.array_equal(annotated[:, right + 1 :], original[:, right + 1 :])
    tiny = np.zeros((6, 5, 3), np.uint8)  # A box larger than the frame is cut to it.
    assert np.asarray(overlay.annotate(tiny, [("apple", 1.0)], None)).shape == (6, 5, 3)
