"""The smoke dataset: ten generated patterns and shapes, offline, deterministic per seed, learnable
in minutes on a CPU. For trying the whole pipeline (train, evaluate, export, serve) without CIFAR.

`make_smoke(samples_per_class, seed)` returns the images, labels and class names (`SMOKE_CLASSES`);
`load_smoke(config)` splits them into train/val/test `Splits`. Both are reached through `train.data`
(`data.make_smoke`, `data.load_splits(TrainConfig(dataset="smoke"))`):

    .venv/bin/python -c "from train import data; images, labels, names = data.make_smoke(2, 0); print(images.shape)"
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from train import splitting

if TYPE_CHECKING:
    from train.config import TrainConfig

#: The smoke classes, in output order. Each is a pattern or shape that stays in its class under a
#: horizontal flip (the training augmentation), drawn with random colours, position, size and noise.
SMOKE_CLASSES = (
    "horizontal_stripes",
    "vertical_stripes",
    "diagonal_stripes",
    "checkerboard",
    "dots",
    "circle",
    "ring",
    "square",
    "triangle",
    "cross",
)
SMOKE_SIZE = 32  # pixels per side, as CIFAR
_NOISE_STD_MAX = 18.0  # pixel-value noise, uniform per image in [0, max]; keeps the task from being trivial
_MIN_CHANNEL_CONTRAST = 90  # the smallest difference, per channel, between shape and background colour


# Its complexity is one small drawing function per class, defined inside so that all share one generator
# in one fixed order of draws (the same seed gives the same arrays); splitting it would add nothing.
def make_smoke(samples_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:  # noqa: C901
    """Generate the smoke dataset: (images uint8 (N, 32, 32, 3), labels int64 (N,), class names).

    N = samples_per_class * len(SMOKE_CLASSES), shuffled. The same seed gives the same arrays.
    """
    if samples_per_class < 1:
        raise splitting.DataError(f"smoke_samples_per_class must be >= 1, got {samples_per_class}")
    generator = np.random.default_rng(seed)
    count = samples_per_class
    rows, columns = np.mgrid[0:SMOKE_SIZE, 0:SMOKE_SIZE].astype(np.float32)
    rows, columns = rows[None], columns[None]  # broadcast against per-image parameters (n, 1, 1)

    def uniform(low, high):
        return generator.uniform(low, high, size=(count, 1, 1)).astype(np.float32)

    def stripes(angle_degrees):
        angle = np.deg2rad(angle_degrees)
        along = rows * np.cos(angle) + columns * np.sin(angle)
        period = uniform(4.0, 9.0)
        return np.mod(along + uniform(0.0, 9.0), period) < period * uniform(0.35, 0.65)

    def centre(margin):
        return uniform(margin, SMOKE_SIZE - 1 - margin), uniform(margin, SMOKE_SIZE - 1 - margin)

    def shape_offsets(margin):
        centre_row, centre_column = centre(margin)
        return rows - centre_row, columns - centre_column

    def horizontal_stripes():
        return stripes(uniform(-15, 15))

    def vertical_stripes():
        return stripes(uniform(75, 105))

    def diagonal_stripes():
        # Both diagonals belong to the class, so a flipped image stays in it.
        sign = np.where(generator.random((count, 1, 1)) < 0.5, -1.0, 1.0)
        return stripes(sign * uniform(35, 55))

    def checkerboard():
        cell = uniform(3.0, 6.5)
        return (np.floor((rows + uniform(0, 7)) / cell) + np.floor((columns + uniform(0, 7)) / cell)) % 2 == 1

    def dots():
        spacing = uniform(6.0, 9.0)
        row_phase = np.mod(rows + uniform(0, 9), spacing) - spacing / 2
        column_phase = np.mod(columns + uniform(0, 9), spacing) - spacing / 2
        return row_phase**2 + column_phase**2 < uniform(1.3, 2.2) ** 2

    def circle():
        dy, dx = shape_offsets(10)
        return dy**2 + dx**2 < uniform(5.0, 10.0) ** 2

    def ring():
        dy, dx = shape_offsets(11)
        outer = uniform(7.5, 11.5)
        distance = np.sqrt(dy**2 + dx**2)
        return (distance < outer) & (distance > outer - uniform(1.8, 3.2))

    def square():
        dy, dx = shape_offsets(10)
        return np.maximum(np.abs(dy), np.abs(dx)) < uniform(4.5, 9.5)

    def triangle():
        # Apex up, base down: symmetric about its vertical axis.
        dy, dx = shape_offsets(10)
        half_height = uniform(6.0, 10.0)
        from_apex = dy + half_height
        return (from_apex >= 0) & (dy <= half_height) & (np.abs(dx) <= from_apex * uniform(0.55, 0.9))

    def cross():
        dy, dx = shape_offsets(10)
        arm, thickness = uniform(6.0, 10.5), uniform(1.2, 2.6)
        return ((np.abs(dx) < thickness) & (np.abs(dy) < arm)) | ((np.abs(dy) < thickness) & (np.abs(dx) < arm))

    drawers = {
        "horizontal_stripes": horizontal_stripes,
        "vertical_stripes": vertical_stripes,
        "diagonal_stripes": diagonal_stripes,
        "checkerboard": checkerboard,
        "dots": dots,
        "circle": circle,
        "ring": ring,
        "square": square,
        "triangle": triangle,
        "cross": cross,
    }
    masks = np.concatenate([drawers[name]() for name in SMOKE_CLASSES])[..., None]
    labels = np.repeat(np.arange(len(SMOKE_CLASSES), dtype=np.int64), count)

    total = len(labels)
    background = generator.integers(0, 256, size=(total, 1, 1, 3))
    # The foreground differs from the background by at least the contrast in every channel (mod 256).
    offset = generator.integers(_MIN_CHANNEL_CONTRAST, 256 - _MIN_CHANNEL_CONTRAST + 1, size=(total, 1, 1, 3))
    foreground = (background + offset) % 256
    pixels = np.where(masks, foreground, background).astype(np.float32)
    noise_std = generator.uniform(0.0, _NOISE_STD_MAX, size=(total, 1, 1, 1)).astype(np.float32)
    pixels += generator.standard_normal(pixels.shape, dtype=np.float32) * noise_std
    images = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)

    order = generator.permutation(total)
    return images[order], labels[order], list(SMOKE_CLASSES)


def load_smoke(config: TrainConfig) -> splitting.Splits:
    """The smoke `Splits`: a stratified test split of the generated pool, then validation out of the rest."""
    images, labels, names = make_smoke(config.smoke_samples_per_class, config.seed)
    # The smoke set is one generated pool: the test split is carved from it like a single-tree folder.
    kept, test = splitting.stratified_split(labels, config.test_split, config.seed)
    if len(test) == 0:
        raise splitting.DataError("the smoke dataset needs test_split > 0 to have a test split")
    return splitting.split_train(
        config, images[kept], labels[kept], images[test], labels[test], labels=names, dataset="smoke"
    )
