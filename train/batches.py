"""Training batches: shuffled uint8 images with one-hot labels, optionally mixed (MixUp / CutMix).

A `keras.utils.PyDataset`, so it feeds every backend the same way. Mixing happens here, on
the host, because it needs the labels; the geometric augmentation runs inside the model.
Every batch has the same size (the remainder of an epoch is left out, and a different one each
epoch, since the order is reshuffled): a smaller last batch would make XLA compile the training
step a second time.
"""

from __future__ import annotations

import math

import keras
import numpy as np

#: Beta(alpha, alpha) concentration of the mixing weight (the MixUp and CutMix papers' CIFAR values).
MIXUP_ALPHA = 0.2
CUTMIX_ALPHA = 1.0


class MixedBatches(keras.utils.PyDataset):
    """Batches of `(images uint8 (B,H,W,3), labels float32 (B,classes))`, reshuffled every epoch."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        num_classes: int,
        batch_size: int,
        mix: str = "none",
        seed: int = 0,
    ):
        super().__init__()
        self.images, self.labels = images, labels
        self.num_classes, self.batch_size, self.mix = num_classes, batch_size, mix
        self.random = np.random.default_rng(seed)
        self.order = self.random.permutation(len(labels))

    def __len__(self) -> int:
        # At least one batch: a dataset smaller than one batch trains on all of it.
        return max(len(self.labels) // self.batch_size, 1)

    def __getitem__(self, index: int):
        chosen = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        images = self.images[chosen]
        targets = np.eye(self.num_classes, dtype="float32")[self.labels[chosen]]
        if self.mix == "mixup":
            return _mixup(images, targets, self.random)
        if self.mix == "cutmix":
            return _cutmix(images, targets, self.random)
        return images, targets

    def on_epoch_end(self) -> None:
        self.order = self.random.permutation(len(self.labels))


def _mixup(images, targets, random):
    weight = random.beta(MIXUP_ALPHA, MIXUP_ALPHA)
    partner = random.permutation(len(targets))
    # The model's input is uint8 by contract, so the blend is rounded back to whole values.
    blended = weight * images.astype("float32") + (1 - weight) * images[partner].astype("float32")
    return np.clip(np.rint(blended), 0, 255).astype("uint8"), weight * targets + (1 - weight) * targets[partner]


def _cutmix(images, targets, random):
    weight = random.beta(CUTMIX_ALPHA, CUTMIX_ALPHA)
    partner = random.permutation(len(targets))
    height, width = images.shape[1:3]
    cut_height, cut_width = int(height * math.sqrt(1 - weight)), int(width * math.sqrt(1 - weight))
    top, left = random.integers(0, height - cut_height + 1), random.integers(0, width - cut_width + 1)
    mixed = images.copy()
    mixed[:, top : top + cut_height, left : left + cut_width] = images[
        partner, top : top + cut_height, left : left + cut_width
    ]
    pasted = cut_height * cut_width / (height * width)  # The label weight is the area actually pasted.
    return mixed, (1 - pasted) * targets + pasted * targets[partner]
