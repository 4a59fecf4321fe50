"""Where the model looked: an occlusion-sensitivity map of one prepared image.

Grey out one window of the image at a time and watch how much the top class's
probability falls (Zeiler and Fergus, "Visualizing and Understanding
Convolutional Networks", 2014). A large fall means the model relied on that
part of the picture; a fall near zero means it did not care.

    from edge import occlusion, preprocess, runtime
    classifier = runtime.Classifier("runs/NAME/tflite/model_int8.tflite")
    pixels = preprocess.prepare_image("photo.jpg", classifier.input_size)
    result = occlusion.occlusion_map(pixels, classifier.predict)
    background = preprocess.prepare_image("photo.jpg", occlusion.DISPLAY_SIZE)  # the same crop, sharper
    result.overlay(background).save("where.png")

The grid is fixed (`GRID` x `GRID` windows), so the cost is fixed: the
original image and its `GRID ** 2` occluded copies go through `predict` in
batches of at most `BATCH_SIZE`; with the defaults that is 50 images in one
call, one interpreter invocation for `edge.runtime.Classifier.predict`. Any
`predict(batch_uint8) -> probabilities (N, classes)` works, a Keras model's
included (train/predict.py --explain). The same inputs give the same map.

numpy and Pillow only (the device side: no TensorFlow, no matplotlib).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from PIL import Image

from edge.preprocess import NEUTRAL_BACKGROUND
from edge.runtime import MAX_BATCH

#: Windows per side. For a 32 x 32 input: 8 x 8-pixel windows every 4 pixels
#: (a quarter of the side, moved by half a window), so 7 x 7 windows tile the
#: image exactly with 50% overlap. A window covers 1/16 of the picture, enough
#: to hide a part of a CIFAR object (a wheel, a head); 49 occluded copies plus
#: the original fit one batch. Other input sizes scale the same way.
GRID = 7

#: A window's side as a fraction of the input's side.
WINDOW_FRACTION = 0.25

#: What an occluded window is filled with: the grey edge.preprocess composites
#: transparent pixels on, so "nothing here" looks the same to the model everywhere.
FILL = NEUTRAL_BACKGROUND

#: Images per predict call: the runtime's own chunk size, so one call is one invocation.
BATCH_SIZE = MAX_BATCH

#: Side in pixels of the rendered overlay (the demo shows it beside a 320-pixel-high photo).
DISPLAY_SIZE = 256

#: Opacity of the heat colours over the photo, from where greying changed nothing
#: to the largest fall: the photo stays readable where the model did not look,
#: and the hot parts stand out.
OVERLAY_ALPHA_RANGE = (0.35, 0.8)

#: Drops are coloured relative to the largest one, but never relative to less
#: than this (a probability): when nothing matters, the map stays dark rather
#: than showing noise at full brightness.
MINIMUM_COLOUR_SCALE = 0.01

#: The smallest input side that leaves every window at least two pixels.
MINIMUM_SIDE = 8

# A built-in heat colormap (anchors of matplotlib's "inferno", linearly interpolated):
# black where greying changes nothing, through purple and red, to yellow where it matters most.
_COLORMAP_ANCHORS = np.array([(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)], np.float32)

PredictFunction = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class OcclusionMap:
    """The result of `occlusion_map`.

    `drops[i, j]` is the probability of class `target` on the original image
    minus its probability with window (i, j) filled with grey: positive where
    the model relied on that window. Window (i, j) covers rows
    `row_starts[i]:row_starts[i] + window[0]` and the matching columns.
    """

    target: int
    base_probability: float
    drops: np.ndarray  # (GRID, GRID) float32
    input_size: tuple[int, int]  # (height, width) of the image the model saw
    window: tuple[int, int]  # (height, width) of one occluded window, in input pixels
    row_starts: tuple[int, ...]
    column_starts: tuple[int, ...]
    images: int  # images that went through predict (the original and the occluded copies)
    calls: int  # predict calls made

    @property
    def max_drop(self) -> float:
        """The largest fall of the target's probability (0 when no window lowered it)."""
        return max(0.0, float(self.drops.max()))

    def pixel_map(self) -> np.ndarray:
        """Per input pixel, the mean drop of the windows covering it: (height, width) float32.

        Windows overlap, so this is what lines the grid up with the picture.
        """
        total = np.zeros(self.input_size, np.float64)
        count = np.zeros(self.input_size, np.float64)
        window_height, window_width = self.window
        for i, top in enumerate(self.row_starts):
            for j, left in enumerate(self.column_starts):
                total[top : top + window_height, left : left + window_width] += self.drops[i, j]
                count[top : top + window_height, left : left + window_width] += 1
        return (total / np.maximum(count, 1)).astype(np.float32)

    def overlay(self, background: np.ndarray | Image.Image | None = None, size: int = DISPLAY_SIZE) -> Image.Image:
        """The map as a heat overlay on the photo: an RGB image `size` x `size` (or the background's aspect).

        `background` is the photo cropped as the model saw it, ideally sharper:
        `preprocess.prepare_image(photo, size)` gives exactly that crop. Without
        it, the drops are drawn alone on black.
        """
        height, width = self.input_size
        display = (size, max(1, round(size * width / height)))  # (height, width), the input's aspect
        heat = Image.fromarray(self.pixel_map(), mode="F").resize(display[::-1], Image.Resampling.BILINEAR)
        scale = max(self.max_drop, MINIMUM_COLOUR_SCALE)
        strength = np.clip(np.asarray(heat) / scale, 0.0, 1.0)
        colours = colormap(strength)
        if background is None:
            return Image.fromarray(colours, "RGB")
        photo = background if isinstance(background, Image.Image) else Image.fromarray(np.asarray(background, np.uint8))
        photo = np.asarray(photo.convert("RGB").resize(display[::-1], Image.Resampling.LANCZOS), np.float32)
        low, high = OVERLAY_ALPHA_RANGE
        alpha = (low + (high - low) * strength)[..., np.newaxis]
        blended = (1 - alpha) * photo + alpha * colours.astype(np.float32)
        return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), "RGB")


def colormap(values: np.ndarray) -> np.ndarray:
    """uint8 RGB colours (..., 3) for values in 0..1 (clipped), by linear interpolation of the anchors."""
    positions = np.clip(np.asarray(values, np.float32), 0.0, 1.0) * (len(_COLORMAP_ANCHORS) - 1)
    lower = np.minimum(np.floor(positions).astype(np.int64), len(_COLORMAP_ANCHORS) - 2)
    fraction = (positions - lower)[..., np.newaxis]
    colours = (1 - fraction) * _COLORMAP_ANCHORS[lower] + fraction * _COLORMAP_ANCHORS[lower + 1]
    return np.clip(np.rint(colours), 0, 255).astype(np.uint8)


def window_starts(side: int, grid: int = GRID) -> tuple[int, tuple[int, ...]]:
    """(window side, the `grid` window starts) along one axis of `side` pixels; the last window ends at the edge."""
    if side < MINIMUM_SIDE:
        raise ValueError(f"an occlusion map needs an input side of at least {MINIMUM_SIDE} pixels, got {side}")
    window = max(2, round(side * WINDOW_FRACTION))
    starts = np.rint(np.linspace(0, side - window, grid)).astype(int)
    return window, tuple(int(start) for start in starts)


def occluded_copies(image: np.ndarray, grid: int = GRID) -> tuple[np.ndarray, tuple[int, int], tuple, tuple]:
    """The `grid ** 2` copies of `image` with one window filled with `FILL` each, row by row.

    Returns (copies (grid ** 2, h, w, 3) uint8, window (h, w), row starts, column starts).
    """
    height, width = image.shape[:2]
    window_height, row_starts = window_starts(height, grid)
    window_width, column_starts = window_starts(width, grid)
    copies = np.repeat(image[np.newaxis], grid * grid, axis=0)
    fill = np.asarray(FILL, np.uint8)
    for i, top in enumerate(row_starts):
        for j, left in enumerate(column_starts):
            copies[i * grid + j, top : top + window_height, left : left + window_width] = fill
    return copies, (window_height, window_width), row_starts, column_starts


def occlusion_map(
    image: np.ndarray,
    predict: PredictFunction,
    target: int | None = None,
    grid: int = GRID,
    batch_size: int = BATCH_SIZE,
) -> OcclusionMap:
    """How much class `target`'s probability falls when each window of `image` is greyed out.

    `image` is the model's uint8 input (h, w, 3), from `preprocess.prepare_image`.
    `predict` maps a uint8 batch (N, h, w, 3) to probabilities (N, classes).
    `target` defaults to the top class of the original image. The original
    goes through `predict` in the same batch as its copies, so a model whose
    float kernels depend on the batch size compares like with like.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected the model's uint8 input shaped (h, w, 3), got {image.dtype} {image.shape}")
    if grid < 1 or batch_size < 1:
        raise ValueError(f"grid and batch_size must be positive, got {grid} and {batch_size}")
    copies, window, row_starts, column_starts = occluded_copies(image, grid)
    batch = np.concatenate([image[np.newaxis], copies])
    outputs = [
        np.asarray(predict(batch[start : start + batch_size]), np.float64) for start in range(0, len(batch), batch_size)
    ]
    probabilities = np.concatenate(outputs)
    if probabilities.ndim != 2 or len(probabilities) != len(batch):
        raise ValueError(
            f"predict returned shape {probabilities.shape} for {len(batch)} images; expected (images, classes)"
        )
    base = probabilities[0]
    if target is None:
        target = int(np.argmax(base))
    if not 0 <= target < len(base):
        raise ValueError(f"target class {target} is outside the model's {len(base)} classes")
    drops = (base[target] - probabilities[1:, target]).reshape(grid, grid).astype(np.float32)
    return OcclusionMap(
        target=int(target),
        base_probability=float(base[target]),
        drops=drops,
        input_size=(image.shape[0], image.shape[1]),
        window=window,
        row_starts=row_starts,
        column_starts=column_starts,
        images=len(batch),
        calls=len(outputs),
    )
