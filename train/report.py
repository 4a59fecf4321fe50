"""report.md, the one page a person reads first: its only writer.

    python train/evaluate.py --run runs/NAME --report-only   # rewrite report.md from the run's files

`write_report(run_dir)` renders the whole page from the run's files (metrics.json,
config.json, metadata.json, quantization.json, the plots that exist); train/evaluate.py
calls it after measuring. The float-vs-int8 table sits between `START` and `END`:
`update_quantization_section` (called by the export and the check, which may run
long after the evaluation) replaces only that part, appends it when the markers are
missing, and writes a minimal report when there is none. Percentages here; fractions
in the JSON files. The files are read as records (edge/common/records.py), whose
`variant_table` draws the table, as the demo's does; numbers are formatted by
edge/common/formatting.py, as everywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge.common import artifacts, formatting, records, run_folder
from edge.common.records import TOP_K, Metrics, Quantization, RunMetadata
from train.config import IMAGENET_MODELS

START, END = "<!-- quantization:start -->", "<!-- quantization:end -->"
HEADING = "## Float vs int8 (TFLite)"
PLOTS = {name: f"{run_folder.PLOTS_DIR}/{name}.png" for name in ("curves", "confusion", "samples", "confused_pairs")}
#: Classes in each of the report's "worst" and "best" tables; with fewer than twice this, one table.
TABLE_CLASSES = 10
#: Float tensors named in the report before "and N more" (all are in quantization.json).
LISTED_TENSORS = 8
SCHEMES = {
    "int8": "plain full-integer post-training quantization",
    "int8-qat": "full-integer after quantization-aware fine-tuning (fake-quant, distilled from the float model)",
    "int8-selective": "int8 with the worst tensors kept in float (selective quantization)",
    "16x8": "int16 activations with int8 weights (16x8)",
}


def write_report(run_dir: str | Path, metrics: Metrics | Mapping[str, Any] | None = None) -> Path:
    """Render report.md from the run's files (metrics.json unless given) and write it atomically."""
    run_dir = Path(run_dir)
    metrics = (
        Metrics.coerce(metrics) if metrics is not None else records.read(Metrics, run_dir / run_folder.METRICS_FILE)
    )
    # config.json is the training configuration's own file (train/config.py), read here as plain values:
    # the report shows what an older run recorded, whatever options this version has.
    text = render_report(
        run_dir.name,
        run_folder.read_optional_json(run_dir / run_folder.CONFIG_FILE),
        records.read_optional(RunMetadata, run_dir / run_folder.METADATA_FILE) or RunMetadata(),
        metrics,
        [name for name, path in PLOTS.items() if (run_dir / path).exists()],
        records.read_optional(Quantization, run_dir / run_folder.QUANTIZATION_FILE),
    )
    return artifacts.write_atomic(run_dir / run_folder.REPORT_FILE, text)


def update_quantization_section(
    run_dir: str | Path, quantization: Quantization | Mapping[str, Any] | None = None
) -> Path:
    """Put the float-vs-int8 section into <run_dir>/report.md between the markers; return the path."""
    run_dir = Path(run_dir)
    if quantization is None:
        quantization = records.read(Quantization, run_dir / run_folder.QUANTIZATION_FILE)
    section = quantization_section(quantization, run_dir.name).rstrip("\n")
    path = run_dir / run_folder.REPORT_FILE
    text = path.read_text(encoding="utf-8") if path.exists() else f"# Run `{run_dir.name}`\n"
    start, end = text.find(START), text.find(END)
    if start != -1 and end > start:
        text = text[:start] + section + text[end + len(END) :]
    else:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n\n{section}\n"
    return artifacts.write_atomic(path, text)


def quantization_section(quantization: Quantization | Mapping[str, Any] | None, run_name: str = "NAME") -> str:
    """The float-vs-int8 section between its markers.

    Without quantization.json the markers hold a note: `train/run.py` evaluates before it
    exports, and the export (`update_quantization_section`) replaces what lies between the
    markers, so the table lands here, under the headline numbers.
    """
    quantization = _measured(quantization)
    if quantization is None:
        body = (
            f"Not measured yet: `python train/export.py --run runs/{run_name}` exports the TFLite models "
            "and measures them on the test set."
        )
    else:
        # render_quantization's argument is quantization.json's content, as a dict or the record.
        body = render_quantization(quantization.to_dict()).strip()
    return f"{START}\n{body}\n{END}\n"


def _measured(quantization: Quantization | Mapping[str, Any] | None) -> Quantization | None:
    """The record, or None when there is nothing measured in it (no file, or an empty one)."""
    if not quantization:
        return None
    quantization = Quantization.coerce(quantization)
    return quantization if quantization.to_dict() else None


# ---------------------------------------------------------------------------------------------
# The evaluation's part of the page


def _value(source: Mapping[str, Any] | RunMetadata, key: str) -> Any:
    """A value of config.json (plain values) or of the metadata record, None when it does not say."""
    if isinstance(source, Mapping):
        return source.get(key)
    return getattr(source, key) if key in RunMetadata.__dataclass_fields__ else source.extra.get(key)


def _config_summary(config: dict, metadata: RunMetadata, metrics: Metrics) -> str:
    def get(key, *sources):
        value = next(
            (_value(source, key) for source in sources or (config, metadata) if _value(source, key) is not None), None
        )
        return "n/a" if value is None else value

    classes = metrics.num_classes or metadata.num_classes
    dataset = f"{get('dataset')}" + (f" ({get('label_mode')} labels)" if get("dataset") == "cifar100" else "")
    parameters = metadata.parameters
    rate = metadata.images_per_second
    size = metadata.input_size
    head_rate = f"head {get('head_learning_rate')}, " if config.get("head_epochs") else ""
    lines = [
        f"- **Data**: {dataset}, {classes} classes, {metrics.samples} test images"
        + (f"; model input {size[0]}x{size[1]} uint8" if isinstance(size, list) and len(size) == 2 else ""),
        f"- **Model**: {get('model')}, weights {get('weights')}, image size {get('image_size', metadata, config)}"
        + (f", {parameters:,} parameters" if isinstance(parameters, int) else ""),
        f"- **Training**: {_stages(config, metadata)}, "
        f"batch {get('batch_size')}, {get('optimizer')}, learning rate {head_rate}{get('learning_rate')} "
        f"({get('schedule')}), weight decay {get('weight_decay')}, label smoothing {get('label_smoothing')}, "
        f"augment {get('augment')}, mix {get('mix')}, seed {get('seed')}",
        f"- **Training time**: {formatting.duration(metadata.training_seconds)}"
        + (f" ({rate:,.0f} training images/s)" if isinstance(rate, (int, float)) else ""),
    ]
    return "\n".join(lines)


def _stages(config: dict, metadata: RunMetadata) -> str:
    """ "1 head + 14 fine-tuning epochs (unfreeze all)", or "20 epochs from scratch" for a network without
    pretrained weights, which trains in one stage (no head stage, every layer throughout)."""
    epochs = metadata.epochs if isinstance(metadata.epochs, dict) else {}
    head = epochs.get("head", config.get("head_epochs"))
    finetune = epochs.get("finetune", config.get("epochs"))
    weights = config.get("weights", metadata.weights)
    if weights == "none" or config.get("model", metadata.model) not in IMAGENET_MODELS:
        total = sum(value for value in (head, finetune) if isinstance(value, int))
        return f"{total} epochs from scratch (one stage, every layer)"
    return f"{head} head + {finetune} fine-tuning epochs (unfreeze {config.get('unfreeze', 'n/a')})"


def _class_table(metrics: Metrics, names: list[str]) -> list[str]:
    per_class = metrics.per_class
    labels = list(per_class)
    confusion = np.asarray(metrics.confusion_matrix if metrics.confusion_matrix is not None else [])
    has_superclass = any("superclass" in per_class[name] for name in names)
    header = (
        "| class |"
        + (" superclass |" if has_superclass else "")
        + " accuracy | precision | F1 | test images | most often taken for (images) |"
    )
    rows = [header, "|" + "---|" * (header.count("|") - 1)]
    for name in names:
        scores = per_class[name]
        mistaken = "none"
        if confusion.size:
            row = confusion[labels.index(name)].copy()
            row[labels.index(name)] = 0
            if row.max() > 0:
                mistaken = f"{labels[int(row.argmax())]} ({int(row.max())})"
        rows.append(
            f"| {name} |"
            + (f" {scores.get('superclass', '')} |" if has_superclass else "")
            + f" {formatting.percent(scores['accuracy'])} | {formatting.percent(scores['precision'])} "
            f"| {scores['f1']:.3f} "
            f"| {scores['support']} | {mistaken} |"
        )
    return rows


def _headline(metrics: Metrics) -> list[str]:
    superclass = metrics.superclass
    calibration = metrics.calibration
    macro = metrics.macro
    rows = [
        "| metric | value | how to read it |",
        "|---|---|---|",
        f"| top-1 accuracy | **{formatting.percent(metrics.top1, 2)}** "
        "| share of test images whose most probable class is right |",
        f"| top-{TOP_K} accuracy | {formatting.percent(metrics.top5, 2)} "
        f"| the right class is among the {TOP_K} most probable |",
        f"| loss | {metrics.loss:.4f} | cross-entropy of the probabilities, nats, without label smoothing |",
        f"| macro precision / recall / F1 | {formatting.percent(macro['precision'])} / "
        f"{formatting.percent(macro['recall'])} / {macro['f1']:.3f} | means over classes, each class weighs the same |",
    ]
    if superclass:
        rows += [
            f"| superclass accuracy | {formatting.percent(superclass['accuracy'], 2)} "
            "| fine prediction lies in the right one "
            f"of the {len(superclass['names'])} superclasses |",
            f"| errors inside the right superclass | {formatting.percent(superclass['errors_within_superclass'])} "
            "| of the wrong predictions, the share that confused near neighbours (e.g. two trees) |",
        ]
    if calibration:
        rows.append(
            f"| expected calibration error | {calibration['expected_calibration_error']:.4f} | mean gap "
            f"between confidence and accuracy over {calibration['bins']} confidence bins; 0 = honest |"
        )
    return rows


def render_report(
    run_name: str,
    config: dict,
    metadata: RunMetadata,
    metrics: Metrics,
    plots: list[str],
    quantization: Quantization | None,
) -> str:
    """The one page a person reads first. Relative links only, so it renders on GitHub and the Hub."""

    def image(name: str, caption: str) -> list[str]:
        return [f"![{caption}]({PLOTS[name]})", ""] if name in plots else []

    lines = [
        f"# Run `{run_name}`",
        "",
        f"Test-set evaluation of the float Keras model (`model.keras`) on {metrics.samples} test images. "
        "All numbers are in `metrics.json` (as fractions); their definitions are in `train/metrics.py`.",
        "",
        _config_summary(config, metadata, metrics),
        "",
        "## Headline numbers",
        "",
        *_headline(metrics),
        "",
    ]
    lines += [HEADING, "", quantization_section(quantization, run_name)]
    if "curves" in plots:
        lines += [
            "## Training",
            "",
            "Loss, accuracy and learning rate per epoch; the dotted line separates "
            "the head stage from fine-tuning. Validation loss rising while training loss falls means "
            "over-fitting.",
            "",
            *image("curves", "Training curves"),
        ]
    per_class = metrics.per_class
    ranked = sorted(per_class, key=lambda name: (per_class[name]["accuracy"], per_class[name]["f1"], name))
    best = sorted(per_class, key=lambda name: (-per_class[name]["accuracy"], -per_class[name]["f1"], name))
    if len(ranked) < 2 * TABLE_CLASSES:
        lines += ["## Classes, worst first", "", *_class_table(metrics, ranked), ""]
    else:
        lines += [
            f"## Worst {TABLE_CLASSES} classes",
            "",
            *_class_table(metrics, ranked[:TABLE_CLASSES]),
            "",
            f"## Best {TABLE_CLASSES} classes",
            "",
            *_class_table(metrics, best[:TABLE_CLASSES]),
            "",
        ]
    if "confusion" in plots:
        ordering = (
            " Fine classes are grouped by superclass (white lines), so confusions between near "
            "neighbours sit in the blocks on the diagonal; the superclass matrix is on the right."
            if metrics.superclass
            else ""
        )
        lines += [
            "## Confusion matrix",
            "",
            "Rows are the true class, columns the prediction, colour the share of "
            f"the true class's test images.{ordering}",
            "",
            *image("confusion", "Confusion matrix"),
        ]
    lines += ["## Most confused pairs", ""]
    if metrics.confused_pairs:
        lines += ["| true class | predicted as | test images | share of the true class |", "|---|---|---|---|"]
        lines += [
            f"| {pair['true_label']} | {pair['predicted_label']} | {pair['count']} "
            f"| {formatting.percent(pair['share_of_true'])} |"
            for pair in metrics.confused_pairs
        ]
        lines += ["", *image("confused_pairs", "Examples of the most confused pairs")]
    else:
        lines += ["No test image was misclassified.", ""]
    if "samples" in plots:
        lines += [
            "## Sample predictions",
            "",
            "Test images with the true label and the top-3 predictions; green "
            "frames are right, red wrong (up to half of the grid is chosen among the mistakes).",
            "",
            *image("samples", "Test images with their top-3 predictions"),
        ]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# The float-vs-int8 part of the page


def render_quantization(quantization: Quantization | Mapping[str, Any]) -> str:
    """The section's body: the table of variants, the gate, and how the int8 model was made."""
    quantization = Quantization.coerce(quantization)
    lines = [records.variant_table(quantization, records.REPORT_COLUMNS)]
    runtime = quantization.runtime or records.RuntimeInfo()
    threads = runtime.threads
    latency_runs = runtime.latency_runs if runtime.latency_runs is not None else "n/a"
    lines += [
        "",
        f"Measured on all {quantization.test_images} test images through "
        f"{runtime.name or 'the TFLite runtime'} {runtime.version or ''}".rstrip()
        + f"; latency: median of {latency_runs} single-image interpreter calls, "
        + (f"{threads} threads" if threads else "the runtime's default threads")
        + ".",
        "",
    ]
    int8 = quantization.int8
    verdict = "**passed**" if quantization.passed else "**FAILED**"
    noise = ""
    if int8.broken is not None:
        noise = (
            f" ({int8.broken} test images it gets wrong where the Keras model is right, {int8.fixed} "
            f"the other way; standard error of the drop {int8.drop_standard_error_points:.2f} points)"
        )
    lines.append(
        f"Gate: the int8 model may lose at most {quantization.max_drop} points of top-1 against "
        f"the Keras model; it loses {int8.drop_points:.2f}{noise}: {verdict}."
    )
    lines += _search_lines(quantization)
    return "\n".join(lines) + "\n"


def _search_lines(quantization: Quantization) -> list[str]:
    scheme = quantization.int8.scheme or "int8"
    lines = [
        "",
        f"`model_int8.tflite`: {SCHEMES.get(scheme, scheme)}; every op runs in integer "
        "arithmetic (uint8 input, uint8 output).",
    ]
    search = quantization.int8_search or records.Int8Search()
    attempts = [attempt for attempt in search.attempts if "error" not in attempt]
    if len(attempts) > 1:
        lines.append(
            "Tried, in order (drop in points): " + "; ".join(_attempt_text(attempt) for attempt in attempts) + "."
        )
    fallback = search.fallback
    if fallback:
        file_name = f"`model_{fallback['variant']}.tflite`"
        lines.append(
            f"Fallback {file_name} ({SCHEMES.get(fallback['scheme'], fallback['scheme'])}): {fallback['reason']}."
        )
        shipped = quantization.variants.get(fallback["variant"])
        layers = (shipped.float_layers if shipped is not None else None) or []
        if layers:
            names = ", ".join(f"`{layer['op']}` {layer['tensor'].split(';')[0]}" for layer in layers[:LISTED_TENSORS])
            more = f" and {len(layers) - LISTED_TENSORS} more" if len(layers) > LISTED_TENSORS else ""
            lines.append(f"Ops that stay float in {file_name} ({len(layers)}): {names}{more}.")
    elif len(attempts) > 1:
        lines.append("No fallback passed the gate; none is shipped.")
    served = quantization.served
    if served:
        lines.append(
            f'Served by the demo and the camera: `model_{served}.tflite` (metadata.json\'s "served": '
            "int8 when it passes the gate, else the fastest variant that does)."
        )
    return lines


def _attempt_text(attempt: dict) -> str:
    count = len(attempt.get("float_tensors", []))
    name = attempt["scheme"] + (f" with {count} float tensors" if count else "")
    if "drop_points" in attempt:
        return f"{name}: test {attempt['drop_points']:.2f}, agreement {formatting.percent(attempt.get('agreement'), 1)}"
    return f"{name}: validation {attempt.get('val_drop_points', float('nan')):.2f}"
