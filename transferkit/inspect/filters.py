"""First-layer filters as RGB tiles, and the effective filters of the first blocks.

A first-layer filter is a `k x k x 3` weight patch; shown as a colour tile (grey = 0,
brighter = positive) it reads as the pattern it detects. The image that maximizes it,
among images in [0, 255], is 255 where a weight is positive and 0 where it is negative
(the response is linear in the pixels, preprocessing being an increasing affine map), so
it is shown beside each tile. MobileNet's first filters are 3x3 (AlexNet's were 11x11,
big enough to look like Gabor patches); deeper units see more, so the view also shows the
*effective* filters of the first blocks: the gradient of one central unit with respect to
the input pixels, cut to its receptive field, on a grey image.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from transferkit.errors import ConfigError
from transferkit.fileio import subplots
from transferkit.inspect.architecture import geometries
from transferkit.inspect.base import (
    Output, as_model, check_layer, submodel, tile_grid, upscale)

TILE = 48


def first_conv(model: keras.Model) -> keras.layers.Layer:
    """The first convolution layer (Conv2D or SeparableConv2D) of the graph.

    Raises:
        ConfigError: The model has no convolution.
    """
    for layer in model.layers:
        if type(layer).__name__ in ("Conv2D", "SeparableConv2D", "DepthwiseConv2D"):
            return layer
    raise ConfigError(f"{model.name} has no convolution layer to show filters of")


def _following_batchnorm(model: keras.Model, conv: keras.layers.Layer):
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and \
                layer.input._keras_history.operation is conv:
            return layer
    return None


def filter_kernels(model: keras.Model, fold_batchnorm: bool = False) -> np.ndarray:
    """The first convolution's kernels `[F, k, k, 3]` in RGB order.

    Args:
        fold_batchnorm: Multiply each filter by its BatchNorm's `gamma / sqrt(var + eps)`
            (the scale it really has in inference; the shift is a bias, not a pattern).
    """
    conv = first_conv(model)
    kernel = np.asarray(conv.kernel if hasattr(conv, "kernel") else conv.depthwise_kernel)
    if type(conv).__name__ == "DepthwiseConv2D":
        kernel = kernel.reshape(*kernel.shape[:2], kernel.shape[2], -1)
    if fold_batchnorm:
        bn = _following_batchnorm(model, conv)
        if bn is None:
            raise ConfigError(f"{conv.name} is not followed by a BatchNormalization layer; "
                              "drop --fold-bn")
        gamma = np.asarray(bn.gamma) if bn.scale else 1.0
        kernel = kernel * (gamma / np.sqrt(np.asarray(bn.moving_variance) + bn.epsilon))
    try:  # caffe-preprocessed backbones see BGR: show the weights in RGB order
        if model.get_layer("preprocess").mode == "caffe":
            kernel = kernel[:, :, ::-1, :]
    except ValueError:
        pass
    return np.moveaxis(kernel, -1, 0)


def render_filter(kernel: np.ndarray, scale: float | None = None) -> np.ndarray:
    """A `[k, k, 3]` kernel as uint8 RGB: `128 + 127.5 * w / scale` (grey is zero).

    Args:
        scale: The weight shown as full brightness (default: the kernel's max |w|).
    """
    kernel = np.asarray(kernel, np.float64)
    scale = float(np.abs(kernel).max()) if scale is None else scale
    if scale <= 0:
        return np.full(kernel.shape, 128, np.uint8)
    return np.clip(np.rint(127.5 + 127.5 * kernel / scale), 0, 255).astype(np.uint8)


def maximizing_image(kernel: np.ndarray) -> np.ndarray:
    """The [0, 255] patch that maximizes a linear filter: 255 where w > 0, else 0."""
    return np.where(np.asarray(kernel) > 0, 255, 0).astype(np.uint8)


def effective_filters(model: keras.Model, layer: str, channels: Sequence[int]
                      ) -> np.ndarray:
    """The input gradient of the central unit of `channels` of `layer`, on a grey
    image, cut to the unit's receptive field: `[len(channels), r, r, 3]`."""
    layer = check_layer(model, layer)
    height, width = int(model.input_shape[1]), int(model.input_shape[2])
    sub = submodel(model, layer)
    h, w = sub.output.shape[1:3]
    cy, cx = h // 2, w // 2
    images = tf.fill((len(channels), height, width, 3), 127.5)
    picked = tf.constant(list(channels), tf.int32)
    with tf.GradientTape() as tape:
        tape.watch(images)
        units = tf.gather(sub(images, training=False)[:, cy, cx, :], picked, axis=1,
                          batch_dims=0)
        score = tf.reduce_sum(tf.linalg.diag_part(units))
    grads = tape.gradient(score, images).numpy()
    top, left, bottom, right = geometries(model)[layer].box(cy, cx, height, width)
    return grads[:, top:bottom, left:right, :]


def filters_view(source: Any, fold_batchnorm: bool = False, blocks: int = 3,
                 n_effective: int = 8, out: Any = None) -> dict:
    """Writes `filters.png` (each first-layer filter beside the image maximizing it) and
    `effective_filters.png`; returns `{"view", "files", "layer", "kernel", "filters",
    "effective": [{"layer", "receptive_field"}]}`."""
    from transferkit.inspect.feature_maps import default_layers

    model, run = as_model(source)
    output = Output(out, run)
    kernels = filter_kernels(model, fold_batchnorm)
    scale = float(np.abs(kernels).max())
    pairs = []
    for k in kernels:
        tile = upscale(render_filter(k, scale), TILE)
        best = upscale(maximizing_image(k), TILE)
        pairs.append(np.concatenate([tile, np.full((tile.shape[0], 3, 3), 255, np.uint8),
                                     best], axis=1))
    fig, ax = subplots(figsize=(10, 1.5 + 0.9 * ((len(pairs) + 7) // 8)))
    ax.imshow(tile_grid(pairs, 8, gap=6))
    ax.set_axis_off()
    conv = first_conv(model)
    ax.set_title(f"{conv.name}: {len(kernels)} filters {kernels.shape[1]}x{kernels.shape[2]}"
                 f"x3{' (BatchNorm folded)' if fold_batchnorm else ''}, each beside the "
                 "[0, 255] image that maximizes it", fontsize=9)
    output.png("filters", fig)
    effective = []
    stages = [n for n in default_layers(model)[1:blocks + 1]]
    if stages:
        fig, axes = subplots(len(stages), 1, figsize=(10, 1.6 * len(stages)),
                                 squeeze=False)
        for ax, name in zip(axes[:, 0], stages):
            n = min(n_effective, int(model.get_layer(name).output.shape[-1]))
            grads = effective_filters(model, name, range(n))
            tiles = [upscale(render_filter(g), 64) for g in grads]
            ax.imshow(tile_grid(tiles, n, gap=4))
            ax.set_axis_off()
            ax.set_title(f"{name}: input gradient of the central unit, channels 0-{n - 1} "
                         f"(receptive field {grads.shape[1]}x{grads.shape[2]} px)", fontsize=9)
            effective.append({"layer": name, "receptive_field": list(grads.shape[1:3])})
        output.png("effective_filters", fig)
    return {"view": "filters", "files": output.files, "layer": conv.name,
            "kernel": list(kernels.shape[1:3]), "filters": len(kernels),
            "fold_batchnorm": fold_batchnorm, "effective": effective}
