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
#: What the demo and the camera serve when metadata.json does not say, and the float file they
#: compare it with.
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


def served_model(folder: str | os.PathLike) -> Path:
    """The .tflite file in `folder` to serve: the variant its metadata.json names under "served"
    (int8 when it passed the float-vs-int8 gate, else the fastest that did), else model_int8.tflite."""
    folder = Path(folder)
    served = read_optional_json(folder / METADATA_FILE).get("served")
    if isinstance(served, str) and served in VARIANTS and (folder / variant_file(served)).is_file():
        return folder / variant_file(served)
    return folder / INT8_MODEL_FILE


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
