"""Evaluating trust on folders: known classes (ECE, coverage) and unknown images (AUROC).

`evaluate_run` is what `transferkit evaluate RUN --data DIR [--unknown OTHER]` runs:
`transferkit.evaluate.evaluate_folder` (which every predictor, exports included, runs)
on the run's own forward pass. The unknown folder is any folder of images, searched
recursively; its subfolder names are ignored. The run's own score decides the flags;
every other score of
`unknown.KINDS` is measured beside it (`auroc_by_score`), fitted the same way from the
run's training features, so the choice of default can be checked on any data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from transferkit.errors import RunError
from transferkit.inference import DEFAULT_BATCH
from transferkit.trust import unknown
from transferkit.trust.unknown import unknown_separation
from transferkit.trust.graph import outputs_from_features, trunk_of


def evaluate_run(run, data_dir: str | Path, unknown_dir: str | Path | None = None,
                 batch_size: int = DEFAULT_BATCH) -> dict[str, Any]:
    """`transferkit.evaluate.evaluate_folder` for a run, plus `unknown_score` (the
    run's score kind) and `auroc_by_score` (every kind, fitted on its training features).

    One forward pass per image: the pooled features give the probabilities and the
    trust fields (`outputs_from_features`) and feed `auroc_by_score`.

    Args:
        run: A `transferkit.run.Run`.
        data_dir: Folder with one subfolder per class (a subset of the run's).
        unknown_dir: Folder of images of no class the run knows (recursive).
        batch_size: Images per forward pass.

    Returns:
        The metrics of `evaluate_folder`; with `unknown_dir` also `unknown_score` and
        `auroc_by_score` (None for an export's Keras model: no feature store).

    Raises:
        DataError: Unknown classes in `data_dir`, no images, or an unreadable image.
        RunError: `unknown_dir` given for a run without trust (calibrate it first).
    """
    from transferkit.evaluate import evaluate_folder
    from transferkit.predictors.base import trust_fields

    params = run.trust
    seen: list[dict[str, np.ndarray]] = []

    def assess(files: Sequence[Path], size: int):
        seen.append(_forward(run, files, size))
        if params is None:
            return seen[-1]["probabilities"], None
        out = outputs_from_features(params, seen[-1]["features"], run.model)
        return seen[-1]["probabilities"], trust_fields(
            out["abstained"], out["is_unknown"], out["unknown_score"])

    metrics = evaluate_folder(assess, run.class_names, data_dir, unknown_dir, batch_size,
                              progress=not run.config.quiet,
                              source=str(run.path))
    if unknown_dir is not None:
        metrics.update(unknown_score=params.unknown_kind,
                       auroc_by_score=_auroc_by_score(run, seen[0], seen[1]))
    return metrics


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


def _auroc_by_score(run, known: dict, other: dict) -> dict[str, float] | None:
    """The AUROC of every score kind, each fitted on the run's training features."""
    from transferkit.model import members
    from transferkit.trust.fit import split_arrays
    from transferkit.trust.head import Head

    try:
        train = split_arrays(run)["train"]
    except RunError:  # an export folder: no splits, no feature store
        return None
    ensemble = bool(members(run.model))
    head = Head(run.model)
    result = {}
    for kind in unknown.KINDS:
        if ensemble and kind == "energy":  # see transferkit.ensemble.trust
            continue
        constants = unknown.fit_constants(kind, train["features"], train["labels"],
                                          len(run.class_names))
        known_scores, other_scores = (np.asarray(unknown.unknown_score(
            kind, constants, d["features"], d["probabilities"],
            None if ensemble else head.logits(d["features"])[0])) for d in (known, other))
        result[kind] = unknown_separation(known_scores, other_scores)["auroc"]
    return result
