"""The TFLite graph as a list of ops, and the one edit the converter makes to it.

    python train/export.py --run runs/NAME   # the command that uses this module

Part of the TFLite export (train/export.py). `graph_ops` and `float_layers` read a
.tflite file's main subgraph (what the report lists as "stays float");
`denylist_for` turns tensors to keep in float into the quantizer's denylist;
`integer_input` removes the float CAST in front of an int8 graph, with TensorFlow's
flatbuffer tools.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils


def _read(model_bytes: bytes) -> Any:
    return flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))


def graph_ops(model_bytes: bytes) -> list[dict]:
    """The main subgraph's ops in execution order: {"op", "inputs", "outputs", "output_types"} (names)."""
    model = _read(model_bytes)
    tensors = model.subgraphs[0].tensors

    def name(index: int) -> str:
        return tensors[index].name.decode("utf-8") if index >= 0 else ""

    return [
        {
            "op": flatbuffer_utils.opcode_to_name(model, operator.opcodeIndex),
            "inputs": [name(index) for index in operator.inputs if index >= 0],
            "outputs": [name(index) for index in operator.outputs],
            "output_types": [flatbuffer_utils.type_to_name(tensors[index].type) for index in operator.outputs],
        }
        for operator in model.subgraphs[0].operators
    ]


def float_layers(model_bytes: bytes) -> list[dict]:
    """Ops that compute in floating point ({"op", "tensor"}), the QUANTIZE/DEQUANTIZE seams excluded."""
    return [
        {"op": op["op"], "tensor": op["outputs"][0]}
        for op in graph_ops(model_bytes)
        if op["op"] not in ("QUANTIZE", "DEQUANTIZE")
        and any(kind in ("FLOAT32", "FLOAT16") for kind in op["output_types"])
    ]


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
    if (
        graph.tensors[cast_output].type != schema.TensorType.FLOAT32
        or cast_output in list(graph.outputs)
        or len(quantizers) != 1
        or opcode(quantizers[0]) != "QUANTIZE"
    ):
        return model_bytes
    quantizers[0].inputs = [source]
    graph.operators.remove(cast)
    parameters = schema.QuantizationParametersT()
    parameters.scale, parameters.zeroPoint = [1.0], [0]
    graph.tensors[source].quantization = parameters
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
