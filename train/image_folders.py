"""A folder of your own images as training data: one sub-folder per class, either with train/ and
test/ sub-trees or as a single tree that is split (stratified) into train and test.

Any image Pillow opens counts (by extension); other files are skipped with a note. Images not at
the most common size are fitted into it whole and padded with neutral grey (`--image-fit pad`, the
default: a wide car keeps both ends) or centre-cropped to it (`--image-fit crop`, what the demo and
the camera do to a photo at inference). `load_folder(config, root)` returns the
`Splits`; it is reached through `train.data.load_splits` with `--dataset PATH`:

    .venv/bin/python train/run.py --dataset ./photos
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge import preprocess
from train import splitting

if TYPE_CHECKING:
    from train.config import TrainConfig


#: How the note names what happened to images of another size, by --image-fit.
FIT_WORDS = {"pad": "fitted whole (resized, then padded with grey)", "crop": "centre-cropped and resized"}


def _class_folders(root: Path) -> list[Path]:
    return sorted(
        (entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")),
        key=lambda entry: entry.name,
    )


def _image_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) anywhere under `folder`, by extension; hidden files are ignored."""
    from PIL import Image  # Pillow's own list of the extensions it can open.

    extensions = {extension.lower() for extension in Image.registered_extensions()}
    images, others = [], []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts):
            (images if path.suffix.lower() in extensions else others).append(path)
    return images, others


def _scan_tree(root: Path, class_names: list[str] | None = None) -> tuple[list[str], list[Path], list[int]]:
    """(class names, image paths, label per path) of one tree of class folders."""
    if not root.is_dir():
        raise splitting.DataError(f"{root} is not a folder")
    folders = _class_folders(root)
    names = [folder.name for folder in folders]
    if class_names is None:
        if not folders:
            raise splitting.DataError(
                f"{root} has no class sub-folders: expected one sub-folder of images per "
                "class (or train/ and test/ folders that hold them)"
            )
        if len(folders) == 1:
            raise splitting.DataError(f"{root} has a single class folder ({names[0]}): a classifier needs two or more")
        class_names = names
    else:
        unknown = sorted(set(names) - set(class_names))
        if unknown:
            raise splitting.DataError(
                f"{root} has class folders that the training folder lacks: {splitting.listing(unknown)}"
            )
    paths, labels, empty, skipped = [], [], [], []
    for folder in folders:
        images, others = _image_files(folder)
        if not images:
            empty.append(folder.name)
        paths += images
        labels += [class_names.index(folder.name)] * len(images)
        skipped += [str(other.relative_to(root)) for other in others]
    if not paths:
        raise splitting.DataError(f"{root} holds no image files in its class folders")
    if empty:
        raise splitting.DataError(f"{root}: {len(empty)} class folder(s) hold no images: {splitting.listing(empty)}")
    if skipped:
        print(
            f"note: skipped {len(skipped)} file(s) under {root} that are not images by their extension: "
            f"{splitting.listing(skipped)}",
            file=sys.stderr,
        )
    return class_names, paths, labels


def _read_images(paths: list[Path], root: Path, fit: str = "pad") -> np.ndarray:
    """Decode every image; images not at the most common size are fitted and padded (`fit` "pad")
    or centre-cropped (`fit` "crop") to it."""
    decoded, unreadable = [], []
    for path in paths:
        try:
            decoded.append(np.asarray(preprocess.load_image(path)))
        except preprocess.ImageError as error:
            unreadable.append(f"{path.relative_to(root)} ({error.reason})")
    if unreadable:
        unreadable.sort()
        raise splitting.DataError(
            f"{len(unreadable)} of {len(paths)} image files under {root} cannot be read: "
            f"{splitting.listing(unreadable)}. Remove or replace them."
        )
    sizes = collections.Counter(image.shape[:2] for image in decoded)
    (height, width), _ = sizes.most_common(1)[0]
    odd = [index for index, image in enumerate(decoded) if image.shape[:2] != (height, width)]
    if odd:
        examples = [
            f"{paths[index].relative_to(root)} ({decoded[index].shape[1]}x{decoded[index].shape[0]})" for index in odd
        ]
        print(
            f"note: {len(odd)} of {len(paths)} images under {root} are not {width}x{height} (the most common "
            f"size); they were {FIT_WORDS[fit]} to it: {splitting.listing(examples)}",
            file=sys.stderr,
        )
        fitter = preprocess.fit_and_pad if fit == "pad" else preprocess.prepare_image
        for index in odd:
            decoded[index] = fitter(decoded[index], (height, width))
    return np.stack(decoded).astype(np.uint8)


def load_folder(config: TrainConfig, root: Path) -> splitting.Splits:
    """The `Splits` of the image folder `root` (train/ and test/ sub-trees, or one tree of class folders)."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        names, train_paths, train_labels = _scan_tree(root / "train")
        _, test_paths, test_labels = _scan_tree(root / "test", class_names=names)
    else:
        names, paths, labels = _scan_tree(root)
        kept, held = splitting.stratified_split(np.asarray(labels), config.test_split, config.seed)
        if len(held) == 0:
            raise splitting.DataError(
                f"{root} is a single tree of class folders: it needs test_split > 0 to "
                "hold out a test split (or train/ and test/ sub-folders)"
            )
        train_paths, train_labels = [paths[index] for index in kept], [labels[index] for index in kept]
        test_paths, test_labels = [paths[index] for index in held], [labels[index] for index in held]
    # Decoded together so that train and test share the most common size.
    images = _read_images(train_paths + test_paths, root, config.image_fit)
    train_count = len(train_paths)
    return splitting.split_train(
        config,
        images[:train_count],
        np.asarray(train_labels, dtype=np.int64),
        images[train_count:],
        np.asarray(test_labels, dtype=np.int64),
        labels=names,
        dataset=str(root),
    )
