""""Not one of my classes": an out-of-distribution score and its threshold.

Every score is "higher = less like the training data":

- `max_softmax`: 1 - the max calibrated probability (Hendrycks & Gimpel, 2017).
- `energy`: -logsumexp of the (calibrated) logits (Liu et al., 2020).
- `mahalanobis`: the smallest Mahalanobis distance of the pooled features to a class
  mean, with one shared covariance (Lee et al., 2018).
- `mahalanobis_normalized` (the default): the same on L2-normalized pooled features
  projected on the principal components keeping 95% of the training variance. The
  pooled features of a ReLU network vary mostly in length (how strongly any pattern
  fired), which says little about *which* patterns; normalizing keeps the direction, and
  the projection drops the directions too thin to estimate a covariance in.

Both Mahalanobis kinds store three arrays (float32), so that the score is one matrix
product and a distance (`unknown_score`, written once in `keras.ops` for numpy arrays
and TF graphs alike): `center` [D], `projection` [D, k] (principal axes times the
whitening of the shared covariance) and `means` [C, k] (the class means, projected):
score = min_c ||(x - center) @ projection - means[c]||^2, with x the (normalized)
features.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import ops
from sklearn.metrics import roc_auc_score, roc_curve

from transferkit.errors import ConfigError

KINDS = ("mahalanobis_normalized", "mahalanobis", "energy", "max_softmax")
DEFAULT_KIND = "mahalanobis_normalized"
DEFAULT_FALSE_REJECTION = 0.05
PCA_VARIANCE = 0.95


def check_kind(kind: str) -> str:
    """Raises ConfigError for an unknown score kind; returns it otherwise."""
    if kind not in KINDS:
        raise ConfigError(f"unknown score {kind!r}; choose one of {', '.join(KINDS)}")
    return kind


def fit_constants(kind: str, features: np.ndarray, labels: np.ndarray,
                  n_classes: int) -> dict[str, np.ndarray]:
    """Fits a score's constants on the training split's pooled features.

    Args:
        kind: One of `KINDS`.
        features: `[N, D]` pooled features of the training images (final weights).
        labels: `[N]` their classes.
        n_classes: C.

    Returns:
        `{"center", "projection", "means"}` for the Mahalanobis kinds; `{}` for scores
        computed from the logits alone.
    """
    from sklearn.covariance import LedoitWolf
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import normalize

    if check_kind(kind) not in ("mahalanobis", "mahalanobis_normalized"):
        return {}
    x = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    center, axes = x.mean(axis=0), np.eye(x.shape[1])
    if kind == "mahalanobis_normalized":
        x = normalize(x)
        pca = PCA(n_components=PCA_VARIANCE, svd_solver="full").fit(x)
        center, axes = pca.mean_, pca.components_.T
    z = (x - center) @ axes
    present = [c for c in range(n_classes) if np.any(labels == c)]
    means = np.zeros((n_classes, z.shape[1]))
    for c in present:
        means[c] = z[labels == c].mean(axis=0)
    # Shared covariance of the within-class residuals; Ledoit-Wolf shrinkage keeps it
    # invertible when there are fewer images than dimensions.
    residual = z - means[labels]
    covariance = LedoitWolf(assume_centered=True).fit(residual).covariance_
    values, vectors = np.linalg.eigh(covariance)
    whiten = vectors / np.sqrt(np.maximum(values, 1e-12 * values.max()))
    # An absent class (none in the training split) gets a mean no image is near.
    means = means @ whiten
    for c in set(range(n_classes)) - set(present):
        means[c] = np.full(means.shape[1], 1e3)
    return {"center": center.astype(np.float32),
            "projection": (axes @ whiten).astype(np.float32),
            "means": means.astype(np.float32)}


def unknown_score(kind: str, constants: dict[str, np.ndarray], features: Any,
                  probabilities: Any, logits: Any = None) -> Any:
    """The score of each image (higher: less like the training data), in `keras.ops`.

    The one implementation: eager on numpy arrays (calibration, evaluation) and traced
    inside the exported graphs (`transferkit.trust.graph.TrustGraph`); the constants
    become the graph's own constants.

    Args:
        kind: One of `KINDS`.
        constants: From `fit_constants`.
        features: `[N, D]` pooled features.
        probabilities: `[N, C]` the calibrated probabilities (`max_softmax`).
        logits: `[N, C]` the calibrated logits (`energy` only).

    Returns:
        float32 `[N]`, a backend tensor (`np.asarray` makes it an array).
    """
    if check_kind(kind) == "max_softmax":
        return 1 - ops.max(ops.cast(probabilities, "float32"), axis=-1)
    if kind == "energy":
        if logits is None:
            raise ConfigError("the energy score reads logits; an ensemble has none: "
                              "choose another --unknown-score")
        return -ops.logsumexp(ops.cast(logits, "float32"), axis=-1)
    x = ops.cast(features, "float32")  # float16 in a mixed-precision model
    if kind == "mahalanobis_normalized":
        x = x / ops.maximum(ops.norm(x, axis=-1, keepdims=True), 1e-12)
    center, projection, means = (ops.convert_to_tensor(np.asarray(constants[k], np.float32))
                                 for k in ("center", "projection", "means"))
    y = ops.matmul(x - center, projection)
    # ||y - m||^2 = |y|^2 - 2 y.m + |m|^2: one matrix product for all classes.
    distance = (ops.sum(y * y, axis=-1, keepdims=True)
                - 2 * ops.matmul(y, ops.transpose(means))
                + ops.sum(means * means, axis=-1)[None, :])
    return ops.maximum(ops.min(distance, axis=-1), 0.0)


def threshold_at(known_scores: np.ndarray, false_rejection: float) -> float:
    """The score above which an input is "unknown", rejecting `false_rejection` of these.

    Args:
        known_scores: Scores of images of the known classes (the validation split).
        false_rejection: The share of them to flag, e.g. 0.05.

    Returns:
        The (1 - false_rejection) quantile of the scores.
    """
    if not 0 < false_rejection < 1:
        raise ConfigError(f"--false-rejection must be between 0 and 1, got "
                          f"{false_rejection}")
    return float(np.quantile(np.asarray(known_scores, np.float64), 1 - false_rejection))


def unknown_separation(known_scores: np.ndarray, unknown_scores: np.ndarray
                       ) -> dict[str, float]:
    """AUROC of telling unknown from known images by the score, and FPR at 95% TPR.

    Args:
        known_scores: Scores of images of the known classes.
        unknown_scores: Scores of the unknown images (higher should mean unknown).

    Returns:
        `auroc` (unknown = positive) and `fpr_at_95_tpr`: the share of unknown images
        accepted as known at the threshold that keeps 95% of the known images.
    """
    scores = np.concatenate([known_scores, unknown_scores]).astype(np.float64)
    is_unknown = np.r_[np.zeros(len(known_scores)), np.ones(len(unknown_scores))]
    # Known images are the positives of the FPR-at-95%-TPR convention (Liang et al.).
    fpr, tpr, _ = roc_curve(1 - is_unknown, -scores)
    return {"auroc": float(roc_auc_score(is_unknown, scores)),
            "fpr_at_95_tpr": float(fpr[np.searchsorted(tpr, 0.95 - 1e-12)])}
