"""Activation maximization: the image a unit, a channel, a layer or a class "wants".

Gradient ascent on the input, the lecture's `x ← x + α ∂a/∂x`, for five objectives:

- `neuron`: `layer[y, x, z]` (default: the central unit);
- `channel`: `mean(layer[:, :, z])`;
- `layer` (DeepDream): `mean(layer²)`, from random noise or from a photo;
- `logit`: the class's pre-softmax score;
- `probability`: its softmax probability (ascended through its log, whose gradient does
  not vanish once the class wins).

Written here rather than taken from a library: Xplique pulls in a second TensorFlow,
tf-keras, TensorFlow Probability, OpenCV and scikit-image, and tf-keras-vis's trackers
fail on our models; the part needed is this one module on the explain package's
machinery (`explain.graph`'s class logits). What makes the pictures legible, after Lucid
(Olah et al., "Feature Visualization", Distill 2017):

- **transformation robustness**: each step sees the image rolled by a random jitter and
  scaled by a few percent, so only patterns that survive small moves are reinforced;
- **a decorrelated Fourier parameterization**, applied as the preconditioner it is: for
  an image `x = A θ` (colour decorrelation × 1/f-scaled inverse FFT), Adam's ascent on θ
  moves the pixels by about `A normalize(Aᵀ ∂a/∂x)`: the raw gradient is taken into
  decorrelated colours, each normalized, filtered by 1/f, and mixed back. Optimizing the pixels directly with that step keeps the image in
  raw 0-255 space, clipped after every step (no sigmoid), so the saved image is exactly
  the one optimized, and it is scored as saved (rounded to uint8, no jitter);
- **pre-activation layers**: ReLU6 passes no gradient when saturated or negative, so a
  MobileNet ReLU layer is replaced by the BatchNorm (or Add) output before it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from transferkit.errors import ConfigError
from transferkit.explain.graph import score_model
from transferkit.inspect.base import (
    Output, as_model, check_channel, check_layer, class_index, class_names_of,
    pre_activation, submodel, to_uint8)
from transferkit.model import rebuild_at_size

OBJECTIVES = ("neuron", "channel", "layer", "logit", "probability")

# Lucid's colour correlation of ImageNet (the square root of its covariance, by SVD).
_COLOR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]],
                       np.float32)


@dataclasses.dataclass
class Objective:
    """What to maximize: `kind` (one of OBJECTIVES), on `layer` (the pre-activation
    layer actually used), `channel`, `position` (y, x) or `class_index`."""

    kind: str
    layer: str | None = None
    channel: int | None = None
    position: tuple[int, int] | None = None
    class_index: int | None = None
    asked_layer: str | None = None

    def target(self, class_names: Sequence[str]) -> str:
        """A short description: `block_12_add:3`, `block_12_add[2, 2, 3]`, `tulip`..."""
        if self.kind in ("logit", "probability"):
            return class_names[self.class_index]
        if self.kind == "neuron":
            return f"{self.layer}[{self.position[0]}, {self.position[1]}, {self.channel}]"
        return f"{self.layer}:{self.channel}" if self.kind == "channel" else str(self.layer)


def make_objective(model: keras.Model, kind: str, layer: str | None = None,
                   channel: int | None = None, position: Sequence[int] | None = None,
                   class_name: str | int | None = None,
                   class_names: Sequence[str] | None = None) -> Objective:
    """A checked objective.

    Raises:
        ConfigError: Unknown objective, layer, channel out of range, position outside
            the map, or a class not in the run (each naming the valid choices).
    """
    if kind not in OBJECTIVES:
        raise ConfigError(f"unknown objective {kind!r}; choose one of {', '.join(OBJECTIVES)}")
    names = list(class_names or class_names_of(model, None))
    if kind in ("logit", "probability"):
        if class_name is None:
            raise ConfigError(f"the {kind} objective needs a class (--class); the run's "
                              f"classes are: {', '.join(names)}")
        return Objective(kind, class_index=class_index(names, class_name))
    asked = check_layer(model, layer)
    used = pre_activation(model, asked)
    if kind == "layer":
        return Objective(kind, layer=used, asked_layer=asked)
    if channel is None:
        raise ConfigError(f"the {kind} objective needs a channel (--channel); {asked!r} "
                          f"has {model.get_layer(used).output.shape[-1]} (0 to "
                          f"{model.get_layer(used).output.shape[-1] - 1})")
    channel = check_channel(model, used, channel)
    if kind == "channel":
        return Objective(kind, layer=used, channel=channel, asked_layer=asked)
    h, w = model.get_layer(used).output.shape[1:3]
    y, x = (h // 2, w // 2) if position is None else (int(position[0]), int(position[1]))
    if not (0 <= y < h and 0 <= x < w):
        raise ConfigError(f"position ({y}, {x}) is outside {used!r}'s {h}x{w} map; "
                          f"choose y 0-{h - 1}, x 0-{w - 1}")
    return Objective(kind, layer=used, channel=channel, position=(y, x), asked_layer=asked)


def objective_function(model: keras.Model, objective: Objective
                       ) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """images → `(ascended [N], reported [N])` (they differ for `probability`: the log
    is ascended, the probability reported)."""
    o = objective
    if o.kind in ("logit", "probability"):
        scores = score_model(model, None)  # the class logits, recomputed before softmax
    else:  # only up to the layer: the rest of the network would be wasted work
        inner = submodel(model, o.layer)

        def scores(images, training=False):
            return inner(images, training=training), None

    def value(images):
        act, logits = scores(images, training=False)
        if o.kind == "neuron":
            v = act[:, o.position[0], o.position[1], o.channel]
        elif o.kind == "channel":
            v = tf.reduce_mean(act[..., o.channel], axis=[1, 2])
        elif o.kind == "layer":
            v = tf.reduce_mean(tf.square(act), axis=[1, 2, 3])
        elif o.kind == "logit":
            v = logits[:, o.class_index]
        else:
            log_p = tf.nn.log_softmax(logits, axis=-1)[:, o.class_index]
            return log_p, tf.exp(log_p)
        return v, v
    return value


def start_image(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A random start: mid grey with small Gaussian noise, `[H, W, 3]` in 0-255."""
    rng = np.random.default_rng(seed)
    return np.clip(127.5 + 8.0 * rng.standard_normal((*shape, 3)), 0, 255).astype(np.float32)


def _preconditioner(height: int, width: int, power: float = 1.0) -> tf.Tensor:
    """1/f^power over the rfft2d frequencies. Lucid's 1/f parameterization under Adam
    (which normalizes each coefficient's step) moves the pixels by about 1/f; the exact
    plain-gradient equivalent, 1/f², washes the image out into a few blobs."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    scale = 1.0 / np.maximum(np.sqrt(fx ** 2 + fy ** 2), 1.0 / max(height, width))
    return tf.constant((scale ** power).astype(np.complex64))


def score(model: keras.Model, objective: Objective, images: np.ndarray) -> np.ndarray:
    """The reported objective of a batch of images, rounded to uint8 as saved."""
    fn = objective_function(model, objective)
    saved = np.rint(np.clip(np.asarray(images, np.float32), 0, 255))
    return np.asarray(fn(tf.constant(saved))[1])


def dream(source: Any, objective: str = "channel", layer: str | None = None,
          channel: int | None = None, position: Sequence[int] | None = None,
          class_name: str | int | None = None, steps: int = 96, size: int | None = None,
          photo: Any = None, step_size: float = 3.0, jitter: int | None = None,
          scale: float = 0.05,
          fourier: bool = True, seed: int = 0, random_starts: int = 8,
          progress: Callable[[float], None] | None = None) -> dict:
    """Maximizes an objective by gradient ascent on the input image.

    Args:
        source: A run, run directory or Keras model.
        objective: One of OBJECTIVES; `layer`, `channel`, `position` (y, x) and
            `class_name` as each needs (see `make_objective`).
        steps: Gradient steps.
        size: Input side (default the model's); another size rebuilds the classifier
            with the same weights (`transferkit.model.rebuild_at_size`).
        photo: Start from this image (path, bytes or RGB array) at its own size, instead
            of noise (DeepDream with the `layer` objective).
        step_size: Pixel change per step (the normalized gradient's standard deviation).
        jitter: Largest random roll, pixels (default 1/16 of the side: 8 at 128 px).
        scale: Largest random rescaling (fraction).
        fourier: Use the decorrelated Fourier preconditioner (False: plain gradient).
        seed: Seed of the start and the transforms; the random starts use `seed + 1...`.
        random_starts: Number of random start images scored as a baseline.
        progress: Called with the fraction of steps done.

    Returns:
        `{"objective", "layer", "target", "start", "end", "steps", "seconds", "size",
        "random_mean", "random_std", "history", "image" (uint8 [H, W, 3])}`.
    """
    from transferkit.data.images import as_rgb, load_image

    model, run = as_model(source)
    names = class_names_of(model, run)
    goal = make_objective(model, objective, layer, channel, position, class_name, names)
    began = time.perf_counter()
    if photo is not None:
        start = (as_rgb(photo) if isinstance(photo, np.ndarray) else load_image(photo))
        start = start.astype(np.float32)
        model = rebuild_at_size(model, start.shape[:2])
    else:
        model = rebuild_at_size(model, size or int(model.input_shape[1]))
        start = start_image(tuple(model.input_shape[1:3]), seed)
    height, width = start.shape[:2]
    jitter = max(1, min(height, width) // 16) if jitter is None else int(jitter)
    value = objective_function(model, goal)
    precondition = _preconditioner(height, width)
    color = tf.constant(_COLOR_SQRT / np.max(np.linalg.norm(_COLOR_SQRT, axis=0)))

    @tf.function(input_signature=[tf.TensorSpec((1, height, width, 3), tf.float32),
                                  tf.TensorSpec((2,), tf.int32), tf.TensorSpec((), tf.float32)])
    def ascend(x, shift, zoom):
        with tf.GradientTape() as tape:
            tape.watch(x)
            moved = tf.roll(x, shift, axis=[1, 2])
            new = tf.cast(tf.round(tf.cast([height, width], tf.float32) * zoom), tf.int32)
            moved = tf.image.resize(moved, new)
            moved = tf.ensure_shape(tf.image.resize_with_crop_or_pad(moved, height, width),
                                    (1, height, width, 3))
            ascended, reported = value(moved)
            total = tf.reduce_sum(ascended)
        g = tape.gradient(total, x)[0]
        if fourier:  # into decorrelated colours, each scaled as Adam would, 1/f, back
            g = tf.tensordot(g, color, axes=1)
            g = g / (tf.math.reduce_std(g, axis=[0, 1], keepdims=True) + 1e-12)
            spectrum = tf.signal.rfft2d(tf.transpose(g, [2, 0, 1])) * precondition
            g = tf.transpose(tf.signal.irfft2d(spectrum, [height, width]), [1, 2, 0])
            g = tf.tensordot(g, tf.transpose(color), axes=1)
        g = g / (tf.math.reduce_std(g) + 1e-12)
        return g, reported[0]

    rng = np.random.default_rng(seed)
    x = start[None].copy()
    history = []
    polish = steps - steps // 4  # the last quarter: no transforms, the image as scored
    for i in range(steps):
        shift = rng.integers(-jitter, jitter + 1, 2).astype(np.int32)
        zoom = np.float32(1.0 + rng.uniform(-scale, scale))
        if i >= polish:
            shift, zoom = np.zeros(2, np.int32), np.float32(1.0)
        g, reported = ascend(tf.constant(x), tf.constant(shift), tf.constant(zoom))
        x = np.clip(x + step_size * np.asarray(g)[None], 0.0, 255.0)
        history.append(float(reported))
        if progress is not None:
            progress((i + 1) / steps)
    image = to_uint8(x[0])
    begin, end = score(model, goal, np.stack([start, image.astype(np.float32)]))
    baseline = score(model, goal, np.stack([start_image((height, width), seed + k)
                                            for k in range(1, random_starts + 1)])) \
        if random_starts else np.zeros(1)
    return {"objective": goal.kind, "layer": goal.layer, "asked_layer": goal.asked_layer,
            "target": goal.target(names), "start": float(begin), "end": float(end),
            "steps": steps, "seconds": time.perf_counter() - began,
            "size": [height, width], "random_mean": float(baseline.mean()),
            "random_std": float(baseline.std()), "history": history, "image": image}


def dream_view(source: Any, out: Any = None, name: str | None = None, **kwargs) -> dict:
    """Runs `dream` and writes its image as `dream_<objective>_<target>.png`; returns its
    record with `view`, `files` and `image` (the PNG's path)."""
    model, run = as_model(source)
    output = Output(out, run)
    result = dream(run if run is not None else model, **kwargs)
    stem = name or f"dream_{result['objective']}_{result['target']}"
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
    path = output.png(stem, result.pop("image"))
    return {"view": "dream", "files": output.files, **result, "image": path}
