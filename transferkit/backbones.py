"""The backbone zoo: a registry over `keras.applications`.

Each entry knows how to build its ImageNet-pretrained feature extractor, the image size
it was trained at, the preprocessing it expects (which transferkit puts *inside* the
model, so a classifier always takes raw 0-255 RGB) and its last convolutional layer.

Names are snake_case with the width multiplier after an underscore:
`mobilenet_v2_0.35`, `mobilenet_v2` (alpha 1.0), `mobilenet_0.25`, `efficientnet_b0`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from pathlib import Path
from typing import Any

import keras

from transferkit.errors import ConfigError, WeightsError


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One registry entry.

    Attributes:
        name: Registry name, e.g. `"mobilenet_v2_0.35"`.
        constructor: Name of the `keras.applications` function, e.g. `"MobileNetV2"`.
        kwargs: Extra constructor arguments (e.g. `{"alpha": 0.35}`).
        default_size: Native input resolution (square side, pixels).
        preprocessing: `"tf"` ([-1, 1]), `"caffe"` (BGR, mean-centred), `"torch"`
            (ImageNet mean/std) or `"none"` (the Keras model rescales by itself).
        last_conv_layer: Name of the last convolutional feature map's layer, or None when
            Keras gives it an automatic name (then it is the backbone's output).
        min_size: Smallest input side the architecture accepts.
    """

    name: str
    constructor: str
    default_size: int
    preprocessing: str
    last_conv_layer: str | None
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    min_size: int = 32

    def build(self, input_tensor: Any = None, weights: str | None = None) -> keras.Model:
        """Builds the headless backbone (`include_top=False`, no pooling).

        Args:
            input_tensor: Symbolic tensor to build on (the flat classifier passes its
                preprocessed input here), or None for a standalone model of any size.
            weights: `"imagenet"`, None or a path, as for `keras.applications`.

        Returns:
            The Keras functional model.
        """
        fn = getattr(keras.applications, self.constructor)
        kwargs = dict(self.kwargs, include_top=False, weights=weights)
        if input_tensor is None:
            kwargs["input_shape"] = (None, None, 3)
        else:
            kwargs["input_tensor"] = input_tensor
        with warnings.catch_warnings():
            # Keras warns when it picks the 224 weight file for a size-less input: that
            # is exactly what we ask for.
            warnings.filterwarnings("ignore", message=".*input_shape.*")
            warnings.filterwarnings("ignore", message=".*is not in \\[96.*")
            return fn(**kwargs)


def _mobilenet_v2(alpha: float) -> Backbone:
    suffix = "" if alpha == 1.0 else f"_{alpha:g}"
    return Backbone(f"mobilenet_v2{suffix}", "MobileNetV2", 224, "tf", "out_relu",
                    {"alpha": alpha})


def _mobilenet_v1(alpha: float) -> Backbone:
    suffix = "" if alpha == 1.0 else f"_{alpha:g}"
    return Backbone(f"mobilenet{suffix}", "MobileNet", 224, "tf", "conv_pw_13_relu",
                    {"alpha": alpha})


_ENTRIES: list[Backbone] = [
    *[_mobilenet_v1(a) for a in (0.25, 0.5, 0.75, 1.0)],
    *[_mobilenet_v2(a) for a in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)],
    Backbone("mobilenet_v3_small", "MobileNetV3Small", 224, "none", None),
    Backbone("mobilenet_v3_large", "MobileNetV3Large", 224, "none", None),
    Backbone("efficientnet_b0", "EfficientNetB0", 224, "none", "top_activation"),
    Backbone("efficientnet_b1", "EfficientNetB1", 240, "none", "top_activation"),
    Backbone("efficientnet_b2", "EfficientNetB2", 260, "none", "top_activation"),
    Backbone("efficientnet_b3", "EfficientNetB3", 300, "none", "top_activation"),
    Backbone("efficientnet_v2_b0", "EfficientNetV2B0", 224, "none", "top_activation"),
    Backbone("efficientnet_v2_b1", "EfficientNetV2B1", 240, "none", "top_activation"),
    Backbone("efficientnet_v2_b2", "EfficientNetV2B2", 260, "none", "top_activation"),
    Backbone("efficientnet_v2_s", "EfficientNetV2S", 384, "none", "top_activation"),
    Backbone("resnet50", "ResNet50", 224, "caffe", "conv5_block3_out"),
    Backbone("resnet50_v2", "ResNet50V2", 224, "tf", "post_relu"),
    Backbone("inception_v3", "InceptionV3", 299, "tf", "mixed10", min_size=75),
    Backbone("xception", "Xception", 299, "tf", "block14_sepconv2_act", min_size=71),
    Backbone("convnext_tiny", "ConvNeXtTiny", 224, "none", None),
    Backbone("densenet121", "DenseNet121", 224, "torch", "relu"),
]

BACKBONES: dict[str, Backbone] = {b.name: b for b in _ENTRIES}


def get_backbone(name: str) -> Backbone:
    """Looks up a registry entry by name.

    Raises:
        ConfigError: Unknown name; the message lists the known names.
    """
    try:
        return BACKBONES[name]
    except KeyError:
        raise ConfigError(f"unknown backbone {name!r}; choose one of: "
                          + ", ".join(BACKBONES)) from None


def keras_cache_dir() -> Path:
    """Where Keras caches downloaded weight files (`$KERAS_HOME/models`)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def weights_file(backbone: Backbone) -> str | None:
    """The file name Keras caches this backbone's no-top ImageNet weights under.

    Known for the MobileNet families (whose file depends on width and size); None for
    the others, whose file name Keras reports when it tries to download.
    """
    alpha = backbone.kwargs.get("alpha")
    if backbone.constructor == "MobileNetV2":
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha:g}_224_no_top.h5"
    if backbone.constructor == "MobileNet":
        alpha_text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[alpha]
        return f"mobilenet_{alpha_text}_224_tf_no_top.h5"
    return None


def is_cached(backbone: Backbone) -> bool | None:
    """Whether the ImageNet weight file is in the Keras cache (None: unknown name)."""
    name = weights_file(backbone)
    return None if name is None else (keras_cache_dir() / name).exists()


def load_pretrained(backbone: Backbone, weights: str) -> keras.Model:
    """Builds the standalone backbone with its pretrained weights, through Keras's cache.

    Built with a size-less input so MobileNets always load the 224 file, whatever
    image size the classifier uses (the convolution weights do not depend on it).

    Args:
        backbone: Registry entry.
        weights: `"imagenet"` or a path to a `.h5` / `.weights.h5` file.

    Returns:
        The weighted standalone backbone (its weights are copied into the classifier).

    Raises:
        WeightsError: Offline with no cached file, or an unreadable weights file.
    """
    if weights != "imagenet" and not Path(weights).is_file():
        raise WeightsError(f"weights file not found: {weights}")
    try:
        return backbone.build(weights=weights)
    except Exception as e:  # Keras raises a bare Exception on download failure.
        if weights != "imagenet":
            raise WeightsError(f"cannot load weights from {weights} into {backbone.name}: "
                               f"{e}") from e
        url = re.search(r"https?://\S+?\.h5", str(e))
        name = weights_file(backbone) or (url.group(0).rsplit("/", 1)[-1] if url else None)
        if name is None:
            raise WeightsError(f"cannot load ImageNet weights for {backbone.name}: {e}") from e
        where = url.group(0) if url else "the Keras applications release page"
        raise WeightsError(
            f"ImageNet weights for {backbone.name} are not cached and could not be "
            f"downloaded. Put {name} (from {where}) into {keras_cache_dir()}/ "
            "(or set KERAS_HOME), or train with --weights none") from e


def validate_size(backbone: Backbone, image_size: int) -> None:
    """Raises ConfigError when `image_size` is outside what the backbone accepts."""
    if not backbone.min_size <= image_size <= 1024:
        raise ConfigError(f"--image-size {image_size} is out of range for {backbone.name}: "
                          f"use {backbone.min_size} to 1024 (default {backbone.default_size})")

