"""Pooling: max pooling of one feature map, the winning cells marked; and what the
network itself does instead.

MobileNetV2 has no max pooling at all: its only pooling is the final global average
(`head_pool`: each of the last feature map's channels becomes one number), and it shrinks
the map with stride-2 convolutions, which learn their own downsampling. The view shows
both: a 2x2 max pooling of a chosen map (the lecture's operation) and the model's own
global average and strided layers.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from transferkit.errors import ConfigError
from transferkit.fileio import subplots
from transferkit.inspect.architecture import layer_table
from transferkit.inspect.base import (
    Output, as_model, check_channel, colorize, normalize, upscale)
from transferkit.inspect.feature_maps import feature_maps


def max_pool(fmap: np.ndarray, size: int = 2, stride: int | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """`valid` max pooling of a 2-D map, and where each maximum came from.

    Args:
        fmap: `[H, W]`.
        size: Window side. stride: Step (default `size`).

    Returns:
        `(pooled [H', W'], winners [H, W] bool)`: the first maximum of each window.

    Raises:
        ConfigError: A window larger than the map, or a non-positive size.
    """
    stride = size if stride is None else stride
    fmap = np.asarray(fmap)
    if size < 1 or stride < 1 or fmap.ndim != 2 or min(fmap.shape) < size:
        raise ConfigError(f"cannot max-pool a map of shape {fmap.shape} with a {size}x{size}"
                          f" window and stride {stride}")
    rows = (fmap.shape[0] - size) // stride + 1
    cols = (fmap.shape[1] - size) // stride + 1
    windows = np.lib.stride_tricks.sliding_window_view(fmap, (size, size))
    windows = windows[::stride, ::stride][:rows, :cols].reshape(rows, cols, size * size)
    best = windows.argmax(axis=-1)
    pooled = np.take_along_axis(windows, best[..., None], axis=-1)[..., 0]
    winners = np.zeros(fmap.shape, bool)
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    winners[r * stride + best // size, c * stride + best % size] = True
    return pooled, winners


def pooling_layers(model: keras.Model) -> dict[str, list[str]]:
    """The model's pooling and downsampling: `max_pool`, `average_pool`, `global_pool`
    (layer names) and `strided` (convolutions of stride above 1)."""
    table = layer_table(model)
    kinds = {"max_pool": ("MaxPooling2D", "GlobalMaxPooling2D"),
             "average_pool": ("AveragePooling2D",),
             "global_pool": ("GlobalAveragePooling2D", "GlobalMaxPooling2D")}
    found = {k: [r["name"] for r in table if r["type"] in v] for k, v in kinds.items()}
    found["strided"] = [r["name"] for r in table if r["strided"] and "Conv" in r["type"]]
    return found


def _default_layer(model: keras.Model) -> str:
    """The first stage output with at least 16x16 cells: big enough to see cells."""
    from transferkit.inspect.feature_maps import default_layers

    layers = default_layers(model)
    big = [n for n in layers if model.get_layer(n).output.shape[1] >= 16]
    return (big or layers)[-1]


def pooling_view(source: Any, image: Any, layer: str | None = None,
                 channel: int | None = None, size: int = 2, out: Any = None) -> dict:
    """Writes `pooling.png`; returns `{"view", "files", "layer", "channel", "input_shape",
    "pooled_shape", "global_pool", "strided", "max_pool", "global_average"}`.

    Args:
        source: A run, run directory or Keras model.
        image: The photo (path, bytes or RGB array).
        layer: Feature map to pool (default: a stage output of at least 16x16).
        channel: Its channel (default: the one of most spatial contrast).
        size: Pooling window and stride.
        out: Output folder (default `RUN/inspect/`).
    """

    model, run = as_model(source)
    output = Output(out, run)
    layer = layer or _default_layer(model)
    fmap = feature_maps(model, image, [layer])[layer]
    # Default: the channel with the most spatial contrast (a saturated ReLU6 channel,
    # 6 everywhere, would show nothing of what pooling keeps).
    channel = int(fmap.std(axis=(0, 1)).argmax()) if channel is None else \
        check_channel(model, layer, channel)
    pooled, winners = max_pool(fmap[..., channel], size)
    found = pooling_layers(model)
    global_name = (found["global_pool"] or [None])[-1]
    global_average = None
    fig, axes = subplots(1, 3, figsize=(13, 4.4))
    low, high = min(0.0, float(fmap[..., channel].min())), float(fmap[..., channel].max())
    axes[0].imshow(colorize(normalize(fmap[..., channel], low, high)))
    ys, xs = np.nonzero(winners)
    axes[0].scatter(xs, ys, s=8, c="red", marker="s")
    axes[0].set_title(f"{layer} channel {channel} ({fmap.shape[0]}x{fmap.shape[1]}); "
                      f"red: the {size}x{size} winners", fontsize=9)
    axes[1].imshow(upscale(colorize(normalize(pooled, low, high)), fmap.shape[0]))
    axes[1].set_title(f"max pooled {size}x{size}, stride {size}: "
                      f"{pooled.shape[0]}x{pooled.shape[1]}", fontsize=9)
    if global_name is not None:
        head_input = model.get_layer(global_name).input._keras_history.operation.name
        last = feature_maps(model, image, [head_input])[head_input]
        global_average = last.mean(axis=(0, 1))
        axes[2].bar(np.arange(len(global_average)), global_average, width=1.0)
        axes[2].set_title(f"{global_name}: global average of {head_input} "
                          f"({last.shape[0]}x{last.shape[1]}x{last.shape[2]} → "
                          f"{last.shape[2]})", fontsize=9)
        axes[2].set_xlabel("channel")
    for ax in axes[:2]:
        ax.set_axis_off()
    note = ("no max pooling in this model; " if not found["max_pool"] else "") + \
        f"{len(found['strided'])} stride-2 convolutions downsample instead: " + \
        ", ".join(found["strided"][:6])
    fig.suptitle(note, fontsize=9)
    output.png("pooling", fig)
    return {"view": "pooling", "files": output.files, "layer": layer, "channel": channel,
            "input_shape": list(fmap.shape[:2]), "pooled_shape": list(pooled.shape),
            "max_pool": found["max_pool"], "global_pool": found["global_pool"],
            "strided": found["strided"],
            "global_average": None if global_average is None else
            [float(v) for v in global_average]}
