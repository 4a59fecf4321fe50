"""The training data: CIFAR-100, CIFAR-10, the generated smoke set, or a folder of images.

`load_splits(config)` returns a `Splits` with uint8 NHWC images at their native
size and int64 labels, the class names in output order (read from the data:
CIFAR's meta file, the folder names, or `SMOKE_CLASSES`), and a stratified
validation split carved from the training set. The test split is kept for the
final report only.

    .venv/bin/python -c "from train import data, config; print(data.load_splits(config.TrainConfig(dataset='smoke')))"
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np


class DataError(ValueError):
    """The data cannot be loaded; the message names the file or folder and the problem."""


@dataclasses.dataclass
class Splits:
    """Train / validation / test arrays: uint8 images (N, H, W, 3) and int64 labels (N,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    labels: list[str]
    """Class names in the model's output order (what `labels.txt` holds)."""
    superclasses: Optional[list[str]] = None
    """CIFAR-100 fine labels only: the 20 superclass names."""
    superclass_of: Optional[np.ndarray] = None
    """CIFAR-100 fine labels only: int64 array, fine class index -> superclass index."""
    dataset: str = ""

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(H, W, 3): the native image size, which the model takes as input."""
        return tuple(int(side) for side in self.train_images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"Splits(dataset={self.dataset!r}, classes={self.num_classes}, input_shape={self.input_shape}, "
                f"train={len(self.train_labels)}, val={len(self.val_labels)}, test={len(self.test_labels)})")


# ---------------------------------------------------------------------------------------------
# Stratified splitting and sampling


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out about `fraction` of every class: returns sorted (kept, held) index arrays.

    Each class holds out round(count * fraction) of its examples, but a class with
    two or more examples keeps at least one on each side whenever fraction > 0
    (a class with one example stays in `kept`). Deterministic for a given seed.
    """
    labels = np.asarray(labels).reshape(-1)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    generator = np.random.default_rng(seed)
    kept, held = [], []
    for label in np.unique(labels):
        indices = generator.permutation(np.flatnonzero(labels == label))
        count = len(indices)
        held_count = int(np.floor(count * fraction + 0.5))
        if fraction > 0 and count >= 2:
            held_count = min(max(held_count, 1), count - 1)
        held.append(indices[:held_count])
        kept.append(indices[held_count:])
    return _sorted_indices(kept), _sorted_indices(held)


def stratified_sample(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """About `count` indices in the classes' proportions (sorted), every class at least once if count allows.

    Used for int8 calibration. Returns every index when count >= len(labels).
    """
    labels = np.asarray(labels).reshape(-1)
    if count >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    generator = np.random.default_rng(seed)
    classes, class_counts = np.unique(labels, return_counts=True)
    if count < len(classes):
        # Too few to cover every class: one example from each of `count` random classes.
        quotas = np.zeros(len(classes), dtype=np.int64)
        quotas[generator.choice(len(classes), size=count, replace=False)] = 1
    else:
        # One per class, then the rest in proportion to what each class has left (largest remainder).
        spare = class_counts - 1
        remaining = count - len(classes)
        exact = remaining * spare / spare.sum()
        quotas = 1 + np.floor(exact).astype(np.int64)
        shortfall = count - int(quotas.sum())
        order = np.argsort(-(exact - np.floor(exact)), kind="stable")
        quotas[order[:shortfall]] += 1
    chosen = [generator.permutation(np.flatnonzero(labels == label))[:quota]
              for label, quota in zip(classes, quotas)]
    return _sorted_indices(chosen)


def _sorted_indices(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(parts)).astype(np.int64)


def _split_train(config, train_images, train_labels, test_images, test_labels, labels, dataset,
                 superclasses=None, superclass_of=None) -> Splits:
    """Carve the stratified validation split out of the training set and assemble the `Splits`."""
    kept, held = stratified_split(train_labels, config.val_split, config.seed)
    return Splits(train_images=train_images[kept], train_labels=train_labels[kept].astype(np.int64),
                  val_images=train_images[held], val_labels=train_labels[held].astype(np.int64),
                  test_images=test_images, test_labels=np.asarray(test_labels, dtype=np.int64),
                  labels=list(labels), superclasses=superclasses, superclass_of=superclass_of,
                  dataset=dataset)


# ---------------------------------------------------------------------------------------------
# The smoke dataset: generated, offline, deterministic per seed, learnable in minutes on a CPU.

#: The smoke classes, in output order. Each is a pattern or shape that stays in its class under a
#: horizontal flip (the training augmentation), drawn with random colours, position, size and noise.
SMOKE_CLASSES = ("horizontal_stripes", "vertical_stripes", "diagonal_stripes", "checkerboard", "dots",
                 "circle", "ring", "square", "triangle", "cross")
SMOKE_SIZE = 32  # pixels per side, as CIFAR
_NOISE_STD_MAX = 18.0  # pixel-value noise, uniform per image in [0, max]; keeps the task from being trivial
_MIN_CHANNEL_CONTRAST = 90  # the smallest difference, per channel, between shape and background colour


def make_smoke(samples_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Generate the smoke dataset: (images uint8 (N, 32, 32, 3), labels int64 (N,), class names).

    N = samples_per_class * len(SMOKE_CLASSES), shuffled. The same seed gives the same arrays.
    """
    if samples_per_class < 1:
        raise DataError(f"smoke_samples_per_class must be >= 1, got {samples_per_class}")
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
        return row_phase ** 2 + column_phase ** 2 < uniform(1.3, 2.2) ** 2

    def circle():
        dy, dx = shape_offsets(10)
        return dy ** 2 + dx ** 2 < uniform(5.0, 10.0) ** 2

    def ring():
        dy, dx = shape_offsets(11)
        outer = uniform(7.5, 11.5)
        distance = np.sqrt(dy ** 2 + dx ** 2)
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
        return (((np.abs(dx) < thickness) & (np.abs(dy) < arm))
                | ((np.abs(dy) < thickness) & (np.abs(dx) < arm)))

    drawers = {"horizontal_stripes": horizontal_stripes, "vertical_stripes": vertical_stripes,
               "diagonal_stripes": diagonal_stripes, "checkerboard": checkerboard, "dots": dots,
               "circle": circle, "ring": ring, "square": square, "triangle": triangle, "cross": cross}
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


def _load_smoke(config) -> Splits:
    images, labels, names = make_smoke(config.smoke_samples_per_class, config.seed)
    # The smoke set is one generated pool: the test split is carved from it like a single-tree folder.
    kept, test = stratified_split(labels, config.test_split, config.seed)
    if len(test) == 0:
        raise DataError("the smoke dataset needs test_split > 0 to have a test split")
    return _split_train(config, images[kept], labels[kept], images[test], labels[test], names, "smoke")


# ---------------------------------------------------------------------------------------------
# Dispatch


def load_splits(config) -> Splits:
    """Load `config.dataset` (cifar100, cifar10, smoke, or a folder) into train/val/test `Splits`."""
    dataset = str(config.dataset)
    if config.label_mode == "coarse" and dataset != "cifar100":
        raise DataError(f"label_mode coarse (the 20 superclasses) exists for cifar100 only, not {dataset!r}")
    if dataset == "smoke":
        return _load_smoke(config)
    raise DataError(f"unknown dataset {dataset!r}: expected cifar100, cifar10, smoke or a folder of images "
                    "with one sub-folder per class")
