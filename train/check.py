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

Training side: it loads the Keras model and the very splits the run trained and was
evaluated on (train/loaders.py). The numbers are train/metrics.py's (`compare_to_reference`);
the files it reads and writes, the gate (`passes`), what is served (`served_variant`) and the
exit status (`gate_status`) are edge/common/records.py's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import statistics
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge import runtime
from edge.common import command, formatting, records, run_folder
from edge.common.configuration import option
from edge.common.errors import UserError
from edge.common.records import TOP_K, gate_status, passes  # gate_status: the exit printing, shared with export
from train import loaders, report
from train.metrics import compare_to_reference, top1, top_k_accuracy

#: Single-image interpreter calls timed per variant (after `LATENCY_WARMUP` untimed ones); the
#: median of 50 is stable to a few percent on a quiet CPU.
LATENCY_RUNS = 50
LATENCY_WARMUP = 5
#: Images per Keras predict call for the reference.
REFERENCE_BATCH = 128


class CheckError(UserError):
    """The check cannot run (no test images, files missing); the message names what is missing."""


@dataclasses.dataclass
class CheckConfig:
    """Options of `python train/check.py`."""

    run: str = option("", "the run directory, with tflite/ written by train/export.py", "Check", metavar="DIR")
    max_drop: float | None = option(None, "gate in points; none: the one quantization.json recorded", "Check")
    runtime: Literal["litert", "tflite-runtime"] | None = option(
        None, "TFLite runtime; none: the first installed", "Check"
    )
    threads: int | None = option(None, "interpreter threads; none: the runtime's choice", "Check")
    latency_runs: int = option(LATENCY_RUNS, "single-image calls timed per variant", "Check")


def run(config: CheckConfig) -> dict:
    """Re-measure the variants in <run>/tflite; keep what the converter recorded about the int8 search."""
    run_dir = Path(config.run)
    previous_path = run_dir / run_folder.QUANTIZATION_FILE
    previous = records.read_optional(records.Quantization, previous_path) or records.Quantization()
    max_drop = config.max_drop if config.max_drop is not None else previous.max_drop
    if max_drop is None:
        raise CheckError(f"{previous_path}: not found; give --max-drop")
    tflite_dir = run_dir / run_folder.TFLITE_DIR
    paths = {
        variant: tflite_dir / run_folder.variant_file(variant)
        for variant in run_folder.VARIANTS
        if (tflite_dir / run_folder.variant_file(variant)).is_file()
    }  # Fallbacks too, when shipped.
    if "int8" not in paths:
        raise CheckError(
            f"{tflite_dir / run_folder.INT8_MODEL_FILE}: not found; run python train/export.py --run {run_dir}"
        )
    checker = Checker(
        loaders.load_model(run_dir),
        loaders.load_splits(run_dir),
        runtime=config.runtime,
        threads=config.threads,
        latency_runs=config.latency_runs,
        labels_path=tflite_dir / run_folder.LABELS_FILE,
    )
    result = checker.check(paths, max_drop)
    result.keep_how_made(previous)  # What the converter knew about how each was made.
    # The search, the calibration and the rest of the export's record stay as the export wrote them.
    quantization = records.Quantization.from_dict({**previous.to_dict(), **result.to_dict()}, str(previous_path))
    quantization.served = records.served_variant(quantization)
    records.write(previous_path, quantization)
    metadata_path = tflite_dir / run_folder.METADATA_FILE
    if metadata_path.exists():  # The demo and the camera read what to serve from here.
        metadata = records.read(records.ModelMetadata, metadata_path)
        metadata.take_verdict(quantization)
        records.write(metadata_path, metadata)
    report.update_quantization_section(run_dir, quantization)
    return quantization.to_dict()


class Checker:
    """Measures TFLite files against one Keras model on one run's splits; caches what it computed."""

    def __init__(
        self,
        model: Any,
        splits: Any,
        *,
        runtime: str | None = None,
        threads: int | None = None,
        latency_runs: int = LATENCY_RUNS,
        labels_path: str | Path | None = None,
        test_reference: np.ndarray | None = None,
    ):
        if len(splits.test_labels) == 0:
            raise CheckError("the test split is empty; the float-vs-int8 check needs test images")
        self.model, self.splits = model, splits
        self.runtime, self.threads, self.latency_runs = runtime, threads, latency_runs
        self.labels_path = labels_path
        # The caller may already hold the Keras model's test-split output (train/run.py does).
        self._reference: dict[str, np.ndarray] = (
            {} if test_reference is None else {"test": np.asarray(test_reference, dtype=np.float32)}
        )
        self._predictions: dict[tuple[str, str], np.ndarray] = {}

    def _images(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return getattr(self.splits, f"{split}_images"), getattr(self.splits, f"{split}_labels")

    def reference(self, split: str = "test") -> np.ndarray:
        """The Keras model's probabilities on a split (float32, computed once)."""
        if split not in self._reference:
            images, _ = self._images(split)
            self._reference[split] = np.asarray(
                self.model.predict(images, batch_size=REFERENCE_BATCH, verbose=0), dtype=np.float32
            )
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
        change = np.mean(top1(self.predictions(model_path, split)) == labels) - np.mean(
            top1(self.reference(split)) == labels
        )
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
        measured = compare_to_reference(
            self.reference("test"), self.predictions(model_path, "test"), labels, self.splits.labels, TOP_K
        )
        result.update(
            {key: measured[key] for key in ("drop_points", "drop_standard_error_points", "agreement", "kl_divergence")}
        )
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

    def check(self, paths: dict[str, Path], max_drop: float) -> records.Quantization:
        """quantization.json's measurements for the files in `paths` ({variant: path}); needs "int8"."""
        if "int8" not in paths:
            raise CheckError("the check needs the int8 model")
        _, labels = self._images("test")
        reference = self.reference("test")
        result = records.Quantization(
            reference=records.Reference(
                model="keras float32",
                top1=float(np.mean(top1(reference) == labels)),
                top5=top_k_accuracy(labels, reference, TOP_K),
            ),
            test_images=int(len(labels)),
        )
        details = None
        for variant, path in paths.items():
            started = time.perf_counter()
            path = Path(path)
            if not path.is_file():
                raise CheckError(f"{path}: model file not found")
            classifier = self.classifier(path)
            measured = records.VariantResult.from_dict(
                compare_to_reference(reference, self.predictions(path), labels, self.splits.labels, TOP_K)
            )
            measured.file, measured.size_bytes = path.name, path.stat().st_size
            measured.latency_ms = self.latency_ms(path)
            measured.input = _tensor(classifier.input_dtype, classifier.input_quantization)
            measured.output = _tensor(
                classifier.interpreter.get_output_details()[0]["dtype"],
                classifier.output_quantization,
                values="logits" if classifier.output_is_logits else "probabilities",
            )
            result.variants[variant] = measured
            details = details or classifier.describe()
            print(
                f"check: {variant} on {len(labels)} test images, top-1 {formatting.percent(measured.top1)}, "
                f"in {formatting.step_time(time.perf_counter() - started)}",
                flush=True,
            )
        result.max_drop, result.drop_points = max_drop, result.int8.drop_points
        result.passed = passes(result.int8.drop_points, max_drop)
        result.gate = f"int8 test top-1 at most {max_drop} points below the Keras float model"
        result.runtime = records.RuntimeInfo(
            name=details["runtime"],
            version=details["runtime_version"],
            threads=self.threads,
            latency_runs=self.latency_runs,
        )
        return result


def _tensor(dtype: Any, quantization: tuple[float, int], **description: str) -> dict:
    scale, zero_point = quantization
    return {"dtype": str(np.dtype(dtype)), "scale": float(scale), "zero_point": int(zero_point), **description}


COMMAND = command.Command(
    name="check",
    prog="python train/check.py",
    description=__doc__.split("\n")[0],
    config_class=CheckConfig,
    run=run,
    required=("run",),
    exit_status=lambda config, result: gate_status(result, config.run),
)


main = command.entry_point(COMMAND)


if __name__ == "__main__":
    raise SystemExit(main())
