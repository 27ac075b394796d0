"""The default recipe: the loss, the class weights, phase 1 (the head) and phase 2.

Phase 1 trains the classifier's own `head_dropout` and `predictions` layers on pooled
features stored once per image (a model over the features that reuses those very
layers: nothing is copied back). Phase 2 fine-tunes the unfrozen top blocks end to end
on augmented images, with one epoch of warm-up and cosine decay.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import keras
import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from transferkit.engine.phase import Recipe, run_phase

IMBALANCE_RATIO = 1.5  # largest / smallest class above which classes are re-weighted
HEAD_BATCH = 64        # phase 1's batch of stored features (one replica)


def training_loss(label_smoothing: float) -> keras.losses.Loss:
    """Categorical cross-entropy (label smoothing needs one-hot targets: `one_hot`)."""
    return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)


def one_hot(labels, n_classes: int) -> np.ndarray:
    """Class indices as one-hot rows."""
    return keras.utils.to_categorical(np.asarray(labels), n_classes)


def class_weight(labels, n_classes: int) -> dict[int, float] | None:
    """'Balanced' class weights (n / (C * count)) when the classes are imbalanced
    (largest / smallest above `IMBALANCE_RATIO`); None when they are not."""
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=n_classes)
    if counts.max() <= IMBALANCE_RATIO * counts.min():
        return None
    weights = compute_class_weight("balanced", classes=np.arange(n_classes), y=labels)
    return {i: float(w) for i, w in enumerate(weights)}


def head_model(model: keras.Model) -> keras.Model:
    """The classifier's head as a model over its pooled features: the very
    `head_dropout` and `predictions` layers (training it trains the classifier)."""
    features = keras.Input(model.get_layer("head_pool").output.shape[1:])
    head = model.get_layer("predictions")(model.get_layer("head_dropout")(features))
    return keras.Model(features, head, name="head")


def train_head(model: keras.Model, train: tuple, val: tuple, config, path: Path | None,
               dist=None, class_weights=None, verbose: int = 0,
               log_dir: Path | None = None) -> list[dict]:
    """Phase 1: the classifier's head on stored features `(x, one-hot y)`.

    Args:
        model: The classifier (its head layers are trained in place).
        train, val: Features and one-hot labels.
        config: The options (head_epochs, head_learning_rate, label_smoothing,
            patience, seed): a `TrainConfig`.
        path: The phase's backup.
        dist: The `Distribution` (None: one device).
        class_weights: Keras class weights or None.
        verbose: Keras verbosity.
        log_dir: The phase's TensorBoard folder (None: none).

    Returns:
        The phase's history rows.
    """
    replicas = 1 if dist is None else dist.replicas
    recipe = Recipe(config.head_epochs, config.head_learning_rate * replicas,
                    training_loss(config.label_smoothing), patience=config.patience,
                    batch_size=HEAD_BATCH * replicas, seed=config.seed, log_dir=log_dir)
    with dist.scope() if dist is not None else contextlib.nullcontext():
        head = head_model(model)
    return run_phase(head, train, val, recipe, path, strategy=_strategy(dist),
                     class_weight=class_weights, verbose=verbose)


def fine_tune(model: keras.Model, train, val, n_train: int, config, path: Path | None,
              dist=None, class_weights=None, verbose: int = 0, say=print,
              log_dir: Path | None = None) -> list[dict]:
    """Phase 2: the model's trainable blocks on image batches (global batches).

    Args:
        model: The classifier, its top blocks unfrozen.
        train, val: Batched `(images, one-hot)` datasets.
        n_train: Training images (the steps of an epoch).
        config: The options (fine_tune_epochs, fine_tune_learning_rate, batch_size,
            label_smoothing, patience): a `TrainConfig`.
        path: The phase's backup.
        dist: The `Distribution` (None: one device).
        class_weights: Keras class weights or None.
        verbose: Keras verbosity.
        say: Progress printer.
        log_dir: The phase's TensorBoard folder (None: none).

    Returns:
        The phase's history rows.
    """
    replicas = 1 if dist is None else dist.replicas
    steps = math.ceil(n_train / (config.batch_size * replicas))
    recipe = Recipe(config.fine_tune_epochs, config.fine_tune_learning_rate * replicas,
                    training_loss(config.label_smoothing), steps_per_epoch=steps,
                    schedule="cosine", patience=config.patience, log_dir=log_dir)
    return run_phase(model, train, val, recipe, path, strategy=_strategy(dist),
                     class_weight=class_weights, verbose=verbose, say=say)


def _strategy(dist):
    """The strategy the engine trains under: None (model.fit) on one device."""
    return None if dist is None or dist.kind == "none" else dist.strategy
