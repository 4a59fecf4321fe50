"""What the camera loop shows: the text line per frame, and the annotated frame.

Used by `edge/camera.py` for `--headless` (one line per frame), the preview
window and `--save DIR`. Frames are annotated with Pillow's ImageDraw, not
OpenCV, so saving annotated frames works on a machine whose OpenCV has no GUI
(opencv-python-headless) or no OpenCV at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Text height as a fraction of the frame's shorter side, so the overlay reads the same at any resolution.
TEXT_HEIGHT_FRACTION = 0.045
#: The smallest text height in pixels (tiny test frames stay legible).
MINIMUM_TEXT_HEIGHT = 10
#: Opacity (0-255) of the dark box behind the text, so it reads on bright scenes.
BOX_OPACITY = 160

Prediction = tuple[str, float]


def format_line(frame_number: int, predictions: Sequence[Prediction], latency_ms: float, fps: float) -> str:
    """One `--headless` line: frame number, top labels with probabilities, latency, frame rate."""
    labels = ", ".join(f"{label} {score:.3f}" for label, score in predictions) or "(none above threshold)"
    return f"frame {frame_number}: {labels} | {latency_ms:.1f} ms | {fps:.1f} fps"


def annotate(
    frame: np.ndarray, predictions: Sequence[Prediction], fps: float | None, latency_ms: float | None = None
) -> Image.Image:
    """A copy of the RGB `frame` with the top-k labels, probabilities and FPS drawn in its top-left corner."""
    if frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3:
        # A copy made by frombytes: about 0.3 ms for 640x480, where fromarray(...).convert() took 3-5 ms here.
        image = Image.frombytes("RGB", (frame.shape[1], frame.shape[0]), np.ascontiguousarray(frame).tobytes())
    else:
        image = Image.fromarray(frame).convert("RGB")
    text_height = max(MINIMUM_TEXT_HEIGHT, round(min(image.size) * TEXT_HEIGHT_FRACTION))
    font = _font(text_height)
    lines = []
    if fps is not None:
        status = f"{fps:.1f} fps"
        if latency_ms is not None:
            status += f"  {latency_ms:.0f} ms"
        lines.append(status)
    lines += [f"{label}: {score:.0%}" for label, score in predictions] or ["(none above threshold)"]

    margin = max(2, text_height // 3)
    line_height = text_height + margin
    widths = [font.getlength(line) for line in lines]  # What ImageDraw.textlength asks the font.
    # Only the box's corner of the frame is blended; the rest is untouched. Blending the whole
    # 640x480 frame cost about 7 ms a frame, which --serve and the preview pay on every frame.
    box = (0, 0, int(max(widths)) + 2 * margin, line_height * len(lines) + margin)  # Inclusive corners.
    corner = (0, 0, min(image.width, box[2] + 1), min(image.height, box[3] + 1))
    overlay = Image.new("RGBA", corner[2:], (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    draw.rectangle(box, fill=(0, 0, 0, BOX_OPACITY))
    for row, line in enumerate(lines):
        draw.text((margin, margin + row * line_height), line, font=font, fill=(255, 255, 255, 255))
    image.paste(Image.alpha_composite(image.crop(corner).convert("RGBA"), overlay).convert("RGB"), corner[:2])
    return image


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at `size` pixels (scalable since Pillow 10.1; fixed-size before)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the small bitmap font.
        return ImageFont.load_default()
