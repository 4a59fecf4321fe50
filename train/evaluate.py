"""Evaluate a finished run on its test split: metrics.json, plots/*.png and report.md.

    python train/evaluate.py --run runs/NAME                 # predict again, rewrite everything
    python train/evaluate.py --run runs/NAME --report-only   # rewrite report.md from the files alone

`train/run.py` calls `evaluate_run` at the end of training. The model is the
float Keras model (`model.keras`); the int8 TFLite numbers come from
quantization.json, written by `edge/convert.py`, and appear in the report
between `<!-- quantization:start -->` and `<!-- quantization:end -->`. Without
that file the markers hold a note, and the export fills them in later
(`edge.quantization_report.update_report`). Metric definitions: train/metrics.py.
"""
from __future__ import annotations

if __package__ in (None, ""):  # Run as a script: make the repository root importable.
    import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import csv
import dataclasses
import datetime
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge import artifacts, configuration
from edge.configuration import option
from train import metrics as metric_functions

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
QUANTIZATION_FILE = "quantization.json"
PLOTS = {"curves": "plots/curves.png", "confusion": "plots/confusion.png",
         "samples": "plots/samples.png", "confused_pairs": "plots/confused_pairs.png"}
QUANTIZATION_START, QUANTIZATION_END = "<!-- quantization:start -->", "<!-- quantization:end -->"
#: Images per `model.predict` call when the run's config does not say.
DEFAULT_BATCH_SIZE = 128
TOP_K = 5
CONFUSED_PAIRS = 10
#: Classes in each of the report's "worst" and "best" tables; with fewer than twice this, one table.
TABLE_CLASSES = 10


@dataclasses.dataclass
class EvaluateConfig:
    """Options of `python train/evaluate.py`."""

    run: str = option("", "the run directory (holds model.keras, config.json, labels.txt)", "Evaluation",
                      metavar="DIR")
    batch_size: int | None = option(None, "images per prediction call (default: the run's batch size)", "Evaluation")
    report_only: bool = option(False, "rewrite report.md from metrics.json, metadata.json and "
                               "quantization.json without loading the model", "Evaluation")


def main(argv: Sequence[str] | None = None) -> int:
    config = configuration.parse_command_line(EvaluateConfig, argv, prog="python train/evaluate.py",
                                              description=__doc__.split("\n")[0], required=("run",))
    try:
        result = run(config)
    except (artifacts.ArtifactError, configuration.ConfigError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{Path(config.run) / REPORT_FILE}: test top-1 {result['top1']:.2%}, top-5 {result[f'top{TOP_K}']:.2%}, "
          f"loss {result['loss']:.3f}")
    return 0


def run(config: EvaluateConfig) -> dict:
    """Evaluate (or only re-render the report) as `config` says; return the metrics."""
    run_dir = Path(config.run)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    if config.report_only:
        write_report(run_dir)
        return artifacts.read_json(run_dir / METRICS_FILE)
    return evaluate_run(run_dir, batch_size=config.batch_size)


def evaluate_run(run_dir: str | Path, model: Any = None, splits: Any = None, batch_size: int | None = None,
                 probabilities: np.ndarray | None = None) -> dict:
    """Predict the test split, write metrics.json, the plots and report.md; return the metrics.

    `model` (a Keras model) and `splits` (train.data.Splits) are loaded from the run directory
    when not given: `train.models.load_model(run_dir/model.keras)` and
    `train.data.load_splits(TrainConfig.from_run(run_dir))`. `probabilities`, the model's output
    on the test split when the caller has it already, saves predicting it again.
    """
    run_dir = Path(run_dir)
    labels = artifacts.read_labels(run_dir / artifacts.LABELS_FILE)
    run_config = _read_optional_json(run_dir / "config.json")
    if splits is None:
        from train import data
        from train.config import TrainConfig
        splits = data.load_splits(TrainConfig.from_run(run_dir))
    if list(splits.labels) != labels:
        raise artifacts.ArtifactError(f"{run_dir / artifacts.LABELS_FILE} does not match the data's class names "
                                      f"({len(labels)} vs {len(splits.labels)} classes, or another order)")
    if len(splits.test_labels) == 0:
        raise ValueError(f"{run_dir}: the test split is empty; nothing to evaluate")
    if probabilities is None:
        if model is None:
            from train import models
            model = models.load_model(run_dir / "model.keras")
        batch_size = batch_size or int(run_config.get("batch_size") or DEFAULT_BATCH_SIZE)
        probabilities = model.predict(splits.test_images, batch_size=batch_size, verbose=0)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    true = np.asarray(splits.test_labels, dtype=np.int64)
    superclass_of, superclasses = _superclasses(splits, len(labels))
    result = metric_functions.classification_metrics(
        true, probabilities, labels, superclass_of, superclasses, top_k=TOP_K, pairs=CONFUSED_PAIRS)
    predicted = probabilities.argmax(axis=1)
    confusion = metric_functions.confusion_matrix(true, predicted, len(labels))
    metrics = {"split": "test", "model_file": "model.keras",
               "evaluated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               **result, "confusion_matrix": confusion.tolist()}
    artifacts.write_json(run_dir / METRICS_FILE, metrics)
    write_plots(run_dir, splits.test_images, true, probabilities, labels, metrics, superclass_of, superclasses)
    write_report(run_dir, metrics)
    return metrics


def _superclasses(splits: Any, num_classes: int) -> tuple[np.ndarray | None, list[str] | None]:
    """The fine -> superclass mapping when the data has one for exactly these classes."""
    mapping = getattr(splits, "superclass_of", None)
    if mapping is None or len(mapping) != num_classes:
        return None, None
    names = getattr(splits, "superclasses", None)
    return np.asarray(mapping, dtype=np.int64), (list(names) if names is not None else None)


def write_plots(run_dir: Path, images: np.ndarray, true: np.ndarray, probabilities: np.ndarray,
                labels: list[str], metrics: dict, superclass_of=None, superclasses=None) -> dict[str, Path]:
    """Draw every plot the data allows; return {name: path}. curves.png needs history.csv."""
    from train import plots  # matplotlib loads only when plots are drawn.
    predicted = probabilities.argmax(axis=1)
    written = {}
    history = read_history(run_dir / "history.csv")
    if history:
        written["curves"] = plots.plot_curves(history, run_dir / PLOTS["curves"])
    confusion = np.asarray(metrics["confusion_matrix"])
    written["confusion"] = plots.plot_confusion(confusion, labels, run_dir / PLOTS["confusion"],
                                                superclass_of, superclasses)
    written["samples"] = plots.plot_samples(images, true, probabilities, labels, run_dir / PLOTS["samples"])
    written["confused_pairs"] = plots.plot_confused_pairs(metrics["confused_pairs"][:8], images, true, predicted,
                                                          labels, run_dir / PLOTS["confused_pairs"])
    return written


def read_history(path: Path) -> list[dict]:
    """history.csv rows as dicts of strings ([] when the file is missing)."""
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def _read_optional_json(path: Path) -> dict:
    return artifacts.read_json(path) if path.exists() else {}


# ---------------------------------------------------------------------------------------------
# report.md


def percent(value: Any, digits: int = 1) -> str:
    """A fraction as a percentage for people; "n/a" when unknown."""
    return "n/a" if value is None else f"{100 * float(value):.{digits}f}%"


def duration(seconds: Any) -> str:
    if seconds is None:
        return "n/a"
    minutes, rest = divmod(int(round(float(seconds))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else (f"{minutes} min {rest:02d} s" if minutes else f"{rest} s")


def write_report(run_dir: str | Path, metrics: dict | None = None) -> Path:
    """Render report.md from the run's files (metrics.json unless given) and write it atomically."""
    run_dir = Path(run_dir)
    metrics = metrics if metrics is not None else artifacts.read_json(run_dir / METRICS_FILE)
    text = render_report(run_dir.name, _read_optional_json(run_dir / "config.json"),
                         _read_optional_json(run_dir / artifacts.METADATA_FILE), metrics,
                         [name for name, path in PLOTS.items() if (run_dir / path).exists()],
                         _read_optional_json(run_dir / QUANTIZATION_FILE) or None)
    return artifacts.write_atomic(run_dir / REPORT_FILE, text)


def quantization_section(quantization: dict | None, run_name: str = "NAME") -> str:
    """The float-vs-int8 section between its markers ("" when its renderer is not installed).

    Without quantization.json the markers hold a note: `train/run.py` evaluates before it
    exports, and the export (`edge.quantization_report.update_report`) replaces what lies
    between the markers, so the table lands here, under the headline numbers.
    """
    if not quantization:
        body = (f"Not measured yet: `python edge/convert.py --run runs/{run_name}` exports the TFLite models "
                "and measures them on the test set.")
        return f"{QUANTIZATION_START}\n{body}\n{QUANTIZATION_END}\n"
    try:
        from edge import quantization_report
    except ImportError:  # The converter's renderer is optional here: the report stands without it.
        return ""
    return f"{QUANTIZATION_START}\n{quantization_report.render_markdown(quantization).strip()}\n{QUANTIZATION_END}\n"


def _config_summary(config: dict, metadata: dict, metrics: dict) -> str:
    def get(key, *sources):
        value = next((source[key] for source in sources or (config, metadata) if source.get(key) is not None), None)
        return "n/a" if value is None else value
    classes = metrics.get("num_classes") or metadata.get("num_classes")
    dataset = f"{get('dataset')}" + (f" ({get('label_mode')} labels)" if get("dataset") == "cifar100" else "")
    parameters = metadata.get("parameters")
    rate = metadata.get("images_per_second")
    size = metadata.get("input_size")
    head_rate = f"head {get('head_learning_rate')}, " if config.get("head_epochs") else ""
    lines = [
        f"- **Data**: {dataset}, {classes} classes, {metrics.get('samples')} test images"
        + (f"; model input {size[0]}x{size[1]} uint8" if isinstance(size, list) and len(size) == 2 else ""),
        f"- **Model**: {get('model')}, weights {get('weights')}, image size {get('image_size', metadata, config)}"
        + (f", {parameters:,} parameters" if isinstance(parameters, int) else ""),
        f"- **Training**: {get('head_epochs')} head + {get('epochs')} fine-tuning epochs (unfreeze {get('unfreeze')}), "
        f"batch {get('batch_size')}, {get('optimizer')}, learning rate {head_rate}{get('learning_rate')} "
        f"({get('schedule')}), weight decay {get('weight_decay')}, label smoothing {get('label_smoothing')}, "
        f"augment {get('augment')}, mix {get('mix')}, seed {get('seed')}",
        f"- **Training time**: {duration(metadata.get('training_seconds'))}"
        + (f" ({rate:,.0f} training images/s)" if isinstance(rate, (int, float)) else ""),
    ]
    return "\n".join(lines)


def _class_table(metrics: dict, names: list[str]) -> list[str]:
    per_class = metrics["per_class"]
    labels = list(per_class)
    confusion = np.asarray(metrics.get("confusion_matrix", []))
    has_superclass = any("superclass" in per_class[name] for name in names)
    header = "| class |" + (" superclass |" if has_superclass else "") + \
             " accuracy | precision | F1 | test images | most often taken for (images) |"
    rows = [header, "|" + "---|" * (header.count("|") - 1)]
    for name in names:
        scores = per_class[name]
        mistaken = "none"
        if confusion.size:
            row = confusion[labels.index(name)].copy()
            row[labels.index(name)] = 0
            if row.max() > 0:
                mistaken = f"{labels[int(row.argmax())]} ({int(row.max())})"
        rows.append(f"| {name} |" + (f" {scores.get('superclass', '')} |" if has_superclass else "")
                    + f" {percent(scores['accuracy'])} | {percent(scores['precision'])} | {scores['f1']:.3f} "
                    f"| {scores['support']} | {mistaken} |")
    return rows


def _headline(metrics: dict) -> list[str]:
    superclass = metrics.get("superclass")
    calibration = metrics.get("calibration")
    rows = ["| metric | value | how to read it |", "|---|---|---|",
            f"| top-1 accuracy | **{percent(metrics['top1'], 2)}** | share of test images whose most probable class is right |",
            f"| top-{TOP_K} accuracy | {percent(metrics.get(f'top{TOP_K}'), 2)} | the right class is among the {TOP_K} most probable |",
            f"| loss | {metrics['loss']:.4f} | cross-entropy of the probabilities, nats, without label smoothing |",
            f"| macro precision / recall / F1 | {percent(metrics['macro']['precision'])} / "
            f"{percent(metrics['macro']['recall'])} / {metrics['macro']['f1']:.3f} | means over classes, each class weighs the same |"]
    if superclass:
        rows += [f"| superclass accuracy | {percent(superclass['accuracy'], 2)} | fine prediction lies in the right one "
                 f"of the {len(superclass['names'])} superclasses |",
                 f"| errors inside the right superclass | {percent(superclass['errors_within_superclass'])} "
                 "| of the wrong predictions, the share that confused near neighbours (e.g. two trees) |"]
    if calibration:
        rows.append(f"| expected calibration error | {calibration['expected_calibration_error']:.4f} | mean gap "
                    f"between confidence and accuracy over {calibration['bins']} confidence bins; 0 = honest |")
    return rows


def render_report(run_name: str, config: dict, metadata: dict, metrics: dict, plots: list[str],
                  quantization: dict | None) -> str:
    """The one page a person reads first. Relative links only, so it renders on GitHub and the Hub."""
    def image(name: str, caption: str) -> list[str]:
        return [f"![{caption}]({PLOTS[name]})", ""] if name in plots else []

    lines = [f"# Run `{run_name}`", "",
             f"Test-set evaluation of the float Keras model (`model.keras`) on {metrics.get('samples')} test images. "
             "All numbers are in `metrics.json` (as fractions); their definitions are in `train/metrics.py`.", "",
             _config_summary(config, metadata, metrics), "", "## Headline numbers", "", *_headline(metrics), ""]
    if quantization_text := quantization_section(quantization, run_name):
        lines += ["## Float vs int8 (TFLite)", "", quantization_text]
    if "curves" in plots:
        lines += ["## Training", "", "Loss, accuracy and learning rate per epoch; the dotted line separates "
                  "the head stage from fine-tuning. Validation loss rising while training loss falls means "
                  "over-fitting.", "", *image("curves", "Training curves")]
    ranked = sorted(metrics["per_class"], key=lambda name: (metrics["per_class"][name]["accuracy"],
                                                            metrics["per_class"][name]["f1"], name))
    best = sorted(metrics["per_class"], key=lambda name: (-metrics["per_class"][name]["accuracy"],
                                                          -metrics["per_class"][name]["f1"], name))
    if len(ranked) < 2 * TABLE_CLASSES:
        lines += ["## Classes, worst first", "", *_class_table(metrics, ranked), ""]
    else:
        lines += [f"## Worst {TABLE_CLASSES} classes", "", *_class_table(metrics, ranked[:TABLE_CLASSES]), "",
                  f"## Best {TABLE_CLASSES} classes", "", *_class_table(metrics, best[:TABLE_CLASSES]), ""]
    if "confusion" in plots:
        ordering = (" Fine classes are grouped by superclass (white lines), so confusions between near "
                    "neighbours sit in the blocks on the diagonal; the superclass matrix is on the right."
                    if metrics.get("superclass") else "")
        lines += ["## Confusion matrix", "", "Rows are the true class, columns the prediction, colour the share of "
                  f"the true class's test images.{ordering}", "", *image("confusion", "Confusion matrix")]
    lines += ["## Most confused pairs", ""]
    if metrics.get("confused_pairs"):
        lines += ["| true class | predicted as | test images | share of the true class |", "|---|---|---|---|"]
        lines += [f"| {pair['true_label']} | {pair['predicted_label']} | {pair['count']} | {percent(pair['share_of_true'])} |"
                  for pair in metrics["confused_pairs"]]
        lines += ["", *image("confused_pairs", "Examples of the most confused pairs")]
    else:
        lines += ["No test image was misclassified.", ""]
    if "samples" in plots:
        lines += ["## Sample predictions", "", "Test images with the true label and the top-3 predictions; green "
                  "frames are right, red wrong (up to half of the grid is chosen among the mistakes).", "",
                  *image("samples", "Test images with their top-3 predictions")]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.exit(main())
