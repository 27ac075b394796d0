"""Gradients through depth: why deep sigmoid networks stop learning, and ResNets do not.

Two views. The user's model: the norm of the loss gradient with respect to each layer's
kernel, on a batch of the run's images, input to output. The lecture's experiment: three
small 20-layer networks, sigmoid, ReLU and residual (x + relu(W x)), trained a few steps
on the same toy problem; the norm of the gradient reaching the first layer's output over
the last one's. Each
sigmoid multiplies the backward signal by at most 1/4 (its largest slope), so 20 of them
shrink it a trillion times; a residual connection adds an identity path the gradient
takes unchanged.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from transferkit.errors import ConfigError
from transferkit.fileio import subplots
from transferkit.inspect.base import Output, as_model, model_images

KINDS = ("sigmoid", "relu", "residual")


def _kernel(layer: keras.layers.Layer):
    for attr in ("kernel", "depthwise_kernel"):
        if getattr(layer, attr, None) is not None:
            return getattr(layer, attr)
    return None


def gradient_norms(model: keras.Model, images: np.ndarray, labels: Sequence[int] | None
                   = None) -> list[dict]:
    """`[{"name", "norm"}]`: the cross-entropy's gradient norm for each layer's kernel.

    Args:
        images: Raw RGB `[N, H, W, 3]` at the model's input size.
        labels: True classes (default: the model's own predictions).
    """
    layers = [l for l in model.layers if _kernel(l) is not None]
    kernels = [_kernel(l) for l in layers]
    x = tf.constant(np.asarray(images, np.float32))
    with tf.GradientTape() as tape:
        tape.watch([k.value for k in kernels])
        probs = model(x, training=False)
        y = tf.argmax(probs, axis=-1) if labels is None else tf.constant(list(labels))
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, probs))
    grads = tape.gradient(loss, [k.value for k in kernels])
    return [{"name": l.name, "norm": float(tf.norm(g)) if g is not None else 0.0}
            for l, g in zip(layers, grads)]


def toy_networks(depth: int = 20, width: int = 32, steps: int = 5, seed: int = 0,
                 n: int = 256, features: int = 16, classes: int = 4) -> dict:
    """The lecture's experiment: sigmoid, ReLU and residual networks of `depth` layers.

    Returns:
        `{kind: {"norms": [depth floats, first to last: |dLoss/d output| of each
        hidden layer], "ratio": first / last,
        "loss": [per step]}}` for each of KINDS, after `steps` Adam steps on a toy
        problem (labels from a random linear teacher).
    """
    if depth < 2 or steps < 0:
        raise ConfigError(f"depth must be at least 2 and steps non-negative ({depth}, {steps})")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32)
    y = (x @ rng.standard_normal((features, classes))).argmax(axis=1)
    out = {}
    for kind in KINDS:
        keras.utils.set_random_seed(seed)
        hidden = [keras.layers.Dense(width, activation="sigmoid" if kind == "sigmoid"
                                     else "relu") for _ in range(depth)]
        stem = keras.layers.Dense(width)
        head = keras.layers.Dense(classes)
        optimizer = keras.optimizers.Adam(1e-3)

        def forward(inputs):
            h = stem(inputs) if kind == "residual" else inputs
            outputs = []
            for layer in hidden:
                h = h + layer(h) if kind == "residual" else layer(h)
                outputs.append(h)
            return head(h), outputs

        losses, signal = [], None
        for step in range(steps + 1):
            with tf.GradientTape() as tape:
                logits, outputs = forward(x)
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                    y, logits, from_logits=True))
            variables = [v for l in [stem, *hidden, head] for v in l.trainable_variables]
            grads = tape.gradient(loss, variables + outputs)
            signal = grads[len(variables):]
            losses.append(float(loss))
            if step < steps:
                optimizer.apply_gradients(zip(grads[:len(variables)], variables))
        # The backward signal reaching each layer's output: what the chain rule
        # multiplies on its way down (a kernel's gradient also scales with its input).
        norms = [float(tf.norm(g)) for g in signal]
        out[kind] = {"norms": norms, "ratio": norms[0] / max(norms[-1], 1e-30),
                     "loss": losses}
    return out


def gradients_view(source: Any, n_images: int = 16, toy_steps: int = 5, out: Any = None
                   ) -> dict:
    """Writes `gradients.png`; returns `{"view", "files", "layers", "ratio", "toy"}`
    (`ratio`: first / last layer of the user's model; `toy`: `{kind: {"ratio", "norms"}}`).
    """

    model, run = as_model(source)
    output = Output(out, run)
    if run is not None:
        paths = run.test_samples(n_images)
        names = [p.parent.name for p in paths]
        labels = [run.class_names.index(c) if c in run.class_names else None for c in names]
        labels = None if None in labels else labels
        images = model_images(model, paths)
    else:
        rng = np.random.default_rng(0)
        images = rng.uniform(0, 255, (n_images, *model.input_shape[1:])).astype(np.float32)
        labels = None
    layers = gradient_norms(model, images, labels)
    toy = toy_networks(steps=toy_steps)
    fig, axes = subplots(1, 2, figsize=(13, 4))
    axes[0].semilogy([r["norm"] + 1e-30 for r in layers], ".-")
    axes[0].set_title(f"{model.name}: |dLoss/dkernel| per layer (input → output), "
                      f"{len(images)} images", fontsize=9)
    axes[0].set_xlabel("layer (with a kernel)")
    for kind, r in toy.items():
        axes[1].semilogy(range(1, len(r["norms"]) + 1), r["norms"], ".-",
                         label=f"{kind}: first/last {r['ratio']:.1e}")
    axes[1].set_xlabel("layer of the toy network")
    axes[1].set_title(f"20-layer networks after {toy_steps} steps: |dLoss/d output| per "
                      "layer", fontsize=9)
    axes[1].legend(fontsize=8)
    output.png("gradients", fig)
    ratio = layers[0]["norm"] / max(layers[-1]["norm"], 1e-30) if layers else None
    return {"view": "gradients", "files": output.files, "layers": layers, "ratio": ratio,
            "toy": {k: {"ratio": v["ratio"], "norms": v["norms"]} for k, v in toy.items()}}
