"""Tests of the quantization-aware copy (train/qat.py): where fake-quant goes, its robust ranges,
nested backbones, and that the float model is left alone. The end-to-end gain on a model built to
quantize badly is tests/test_convert.py::test_qat_improves_agreement_on_the_outlier_model.

    .venv/bin/pytest tests/test_qat.py -q
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from train import models, qat  # noqa: E402

INPUT_SHAPE = (8, 8, 3)


def _images(count: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, *INPUT_SHAPE), dtype=np.uint8)


def _residual_model() -> keras.Model:
    """A nested 'backbone' with swish, a squeeze-and-excitation multiply and a residual add, as in EfficientNet."""
    keras.utils.set_random_seed(0)
    features_in = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="swish", name="expand")(features_in)
    gate = keras.layers.Dense(4, activation="sigmoid", name="gate")(keras.layers.GlobalAveragePooling2D()(x))
    x = keras.layers.Multiply(name="excite")([x, keras.layers.Reshape((1, 1, 4))(gate)])
    x = keras.layers.Add(name="residual")([x, features_in])
    backbone = keras.Model(features_in, x, name="backbone")
    inputs = keras.Input(INPUT_SHAPE, dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 1, name="stem")(x)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs)


def _ranges(model: keras.Model) -> dict[str, qat.ActivationRange]:
    return {layer.name: layer for layer in qat._all_layers(model) if isinstance(layer, qat.ActivationRange)}


def test_fake_quant_goes_after_nonlinear_activations_multiplies_and_adds():
    assert qat.quantized_after(keras.layers.Dense(2, activation="relu"))
    assert qat.quantized_after(keras.layers.Activation("swish"))
    assert qat.quantized_after(keras.layers.Add()) and qat.quantized_after(keras.layers.Multiply())
    assert not qat.quantized_after(keras.layers.Dense(2))
    assert not qat.quantized_after(keras.layers.Activation("linear"))
    assert not qat.quantized_after(keras.layers.BatchNormalization())


def test_a_wide_channel_is_clipped_instead_of_stretching_the_range():
    assert qat._robust_bound(np.array([1.0, 1.0, 1.0, 1000.0])) == qat.OUTLIER_FACTOR
    assert qat._robust_bound(np.array([1.0, 2.0, 3.0])) == 3.0  # no outlier: the plain maximum
    assert qat._robust_bound(np.array([-1.0, -2.0])) == -1.0


def test_the_copy_has_ranges_inside_the_nested_backbone_and_leaves_the_float_model_alone():
    model = models.logits_model(_residual_model())
    images = _images()
    before = [weight.copy() for weight in model.get_weights()]
    copy = qat.quantization_aware_copy(model, images)
    ranges = _ranges(copy)
    assert {"expand_range", "gate_range", "excite_range", "residual_range"} <= set(ranges)
    for activation_range in ranges.values():
        low, high = float(activation_range.minimum.numpy()), float(activation_range.maximum.numpy())
        assert low <= 0.0 < high
    # Same weights, own variables: fine-tuning the copy does not touch the float model.
    reference = model.predict(images, verbose=0)
    quantized = copy.predict(images, verbose=0)
    assert np.abs(quantized - reference).max() < 0.1  # only int8 rounding apart
    qat.fine_tune(copy, model, images, epochs=1, batch_size=8)
    for weight, original in zip(model.get_weights(), before):
        np.testing.assert_array_equal(weight, original)


@pytest.mark.slow
def test_efficientnet_b0_gets_a_quantization_aware_copy_that_converts_to_full_integer(tmp_path):
    """The real backbone: swish, squeeze-and-excitation multiplies, residual adds, inside a nested model;
    its copy converts to a full-integer int8 file (the fake-quant ops fold into the ranges)."""
    from train import export_graph, export_tflite
    from train.config import TrainConfig

    config = TrainConfig(dataset="smoke", model="efficientnet_b0", weights="none", image_size=32)
    model, _ = models.build_model(config, 3, (32, 32, 3))
    logits = models.logits_model(model)
    images = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    copy = qat.quantization_aware_copy(logits, images)
    names = set(_ranges(copy))
    assert any(name.endswith("se_excite_range") for name in names), sorted(names)[:10]
    assert any(name.endswith("add_range") for name in names), sorted(names)[:10]
    assert any(name.endswith("activation_range") for name in names), sorted(names)[:10]
    assert np.all(np.isfinite(copy.predict(images, verbose=0)))
    saved = export_tflite.export_saved_model(copy, tmp_path / "saved_model", tmp_path, output_name="logits")
    int8 = export_tflite.quantize(export_tflite.calibrate(saved, images))
    operations = {operation["op"] for operation in export_graph.graph_ops(int8)}
    assert export_graph.float_layers(int8) == [] and "FAKE_QUANT" not in operations and "CAST" not in operations
