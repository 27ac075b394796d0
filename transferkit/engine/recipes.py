"""What the default recipe's phases share: the loss, the class weights, the head.

Phase 1 trains the classifier's own `head_dropout` and `predictions` layers on pooled
features stored once per image (`head_model`: a model over the features that reuses
those very layers, so nothing is copied back).
"""

from __future__ import annotations

import keras
import numpy as np
from sklearn.utils.class_weight import compute_class_weight

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
