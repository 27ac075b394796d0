"""Feature maps: what each channel of a layer computes on one image.

Each chosen layer is shown as a grid of its most active channels (by mean activation over
the image), each tile on its own colour scale; the means are in the record.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np

from transferkit.fileio import subplots
from transferkit.inspect.base import (
    Output, activations, as_model, check_layer, colorize, feature_layers, model_images,
    normalize, tile_grid, upscale)

TILE = 64            # smallest tile side shown, pixels


def default_layers(model: keras.Model) -> list[str]:
    """The last layer at each spatial resolution (the output of each stage), activations
    preferred: one view per scale, from edges to parts."""
    names = feature_layers(model)
    by_side: dict[int, str] = {}
    for name in names:
        layer = model.get_layer(name)
        if type(layer).__name__ in ("ZeroPadding2D", "ImagePreprocessing", "Rescaling",
                                    "Normalization"):
            continue
        by_side[int(layer.output.shape[1])] = name
    return list(by_side.values())


def feature_maps(model: keras.Model, image: Any, layers: Sequence[str] | None = None
                 ) -> dict[str, np.ndarray]:
    """The activations `[h, w, C]` of `layers` for one image.

    Args:
        model: The classifier (raw 0-255 RGB in).
        image: A path, bytes or RGB array (resized to the model's input size).
        layers: Layer names (default `default_layers`).

    Raises:
        ConfigError: An unknown layer, or one without a spatial map.
    """
    layers = [check_layer(model, n) for n in (layers or default_layers(model))]
    batch = model_images(model, [image])
    return {n: a[0] for n, a in zip(layers, activations(model, batch, layers))}


def most_active(fmap: np.ndarray, n: int) -> list[int]:
    """The `n` channels with the highest mean activation, highest first."""
    return [int(c) for c in np.argsort(-fmap.mean(axis=(0, 1)), kind="stable")[:n]]


def channel_grid(fmap: np.ndarray, channels: Sequence[int], columns: int = 8,
                 tile: int = TILE) -> np.ndarray:
    """The chosen channels of `[h, w, C]` as a grid of viridis tiles, each scaled from
    its own minimum to its maximum (one shared scale lets a single hot channel, or the
    padded border, wash out all the others)."""
    tiles = [upscale(colorize(normalize(fmap[..., c])), tile) for c in channels]
    return tile_grid(tiles, min(columns, max(1, len(tiles))))


def feature_maps_view(source: Any, image: Any, layers: Sequence[str] | None = None,
                      n_channels: int = 16, out: Any = None) -> dict:
    """Writes `feature_maps_<layer>.png` per layer; returns `{"view", "files", "layers"}`
    with, per layer, `name`, `shape`, `most_active` channels and their `means`."""

    model, run = as_model(source)
    output = Output(out, run)
    maps = feature_maps(model, image, layers)
    records = []
    for name, fmap in maps.items():
        top = most_active(fmap, n_channels)
        fig, ax = subplots(figsize=(8, 1.3 + 1.0 * ((len(top) + 7) // 8)))
        ax.imshow(channel_grid(fmap, top))
        ax.set_axis_off()
        ax.set_title(f"{name}: {fmap.shape[0]}x{fmap.shape[1]}x{fmap.shape[2]}, the "
                     f"{len(top)} most active channels ({', '.join(map(str, top[:8]))}"
                     f"{'...' if len(top) > 8 else ''})", fontsize=9)
        output.png(f"feature_maps_{name}", fig)
        records.append({"name": name, "shape": list(fmap.shape), "most_active": top,
                        "means": [float(fmap[..., c].mean()) for c in top]})
    return {"view": "feature-maps", "files": output.files, "layers": records}
