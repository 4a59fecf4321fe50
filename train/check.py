"""The float-vs-int8 check: every TFLite variant against the Keras model, on the whole test split.

    python train/check.py --run runs/NAME [--max-drop 1.0]   # measure the files in runs/NAME/tflite again

Each variant runs through the real interpreter (edge.runtime.Classifier, the
class the demo and the Pi use), over every test image. Per variant:
top-1 and top-5 accuracy, the top-1 change against the Keras model (fraction)
and the drop in points, top-1 agreement with the Keras model, the mean KL
divergence of the probabilities, the classes that lose most, the file size and
the median single-image latency. The gate: the int8 model's drop must not
exceed `max_drop` points. train/export.py runs this after converting and
writes the result to quantization.json; this command re-measures existing files
(after installing another runtime, say) and rewrites quantization.json.

Training side: it loads the Keras model (train/models.py) and the very splits the
run trained and was evaluated on (train/data.py).
"""
from __future__ import annotations

import dataclasses
import hashlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import numpy as np

from edge import runtime
from edge.common import artifacts, command, configuration, errors, formatting, run_folder
from edge.common.configuration import option
from edge.common.errors import UserError
from train import data, models, report
from train.config import TrainConfig
from train.metrics import PROBABILITY_FLOOR, top_k_accuracy

#: Single-image interpreter calls timed per variant (after `LATENCY_WARMUP` untimed ones); the
#: median of 50 is stable to a few percent on a quiet CPU.
LATENCY_RUNS = 50
LATENCY_WARMUP = 5
#: Classes listed as "losing most" per variant (only those that do lose).
WORST_CLASSES = 5
TOP_K = 5
#: Images per Keras predict call for the reference.
REFERENCE_BATCH = 128


class CheckError(UserError):
    """The check cannot run (no test images, files missing); the message names what is missing."""


@dataclasses.dataclass
class CheckConfig:
    """Options of `python train/check.py`."""

    run: str = option("", "the run directory, with tflite/ written by train/export.py", "Check", metavar="DIR")
    max_drop: Optional[float] = option(None, "gate in points; none: the one quantization.json recorded", "Check")
    runtime: Optional[Literal["litert", "tflite-runtime"]] = option(
        None, "TFLite runtime; none: the first installed", "Check")
    threads: Optional[int] = option(None, "interpreter threads; none: the runtime's choice", "Check")
    latency_runs: int = option(LATENCY_RUNS, "single-image calls timed per variant", "Check")


def gate_status(result: dict, run_dir: str | Path) -> int:
    """The end of the export and the check: the summary line, and exit status 1 with a line saying
    so when the full-integer int8 model misses the gate (0 when it passes)."""
    print(report.summary_line(result))
    if result["passed"]:
        return 0
    print(f"error: no int8 model is within {result['max_drop']} points of the float model: the full-integer "
          f"model_int8.tflite misses the gate (serving {result.get('served', 'int8')} instead); "
          f"see {Path(run_dir) / run_folder.QUANTIZATION_FILE}", file=sys.stderr)
    return 1


def run(config: CheckConfig) -> dict:
    """Re-measure the variants in <run>/tflite; keep what the converter recorded about the int8 search."""
    run_dir = Path(config.run)
    previous_path = run_dir / run_folder.QUANTIZATION_FILE
    previous = run_folder.read_optional_json(previous_path)
    max_drop = config.max_drop if config.max_drop is not None else previous.get("max_drop")
    if max_drop is None:
        raise CheckError(f"{previous_path}: not found; give --max-drop")
    tflite_dir = run_dir / run_folder.TFLITE_DIR
    paths = {variant: tflite_dir / run_folder.variant_file(variant) for variant in run_folder.VARIANTS
             if (tflite_dir / run_folder.variant_file(variant)).is_file()}  # Fallbacks too, when shipped.
    if "int8" not in paths:
        raise CheckError(f"{tflite_dir / run_folder.INT8_MODEL_FILE}: not found; "
                         f"run python train/export.py --run {run_dir}")
    checker = Checker(load_model(run_dir), load_splits(run_dir), runtime=config.runtime, threads=config.threads,
                      latency_runs=config.latency_runs, labels_path=tflite_dir / run_folder.LABELS_FILE)
    result = {**previous, **checker.check(paths, max_drop)}
    for variant, measured in result["variants"].items():  # What the converter knew about how each was made.
        for key in ("scheme", "float_tensors", "float_layers"):
            if key in previous.get("variants", {}).get(variant, {}):
                measured[key] = previous["variants"][variant][key]
    result["served"] = served_variant(result)
    artifacts.write_json(previous_path, result)
    metadata_path = tflite_dir / run_folder.METADATA_FILE
    if metadata_path.exists():  # The demo and the camera read what to serve from here.
        metadata = artifacts.read_json(metadata_path)
        metadata.update(served=result["served"], passed=result["passed"], max_drop=result["max_drop"])
        artifacts.write_json(metadata_path, metadata)
    report.update_quantization_section(run_dir, result)
    return result


# ---------------------------------------------------------------------------------------------
# The run's model and data: the Keras model with the project's custom layers, and the very
# splits the run trained and was evaluated on.


def load_model(run_dir: str | Path) -> Any:
    path = Path(run_dir) / run_folder.MODEL_FILE
    if not path.is_file():
        raise CheckError(f"{path}: model file not found")
    return models.load_model(path)


def load_splits(run_dir: str | Path) -> data.Splits:
    return data.load_splits(TrainConfig.from_run(run_dir))


def top1(probabilities: np.ndarray) -> np.ndarray:
    """Predicted class per row; ties go to the lower index, as np.argmax and Classifier.top_k do."""
    return np.argmax(probabilities, axis=1)


def mean_kl_divergence(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean over images of KL(reference || candidate), in nats, both floored at PROBABILITY_FLOOR."""
    p = np.clip(reference.astype(np.float64), PROBABILITY_FLOOR, 1.0)
    q = np.clip(candidate.astype(np.float64), PROBABILITY_FLOOR, 1.0)
    # KL is never negative; flooring without renormalising can leave -1e-12 of float noise.
    return max(0.0, float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))))


def compare(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy of `candidate` and how it differs from `reference` (both (N, classes) probabilities)."""
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
    return {"top1": accuracy, "top5": top_k_accuracy(labels, candidate, TOP_K), "top1_change": change,
            "drop_points": -100.0 * change + 0.0,
            "drop_standard_error_points": drop_standard_error(broken, fixed, len(labels)),
            "broken": broken, "fixed": fixed, "agreement": float(np.mean(reference_top1 == candidate_top1)),
            "kl_divergence": mean_kl_divergence(reference, candidate), "worst_classes": losers[:WORST_CLASSES]}


def drop_standard_error(broken: int, fixed: int, count: int) -> float:
    """Standard error, in points, of the paired top-1 difference (as in McNemar's test).

    `broken`: images the reference gets right and the candidate wrong; `fixed`: the reverse. The
    drop is (broken - fixed) / count; with many flips in both directions, a small drop is noise.
    """
    if count == 0:
        return float("nan")
    variance = (broken + fixed) - (broken - fixed) ** 2 / count
    return 100.0 * float(np.sqrt(max(variance, 0.0))) / count


def passes(drop_points: float, max_drop: float) -> bool:
    """The gate. A tiny epsilon keeps 1.0000000002 points (float noise) from failing a 1.0 gate."""
    return drop_points <= max_drop + 1e-9


def served_variant(quantization: dict) -> str:
    """The variant the demo and the camera should serve.

    int8 whenever it is within the gate: the full-integer file is the product (it runs on every
    integer accelerator, and it is the same file everywhere), and choosing it does not hang on a
    latency measurement's noise. Otherwise the fastest (median single-image latency) of the
    variants within the gate; int8 when none is, so that the failure stays visible.
    """
    variants, max_drop = quantization["variants"], quantization["max_drop"]
    if passes(variants[run_folder.SERVED_VARIANT]["drop_points"], max_drop):
        return run_folder.SERVED_VARIANT
    passing = [(measured["latency_ms"], variant) for variant, measured in variants.items()
               if passes(measured["drop_points"], max_drop)]
    return min(passing)[1] if passing else run_folder.SERVED_VARIANT


class Checker:
    """Measures TFLite files against one Keras model on one run's splits; caches what it computed."""

    def __init__(self, model: Any, splits: Any, runtime: str | None = None, threads: int | None = None,
                 latency_runs: int = LATENCY_RUNS, labels_path: str | Path | None = None,
                 test_reference: np.ndarray | None = None):
        if len(splits.test_labels) == 0:
            raise CheckError("the test split is empty; the float-vs-int8 check needs test images")
        self.model, self.splits = model, splits
        self.runtime, self.threads, self.latency_runs = runtime, threads, latency_runs
        self.labels_path = labels_path
        # The caller may already hold the Keras model's test-split output (train/run.py does).
        self._reference: dict[str, np.ndarray] = (
            {} if test_reference is None else {"test": np.asarray(test_reference, dtype=np.float32)})
        self._predictions: dict[tuple[str, str], np.ndarray] = {}

    def _images(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return getattr(self.splits, f"{split}_images"), getattr(self.splits, f"{split}_labels")

    def reference(self, split: str = "test") -> np.ndarray:
        """The Keras model's probabilities on a split (float32, computed once)."""
        if split not in self._reference:
            images, _ = self._images(split)
            self._reference[split] = np.asarray(self.model.predict(images, batch_size=REFERENCE_BATCH, verbose=0),
                                                dtype=np.float32)
        return self._reference[split]

    def classifier(self, model_path: str | Path) -> runtime.Classifier:
        return runtime.Classifier(model_path, labels_path=self.labels_path, runtime=self.runtime, threads=self.threads)

    def predictions(self, model_path: str | Path, split: str = "test") -> np.ndarray:
        """A TFLite file's probabilities on a split, through the runtime's Classifier (cached by content)."""
        key = (hashlib.sha256(Path(model_path).read_bytes()).hexdigest(), split)
        if key not in self._predictions:
            images, _ = self._images(split)
            self._predictions[key] = self.classifier(model_path).predict(images)
        return self._predictions[key]

    def drop_points(self, model_path: str | Path, split: str) -> float:
        _, labels = self._images(split)
        change = np.mean(top1(self.predictions(model_path, split)) == labels) - \
            np.mean(top1(self.reference(split)) == labels)
        return float(-100.0 * change) + 0.0  # + 0.0: no "-0.00" in reports.

    def screen(self, model_path: str | Path, max_drop: float, always_test: bool = False) -> dict:
        """Does a candidate pass the gate? Validation first (cheap, and keeps the choice among
        candidates off the test split); the test split only for those that pass it, or always
        with `always_test` (the plain int8 baseline that the report compares against)."""
        result: dict[str, Any] = {}
        if len(self.splits.val_labels):
            result["val_drop_points"] = self.drop_points(model_path, "val")
            if not passes(result["val_drop_points"], max_drop) and not always_test:
                return {**result, "passed": False}
        _, labels = self._images("test")
        measured = compare(self.reference("test"), self.predictions(model_path, "test"), labels, self.splits.labels)
        result.update({key: measured[key] for key in ("drop_points", "drop_standard_error_points", "agreement",
                                                      "kl_divergence")})
        passed = passes(result["drop_points"], max_drop) and passes(result.get("val_drop_points", -np.inf), max_drop)
        return {**result, "passed": passed}

    def latency_ms(self, model_path: str | Path) -> float:
        """Median time of one single-image `interpreter.invoke()`, in milliseconds."""
        classifier = self.classifier(model_path)
        images, _ = self._images("test")
        classifier.predict(images[:1])  # Sets the batch size to one and the input tensor.
        interpreter, timings = classifier.interpreter, []
        for run_index in range(LATENCY_WARMUP + self.latency_runs):
            started = time.perf_counter()
            interpreter.invoke()
            if run_index >= LATENCY_WARMUP:
                timings.append(time.perf_counter() - started)
        return 1000.0 * statistics.median(timings)

    def check(self, paths: dict[str, Path], max_drop: float) -> dict:
        """quantization.json's measurements for the files in `paths` ({variant: path}); needs "int8"."""
        if "int8" not in paths:
            raise CheckError("the check needs the int8 model")
        _, labels = self._images("test")
        reference = self.reference("test")
        result = {"reference": {"model": "keras float32", "top1": float(np.mean(top1(reference) == labels)),
                                "top5": top_k_accuracy(labels, reference, TOP_K)},
                  "test_images": int(len(labels)), "variants": {}}
        details = None
        for variant, path in paths.items():
            started = time.perf_counter()
            path = Path(path)
            if not path.is_file():
                raise CheckError(f"{path}: model file not found")
            classifier = self.classifier(path)
            measured = compare(reference, self.predictions(path), labels, self.splits.labels)
            measured.update(file=path.name, size_bytes=path.stat().st_size, latency_ms=self.latency_ms(path),
                            input=_tensor(classifier.input_dtype, classifier.input_quantization),
                            output=_tensor(classifier.interpreter.get_output_details()[0]["dtype"],
                                           classifier.output_quantization,
                                           values="logits" if classifier.output_is_logits else "probabilities"))
            result["variants"][variant] = measured
            details = details or classifier.describe()
            print(f"check: {variant} on {len(labels)} test images, top-1 {formatting.percent(measured['top1'])}, "
                  f"in {formatting.step_time(time.perf_counter() - started)}", flush=True)
        int8 = result["variants"]["int8"]
        result.update(max_drop=max_drop, drop_points=int8["drop_points"], passed=passes(int8["drop_points"], max_drop),
                      gate=f"int8 test top-1 at most {max_drop} points below the Keras float model",
                      runtime={"name": details["runtime"], "version": details["runtime_version"],
                               "threads": self.threads, "latency_runs": self.latency_runs})
        return result


def _tensor(dtype: Any, quantization: tuple[float, int], **description: str) -> dict:
    scale, zero_point = quantization
    return {"dtype": str(np.dtype(dtype)), "scale": float(scale), "zero_point": int(zero_point), **description}


COMMAND = command.Command(
    name="check", prog="python train/check.py", description=__doc__.split("\n")[0],
    config_class=CheckConfig, run=run, required=("run",),
    exit_status=lambda config, result: gate_status(result, config.run))


def main(argv: Sequence[str] | None = None) -> int:
    return command.execute(COMMAND, argv)


if __name__ == "__main__":
    raise SystemExit(main())
