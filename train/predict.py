"""Classify image files with a run's Keras model: the top-k labels with probabilities per file.

    python train/predict.py photo.jpg other.png                  # newest run under runs/
    python train/predict.py photos/*.jpg --run runs/NAME --top-k 3 --json
    python train/predict.py photo.jpg --explain where/           # + where/photo.png, where it looked

Each file goes through the shared preprocessing (`edge.preprocess.prepare_image`,
at the input size in the run's metadata.json), so a photo becomes the same
numbers here as in the demo and on the Pi. A file that cannot be read is named
on stderr and the others are still classified.

`--explain DIR` also writes, per file, DIR/STEM.png: the occlusion map of the
top class (`edge.occlusion`, the demo's "Where it looked", here computed with
the Keras model) drawn over the photo.

Exit status: 0 when every file was classified, 1 when at least one file could
not be read (the rest were still printed), 2 when nothing could run (no run
directory, no model, bad options).
"""

from __future__ import annotations

import dataclasses
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edge import occlusion, preprocess
from edge.common import artifacts, command, configuration, run_folder
from edge.common.configuration import option
from train import models

#: Where `--run` looks by default: the newest folder here that holds a model.keras.
RUNS_FOLDER = run_folder.RUNS_DIR


@dataclasses.dataclass
class PredictConfig:
    """Options of `python train/predict.py`: the image files (positional) and the flags."""

    images: list = option([], "image files to classify", "Prediction")
    run: str | None = option(
        None,
        "the run directory whose model.keras classifies (default: the newest runs/* that has one)",
        "Prediction",
        metavar="DIR",
    )
    top_k: int = option(5, "labels shown per image, most probable first", "Prediction")
    json: bool = option(False, "print one JSON document instead of text", "Prediction")
    batch_size: int = option(32, "images per model call", "Prediction")
    explain: str | None = option(
        None,
        "also write one PNG per image into DIR: where the model looked "
        "(an occlusion map of the top class over the photo)",
        "Prediction",
        metavar="DIR",
    )


def newest_run(runs_folder: str | Path = RUNS_FOLDER) -> Path:
    """The most recently modified run directory that holds a model.keras."""
    found = run_folder.newest_run(runs_folder, run_folder.MODEL_FILE)
    if found is None:
        raise run_folder.ModelFilesError(
            f"no run with a {run_folder.MODEL_FILE} under {Path(runs_folder).resolve()}; "
            "train one (python train/run.py --preset smoke) or pass --run DIR"
        )
    return found


def run(config: PredictConfig, model: Any = None) -> dict:
    """Classify `config.images`; return {"run", "results": [{file, predictions}], "errors": [{file, error}]}.

    With `config.explain`, each result also gets "explanation": {file, label, probability, max_drop, grid}.

    `model` (a loaded Keras model) skips loading `model.keras`, for callers that hold one already.
    """
    if config.top_k < 1:
        raise configuration.ConfigError(f"--top-k must be at least 1, got {config.top_k}")
    run_dir = Path(config.run) if config.run else newest_run()
    labels = artifacts.read_labels(run_dir / run_folder.LABELS_FILE)
    metadata = artifacts.read_json(run_dir / run_folder.METADATA_FILE)
    if not isinstance(metadata.get("input_size"), list) or len(metadata["input_size"]) != 2:
        raise artifacts.ArtifactError(f"{run_dir / run_folder.METADATA_FILE}: no input_size [height, width]")
    input_size = tuple(int(side) for side in metadata["input_size"])

    prepared, readable, failures = [], [], []
    for image_path in config.images:
        try:
            prepared.append(preprocess.prepare_image(image_path, input_size))
            readable.append(str(image_path))
        except (preprocess.ImageError, OSError) as error:
            reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or str(error)
            failures.append({"file": str(image_path), "error": reason})
    results = []
    if prepared:
        if model is None:
            model = models.load_model(run_dir / run_folder.MODEL_FILE)
        probabilities = np.asarray(model.predict(np.stack(prepared), batch_size=config.batch_size, verbose=0))
        if probabilities.shape[1] != len(labels):
            raise artifacts.ArtifactError(
                f"{run_dir / run_folder.MODEL_FILE} gives {probabilities.shape[1]} probabilities "
                f"but {run_dir / run_folder.LABELS_FILE} has {len(labels)} labels"
            )
        for image_path, row in zip(readable, probabilities):
            order = np.argsort(-row, kind="stable")[: config.top_k]
            results.append(
                {
                    "file": image_path,
                    "predictions": [{"label": labels[index], "probability": float(row[index])} for index in order],
                }
            )
        if config.explain:
            write_explanations(Path(config.explain), model, prepared, results, labels, config.batch_size)
    return {"run": str(run_dir), "results": results, "errors": failures}


def write_explanations(
    folder: Path, model: Any, prepared: list, results: list[dict], labels: list[str], batch_size: int
) -> None:
    """Write each image's occlusion overlay into `folder` (atomically) and add it to its result as "explanation"."""

    def predict_batch(batch: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(batch, batch_size=batch_size, verbose=0))

    used_names: set[str] = set()
    for pixels, entry in zip(prepared, results):
        target = labels.index(entry["predictions"][0]["label"])
        result = occlusion.occlusion_map(pixels, predict_batch, target=target)
        background = preprocess.prepare_image(entry["file"], occlusion.DISPLAY_SIZE)
        buffer = io.BytesIO()
        result.overlay(background).save(buffer, format="PNG")
        target_path = folder / _unique_name(Path(entry["file"]).stem, used_names)
        artifacts.write_atomic(target_path, buffer.getvalue())
        entry["explanation"] = {
            "file": str(target_path),
            "label": labels[target],
            "probability": result.base_probability,
            "max_drop": result.max_drop,
            "grid": [occlusion.GRID, occlusion.GRID],
        }


def _unique_name(stem: str, used: set[str]) -> str:
    """STEM.png, or STEM-2.png, STEM-3.png... when two inputs share a stem (a/x.jpg and b/x.png)."""
    name, number = f"{stem}.png", 1
    while name in used:
        number += 1
        name = f"{stem}-{number}.png"
    used.add(name)
    return name


def format_text(result: dict) -> str:
    """The results for a terminal: the file, then one line per label, most probable first."""
    lines = []
    for entry in result["results"]:
        lines.append(entry["file"])
        width = max(len(prediction["label"]) for prediction in entry["predictions"])
        for rank, prediction in enumerate(entry["predictions"], start=1):
            lines.append(f"  {rank}. {prediction['label']:<{width}}  {prediction['probability']:7.2%}")
        if "explanation" in entry:
            lines.append(f"  where it looked: {entry['explanation']['file']}")
    return "\n".join(lines)


COMMAND = command.Command(
    name="predict",
    prog="python train/predict.py",
    description=__doc__.split("\n")[0],
    epilog="exit status: 0 all classified, 1 some files unreadable, 2 nothing ran",
    config_class=PredictConfig,
    run=run,
    render=lambda config, result: format_text(result),
    exit_status=lambda config, result: command.report_failed_inputs(result["errors"]),
    json_output="json",
    positional=(command.Positional("images", "IMAGE", "image files (any format Pillow reads)"),),
)


main = command.entry_point(COMMAND)


if __name__ == "__main__":
    sys.exit(main())
