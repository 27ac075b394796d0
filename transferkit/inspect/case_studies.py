"""The lecture's case studies, built in Keras (no weights): LeNet-5, the AlexNet
convolution stack, one inception module and one residual block, each with its
per-layer shape and parameter table (`architecture.layer_table`).

The inception module is GoogLeNet's 3a (28x28x192 in, 256 out). Its point is the 1x1
"bottleneck": a 5x5 convolution to 32 channels straight on 192 channels costs
28·28·5·5·192·32 = 120 million multiplications; reducing to 16 channels first costs
28·28·192·16 + 28·28·5·5·16·32 = 12.4 million, ten times less, for the same output shape.
"""

from __future__ import annotations

from typing import Any

import keras

from transferkit.fileio import subplots
from transferkit.inspect.architecture import layer_table
from transferkit.inspect.base import Output

L = keras.layers


def lenet5() -> keras.Model:
    """LeNet-5 (LeCun et al. 1998): 32x32x1 → 6 5x5 → pool → 16 5x5 → pool → 120 → 84
    → 10 (tanh, average pooling; the original's sparse C3 connections made full)."""
    x = inputs = keras.Input((32, 32, 1), name="input")
    x = L.Conv2D(6, 5, activation="tanh", name="c1")(x)
    x = L.AveragePooling2D(2, name="s2")(x)
    x = L.Conv2D(16, 5, activation="tanh", name="c3")(x)
    x = L.AveragePooling2D(2, name="s4")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(120, activation="tanh", name="c5")(x)
    x = L.Dense(84, activation="tanh", name="f6")(x)
    return keras.Model(inputs, L.Dense(10, name="output")(x), name="lenet5")


def alexnet_convs() -> keras.Model:
    """AlexNet's convolution stack (Krizhevsky et al. 2012) on one device, 227x227x3
    in: 96 11x11/4 → max 3x3/2 → 256 5x5 → max → 384 3x3 → 384 3x3 → 256 3x3 → max."""
    x = inputs = keras.Input((227, 227, 3), name="input")
    x = L.Conv2D(96, 11, strides=4, activation="relu", name="conv1")(x)
    x = L.MaxPooling2D(3, 2, name="pool1")(x)
    x = L.Conv2D(256, 5, padding="same", activation="relu", name="conv2")(x)
    x = L.MaxPooling2D(3, 2, name="pool2")(x)
    x = L.Conv2D(384, 3, padding="same", activation="relu", name="conv3")(x)
    x = L.Conv2D(384, 3, padding="same", activation="relu", name="conv4")(x)
    x = L.Conv2D(256, 3, padding="same", activation="relu", name="conv5")(x)
    return keras.Model(inputs, L.MaxPooling2D(3, 2, name="pool5")(x), name="alexnet_convs")


def inception_module(bottleneck: bool = True) -> keras.Model:
    """GoogLeNet's inception 3a on 28x28x192: 1x1 64 | 1x1 96 → 3x3 128 | 1x1 16 → 5x5
    32 | max 3x3 → 1x1 32, concatenated to 256 channels. `bottleneck=False`: the naive
    module, 3x3 and 5x5 straight on the input and the pooled input passed through."""
    x = keras.Input((28, 28, 192), name="input")
    relu = {"padding": "same", "activation": "relu"}
    b1 = L.Conv2D(64, 1, name="1x1", **relu)(x)
    b2 = L.Conv2D(96, 1, name="3x3_reduce", **relu)(x) if bottleneck else x
    b2 = L.Conv2D(128, 3, name="3x3", **relu)(b2)
    b3 = L.Conv2D(16, 1, name="5x5_reduce", **relu)(x) if bottleneck else x
    b3 = L.Conv2D(32, 5, name="5x5", **relu)(b3)
    b4 = L.MaxPooling2D(3, 1, padding="same", name="pool")(x)
    if bottleneck:
        b4 = L.Conv2D(32, 1, name="pool_proj", **relu)(b4)
    out = L.Concatenate(name="concat")([b1, b2, b3, b4])
    return keras.Model(x, out, name="inception_3a" if bottleneck else "inception_naive")


def residual_block(side: int = 56, channels: int = 64) -> keras.Model:
    """ResNet's basic block: two 3x3 convolutions with BatchNorm, plus the identity."""
    x = keras.Input((side, side, channels), name="input")
    h = L.Conv2D(channels, 3, padding="same", use_bias=False, name="conv1")(x)
    h = L.ReLU(name="relu1")(L.BatchNormalization(name="bn1")(h))
    h = L.Conv2D(channels, 3, padding="same", use_bias=False, name="conv2")(h)
    h = L.BatchNormalization(name="bn2")(h)
    out = L.ReLU(name="relu2")(L.Add(name="add")([x, h]))
    return keras.Model(x, out, name="residual_block")


def multiplications(model: keras.Model) -> int:
    """Multiply-accumulates of the convolution and dense layers (one image)."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            h, w, c_out = layer.output.shape[1:]
            kh, kw = layer.kernel_size
            total += h * w * c_out * kh * kw * layer.input.shape[-1]
        elif kind == "Dense":
            total += layer.input.shape[-1] * layer.units
    return int(total)


def case_studies() -> dict:
    """`{name: {"layers", "params", "multiplications"}}` for the four models, and
    `"bottleneck"`: the inception module's cost with and without its 1x1 reductions."""
    models = [lenet5(), alexnet_convs(), inception_module(), residual_block()]
    studies = {m.name: {"layers": layer_table(m), "params": int(m.count_params()),
                        "multiplications": multiplications(m)} for m in models}
    naive = inception_module(bottleneck=False)
    with_1x1 = models[2]
    studies["bottleneck"] = {
        "naive_params": int(naive.count_params()), "params": int(with_1x1.count_params()),
        "naive_multiplications": multiplications(naive),
        "multiplications": multiplications(with_1x1),
        "naive_output_channels": int(naive.output.shape[-1]),
        "output_channels": int(with_1x1.output.shape[-1])}
    return studies


def _table_figure(name: str, study: dict):

    rows = [[r["name"], r["type"], "x".join(map(str, r["output_shape"])),
             "x".join(map(str, r["kernel"])) + (f" /{r['stride'][0]}" if r["strided"] else "")
             if r["kernel"] else "", f"{r['params']:,}"] for r in study["layers"]]
    fig, ax = subplots(figsize=(7.5, 0.32 * len(rows) + 0.9))
    ax.set_axis_off()
    table = ax.table(rows, colLabels=["layer", "type", "output", "kernel", "params"],
                     loc="center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    ax.set_title(f"{name}: {study['params']:,} parameters, "
                 f"{study['multiplications'] / 1e6:,.1f} M multiplications", fontsize=9)
    return fig


def case_studies_view(out: Any = None) -> dict:
    """Writes `case_<name>.png` (each table); returns `{"view", "files", "studies"}`
    (`studies`: `case_studies()`, with the tables' records as `layers`)."""
    output = Output(out)
    studies = case_studies()
    for name, study in studies.items():
        if "layers" in study:
            output.png(f"case_{name}", _table_figure(name, study))
    return {"view": "case-studies", "files": output.files, "studies": studies}
