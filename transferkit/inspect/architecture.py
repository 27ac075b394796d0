"""Convolution arithmetic of every layer: shapes, padding per side, parameters, and the
receptive field and jump of each unit (Araujo et al., "Computing receptive fields of
convolutional neural networks", Distill 2019).

    out = floor((n + p_before + p_after - k) / s) + 1

Keras's `same` padding pads `max((out - 1) * s + k - n, 0)` pixels, the smaller half
first: with stride 2 on an even input that is 0 before and 1 after (as MobileNet's
explicit `ZeroPadding2D((0, 1), (0, 1))`). The geometry walks the graph in order: a
convolution or pooling of kernel k and stride s maps (receptive field r, jump j, first
pixel l) to (r + (k - 1) j, j s, l - p_before j); a merge (Add, Concatenate) takes the
union of its inputs' fields; a global pooling or dense layer sees the whole image.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras

from transferkit.errors import ConfigError
from transferkit.fileio import subplots

_CONV = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "MaxPooling2D",
         "AveragePooling2D")
_MERGE = ("Add", "Concatenate", "Multiply", "Average", "Maximum", "Minimum", "Subtract")
_GLOBAL = ("GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten", "Dense")


@dataclasses.dataclass
class Geometry:
    """Where a layer's unit (0, 0) looks in the input image, per axis (height, width).

    Attributes:
        rf: Receptive field side in input pixels.
        jump: Input pixels between neighbouring units (the layer's total stride).
        start: Input coordinate of the first pixel of unit 0's field (can be negative:
            padding).
    """

    rf: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[int, int]

    def box(self, y: int, x: int, height: int, width: int) -> tuple[int, int, int, int]:
        """The field of unit (y, x) clipped to the image: `(top, left, bottom, right)`,
        bottom and right exclusive."""
        top = self.start[0] + y * self.jump[0]
        left = self.start[1] + x * self.jump[1]
        return (max(0, top), max(0, left), min(height, top + self.rf[0]),
                min(width, left + self.rf[1]))


def same_padding(n: int, k: int, s: int) -> tuple[int, int]:
    """Keras/TensorFlow `same` padding of one axis: `(before, after)`."""
    out = math.ceil(n / s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def conv_output(n: int, k: int, s: int = 1, padding: str | int | tuple[int, int] = 0
                ) -> tuple[int, tuple[int, int]]:
    """One axis of a convolution or pooling: `(out, (p_before, p_after))`.

    Args:
        n: Input side. k: Kernel side (dilation included). s: Stride.
        padding: `"valid"`, `"same"`, an int (each side) or `(before, after)`.

    Raises:
        ConfigError: Non-positive sizes, or a kernel larger than the padded input.
    """
    if min(n, k, s) < 1:
        raise ConfigError(f"input {n}, kernel {k} and stride {s} must all be at least 1")
    if padding == "same":
        pads = same_padding(n, k, s)
    elif padding == "valid":
        pads = (0, 0)
    elif isinstance(padding, (tuple, list)):
        pads = (int(padding[0]), int(padding[1]))
    else:
        pads = (int(padding), int(padding))
    if min(pads) < 0:
        raise ConfigError(f"padding must not be negative, got {padding}")
    if n + sum(pads) < k:
        raise ConfigError(f"a {k}x{k} kernel does not fit a {n}-pixel input padded by "
                          f"{pads}: use a smaller kernel or more padding")
    return (n + pads[0] + pads[1] - k) // s + 1, pads


def calculator(n: int, k: int, p: str | int = 0, s: int = 1, filters: int = 1,
               in_channels: int = 3, pool: bool = False, bias: bool = True) -> dict:
    """The lecture's calculator: an `n x n x in_channels` input, `filters` k x k filters.

    Returns:
        `{"output_shape": [out, out, C], "padding": [before, after], "params",
        "formula", "params_formula"}` (a pooling layer keeps the channels, no params).
    """
    out, pads = conv_output(n, k, s, p)
    channels = in_channels if pool else filters
    params = 0 if pool else k * k * in_channels * filters + (filters if bias else 0)
    formula = f"floor(({n} + {pads[0]} + {pads[1]} - {k}) / {s}) + 1 = {out}"
    p_formula = "no weights" if pool else \
        f"{k}·{k}·{in_channels}·{filters}{f' + {filters}' if bias else ''} = {params:,}"
    return {"output_shape": [out, out, channels], "padding": list(pads), "params": params,
            "formula": formula, "params_formula": p_formula}


def _pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else \
        (int(value[0]), int(value[1]))


def _spatial(shape: Any) -> tuple[int, int] | None:
    return (int(shape[1]), int(shape[2])) if len(shape) == 4 and None not in shape[1:3] \
        else None


def expected_params(layer: keras.layers.Layer) -> int | None:
    """The parameter count by formula (None: a layer type without one here)."""
    kind = type(layer).__name__
    if not layer.weights:
        return 0
    bias = int(bool(getattr(layer, "use_bias", False)))
    c_in = int(layer.input.shape[-1]) if kind != "Dense" else int(layer.input.shape[-1])
    if kind == "Conv2D":
        kh, kw = _pair(layer.kernel_size)
        return kh * kw * c_in // layer.groups * layer.filters + bias * layer.filters
    if kind == "DepthwiseConv2D":
        kh, kw = _pair(layer.kernel_size)
        m = layer.depth_multiplier
        return kh * kw * c_in * m + bias * c_in * m
    if kind == "SeparableConv2D":
        kh, kw = _pair(layer.kernel_size)
        m = layer.depth_multiplier
        return kh * kw * c_in * m + c_in * m * layer.filters + bias * layer.filters
    if kind == "Dense":
        return c_in * layer.units + bias * layer.units
    if kind == "BatchNormalization":
        return c_in * (2 + int(layer.center) + int(layer.scale))
    return None


def _layer_geometry(layer, inputs: list[Geometry | None], in_size, out_size
                    ) -> tuple[Geometry | None, tuple, tuple, tuple]:
    """(geometry, kernel, stride, pads (top, bottom, left, right)) of one layer."""
    kind = type(layer).__name__
    g = inputs[0] if inputs else None
    none = (None, None)
    if kind in _CONV and g is not None and in_size is not None:
        k = _pair(getattr(layer, "kernel_size", None) or layer.pool_size)
        s = _pair(layer.strides)
        d = _pair(getattr(layer, "dilation_rate", 1))
        keff = tuple(d[i] * (k[i] - 1) + 1 for i in range(2))
        pads = [conv_output(in_size[i], keff[i], s[i], layer.padding)[1] for i in range(2)]
        geometry = Geometry(
            tuple(g.rf[i] + (keff[i] - 1) * g.jump[i] for i in range(2)),
            tuple(g.jump[i] * s[i] for i in range(2)),
            tuple(g.start[i] - pads[i][0] * g.jump[i] for i in range(2)))
        return geometry, k, s, (*pads[0], *pads[1])
    if kind == "ZeroPadding2D" and g is not None:
        (t, b), (left, r) = layer.padding
        geometry = Geometry(g.rf, g.jump, (g.start[0] - t * g.jump[0],
                                           g.start[1] - left * g.jump[1]))
        return geometry, none, (1, 1), (t, b, left, r)
    if kind == "Cropping2D" and g is not None:
        (t, b), (left, r) = layer.cropping
        geometry = Geometry(g.rf, g.jump, (g.start[0] + t * g.jump[0],
                                           g.start[1] + left * g.jump[1]))
        return geometry, none, (1, 1), (-t, -b, -left, -r)
    if kind in _MERGE and inputs and all(i is not None for i in inputs):
        if len({i.jump for i in inputs}) == 1:
            start = tuple(min(i.start[a] for i in inputs) for a in range(2))
            end = tuple(max(i.start[a] + i.rf[a] for i in inputs) for a in range(2))
            return Geometry(tuple(end[a] - start[a] for a in range(2)), inputs[0].jump,
                            start), none, none, none
        return None, none, none, none
    if kind in _GLOBAL or g is None:
        return None, none, none, none
    if in_size == out_size:  # BatchNorm, activations, preprocessing...: point-wise
        return g, none, none, none
    return None, none, none, none


def geometries(model: keras.Model) -> dict[str, Geometry]:
    """The receptive-field geometry of every layer with a spatial output."""
    return {r["name"]: r["geometry"] for r in _walk(model) if r["geometry"] is not None}


def layer_table(model: keras.Model) -> list[dict]:
    """One record per layer, in graph order (the `architecture --json` records).

    Returns:
        Dicts with `name`, `type`, `input_shape`, `output_shape` (H, W, C lists),
        `kernel`, `stride`, `padding` (`[top, bottom, left, right]` pixels, or None),
        `params` (`count_params()`), `params_formula` (by formula, None if none here),
        `receptive_field` and `jump` (pixels, or None past a global layer),
        `depth_only` (a 1x1 convolution), `strided` (stride above 1) and `arithmetic`
        (the output-size formula filled in).
    """
    records = []
    for r in _walk(model):
        geometry = r.pop("geometry")
        r["receptive_field"] = list(geometry.rf) if geometry else None
        r["jump"] = list(geometry.jump) if geometry else None
        r["start"] = list(geometry.start) if geometry else None
        records.append(r)
    return records


def _walk(model: keras.Model) -> list[dict]:
    geometry: dict[str, Geometry | None] = {}
    records = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            geometry[layer.name] = Geometry((1, 1), (1, 1), (0, 0))
            continue
        producers = [t._keras_history.operation.name for node in layer._inbound_nodes
                     for t in node.input_tensors]
        inputs = [geometry.get(p) for p in producers]
        in_shape = list(layer.input.shape[1:]) if not isinstance(layer.input, list) else \
            list(layer.input[0].shape[1:])
        out_shape = list(layer.output.shape[1:])
        in_size = _spatial([None, *in_shape]) if len(in_shape) == 3 else None
        out_size = _spatial([None, *out_shape]) if len(out_shape) == 3 else None
        g, kernel, stride, pads = _layer_geometry(layer, inputs, in_size, out_size)
        geometry[layer.name] = g
        arithmetic = None
        if kernel[0] is not None and in_size is not None:
            arithmetic = (f"floor(({in_size[0]} + {pads[0]} + {pads[1]} - {kernel[0]}) / "
                          f"{stride[0]}) + 1 = {out_size[0]}")
        records.append({
            "name": layer.name, "type": type(layer).__name__,
            "input_shape": in_shape, "output_shape": out_shape,
            "kernel": list(kernel) if kernel[0] is not None else None,
            "stride": list(stride) if stride[0] is not None else None,
            "padding": list(pads) if pads[0] is not None else None,
            "params": int(layer.count_params()) if layer.built else 0,
            "params_formula": expected_params(layer),
            "depth_only": kernel[0] == 1 and kernel[1] == 1,
            "strided": stride[0] is not None and max(stride) > 1,
            "arithmetic": arithmetic, "geometry": g})
    return records


def architecture_view(source: Any, out: Any = None) -> dict:
    """Writes `architecture.png` (size, channels and receptive field through depth) and
    `architecture.csv`; returns `{"view", "files", "layers"}`.

    Args:
        source: A run, run directory or Keras model.
        out: Output folder (default `RUN/inspect/`).
    """
    import pandas as pd

    from transferkit.fileio import write_csv
    from transferkit.inspect.base import Output, as_model

    model, run = as_model(source)
    output = Output(out, run)
    layers = layer_table(model)
    spatial = [r for r in layers if len(r["output_shape"]) == 3]
    x = range(len(spatial))
    fig, axes = subplots(3, 1, figsize=(11, 7), sharex=True)
    axes[0].plot(x, [r["output_shape"][0] for r in spatial], drawstyle="steps-post")
    axes[0].set_ylabel("output side (px)")
    axes[1].bar(x, [r["output_shape"][2] for r in spatial], color="tab:orange")
    axes[1].set_ylabel("channels")
    axes[2].plot(x, [(r["receptive_field"] or [None])[0] for r in spatial], color="tab:green")
    axes[2].axhline(int(model.input_shape[1]), color="grey", ls=":", label="image side")
    axes[2].set_ylabel("receptive field (px)")
    axes[2].legend(loc="upper left")
    for i, r in enumerate(spatial):
        if r["strided"]:
            for ax in axes:
                ax.axvline(i, color="red", alpha=0.35, lw=1)
    ticks = [i for i, r in enumerate(spatial) if r["strided"]]
    axes[2].set_xticks(ticks, [spatial[i]["name"] for i in ticks], rotation=30, ha="right",
                       fontsize=7)
    axes[0].set_title(f"{model.name}: {sum(r['params'] for r in layers):,} parameters; "
                      "red lines: stride-2 layers")
    output.png("architecture", fig)
    table = pd.DataFrame([{k: v for k, v in r.items()} for r in layers])
    csv = output.folder / "architecture.csv"
    write_csv(csv, table)
    output.files.append(str(csv))
    return {"view": "architecture", "files": output.files, "layers": layers}
