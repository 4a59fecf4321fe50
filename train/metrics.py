"""Classification metrics in plain numpy, in one place, so every number in metrics.json can be checked.

All functions take integer class indices (`true`, `predicted`: shape (N,)) and/or
probabilities (shape (N, classes), rows summing to one). Results are fractions
(0-1), not percentages. No scikit-learn: the definitions are short, and keeping
them here means the tests can compare them with a direct count.

Conventions (the same as scikit-learn's with `zero_division=0`):
- precision of a class that is never predicted, recall of a class with no test
  images, and F1 when precision + recall is 0 are 0;
- macro averages are plain means over all classes (every class weighs the same);
- per-class accuracy is the share of a class's test images classified correctly,
  which is by definition the same number as its recall.

Used by `train/evaluate.py` (metrics.json) and `train/check.py` (a TFLite variant against the Keras
model: `compare_to_reference`); not a command.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.common.records import TOP_K

#: Equal-width confidence bins of the expected calibration error (the common choice since
#: Guo et al. 2017, "On Calibration of Modern Neural Networks").
CALIBRATION_BINS = 15

#: Probabilities are clipped to at least this before the logarithm, so one confident
#: mistake costs log(1e7) ~ 16 nats instead of infinity.
PROBABILITY_FLOOR = 1e-7


def _as_indices(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D array of integer class indices, got {array.dtype} {array.shape}")
    return array.astype(np.int64)


def _check_probabilities(probabilities: Any, count: int) -> np.ndarray:
    array = np.asarray(probabilities, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != count:
        raise ValueError(f"probabilities must have shape ({count}, classes), got {array.shape}")
    return array


def confusion_matrix(true: Any, predicted: Any, num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes): row = true class, column = predicted class."""
    true, predicted = _as_indices(true, "true"), _as_indices(predicted, "predicted")
    if true.shape != predicted.shape:
        raise ValueError(f"true and predicted differ in length: {true.shape} vs {predicted.shape}")
    for name, values in (("true", true), ("predicted", predicted)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} holds class indices outside 0..{num_classes - 1}")
    flat = np.bincount(true * num_classes + predicted, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def top_k_accuracy(true: Any, probabilities: Any, k: int) -> float:
    """Share of samples whose true class is among the k most probable (k is capped at the class count)."""
    true = _as_indices(true, "true")
    probabilities = _check_probabilities(probabilities, len(true))
    k = min(k, probabilities.shape[1])
    # A stable sort on the negated values breaks ties towards the lower index, like argmax.
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == true[:, None], axis=1))) if len(true) else 0.0


def cross_entropy(true: Any, probabilities: Any) -> float:
    """Mean negative log probability of the true class (nats), without label smoothing."""
    true = _as_indices(true, "true")
    probabilities = _check_probabilities(probabilities, len(true))
    chosen = probabilities[np.arange(len(true)), true]
    return float(np.mean(-np.log(np.maximum(chosen, PROBABILITY_FLOOR)))) if len(true) else 0.0


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = numerator.astype(np.float64)
    denominator = denominator.astype(np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def per_class_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1, accuracy and support (test images) from a confusion matrix."""
    confusion = np.asarray(confusion)
    correct = np.diag(confusion)
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    precision = _safe_divide(correct, predicted_count)
    recall = _safe_divide(correct, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": recall.copy(),
        "support": support.astype(np.int64),
    }


def expected_calibration_error(true: Any, probabilities: Any, bins: int = CALIBRATION_BINS) -> float:
    """ECE: over equal-width bins of top-1 confidence, the sample-weighted |accuracy - mean confidence|.

    Bins are (lower, upper] intervals of [0, 1]; a confidence of exactly 0 falls in the first bin.
    """
    true = _as_indices(true, "true")
    probabilities = _check_probabilities(probabilities, len(true))
    if not len(true):
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    bin_index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    total = 0.0
    for index in range(bins):
        members = bin_index == index
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def superclass_scores(true: Any, predicted: Any, superclass_of: Any) -> dict[str, float | None]:
    """Fine predictions mapped to superclasses.

    `accuracy`: share of samples whose predicted fine class lies in the true superclass.
    `errors_within_superclass`: of the wrong fine predictions, the share that still lies in
    the true superclass (None when there are no errors).
    """
    true, predicted = _as_indices(true, "true"), _as_indices(predicted, "predicted")
    mapping = _as_indices(superclass_of, "superclass_of")
    same_superclass = mapping[true] == mapping[predicted]
    wrong = true != predicted
    return {
        "accuracy": float(same_superclass.mean()) if len(true) else 0.0,
        "errors_within_superclass": float(same_superclass[wrong].mean()) if wrong.any() else None,
    }


def most_confused_pairs(confusion: np.ndarray, count: int = 10) -> list[dict[str, Any]]:
    """The largest off-diagonal cells: (true, predicted, images, share of the true class's images).

    Ties are broken by the lower true class, then the lower predicted class, so the list is stable.
    """
    confusion = np.asarray(confusion)
    off_diagonal = confusion.copy()
    np.fill_diagonal(off_diagonal, 0)
    flat = off_diagonal.ravel()
    order = np.argsort(-flat, kind="stable")
    support = confusion.sum(axis=1)
    pairs = []
    for position in order[:count]:
        if flat[position] == 0:
            break
        true_index, predicted_index = divmod(int(position), confusion.shape[1])
        pairs.append(
            {
                "true": true_index,
                "predicted": predicted_index,
                "count": int(flat[position]),
                "share_of_true": float(flat[position] / support[true_index]),
            }
        )
    return pairs


def classification_metrics(
    true: Any,
    probabilities: Any,
    labels: Sequence[str],
    superclass_of: Any = None,
    superclasses: Sequence[str] | None = None,
    *,
    top_k: int = TOP_K,
    pairs: int = 10,
) -> dict[str, Any]:
    """Everything metrics.json holds about one set of predictions, as JSON-ready values."""
    true = _as_indices(true, "true")
    probabilities = _check_probabilities(probabilities, len(true))
    if probabilities.shape[1] != len(labels):
        raise ValueError(f"the model gives {probabilities.shape[1]} probabilities but there are {len(labels)} labels")
    predicted = probabilities.argmax(axis=1)
    confusion = confusion_matrix(true, predicted, len(labels))
    scores = per_class_scores(confusion)
    result: dict[str, Any] = {
        "samples": int(len(true)),
        "num_classes": len(labels),
        "top1": top_k_accuracy(true, probabilities, 1),
        f"top{top_k}": top_k_accuracy(true, probabilities, top_k),
        "loss": cross_entropy(true, probabilities),
        "macro": {name: float(scores[name].mean()) for name in ("precision", "recall", "f1")},
        "calibration": {
            "expected_calibration_error": expected_calibration_error(true, probabilities),
            "bins": CALIBRATION_BINS,
        },
        "per_class": {
            label: {
                name: (int(scores[name][index]) if name == "support" else float(scores[name][index]))
                for name in ("precision", "recall", "f1", "accuracy", "support")
            }
            for index, label in enumerate(labels)
        },
        "superclass": None,
        "confused_pairs": [
            dict(pair, true_label=labels[pair["true"]], predicted_label=labels[pair["predicted"]])
            for pair in most_confused_pairs(confusion, pairs)
        ],
    }
    if superclass_of is not None:
        mapping = _as_indices(superclass_of, "superclass_of")
        if len(mapping) != len(labels):
            raise ValueError(f"superclass_of has {len(mapping)} entries for {len(labels)} labels")
        superclass = superclass_scores(true, predicted, mapping)
        names = list(superclasses) if superclasses is not None else [str(index) for index in range(mapping.max() + 1)]
        superclass["names"] = names
        for label, index in zip(labels, mapping):
            result["per_class"][label]["superclass"] = names[int(index)]
        result["superclass"] = superclass
    return result


# ---------------------------------------------------------------------------------------------
# A model against a reference model on the same images: the float-vs-int8 check's numbers
# (train/check.py), per TFLite variant against the Keras model.

#: Classes listed as "losing most" per variant (only those that do lose).
WORST_CLASSES = 5


def top1(probabilities: np.ndarray) -> np.ndarray:
    """Predicted class per row; ties go to the lower index, as np.argmax and Classifier.top_k do."""
    return np.argmax(probabilities, axis=1)


def mean_kl_divergence(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean over images of KL(reference || candidate), in nats, both floored at PROBABILITY_FLOOR."""
    p = np.clip(reference.astype(np.float64), PROBABILITY_FLOOR, 1.0)
    q = np.clip(candidate.astype(np.float64), PROBABILITY_FLOOR, 1.0)
    # KL is never negative; flooring without renormalising can leave -1e-12 of float noise.
    return max(0.0, float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))))


def compare_to_reference(
    reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray, class_names: list[str], top_k: int = TOP_K
) -> dict[str, Any]:
    """Accuracy of `candidate` and how it differs from `reference` (both (N, classes) probabilities):
    quantization.json's measurements of one variant (edge/common/records.py's VariantResult)."""
    reference_top1, candidate_top1 = top1(reference), top1(candidate)
    reference_correct, candidate_correct = reference_top1 == labels, candidate_top1 == labels
    accuracy = float(np.mean(candidate_correct))
    change = accuracy - float(np.mean(reference_correct))
    losers = []
    for index, name in enumerate(class_names):
        members = labels == index
        if not members.any():
            continue
        before, after = float(np.mean(reference_correct[members])), float(np.mean(candidate_correct[members]))
        if after < before:
            losers.append({"label": name, "reference_top1": before, "top1": after, "images": int(members.sum())})
    losers.sort(key=lambda row: (row["top1"] - row["reference_top1"], row["label"]))
    broken = int(np.sum(reference_correct & ~candidate_correct))
    fixed = int(np.sum(~reference_correct & candidate_correct))
    return {
        "top1": accuracy,
        "top5": top_k_accuracy(labels, candidate, top_k),
        "top1_change": change,
        "drop_points": -100.0 * change + 0.0,
        "drop_standard_error_points": drop_standard_error(broken, fixed, len(labels)),
        "broken": broken,
        "fixed": fixed,
        "agreement": float(np.mean(reference_top1 == candidate_top1)),
        "kl_divergence": mean_kl_divergence(reference, candidate),
        "worst_classes": losers[:WORST_CLASSES],
    }


def drop_standard_error(broken: int, fixed: int, count: int) -> float:
    """Standard error, in points, of the paired top-1 difference (as in McNemar's test).

    `broken`: images the reference gets right and the candidate wrong; `fixed`: the reverse. The
    drop is (broken - fixed) / count; with many flips in both directions, a small drop is noise.
    """
    if count == 0:
        return float("nan")
    variance = (broken + fixed) - (broken - fixed) ** 2 / count
    return 100.0 * float(np.sqrt(max(variance, 0.0))) / count
