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
camera) reads them; both import them from here, so a name is spelled once. Which model
to serve when none is named, and which files go with it, is decided here too
(`find_default_model`, `find_model_files`), for the demo, the Space's deploy, the camera
and train/predict.py alike. Standard library only.
"""

from __future__ import annotations

import csv
import dataclasses
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
        raise UncheckedModelError(
            _unchecked(folder, f"{METADATA_FILE} serves {variant_file(served)}, which is not there")
        )
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


# -- discovery: which model to serve, and the files that go with it ---------------------------

#: Where runs are written, under a checkout (train/run.py's default output folder).
RUNS_DIR = "runs"
#: Folders under a checkout or bundle where copied model files are looked for, in order.
MODEL_FOLDERS = ("models", "edge/models")


class ModelFilesError(artifacts.ArtifactError):
    """No model to serve where one was looked for, or a file that must go with it is missing;
    the message names the folder or file and how to make it."""


def newest_run(runs_folder: str | os.PathLike, holding: str = MODEL_FILE) -> Path | None:
    """The run folder under `runs_folder` whose `holding` file (a path inside the run, such as
    model.keras or tflite/model_int8.tflite) was modified last; None when no run holds one."""
    found = sorted(Path(runs_folder).glob(f"*/{holding}"), key=lambda path: path.stat().st_mtime)
    # The file sits len(parts) levels below its run: model.keras directly, tflite/... one deeper.
    return found[-1].parents[len(Path(holding).parts) - 1] if found else None


def find_default_model(root: str | os.PathLike) -> Path:
    """The model to serve when none is named: copied ones first, else the newest exported run's.

    Looks for a folder holding model_int8.tflite: `root`/models/ (where a Pi owner copies the files
    and the Space bundle holds them), then `root`/edge/models/, then the newest `root`/runs/*/tflite/.
    In that folder it serves what metadata.json names (`served_model`); a folder without it, whose
    export did not finish the float-vs-int8 check, is refused (UncheckedModelError).
    """
    root = Path(root)
    for folder in MODEL_FOLDERS:
        if (root / folder / INT8_MODEL_FILE).is_file():
            return served_model(root / folder)
    exported = newest_run(root / RUNS_DIR, f"{TFLITE_DIR}/{INT8_MODEL_FILE}")
    if exported is not None:
        return served_model(exported / TFLITE_DIR)
    looked = ", ".join(str(root / folder / INT8_MODEL_FILE) for folder in MODEL_FOLDERS)
    raise ModelFilesError(
        f"no model given and none found ({looked}, {root / RUNS_DIR}/*/tflite/); train and export "
        "one (python train/run.py --preset smoke), copy a run's tflite/ files into models/, "
        "or name a model file"
    )


@dataclasses.dataclass(frozen=True)
class ModelFiles:
    """Where the files of one served model are. Optional ones are None when absent."""

    model: Path  # the model that answers (int8 by default)
    reference: Path | None  # the float32 model shown side by side
    labels: Path
    metadata: Path | None
    quantization: Path | None
    metrics: Path | None
    report: Path | None


def find_model_files(folder: str | os.PathLike | None = None, model: str | os.PathLike | None = None) -> ModelFiles:
    """Locate the files to serve from a run folder, its tflite/ folder, a Space's models/ folder, or one .tflite file.

    `folder` may be `runs/NAME` (uses `runs/NAME/tflite`), `runs/NAME/tflite`, or
    a flat folder holding everything (the Space's `models/`). With `model`, that
    file answers and a `model_float32.tflite` beside it (if it is another file)
    is shown side by side. quantization.json, metrics.json and report.md are
    looked for in the model's folder, then in its parent (the run).
    """
    if (folder is None) == (model is None):
        raise ModelFilesError("give exactly one of a model folder (--run) or a .tflite file (--model)")
    if model is not None:
        model_path = Path(model)
        if not model_path.is_file():
            raise ModelFilesError(f"{model_path}: model file not found")
        model_folder = model_path.parent
    else:
        folder = Path(folder)
        if not folder.is_dir():
            raise ModelFilesError(f"{folder}: folder not found")
        tflite_folder = folder / TFLITE_DIR
        model_folder = tflite_folder if tflite_folder.is_dir() else folder
        if not (model_folder / INT8_MODEL_FILE).is_file():  # The export always writes int8.
            raise ModelFilesError(
                f"{folder}: no {INT8_MODEL_FILE} in {model_folder} "
                "(export the run first: python train/export.py --run RUN)"
            )
        # What metadata.json says the check passed to serve; a folder the check has not finished is refused.
        model_path = served_model(model_folder)
    labels = model_folder / LABELS_FILE
    if not labels.is_file():
        raise ModelFilesError(f"{model_folder}: no {LABELS_FILE} next to {model_path.name}")
    reference = model_folder / FLOAT_MODEL_FILE
    same_file = reference.is_file() and reference.resolve() == model_path.resolve()
    return ModelFiles(
        model=model_path,
        reference=reference if reference.is_file() and not same_file else None,
        labels=labels,
        metadata=_first_file(model_folder, METADATA_FILE),
        quantization=_first_file(model_folder, QUANTIZATION_FILE),
        metrics=_first_file(model_folder, METRICS_FILE),
        report=_first_file(model_folder, REPORT_FILE),
    )


def _first_file(model_folder: Path, name: str) -> Path | None:
    """`name` in the model's folder, else in its parent (a run's tflite/ beside the run's own files)."""
    for folder in (model_folder, model_folder.parent):
        if (folder / name).is_file():
            return folder / name
    return None
