"""Model randomization (Adebayo et al. 2018, "Sanity checks for saliency maps").

Re-initialize the head and the top backbone blocks; a method that explains the model
(not just the image's edges) must give different maps. Reported as the Spearman rank
correlation between the original and the randomized model's maps (low is good).
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from scipy import stats

from transferkit.errors import ConfigError
from transferkit.explain.base import Explainer, check_images
from transferkit.explain.deletion import target_classes
from transferkit.explain.registry import METHODS, resolve_methods
from transferkit.model import backbone_blocks, is_transferkit_classifier


def randomize_model(model: keras.Model, n_blocks: int = 3, seed: int = 0,
                    head: bool = True) -> keras.Model:
    """A copy of `model` with its head and top backbone blocks re-initialized.

    Each weight is redrawn from its layer's own initializer (seeded), e.g. Glorot for
    kernels, zeros for biases, identity statistics for BatchNormalization, as a freshly
    built model would have them (so the randomized part's activations are small and its
    predictions near uniform); weights without a known initializer (ConvNeXt's layer
    scale) are drawn from a normal with the original's mean and standard deviation.
    `model` itself is not changed.

    Args:
        model: A transferkit classifier (blocks from `backbone_blocks`), or any model
            (then each weighted layer below the output layer counts as a block).
        n_blocks: Top blocks to re-initialize (0: none).
        seed: Seed of the new weights.
        head: Re-initialize the output layer (`predictions`) too.

    Returns:
        The new model (same architecture and layer names).
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    output_layer = copy.outputs[0]._keras_history.operation
    layers = [output_layer] if head else []
    if is_transferkit_classifier(copy):
        blocks = backbone_blocks(copy)
    else:
        blocks = [[layer] for layer in copy.layers
                  if layer.weights and layer is not output_layer]
    if n_blocks > 0:
        layers += [layer for block in blocks[-n_blocks:] for layer in block]
    rng = np.random.default_rng(seed)
    for i, layer in enumerate(layers):
        _reinitialize(layer, seed * 100_003 + 1_000 * i, rng)
    return copy


def rank_correlation(maps: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Spearman rank correlation between paired heat maps, one value per image.

    A constant map ranks nothing (scipy gives NaN): two constant maps are reported as
    identical (1), one constant map against a varying one as unrelated (0).

    Raises:
        ConfigError: The two stacks of maps differ in shape.
    """
    maps, other = np.asarray(maps), np.asarray(other)
    if maps.shape != other.shape:
        raise ConfigError(f"cannot correlate maps of shapes {maps.shape} and {other.shape}")
    values = []
    for a, b in zip(maps, other):
        a, b = a.ravel(), b.ravel()
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            values.append(float(np.ptp(a) == np.ptp(b) == 0))
        else:
            values.append(float(stats.spearmanr(a, b).statistic))
    return np.asarray(values)


def randomization_check(model: keras.Model, method: str | type[Explainer],
                        images: np.ndarray, class_indices: Sequence[int] | None = None,
                        n_blocks: int = 3, seed: int = 0,
                        randomized: keras.Model | None = None, **options) -> np.ndarray:
    """Rank correlation of a method's maps on `model` and on its randomized copy.

    Args:
        model: The classifier.
        method: A name in `METHODS` or an `Explainer` subclass.
        images: Raw RGB `[N, H, W, 3]`.
        class_indices: Classes to explain on both models (None: `model`'s top
            predictions; the randomized model explains the same classes).
        n_blocks: Top blocks to re-initialize (see `randomize_model`).
        seed: Seed of the re-initialization.
        randomized: A model to compare with instead (e.g. one randomized copy shared
            by several methods, or an identical copy as a control).
        **options: Passed to the method's constructor.

    Returns:
        Spearman correlations `[N]` (near 1: the maps ignore the model's weights).

    Raises:
        ConfigError: Unknown method or bad class indices.
        ImageError: `images` is not a batch of RGB images.
    """
    cls = METHODS[resolve_methods([method])[0]] if isinstance(method, str) else method
    x = check_images(images)
    classes = target_classes(model, x, class_indices)
    original = cls(model, **options)(x, classes)
    randomized = randomized if randomized is not None else \
        randomize_model(model, n_blocks=n_blocks, seed=seed)
    return rank_correlation(original, cls(randomized, **options)(x, classes))


def _reinitialize(layer: keras.layers.Layer, seed: int, rng: np.random.Generator) -> None:
    for j, variable in enumerate(layer.weights):
        initializer = _initializer(layer, variable.name)
        if initializer is not None:
            config = initializer.get_config()
            if "seed" in config:  # a fresh, seeded copy: reproducible new weights
                initializer = type(initializer).from_config({**config, "seed": seed + j})
            value = initializer(tuple(variable.shape), dtype=variable.dtype)
        else:
            original = keras.ops.convert_to_numpy(variable)
            scale = float(original.std()) or abs(float(original.mean())) or 1.0
            value = rng.normal(float(original.mean()), scale, original.shape)
        variable.assign(np.asarray(value, dtype=variable.dtype))


def _initializer(layer: keras.layers.Layer, variable_name: str):
    """The initializer a layer used for one of its weights, or None when unknown."""
    candidates = [f"{variable_name}_initializer",
                  variable_name.replace("_kernel", "_initializer")]
    if variable_name == "kernel":  # DepthwiseConv2D names its kernel "kernel"
        candidates.append("depthwise_initializer")
    for attribute in candidates:
        initializer = getattr(layer, attribute, None)
        if isinstance(initializer, keras.initializers.Initializer):
            return initializer
    return None
