"""Run an exported .tflite classifier without TensorFlow: what the demo and the Pi use.

`Classifier` loads a model through ai-edge-litert (LiteRT), or tflite-runtime
when LiteRT is not installed, reads the input size, dtype and quantization
`(scale, zero_point)` from the model's tensor details, quantizes the uint8
image input and dequantizes the output, and returns top-k `(label, probability)`
pairs. Images go through `edge.preprocess.prepare_image`, the one
preprocessing function. Imports numpy, Pillow and a TFLite runtime only; a
test proves TensorFlow stays out of `sys.modules`.

Outputs are probabilities. The float variants end in the model's softmax. The
quantized ones (int8 and its fallbacks) end at the logits instead, marked by their
signature's output name (`LOGITS_OUTPUT`), and the softmax runs here, on the host,
in float: a uint8 softmax output has steps of 1/256, which rounds every
probability below 1/512 to zero and so destroys top-5 and breaks ties towards the
lower class index.

Its command line is edge/classify.py (`python edge/classify.py --model MODEL photo.jpg`).
"""

from __future__ import annotations

import ctypes
import importlib
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge import preprocess
from edge.common import artifacts, run_folder, versions
from edge.common.errors import UserError

# The runtimes, in the order tried when none is named, with their module and pip name.
RUNTIMES = {
    "litert": ("ai_edge_litert.interpreter", "ai-edge-litert"),
    "tflite-runtime": ("tflite_runtime.interpreter", "tflite-runtime"),
}

# Larger batches are split into chunks of this many images: one resized
# interpreter serves them all, and memory stays bounded (64 x 224 x 224 x 3
# bytes of input is under 10 MB; intermediate tensors are larger but bounded).
MAX_BATCH = 64

_INTEGER_TYPES = (np.uint8, np.int8)


class ModelError(UserError):
    """A model-side problem (missing or corrupt .tflite, labels that do not fit, an input
    that is not an image, an unusable runtime or delegate); the message names the file."""


#: The signature output name that marks a model ending at the logits (train/export.py writes it):
#: the softmax is then applied here. Any other name means the output already is probabilities.
LOGITS_OUTPUT = "logits"


def available_runtimes() -> list[str]:
    """The runtimes that can be imported here, in preference order."""
    found = []
    for name in RUNTIMES:
        try:
            _import_runtime(name)
        except ModelError:
            continue
        found.append(name)
    return found


def runtime_version(name: str) -> str | None:
    """The installed version of runtime `name` (its pip distribution), or None."""
    return versions.package_version(RUNTIMES[name][1])


def _import_runtime(name: str) -> Any:
    """The interpreter module of runtime `name`; a clear ModelError when it is not installed."""
    if name not in RUNTIMES:
        raise ModelError(f"unknown runtime {name!r}; choose one of {list(RUNTIMES)}")
    module_name, distribution = RUNTIMES[name]
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise ModelError(f"runtime {name!r} is not installed (pip install {distribution}): {error}") from None


def _pick_runtime(name: str | None) -> tuple[str, Any]:
    """(name, module) of the requested runtime, or the first installed one when `name` is None."""
    if name is not None:
        return name, _import_runtime(name)
    problems = []
    for candidate in RUNTIMES:
        try:
            return candidate, _import_runtime(candidate)
        except ModelError as error:
            problems.append(str(error))
    raise ModelError("no TFLite runtime is installed: " + "; ".join(problems))


class Classifier:
    """An image classifier over one .tflite file and its labels.

    Attributes: model_path, labels_path, labels, runtime_name, runtime_version,
    input_size (height, width), input_dtype, input_quantization and
    output_quantization ((scale, zero_point), scale 0 meaning "not quantized"),
    num_threads, delegate_path, interpreter (for benchmarks that time
    `interpreter.invoke()` alone).

    One interpreter is not safe to call from two threads at once, so calls are
    serialised with a lock (the Gradio demo serves requests from a thread pool).
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        labels_path: str | os.PathLike | None = None,
        runtime: str | None = None,
        threads: int | None = None,
        delegate: str | os.PathLike | None = None,
    ):
        self.model_path = Path(model_path)
        self.labels_path = (
            Path(labels_path) if labels_path is not None else self.model_path.parent / run_folder.LABELS_FILE
        )
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        self.num_threads = threads
        self.delegate_path = Path(delegate) if delegate is not None else None
        self.runtime_name, module = _pick_runtime(runtime)
        self.runtime_version = runtime_version(self.runtime_name)
        self._lock = threading.Lock()

        self._check_model_file()
        delegates = [self._load_delegate(module)] if self.delegate_path is not None else None
        try:
            # By path, so the runtime memory-maps the file rather than copying it onto the heap.
            self.interpreter = module.Interpreter(
                model_path=str(self.model_path), num_threads=threads, experimental_delegates=delegates
            )
            self.interpreter.allocate_tensors()
        except Exception as error:  # The runtimes raise ValueError/RuntimeError with the reason.
            raise ModelError(f"{self.model_path}: not a valid TFLite model for {self.runtime_name} ({error})") from None
        self._read_input_details()
        self._read_output_details()
        self.labels = self._read_labels()
        self._batch_size = int(self._input["shape"][0])
        self._can_resize = True

    # -- loading ------------------------------------------------------------------

    def _check_model_file(self) -> None:
        """Check that the model file is readable and carries the TFLite identifier, so a wrong file fails clearly."""
        try:
            with open(self.model_path, "rb") as stream:
                header = stream.read(8)
            size = self.model_path.stat().st_size
        except FileNotFoundError:
            raise ModelError(f"{self.model_path}: model file not found") from None
        except IsADirectoryError:
            raise ModelError(f"{self.model_path}: is a directory, not a .tflite file") from None
        except OSError as error:
            raise ModelError(f"{self.model_path}: cannot read the model ({error.strerror or error})") from None
        # A FlatBuffer TFLite model carries "TFL3" at bytes 4..8; checking it first gives a
        # clearer message than the runtime's, and stops it from parsing arbitrary bytes.
        if len(header) < 8 or header[4:8] != b"TFL3":
            raise ModelError(
                f"{self.model_path}: not a TFLite model (no 'TFL3' identifier; "
                f"{size} bytes, truncated or another format)"
            )

    def _load_delegate(self, module: Any) -> Any:
        # Load the library with ctypes first: when it is missing, the runtimes' Delegate fails
        # half-way through __init__ and its __del__ then prints an AttributeError at exit.
        # A bare name ("libedgetpu.so.1") is searched on the loader's path, like load_delegate does.
        try:
            library = ctypes.CDLL(str(self.delegate_path))
        except OSError as error:
            raise ModelError(f"{self.delegate_path}: cannot load the delegate library ({error})") from None
        if not hasattr(library, "tflite_plugin_create_delegate"):
            raise ModelError(
                f"{self.delegate_path}: not a TFLite external delegate "
                "(it has no tflite_plugin_create_delegate function)"
            )
        try:
            return module.load_delegate(str(self.delegate_path))
        except Exception as error:  # Not a delegate, or it refused to start (no device attached).
            raise ModelError(f"{self.delegate_path}: cannot load the delegate ({error})") from None

    def _read_input_details(self) -> None:
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise ModelError(f"{self.model_path}: expected one image input, the model has {len(inputs)} inputs")
        detail = inputs[0]
        shape = tuple(int(value) for value in detail["shape"])
        # RGB only: prepare_image always yields (h, w, 3), and every model of this project takes
        # RGB (docs/architecture.md). A grayscale or non-image input is a different contract.
        if len(shape) != 4 or shape[3] != 3 or shape[1] < 1 or shape[2] < 1:
            raise ModelError(
                f"{self.model_path}: the input is not an RGB image batch: shape {list(shape)}, "
                "expected [batch, height, width, 3]"
            )
        dtype = np.dtype(detail["dtype"])
        if dtype not in (np.uint8, np.int8, np.float32):
            raise ModelError(f"{self.model_path}: unsupported input type {dtype} (expected uint8, int8 or float32)")
        scale, zero_point = _quantization(detail, self.model_path)
        if dtype == np.int8 and scale == 0:
            raise ModelError(
                f"{self.model_path}: int8 input without quantization parameters; cannot map 0..255 pixels onto it"
            )
        self._input = detail
        self.input_size = (shape[1], shape[2])
        self.input_dtype = dtype
        self.input_quantization = (scale, zero_point)

    def _read_output_details(self) -> None:
        outputs = self.interpreter.get_output_details()
        if len(outputs) != 1:
            raise ModelError(f"{self.model_path}: expected one output (class scores), the model has {len(outputs)}")
        detail = outputs[0]
        shape = tuple(int(value) for value in detail["shape"])
        if len(shape) != 2 or shape[1] < 1:
            raise ModelError(f"{self.model_path}: the output is not [batch, classes]: shape {list(shape)}")
        dtype = np.dtype(detail["dtype"])
        scale, zero_point = _quantization(detail, self.model_path)
        if dtype in _INTEGER_TYPES and scale == 0:
            raise ModelError(f"{self.model_path}: {dtype} output without quantization parameters")
        self._output = detail
        self.num_classes = shape[1]
        self.output_quantization = (scale, zero_point)
        self.output_is_logits = _signature_outputs(self.interpreter) == [LOGITS_OUTPUT]

    def _read_labels(self) -> list[str]:
        try:
            labels = artifacts.read_labels(self.labels_path)
        except artifacts.ArtifactError as error:
            raise ModelError(str(error)) from None
        if len(labels) != self.num_classes:
            raise ModelError(
                f"{self.labels_path}: {len(labels)} labels, but {self.model_path} outputs {self.num_classes} classes"
            )
        return labels

    # -- inference ----------------------------------------------------------------

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities, float32 (N, classes), for uint8 images (N, h, w, 3) or one (h, w, 3)."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[np.newaxis]
        height, width = self.input_size
        if images.ndim != 4 or images.shape[1:] != (height, width, 3):
            raise ValueError(
                f"expected uint8 images shaped (N, {height}, {width}, 3), got {images.shape}; "
                "use classify() or edge.preprocess.prepare_image for other sizes"
            )
        if images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images, got {images.dtype}")
        if len(images) == 0:
            return np.zeros((0, self.num_classes), np.float32)
        results = [self._predict_chunk(images[start : start + MAX_BATCH]) for start in range(0, len(images), MAX_BATCH)]
        return np.concatenate(results)

    def classify(self, source: preprocess.ImageSource, top_k: int = 5) -> list[tuple[str, float]]:
        """The `top_k` (label, probability) pairs for one image, most probable first.

        `source` is anything `prepare_image` takes; bad images raise `preprocess.ImageError`.
        """
        return self.classify_batch([source], top_k)[0]

    def classify_batch(
        self, sources: Iterable[preprocess.ImageSource], top_k: int = 5
    ) -> list[list[tuple[str, float]]]:
        """`classify` for several images, run through the interpreter as one batch."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        prepared = [preprocess.prepare_image(source, self.input_size) for source in sources]
        if not prepared:
            return []
        batch = np.stack(prepared)
        return [self.top_k(row, top_k) for row in self.predict(batch)]

    def top_k(self, probabilities: Sequence[float] | np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """The k highest (label, probability) pairs of one output row, highest first; ties keep label order."""
        row = np.asarray(probabilities, dtype=np.float32)
        order = np.argsort(-row, kind="stable")[: min(k, len(row))]
        return [(self.labels[index], float(row[index])) for index in order]

    def _predict_chunk(self, images: np.ndarray) -> np.ndarray:
        with self._lock:
            if self._can_resize and len(images) != self._batch_size:
                self._resize(len(images))
            if not self._can_resize and len(images) != self._batch_size:
                # The model's batch size is fixed (resizing failed once): one image per call.
                return np.concatenate([self._invoke(image[np.newaxis]) for image in images])
            return self._invoke(images)

    def _resize(self, batch_size: int) -> None:
        """Give the input a batch dimension of `batch_size`; remember when a model refuses."""
        height, width = self.input_size
        try:
            self.interpreter.resize_tensor_input(self._input["index"], [batch_size, height, width, 3])
            self.interpreter.allocate_tensors()
            self._batch_size = batch_size
        except Exception:  # Some graphs hard-code batch 1 (fixed reshapes): fall back to a loop.
            self._can_resize = False
            self.interpreter.resize_tensor_input(self._input["index"], [self._batch_size, height, width, 3])
            self.interpreter.allocate_tensors()

    def _invoke(self, images: np.ndarray) -> np.ndarray:
        """Quantize, run, dequantize. Caller holds the lock."""
        self.interpreter.set_tensor(self._input["index"], self._quantize(images))
        self.interpreter.invoke()
        values = self._dequantize(self.interpreter.get_tensor(self._output["index"]))
        return softmax(values) if self.output_is_logits else values

    def _quantize(self, images: np.ndarray) -> np.ndarray:
        """uint8 pixels to the model's input type, using the input tensor's (scale, zero_point)."""
        scale, zero_point = self.input_quantization
        if self.input_dtype == np.float32:
            # Float inputs get the 0..255 pixel values: normalisation is inside the graph (docs/architecture.md).
            return images.astype(np.float32)
        if scale == 0:
            return images  # uint8 input feeding a Cast: the raw pixels, as the graph expects.
        info = np.iinfo(self.input_dtype)
        quantized = np.round(images.astype(np.float32) / scale + zero_point)
        return np.clip(quantized, info.min, info.max).astype(self.input_dtype)

    def _dequantize(self, raw: np.ndarray) -> np.ndarray:
        scale, zero_point = self.output_quantization
        if raw.dtype in _INTEGER_TYPES:
            return ((raw.astype(np.float32) - zero_point) * scale).astype(np.float32)
        return raw.astype(np.float32, copy=True)  # get_tensor's buffer is reused by the next call.

    def describe(self) -> dict[str, Any]:
        """What a benchmark table or a startup log line needs to know about this classifier."""
        return {
            "model": str(self.model_path),
            "runtime": self.runtime_name,
            "runtime_version": self.runtime_version,
            "input_size": list(self.input_size),
            "input_dtype": str(self.input_dtype),
            "input_quantization": list(self.input_quantization),
            "output_quantization": list(self.output_quantization),
            "classes": self.num_classes,
            "output": "logits, softmax on the host" if self.output_is_logits else "probabilities",
            "threads": self.num_threads,
            "delegate": str(self.delegate_path) if self.delegate_path else None,
        }


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, shifted by the row maximum so that no exp overflows."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)


def _signature_outputs(interpreter: Any) -> list[str]:
    """The output names of the model's one signature ([] when it has none, or several)."""
    try:
        signatures = interpreter.get_signature_list()
    except (AttributeError, ValueError):  # A runtime without signatures, or a model without any.
        return []
    return list(next(iter(signatures.values()))["outputs"]) if len(signatures) == 1 else []


def _quantization(detail: dict, model_path: Path) -> tuple[float, int]:
    """(scale, zero_point) of a tensor; (0.0, 0) when it is not quantized."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    parameters = detail.get("quantization_parameters") or {}
    scales = np.asarray(parameters.get("scales", []))
    if len(scales) > 1:  # Per-channel quantization is for weights; an input or output never has it.
        raise ModelError(
            f"{model_path}: per-channel quantization on the input or output tensor "
            f"{detail.get('name')!r} is not supported"
        )
    return float(scale), int(zero_point)
