"""Quantization-aware fine-tuning (QAT) in plain Keras 3: fake-quant where int8 hurts, a brief
fine-tune, then the usual full-integer conversion, which keeps the fake-quant ranges.

    python train/export.py --run runs/NAME --qat-epochs 1   # on request
    (train/export.py also runs it by itself when plain int8 misses the gate)

`tensorflow-model-optimization` does not support Keras 3, so this uses Keras' own
`keras.quantizers.fake_quant_with_min_max_vars`, which lowers to TensorFlow's FakeQuant
op; the TFLite converter folds it and takes the tensor's int8 range from it (a [0, 2]
range becomes scale 2/255), while calibration still sets the other tensors' ranges.

`quantization_aware_copy(model, images)` copies the network (its weights too: the float
model stays the reference) with an `ActivationRange` after every point where int8 hurts:
non-linear activations (swish, relu, sigmoid, ...), the squeeze-and-excitation
multiply and residual adds. Each range starts from calibration images and is robust:
a channel more than `OUTLIER_FACTOR` times wider than the tensor's median channel is
clipped, instead of stretching the per-tensor scale until the other channels round
to zero (EfficientNet's failure, and the toy with one unit scaled up 10,000x). The
fine-tune (`fine_tune`) then lets the weights adapt to the rounding and the clipping
at a low learning rate, with the ranges trainable too.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

#: A channel whose largest calibration value exceeds this multiple of the tensor's median
#: channel maximum is clipped at that multiple: one wide channel no longer sets the scale of all.
OUTLIER_FACTOR = 8.0
#: Activations quantized after them; linear layers and the classifier's logits stay as they are.
_NONLINEAR = {
    "relu",
    "relu6",
    "swish",
    "silu",
    "sigmoid",
    "hard_sigmoid",
    "hard_swish",
    "hard_silu",
    "gelu",
    "elu",
    "selu",
    "tanh",
    "leaky_relu",
    "mish",
    "softplus",
}
#: Images per calibration call (eager, so that each range can read its own input).
CALIBRATION_BATCH = 32
#: The fine-tune's learning rate. Distillation keeps it on the float model's answers; on the outlier
#: toy of tests/test_convert.py, 1e-3 reached 79% agreement after 3 epochs and 1e-4 only 55%.
LEARNING_RATE = 1e-3


class ActivationRange(keras.layers.Layer):
    """Fake-quantizes its input to uint8 steps over a trainable [minimum, maximum] range.

    While `calibrating` it passes values through and records each channel's extremes instead.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.calibrating = False
        self._channel_minimum: np.ndarray | None = None
        self._channel_maximum: np.ndarray | None = None

    def build(self, input_shape: Any) -> None:
        self.minimum = self.add_weight(name="minimum", shape=(), initializer="zeros", dtype="float32")
        self.maximum = self.add_weight(name="maximum", shape=(), initializer="ones", dtype="float32")

    def call(self, inputs: Any) -> Any:
        if self.calibrating:
            values = keras.ops.convert_to_numpy(keras.ops.cast(inputs, "float32"))
            values = values.reshape(-1, values.shape[-1]) if values.ndim > 1 else values.reshape(-1, 1)
            low, high = values.min(axis=0), values.max(axis=0)
            if self._channel_minimum is None:
                self._channel_minimum, self._channel_maximum = low, high
            else:
                self._channel_minimum = np.minimum(self._channel_minimum, low)
                self._channel_maximum = np.maximum(self._channel_maximum, high)
            return inputs
        quantized = keras.quantizers.fake_quant_with_min_max_vars(
            keras.ops.cast(inputs, "float32"), self.minimum, self.maximum, num_bits=8
        )
        return keras.ops.cast(quantized, inputs.dtype)

    def set_range_from_calibration(self) -> tuple[float, float]:
        """The robust range of what was recorded: outlier channels clipped, zero always inside."""
        if self._channel_maximum is None:
            raise ValueError(f"{self.name}: no calibration values were recorded")
        maximum = _robust_bound(self._channel_maximum)
        minimum = -_robust_bound(-self._channel_minimum)
        minimum, maximum = min(minimum, 0.0), max(maximum, 0.0)
        if maximum - minimum < 1e-6:  # A constant tensor: any small range represents it.
            maximum = minimum + 1e-3
        self.minimum.assign(minimum)
        self.maximum.assign(maximum)
        self._channel_minimum = self._channel_maximum = None
        return minimum, maximum


def _robust_bound(channel_extremes: np.ndarray) -> float:
    """The largest channel extreme, capped at OUTLIER_FACTOR times the median one (when positive)."""
    top = float(np.max(channel_extremes))
    typical = float(np.median(np.abs(channel_extremes)))
    return min(top, OUTLIER_FACTOR * typical) if typical > 0 and top > 0 else top


def quantized_after(layer: keras.layers.Layer) -> bool:
    """Whether int8 hurts at this layer's output: a non-linear activation, a multiply or an add."""
    if isinstance(layer, (keras.layers.Multiply, keras.layers.Add)):
        return True
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    return name in _NONLINEAR


def quantization_aware_copy(model: keras.Model, images: np.ndarray) -> keras.Model:
    """A copy of `model` (its own weights) with calibrated ActivationRange layers after every
    quantized point, nested backbones included."""
    ranges: list[ActivationRange] = []

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        return layer.__class__.from_config(layer.get_config())

    def call_layer(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        outputs = layer(*args, **kwargs)
        if quantized_after(layer):
            activation_range = ActivationRange(name=f"{layer.name}_range")
            ranges.append(activation_range)
            outputs = activation_range(outputs)
        return outputs

    copy = keras.models.clone_model(model, clone_function=clone_layer, call_function=call_layer, recursive=True)
    _copy_weights(model, copy)
    for activation_range in ranges:
        activation_range.calibrating = True
    for start in range(0, len(images), CALIBRATION_BATCH):
        copy([images[start : start + CALIBRATION_BATCH]], training=False)  # A list: the inputs' structure.
    for activation_range in ranges:
        activation_range.calibrating = False
        activation_range.set_range_from_calibration()
    return copy


def _copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Every weight of `source` into the layer of the same name in `target` (nested models too)."""
    targets = {layer.name: layer for layer in _all_layers(target)}
    for layer in _all_layers(source):
        if layer.weights and not isinstance(layer, keras.Model):
            targets[layer.name].set_weights(layer.get_weights())


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found.extend(_all_layers(layer))
    return found


def fine_tune(
    model: keras.Model,
    teacher: keras.Model,
    images: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 32,
    learning_rate: float = LEARNING_RATE,
    seed: int = 0,
) -> keras.Model:
    """Train the quantization-aware copy briefly to reproduce `teacher`'s probabilities on `images`.

    Distillation rather than the labels: the gate compares int8 with the float model, so the
    copy learns the float model's answers, soft ones included, under int8 rounding. Both models
    output logits.
    """
    keras.utils.set_random_seed(seed)
    targets = keras.ops.convert_to_numpy(keras.ops.softmax(teacher.predict(images, batch_size=batch_size, verbose=0)))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss=keras.losses.CategoricalCrossentropy(from_logits=True)
    )
    model.fit(images, targets, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)
    return model
