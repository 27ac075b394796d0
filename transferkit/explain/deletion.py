"""Deletion and insertion (Petsiuk et al. 2018, RISE): does a heat map rank the pixels
the model needs first?

Remove the pixels a heat map ranks most important first and watch the class probability
fall (deletion, lower area under the curve is better); or start from a blurred image and
put them back first (insertion, higher is better). Removed pixels are replaced by a
blurred copy of the image rather than black, so the model sees fewer out-of-distribution
edges. A method is compared with uniformly random heat maps scored the same way
(`random_heatmaps`, `ratio_interval`).

The blur must actually remove the evidence, or "deleted" pixels still carry it and every
map scores alike. Its standard deviation is a tenth of the image side: shapes and texture
are gone, only colour is left. On a flowers5 run (160 px) the top class's mean
probability falls from 0.73 on the photos to 0.31 on their blurred copies (chance 0.20);
with a twentieth of the side it stays at 0.48. `explain_check` prints it.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from scipy import ndimage

from transferkit.errors import ConfigError
from transferkit.explain.base import check_classes, check_images
from transferkit.inference import in_batches

BLUR_FRACTION = 0.1  # blur standard deviation / image side (see the module docstring)


def deletion_insertion(model: keras.Model, images: np.ndarray, heatmaps: np.ndarray,
                       class_indices: Sequence[int] | None = None, steps: int = 20,
                       blur_sigma: float | None = None, seed: int = 0,
                       blurred: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion AUCs of heat maps.

    At step k of `steps`, the top k/steps of the pixels (ranked by the heat map; ties in
    a seeded random order) are replaced by the blurred image (deletion), or the blurred
    image gets the original values there (insertion). The curve of the class probability
    over the fraction of pixels changed (x in [0, 1], steps + 1 points) is integrated with
    the trapezoid rule. All 2 * (steps + 1) images of one input go through the model in
    one predict call.

    Args:
        model: Classifier: raw RGB in, class probabilities out.
        images: Raw RGB `[N, H, W, 3]` at the model's input size.
        heatmaps: `[N, H, W]`, larger = more important.
        class_indices: Class per image whose probability is tracked (None: the top
            prediction on the unchanged image).
        steps: Number of deletion/insertion steps.
        blur_sigma: Gaussian blur standard deviation in pixels of the replacement image
            (default: `BLUR_FRACTION` of the image side, 22 px at 224).
        seed: Seed of the order among equally important pixels.
        blurred: The replacement images `[N, H, W, 3]`, when they are already at hand
            (several methods scored on the same images); default: `blur` of each image
            with `blur_sigma`.

    Returns:
        `(deletion_auc, insertion_auc)`, float arrays `[N]` in [0, 1].

    Raises:
        ImageError: `images` is not a batch of RGB images.
        ConfigError: `heatmaps` or `blurred` does not match `images`, both `blurred`
            and `blur_sigma` are given, `steps` < 1, or a bad class.
    """
    x = check_images(images, tuple(model.input_shape[1:3]))
    if blurred is None:
        blurred = np.stack([blur(image, blur_sigma) for image in x]) if len(x) else x
    elif blur_sigma is not None:
        raise ConfigError("give blurred images or blur_sigma, not both")
    elif np.shape(blurred) != x.shape:
        raise ConfigError(f"blurred images have shape {np.shape(blurred)}; expected "
                          f"{x.shape}, one per image")
    maps = np.asarray(heatmaps, np.float32)
    if maps.shape != x.shape[:3]:
        raise ConfigError(f"heatmaps have shape {maps.shape}; expected {x.shape[:3]} (one "
                          "map per image, at the image's size)")
    if steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}")
    classes = target_classes(model, x, class_indices)
    n, height, width = maps.shape
    fractions = np.arange(steps + 1) / steps
    counts = np.rint(fractions * height * width).astype(np.int64)
    rng = np.random.default_rng(seed)
    deletion, insertion = np.zeros(n), np.zeros(n)
    for i in range(n):
        order = np.lexsort((rng.permutation(height * width), -maps[i].ravel()))
        rank = np.empty(height * width, np.int64)
        rank[order] = np.arange(height * width)
        changed = (rank[None, :] < counts[:, None]).reshape(steps + 1, height, width, 1)
        batch = np.concatenate([np.where(changed, blurred[i], x[i]),    # deletion
                                np.where(changed, x[i], blurred[i])])   # insertion
        curve = np.asarray(model.predict_on_batch(batch.astype(np.float32)))[:, classes[i]]
        deletion[i] = np.trapezoid(curve[:steps + 1], fractions)
        insertion[i] = np.trapezoid(curve[steps + 1:], fractions)
    return deletion, insertion


def target_classes(model: keras.Model, images: np.ndarray,
                   class_indices: int | Sequence[int] | None) -> np.ndarray:
    """The class of each image whose score a check follows.

    Args:
        model: The classifier.
        images: float32 `[N, H, W, 3]`, checked.
        class_indices: As for an `Explainer` call; None: the model's top predictions.

    Returns:
        int64 `[N]`.

    Raises:
        ConfigError: Bad class indices (see `check_classes`).
    """
    num_classes = int(model.output_shape[-1])
    classes = check_classes(class_indices, len(images), num_classes).astype(np.int64)
    top = classes < 0
    if top.any():
        probabilities = in_batches(model.predict_on_batch, images[top], n_outputs=num_classes)
        classes[top] = probabilities.argmax(axis=-1)
    return classes


def blur(image: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """The blurred copy that deletion puts in place of pixels (and insertion starts from).

    Args:
        image: `[H, W, 3]`.
        sigma: Gaussian standard deviation in pixels; None: `BLUR_FRACTION` of the side.

    Returns:
        The blurred image, same shape.
    """
    if sigma is None:
        sigma = BLUR_FRACTION * max(image.shape[:2])
    return ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0), mode="reflect")


def random_heatmaps(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Uniform random heat maps `[n, height, width]`: the baseline any method must beat."""
    return np.random.default_rng(seed).random((n, height, width), dtype=np.float32)


def ratio_interval(values: np.ndarray, baseline: np.ndarray, confidence: float = 0.95,
                   resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Ratio of two paired means, with a bootstrap confidence interval over the images.

    A method's AUC over random maps' AUC on a sample of images varies with the sample
    (on 50 flower photos by about +-0.07 for Grad-CAM's insertion ratio); the interval
    says how far a 0.8x or 1.2x target is from being decided by the sample alone.

    Args:
        values: A method's per-image AUCs `[N]`.
        baseline: The random maps' AUCs on the same images `[N]`.
        confidence: Coverage of the percentile interval.
        resamples: Bootstrap resamples (images drawn with replacement, pairs kept).
        seed: Seed of the resampling.

    Returns:
        `(ratio, low, high)`: mean(values) / mean(baseline) and the interval's ends.

    Raises:
        ConfigError: The arrays are not paired, non-empty and 1-D.
    """
    values, baseline = np.asarray(values, np.float64), np.asarray(baseline, np.float64)
    if values.shape != baseline.shape or values.ndim != 1 or not len(values):
        raise ConfigError(f"need two paired, non-empty 1-D arrays, got shapes {values.shape}"
                          f" and {baseline.shape}")
    picks = np.random.default_rng(seed).integers(0, len(values), (resamples, len(values)))
    ratios = values[picks].mean(axis=1) / np.maximum(baseline[picks].mean(axis=1), 1e-12)
    tail = 50 * (1 - confidence)
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return float(values.mean() / max(baseline.mean(), 1e-12)), float(low), float(high)
