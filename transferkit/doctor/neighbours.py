"""Nearest neighbours in feature space by cosine similarity (scikit-learn's search).

Pooled ReLU features are all positive, so two unrelated photos already have a cosine of
0.5-0.7; centring them on the folder's mean first spreads unrelated pairs around 0 and
leaves the same photo near 1, which is what the near-duplicate scores need. The outlier
distance is the other way round: measured on flowers5 with a planted screenshot, it
stands out 6 robust deviations from the rest uncentred, 2 centred (centring makes every
direction count, even those that only tell one flower from another).
"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors


def normalized(features: np.ndarray, centre: bool = True) -> np.ndarray:
    """Features (centred on their mean) scaled to unit length (float32 [N, D]).

    Args:
        features: `[N, D]` pooled features.
        centre: Subtract the mean row first.

    Returns:
        `[N, D]`, each row of norm 1 (an all-zero row stays zero).
    """
    values = np.asarray(features, np.float32)
    if centre:
        values = values - values.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return values / np.maximum(norms, 1e-12)


def nearest(unit: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The `k` most similar other rows of each row (cosine similarity).

    Args:
        unit: `[N, D]` rows (`normalized`).
        k: Neighbours per row (at most N - 1).

    Returns:
        `(indices, similarities)`: int `[N, k]` and float32 `[N, k]`, most similar first;
        a row is never its own neighbour.
    """
    n = len(unit)
    k = max(0, min(k, n - 1))
    if k == 0:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
    # Without X, each indexed row's neighbours with itself left out.
    search = NearestNeighbors(metric="cosine").fit(unit)
    distances, indices = search.kneighbors(n_neighbors=k)
    return indices.astype(np.int64), (1.0 - distances).astype(np.float32)
