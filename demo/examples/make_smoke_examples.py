"""Write a few generated smoke-dataset images into demo/examples/smoke/ (run once; the PNGs are committed).

    python demo/examples/make_smoke_examples.py

The smoke model (`python train/run.py --preset smoke`) knows only generated
patterns, so the photos in demo/examples/ mean nothing to it; these files give
its page examples from its own classes. They are drawn with a seed that no
preset trains on, so they are new samples, not training images. Each is saved
at 4x with nearest-neighbour enlargement so that it is visible on the page;
edge.preprocess shrinks it back to 32 x 32. Needs train/data.py (numpy only),
never the Space: it gets the PNGs.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from train import data

EXAMPLE_SEED = 20_251_121  # not a training seed: the examples are unseen samples
CLASSES = ("checkerboard", "circle", "triangle", "vertical_stripes", "cross")
ENLARGEMENT = 4  # 32 px -> 128 px on the page
OUTPUT_FOLDER = Path(__file__).resolve().parent / "smoke"


def run(output_folder: Path = OUTPUT_FOLDER) -> list[Path]:
    images, labels, names = data.make_smoke(samples_per_class=1, seed=EXAMPLE_SEED)
    output_folder.mkdir(parents=True, exist_ok=True)
    written = []
    for image, label in zip(images, labels):
        name = names[int(label)]
        if name not in CLASSES:
            continue
        path = output_folder / f"{name}.png"
        enlarged = Image.fromarray(image).resize(
            (image.shape[1] * ENLARGEMENT, image.shape[0] * ENLARGEMENT), Image.Resampling.NEAREST
        )
        enlarged.save(path, optimize=True)
        written.append(path)
    return written


def main() -> int:
    for path in run():
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
