"""The training data: CIFAR-100, CIFAR-10, the generated smoke set, or a folder of images.

`load_splits(config)` returns a `Splits` with uint8 NHWC images at their native
size and int64 labels, the class names in output order (read from the data:
CIFAR's meta file, the folder names, or `SMOKE_CLASSES`), and a stratified
validation split carved from the training set. The test split is kept for the
final report only.

This module is the data interface the rest of the project imports (`from train import data`).
It picks the loader; the loaders live in their own modules:

- `train/splitting.py`: `DataError`, `Splits`, `stratified_split`, `stratified_sample`.
- `train/cifar.py`: CIFAR-100 and CIFAR-10 (keras.datasets download, or `--data-dir`).
- `train/smoke.py`: the generated smoke set, `make_smoke` and `SMOKE_CLASSES`.
- `train/image_folders.py`: a folder of images, one sub-folder per class.

    .venv/bin/python -c "from train import data, config; print(data.load_splits(config.TrainConfig(dataset='smoke')))"
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edge.common import artifacts, run_folder
from train import cifar, image_folders, photos, smoke, splitting

if TYPE_CHECKING:
    from train.config import TrainConfig

# The public interface, re-exported so that callers need only `train.data`.
DataError = splitting.DataError
Splits = splitting.Splits
stratified_split = splitting.stratified_split
stratified_sample = splitting.stratified_sample
make_smoke = smoke.make_smoke
SMOKE_CLASSES = smoke.SMOKE_CLASSES
SMOKE_SIZE = smoke.SMOKE_SIZE

__all__ = [
    "DataError",
    "Splits",
    "load_splits",
    "stratified_split",
    "stratified_sample",
    "make_smoke",
    "SMOKE_CLASSES",
    "SMOKE_SIZE",
]


def load_splits(config: TrainConfig) -> Splits:
    """Load `config.dataset` (cifar100, cifar10, smoke, or a folder) into train/val/test `Splits`."""
    dataset = str(config.dataset)
    if config.label_mode == "coarse" and dataset != "cifar100":
        raise DataError(f"label_mode coarse (the 20 superclasses) exists for cifar100 only, not {dataset!r}")
    if dataset == "smoke":
        return smoke.load_smoke(config)
    if dataset == photos.PHOTOS_DATASET:  # The ImageNet starter (train/pretrained.py): its labels are its own.
        return photos.load_splits(config, artifacts.read_labels(Path(config.data_dir or ".") / run_folder.LABELS_FILE))
    if dataset in cifar.FORMATS:
        return cifar.load_cifar(config, cifar.FORMATS[dataset])
    if Path(dataset).expanduser().is_dir():
        return image_folders.load_folder(config, Path(dataset).expanduser())
    if "/" in dataset or "\\" in dataset or dataset.startswith((".", "~")):
        raise DataError(f"the image folder {dataset} does not exist (or is not a folder)")
    raise DataError(
        f"unknown dataset {dataset!r}: expected cifar100, cifar10, smoke or a folder of images "
        "with one sub-folder per class"
    )
