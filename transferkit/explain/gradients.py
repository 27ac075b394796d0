"""Pixel-space attributions: gradients of the class logit with respect to raw pixels.

- Saliency (Simonyan et al. 2014): `max_c |d logit / d x_c|` per pixel.
- SmoothGrad (Smilkov et al. 2017): the gradient averaged over noisy copies of the image.
- Integrated Gradients (Sundararajan et al. 2017): the gradient averaged along the
  straight path from a baseline to the image, times `image - baseline`; the attributions
  add up to `logit(image) - logit(baseline)` (completeness), which is checked and met by
  refining the integral.

All three explain the pre-softmax logit (see `transferkit.explain.graph`), and the input
is raw 0-255 RGB, so the noise level and the baseline are in pixel units.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from transferkit.errors import ConfigError
from transferkit.explain.base import Explainer, check_classes, check_images


class Saliency(Explainer):
    """Vanilla gradient saliency: the largest absolute gradient over the colour channels.

    Args:
        model: The classifier (see `Explainer`).
        batch_size: Images per forward/backward pass.
    """

    name = "saliency"
    label = "Saliency (gradients)"
    uses_layer = False

    def __init__(self, model: keras.Model, batch_size: int = 32):
        super().__init__(model, None, batch_size)

    def _explain(self, images: np.ndarray, classes: np.ndarray) -> tf.Tensor:
        _, grads, _, _ = self._gradients(images, classes)
        return tf.reduce_max(tf.abs(grads), axis=-1)


class SmoothGrad(Explainer):
    """SmoothGrad: the gradient averaged over `samples` noisy copies, then as Saliency.

    The raw gradients are averaged (noise cancels), then reduced like `Saliency`; with
    `noise_level=0` and `samples=1` the result equals `Saliency`'s.

    Args:
        model: The classifier (see `Explainer`).
        noise_level: Gaussian noise standard deviation as a fraction of each image's
            value range (max - min), as in the paper (10-20% works best).
        samples: Noisy copies per image.
        seed: Seed of the noise; an image gets the same map on every call, whatever
            else is in the batch.
        batch_size: Noisy copies per forward/backward pass.

    Raises:
        ConfigError: `samples` < 1 or a negative `noise_level`.
    """

    name = "smoothgrad"
    label = "SmoothGrad"
    uses_layer = False

    def __init__(self, model: keras.Model, noise_level: float = 0.15, samples: int = 25,
                 seed: int = 0, batch_size: int = 32):
        super().__init__(model, None, batch_size)
        if samples < 1 or noise_level < 0:
            raise ConfigError(f"SmoothGrad needs samples >= 1 and noise_level >= 0, got "
                              f"samples={samples}, noise_level={noise_level}")
        self.noise_level = float(noise_level)
        self.samples = int(samples)
        self.seed = seed

    def _explain(self, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        # The class is fixed on the clean image: a noisy copy may change the top class.
        classes = self._resolve_classes(images, classes)
        maps = []
        for image, cls in zip(images, classes):
            # A fresh generator per image: an image's map does not depend on the others
            # in the batch or on earlier calls.
            rng = np.random.default_rng(self.seed)
            sigma = self.noise_level * float(image.max() - image.min())
            total = np.zeros_like(image)
            for start in range(0, self.samples, self.batch_size):
                n = min(self.batch_size, self.samples - start)
                noisy = image[None] + rng.normal(0.0, sigma, (n, *image.shape)
                                                 ).astype(np.float32)
                _, grads, _, _ = self._gradients(noisy, np.full(n, cls, np.int32))
                total += grads.numpy().sum(axis=0)
            maps.append(np.abs(total / self.samples).max(axis=-1))
        return np.stack(maps)


class IntegratedGradients(Explainer):
    """Integrated Gradients of the class logit, from a baseline image to the image.

    The path integral is the trapezoid rule over `steps` equal intervals. Real networks
    make the gradient along the path rough (MobileNetV2's, for one, swings between
    large positive and negative values near a black baseline), so a fixed count is
    either wasteful or inexact: when the attributions of an image miss completeness,
    `sum = logit(image) - logit(baseline)`, by more than `tolerance`, the intervals are
    halved (only the new midpoints are evaluated) until it holds or `max_steps` would be
    exceeded (then a warning says so). On the tiny test run with flower photos, 64
    intervals miss by 1-23%; refinement meets 5% at about 150 evaluations per image.
    The path points run through the model `batch_size` at a time. The heat map is the
    absolute value of the attribution summed over colour channels.

    Args:
        model: The classifier (see `Explainer`).
        baseline: The "absence of signal": a pixel value for every pixel (0 = black) or
            a raw RGB image `[H, W, 3]`.
        steps: Intervals of the first pass (steps + 1 gradient evaluations).
        tolerance: Largest completeness error allowed, relative to
            `|logit(image) - logit(baseline)|`, or to 0.5 logit when that is smaller (a
            near-zero difference would demand exactness); None: exactly `steps`.
        max_steps: Most intervals refinement may reach (64 → 128 → ... → 1024).
        batch_size: Path points per forward/backward pass.

    Raises:
        ConfigError: `steps` < 1, `max_steps` < `steps`, or a baseline image of the
            wrong shape.
    """

    name = "integrated-gradients"
    label = "Integrated Gradients"
    uses_layer = False

    def __init__(self, model: keras.Model, baseline: float | np.ndarray = 0.0,
                 steps: int = 64, tolerance: float | None = 0.05, max_steps: int = 1024,
                 batch_size: int = 32):
        super().__init__(model, None, batch_size)
        if steps < 1 or max_steps < steps:
            raise ConfigError(f"need 1 <= steps <= max_steps, got steps={steps}, "
                              f"max_steps={max_steps}")
        self.steps = int(steps)
        self.tolerance = tolerance
        self.max_steps = int(max_steps)
        if np.ndim(baseline) == 0:
            self.baseline = np.float32(baseline)
        else:
            self.baseline = check_images(np.asarray(baseline)[None], self.input_size)[0]

    def attributions(self, images: np.ndarray,
                     class_indices: int | Sequence[int] | None = None) -> np.ndarray:
        """Per-pixel, per-channel attributions `[N, H, W, 3]` (signed, in logit units).

        Args:
            images: Raw RGB `[N, H, W, 3]`, as for `__call__`.
            class_indices: As for `__call__`.

        Returns:
            float32 attributions; each image's sum is
            `logit(image) - logit(baseline)` of its class, within `tolerance`.
        """
        x = check_images(images, self.input_size)
        classes = check_classes(class_indices, len(x), self.num_classes)
        out, missed = np.zeros_like(x), []
        for i in range(0, len(x), self.batch_size):
            out[i:i + self.batch_size] = self._integrate(
                x[i:i + self.batch_size], classes[i:i + self.batch_size], missed)
        self._warn(missed, stacklevel=3)
        return out

    def _explain(self, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        missed = []
        attributions = self._integrate(images, classes, missed)
        self._warn(missed, stacklevel=4)  # → _explain → __call__ → the caller
        return np.abs(attributions.sum(axis=-1))

    def _integrate(self, images: np.ndarray, classes: np.ndarray, missed: list[str]
                   ) -> np.ndarray:
        """Attributions `[n, H, W, 3]`; classes of -1 are the clean image's top class.
        Images that miss completeness at `max_steps` are appended to `missed`."""
        # The class is fixed on the image itself: points near the baseline have their
        # own (meaningless) top class.
        classes = self._resolve_classes(images, classes)
        out = np.zeros_like(images)
        for i, (image, cls) in enumerate(zip(images, classes)):
            baseline = np.broadcast_to(self.baseline, image.shape).astype(np.float32)
            delta = image - baseline
            # Trapezoid rule: the ends weigh 1/2. Halving the intervals keeps every old
            # point, so refinement only evaluates the new midpoints.
            intervals = self.steps
            alphas = np.concatenate([[0.0, 1.0], np.arange(1, intervals) / intervals])
            weights = np.concatenate([[0.5, 0.5], np.ones(intervals - 1)])
            total, scores = self._gradient_sum(baseline, delta, alphas, weights, cls)
            gap = float(scores[1] - scores[0])  # the path ends: image minus baseline
            while True:
                out[i] = delta * total / intervals
                error = abs(float(out[i].sum()) - gap)
                if self.tolerance is None or error <= self.tolerance * max(abs(gap), 0.5):
                    break
                if intervals * 2 > self.max_steps:
                    missed.append(f"{error:.3g} of {gap:.3g}")
                    break
                total += self._gradient_sum(baseline, delta,
                                            (np.arange(intervals) + 0.5) / intervals,
                                            np.ones(intervals), cls)[0]
                intervals *= 2
        return out

    def _warn(self, missed: list[str], stacklevel: int) -> None:
        if missed:
            warnings.warn(f"integrated gradients: completeness missed by {', '.join(missed)}"
                          f" (logits) at max_steps={self.max_steps}; raise max_steps",
                          stacklevel=stacklevel)

    def _gradient_sum(self, baseline: np.ndarray, delta: np.ndarray, alphas: np.ndarray,
                      weights: np.ndarray, cls: int) -> tuple[np.ndarray, np.ndarray]:
        """Weighted sum over `alphas` of the gradient at `baseline + alpha * delta`, and
        the class score at each point."""
        total, scores = np.zeros_like(delta), []
        for start in range(0, len(alphas), self.batch_size):
            alpha = alphas[start:start + self.batch_size, None, None, None]
            weight = weights[start:start + self.batch_size, None, None, None]
            path = (baseline + alpha * delta).astype(np.float32)
            _, grads, _, score = self._gradients(path, np.full(len(path), cls, np.int32))
            total += (grads.numpy() * weight).sum(axis=0)
            scores.append(score)
        return total, np.concatenate(scores)
