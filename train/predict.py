"""Classify image files with a run's Keras model: the top-k labels with probabilities per file.

    python train/predict.py photo.jpg other.png                  # newest run under runs/
    python train/predict.py photos/*.jpg --run runs/NAME --top-k 3 --json

Each file goes through the shared preprocessing (`edge.preprocess.prepare_image`,
at the input size in the run's metadata.json), so a photo becomes the same
numbers here as in the demo and on the Pi. A file that cannot be read is named
on stderr and the others are still classified.

Exit status: 0 when every file was classified, 1 when at least one file could
not be read (the rest were still printed), 2 when nothing could run (no run
directory, no model, bad options).
"""
from __future__ import annotations

if __package__ in (None, ""):  # Run as a script: make the repository root importable.
    import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge import artifacts, configuration
from edge.configuration import option

#: Where `--run` looks by default: the newest folder here that holds a model.keras.
RUNS_FOLDER = "runs"
MODEL_FILE = "model.keras"


@dataclasses.dataclass
class PredictOptions:
    """The flags of `python train/predict.py` (the image files are positional)."""

    run: str | None = option(None, "the run directory whose model.keras classifies (default: the newest "
                             "runs/* that has one)", "Prediction", metavar="DIR")
    top_k: int = option(5, "labels shown per image, most probable first", "Prediction")
    json: bool = option(False, "print one JSON document instead of text", "Prediction")
    batch_size: int = option(32, "images per model call", "Prediction")


@dataclasses.dataclass
class PredictConfig(PredictOptions):
    """Everything `run` needs: the flags and the image files."""

    images: list = option([], "image files to classify", "Prediction")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python train/predict.py", description=__doc__.split("\n")[0],
                                     epilog="exit status: 0 all classified, 1 some files unreadable, 2 nothing ran")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format Pillow reads)")
    config = configuration.parse_command_line(PredictConfig, argv, parser=parser, flags_from=PredictOptions)
    try:
        result = run(config)
    except (artifacts.ArtifactError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if config.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_text(result))
    for failure in result["errors"]:
        print(f"error: {failure['file']}: {failure['error']}", file=sys.stderr)
    return 1 if result["errors"] else 0


def newest_run(runs_folder: str | Path = RUNS_FOLDER) -> Path:
    """The most recently modified run directory that holds a model.keras."""
    candidates = sorted(Path(runs_folder).glob(f"*/{MODEL_FILE}"), key=lambda path: path.stat().st_mtime)
    if not candidates:
        raise FileNotFoundError(f"no run with a {MODEL_FILE} under {Path(runs_folder).resolve()}; train one "
                                "(python train/run.py --preset smoke) or pass --run DIR")
    return candidates[-1].parent


def run(config: PredictConfig, model: Any = None) -> dict:
    """Classify `config.images`; return {"run", "results": [{file, predictions}], "errors": [{file, error}]}.

    `model` (a loaded Keras model) skips loading `model.keras`, for callers that hold one already.
    """
    if config.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {config.top_k}")
    from edge import preprocess
    run_dir = Path(config.run) if config.run else newest_run()
    labels = artifacts.read_labels(run_dir / artifacts.LABELS_FILE)
    metadata = artifacts.read_json(run_dir / artifacts.METADATA_FILE)
    if not isinstance(metadata.get("input_size"), list) or len(metadata["input_size"]) != 2:
        raise artifacts.ArtifactError(f"{run_dir / artifacts.METADATA_FILE}: no input_size [height, width]")
    input_size = tuple(int(side) for side in metadata["input_size"])

    prepared, readable, errors = [], [], []
    for image_path in config.images:
        try:
            prepared.append(preprocess.prepare_image(image_path, input_size))
            readable.append(str(image_path))
        except (preprocess.ImageError, OSError) as error:
            reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or str(error)
            errors.append({"file": str(image_path), "error": reason})
    results = []
    if prepared:
        if model is None:
            from train import models
            model = models.load_model(run_dir / MODEL_FILE)
        probabilities = np.asarray(model.predict(np.stack(prepared), batch_size=config.batch_size, verbose=0))
        if probabilities.shape[1] != len(labels):
            raise artifacts.ArtifactError(f"{run_dir / MODEL_FILE} gives {probabilities.shape[1]} probabilities "
                                          f"but {run_dir / artifacts.LABELS_FILE} has {len(labels)} labels")
        for image_path, row in zip(readable, probabilities):
            order = np.argsort(-row, kind="stable")[:config.top_k]
            results.append({"file": image_path, "predictions": [
                {"label": labels[index], "probability": float(row[index])} for index in order]})
    return {"run": str(run_dir), "results": results, "errors": errors}


def format_text(result: dict) -> str:
    """The results for a terminal: the file, then one line per label, most probable first."""
    lines = []
    for entry in result["results"]:
        lines.append(entry["file"])
        width = max(len(prediction["label"]) for prediction in entry["predictions"])
        for rank, prediction in enumerate(entry["predictions"], start=1):
            lines.append(f"  {rank}. {prediction['label']:<{width}}  {prediction['probability']:7.2%}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
