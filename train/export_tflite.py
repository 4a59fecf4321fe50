"""The TFLite converter calls of the export: one SavedModel, then one conversion per variant.

    python train/export.py --run runs/NAME   # the command that uses this module

Part of the TFLite export (train/export.py). `export_saved_model` writes the Keras
model once, with one `training=False` endpoint, and every variant converts from it:
`convert_float` (float32, float16, dynamic range); `calibrate` then `quantize` for
full integer (calibrate once, quantize as often as the int8 search needs, with or
without tensors kept in float); `quantize_16x8`, the int16-activation fallback.
Why each setting: docs/quantization.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.lite.python import convert as lite_convert

from edge.common.errors import UserError
from train import export_graph

#: The signature output name of the float variants, which end in the model's softmax.
PROBABILITIES_OUTPUT = "probabilities"


class ExportError(UserError):
    """The model could not be converted; the message names the run and the variant."""


def export_saved_model(model: Any, directory: Path, run_dir: Path, output_name: str = PROBABILITIES_OUTPUT) -> Path:
    """Keras 3 -> SavedModel with one inference endpoint (uint8 input, `training=False`) whose one
    output is named `output_name`: the converted .tflite keeps it as its signature's output name,
    which tells the device side whether it gets probabilities or logits (edge.runtime.LOGITS_OUTPUT).

    Not `model.export()`: its endpoint calls the model without `training`, and Keras 3's random
    augmentation layers default to training mode, which leaves their random ops in the graph (the
    TFLite converter then fails). Faster than `from_keras_model` (docs/quantization.md).

    Under the JAX backend the endpoint is static (see `_jax_endpoint_options`).
    """
    if len(model.inputs) != 1:
        raise ExportError(f"{run_dir}: the model has {len(model.inputs)} inputs; an image classifier has one")
    spec = tf.TensorSpec(tuple(model.inputs[0].shape), model.inputs[0].dtype, name="image")
    try:
        archive = keras.export.ExportArchive()
        options = _jax_endpoint_options() if keras.backend.backend() == "jax" else {}
        if not options:
            archive.track(model)
        archive.add_endpoint(
            name="serve",
            fn=lambda images: {output_name: model(images, training=False)},
            input_signature=[spec],
            **options,
        )
        archive.write_out(str(directory), verbose=False)
    except Exception as error:  # Keras raises several types; the message says what failed.
        raise ExportError(
            f"{run_dir}: cannot export the Keras model as a SavedModel ({type(error).__name__}: {error})"
        ) from None
    return directory


def _jax_endpoint_options() -> dict:
    """`add_endpoint` options under the JAX backend: a static endpoint, lowered for the CPU.

    Keras' JAX exporter otherwise passes every variable into the function and writes every
    non-trainable one back after the call, the uint32 seed states of Dropout, drop-connect and
    the augmentation included. TFLite cannot hold a uint32 variable ("'tfl.assign_variable' op
    operand #1 must be tensor of ... but got 'tensor<2xui32>'"), and even the float ones would
    stay variables in the .tflite graph. Static, the endpoint reads the weights as constants,
    which is what the converter turns every variable into anyway; at inference nothing is
    written. Lowered for the CPU because a .tflite file runs there, whichever device trained it.
    """
    return {
        "is_static": True,
        "jax2tf_kwargs": {"native_serialization": True, "native_serialization_platforms": ("cpu",)},
    }


def _converter(saved_model: Path) -> Any:
    return tf.lite.TFLiteConverter.from_saved_model(str(saved_model))


def convert_float(saved_model: Path, variant: str) -> bytes:
    """float32, float16 (weights) or dynamic (int8 weights, float activations)."""
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
    converter = _converter(saved_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    # Calibrate once, quantize many times: what QuantizationDebugger itself does.
    converter._experimental_calibrate_only = True  # pylint: disable=protected-access
    return _convert(converter, "int8 calibration")


def quantize(calibrated: bytes, float_tensors: Sequence[str] = (), float_ops: Sequence[str] = ()) -> bytes:
    """Full-integer model from the calibrated one; `float_tensors` (and the ops around them) stay float,
    and so do the ops that write `float_ops` (their neighbours are quantized, with QUANTIZE and
    DEQUANTIZE at the borders: how one part of the network is measured on its own).

    The same quantizer call the converter and QuantizationDebugger.get_nondebug_quantized_model
    make, with our input and output types (the debugger's own call would give float32 output).
    """
    nodes = (
        sorted(set(export_graph.denylist_for(calibrated, float_tensors) if float_tensors else ()) | set(float_ops))
        or None
    )
    try:
        quantized = lite_convert.mlir_quantize(
            calibrated, input_data_type=tf.uint8, output_data_type=tf.uint8, denylisted_nodes=nodes
        )
    except Exception as error:
        raise ExportError(f"int8 quantization failed ({type(error).__name__}: {str(error)[:2000]})") from None
    return export_graph.integer_input(quantized)


def quantize_16x8(saved_model: Path, images: np.ndarray) -> bytes:
    """int16 activations, int8 weights: 256 times finer activations, float32 output.

    The fallback when int8 activations lose too much. Many CPU kernels for it are reference
    (slow) ones, and accelerators such as the Edge TPU do not run it.
    """
    converter = _converter(saved_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(images)
    # TFLITE_BUILTINS lets ops without a 16x8 kernel stay float; the first is the input's CAST.
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
        tf.lite.OpsSet.TFLITE_BUILTINS,
    ]
    return _convert(converter, "16x8")
