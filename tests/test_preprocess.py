"""Tests for edge/preprocess.py: every input kind becomes the same RGB pixels, bad input a typed error.

Images are generated in memory with Pillow in the real file formats; no fixtures on disk.
    pytest tests/test_preprocess.py -q
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from edge import preprocess

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)

# JPEG is lossy: a flat colour comes back within a few levels of what was saved.
JPEG_TOLERANCE = 12
# Lanczos rings a little at sharp edges; flat areas away from edges are exact, this
# bounds what a resize may add or lose on a channel.
RESIZE_TOLERANCE = 3


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header states `width` x `height` but which holds no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def close_to(pixel, expected, tolerance) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, expected))


# -- colour modes ----------------------------------------------------------------------


def test_rgba_composites_on_neutral_grey():
    image = Image.new("RGBA", (4, 1), (0, 0, 0, 0))
    image.putpixel((1, 0), (255, 0, 0, 255))  # opaque red
    image.putpixel((2, 0), (255, 255, 255, 128))  # half-transparent white
    result = preprocess.load_image(encode(image, "PNG"))
    assert result.mode == "RGB"
    assert result.getpixel((0, 0)) == preprocess.NEUTRAL_BACKGROUND
    assert result.getpixel((1, 0)) == RED
    expected_blend = tuple(
        round(background + (255 - background) * 128 / 255) for background in preprocess.NEUTRAL_BACKGROUND
    )
    assert close_to(result.getpixel((2, 0)), expected_blend, 1)


def test_la_composites_on_neutral_grey():
    image = Image.new("LA", (2, 1), (0, 0))
    image.putpixel((1, 0), (200, 255))
    result = preprocess.load_image(encode(image, "PNG"))
    assert result.getpixel((0, 0)) == preprocess.NEUTRAL_BACKGROUND
    assert result.getpixel((1, 0)) == (200, 200, 200)


def test_palette_with_and_without_transparency():
    palette_image = Image.new("P", (2, 1))
    palette_image.putpalette(list(RED) + list(BLUE) + [0, 0, 0] * 254)
    palette_image.putpixel((0, 0), 0)
    palette_image.putpixel((1, 0), 1)
    opaque = preprocess.load_image(encode(palette_image, "PNG"))
    assert [opaque.getpixel((x, 0)) for x in range(2)] == [RED, BLUE]
    transparent = preprocess.load_image(encode(palette_image, "PNG", transparency=0))
    assert [transparent.getpixel((x, 0)) for x in range(2)] == [preprocess.NEUTRAL_BACKGROUND, BLUE]


def test_grayscale_and_bilevel_become_equal_channels():
    gray = preprocess.load_image(encode(Image.new("L", (3, 3), 77), "PNG"))
    assert gray.getpixel((1, 1)) == (77, 77, 77)
    bilevel = preprocess.load_image(encode(Image.new("1", (3, 3), 1), "PNG"))
    assert bilevel.getpixel((1, 1)) == (255, 255, 255)


def test_16_bit_png_is_scaled_to_8_bit():
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # really stored as 16-bit
    result = np.asarray(preprocess.load_image(data))
    expected = np.rint(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    np.testing.assert_array_equal(result[..., 0], expected)
    np.testing.assert_array_equal(result[..., 0], result[..., 2])


def test_32_bit_integer_and_float_images():
    wide = Image.fromarray(np.array([[-1000, 0, 1000]], dtype=np.int32))  # mode "I", outside 16 bits
    assert wide.mode == "I"
    np.testing.assert_array_equal(np.asarray(preprocess.load_image(wide))[0, :, 0], [0, 128, 255])
    unit_float = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    np.testing.assert_array_equal(np.asarray(preprocess.load_image(unit_float))[0, :, 0], [0, 128, 255])


def test_cmyk_jpeg_becomes_rgb():
    cyan = Image.new("CMYK", (16, 16), (255, 0, 0, 0))
    result = preprocess.load_image(encode(cyan, "JPEG", quality=95))
    assert result.mode == "RGB"
    assert close_to(result.getpixel((8, 8)), (0, 255, 255), JPEG_TOLERANCE)


@pytest.mark.parametrize(
    "orientation, top, bottom, size",
    [
        (1, None, None, (40, 20)),  # as stored: red left, blue right
        (3, None, None, (40, 20)),  # 180 degrees: blue left, red right
        (6, RED, BLUE, (20, 40)),  # stored left column is the visual top row
        (8, BLUE, RED, (20, 40)),  # stored left column is the visual bottom row
    ],
)
def test_exif_orientation_is_applied(orientation, top, bottom, size):
    stored = Image.new("RGB", (40, 20), RED)
    stored.paste(BLUE, (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = orientation
    result = preprocess.load_image(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert result.size == size
    if orientation in (1, 3):
        left, right = (RED, BLUE) if orientation == 1 else (BLUE, RED)
        assert close_to(result.getpixel((5, 10)), left, JPEG_TOLERANCE)
        assert close_to(result.getpixel((35, 10)), right, JPEG_TOLERANCE)
    else:
        assert close_to(result.getpixel((10, 5)), top, JPEG_TOLERANCE)
        assert close_to(result.getpixel((10, 35)), bottom, JPEG_TOLERANCE)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (8, 8), colour) for colour in (RED, GREEN, BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    assert preprocess.load_image(data).getpixel((4, 4)) == RED


def test_multi_page_tiff_gives_first_page():
    pages = [Image.new("RGB", (8, 8), colour) for colour in (GREEN, BLUE)]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert preprocess.load_image(data).getpixel((4, 4)) == GREEN


# -- crop and resize -----------------------------------------------------------------


@pytest.mark.parametrize("width, height", [(90, 30), (30, 90)])
def test_centre_crop_keeps_the_middle(width, height):
    image = Image.new("RGB", (width, height), RED)
    middle = (30, 0, 60, 30) if width > height else (0, 30, 30, 60)
    image.paste(GREEN, middle)
    result = preprocess.prepare_image(image, 8)
    assert result.shape == (8, 8, 3) and result.dtype == np.uint8
    assert close_to(result[4, 4], GREEN, 0)
    assert np.abs(result.astype(int) - GREEN).max() <= RESIZE_TOLERANCE


def test_non_square_size_crops_to_its_aspect_ratio():
    result = preprocess.prepare_image(np.zeros((100, 100, 3), np.uint8), (10, 20))
    assert result.shape == (10, 20, 3)


def test_resize_is_antialiased():
    # A one-pixel checkerboard averages to mid grey; nearest-neighbour would alias to black or white.
    checkerboard = ((np.indices((256, 256)).sum(axis=0) % 2) * 255).astype(np.uint8)
    result = preprocess.prepare_image(checkerboard, 32)
    assert abs(float(result.mean()) - 127.5) < RESIZE_TOLERANCE
    assert result.std() < RESIZE_TOLERANCE


def test_jpeg_draft_decoding_matches_full_decoding():
    # Large JPEGs are decoded at reduced scale; the result must match decoding in full.
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    photo = Image.fromarray(blocks).resize((1600, 1200), Image.Resampling.NEAREST)
    data = encode(photo, "JPEG", quality=95)
    drafted = preprocess.prepare_image(data, 32).astype(int)
    full = preprocess.prepare_image(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), 32).astype(int)
    assert np.abs(drafted - full).mean() < RESIZE_TOLERANCE


def test_one_pixel_image():
    result = preprocess.prepare_image(encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"), 32)
    assert result.shape == (32, 32, 3)
    assert (result == (10, 20, 30)).all()


# -- source kinds -------------------------------------------------------------------------


def test_every_source_kind_gives_the_same_pixels(tmp_path):
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    image = Image.fromarray(array)
    path = tmp_path / "photo.png"
    image.save(path)
    data = path.read_bytes()
    with open(path, "rb") as stream:
        from_stream = preprocess.prepare_image(stream, 16)
    results = [
        preprocess.prepare_image(source, 16)
        for source in (array, image, data, bytearray(data), io.BytesIO(data), path, str(path))
    ]
    for result in results + [from_stream]:
        np.testing.assert_array_equal(result, results[0])


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 1), (6, 5, 3), (6, 5, 4)])
def test_numpy_shapes(shape):
    array = np.full(shape, 200, np.uint8)
    result = preprocess.load_image(array)
    assert result.mode == "RGB" and result.size == (5, 6)
    assert result.getpixel((0, 0)) == (200, 200, 200) or shape[-1] == 4


def test_rgba_array_is_composited():
    array = np.zeros((2, 2, 4), np.uint8)  # fully transparent black
    assert preprocess.load_image(array).getpixel((0, 0)) == preprocess.NEUTRAL_BACKGROUND


def test_inputs_are_not_modified():
    image = Image.new("RGBA", (4, 4), (1, 2, 3, 0))
    array = np.full((4, 4, 3), 9, np.uint8)
    preprocess.prepare_image(image, 2)
    preprocess.prepare_image(array, 2)
    assert image.mode == "RGBA" and image.getpixel((0, 0)) == (1, 2, 3, 0)
    assert (array == 9).all()


# -- errors ---------------------------------------------------------------------------------


def jpeg_bytes() -> bytes:
    rng = np.random.default_rng(2)
    return encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "JPEG")


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"this is plain text, not a picture", "not an image"),
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n", "not an image"),  # a signature and nothing else
    ],
)
def test_bad_bytes(data, reason):
    with pytest.raises(preprocess.ImageError, match=reason):
        preprocess.load_image(data)


def test_truncated_jpeg_names_the_file(tmp_path):
    path = tmp_path / "cut.jpg"
    data = jpeg_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(preprocess.ImageError, match="truncated") as caught:
        preprocess.prepare_image(path, 32)
    assert str(path) in str(caught.value) and caught.value.source_name == str(path)


def test_truncated_png():
    rng = np.random.default_rng(3)
    data = encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "PNG")
    with pytest.raises(preprocess.ImageError, match="truncated"):
        preprocess.load_image(data[: len(data) // 2])


def test_unreadable_paths(tmp_path):
    with pytest.raises(preprocess.ImageError, match="cannot read") as caught:
        preprocess.load_image(tmp_path / "missing.jpg")
    assert "missing.jpg" in str(caught.value)
    with pytest.raises(preprocess.ImageError, match="directory"):
        preprocess.load_image(tmp_path)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(preprocess.ImageError, match="empty file"):
        preprocess.load_image(empty)


def test_zero_sized_images():
    with pytest.raises(preprocess.ImageError, match="zero-sized"):
        preprocess.load_image(Image.new("RGB", (0, 5)))
    with pytest.raises(preprocess.ImageError, match="zero-sized"):
        preprocess.load_image(np.zeros((0, 5, 3), np.uint8))


@pytest.mark.parametrize("width, height", [(9000, 9000), (100_000, 100_000)])
def test_decompression_bomb_is_refused_from_the_header(width, height):
    # The file holds no pixel data: had the decoder run, the error would say "truncated".
    with pytest.raises(preprocess.ImageError, match="too large"):
        preprocess.load_image(png_header_only(width, height))


def test_pixel_limit_is_honoured(monkeypatch):
    monkeypatch.setattr(preprocess, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(preprocess.ImageError, match="limit is 100 pixels"):
        preprocess.load_image(encode(Image.new("RGB", (20, 20)), "PNG"))
    with pytest.raises(preprocess.ImageError, match="too large"):
        preprocess.load_image(np.zeros((20, 20, 3), np.uint8))
    assert preprocess.load_image(np.zeros((10, 10, 3), np.uint8)).size == (10, 10)


@pytest.mark.parametrize(
    "source, reason",
    [
        (np.zeros((4, 4, 3), np.float32), "uint8"),
        (np.zeros((4, 4, 2), np.uint8), "shaped"),
        (np.zeros((2, 4, 4, 3), np.uint8), "shaped"),
        (12345, "unsupported image source"),
        (io.StringIO("text"), "binary mode"),
    ],
)
def test_wrong_source_types(source, reason):
    with pytest.raises(preprocess.ImageError, match=reason):
        preprocess.load_image(source)


def test_bad_size_is_a_programming_error():
    with pytest.raises(ValueError, match="size"):
        preprocess.prepare_image(np.zeros((4, 4, 3), np.uint8), 0)
    with pytest.raises(ValueError, match="size"):
        preprocess.prepare_image(np.zeros((4, 4, 3), np.uint8), "big")


@pytest.mark.parametrize("format", ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"])
def test_corrupted_files_never_raise_pillow_errors(format):
    # Flip bytes and cut files at many places: the result is an RGB image or an ImageError, nothing else.
    rng = np.random.default_rng(4)
    data = encode(Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)), format)
    for trial in range(40):
        damaged = bytearray(data)
        for position in rng.integers(0, len(damaged), size=3):
            damaged[position] = int(rng.integers(0, 256))
        damaged = bytes(damaged[: int(rng.integers(1, len(damaged) + 1))])
        try:
            result = preprocess.prepare_image(damaged, 8)
        except preprocess.ImageError:
            continue
        assert result.shape == (8, 8, 3)


def test_fit_and_pad_keeps_the_whole_image_centred_on_grey():
    wide = np.zeros((10, 40, 3), np.uint8)
    wide[:, :5] = (255, 0, 0)  # The left end, which a centre crop would cut.
    fitted = preprocess.fit_and_pad(wide, 20)
    assert fitted.shape == (20, 20, 3) and fitted.dtype == np.uint8
    np.testing.assert_array_equal(fitted[0, 10], preprocess.NEUTRAL_BACKGROUND)  # Padding above.
    np.testing.assert_array_equal(fitted[-1, 10], preprocess.NEUTRAL_BACKGROUND)  # And below.
    assert fitted[10, 0, 0] > 200 and fitted[10, 0, 1] < 60  # The red end survives.
    np.testing.assert_array_equal(preprocess.fit_and_pad(np.full((8, 8, 3), 7, np.uint8), 8), 7)  # Square: no padding.


@pytest.mark.parametrize("shape", [(480, 640, 3), (640, 480, 3), (37, 101, 3), (1, 1, 3), (5, 300, 3)])
@pytest.mark.parametrize("size", [32, (24, 40), 224])
def test_a_camera_frame_takes_the_short_path_to_the_same_pixels(shape, size):
    """A uint8 RGB array (a camera frame) is cropped in numpy before any copy: the same array
    as the general path through a PIL image, exactly."""
    frame = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_array_equal(
        preprocess.prepare_image(frame, size), preprocess.prepare_image(Image.fromarray(frame), size)
    )


def test_the_short_path_keeps_the_pixel_cap(monkeypatch):
    monkeypatch.setattr(preprocess, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(preprocess.ImageError, match="too large|pixels"):
        preprocess.prepare_image(np.zeros((20, 20, 3), np.uint8), 8)
