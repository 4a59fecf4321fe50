"""Evaluate a finished run on its test split: metrics.json, plots/*.png and report.md.

    python train/evaluate.py --run runs/NAME                 # predict again, rewrite everything
    python train/evaluate.py --run runs/NAME --report-only   # rewrite report.md from the files alone

`train/run.py` calls `evaluate_run` at the end of training. The model is the
float Keras model (`model.keras`); the int8 TFLite numbers come from
quantization.json, written by `train/export.py`; report.md is rendered by
train/report.py, which leaves the float-vs-int8 section to the export when it has
not run yet. Metric definitions: train/metrics.py.
"""

from __future__ import annotations

import dataclasses
import datetime
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edge.common import artifacts, command, records, run_folder
from edge.common.configuration import option
from edge.common.errors import UserError
from edge.common.records import TOP_K
from train import loaders, report
from train import metrics as metric_functions
from train.config import TrainConfig
from train.report import PLOTS

#: Images per `model.predict` call when the run's config does not say.
DEFAULT_BATCH_SIZE = 128
CONFUSED_PAIRS = 10


class EvaluationError(UserError):
    """The run cannot be evaluated (no such folder, an empty test split); the message says which."""


@dataclasses.dataclass
class EvaluateConfig:
    """Options of `python train/evaluate.py`."""

    run: str = option("", "the run directory (holds model.keras, config.json, labels.txt)", "Evaluation", metavar="DIR")
    batch_size: int | None = option(None, "images per prediction call (default: the run's batch size)", "Evaluation")
    report_only: bool = option(
        False,
        "rewrite report.md from metrics.json, metadata.json and quantization.json without loading the model",
        "Evaluation",
    )


def _summary(config: EvaluateConfig, result: dict) -> str:
    return (
        f"{Path(config.run) / run_folder.REPORT_FILE}: test top-1 {result['top1']:.2%}, "
        f"top-5 {result[f'top{TOP_K}']:.2%}, loss {result['loss']:.3f}"
    )


def run(config: EvaluateConfig) -> dict:
    """Evaluate (or only re-render the report) as `config` says; return the metrics."""
    run_dir = Path(config.run)
    if not run_dir.is_dir():
        raise EvaluationError(f"{run_dir}: no such run directory")
    if config.report_only:
        metrics = records.read(records.Metrics, run_dir / run_folder.METRICS_FILE)
        report.write_report(run_dir, metrics)
        return metrics.to_dict()
    return evaluate_run(run_dir, batch_size=config.batch_size)


def evaluate_run(
    run_dir: str | Path,
    model: Any = None,
    splits: Any = None,
    batch_size: int | None = None,
    probabilities: np.ndarray | None = None,
) -> dict:
    """Predict the test split, write metrics.json, the plots and report.md; return the metrics.

    `model` (a Keras model) and `splits` (train.data.Splits) are loaded from the run directory
    when not given (train/loaders.py: model.keras, and the splits of config.json).
    `probabilities`, the model's output on the test split when the caller has it already, saves
    predicting it again.
    """
    run_dir = Path(run_dir)
    labels = artifacts.read_labels(run_dir / run_folder.LABELS_FILE)
    # config.json is read once, and only when something here needs it: the splits, or the batch size.
    needs_config = splits is None or (probabilities is None and not batch_size)
    run_config = _run_config(run_dir, required=splits is None) if needs_config else None
    if splits is None:
        splits = loaders.load_splits(run_dir, run_config)
    if list(splits.labels) != labels:
        raise artifacts.ArtifactError(
            f"{run_dir / run_folder.LABELS_FILE} does not match the data's class names "
            f"({len(labels)} vs {len(splits.labels)} classes, or another order)"
        )
    if len(splits.test_labels) == 0:
        raise EvaluationError(f"{run_dir}: the test split is empty; nothing to evaluate")
    if probabilities is None:
        if model is None:
            model = loaders.load_model(run_dir)
        batch_size = batch_size or int((run_config.batch_size if run_config else None) or DEFAULT_BATCH_SIZE)
        probabilities = model.predict(splits.test_images, batch_size=batch_size, verbose=0)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    true = np.asarray(splits.test_labels, dtype=np.int64)
    superclass_of, superclasses = _superclasses(splits, len(labels))
    result = metric_functions.classification_metrics(
        true, probabilities, labels, superclass_of, superclasses, top_k=TOP_K, pairs=CONFUSED_PAIRS
    )
    predicted = probabilities.argmax(axis=1)
    confusion = metric_functions.confusion_matrix(true, predicted, len(labels))
    metrics = records.Metrics.from_dict(
        {
            "split": "test",
            "model_file": run_folder.MODEL_FILE,
            "evaluated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **result,
            "confusion_matrix": confusion.tolist(),
        }
    )
    records.write(run_dir / run_folder.METRICS_FILE, metrics)
    write_plots(
        run_dir,
        splits.test_images,
        true,
        probabilities,
        labels,
        metrics,
        superclass_of=superclass_of,
        superclasses=superclasses,
    )
    report.write_report(run_dir, metrics)
    return metrics.to_dict()


def _run_config(run_dir: Path, required: bool) -> TrainConfig | None:
    """The run's configuration from config.json; None when it is not there and not `required` (the
    caller gave the splits, and the batch size falls back to DEFAULT_BATCH_SIZE)."""
    if not required and not (run_dir / run_folder.CONFIG_FILE).exists():
        return None
    return TrainConfig.from_run(run_dir)


def _superclasses(splits: Any, num_classes: int) -> tuple[np.ndarray | None, list[str] | None]:
    """The fine -> superclass mapping when the data has one for exactly these classes."""
    mapping = getattr(splits, "superclass_of", None)
    if mapping is None or len(mapping) != num_classes:
        return None, None
    names = getattr(splits, "superclasses", None)
    return np.asarray(mapping, dtype=np.int64), (list(names) if names is not None else None)


def write_plots(
    run_dir: Path,
    images: np.ndarray,
    true: np.ndarray,
    probabilities: np.ndarray,
    labels: list[str],
    metrics: records.Metrics,
    *,
    superclass_of=None,
    superclasses=None,
) -> dict[str, Path]:
    """Draw every plot the data allows; return {name: path}. curves.png needs history.csv."""
    from train import plots  # matplotlib loads only when plots are drawn.

    predicted = probabilities.argmax(axis=1)
    written = {}
    history = run_folder.read_history(run_dir / run_folder.HISTORY_FILE)
    if history:
        written["curves"] = plots.plot_curves(history, run_dir / PLOTS["curves"])
    confusion = np.asarray(metrics.confusion_matrix)
    written["confusion"] = plots.plot_confusion(
        confusion, labels, run_dir / PLOTS["confusion"], superclass_of, superclasses
    )
    written["samples"] = plots.plot_samples(images, true, probabilities, labels, run_dir / PLOTS["samples"])
    written["confused_pairs"] = plots.plot_confused_pairs(
        metrics.confused_pairs[:8], images, true, predicted, labels, run_dir / PLOTS["confused_pairs"]
    )
    return written


COMMAND = command.Command(
    name="evaluate",
    prog="python train/evaluate.py",
    description=__doc__.split("\n")[0],
    config_class=EvaluateConfig,
    run=run,
    render=_summary,
    required=("run",),
)


main = command.entry_point(COMMAND)


if __name__ == "__main__":
    sys.exit(main())
