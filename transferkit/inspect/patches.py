"""Maximally activating patches: which pieces of the run's images excite a channel most.

One pass over the images: for each chosen channel, each image's strongest position
(value, image, y, x); the top N images per channel (one patch per image, so one photo
of many copies cannot fill a row) are cut out along the unit's receptive field. As a
yardstick, the same channels at random positions of the same images: the top patches
should beat the 95th percentile of those by far.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from transferkit.errors import ConfigError
from transferkit.fileio import subplots
from transferkit.inspect.architecture import geometries
from transferkit.inspect.base import (
    Output, as_model, check_layer, model_images, parse_channels, submodel, tile_grid,
    to_uint8)

TILE = 72
RANDOM_PER_IMAGE = 4     # random positions sampled per image for the yardstick


def run_images(run: Any, max_images: int | None = None, seed: int = 0) -> list[str]:
    """The run's images that are still on disk (all splits), a seeded sample of
    `max_images` of them when given."""
    root = run.data_folder
    paths = [str(root / p) for p in run.splits["path"] if (root / p).is_file()]
    if not paths:
        raise ConfigError(f"none of the run's images is under {root} any more; pass "
                          "images explicitly")
    if max_images is not None and len(paths) > max_images:
        rng = np.random.default_rng(seed)
        paths = [paths[i] for i in sorted(rng.choice(len(paths), max_images, replace=False))]
    return paths


def top_patches(source: Any, layer: str | None = None,
                channels: str | Sequence[int] | None = None, n_top: int = 6,
                images: Sequence[Any] | None = None, max_images: int | None = 400,
                batch_size: int = 32, seed: int = 0,
                progress: Callable[[float], None] | None = None) -> dict:
    """Finds the top `n_top` (value, image, position) of each channel of `layer`.

    Args:
        source: A run, run directory or Keras model (a model needs `images`).
        layer: Layer with a spatial map (default: the last feature map).
        channels: `"0-7"`, a list, or None (the first 8).
        n_top: Patches per channel (one per image).
        images: Paths (default: the run's images, a seeded sample of `max_images`).
        max_images: Cap on the run's images read (None: all).
        batch_size: Images per forward pass.
        seed: Seed of the image sample and of the random positions.
        progress: Called with the fraction done after each batch.

    Returns:
        `{"layer", "images" (paths), "channels": [{"channel", "top_mean", "random_p95",
        "top": [{"value", "image" (index), "path", "y", "x", "box"}]}], "seconds"}`;
        `box` is `(top, left, bottom, right)` in the model's input pixels.
    """
    model, run = as_model(source)
    layer = check_layer(model, layer)
    channels = parse_channels(channels, model, layer)
    if images is None:
        if run is None:
            raise ConfigError("top patches of a bare model need images")
        images = run_images(run, max_images, seed)
    images = list(images)
    if not images:
        raise ConfigError("no images to search for top patches")
    start = time.perf_counter()
    sub = submodel(model, layer)
    rng = np.random.default_rng(seed)
    best_values, best_pos, random_values = [], [], []
    for i in range(0, len(images), batch_size):
        fmap = np.asarray(sub(model_images(model, images[i:i + batch_size]),
                              training=False))[..., channels]       # [B, h, w, K]
        flat = fmap.reshape(len(fmap), -1, len(channels))
        arg = flat.argmax(axis=1)                                   # [B, K]
        best_values.append(np.take_along_axis(flat, arg[:, None, :], axis=1)[:, 0])
        best_pos.append(np.stack(np.unravel_index(arg, fmap.shape[1:3]), axis=-1))
        picks = rng.integers(0, flat.shape[1], (len(flat), RANDOM_PER_IMAGE))
        random_values.append(np.take_along_axis(flat, picks[..., None], axis=1)
                             .reshape(-1, len(channels)))
        if progress is not None:
            progress(min(1.0, (i + batch_size) / len(images)))
    values = np.concatenate(best_values)          # [N, K]
    positions = np.concatenate(best_pos)          # [N, K, 2]
    randoms = np.concatenate(random_values)       # [N * R, K]
    geometry = geometries(model)[layer]
    height, width = int(model.input_shape[1]), int(model.input_shape[2])
    records = []
    for k, channel in enumerate(channels):
        order = np.argsort(-values[:, k], kind="stable")[:n_top]
        top = [{"value": float(values[j, k]), "image": int(j), "path": str(images[j]),
                "y": int(positions[j, k, 0]), "x": int(positions[j, k, 1]),
                "box": list(geometry.box(int(positions[j, k, 0]), int(positions[j, k, 1]),
                                         height, width))} for j in order]
        records.append({"channel": channel,
                        "top_mean": float(np.mean([t["value"] for t in top])),
                        "random_p95": float(np.percentile(randoms[:, k], 95)),
                        "top": top})
    return {"layer": layer, "images": [str(p) for p in images], "channels": records,
            "seconds": time.perf_counter() - start}


def cut_patch(image: np.ndarray, box: Sequence[int], side: int = TILE) -> np.ndarray:
    """The box `(top, left, bottom, right)` of an image, resized to `side` x `side`."""
    from PIL import Image

    top, left, bottom, right = box
    patch = to_uint8(image[top:bottom, left:right])
    return np.asarray(Image.fromarray(patch).resize((side, side),
                                                    Image.Resampling.BILINEAR))


def patches_picture(model: Any, found: dict) -> np.ndarray:
    """One row per channel: its top patches, each cut along its receptive field."""
    loaded: dict[int, np.ndarray] = {}
    tiles = []
    for record in found["channels"]:
        for t in record["top"]:
            if t["image"] not in loaded:
                loaded[t["image"]] = model_images(model, [t["path"]])[0]
            tiles.append(cut_patch(loaded[t["image"]], t["box"]))
    columns = max(len(r["top"]) for r in found["channels"])
    return tile_grid(tiles, columns, gap=3)


def top_patches_view(source: Any, layer: str | None = None,
                     channels: str | Sequence[int] | None = None, n_top: int = 6,
                     max_images: int | None = 400, out: Any = None, **kwargs) -> dict:
    """Writes `top_patches_<layer>.png`; returns `{"view", "files", "layer", "channels":
    [{"channel", "top_mean", "random_p95", "images", "top"}], "n_images", "seconds"}`."""

    model, run = as_model(source)
    output = Output(out, run)
    found = top_patches(source if run is None else run, layer, channels, n_top,
                        max_images=max_images, **kwargs)
    grid = patches_picture(model, found)
    rows = len(found["channels"])
    fig, ax = subplots(figsize=(1.2 * n_top + 1.5, 1.2 * rows + 0.6))
    ax.imshow(grid)
    step = grid.shape[0] / rows
    ax.set_yticks([step * (i + 0.5) for i in range(rows)],
                  [f"ch {r['channel']}: {r['top_mean']:.2f}\n(random p95 "
                   f"{r['random_p95']:.2f})" for r in found["channels"]], fontsize=7)
    ax.set_xticks([])
    ax.set_title(f"{found['layer']}: top {n_top} patches of {len(found['images'])} images "
                 "(one per image, cut along the receptive field)", fontsize=9)
    output.png(f"top_patches_{found['layer']}", fig)
    channels_out = [{"channel": r["channel"], "top_mean": r["top_mean"],
                     "random_p95": r["random_p95"],
                     "images": [t["path"] for t in r["top"]], "top": r["top"]}
                    for r in found["channels"]]
    return {"view": "top-patches", "files": output.files, "layer": found["layer"],
            "channels": channels_out, "n_images": len(found["images"]),
            "seconds": found["seconds"]}
