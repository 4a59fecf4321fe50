"""The int8 search: plain full integer, and when it misses the gate, a fallback to ship beside it.

    python train/export.py --run runs/NAME   # the command that uses this module

Part of the TFLite export (train/export.py). `search_int8` always makes the plain
full-integer model, which alone is shipped as model_int8.tflite. When it misses the
gate (screened on the validation split, confirmed on the test split by
train/check.py's Checker), the search looks for a fallback that passes, to be
shipped under its own name (run_folder.FALLBACK_VARIANTS) if it is also faster than
float32 (train/export.py decides that). When plain int8 misses, `rank_tensors` runs
tf.lite.experimental.QuantizationDebugger and ranks every quantized tensor by
`noise_to_signal`, and the worst 1, 2, 4, ... stay float, bisected down to the
fewest that pass. Method and measurements: docs/quantization.md.
"""

from __future__ import annotations

import csv
import io
import re
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.lite.python import convert as lite_convert

from edge.common import formatting
from train import check, export_graph, export_tflite
from train.metrics import mean_kl_divergence

#: The variant name (run_folder.FALLBACK_VARIANTS) a passing fallback of each scheme ships under.
FALLBACK_VARIANT_OF_SCHEME = {"int8-selective": "int8_mixed", "16x8": "16x8"}

#: An EfficientNet block's layer-name prefix ("block2a_"), and whether the layer is in its SE branch.
_BLOCK_PATTERN = re.compile(r"^(block\d+[a-z])_(se_)?")

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


def group_of(tensor: str) -> str:
    """The part of the network a tensor belongs to: an EfficientNet block ("block2a"), its
    squeeze-and-excitation branch apart ("block2a_se"), else the Keras layer ("hidden", "conv1"), and
    "output" for the op that writes the model's output."""
    parts = tensor.split(";")[0].split("/")
    for part in parts:
        match = _BLOCK_PATTERN.match(part)
        if match:
            return match.group(1) + ("_se" if match.group(2) else "")
    if len(parts) == 1:  # The converter names the graph's last op after the signature's output.
        return "output"
    return re.sub(r"_\d+$", "", parts[1])


def rank_groups(calibrated: bytes, checker: check.Checker, workspace: Path) -> list[dict]:
    """Every part of the network (`group_of`) by its end-to-end effect, worst first: the model with
    only that part quantized (all else float), its mean KL divergence from the float model on the
    validation split. A part that costs little alone rarely matters, and a small branch that costs
    much (an SE gate) is kept in float whole. Returns [{"group", "tensors", "kl_divergence"}]."""
    tensors = [name for op in export_graph.graph_ops(calibrated) for name in op["outputs"]]
    groups: dict[str, list[str]] = {}
    for name in tensors:
        groups.setdefault(group_of(name), []).append(name)
    reference = checker.reference("val")
    ranking = []
    for index, (group, members) in enumerate(groups.items()):
        member_set = set(members)
        others = [name for name in tensors if name not in member_set]
        path = workspace / f"group_{index}.tflite"
        try:
            path.write_bytes(export_tflite.quantize(calibrated, float_ops=others))
        except export_tflite.ExportError:  # A part the quantizer cannot isolate: ranked last.
            ranking.append({"group": group, "tensors": members, "kl_divergence": float("nan")})
            continue
        ranking.append(
            {
                "group": group,
                "tensors": members,
                "kl_divergence": mean_kl_divergence(reference, checker.predictions(path, "val")),
            }
        )
    ranking.sort(key=lambda entry: -entry["kl_divergence"] if np.isfinite(entry["kl_divergence"]) else np.inf)
    return ranking


def rank_tensors(calibrated: bytes, images: np.ndarray) -> list[dict]:
    """Every quantized tensor with its error, worst first (tf.lite.experimental.QuantizationDebugger)."""

    debug_model = lite_convert.mlir_quantize(calibrated, enable_numeric_verify=True)
    batch = min(DEBUG_BATCH, len(images))
    usable = len(images) // batch * batch  # The debugger sizes its input once, from the first batch.

    def dataset():
        for start in range(0, usable, batch):
            yield [images[start : start + batch]]

    options = tf.lite.experimental.QuantizationDebugOptions(
        layer_direct_compare_metrics={"noise_to_signal": noise_to_signal}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice, once per debugger.
        debugger = tf.lite.experimental.QuantizationDebugger(
            quant_debug_model_content=debug_model, debug_dataset=dataset, debug_options=options
        )
        debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    known = {name for op in export_graph.graph_ops(calibrated) for name in op["outputs"]}
    ranking = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        if row["tensor_name"] not in known:  # Names the quantizer made up have no float twin to keep.
            continue
        scale = float(row["scale"])
        ranking.append(
            {
                "tensor": row["tensor_name"],
                "op": row["op_name"],
                "noise_to_signal": float(row["noise_to_signal"]),
                "rmse_over_scale": float(np.sqrt(float(row["mean_squared_error"]))) / scale if scale else None,
            }
        )
    ranking.sort(key=lambda entry: -entry["noise_to_signal"] if np.isfinite(entry["noise_to_signal"]) else 0.0)
    return ranking


def search_int8(
    saved_model: Path,
    calibration: np.ndarray,
    checker: check.Checker,
    workspace: Path,
    *,
    max_drop: float,
    selective: bool,
    max_float_layers: int,
    try_16x8: bool,
    debug_samples: int,
    make_qat: Callable[[], bytes] | None = None,
    always_qat: bool = False,
) -> dict:
    """The plain full-integer int8 model, and when it misses the gate, the first fallback that passes:
    the fewest tensors kept in float ("int8_mixed"), else 16x8.

    The keyword options are ExportConfig's fields of the same names (train/export.py). `make_qat`
    makes the full-integer model after quantization-aware fine-tuning (train/qat.py): tried when
    plain int8 misses the gate, before any fallback, or always with `always_qat`; when it does
    better it becomes the int8 model (still full-integer, scheme "int8-qat").
    Candidates are screened on the validation split and confirmed on the test split (Checker.screen).
    Returns {"int8": bytes, "fallback": None or {"variant", "model": bytes, "scheme", "float_tensors",
    "float_layers"}, "attempts", "ranked_tensors", "ranking"}.
    """
    attempts: list[dict] = []
    models: list[bytes] = []

    def attempt(
        scheme: str, make: Callable[[], bytes], float_tensors: Sequence[str] = (), always_test: bool = False
    ) -> dict:
        started = time.perf_counter()
        try:
            model = make()
        except export_tflite.ExportError as error:
            record = {"scheme": scheme, "float_tensors": list(float_tensors), "error": str(error), "passed": False}
        else:
            path = workspace / f"candidate_{len(attempts)}.tflite"
            path.write_bytes(model)
            record = {
                "scheme": scheme,
                "float_tensors": list(float_tensors),
                "size_bytes": len(model),
                **checker.screen(path, max_drop, always_test),
            }
            models.append(model)
            record["model_index"] = len(models) - 1
        record["seconds"] = round(time.perf_counter() - started, 1)
        attempts.append(record)
        print(
            f"int8 search: {scheme} with {len(float_tensors)} float tensors: "
            + ("passes" if record["passed"] else "misses")
            + f" the gate ({_drops(record)}) in {formatting.step_time(record['seconds'])}",
            flush=True,
        )
        return record

    started = time.perf_counter()
    calibrated = export_tflite.calibrate(saved_model, calibration)
    print(
        f"int8 search: calibrated on {len(calibration)} training images in "
        f"{formatting.step_time(time.perf_counter() - started)}",
        flush=True,
    )
    plain = attempt("int8", lambda: export_tflite.quantize(calibrated), always_test=True)
    if "model_index" not in plain:
        raise export_tflite.ExportError(f"no full-integer int8 model could be made: {plain['error']}")
    best = plain
    if make_qat is not None and (always_qat or not plain["passed"]):
        trained = attempt("int8-qat", make_qat, always_test=True)
        if "model_index" in trained and _better(trained, plain):
            best = trained
    chosen = best
    ranking: list[dict] = []
    if not chosen["passed"] and selective:
        started = time.perf_counter()
        if len(checker.splits.val_labels):  # Rank parts by their end-to-end effect on validation images.
            ranking = rank_groups(calibrated, checker, workspace)
            units = [entry["tensors"] for entry in ranking]
        else:  # No validation split to measure on: the debugger's per-tensor ranking.
            ranking = rank_tensors(calibrated, calibration[:debug_samples])
            units = [[entry["tensor"]] for entry in ranking]
        print(
            f"int8 search: ranked {len(units)} parts of the network by their quantization error in "
            f"{formatting.step_time(time.perf_counter() - started)}",
            flush=True,
        )

        def try_units(kept_units: list[list[str]]) -> dict:
            kept = [name for unit in kept_units for name in unit]
            return attempt("int8-selective", lambda: export_tflite.quantize(calibrated, kept), kept)

        chosen = _grow_float_set(units[:max_float_layers], try_units)
    if not chosen["passed"] and try_16x8:
        chosen = attempt("16x8", lambda: export_tflite.quantize_16x8(saved_model, calibration))
    fallback = None
    if chosen is not best and chosen.get("passed"):
        model = models[chosen["model_index"]]
        fallback = {
            "variant": FALLBACK_VARIANT_OF_SCHEME[chosen["scheme"]],
            "model": model,
            "scheme": chosen["scheme"],
            "float_tensors": chosen["float_tensors"],
            "float_layers": export_graph.float_layers(model),
        }
    int8 = models[best["model_index"]]
    for record in attempts:
        record.pop("model_index", None)
    return {
        "int8": int8,
        "int8_scheme": best["scheme"],
        "fallback": fallback,
        "attempts": attempts,
        "ranked_tensors": len(ranking),
        "ranking": ranking[: max(max_float_layers, 10)],
    }


def _grow_float_set(ranked: Sequence[Any], try_set: Callable[[list[Any]], dict]) -> dict:
    """Keep the worst 1, 2, 4, ... units (parts of the network, or tensors) in float until a set
    passes, then bisect down to the smallest passing prefix of the ranking. Returns the passing
    record, or the last one tried."""
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
    while count - failing > 1:  # Invariant: `failing` units miss the gate, `count` pass.
        middle = (failing + count) // 2
        record = try_set(list(ranked[:middle]))
        if record["passed"]:
            best, count = record, middle
        else:
            failing = middle
    return best


def _better(candidate: dict, incumbent: dict) -> bool:
    """Whether `candidate` should replace `incumbent` as the int8 model: it passes the gate where the
    incumbent does not, or both pass or both miss and it drops less on the test split."""
    if candidate["passed"] != incumbent["passed"]:
        return bool(candidate["passed"])
    return candidate["drop_points"] < incumbent["drop_points"]


def _drops(record: dict) -> str:
    if "error" in record:
        return record["error"][:200]
    parts = [
        f"{split} drop {record[key]:.2f} points"
        for split, key in (("validation", "val_drop_points"), ("test", "drop_points"))
        if key in record
    ]
    return ", ".join(parts)
