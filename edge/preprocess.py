"""The one preprocessing function: any image in, the model's uint8 input out.

Every consumer (the Gradio demo, the Raspberry Pi camera, the evaluation of
outside photos) calls `prepare_image`, so a photo becomes the same numbers
everywhere (see docs/architecture.md, "The model's contract"):

    any image -> EXIF orientation applied -> RGB (alpha composited on a neutral
    grey; palette, grayscale, 16-bit and CMYK converted; first frame of an
    animated or multi-page file) -> centre crop to the target's aspect ratio
    (a square for square models) -> antialiased resize -> uint8 (h, w, 3)

Bad input raises `ImageError` (a `ValueError`) with the reason and, when known,
the file name; Pillow's own exceptions never escape. Images with more than
`MAX_IMAGE_PIXELS` pixels are refused from their header, before any pixel is
decoded, so a decompression bomb cannot exhaust memory.

numpy and Pillow only. Its command line is edge/classify.py, which classifies through it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edge.common.errors import UserError

# Refuse images above 64 megapixels (8000 x 8000): that covers 48 MP phone
# photos, and decoding the largest accepted one takes 192 MB as RGB, which a
# 1 GB Raspberry Pi survives. Checked against the size in the file's header.
MAX_IMAGE_PIXELS = 64_000_000

# Transparent pixels are composited on mid grey: neither black nor white, so a
# cut-out object does not gain a dark or bright frame the model never saw.
NEUTRAL_BACKGROUND = (128, 128, 128)

# Resampling: Lanczos (antialiased: its kernel widens with the reduction) after
# a box reduction by an integer factor down to `REDUCING_GAP` times the target.
# Pillow documents that a gap of 3 or more is "indistinguishable from fair
# resampling in most cases"; it makes a 12 MP photo cheap to shrink on a Pi.
RESAMPLING = Image.Resampling.LANCZOS
REDUCING_GAP = 3.0

# JPEGs are decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) when the
# result keeps at least this many times the target's pixels on each side, so
# the final Lanczos still does the antialiasing; it saves most of the decoding.
DRAFT_MARGIN = 4

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | Image.Image | np.ndarray


class ImageError(UserError):
    """Bad image input. `reason` says what is wrong, `source_name` which file (or None)."""

    def __init__(self, reason: str, source_name: str | None = None):
        self.reason = reason
        self.source_name = source_name
        super().__init__(f"{source_name}: {reason}" if source_name else reason)


def load_image(source: ImageSource) -> Image.Image:
    """Decode `source` into an RGB image with its EXIF orientation applied.

    `source` is a path, the bytes of an image file, a binary file object, a
    PIL image, or a uint8 numpy array shaped (H, W), (H, W, 1), (H, W, 3) or
    (H, W, 4) (RGBA is composited like a transparent file).
    """
    return _decode(source, draft_size=None)


def prepare_image(source: ImageSource, size: int | tuple[int, int]) -> np.ndarray:
    """`load_image`, centre crop to the aspect ratio of `size`, antialiased resize.

    `size` is an int (square) or (height, width). Returns a new, writable
    uint8 array shaped (height, width, 3).
    """
    height, width = _target_size(size)
    if _is_plain_rgb_frame(source):
        cropped = _crop_rgb_frame(source, (width, height))
    else:
        image = _decode(source, draft_size=(DRAFT_MARGIN * max(height, width),) * 2)
        # Crop first (rather than resize's `box=`), so the filter never reads pixels outside the crop.
        cropped = image.crop(_centre_crop_box(image.size, (width, height)))
    resized = cropped.resize((width, height), RESAMPLING, reducing_gap=REDUCING_GAP)
    return np.array(resized, dtype=np.uint8)


def _is_plain_rgb_frame(source: ImageSource) -> bool:
    """A uint8 (H, W, 3) array: what a camera delivers every frame, and needs no conversion."""
    return (
        isinstance(source, np.ndarray)
        and source.dtype == np.uint8
        and source.ndim == 3
        and source.shape[2] == 3
        and source.shape[0] > 0
        and source.shape[1] > 0
    )


def _crop_rgb_frame(frame: np.ndarray, target_size: tuple[int, int]) -> Image.Image:
    """The centre crop of an RGB frame as a PIL image, cut in numpy before anything is copied.

    The same pixels as the general path (`_from_array`, `_to_rgb`, then `Image.crop`), which copies
    the whole frame twice and then the crop; this copies the crop once (tests/test_preprocess.py
    checks the two paths give identical arrays). The camera's per-frame cost is mostly these copies.
    """
    if frame.shape[0] * frame.shape[1] > MAX_IMAGE_PIXELS:
        raise ImageError(_too_large_reason((frame.shape[1], frame.shape[0])), "array")
    left, top, right, bottom = _centre_crop_box((frame.shape[1], frame.shape[0]), target_size)
    # A fresh contiguous copy of the crop: the PIL image may share its memory, and it is ours alone.
    crop = np.array(frame[top:bottom, left:right], dtype=np.uint8, order="C", copy=True)
    return Image.fromarray(crop, mode="RGB")


def fit_and_pad(source: ImageSource, size: int | tuple[int, int]) -> np.ndarray:
    """`load_image`, antialiased resize of the WHOLE image into `size`, centred on NEUTRAL_BACKGROUND.

    For training folders of photos with mixed shapes (train/image_folders.py): a wide car keeps
    both ends, where `prepare_image`'s centre crop would keep its middle. Same decoding and
    resampling as `prepare_image`; returns a new uint8 array shaped (height, width, 3).
    """
    height, width = _target_size(size)
    image = _decode(source, draft_size=(DRAFT_MARGIN * max(height, width),) * 2)
    scale = min(width / image.width, height / image.height)
    fitted_size = (max(1, min(width, round(image.width * scale))), max(1, min(height, round(image.height * scale))))
    fitted = image.resize(fitted_size, RESAMPLING, reducing_gap=REDUCING_GAP)
    canvas = Image.new("RGB", (width, height), NEUTRAL_BACKGROUND)
    canvas.paste(fitted, ((width - fitted_size[0]) // 2, (height - fitted_size[1]) // 2))
    return np.array(canvas, dtype=np.uint8)


def _target_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) from an int or a pair; a programming error raises ValueError, not ImageError."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        height = width = int(size)
    else:
        try:
            height, width = (int(value) for value in size)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ValueError(f"size must be an int or (height, width), got {size!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return height, width


def _centre_crop_box(image_size: tuple[int, int], target_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The largest centred box of the target's aspect ratio, as (left, top, right, bottom) in whole pixels."""
    image_width, image_height = image_size
    target_width, target_height = target_size
    # Compare aspect ratios by cross-multiplying, so no rounding decides the branch.
    if image_width * target_height > image_height * target_width:
        crop_width = max(1, round(image_height * target_width / target_height))
        left = (image_width - crop_width) // 2
        return (left, 0, left + crop_width, image_height)
    crop_height = max(1, round(image_width * target_height / target_width))
    top = (image_height - crop_height) // 2
    return (0, top, image_width, top + crop_height)


def _decode(source: ImageSource, draft_size: tuple[int, int] | None) -> Image.Image:
    """Open, check, decode and convert `source`, translating every failure into ImageError."""
    if isinstance(source, np.ndarray):
        return _to_rgb(_from_array(source), None)
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", None) or None
        return _finish(source, name, draft_size)

    name = _source_name(source)
    stream = _open_stream(source, name)
    try:
        try:
            image = Image.open(stream)
        except UnidentifiedImageError:
            raise ImageError("not an image (the format was not recognised)", name) from None
        except Image.DecompressionBombError:
            raise ImageError(_too_large_reason(None), name) from None
        with image:
            return _finish(image, name, draft_size)
    except ImageError:
        raise
    except Exception as error:  # Pillow's plugins raise many types; none may reach the caller.
        raise ImageError(f"cannot decode the image ({type(error).__name__}: {error})", name) from None
    finally:
        if not _is_file_object(source):
            stream.close()


def _finish(image: Image.Image, name: str | None, draft_size: tuple[int, int] | None) -> Image.Image:
    """Check the header size, pick the first frame, decode, orient and convert to RGB."""
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageError(f"zero-sized image ({width} x {height})", name)
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(_too_large_reason((width, height)), name)
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)  # Animated GIF/WebP/PNG or multi-page TIFF: the first frame.
        if draft_size is not None and image.format == "JPEG":
            image.draft(None, draft_size)  # Before load(): decode JPEGs at a reduced scale.
        image.load()
    except (OSError, EOFError, SyntaxError, ValueError) as error:
        message = str(error)
        if "truncated" in message or isinstance(error, EOFError) or "broken data stream" in message:
            raise ImageError(f"truncated file ({message})", name) from None
        raise ImageError(f"corrupt or truncated image data ({type(error).__name__}: {message})", name) from None
    except Image.DecompressionBombError:
        raise ImageError(_too_large_reason(image.size), name) from None
    try:
        oriented = ImageOps.exif_transpose(image)
    except Exception:  # A malformed EXIF block must not cost the picture: keep it unrotated.
        oriented = image
    return _to_rgb(oriented, name)


def _to_rgb(image: Image.Image, name: str | None) -> Image.Image:
    """Convert any Pillow mode to RGB, compositing transparency on NEUTRAL_BACKGROUND."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        image = Image.fromarray(_wide_to_uint8(np.asarray(image), mode), mode="L")
        mode = "L"
    if mode == "1":
        image, mode = image.convert("L"), "L"
    has_transparency = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    try:
        if has_transparency:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, NEUTRAL_BACKGROUND + (255,))
            return Image.alpha_composite(background, rgba).convert("RGB")
        # CMYK (including Adobe's inverted JPEGs, which Pillow un-inverts), palette,
        # grayscale and YCbCr all have a direct conversion. A copy, so the result never
        # shares pixels with a caller's image.
        return image.convert("RGB") if mode != "RGB" else image.copy()
    except (ValueError, OSError) as error:
        raise ImageError(f"unsupported colour mode {mode!r} ({error})", name) from None


def _wide_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale 16-bit, 32-bit integer or float grayscale to 0..255.

    16-bit ("I;16*", and "I", which is how Pillow decodes 16-bit PNGs and many
    TIFFs) maps 0..65535 linearly onto 0..255. Floats in 0..1 scale by 255.
    Anything outside those ranges (signed or 32-bit data) is stretched from its
    minimum to its maximum, since no fixed range describes it.
    """
    values = values.astype(np.float64)
    if values.size == 0:
        return values.astype(np.uint8)
    low, high = float(values.min()), float(values.max())
    if mode.startswith("I;16") or (mode == "I" and low >= 0 and high <= 65535):
        scaled = values * (255.0 / 65535.0)
    elif mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255.0
    elif high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:
        scaled = np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _from_array(array: np.ndarray) -> Image.Image:
    """A PIL image from a uint8 array; shape and dtype problems are ImageErrors."""
    if array.dtype != np.uint8:
        raise ImageError(f"expected a uint8 array, got {array.dtype}", "array")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(f"expected an array shaped (H, W), (H, W, 3) or (H, W, 4), got {array.shape}", "array")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"zero-sized image ({array.shape[1]} x {array.shape[0]})", "array")
    if array.shape[0] * array.shape[1] > MAX_IMAGE_PIXELS:
        raise ImageError(_too_large_reason((array.shape[1], array.shape[0])), "array")
    mode = "L" if array.ndim == 2 else ("RGB" if array.shape[2] == 3 else "RGBA")
    return Image.fromarray(np.ascontiguousarray(array), mode=mode)


def _source_name(source: Any) -> str | None:
    """How error messages name the input: the path, a file object's name, or None for bytes."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else None


def _is_file_object(source: Any) -> bool:
    return hasattr(source, "read") and not isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview))


def _open_stream(source: Any, name: str | None) -> BinaryIO:
    """A seekable binary stream over `source`; unreadable paths and empty files are ImageErrors."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageError("empty input (0 bytes)", name)
        return io.BytesIO(data)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            stream = open(path, "rb")
        except IsADirectoryError:
            raise ImageError("is a directory, not an image file", name) from None
        except OSError as error:
            raise ImageError(f"cannot read the file ({error.strerror or error})", name) from None
        if os.fstat(stream.fileno()).st_size == 0:
            stream.close()
            raise ImageError("empty file (0 bytes)", name)
        return stream
    if _is_file_object(source):
        try:
            data = source.read()
        except Exception as error:
            raise ImageError(f"cannot read the file object ({error})", name) from None
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError("the file object is not opened in binary mode", name)
        if not data:
            raise ImageError("empty input (0 bytes)", name)
        return io.BytesIO(data)
    raise ImageError(f"unsupported image source of type {type(source).__name__}", None)


def _too_large_reason(size: tuple[int, int] | None) -> str:
    if size:
        stated = f"{size[0]} x {size[1]} = {size[0] * size[1]:,} pixels"
    else:  # Pillow refused in Image.open, before the size was available to us.
        stated = f"over {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels by its header"
    return (
        f"image too large to decode safely ({stated}; the limit is {MAX_IMAGE_PIXELS:,} pixels, "
        "a guard against decompression bombs)"
    )
