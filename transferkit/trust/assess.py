"""Evaluating trust on folders: known classes (ECE, coverage) and unknown images (AUROC).

`evaluate_folder` is what `transferkit evaluate RUN --data DIR [--unknown OTHER]` runs.
The unknown folder is any folder of images, searched recursively; its subfolder names
are ignored. The run's own score decides the flags; every other score of
`unknown.KINDS` is measured beside it (`auroc_by_score`), fitted the same way from the
run's training features, so the choice of default can be checked on any data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from transferkit.errors import RunError
from transferkit.inference import DEFAULT_BATCH
from transferkit.trust import abstain, calibration, unknown
from transferkit.trust.graph import outputs_from_features, trunk_of


def evaluate_folder(run, data_dir: str | Path, unknown_dir: str | Path | None = None,
                    batch_size: int = DEFAULT_BATCH) -> dict[str, Any]:
    """Metrics of `run` on a labelled folder, and optionally on a folder of unknowns.

    Args:
        run: A `transferkit.run.Run`.
        data_dir: Folder with one subfolder per class (a subset of the run's).
        unknown_dir: Folder of images of no class the run knows (recursive).
        batch_size: Images per forward pass.

    Returns:
        `accuracy`, `macro_f1`, `n_images`, `n_skipped`, `ece`; with trust also
        `coverage` and `selective_accuracy` (at the run's threshold); with
        `unknown_dir` also `auroc`, `fpr_at_95_tpr`, `n_unknown`, `n_flagged_unknown`,
        `unknown_score` and `auroc_by_score`.

    Raises:
        DataError: Unknown classes in `data_dir`, no images, or an unreadable image.
        RunError: `unknown_dir` given for a run without trust (calibrate it first).
    """
    from transferkit.data.scan import image_files
    from transferkit.evaluate import classification_metrics

    params = run.trust
    if unknown_dir is not None and params is None:
        raise RunError(f"{run.path} has no unknown score (no trust.json): run "
                       f"`transferkit calibrate {run.path}` first")
    index, ok = run.known_images(data_dir)
    root = Path(data_dir)
    known = _forward(run, [root / p for p in ok["path"]], batch_size)
    y = np.array([run.class_names.index(c) for c in ok["class"]])
    metrics = classification_metrics(y, known["probabilities"], run.class_names)
    metrics["n_skipped"] = int((index["status"] != "ok").sum())
    metrics["ece"] = calibration.ece(known["probabilities"], y)
    if params is None:
        return metrics
    kernel, bias = run.model.get_layer("predictions").get_weights()
    ours = outputs_from_features(params, known["features"], kernel, bias)
    correct = ours["probabilities"].argmax(axis=1) == y
    precision, coverage = abstain.selective(ours["probabilities"].max(axis=1), correct,
                                            params.abstain_threshold)
    metrics.update(coverage=coverage, selective_accuracy=precision)
    if unknown_dir is None:
        return metrics

    other = _forward(run, image_files(unknown_dir), batch_size)
    theirs = outputs_from_features(params, other["features"], kernel, bias)
    metrics.update(unknown_separation(ours["unknown_score"], theirs["unknown_score"]))
    metrics.update(n_unknown=int(len(theirs["is_unknown"])),
                   n_flagged_unknown=int(theirs["is_unknown"].sum()),
                   n_known_flagged_unknown=int(ours["is_unknown"].sum()),
                   unknown_score=params.unknown_kind,
                   auroc_by_score=_auroc_by_score(run, known, other, kernel, bias))
    return metrics


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


def _forward(run, files: Sequence[Path], batch_size: int) -> dict[str, np.ndarray]:
    """Pooled features and probabilities of image files, one forward pass."""
    trunk = trunk_of(run.model)
    features, probabilities = [], []
    for i in range(0, len(files), batch_size):
        f, p = trunk.predict_on_batch(run.preprocess(files[i:i + batch_size]))
        features.append(np.asarray(f, np.float32))
        probabilities.append(np.asarray(p, np.float32))
    return {"features": np.concatenate(features), "probabilities":
            np.concatenate(probabilities)}


def _auroc_by_score(run, known: dict, other: dict, kernel: np.ndarray,
                    bias: np.ndarray) -> dict[str, float] | None:
    """The AUROC of every score kind, each fitted on the run's training features."""
    from transferkit.trust.fit import split_arrays

    try:
        train = split_arrays(run)["train"]
    except RunError:  # an export folder: no splits, no feature store
        return None
    result = {}
    for kind in unknown.KINDS:
        constants = unknown.fit_constants(kind, train["features"], train["labels"],
                                          len(run.class_names))
        known_scores, other_scores = (unknown.unknown_score(
            kind, constants, d["features"], d["features"] @ kernel + bias)
            for d in (known, other))
        result[kind] = unknown_separation(known_scores, other_scores)["auroc"]
    return result
