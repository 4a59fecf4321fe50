"""Export a run's Keras model to TFLite and gate the int8 model against the float one.

    python edge/convert.py --run runs/NAME [--max-drop 1.0] [--calibration-samples 500]

Writes, under runs/NAME/:
  tflite/model_float32.tflite   the float graph, for reference and GPUs
  tflite/model_float16.tflite   float16 weights (half the size, float compute)
  tflite/model_dynamic.tflite   dynamic-range: int8 weights, float activations
  tflite/model_int8.tflite      full integer: uint8 input, int8 kernels, uint8 output
  tflite/labels.txt, tflite/metadata.json   what the demo and the Pi need next to the models
  quantization.json             every variant measured on the test split (edge/check.py)
and the float-vs-int8 table in report.md (edge/quantization_report.py).

The int8 model is calibrated on a stratified sample of training images. When
plain full-integer quantization falls more than `--max-drop` points of top-1
below the Keras model, the converter ranks tensors by their quantization error
(tf.lite.experimental.QuantizationDebugger) and keeps the fewest of them in
float, then tries int16 activations (16x8). See docs/quantization.md. The
command exits 1 when no int8 model passes the gate, 2 on bad input.

TensorFlow is imported inside the functions only, so `import edge.convert` stays
cheap; the rest of edge/ never imports it.
"""
from __future__ import annotations

if __package__ in (None, ""):  # Run as a script: make the repository root importable.
    import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import dataclasses
import datetime
import io
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

import numpy as np

from edge import artifacts, check, configuration, quantization_report
from edge.configuration import option

#: The gate: the int8 model's test top-1 may fall at most this many points (1.0 = one percentage
#: point) below the Keras float model's. One point is within the noise of two training seeds on
#: CIFAR-100, and well below the 15+ points naive EfficientNet PTQ loses (tensorflow/tpu#549).
MAX_DROP_POINTS = 1.0
#: Training images (stratified by class) that calibrate the int8 activation ranges.
CALIBRATION_SAMPLES = 500
#: Images the quantization debugger runs to rank tensors by their error; the ranking is stable
#: long before the calibration sample's size, and the debug model runs every layer twice.
DEBUG_SAMPLES = 64
#: Selective quantization gives up when this many tensors in float still miss the gate: by then
#: the model is no longer "int8" in any useful sense, and 16x8 is the better fallback.
MAX_FLOAT_TENSORS = 32
VARIANTS = ("float32", "float16", "dynamic", "int8")
TFLITE_DIR = "tflite"
QUANTIZATION_FILE = "quantization.json"
MODEL_FILE = "model.keras"


class ExportError(RuntimeError):
    """The model could not be converted; the message names the run and the variant."""


@dataclasses.dataclass
class ExportConfig:
    """Options of `python edge/convert.py`. Points are percentage points of top-1 accuracy."""

    run: str = option("", "the run directory (model.keras, config.json, labels.txt)", "Export", metavar="DIR")
    variants: list = option(list(VARIANTS), "variants to write; int8 is always written (the gate needs it)",
                            "Export")
    calibration_samples: int = option(CALIBRATION_SAMPLES, "stratified training images that calibrate int8",
                                      "Export")
    seed: int = option(0, "seed of the calibration sample", "Export")

    max_drop: float = option(MAX_DROP_POINTS, "gate: the largest int8 top-1 drop below the Keras model, "
                             "in points; the command exits 1 beyond it", "Gate")
    selective: bool = option(True, "when plain int8 misses the gate, keep the worst tensors in float", "Gate")
    max_float_layers: int = option(MAX_FLOAT_TENSORS, "selective quantization: the most tensors kept in float",
                                   "Gate")
    try_16x8: bool = option(True, "when int8 misses the gate, try int16 activations with int8 weights", "Gate")
    debug_samples: int = option(DEBUG_SAMPLES, "images the quantization debugger ranks tensors on", "Gate")

    runtime: Optional[Literal["litert", "tflite-runtime"]] = option(
        None, "TFLite runtime of the check; none: the first installed", "Check")
    threads: Optional[int] = option(None, "interpreter threads in the check; none: the runtime's choice", "Check")
    latency_runs: int = option(check.LATENCY_RUNS, "single-image calls timed per variant", "Check")

    def __post_init__(self) -> None:
        unknown = [name for name in self.variants if name not in VARIANTS]
        if unknown:
            raise configuration.ConfigError(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
        self.variants = [name for name in VARIANTS if name in self.variants or name == "int8"]
        if self.calibration_samples < 1:
            raise configuration.ConfigError(f"calibration_samples must be >= 1, got {self.calibration_samples}")
        if self.max_float_layers < 1 or self.debug_samples < 1 or self.latency_runs < 1:
            raise configuration.ConfigError("max_float_layers, debug_samples and latency_runs must be >= 1")


def main(argv: Sequence[str] | None = None) -> int:
    # TensorFlow's C++ info and warning lines bury the command's own output; errors still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(prog="python edge/convert.py", description=__doc__.split("\n")[0])
    configuration.add_arguments(parser, ExportConfig)
    try:
        config = configuration.build_config(ExportConfig, vars(parser.parse_args(argv)), source="the command line")
        if not config.run:
            raise configuration.ConfigError("--run DIR is required")
        result = run(config)
    except check.user_errors() + (ExportError,) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(quantization_report.summary_line(result))
    if not result["passed"]:
        print(f"error: no int8 model is within {config.max_drop} points of the float model; "
              f"see {Path(config.run) / QUANTIZATION_FILE}", file=sys.stderr)
        return 1
    return 0


def export_run(run_dir: str | Path, model: Any = None, splits: Any = None, max_drop: float = MAX_DROP_POINTS,
               calibration_samples: int = CALIBRATION_SAMPLES, **options: Any) -> dict:
    """Convert, check and gate one run; return the quantization.json content.

    `model` (the Keras model) and `splits` (train.data.Splits) save reloading them when the
    caller has them in memory, as train/run.py does. `options` are other ExportConfig fields.
    """
    config = ExportConfig(run=str(run_dir), max_drop=max_drop, calibration_samples=calibration_samples, **options)
    return run(config, model=model, splits=splits)


def run(config: ExportConfig, model: Any = None, splits: Any = None) -> dict:
    """Write every variant, measure them on the test split and return the quantization.json content."""
    run_dir = Path(config.run)
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: no such run directory")
    model = model if model is not None else check.load_model(run_dir)
    # A GPU run's model computes in bfloat16; TFLite needs float32 arithmetic to convert and calibrate.
    from train import models  # Lazy, like check.load_model: the converter is the training side's tool.
    model = models.as_float32(model)
    splits = splits if splits is not None else check.load_splits(run_dir)
    if len(splits.test_labels) == 0:
        raise ExportError(f"{run_dir}: the test split is empty; the float-vs-int8 check needs it")
    tflite_dir = run_dir / TFLITE_DIR
    for variant in set(VARIANTS) - set(config.variants):  # No stale file that metadata.json does not describe.
        (tflite_dir / f"model_{variant}.tflite").unlink(missing_ok=True)
    artifacts.write_labels(tflite_dir / artifacts.LABELS_FILE, splits.labels)
    checker = check.Checker(model, splits, runtime=config.runtime, threads=config.threads,
                            latency_runs=config.latency_runs, labels_path=tflite_dir / artifacts.LABELS_FILE)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="export-") as workspace:
        saved_model = _export_saved_model(model, Path(workspace) / "saved_model", run_dir)
        paths = {}
        for variant in config.variants:
            if variant != "int8":
                paths[variant] = artifacts.write_atomic(tflite_dir / f"model_{variant}.tflite",
                                                        convert_float(saved_model, variant))
        calibration = _calibration_images(splits, config)
        int8 = search_int8(saved_model, calibration, checker, config, Path(workspace))
        paths["int8"] = artifacts.write_atomic(tflite_dir / "model_int8.tflite", int8["model"])
    conversion_seconds = time.perf_counter() - started

    quantization = checker.check(paths, config.max_drop)
    quantization["int8_search"] = {key: value for key, value in int8.items()
                                   if key not in ("model", "scheme", "float_tensors", "float_layers")}
    quantization["variants"]["int8"].update(scheme=int8["scheme"], float_tensors=int8["float_tensors"],
                                            float_layers=int8["float_layers"])
    quantization.update(
        source_run=str(run_dir), calibration={"samples": int(len(calibration)), "split": "train",
                                              "stratified": True, "seed": config.seed},
        conversion_seconds=round(conversion_seconds, 1), versions=_versions(),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    artifacts.write_json(run_dir / QUANTIZATION_FILE, quantization)
    artifacts.write_json(tflite_dir / artifacts.METADATA_FILE, _tflite_metadata(run_dir, splits, quantization, paths))
    quantization_report.update_report(run_dir, quantization)
    return quantization


def _calibration_images(splits: Any, config: ExportConfig) -> np.ndarray:
    from train import data  # Lazy, like check.load_splits: the one sampler, shared with training.
    indices = data.stratified_sample(splits.train_labels, config.calibration_samples, config.seed)
    if len(indices) == 0:
        raise ExportError("the training split is empty; int8 calibration needs training images")
    return np.ascontiguousarray(splits.train_images[indices])


# ---------------------------------------------------------------------------------------------
# Conversion


def _export_saved_model(model: Any, directory: Path, run_dir: Path) -> Path:
    """Keras 3 -> SavedModel with one inference endpoint (uint8 input, `training=False`).

    Not `model.export()`: its endpoint calls the model without `training`, and Keras 3's random
    augmentation layers default to training mode, which leaves their random ops in the graph (the
    TFLite converter then fails). Faster than `from_keras_model` (docs/quantization.md).
    """
    import keras
    import tensorflow as tf
    if len(model.inputs) != 1:
        raise ExportError(f"{run_dir}: the model has {len(model.inputs)} inputs; an image classifier has one")
    spec = tf.TensorSpec(tuple(model.inputs[0].shape), model.inputs[0].dtype, name="image")
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(name="serve", fn=lambda images: model(images, training=False), input_signature=[spec])
        archive.write_out(str(directory), verbose=False)
    except Exception as error:  # Keras raises several types; the message says what failed.
        raise ExportError(f"{run_dir}: cannot export the Keras model as a SavedModel "
                          f"({type(error).__name__}: {error})") from None
    return directory


def _converter(saved_model: Path) -> Any:
    import tensorflow as tf
    return tf.lite.TFLiteConverter.from_saved_model(str(saved_model))


def convert_float(saved_model: Path, variant: str) -> bytes:
    """float32, float16 (weights) or dynamic (int8 weights, float activations)."""
    import tensorflow as tf
    converter = _converter(saved_model)
    if variant in ("float16", "dynamic"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "dynamic":
        # Per-channel dynamic-range FULLY_CONNECTED is op version 12, which tflite-runtime 2.14 (the
        # newest for a Raspberry Pi OS Bookworm Python) cannot load; per-tensor is version 9.
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True  # pylint: disable=protected-access
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return _convert(converter, variant)


def _convert(converter: Any, variant: str) -> bytes:
    try:
        return converter.convert()
    except Exception as error:  # The converter raises ConverterError and others with the MLIR log.
        raise ExportError(f"{variant}: conversion failed ({type(error).__name__}: {str(error)[:2000]})") from None


def _representative(images: np.ndarray) -> Callable[[], Any]:
    """One image per step, as the calibrator expects (the model's input dtype, uint8)."""
    def generate():
        for image in images:
            yield [image[np.newaxis]]
    return generate


def calibrate(saved_model: Path, images: np.ndarray) -> bytes:
    """The float model annotated with activation ranges, quantized later as often as needed."""
    import tensorflow as tf
    converter = _converter(saved_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    # Calibrate once, quantize many times: what QuantizationDebugger itself does.
    converter._experimental_calibrate_only = True  # pylint: disable=protected-access
    return _convert(converter, "int8 calibration")


def quantize(calibrated: bytes, float_tensors: Sequence[str] = ()) -> bytes:
    """Full-integer model from the calibrated one; `float_tensors` (and the ops around them) stay float.

    The same quantizer call the converter and QuantizationDebugger.get_nondebug_quantized_model
    make, with our input and output types (the debugger's own call would give float32 output).
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert as lite_convert
    nodes = denylist_for(calibrated, float_tensors) if float_tensors else None
    try:
        quantized = lite_convert.mlir_quantize(calibrated, input_data_type=tf.uint8, output_data_type=tf.uint8,
                                               denylisted_nodes=nodes)
    except Exception as error:
        raise ExportError(f"int8 quantization failed ({type(error).__name__}: {str(error)[:2000]})") from None
    return integer_input(quantized)


def quantize_16x8(saved_model: Path, images: np.ndarray) -> bytes:
    """int16 activations, int8 weights: 256 times finer activations, float32 output.

    The fallback when int8 activations lose too much. Many CPU kernels for it are reference
    (slow) ones, and accelerators such as the Edge TPU do not run it.
    """
    import tensorflow as tf
    converter = _converter(saved_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(images)
    # TFLITE_BUILTINS lets ops without a 16x8 kernel stay float; the first is the input's CAST.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
    return _convert(converter, "16x8")


# ---------------------------------------------------------------------------------------------
# The graph as a list of ops, and the one edit made to it


def _read(model_bytes: bytes) -> Any:
    from tensorflow.lite.tools import flatbuffer_utils
    return flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))


def graph_ops(model_bytes: bytes) -> list[dict]:
    """The main subgraph's ops in execution order: {"op", "inputs", "outputs", "output_types"} (names)."""
    from tensorflow.lite.tools import flatbuffer_utils
    model = _read(model_bytes)
    tensors = model.subgraphs[0].tensors
    def name(index: int) -> str:
        return tensors[index].name.decode("utf-8") if index >= 0 else ""
    return [{"op": flatbuffer_utils.opcode_to_name(model, operator.opcodeIndex),
             "inputs": [name(index) for index in operator.inputs if index >= 0],
             "outputs": [name(index) for index in operator.outputs],
             "output_types": [flatbuffer_utils.type_to_name(tensors[index].type) for index in operator.outputs]}
            for operator in model.subgraphs[0].operators]


def float_layers(model_bytes: bytes) -> list[dict]:
    """Ops that compute in floating point ({"op", "tensor"}), the QUANTIZE/DEQUANTIZE seams excluded."""
    return [{"op": op["op"], "tensor": op["outputs"][0]} for op in graph_ops(model_bytes)
            if op["op"] not in ("QUANTIZE", "DEQUANTIZE") and
            any(kind in ("FLOAT32", "FLOAT16") for kind in op["output_types"])]


def denylist_for(calibrated: bytes, tensors: Sequence[str]) -> list[str]:
    """Quantizer denylist (op output names) that keeps each of `tensors` in float.

    Denylisting only the op that produces a tensor does not help: the quantizer puts a QUANTIZE
    after it, with the same calibrated range, because its consumers are still int8. So the op
    that writes the tensor and every op that reads it stay float (measured: docs/quantization.md).
    """
    wanted, nodes = set(tensors), set()
    for op in graph_ops(calibrated):
        if wanted & set(op["outputs"]) or wanted & set(op["inputs"]):
            nodes.update(op["outputs"])
    return sorted(nodes)


def integer_input(model_bytes: bytes) -> bytes:
    """Make the uint8 input feed the integer graph directly: CAST(uint8->float32) + QUANTIZE(float32->
    int8) becomes one QUANTIZE(uint8->int8), which requantizes in integer arithmetic.

    The Keras model casts its uint8 input to float in the graph, so the converter leaves that cast
    in front of the first QUANTIZE, a float op that an integer-only accelerator (the Edge TPU) would
    not run. The input gets scale 1 and zero point 0: its real value is the pixel value, exactly what
    the cast produced, so the model computes the same numbers. Graphs of other shapes are returned as is.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils
    model = _read(model_bytes)
    graph = model.subgraphs[0]
    if len(graph.inputs) != 1:
        return model_bytes
    source = graph.inputs[0]
    def opcode(operator) -> str:
        return flatbuffer_utils.opcode_to_name(model, operator.opcodeIndex)
    readers = lambda index: [operator for operator in graph.operators if index in list(operator.inputs)]  # noqa: E731
    casts = readers(source)
    if graph.tensors[source].type != schema.TensorType.UINT8 or len(casts) != 1 or opcode(casts[0]) != "CAST":
        return model_bytes
    cast = casts[0]
    cast_output = cast.outputs[0]
    quantizers = readers(cast_output)
    if (graph.tensors[cast_output].type != schema.TensorType.FLOAT32 or cast_output in list(graph.outputs)
            or len(quantizers) != 1 or opcode(quantizers[0]) != "QUANTIZE"):
        return model_bytes
    quantizers[0].inputs = [source]
    graph.operators.remove(cast)
    parameters = schema.QuantizationParametersT()
    parameters.scale, parameters.zeroPoint = [1.0], [0]
    graph.tensors[source].quantization = parameters
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


# ---------------------------------------------------------------------------------------------
# Selective quantization: rank tensors with the quantization debugger, keep the worst in float

#: Images per debugger invocation. A batch (not one image) lets the error metric see how each
#: channel varies across images, which a fully connected layer's single row per image cannot show.
#: The debug model keeps every tensor, float and int8: EfficientNet-B0 at 224 px needs about
#: 150 MB per image, so the batch stays small.
DEBUG_BATCH = 8


def noise_to_signal(float_values: np.ndarray, quantized_values: np.ndarray, scale: float, zero_point: int) -> float:
    """Median over channels of (RMS quantization error / standard deviation of the float values).

    The TF tutorial's rmse/scale says whether an op rounds worse than one step; it cannot see the
    EfficientNet failure, where one wide channel stretches the per-tensor scale until the other
    channels' signal is a few steps or less. This ratio is ~0.01 for a healthy int8 tensor and
    near or above 1 for a drowned one. Channels constant over the batch are left out.
    """
    reference = np.asarray(float_values, dtype=np.float64)
    restored = (np.asarray(quantized_values, dtype=np.float64) - zero_point) * scale
    channels = reference.shape[-1] if reference.ndim else 1
    reference, restored = reference.reshape(-1, channels), restored.reshape(-1, channels)
    error = np.sqrt(np.mean((reference - restored) ** 2, axis=0))
    signal = reference.std(axis=0)
    live = signal > 0
    return float(np.median(error[live] / signal[live])) if live.any() else 0.0


def rank_tensors(calibrated: bytes, images: np.ndarray) -> list[dict]:
    """Every quantized tensor with its error, worst first (tf.lite.experimental.QuantizationDebugger)."""
    import csv
    import warnings

    import tensorflow as tf
    from tensorflow.lite.python import convert as lite_convert
    debug_model = lite_convert.mlir_quantize(calibrated, enable_numeric_verify=True)
    batch = min(DEBUG_BATCH, len(images))
    usable = len(images) // batch * batch  # The debugger sizes its input once, from the first batch.

    def dataset():
        for start in range(0, usable, batch):
            yield [images[start:start + batch]]

    options = tf.lite.experimental.QuantizationDebugOptions(
        layer_direct_compare_metrics={"noise_to_signal": noise_to_signal})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice, once per debugger.
        debugger = tf.lite.experimental.QuantizationDebugger(
            quant_debug_model_content=debug_model, debug_dataset=dataset, debug_options=options)
        debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    known = {name for op in graph_ops(calibrated) for name in op["outputs"]}
    ranking = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        if row["tensor_name"] not in known:  # Names the quantizer made up have no float twin to keep.
            continue
        scale = float(row["scale"])
        ranking.append({"tensor": row["tensor_name"], "op": row["op_name"],
                        "noise_to_signal": float(row["noise_to_signal"]),
                        "rmse_over_scale": float(np.sqrt(float(row["mean_squared_error"]))) / scale if scale else None})
    ranking.sort(key=lambda entry: -entry["noise_to_signal"] if np.isfinite(entry["noise_to_signal"]) else 0.0)
    return ranking


def search_int8(saved_model: Path, calibration: np.ndarray, checker: check.Checker, config: ExportConfig,
                workspace: Path) -> dict:
    """The int8 model to ship: plain full-integer if it passes, else the fewest float tensors that
    pass, else 16x8 if that passes; when nothing passes, the candidate that dropped least.

    Candidates are screened on the validation split and confirmed on the test split (Checker.screen).
    Returns {"model": bytes, "scheme", "float_tensors", "float_layers", "attempts", "ranking"}.
    """
    attempts: list[dict] = []
    models: list[bytes] = []

    def attempt(scheme: str, make: Callable[[], bytes], float_tensors: Sequence[str] = (),
                always_test: bool = False) -> dict:
        started = time.perf_counter()
        try:
            model = make()
        except ExportError as error:
            record = {"scheme": scheme, "float_tensors": list(float_tensors), "error": str(error), "passed": False}
        else:
            path = workspace / f"candidate_{len(attempts)}.tflite"
            path.write_bytes(model)
            record = {"scheme": scheme, "float_tensors": list(float_tensors), "size_bytes": len(model),
                      **checker.screen(path, config.max_drop, always_test)}
            models.append(model)
            record["model_index"] = len(models) - 1
        record["seconds"] = round(time.perf_counter() - started, 1)
        attempts.append(record)
        print(f"int8 search: {scheme} with {len(float_tensors)} float tensors: "
              + ("passes" if record["passed"] else "misses") + f" the gate ({_drops(record)})", flush=True)
        return record

    calibrated = calibrate(saved_model, calibration)
    chosen = attempt("int8", lambda: quantize(calibrated), always_test=True)
    ranking: list[dict] = []
    if not chosen["passed"] and config.selective:
        ranking = rank_tensors(calibrated, calibration[:config.debug_samples])
        names = [entry["tensor"] for entry in ranking]
        chosen = _grow_float_set(names[:config.max_float_layers],
                                 lambda kept: attempt("int8-selective", lambda: quantize(calibrated, kept), kept))
    if not chosen["passed"] and config.try_16x8:
        chosen = attempt("16x8", lambda: quantize_16x8(saved_model, calibration))
    if not chosen["passed"]:
        measured = [record for record in attempts if "model_index" in record]
        if not measured:
            raise ExportError("no int8 model could be made: " + "; ".join(record["error"] for record in attempts))
        chosen = min(measured, key=lambda record: (_worst_drop(record), len(record["float_tensors"])))
    model = models[chosen["model_index"]]
    if chosen is not attempts[0] and "model_index" in attempts[0]:
        # What keeping tensors in float (or 16x8) costs: time the plain int8 model too.
        attempts[0]["latency_ms"] = checker.latency_ms(workspace / "candidate_0.tflite")
    for record in attempts:
        record.pop("model_index", None)
    return {"model": model, "scheme": chosen["scheme"], "float_tensors": chosen["float_tensors"],
            "float_layers": float_layers(model), "passed_screen": chosen["passed"], "attempts": attempts,
            "ranked_tensors": len(ranking), "ranking": ranking[:max(config.max_float_layers, 10)]}


def _grow_float_set(ranked: Sequence[str], try_set: Callable[[list[str]], dict]) -> dict:
    """Keep the worst 1, 2, 4, ... tensors in float until a set passes, then bisect down to the
    smallest passing prefix of the ranking. Returns the passing record, or the last one tried."""
    if not ranked:
        return {"passed": False, "float_tensors": []}
    failing, count, record = 0, 1, {}
    while True:
        record = try_set(list(ranked[:count]))
        if record["passed"]:
            break
        if count == len(ranked):
            return record
        failing, count = count, min(2 * count, len(ranked))
    best = record
    while count - failing > 1:  # Invariant: `failing` tensors miss the gate, `count` pass.
        middle = (failing + count) // 2
        record = try_set(list(ranked[:middle]))
        if record["passed"]:
            best, count = record, middle
        else:
            failing = middle
    return best


def _worst_drop(record: dict) -> float:
    return max(record.get("drop_points", -np.inf), record.get("val_drop_points", -np.inf))


def _drops(record: dict) -> str:
    if "error" in record:
        return record["error"][:200]
    parts = [f"{split} drop {record[key]:.2f} points" for split, key in
             (("validation", "val_drop_points"), ("test", "drop_points")) if key in record]
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# What travels with the models


def _tflite_metadata(run_dir: Path, splits: Any, quantization: dict, paths: dict[str, Path]) -> dict:
    """tflite/metadata.json: all the demo and the Pi need besides the .tflite file and labels.txt."""
    run_metadata_path = run_dir / artifacts.METADATA_FILE
    run_metadata = artifacts.read_json(run_metadata_path) if run_metadata_path.exists() else {}
    height, width, _ = splits.input_shape
    variants = {}
    for variant, path in paths.items():
        measured = quantization["variants"][variant]
        variants[variant] = {key: measured[key] for key in ("file", "size_bytes", "input", "output", "top1", "top5",
                                                            "agreement", "drop_points", "latency_ms")}
    int8 = quantization["variants"]["int8"]
    variants["int8"].update(scheme=int8["scheme"], float_layers=int8["float_layers"])
    return {
        "source_run": str(run_dir), "model": run_metadata.get("model"), "dataset": splits.dataset,
        "input_size": [height, width], "input_dtype": "uint8", "labels_file": artifacts.LABELS_FILE,
        "num_classes": splits.num_classes, "label_mode": run_metadata.get("label_mode"),
        "superclasses": splits.superclasses,
        "superclass_of": None if splits.superclass_of is None else [int(i) for i in splits.superclass_of],
        "preprocessing": "edge.preprocess.prepare_image: RGB, centre crop, antialiased resize to input_size; "
                         "the model does the rest",
        "recommended": "int8", "variants": variants,
        "reference": quantization["reference"], "test_images": quantization["test_images"],
        "max_drop": quantization["max_drop"], "passed": quantization["passed"],
        "runtime": quantization["runtime"], "versions": quantization["versions"], "created": quantization["created"],
    }


def _versions() -> dict:
    import importlib.metadata
    versions = {"python": platform.python_version()}
    for distribution in ("tensorflow", "keras", "ai-edge-litert", "tflite-runtime", "numpy"):
        try:
            versions[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


if __name__ == "__main__":
    raise SystemExit(main())
