"""The run folder's contract: every file name a run holds, and the one reader of optional files.

    runs/NAME/
      config.json        the resolved training configuration     (train/run.py)
      model.keras        best checkpoint, the full Keras model    (train/callbacks.py)
      labels.txt         one class name per line, in output order
      metadata.json      input size, backbone, dataset, versions, what training ran on,
                         best_epoch (counted from 1, as the console prints epochs)
      history.csv        per-epoch metrics of both stages
      state.json         completed stages and the best epoch (from 0, as history.csv), for --resume
      checkpoints/       after_<stage>.weights.h5, backup_<stage>/ for --resume  (train/run.py)
      logs/              TensorBoard event files, with --tensorboard            (train/run.py)
      metrics.json       test-set metrics of the float model      (train/evaluate.py)
      quantization.json  every TFLite variant against the float model (train/check.py)
      report.md          the human summary                        (train/report.py)
      plots/*.png        curves, confusion matrix, sample predictions
      tflite/            model_<variant>.tflite, labels.txt, metadata.json (train/export.py)
      reference_labels.json  the ImageNet starter only: its check views and float's answers (train/pretrained.py)

The training side writes these names and the device side (the demo, the Space, the
camera) reads them; both import them from here, so a name is spelled once. Standard
library only.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from edge.common import artifacts

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
LABELS_FILE = "labels.txt"
METADATA_FILE = "metadata.json"
HISTORY_FILE = "history.csv"
STATE_FILE = "state.json"
METRICS_FILE = "metrics.json"
QUANTIZATION_FILE = "quantization.json"
REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
TFLITE_DIR = "tflite"
#: The ImageNet starter run (train/pretrained.py): its dataset name in config.json, and the file
#: naming its check views and the float model's answers on them (its test split).
STARTER_DATASET = "imagenet-photos"
REFERENCE_LABELS_FILE = "reference_labels.json"

#: The TFLite variants the export always converts. int8 is full-integer, always: uint8 input,
#: integer kernels, no float op.
CONVERTED_VARIANTS = ("float32", "float16", "dynamic", "int8")
#: What the int8 search may ship beside them, under their own names, when plain int8 misses the
#: gate and the fallback passes it and runs faster than float32: int8 with a few tensors kept in
#: float ("int8_mixed"), and int16 activations with int8 weights ("16x8"). Never as model_int8.
FALLBACK_VARIANTS = ("int8_mixed", "16x8")
VARIANTS = CONVERTED_VARIANTS + FALLBACK_VARIANTS
#: What the demo and the camera serve when the check passes it, and the float file they compare it with.
SERVED_VARIANT = "int8"
REFERENCE_VARIANT = "float32"


def variant_file(variant: str) -> str:
    """The file name of one TFLite variant: model_<variant>.tflite."""
    return f"model_{variant}.tflite"


def variant_of(path: str | os.PathLike) -> str:
    """The variant a .tflite file holds by its name ("int8" for model_int8.tflite); else the file's stem."""
    stem = Path(path).stem
    return stem.removeprefix("model_")


INT8_MODEL_FILE = variant_file(SERVED_VARIANT)
FLOAT_MODEL_FILE = variant_file(REFERENCE_VARIANT)


class UncheckedModelError(artifacts.ArtifactError):
    """A model folder holds no record that the export's float-vs-int8 check ran on its files."""


def served_model(folder: str | os.PathLike) -> Path:
    """The .tflite file in `folder` to serve: the variant its metadata.json names under "served"
    (int8 when it passed the float-vs-int8 gate, else the fastest that did).

    The export writes metadata.json last, after the check, and removes it before it rewrites a model
    file; so a folder without it, or whose "served" names no file there, holds models nobody checked
    (a killed or failed export) and is refused with UncheckedModelError.
    """
    folder = Path(folder)
    metadata_path = folder / METADATA_FILE
    if not metadata_path.is_file():
        raise UncheckedModelError(_unchecked(folder, f"no {METADATA_FILE}: the export did not finish its check"))
    served = artifacts.read_json(metadata_path).get("served")
    if not isinstance(served, str) or served not in VARIANTS:
        raise UncheckedModelError(_unchecked(folder, f"{METADATA_FILE} names no served variant"))
    if not (folder / variant_file(served)).is_file():
        raise UncheckedModelError(_unchecked(folder, f"{METADATA_FILE} serves {variant_file(served)}, "
                                                     "which is not there"))
    return folder / variant_file(served)


def _unchecked(folder: Path, problem: str) -> str:
    """The one-line refusal of an unchecked model folder, with the command that fixes it."""
    if folder.name == TFLITE_DIR:  # A run's own folder: exporting the run again writes and checks it.
        fix = f"export the run again (python train/export.py --run {folder.parent})"
    else:  # A copy (models/ on a Pi, a Space bundle): it needs every file of an exported run's tflite/.
        fix = "copy all the files of an exported run's tflite/ here (python train/export.py --run RUN writes them)"
    return f"{folder}: {problem}; {fix}, or name a model file to serve it unchecked"


def read_optional_json(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object from `path`, or {} when the file does not exist (a malformed one still raises)."""
    path = Path(path)
    return artifacts.read_json(path) if path.exists() else {}


def read_history(path: str | os.PathLike) -> list[dict[str, str]]:
    """history.csv rows as dicts of strings ([] when the file does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))
