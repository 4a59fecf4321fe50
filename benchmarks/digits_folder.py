"""Write a small real image folder: scikit-learn's handwritten digits as 32x32 RGB PNGs, one folder per class.

    python benchmarks/digits_folder.py --out /tmp/digits      # needs scikit-learn (not a project dependency)
    python train/run.py --dataset /tmp/digits --model cnn --epochs 12

The digits (UCI optdigits, 8x8 grey levels 0-16) ship inside scikit-learn, so this works offline.
They are scaled to 0-255, upsampled to 32x32 (bicubic) and stored as RGB, `--per-class` of each
digit in file order: the small-real-folder case of the from-scratch recipe (README, Training).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from edge.common import command
from edge.common.configuration import option

#: The digits' grey levels run from 0 to this value.
DIGITS_MAX_LEVEL = 16


@dataclasses.dataclass
class DigitsConfig:
    """Where to write the folder and how much of the data."""

    out: str = option("digits", "folder to create (one sub-folder per digit)")
    per_class: int = option(150, "images per digit (scikit-learn has about 180)")
    size: int = option(32, "side of the written images")


def run(config: DigitsConfig) -> dict:
    from sklearn.datasets import load_digits  # Only this script needs scikit-learn.

    digits = load_digits()
    counts: dict[int, int] = {}
    for image, label in zip(digits.images, digits.target):
        label = int(label)
        if counts.get(label, 0) >= config.per_class:
            continue
        counts[label] = counts.get(label, 0) + 1
        grey = np.clip(image / DIGITS_MAX_LEVEL * 255, 0, 255).astype(np.uint8)
        picture = Image.fromarray(grey).resize((config.size, config.size), Image.BICUBIC).convert("RGB")
        folder = Path(config.out) / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        picture.save(folder / f"{counts[label]:04d}.png")
    return {"out": config.out, "images": sum(counts.values()), "classes": len(counts)}


COMMAND = command.Command(
    name="digits_folder",
    prog="python benchmarks/digits_folder.py",
    description=__doc__.split("\n")[0],
    config_class=DigitsConfig,
    run=run,
    render=lambda config, folder: str(folder),
)


main = command.entry_point(COMMAND)


if __name__ == "__main__":
    sys.exit(main())
