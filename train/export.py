"""Export a run's Keras model to TFLite and gate the int8 model against the float one.

    python train/export.py --run runs/NAME [--max-drop 1.0] [--calibration-samples 500]

Writes, under runs/NAME/:
  tflite/model_float32.tflite   the float graph, for reference and GPUs
  tflite/model_float16.tflite   float16 weights (half the size, float compute)
  tflite/model_dynamic.tflite   dynamic-range: int8 weights, float activations
  tflite/model_int8.tflite      full integer, always: uint8 input, int8 kernels, uint8 output, no float op
  tflite/model_int8_mixed.tflite or model_16x8.tflite   only as a fallback (below)
  tflite/labels.txt, tflite/metadata.json   what the demo and the Pi need next to the models;
                                metadata.json's "served" names the variant they serve
  quantization.json             every variant measured on the test split (train/check.py)
and the float-vs-int8 table in report.md (train/report.py).

The int8 model is calibrated on a stratified sample of training images. When
plain full-integer quantization falls more than `--max-drop` points of top-1
below the Keras model, the converter looks for a fallback: it ranks tensors by
their quantization error (tf.lite.experimental.QuantizationDebugger) and keeps
the fewest of them in float ("int8_mixed"), then tries int16 activations
("16x8"). A fallback that passes ships under its own name, and only when it runs
faster than float32; model_int8.tflite stays full-integer. The demo and the camera
serve int8 when it passes, else the fastest variant that did (metadata.json's "served"). See
docs/quantization.md. The command exits 1 when the full-integer int8 model misses
the gate (whatever fallback ships), 2 on bad input.

This file is the command and the run: options, the order of the steps, the files
written. The steps live beside it:
  train/export_tflite.py   the converter calls: SavedModel, float variants, calibrate, quantize, 16x8
  train/export_search.py   the int8 search: tensor ranking, tensors kept in float, the 16x8 fallback
  train/export_graph.py    the .tflite graph as a list of ops, and the uint8-input edit
  train/check.py           the float-vs-int8 measurement (the Checker)
  train/loaders.py         the run's Keras model and splits, when the caller does not hold them
  edge/common/records.py   quantization.json and tflite/metadata.json as records, the gate, the served variant

Training side: it needs TensorFlow (the converter) and the run's data. The files it
writes are read on the device side by edge/runtime.py alone.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge import runtime
from edge.common import artifacts, command, configuration, formatting, records, run_folder, versions
from edge.common.configuration import option
from train import check, data, export_graph, export_search, export_tflite, loaders, models, qat, report
from train.config import CALIBRATION_SAMPLES, MAX_DROP_POINTS  # The training's export defaults too: defined once.
from train.export_tflite import ExportError

#: Images the quantization debugger runs to rank tensors by their error; the ranking is stable
#: long before the calibration sample's size, and the debug model runs every layer twice.
DEBUG_SAMPLES = 64
#: Quantization-aware fine-tuning (train/qat.py) when plain int8 misses the gate: epochs over
#: QAT_SAMPLES training images, distilling the float model. Three epochs took the outlier toy of
#: tests/test_convert.py from 2% to 79% top-1 agreement with float (1e-3 learning rate).
QAT_EPOCHS = 3
QAT_SAMPLES = 5000
#: Selective quantization gives up when this many tensors in float still miss the gate: by then
#: the model is no longer "int8" in any useful sense, and 16x8 is the better fallback.
MAX_FLOAT_TENSORS = 32
VARIANTS = run_folder.CONVERTED_VARIANTS
#: The packages whose versions quantization.json records (after Python's).
RECORDED_PACKAGES = ("tensorflow", "keras", "ai-edge-litert", "tflite-runtime", "numpy")
#: The temporary workspace's name starts with this, then the exporting process's id and a dash. A kill
#: leaves the workspace behind (SavedModels, hundreds of MB for B0); the id lets the next export remove
#: the workspaces of exports that no longer run without touching one that still does.
WORKSPACE_PREFIX = "export-"


@dataclasses.dataclass
class ExportConfig:
    """Options of `python train/export.py`. Points are percentage points of top-1 accuracy."""

    run: str = option("", "the run directory (model.keras, config.json, labels.txt)", "Export", metavar="DIR")
    variants: list = option(list(VARIANTS), "variants to write; int8 is always written (the gate needs it)", "Export")
    calibration_samples: int = option(CALIBRATION_SAMPLES, "stratified training images that calibrate int8", "Export")
    seed: int = option(0, "seed of the calibration sample", "Export")

    max_drop: float = option(
        MAX_DROP_POINTS,
        "gate: the largest int8 top-1 drop below the Keras model, in points; the command exits 1 beyond it",
        "Gate",
    )
    selective: bool = option(True, "when plain int8 misses the gate, keep the worst tensors in float", "Gate")
    max_float_layers: int = option(
        MAX_FLOAT_TENSORS,
        "selective quantization: the most parts of the network kept in float (tensors, without a validation split)",
        "Gate",
    )
    try_16x8: bool = option(True, "when int8 misses the gate, try int16 activations with int8 weights", "Gate")
    debug_samples: int = option(DEBUG_SAMPLES, "images the quantization debugger ranks tensors on", "Gate")
    qat: int | None = option(
        None,
        "quantization-aware fine-tuning epochs: always run with this many; none: "
        f"{QAT_EPOCHS} epochs only when plain int8 misses the gate; 0: never",
        "Gate",
    )
    qat_samples: int = option(
        QAT_SAMPLES, "stratified training images the quantization-aware fine-tune distils the float model on", "Gate"
    )

    runtime: Literal["litert", "tflite-runtime"] | None = option(
        None, "TFLite runtime of the check; none: the first installed", "Check"
    )
    threads: int | None = option(None, "interpreter threads in the check; none: the runtime's choice", "Check")
    latency_runs: int = option(check.LATENCY_RUNS, "single-image calls timed per variant", "Check")

    def __post_init__(self) -> None:
        unknown = [name for name in self.variants if name not in VARIANTS]
        if unknown:
            raise configuration.ConfigError(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
        self.variants = [name for name in VARIANTS if name in self.variants or name == "int8"]
        if self.calibration_samples < 1:
            raise configuration.ConfigError(f"calibration_samples must be >= 1, got {self.calibration_samples}")
        if self.qat is not None and self.qat < 0:
            raise configuration.ConfigError(f"qat must be >= 0 epochs (0: never), got {self.qat}")
        if self.qat_samples < 1:
            raise configuration.ConfigError(f"qat_samples must be >= 1, got {self.qat_samples}")
        if self.max_float_layers < 1 or self.debug_samples < 1 or self.latency_runs < 1:
            raise configuration.ConfigError("max_float_layers, debug_samples and latency_runs must be >= 1")


def export_run(
    run_dir: str | Path,
    model: Any = None,
    splits: Any = None,
    max_drop: float = MAX_DROP_POINTS,
    calibration_samples: int = CALIBRATION_SAMPLES,
    reference_probabilities: Any = None,
    **options: Any,
) -> dict:
    """Convert, check and gate one run; return the quantization.json content.

    `model` (the Keras model) and `splits` (train.data.Splits) save reloading them when the
    caller has them in memory, as train/run.py does, and `reference_probabilities` (that model's
    output on the test split) saves predicting it again. `options` are other ExportConfig fields.
    """
    config = ExportConfig(run=str(run_dir), max_drop=max_drop, calibration_samples=calibration_samples, **options)
    return run(config, model=model, splits=splits, reference_probabilities=reference_probabilities)


def run(config: ExportConfig, model: Any = None, splits: Any = None, reference_probabilities: Any = None) -> dict:
    """Write every variant, measure them on the test split and return the quantization.json content."""
    run_dir = Path(config.run)
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: no such run directory")
    tflite_dir = run_dir / run_folder.TFLITE_DIR
    _say_removed(remove_leftovers(run_dir))
    model = model if model is not None else loaders.load_model(run_dir)
    # A GPU run's model computes in bfloat16; TFLite needs float32 arithmetic to convert and calibrate.
    float_model = models.as_float32(model)
    if float_model is not model:  # The reference is what gets converted: the float32 copy, predicted anew.
        model, reference_probabilities = float_model, None
    splits = splits if splits is not None else loaders.load_splits(run_dir)
    if len(splits.test_labels) == 0:
        raise ExportError(f"{run_dir}: the test split is empty; the float-vs-int8 check needs it")
    # metadata.json is written last, after the check. Without it the device side serves nothing from this
    # folder (run_folder.served_model), so a kill from here on cannot leave an unchecked model served.
    (tflite_dir / run_folder.METADATA_FILE).unlink(missing_ok=True)
    # No stale file that metadata.json does not describe; fallbacks are decided anew by every export.
    for variant in set(run_folder.VARIANTS) - set(config.variants):
        (tflite_dir / run_folder.variant_file(variant)).unlink(missing_ok=True)
    artifacts.write_labels(tflite_dir / run_folder.LABELS_FILE, splits.labels)
    checker = check.Checker(
        model,
        splits,
        runtime=config.runtime,
        threads=config.threads,
        latency_runs=config.latency_runs,
        labels_path=tflite_dir / run_folder.LABELS_FILE,
        test_reference=reference_probabilities,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=workspace_prefix(os.getpid())) as workspace:
        step = time.perf_counter()
        saved_model = export_tflite.export_saved_model(model, Path(workspace) / "saved_model", run_dir)
        # The quantized variants end at the logits (softmax on the device, in float): see models.logits_model.
        logits = models.logits_model(model)
        quantized_source = (
            saved_model
            if logits is None
            else export_tflite.export_saved_model(
                logits, Path(workspace) / "saved_model_logits", run_dir, output_name=runtime.LOGITS_OUTPUT
            )
        )
        _progress("SavedModel for the converter", step)
        paths = {}
        for variant in config.variants:
            if variant != "int8":
                step = time.perf_counter()
                converted = export_tflite.convert_float(saved_model, variant)
                paths[variant] = artifacts.write_atomic(tflite_dir / run_folder.variant_file(variant), converted)
                _progress(f"{paths[variant].name} ({formatting.size(paths[variant].stat().st_size)})", step)
        calibration = _calibration_images(splits, config)
        make_qat = None
        if logits is not None and config.qat != 0:
            make_qat = _qat_maker(logits, splits, calibration, config, run_dir, Path(workspace))
        search = export_search.search_int8(
            quantized_source,
            calibration,
            checker,
            Path(workspace),
            max_drop=config.max_drop,
            selective=config.selective,
            max_float_layers=config.max_float_layers,
            try_16x8=config.try_16x8,
            debug_samples=config.debug_samples,
            make_qat=make_qat,
            always_qat=bool(config.qat),
        )
        paths["int8"] = artifacts.write_atomic(tflite_dir / run_folder.INT8_MODEL_FILE, search["int8"])
        print(
            f"export: {paths['int8'].name} ({formatting.size(len(search['int8']))}), scheme {search['int8_scheme']}",
            flush=True,
        )
        fallback = _judge_fallback(search["fallback"], checker, saved_model, paths, Path(workspace))
        if fallback is not None and fallback["shipped"]:
            paths[fallback["variant"]] = artifacts.write_atomic(
                tflite_dir / run_folder.variant_file(fallback["variant"]), search["fallback"]["model"]
            )
    conversion_seconds = time.perf_counter() - started

    quantization = checker.check(paths, config.max_drop)
    quantization.int8_search = records.Int8Search(
        attempts=search["attempts"],
        ranked_tensors=search["ranked_tensors"],
        ranking=search["ranking"],
        fallback=fallback,
    )
    int8 = quantization.int8
    int8.scheme, int8.float_tensors, int8.float_layers = (
        search["int8_scheme"],
        [],
        export_graph.float_layers(search["int8"]),
    )
    if make_qat is not None and any(attempt["scheme"] == "int8-qat" for attempt in search["attempts"]):
        quantization.int8_search.qat = {
            "epochs": config.qat or QAT_EPOCHS,
            "samples": config.qat_samples,
            "learning_rate": qat.LEARNING_RATE,
            "target": "the float model",
            "outlier_factor": qat.OUTLIER_FACTOR,
        }
    if fallback is not None and fallback["shipped"]:
        shipped = quantization.variants[fallback["variant"]]
        for key in records.VariantResult.MADE_BY:
            setattr(shipped, key, search["fallback"][key])
    quantization.served = records.served_variant(quantization)
    quantization.source_run = str(run_dir)
    quantization.calibration = {
        "samples": int(len(calibration)),
        "split": "train",
        "stratified": True,
        "seed": config.seed,
    }
    quantization.conversion_seconds = round(conversion_seconds, 1)
    quantization.versions = versions.package_versions(RECORDED_PACKAGES)
    quantization.created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    model_metadata = _tflite_metadata(run_dir, splits, quantization, paths)
    # metadata.json last: it marks the folder as checked (run_folder.served_model).
    records.write(run_dir / run_folder.QUANTIZATION_FILE, quantization)
    records.write(tflite_dir / run_folder.METADATA_FILE, model_metadata)
    report.update_quantization_section(run_dir, quantization)
    return quantization.to_dict()


def workspace_prefix(pid: int) -> str:
    """The start of the temporary workspace's name of the export running as process `pid`."""
    return f"{WORKSPACE_PREFIX}{pid}-"


def remove_leftovers(run_dir: str | Path, temporary_root: str | Path | None = None) -> list[Path]:
    """Remove what killed exports left; return what was removed.

    That is the hidden `.partial-*` files (edge/artifacts.atomic_path) in the run folder and its
    tflite/ folder, and the workspaces under `temporary_root` (the system's temporary folder by
    default) of export processes that no longer exist. A running export's workspace stays.
    """
    run_dir = Path(run_dir)
    removed = artifacts.remove_partial_files(run_dir)
    if (run_dir / run_folder.TFLITE_DIR).is_dir():
        removed += artifacts.remove_partial_files(run_dir / run_folder.TFLITE_DIR)
    root = Path(temporary_root if temporary_root is not None else tempfile.gettempdir())
    for workspace in sorted(root.glob(f"{WORKSPACE_PREFIX}*")):
        owner = _workspace_owner(workspace)
        if owner is None or not workspace.is_dir() or _process_exists(owner):
            continue
        shutil.rmtree(workspace, ignore_errors=True)  # Another user's folder stays; it is then not listed.
        if not workspace.exists():
            removed.append(workspace)
    return removed


def _workspace_owner(workspace: Path) -> int | None:
    """The process id in a workspace's name (`workspace_prefix`), or None for a name of another form."""
    match = re.fullmatch(rf"{re.escape(WORKSPACE_PREFIX)}(\d+)-.+", workspace.name)
    return int(match.group(1)) if match else None


def _process_exists(pid: int) -> bool:
    """Whether process `pid` exists; signal 0 checks without sending anything."""
    if pid <= 0:  # os.kill(0, ...) would mean the whole process group: not a process id of a workspace.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Another user's process: it exists.
        return True
    return True


def _progress(what: str, started: float) -> None:
    """One line of the export's progress: what was done, and how long it took since `started`."""
    print(f"export: {what} in {formatting.step_time(time.perf_counter() - started)}", flush=True)


def _say_removed(removed: list[Path]) -> None:
    if removed:
        print(f"removed what interrupted exports left: {', '.join(str(path) for path in removed)}", flush=True)


def _judge_fallback(
    fallback: dict | None, checker: check.Checker, saved_model: Path, paths: dict[str, Path], workspace: Path
) -> dict | None:
    """Whether the search's passing fallback ships: only when it runs faster than float32.

    A fallback keeps float arithmetic (int8_mixed) or runs int16 kernels that are often reference
    ones (16x8); slower than the float32 file, it would be a slow model with an int8-sounding name.
    Returns what quantization.json records about it, or None when the search found none.
    """
    if fallback is None:
        return None
    candidate = workspace / "fallback.tflite"
    candidate.write_bytes(fallback["model"])
    float32 = paths.get("float32")
    if float32 is None:  # Not asked for as a variant: converted here, only to time it.
        float32 = workspace / "float32_for_timing.tflite"
        float32.write_bytes(export_tflite.convert_float(saved_model, "float32"))
    latency_ms, float32_ms = checker.latency_ms(candidate), checker.latency_ms(float32)
    shipped = latency_ms < float32_ms
    return {
        "variant": fallback["variant"],
        "scheme": fallback["scheme"],
        "float_tensors": fallback["float_tensors"],
        "latency_ms": latency_ms,
        "float32_latency_ms": float32_ms,
        "shipped": shipped,
        "reason": (
            f"passes the gate and runs faster than float32 ({latency_ms:.3g} vs {float32_ms:.3g} ms)"
            if shipped
            else f"passes the gate but is slower than float32 ({latency_ms:.3g} vs "
            f"{float32_ms:.3g} ms), so it is not shipped"
        ),
    }


def _qat_maker(
    logits: Any, splits: Any, calibration: np.ndarray, config: ExportConfig, run_dir: Path, workspace: Path
) -> Callable[[], bytes]:
    """What makes the quantization-aware int8 model, when the search asks for it (it trains, so only then)."""

    def make() -> bytes:
        indices = data.stratified_sample(splits.train_labels, config.qat_samples, config.seed)
        copy = qat.quantization_aware_copy(logits, calibration)
        qat.fine_tune(
            copy,
            logits,
            np.ascontiguousarray(splits.train_images[indices]),
            epochs=config.qat or QAT_EPOCHS,
            seed=config.seed,
        )
        saved = export_tflite.export_saved_model(
            copy, workspace / "saved_model_qat", run_dir, output_name=runtime.LOGITS_OUTPUT
        )
        return export_tflite.quantize(export_tflite.calibrate(saved, calibration))

    return make


def _calibration_images(splits: Any, config: ExportConfig) -> np.ndarray:
    indices = data.stratified_sample(splits.train_labels, config.calibration_samples, config.seed)
    if len(indices) == 0:
        raise ExportError("the training split is empty; int8 calibration needs training images")
    return np.ascontiguousarray(splits.train_images[indices])


# ---------------------------------------------------------------------------------------------
# What travels with the models


def _tflite_metadata(
    run_dir: Path, splits: Any, quantization: records.Quantization, paths: dict[str, Path]
) -> records.ModelMetadata:
    """tflite/metadata.json: all the demo and the Pi need besides the .tflite file and labels.txt."""
    run_metadata = records.read_optional(records.RunMetadata, run_dir / run_folder.METADATA_FILE)
    run_metadata = run_metadata or records.RunMetadata()
    height, width, _ = splits.input_shape
    return records.ModelMetadata(
        source_run=str(run_dir),
        model=run_metadata.model,
        dataset=splits.dataset,
        input_size=[height, width],
        input_dtype="uint8",
        labels_file=run_folder.LABELS_FILE,
        num_classes=splits.num_classes,
        label_mode=run_metadata.label_mode,
        superclasses=splits.superclasses,
        superclass_of=None if splits.superclass_of is None else [int(i) for i in splits.superclass_of],
        preprocessing="edge.preprocess.prepare_image: RGB, centre crop, antialiased resize to input_size; "
        "the model does the rest",
        # What the demo and the camera serve (run_folder.served_model): int8 when it passed, else the
        # fastest variant that did (records.served_variant).
        served=quantization.served,
        variants={variant: records.ShippedVariant.of(quantization.variants[variant]) for variant in paths},
        reference=quantization.reference,
        test_images=quantization.test_images,
        max_drop=quantization.max_drop,
        passed=quantization.passed,
        runtime=quantization.runtime,
        versions=quantization.versions,
        created=quantization.created,
    )


COMMAND = command.Command(
    name="export",
    prog="python train/export.py",
    description=__doc__.split("\n")[0],
    config_class=ExportConfig,
    run=run,
    required=("run",),
    exit_status=lambda config, result: check.gate_status(result, config.run),
)


main = command.entry_point(COMMAND)


if __name__ == "__main__":
    raise SystemExit(main())
