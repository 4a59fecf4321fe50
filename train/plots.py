"""The evaluation's figures: training curves, confusion matrix, sample predictions, confused pairs.

Drawn with matplotlib's object API (`matplotlib.figure.Figure`, no pyplot), so
nothing opens a window and no global state leaks between figures; each PNG is
written atomically. Figure sizes are fixed constants (inches at `DPI`), so the
pixel size of every file is known in advance and text stays readable when the
report shows the image at full width. Used by `train/evaluate.py`; not a command.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colors, ticker
from matplotlib.figure import Figure

from edge.common.artifacts import atomic_path

DPI = 100
#: Figure sizes in inches (width, height); the PNG is these times `DPI` pixels.
CURVES_INCHES = (15.0, 4.5)
CONFUSION_SUPERCLASS_INCHES = (24.0, 12.0)  # 100 fine classes beside the 20x20 superclass matrix
CONFUSION_COUNTS_INCHES = (10.0, 9.0)  # up to `MAX_ANNOTATED_CLASSES`, each cell with its count
CONFUSION_LARGE_INCHES = (14.0, 13.0)  # many classes, no superclasses: colour only
SAMPLES_INCHES = (15.0, 13.0)
PAIR_ROW_INCHES = 1.9  # confused pairs: height of one pair's row
PAIRS_WIDTH_INCHES = 15.0

#: Up to this many classes, the confusion matrix prints the count in every cell.
MAX_ANNOTATED_CLASSES = 20
SAMPLE_ROWS, SAMPLE_COLUMNS = 4, 6
PAIR_EXAMPLES = 5


def confused_pairs_inches(rows: int) -> tuple[float, float]:
    """Size of confused_pairs.png for `rows` pairs (a title strip plus one row per pair)."""
    return PAIRS_WIDTH_INCHES, 0.5 + PAIR_ROW_INCHES * max(rows, 1)


def _save(figure: Figure, path: Path) -> Path:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=DPI, format="png")
    return Path(path)


def _column(rows: Sequence[dict], name: str) -> np.ndarray:
    """A history column as floats; missing or empty cells become NaN (gaps in the line)."""
    values = []
    for row in rows:
        try:
            values.append(float(row.get(name) or "nan"))
        except ValueError:
            values.append(math.nan)
    return np.asarray(values, dtype=np.float64)


def plot_curves(history: Sequence[dict], path: Path) -> Path:
    """Loss, accuracy and learning rate per epoch over both stages, the stage boundaries marked."""
    figure = Figure(figsize=CURVES_INCHES, layout="constrained")
    loss_axis, accuracy_axis, rate_axis = figure.subplots(1, 3)
    epochs = np.arange(1, len(history) + 1)
    stages = [row.get("stage", "") for row in history]
    loss_axis.plot(epochs, _column(history, "loss"), "o-", color="tab:blue", label="training")
    loss_axis.plot(epochs, _column(history, "val_loss"), "o-", color="tab:orange", label="validation")
    loss_axis.set(title="Loss", xlabel="epoch (both stages)", ylabel="cross-entropy")
    for metric, style, name in (("accuracy", "o-", "top-1"), ("top5", "s--", "top-5")):
        accuracy_axis.plot(epochs, _column(history, metric), style, color="tab:blue", label=f"training {name}")
        accuracy_axis.plot(
            epochs, _column(history, "val_" + metric), style, color="tab:orange", label=f"validation {name}"
        )
    accuracy_axis.set(title="Accuracy", xlabel="epoch (both stages)", ylabel="fraction", ylim=(0, 1.02))
    rates = _column(history, "learning_rate")
    rate_axis.plot(epochs, rates, "o-", color="tab:green")
    if np.nanmin(rates, initial=np.inf) > 0:
        rate_axis.set_yscale("log")
    rate_axis.set(title="Learning rate (at epoch end)", xlabel="epoch (both stages)")
    for axis in (loss_axis, accuracy_axis, rate_axis):
        axis.grid(alpha=0.3)
        axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        start = 0
        for index in range(1, len(stages) + 1):
            if index == len(stages) or stages[index] != stages[start]:
                axis.text(
                    (start + index) / 2 + 0.5,
                    0.98,
                    stages[start],
                    transform=axis.get_xaxis_transform(),
                    ha="center",
                    va="top",
                    fontsize=9,
                    color="dimgray",
                    style="italic",
                )
                if index < len(stages):
                    axis.axvline(index + 0.5, color="gray", linestyle=":", linewidth=1.5)
                start = index
    loss_axis.legend(fontsize=9, loc="best")
    accuracy_axis.legend(fontsize=8, loc="best")
    return _save(figure, path)


def _row_normalize(confusion: np.ndarray) -> np.ndarray:
    totals = confusion.sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)


def plot_confusion(
    confusion: np.ndarray,
    labels: Sequence[str],
    path: Path,
    superclass_of: Any = None,
    superclasses: Sequence[str] | None = None,
) -> Path:
    """The confusion matrix, rows = true class.

    With superclasses: row-normalized, classes ordered by superclass with the groups outlined,
    and the superclass matrix beside it. Else, up to `MAX_ANNOTATED_CLASSES` classes: the counts
    in every cell; more: row-normalized colour only.
    """
    confusion = np.asarray(confusion)
    count = len(labels)
    if superclass_of is not None:
        mapping = np.asarray(superclass_of, dtype=np.int64)
        names = list(superclasses) if superclasses is not None else [str(i) for i in range(mapping.max() + 1)]
        figure = Figure(figsize=CONFUSION_SUPERCLASS_INCHES, layout="constrained")
        fine_axis, coarse_axis = figure.subplots(1, 2, width_ratios=[1.15, 1])
        order = np.lexsort((np.arange(count), mapping))
        ordered = _row_normalize(confusion)[np.ix_(order, order)]
        # A square-root colour scale: the diagonal dominates, and the confusions are what we want to see.
        image = fine_axis.imshow(ordered, cmap="viridis", norm=colors.PowerNorm(0.5, vmin=0, vmax=1))
        ticks = np.arange(count)
        fine_axis.set_xticks(ticks, [labels[i] for i in order], rotation=90, fontsize=5)
        fine_axis.set_yticks(ticks, [labels[i] for i in order], fontsize=5)
        boundaries = np.flatnonzero(np.diff(mapping[order])) + 0.5
        for boundary in boundaries:
            fine_axis.axhline(boundary, color="white", linewidth=0.4)
            fine_axis.axvline(boundary, color="white", linewidth=0.4)
        fine_axis.set(title="Fine classes, ordered by superclass (row-normalized)", xlabel="predicted", ylabel="true")
        figure.colorbar(image, ax=fine_axis, shrink=0.6, label="share of the true class")
        one_hot = np.eye(len(names), dtype=np.int64)[mapping]
        coarse = _row_normalize(one_hot.T @ confusion @ one_hot)
        coarse_axis.imshow(coarse, cmap="viridis", norm=colors.PowerNorm(0.5, vmin=0, vmax=1))
        positions = np.arange(len(names))
        coarse_axis.set_xticks(positions, names, rotation=90, fontsize=8)
        coarse_axis.set_yticks(positions, names, fontsize=8)
        for row in positions:
            for column in positions:
                if coarse[row, column] >= 0.005:
                    coarse_axis.text(
                        column,
                        row,
                        f"{100 * coarse[row, column]:.0f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="black" if coarse[row, column] > 0.5 else "white",
                    )
        coarse_axis.set(
            title="Superclasses (fine predictions mapped; % of the true superclass)",
            xlabel="predicted superclass",
            ylabel="true superclass",
        )
        return _save(figure, path)

    annotate = count <= MAX_ANNOTATED_CLASSES
    figure = Figure(figsize=CONFUSION_COUNTS_INCHES if annotate else CONFUSION_LARGE_INCHES, layout="constrained")
    axis = figure.subplots()
    normalized = _row_normalize(confusion)
    image = axis.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    font = 9 if annotate else max(3, min(8, int(600 / count)))
    axis.set_xticks(np.arange(count), labels, rotation=90, fontsize=font)
    axis.set_yticks(np.arange(count), labels, fontsize=font)
    if annotate:
        for row in range(count):
            for column in range(count):
                if confusion[row, column] == 0:
                    continue  # Empty cells stay blank, so the mistakes stand out.
                axis.text(
                    column,
                    row,
                    str(int(confusion[row, column])),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if normalized[row, column] > 0.5 else "black",
                )
    axis.set(
        title="Confusion matrix (colour: share of the true class" + ("; numbers: test images)" if annotate else ")"),
        xlabel="predicted",
        ylabel="true",
    )
    figure.colorbar(image, ax=axis, shrink=0.7)
    return _save(figure, path)


def choose_samples(true: np.ndarray, predicted: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Indices of `count` test images, up to half of them misclassified, in test-set order."""
    generator = np.random.default_rng(seed)
    wrong = np.flatnonzero(true != predicted)
    right = np.flatnonzero(true == predicted)
    wrong_count = min(len(wrong), count // 2)
    right_count = min(len(right), count - wrong_count)
    wrong_count = min(len(wrong), count - right_count)
    chosen = np.concatenate(
        [generator.choice(wrong, wrong_count, replace=False), generator.choice(right, right_count, replace=False)]
    )
    return np.sort(chosen).astype(np.int64)


def _show_image(axis, image: np.ndarray, edge_colour: str | None = None) -> None:
    axis.imshow(image, interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
    if edge_colour:
        for spine in axis.spines.values():
            spine.set_edgecolor(edge_colour)
            spine.set_linewidth(4)


def plot_samples(
    images: np.ndarray, true: np.ndarray, probabilities: np.ndarray, labels: Sequence[str], path: Path, seed: int = 0
) -> Path:
    """A grid of test images: the true label, the top-3 predictions with probabilities; green right, red wrong."""
    predicted = probabilities.argmax(axis=1)
    chosen = choose_samples(true, predicted, SAMPLE_ROWS * SAMPLE_COLUMNS, seed)
    figure = Figure(figsize=SAMPLES_INCHES, layout="constrained")
    axes = figure.subplots(SAMPLE_ROWS, SAMPLE_COLUMNS, squeeze=False).ravel()
    for axis in axes:
        axis.axis("off")
    for axis, index in zip(axes, chosen):
        axis.axis("on")
        correct = predicted[index] == true[index]
        colour = "tab:green" if correct else "tab:red"
        _show_image(axis, images[index], colour)
        top = np.argsort(-probabilities[index], kind="stable")[:3]
        lines = [f"{labels[i]} {probabilities[index, i]:.1%}" for i in top]
        axis.set_title(
            f"{'right' if correct else 'WRONG'} · true: {labels[true[index]]}",
            fontsize=9,
            color=colour,
            fontweight="bold",
        )
        axis.set_xlabel("\n".join(lines), fontsize=8)
    figure.suptitle(
        "Test images: true label (title), top-3 predictions (below); green = right, red = wrong", fontsize=11
    )
    return _save(figure, path)


def plot_confused_pairs(
    pairs: Sequence[dict],
    images: np.ndarray,
    true: np.ndarray,
    predicted: np.ndarray,
    labels: Sequence[str],
    path: Path,
    *,
    seed: int = 0,
) -> Path:
    """One row per confused pair: test images of class A taken for B, then one correctly classified B."""
    generator = np.random.default_rng(seed)
    rows = max(len(pairs), 1)
    figure = Figure(figsize=confused_pairs_inches(rows), layout="constrained")
    axes = figure.subplots(rows, PAIR_EXAMPLES + 2, squeeze=False, width_ratios=[2.4] + [1] * (PAIR_EXAMPLES + 1))
    for axis in axes.ravel():
        axis.axis("off")
    if not pairs:
        axes[0, 0].text(0, 0.5, "No misclassified test images.", fontsize=12, va="center")
    for row, pair in enumerate(pairs):
        source, target = pair["true"], pair["predicted"]
        axes[row, 0].text(
            0,
            0.5,
            f"true: {labels[source]}\npredicted: {labels[target]}\n"
            f"{pair['count']} image{'s' if pair['count'] != 1 else ''} "
            f"({pair['share_of_true']:.0%} of {labels[source]})",
            fontsize=11,
            va="center",
            transform=axes[row, 0].transAxes,
        )
        examples = np.flatnonzero((true == source) & (predicted == target))
        examples = generator.choice(examples, min(len(examples), PAIR_EXAMPLES), replace=False)
        for column, index in enumerate(sorted(examples), start=1):
            axes[row, column].axis("on")
            _show_image(axes[row, column], images[index], "tab:red")
        references = np.flatnonzero((true == target) & (predicted == target))
        if not len(references):
            references = np.flatnonzero(true == target)
        if len(references):
            axis = axes[row, PAIR_EXAMPLES + 1]
            axis.axis("on")
            _show_image(axis, images[references[0]], "tab:green")
            axis.set_xlabel(f"a real {labels[target]}", fontsize=9)
    figure.suptitle(
        "Most confused pairs: examples taken for the other class (red), and a real one (green)", fontsize=12
    )
    return _save(figure, path)
