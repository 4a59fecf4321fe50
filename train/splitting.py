"""What every dataset loader shares: `DataError`, the `Splits` container, stratified splitting and sampling.

`stratified_split` carves the validation (and, for generated or single-tree data, the test) split
out of a labelled pool; `stratified_sample` picks the int8 calibration images. `split_train`
assembles a loader's arrays into `Splits`. Import these through `train.data`, which re-exports them:

    .venv/bin/python -c "from train import data; print(data.stratified_split([0, 0, 0, 1, 1, 1], 1 / 3, seed=0))"
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from edge.common.errors import UserError

if TYPE_CHECKING:
    from train.config import TrainConfig

_LISTED_PROBLEMS = 5  # files named in an error or note before "and N more"


class DataError(UserError):
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
    superclasses: list[str] | None = None
    """CIFAR-100 fine labels only: the 20 superclass names."""
    superclass_of: np.ndarray | None = None
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
        return (
            f"Splits(dataset={self.dataset!r}, classes={self.num_classes}, input_shape={self.input_shape}, "
            f"train={len(self.train_labels)}, val={len(self.val_labels)}, test={len(self.test_labels)})"
        )


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
    """`count` sorted indices in the classes' proportions, every class at least once if count allows.

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
        # Proportional shares rounded down, at least one per class, then corrected to `count` by
        # largest remainder (adding) or smallest remainder (taking away), within each class's size.
        exact = count * class_counts / class_counts.sum()
        quotas = np.maximum(np.floor(exact).astype(np.int64), 1)
        while quotas.sum() != count:
            remainder = exact - quotas
            if quotas.sum() < count:
                candidates = np.flatnonzero(quotas < class_counts)
                quotas[candidates[np.argmax(remainder[candidates])]] += 1
            else:
                candidates = np.flatnonzero(quotas > 1)
                quotas[candidates[np.argmin(remainder[candidates])]] -= 1
    chosen = [generator.permutation(np.flatnonzero(labels == label))[:quota] for label, quota in zip(classes, quotas)]
    return _sorted_indices(chosen)


def _sorted_indices(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(parts)).astype(np.int64)


def split_train(
    config: TrainConfig,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    labels: Sequence[str],
    dataset: str,
    superclasses: list[str] | None = None,
    superclass_of: np.ndarray | None = None,
) -> Splits:
    """Carve the stratified validation split out of the training set and assemble the `Splits`."""
    kept, held = stratified_split(train_labels, config.val_split, config.seed)
    return Splits(
        train_images=train_images[kept],
        train_labels=train_labels[kept].astype(np.int64),
        val_images=train_images[held],
        val_labels=train_labels[held].astype(np.int64),
        test_images=test_images,
        test_labels=np.asarray(test_labels, dtype=np.int64),
        labels=list(labels),
        superclasses=superclasses,
        superclass_of=superclass_of,
        dataset=dataset,
    )


def listing(items: list[str]) -> str:
    """The first few items, comma-separated, then "and N more": for error messages and notes."""
    shown = ", ".join(items[:_LISTED_PROBLEMS])
    return shown + (f" and {len(items) - _LISTED_PROBLEMS} more" if len(items) > _LISTED_PROBLEMS else "")
