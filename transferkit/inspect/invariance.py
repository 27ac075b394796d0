"""Translation invariance: the class probability and the pooled features as the object
moves across the frame.

The photo is enlarged into a canvas a little bigger than the model's input and the input
window slides over it, one pixel at a time. Why the answer barely moves: convolutions
share their weights across positions (a shifted input gives a shifted feature map), and
the global average pooling forgets where. Why it still wobbles: the strided layers
sample the map every `s` pixels, so a shift that is not a multiple of the total stride
(32 for MobileNetV2's last map) lands between samples (aliasing), and units near the
border see padding. At multiples of a layer's total stride, its interior features are
exactly the original's, shifted (`shifted_feature_error`).
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np

from transferkit.data.images import as_rgb, load_image
from transferkit.data.pipeline import resize
from transferkit.errors import ConfigError
from transferkit.fileio import subplots
from transferkit.inspect.architecture import geometries
from transferkit.inspect.base import (
    Output, activations, as_model, check_layer, class_names_of)
from transferkit.model import feature_layer_name, is_transferkit_classifier


def canvas_crops(image: np.ndarray, side: int, shifts: Sequence[int]) -> np.ndarray:
    """Crops `side x side` of a canvas (the photo resized to `side + max(shifts)`) at
    each horizontal offset, vertically centred: `[len(shifts), side, side, 3]`."""
    margin = max(shifts)
    canvas = resize(as_rgb(image), side + margin).numpy()
    top = margin // 2
    return np.stack([canvas[top:top + side, s:s + side] for s in shifts]).astype(np.float32)


def interior(model: keras.Model, layer: str, shift: int) -> tuple[slice, slice]:
    """Columns and rows of `layer`'s map whose receptive field lies inside the image in
    both the original and the crop shifted by `shift` (a multiple of its jump)."""
    g = geometries(model)[layer]
    h, w = model.get_layer(layer).output.shape[1:3]
    height, width = int(model.input_shape[1]), int(model.input_shape[2])

    def inside(n, axis, size):
        return [i for i in range(n) if g.start[axis] + i * g.jump[axis] >= 0
                and g.start[axis] + i * g.jump[axis] + g.rf[axis] <= size]
    rows = inside(h, 0, height)
    cols = [c for c in inside(w, 1, width) if c + shift // g.jump[1] in inside(w, 1, width)]
    if not rows or not cols:
        raise ConfigError(f"layer {layer!r} has no unit whose receptive field "
                          f"({g.rf[0]} px) fits inside the {height}x{width} input; choose "
                          "an earlier layer")
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def shifted_feature_error(model: keras.Model, layer: str, canvas: np.ndarray, shift: int
                          ) -> float:
    """Largest |F_shift[i, j] - F_0[i, j + shift / jump]| over the interior units,
    relative to the largest |F_0|: crops of `canvas` (`[H, W + shift, 3]`) at 0 and
    `shift` columns."""
    layer = check_layer(model, layer)
    side = int(model.input_shape[1])
    jump = geometries(model)[layer].jump[1]
    crops = np.stack([canvas[:side, :side], canvas[:side, shift:shift + side]])
    f0, f1 = activations(model, crops.astype(np.float32), [layer])[0]
    rows, cols = interior(model, layer, shift)
    moved = shift // jump
    a = f1[rows, cols]
    b = f0[rows, slice(cols.start + moved, cols.stop + moved)]
    return float(np.abs(a - b).max() / (np.abs(f0).max() + 1e-12))


def invariance(source: Any, image: Any, max_shift: int | None = None, step: int = 1,
               layer: str | None = None) -> dict:
    """The class probability and pooled features over horizontal shifts of the frame.

    Args:
        source: A run, run directory or Keras model.
        image: The photo (path, bytes or RGB array).
        max_shift: Largest shift in pixels (default: twice the layer's total stride).
        step: Shift step, pixels.
        layer: Feature map whose global average is compared (default: the last).

    Returns:
        `{"shifts", "probabilities" (of the class predicted at shift 0), "class",
        "feature_change" (1 - cosine similarity of the pooled features with shift 0's),
        "total_stride", "layer", "amplitude" (max - min probability)}`.
    """
    model, run = as_model(source)
    if layer is None and is_transferkit_classifier(model):
        layer = feature_layer_name(model)
    layer = check_layer(model, layer)
    stride = geometries(model)[layer].jump[1]
    max_shift = 2 * stride if max_shift is None else int(max_shift)
    if max_shift < 1 or step < 1:
        raise ConfigError(f"max_shift ({max_shift}) and step ({step}) must be at least 1")
    photo = as_rgb(image) if isinstance(image, np.ndarray) else load_image(image)
    shifts = list(range(0, max_shift + 1, step))
    crops = canvas_crops(photo, int(model.input_shape[1]), shifts)
    probabilities, features = [], []
    outputs = keras.Model(model.inputs[0], [model.get_layer(layer).output,
                                             model.outputs[0]])
    for i in range(0, len(crops), 16):
        fmap, probs = outputs(crops[i:i + 16], training=False)
        features.append(np.asarray(fmap).mean(axis=(1, 2)))
        probabilities.append(np.asarray(probs))
    probs = np.concatenate(probabilities)
    pooled = np.concatenate(features)
    target = int(probs[0].argmax())
    norms = np.linalg.norm(pooled, axis=1) * np.linalg.norm(pooled[0])
    # Two all-zero vectors (dead units) are equal: no change.
    cosine = np.where(norms > 0, pooled @ pooled[0] / np.maximum(norms, 1e-30),
                      np.linalg.norm(pooled, axis=1) == 0)
    curve = probs[:, target]
    return {"shifts": shifts, "probabilities": [float(p) for p in curve],
            "class": class_names_of(model, run)[target],
            "feature_change": [float(1 - c) for c in cosine], "total_stride": int(stride),
            "layer": layer, "amplitude": float(curve.max() - curve.min())}


def invariance_view(source: Any, image: Any, out: Any = None, **kwargs) -> dict:
    """Writes `invariance.png`; returns the `invariance` record with `view`, `files`."""

    model, run = as_model(source)
    output = Output(out, run)
    r = invariance(run if run is not None else model, image, **kwargs)
    fig, ax = subplots(figsize=(8, 3.6))
    ax.plot(r["shifts"], r["probabilities"], "o-", ms=3, label=f"P({r['class']})")
    ax.plot(r["shifts"], r["feature_change"], "s-", ms=3, color="tab:orange",
            label=f"1 - cos(pooled {r['layer']}, shift 0)")
    for k in range(0, max(r["shifts"]) + 1, r["total_stride"]):
        ax.axvline(k, color="red", alpha=0.4, ls="--")
    ax.set_xlabel("shift of the frame (pixels)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"red: multiples of the total stride ({r['total_stride']} px); amplitude "
                 f"of P: {r['amplitude']:.3f}", fontsize=9)
    ax.legend(fontsize=8)
    output.png("invariance", fig)
    return {"view": "invariance", "files": output.files, **r}
