"""Label issues: images whose given class the rest of the folder disagrees with.

Confident learning (Northcutt et al., 2021) needs out-of-sample probabilities: here a
logistic regression on the cached ImageNet features, k-fold (`cross_val_predict`), each
fold predicted by a model that never saw it (near-duplicate groups kept in one fold, or a
copy would vouch for itself). cleanlab's `find_label_issues` then ranks the suspects; it is the field's
standard implementation, so it is used rather than rewritten.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from threadpoolctl import threadpool_limits

from transferkit.doctor.neighbours import normalized

MAX_COMPONENTS = 128  # PCA before the regression: faster fits, the same ranking


def out_of_sample_probabilities(features: np.ndarray, labels: Sequence[int],
                                groups: Sequence[int], n_classes: int, folds: int = 5,
                                seed: int = 0, strength: float = 3000.0) -> np.ndarray:
    """Predicted class probabilities of every image by a model that did not train on it.

    Args:
        features: `[N, D]` pooled features.
        labels: The given class index of each image.
        groups: Near-duplicate group of each image (kept in one fold).
        n_classes: Number of classes.
        folds: Folds (fewer when the smallest class has fewer images).
        seed: Seed of the fold assignment.
        strength: The logistic regression's `C` is `strength / training images`: the
            same L2 penalty per image whatever the folder's size (measured on the
            corrupted flowers5 copy: 300 → 110, 1,000 → 120, 3,000 → 124, 10,000 →
            123 of its 171 flips among the top 342).

    Returns:
        float `[N, n_classes]`, rows summing to 1.
    """
    x = normalized(features, centre=False)  # unit rows: no scaler blowing up dead units
    y = np.asarray(labels)
    counts = np.bincount(y, minlength=n_classes)
    folds = int(min(folds, counts[counts > 0].min()))
    if folds < 2:
        return np.full((len(y), n_classes), 1.0 / n_classes)
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    # One BLAS thread: these matrices are small, and on a busy 2-core machine two
    # threads contend (measured 5x slower fits).
    with warnings.catch_warnings(), threadpool_limits(1):
        # sklearn warns when groups make folds uneven, a class is absent from a fold,
        # or a fit converges slowly.
        warnings.simplefilter("ignore")
        splits = list(splitter.split(x, y, np.asarray(groups)))
        trained_on = min(len(train) for train, _ in splits)  # the smallest fold's model
        components = int(min(MAX_COMPONENTS, trained_on - 1, x.shape[1]))
        model = make_pipeline(PCA(components, random_state=seed),
                              LogisticRegression(C=strength / trained_on, max_iter=300))
        predicted = cross_val_predict(model, x, y, cv=splits, method="predict_proba")
    out = np.zeros((len(y), n_classes))
    out[:, np.unique(y)] = predicted  # columns of the classes present, in order
    return out


def label_issues(labels: Sequence[int], probabilities: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The images confident learning flags, most suspect first.

    Args:
        labels: Given class index of each image.
        probabilities: `[N, C]` out-of-sample probabilities.

    Returns:
        `(indices, scores)`: the flagged images, ranked, and each one's score (1 - the
        probability of its given class: higher is more suspect).
    """
    from cleanlab.filter import find_label_issues

    y = np.asarray(labels)
    present = np.bincount(y, minlength=probabilities.shape[1]) > 0
    if present.sum() < 2:
        return np.zeros(0, np.int64), np.zeros(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranked = find_label_issues(y, probabilities, filter_by="prune_by_noise_rate",
                                   return_indices_ranked_by="self_confidence", n_jobs=1)
    ranked = np.asarray(ranked, np.int64)
    return ranked, 1.0 - probabilities[ranked, y[ranked]]
