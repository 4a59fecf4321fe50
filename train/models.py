"""The networks: EfficientNet-B0 transfer learning and the seed projects' baselines.

Every model follows the contract of docs/architecture.md: it takes uint8 RGB images at the
dataset's native size, and augmentation (training only), resizing and the
backbone's own normalization happen inside the graph, so the exported TFLite
file needs no outside arithmetic. The output is float32 softmax probabilities.

Keras 3 only (`keras.*`, `keras.ops`), so the same code trains under the
TensorFlow, JAX and PyTorch backends.
"""

from __future__ import annotations

import contextlib
import math
import zipfile
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import keras
from keras.src.applications import efficientnet as keras_efficientnet

from edge.common.errors import UserError
from train import efficientnet_lite
from train.config import IMAGENET_MODELS, TrainConfig

#: Pad-and-random-crop: pixels of reflected border added on each side before a crop back to the
#: original size, as a fraction of the side (4 px at 32 px: the usual CIFAR recipe).
CROP_PADDING_FACTOR = 0.125
#: Channel means (B, G, R) of the "caffe" preprocessing that VGG16 and ResNet50 weights expect.
CAFFE_MEANS_BGR = (103.939, 116.779, 123.68)
#: BatchNorm momentum for networks trained from scratch (see `_shorten_batchnorm_memory`).
FROM_SCRATCH_BATCHNORM_MOMENTUM = 0.9
#: Float dtypes TFLite's int8 path cannot take; a float32 copy of the model replaces them.
LOW_PRECISION_DTYPES = ("bfloat16", "float16")
#: Squeeze-and-excitation bottleneck: channels are divided by this in the squeeze step.
SE_REDUCTION = 8


class WeightsUnavailableError(UserError):
    """ImageNet weights could not be downloaded or a weights file did not fit the architecture."""


@keras.saving.register_keras_serializable(package="cifar_edge")
class CaffePreprocessing(keras.layers.Layer):
    """RGB in 0-255 to the BGR, mean-subtracted input that VGG16 and ResNet50 were trained on.

    A layer rather than `preprocess_input` so it travels inside the saved and exported model.
    """

    def call(self, inputs):
        bgr = keras.ops.flip(keras.ops.cast(inputs, self.compute_dtype), axis=-1)
        return bgr - keras.ops.convert_to_tensor(CAFFE_MEANS_BGR, dtype=self.compute_dtype)


@keras.saving.register_keras_serializable(package="cifar_edge")
class RandomPadCropFlip(keras.layers.Layer):
    """Reflect-pad, crop a random window of the original size, flip half the images left-right.

    Written with `keras.ops` only, as two batched matrix products with one-hot selection
    matrices, so it compiles with XLA on every backend (Keras' RandomTranslation and RandomZoom
    use ImageProjectiveTransformV3, which does not) and needs no dynamic shapes. At 32 px the
    products cost little next to the network. Identity (a cast) at inference, so it vanishes
    from the export.
    """

    def __init__(self, padding_factor: float = CROP_PADDING_FACTOR, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.padding_factor, self.seed = padding_factor, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        images = keras.ops.cast(inputs, self.compute_dtype)
        if not training:
            return images
        batch = keras.ops.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        pad_rows, pad_columns = round(height * self.padding_factor), round(width * self.padding_factor)
        padded = keras.ops.pad(
            images, [[0, 0], [pad_rows, pad_rows], [pad_columns, pad_columns], [0, 0]], mode="reflect"
        )
        top = keras.random.randint((batch, 1), 0, 2 * pad_rows + 1, seed=self.seed_generator)
        left = keras.random.randint((batch, 1), 0, 2 * pad_columns + 1, seed=self.seed_generator)
        flip = keras.random.randint((batch, 1), 0, 2, seed=self.seed_generator)
        rows = top + keras.ops.arange(height, dtype="int32")[None, :]
        columns = keras.ops.arange(width, dtype="int32")[None, :]
        columns = left + keras.ops.where(flip > 0, width - 1 - columns, columns)  # A flip reads the window backwards.
        row_selection = keras.ops.one_hot(rows, height + 2 * pad_rows, dtype=self.compute_dtype)
        column_selection = keras.ops.one_hot(columns, width + 2 * pad_columns, dtype=self.compute_dtype)
        cropped = keras.ops.einsum("bip,bpqc->biqc", row_selection, padded)
        return keras.ops.einsum("bjq,biqc->bijc", column_selection, cropped)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "padding_factor": self.padding_factor, "seed": self.seed}


class DamagedModelError(UserError):
    """A `model.keras` that is not a whole Keras archive: truncated by a kill, a full disk, a bad copy."""


def load_model(path: str | Path) -> keras.Model:
    """Load a `model.keras` written by a run. Importing this module registers the custom layers.

    A `.keras` file is a zip archive: one that is not a whole, readable zip (a truncated
    file is the usual case) raises DamagedModelError before Keras sees it, since Keras
    then reports a misleading "File not found"; a zip Keras still cannot read does too.
    """
    path = Path(path)
    _check_archive(path)
    try:
        return keras.models.load_model(path, compile=False)
    except (OSError, KeyError, zipfile.BadZipFile) as error:  # what Keras raises for a broken archive's parts
        raise DamagedModelError(
            f"{path}: the model file is damaged ({type(error).__name__}: {error}); "
            "train the run again, or restore the file"
        ) from None


def _check_archive(path: Path) -> None:
    """DamagedModelError unless `path` is a zip whose every member reads back with its checksum."""
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise DamagedModelError(
            f"{path}: the model file is damaged (not a whole .keras archive: {error}); "
            "train the run again, or restore the file"
        ) from None
    if broken is not None:
        raise DamagedModelError(
            f"{path}: the model file is damaged ({broken} fails its checksum); train the run again, or restore the file"
        )


def logits_model(model: keras.Model) -> keras.Model | None:
    """The same network ending at the classifier's logits (no softmax), sharing its weights; None
    when the model has no "classifier" Dense layer with a softmax (build_model always makes one).

    The int8 export quantizes this one: a uint8 logits output keeps the order of every class, and
    the device applies the softmax in float (edge.runtime), where a uint8 softmax would round all
    probabilities below 1/512 to zero.
    """
    try:
        classifier = model.get_layer("classifier")
    except ValueError:
        return None
    if not isinstance(classifier, keras.layers.Dense) or classifier.activation is not keras.activations.softmax:
        return None
    logits_layer = keras.layers.Dense(classifier.units, activation=None, dtype=classifier.dtype_policy, name="logits")
    logits = logits_layer(classifier.input)
    logits_layer.set_weights(classifier.get_weights())
    return keras.Model(model.inputs, logits, name=f"{model.name}_logits")


def as_float32(model: keras.Model) -> keras.Model:
    """The same model computing in float32: a copy when it was built under a mixed-precision policy.

    A GPU run trains under mixed_bfloat16; TFLite has no bfloat16 kernels, and the converter must
    see float32 arithmetic to calibrate int8. Variables of a mixed model are float32 already, so the
    copy takes them as they are.
    """
    config = model.get_config()
    if not _force_float32(config):
        return model
    copy = keras.Model.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def _force_float32(config) -> bool:
    """Replace every low-precision float dtype or policy in a (nested) layer config with float32; say if any was.

    Not only `mixed_*` policy names: layers built under a mixed policy can also record the bare
    compute dtype (the augmentation's input layer records "bfloat16"), and one left behind puts
    float casts in front of the int8 graph.
    """
    changed = False
    if isinstance(config, dict):
        for key, value in config.items():
            if key == "dtype" and isinstance(value, str) and _is_low_precision(value):
                config[key] = "float32"
                changed = True
            elif (
                key == "dtype"
                and isinstance(value, dict)
                and "Policy" in str(value.get("class_name"))
                and _is_low_precision(str(value.get("config", {}).get("name", "")))
            ):
                value["config"]["name"] = "float32"
                changed = True
            else:
                changed = _force_float32(value) or changed
    elif isinstance(config, list):
        for item in config:
            changed = _force_float32(item) or changed
    return changed


def _is_low_precision(dtype_name: str) -> bool:
    return dtype_name.startswith("mixed_") or dtype_name in LOW_PRECISION_DTYPES


def build_model(config: TrainConfig, num_classes: int, input_shape: tuple[int, int, int]):
    """Return `(model, backbone)`; `backbone` is None for the from-scratch CNNs.

    `input_shape` is the dataset's native (height, width, 3); the model resizes to
    `config.resolved_image_size` inside the graph.
    """
    inputs = keras.Input(shape=input_shape, dtype="uint8", name="image")
    # Preprocessing layers cast to the compute dtype themselves; augmentation runs at the
    # native size, before the upsampling, where it is cheapest.
    images = _augmentation(config)(inputs)
    size = config.resolved_image_size
    if size is not None and (size, size) != tuple(input_shape[:2]):
        images = keras.layers.Resizing(size, size, interpolation="bilinear", name="resize")(images)
    side = size or input_shape[0]

    backbone = None
    if config.model in IMAGENET_MODELS:
        backbone = _imagenet_backbone(config, (side, side, 3))
        if config.model in ("vgg16", "resnet50"):
            images = CaffePreprocessing(name="caffe_preprocessing")(images)
        # No `training=False` here: it would also switch off EfficientNet's drop-connect (stochastic
        # depth) while fine-tuning. Pretrained BatchNorm is put in inference mode another way when
        # --batchnorm frozen: set_backbone_trainable freezes it (`trainable=False`), and a frozen Keras 3
        # BatchNormalization normalizes with its moving statistics and never updates them.
        if config.weights == "none":
            _shorten_batchnorm_memory(backbone)
        else:
            freeze_batchnorm(backbone)
        features = backbone(images)
    else:
        rescaled = keras.layers.Rescaling(1.0 / 255, name="rescale")(images)
        features = _cnn_features(rescaled, squeeze_excite=config.model == "se_cnn")

    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    pooled = keras.layers.Dropout(config.dropout, name="head_dropout")(pooled)
    # The classifier runs in float32 even under mixed precision, so the softmax is exact.
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="classifier")(pooled)
    model = keras.Model(inputs, outputs, name=f"{config.model}_classifier")
    return model, backbone


def set_backbone_trainable(
    backbone: keras.Model | None,
    fraction: float,
    pretrained: bool,
    train_batchnorm: bool = False,
    batchnorm_momentum: float | None = None,
) -> int:
    """Unfreeze the top `fraction` of the backbone's layers; return how many weights layers train.

    BatchNorm layers of a pretrained backbone stay frozen (inference mode), as the Keras fine-tuning
    guide advises, unless `train_batchnorm`: then those among the unfrozen layers train like any other
    (batch statistics in `fit`, moving averages updated with `batchnorm_momentum` when given), as in the
    transfer protocol of Kornblith et al. 2019 (`--batchnorm train`).
    """
    if backbone is None:
        return 0
    layers = backbone.layers
    first_trainable = len(layers) - math.ceil(fraction * len(layers))
    backbone.trainable = fraction > 0
    count = 0
    for index, layer in enumerate(layers):
        trainable = index >= first_trainable
        if isinstance(layer, keras.layers.BatchNormalization):
            if pretrained and not train_batchnorm:
                trainable = False
            elif trainable and pretrained and batchnorm_momentum is not None:
                layer.momentum = batchnorm_momentum
        layer.trainable = trainable
        count += int(trainable and bool(layer.weights))
    return count


def freeze_batchnorm(backbone: keras.Model) -> None:
    """Freeze every BatchNormalization layer: Keras 3 then runs it in inference mode, even in `fit`."""
    for layer in backbone._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def _shorten_batchnorm_memory(backbone: keras.Model) -> None:
    """Let a from-scratch backbone's BatchNorm statistics follow training on short runs.

    keras.applications use momentum 0.99: after the few hundred steps of a smoke run the moving
    variance still remembers its initial value and inference mode scores near chance, while
    training mode does well. 0.9 settles within tens of steps.
    """
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = FROM_SCRATCH_BATCHNORM_MOMENTUM


def _augmentation(config: TrainConfig) -> keras.Sequential:
    """Pad-and-random-crop with a horizontal flip (and optionally RandAugment); identity at inference.

    "basic" compiles with XLA on every backend; RandAugment does not (Keras marks it), so with it
    the run trains without XLA and says so.
    """
    layers: list[keras.layers.Layer] = []
    if config.augment in ("basic", "randaugment"):
        layers.append(RandomPadCropFlip(seed=config.seed, name="pad_crop_flip"))
    if config.augment == "randaugment":
        layers.append(keras.layers.RandAugment(value_range=(0, 255), seed=config.seed + 3))
    if not layers:
        # Without augmentation, still turn the uint8 input into the compute dtype once, here.
        layers.append(keras.layers.Rescaling(1.0, name="to_float"))
    return keras.Sequential(layers, name="augmentation")


def _imagenet_backbone(config: TrainConfig, shape: tuple[int, int, int]) -> keras.Model:
    """A keras.applications backbone without its top, with `--weights imagenet|none|PATH`."""
    constructors: dict[str, Callable[..., keras.Model]] = {
        "efficientnet_b0": keras.applications.EfficientNetB0,
        "vgg16": keras.applications.VGG16,
        "resnet50": keras.applications.ResNet50,
        "mobilenet_v3_large": keras.applications.MobileNetV3Large,
    }
    weights = None if config.weights == "none" else config.weights
    if config.model in efficientnet_lite.LITE_VARIANTS:
        if weights is None:
            return efficientnet_lite.build_backbone(config.model, shape)
        return efficientnet_lite.pretrained_backbone(config.model, shape, weights)
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise WeightsUnavailableError(f"--weights {weights}: no such file")
    try:
        if config.model == "efficientnet_b0" and weights not in (None, "imagenet"):
            with _imagenet_weights_from(weights):
                return constructors[config.model](include_top=False, weights="imagenet", input_shape=shape)
        return constructors[config.model](include_top=False, weights=weights, input_shape=shape)
    except Exception as error:  # Download errors differ by backend and Python version.
        if weights == "imagenet":
            raise WeightsUnavailableError(
                f"could not load ImageNet weights for {config.model} ({type(error).__name__}: {error}). "
                "Offline? Download the weights file elsewhere and pass --weights PATH, "
                "or train from scratch with --weights none."
            ) from None
        raise WeightsUnavailableError(
            f"--weights {weights}: does not fit {config.model} at {shape[0]}x{shape[1]} "
            f"({type(error).__name__}: {error})"
        ) from None


@contextlib.contextmanager
def _imagenet_weights_from(path: str):
    """Make Keras' EfficientNet "download" its ImageNet weights from `path`.

    Keras builds a different stem for `weights="imagenet"` than for a file: only the former gets
    the Rescaling(1/sqrt(std)) that the ImageNet weights were trained behind (keras-team/keras
    efficientnet.py; tensorflow/tensorflow#49930), so a file loaded the plain way sees its inputs
    at about 0.475 times the right scale. Building the imagenet way with the download pointed at
    the file gives the same layers as `weights="imagenet"` by construction, then loads the file.
    """
    with mock.patch.object(keras_efficientnet.file_utils, "get_file", lambda *arguments, **keywords: path):
        yield


def _cnn_features(images, squeeze_excite: bool):
    """The seed projects' from-scratch network: three Conv-Conv-MaxPool-Dropout stacks.

    With `squeeze_excite`, each stack gains batch normalization and a squeeze-and-excitation block,
    as in the SE-CNN seed. Filters double with depth: 32, 64, 128.
    """
    x = images
    for stack, filters in enumerate((32, 64, 128)):
        for conv in range(2):
            # He initialization: without BatchNorm (the plain cnn), Keras' default Glorot halves the
            # signal at every ReLU layer, and the network sat at chance for 12 epochs on a small
            # folder (README, Training); He keeps its scale.
            x = keras.layers.Conv2D(
                filters,
                3,
                padding="same",
                use_bias=not squeeze_excite,
                kernel_initializer="he_uniform",
                name=f"stack{stack}_conv{conv}",
            )(x)
            if squeeze_excite:
                x = keras.layers.BatchNormalization(
                    momentum=FROM_SCRATCH_BATCHNORM_MOMENTUM, name=f"stack{stack}_bn{conv}"
                )(x)
            x = keras.layers.Activation("relu", name=f"stack{stack}_relu{conv}")(x)
        if squeeze_excite:
            x = _squeeze_excite(x, filters, name=f"stack{stack}_se")
        x = keras.layers.MaxPooling2D(2, strides=2, name=f"stack{stack}_pool")(x)
        x = keras.layers.Dropout(0.25, name=f"stack{stack}_dropout")(x)
    return x


def _squeeze_excite(x, channels: int, name: str):
    """Channel attention: global pooling, bottleneck, sigmoid gate multiplied back onto `x`."""
    squeezed = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    squeezed = keras.layers.Dense(max(channels // SE_REDUCTION, 4), activation="relu", name=f"{name}_reduce")(squeezed)
    gate = keras.layers.Dense(channels, activation="sigmoid", name=f"{name}_expand")(squeezed)
    return keras.layers.Multiply(name=f"{name}_scale")([x, gate])
