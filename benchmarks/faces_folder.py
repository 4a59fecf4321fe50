"""Write a small folder of real photos: scikit-image's LFW subset, faces and non-faces, one folder per class.

    python benchmarks/faces_folder.py --out /tmp/faces      # needs scikit-image (the lite extra)
    python train/run.py --dataset /tmp/faces --model efficientnet_lite0 --test-split 0.25 --epochs 4
    python train/run.py --dataset /tmp/faces --model se_cnn --test-split 0.25 --epochs 30

`skimage.data.lfw_subset()` ships inside scikit-image (so this works offline): 100 face crops from the
Labeled Faces in the Wild photos and 100 crops of other photos, 25 x 25 grey levels. Nobody in this
project made them. They are written as RGB PNGs at their own size; the model upsamples them in the
graph. The transfer-on-real-features case of docs/quantization.md: an ImageNet backbone against a
network trained from scratch, on photos.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from edge.common import command
from edge.common.configuration import option

#: lfw_subset() returns the 100 faces first, then the 100 non-faces.
FACES = 100


@dataclasses.dataclass
class FacesConfig:
    """Where to write the folder."""

    out: str = option("faces", "folder to create (sub-folders face/ and not_face/)")


def run(config: FacesConfig) -> dict:
    from skimage.data import lfw_subset  # Only this script and train/photos.py need scikit-image.

    images = lfw_subset()
    for index, image in enumerate(images):
        label = "face" if index < FACES else "not_face"
        folder = Path(config.out) / label
        folder.mkdir(parents=True, exist_ok=True)
        grey = np.clip(np.asarray(image) * 255, 0, 255).astype(np.uint8)
        Image.fromarray(grey).convert("RGB").save(folder / f"{index:03d}.png")
    return {"out": config.out, "images": len(images), "classes": 2}


COMMAND = command.Command(
    name="faces_folder",
    prog="python benchmarks/faces_folder.py",
    description=__doc__.split("\n")[0],
    config_class=FacesConfig,
    run=run,
    render=lambda config, folder: str(folder),
)


main = command.entry_point(COMMAND)


if __name__ == "__main__":
    sys.exit(main())
