"""The run folder's contract: every file name a run holds, and the one reader of optional files.

    runs/NAME/
      config.json        the resolved training configuration     (train/run.py)
      model.keras        best checkpoint, the full Keras model    (train/callbacks.py)
      labels.txt         one class name per line, in output order
      metadata.json      input size, backbone, dataset, versions, what training ran on
      history.csv        per-epoch metrics of both stages
      state.json         completed stages and the best epoch, for --resume
      metrics.json       test-set metrics of the float model      (train/evaluate.py)
      quantization.json  every TFLite variant against the float model (train/check.py)
      report.md          the human summary                        (train/report.py)
      plots/*.png        curves, confusion matrix, sample predictions
      tflite/            model_<variant>.tflite, labels.txt, metadata.json (train/export.py)

The training side writes these names and the device side (the demo, the Space, the
camera) reads them; both import them from here, so a name is spelled once. Standard
library only.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from edge import artifacts

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

#: The TFLite variants the export writes, fastest-to-load last; int8 is the one every place serves.
VARIANTS = ("float32", "float16", "dynamic", "int8")
#: What the demo and the camera serve, and the float file they compare it with.
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
