"""Real photos that any machine can have offline: the calibration and check images of the ImageNet starter.

The photos ship inside PyPI packages the `lite` extra installs (nobody in this project made them):

- calibration: scikit-image's data photos (`skimage.data`): astronaut, chelsea (a cat), coffee,
  the Hubble deep field, immunohistochemistry, retina, and the grey camera, coins, moon, page,
  brick, grass, gravel and clock photos (grey ones converted to RGB);
- check: other photos, never calibrated on: scikit-image's rocket and both stereo motorcycle views,
  scikit-learn's two sample photos (china, flower), matplotlib's Grace Hopper portrait, and
  scikit-image's horse silhouette and text page as two harder, non-photographic cases.

A photo gives many views: calibration takes random crops (scale, aspect, position, mirror), the way
ImageNet training samples them; the check takes fixed crops (the whole centre square, four corners and
the centre at smaller scales, each mirrored), so every run checks the same images. Each view goes
through `edge.preprocess.prepare_image`, the one preprocessing of the demo and the camera.

    .venv/bin/python -c "from train import photos; print(photos.check_views(224)[0].shape)"
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge import preprocess
from edge.common import artifacts, run_folder
from train import splitting
from train.config import STARTER_DATASET
from train.splitting import DataError

if TYPE_CHECKING:
    from train.config import TrainConfig

#: Calibration photos: scikit-image's `skimage.data` functions.
CALIBRATION_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
    "coins",
    "moon",
    "page",
    "brick",
    "grass",
    "gravel",
    "clock",
)
#: Check photos, as (source, name): none of them is a calibration photo.
CHECK_PHOTOS = (
    ("skimage", "rocket"),
    ("skimage", "motorcycle_left"),
    ("skimage", "motorcycle_right"),
    ("sklearn", "china.jpg"),
    ("sklearn", "flower.jpg"),
    ("matplotlib", "grace_hopper.jpg"),
    ("skimage", "horse"),
    ("skimage", "text"),
)
#: Calibration crops: the side of the square crop as a fraction of the photo's short side, and the
#: aspect ratios drawn, as in ImageNet's random-resized-crop training (scale 8-100% of the area).
CALIBRATION_CROP_SCALE = (0.3, 1.0)
CALIBRATION_ASPECT = (3 / 4, 4 / 3)
#: Check crops: the whole centre, then corners and centre at these fractions of the short side.
CHECK_CROP_SCALES = (0.8, 0.6)
#: The package each source needs, for the error when it is missing.
SOURCE_PACKAGES = {"skimage": "scikit-image", "sklearn": "scikit-learn", "matplotlib": "matplotlib"}


@dataclasses.dataclass(frozen=True)
class View:
    """Where one check image comes from: the photo and the crop (fractions of its sides)."""

    photo: str
    top: float
    left: float
    side: float
    mirrored: bool


def load_photo(source: str, name: str) -> np.ndarray:
    """One photo as uint8 RGB (H, W, 3); a DataError naming the package when it is not installed."""
    try:
        if source == "skimage":
            module = importlib.import_module("skimage.data")
            if name.startswith("motorcycle_"):
                left, right, _ = module.stereo_motorcycle()
                image = left if name == "motorcycle_left" else right
            else:
                image = getattr(module, name)()
        elif source == "sklearn":
            image = importlib.import_module("sklearn.datasets").load_sample_image(name)
        elif source == "matplotlib":
            cbook = importlib.import_module("matplotlib.cbook")
            with cbook.get_sample_data(name) as stream:
                image = np.asarray(_open(stream))
        else:
            raise DataError(f"unknown photo source {source!r}")
    except ImportError:
        raise DataError(f'the {source} photos need {SOURCE_PACKAGES[source]}: pip install -e ".[lite]"') from None
    return _as_rgb(np.asarray(image))


def _open(stream):
    from PIL import Image  # Pillow is a core dependency; imported here to keep the module's imports light.

    return Image.open(stream).convert("RGB")


def _as_rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.dtype != np.uint8:
        image = np.clip(image * (255.0 if image.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def _crop(image: np.ndarray, top: float, left: float, height: float, width: float, mirrored: bool) -> np.ndarray:
    rows, columns = image.shape[:2]
    y, x = int(round(top * rows)), int(round(left * columns))
    h, w = max(1, int(round(height * rows))), max(1, int(round(width * columns)))
    crop = image[y : y + h, x : x + w]
    return crop[:, ::-1] if mirrored else crop


def calibration_views(size: int, count: int, seed: int = 0) -> np.ndarray:
    """`count` random crops of the calibration photos, prepared at `size` x `size` (uint8)."""
    generator = np.random.default_rng(seed)
    photos = [load_photo("skimage", name) for name in CALIBRATION_PHOTOS]
    views = []
    for index in range(count):
        image = photos[index % len(photos)]
        rows, columns = image.shape[:2]
        short = min(rows, columns)
        side = generator.uniform(*CALIBRATION_CROP_SCALE) * short
        aspect = np.exp(generator.uniform(*np.log(CALIBRATION_ASPECT)))
        height, width = min(rows, side / np.sqrt(aspect)), min(columns, side * np.sqrt(aspect))
        top, left = generator.uniform(0, rows - height), generator.uniform(0, columns - width)
        crop = _crop(image, top / rows, left / columns, height / rows, width / columns, bool(generator.integers(2)))
        views.append(preprocess.prepare_image(crop, size))
    return np.stack(views)


def check_layout(photo: np.ndarray) -> list[tuple[float, float, float, float]]:
    """The fixed crops of one check photo: (top, left, height, width) as fractions of its sides."""
    rows, columns = photo.shape[:2]
    short = min(rows, columns)
    crops = [((rows - short) / 2 / rows, (columns - short) / 2 / columns, short / rows, short / columns)]
    for scale in CHECK_CROP_SCALES:
        height, width = scale * short / rows, scale * short / columns
        for top, left in (
            (0, 0),
            (0, 1 - width),
            (1 - height, 0),
            (1 - height, 1 - width),
            ((1 - height) / 2, (1 - width) / 2),
        ):
            crops.append((top, left, height, width))
    return crops


def check_views(size: int) -> tuple[np.ndarray, list[View]]:
    """Every fixed view of the check photos at `size` x `size` (uint8), and where each comes from."""
    images, views = [], []
    for source, name in CHECK_PHOTOS:
        photo = load_photo(source, name)
        for top, left, height, width in check_layout(photo):
            for mirrored in (False, True):
                images.append(preprocess.prepare_image(_crop(photo, top, left, height, width, mirrored), size))
                views.append(View(name, round(top, 3), round(left, 3), round(height, 3), mirrored))
    return np.stack(images), views


def photo_sources() -> dict[str, list[str]]:
    """What the calibration and check sets are made of, for metadata.json and the report."""
    return {
        "calibration": [f"skimage.data.{name}" for name in CALIBRATION_PHOTOS],
        "check": [f"{source}:{name}" for source, name in CHECK_PHOTOS],
    }


# ---------------------------------------------------------------------------------------------
# The starter run's splits: calibration views as "train", the check views float is sure of as "test"

#: The dataset name of the ImageNet starter run (train/pretrained.py) in config.json.
PHOTOS_DATASET = STARTER_DATASET
#: In the starter's run folder: which check views form its test split, and their labels.
REFERENCE_FILE = run_folder.REFERENCE_LABELS_FILE
#: A check view joins the gated test split when the float model gives its top class at least this
#: probability: the photos carry no ImageNet labels, so the float model's sure answers stand in
#: for them, and int8 must keep those answers (the gate); every view is measured besides.
CONFIDENT_PROBABILITY = 0.5


def load_splits(
    config: TrainConfig, class_names: list[str], check_images: np.ndarray | None = None
) -> splitting.Splits:
    """The starter's `Splits`: `config.calibration_samples` calibration views (train, labels all 0:
    they only calibrate), no validation, and the test views named in `<config.data_dir>/reference_labels.json`.

    `check_images`, the output of `check_views` when the caller has it (train/pretrained.py), saves
    preparing the check views again."""
    if not config.data_dir:
        raise DataError(
            f"the {PHOTOS_DATASET} dataset is a starter run's own: check it with "
            "--run runs/NAME, which holds reference_labels.json"
        )
    reference = artifacts.read_json(Path(config.data_dir) / REFERENCE_FILE)
    size = config.resolved_image_size
    train_images = calibration_views(size, config.calibration_samples, config.seed)
    if check_images is None:
        check_images, _ = check_views(size)
    indices = np.asarray(reference["test_views"], dtype=np.int64)
    if len(indices) and (indices.min() < 0 or indices.max() >= len(check_images)):
        raise DataError(f"{REFERENCE_FILE}: view indices outside the {len(check_images)} check views")
    empty = np.zeros((0, size, size, 3), np.uint8)
    return splitting.Splits(
        train_images=train_images,
        train_labels=np.zeros(len(train_images), np.int64),
        val_images=empty,
        val_labels=np.zeros(0, np.int64),
        test_images=check_images[indices],
        test_labels=np.asarray(reference["test_labels"], dtype=np.int64),
        labels=list(class_names),
        dataset=PHOTOS_DATASET,
    )
