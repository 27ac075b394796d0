"""Outliers: images far from every other image in feature space (kNN distance).

A screenshot among flower photos has no close neighbour of any class, so the mean cosine
distance (of the uncentred features: `neighbours`) to its k nearest neighbours is large. Scores are compared with the folder's own
distribution (median + `spread` x the median absolute deviation, a robust z-score), so
the cut adapts to how varied the folder is.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import median_abs_deviation


def outlier_scores(similarities: np.ndarray, k: int) -> np.ndarray:
    """Mean cosine distance to the k nearest other images.

    Args:
        similarities: `[N, >=k]` neighbour similarities, most similar first.
        k: Neighbours averaged.

    Returns:
        float `[N]` in [0, 2].
    """
    if similarities.shape[1] == 0:
        return np.zeros(len(similarities))
    return 1.0 - similarities[:, :k].mean(axis=1)


def outliers(scores: np.ndarray, spread: float) -> np.ndarray:
    """Indices of the images whose score is `spread` robust deviations above the median.

    Args:
        scores: `outlier_scores`.
        spread: How many median absolute deviations (scaled to a standard deviation)
            above the median.

    Returns:
        The flagged indices, highest score first.
    """
    if len(scores) < 3:
        return np.zeros(0, np.int64)
    median = np.median(scores)
    deviation = median_abs_deviation(scores, scale="normal")  # robust standard deviation
    flagged = np.flatnonzero(scores > median + spread * max(deviation, 1e-6))
    return flagged[np.argsort(-scores[flagged], kind="stable")]
