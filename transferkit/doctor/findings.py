"""The doctor's findings from features already computed: near-duplicates, label issues,
outliers, as the rows of `data_issues.csv`.

Images are decoded here only for the near-duplicate check (`duplicates.Looks`: a
thumbnail and keypoints of each), and nothing touches the network: `diagnose.py` brings
the features.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from transferkit.doctor.duplicates import Looks, candidate_pairs, groups_of
from transferkit.doctor.labels import label_issues, out_of_sample_probabilities
from transferkit.doctor.neighbours import nearest, normalized
from transferkit.doctor.outliers import outlier_scores, outliers

ISSUE_COLUMNS = ("path", "class", "issue", "score", "group", "suggested_class")
ISSUES = ("near_duplicate", "label_issue", "outlier")


@dataclasses.dataclass
class DoctorConfig:
    """The doctor's thresholds (measured on flowers5 and corrupted copies of it:
    docs/measurements.md).

    Attributes:
        candidates: Nearest neighbours of each image checked as near-duplicates
            (`duplicates.Looks.verify`), in the centred features and the
            mirror-invariant thumbnails together (each cosine weighing half): every
            planted copy of generator a is its original's first.
        min_inliers: Fewest RANSAC inliers of the alignment of a near-duplicate pair
            (fewer: the pixels are not compared). Chosen on generator a: its copies'
            alignments had 19-141 inliers (of 150 keypoints), ordinary neighbour pairs
            4 (median) and 13 (99th percentile).
        min_agreement: Lowest correlation of the aligned pixels of a near-duplicate
            pair; generator a's copies: 0.998 and up.
        same_cosine: Without the images (`folder` None), a pair at least this similar
            in features is a near-duplicate.
        label_min_score: Of cleanlab's flags, those kept: 1 - the out-of-sample
            probability of the given class at least this. On frozen features (~67%
            accurate on flowers5) cleanlab flags a fifth of the folder; the surest tenth
            hold most real errors (docs/measurements.md).
        outlier_k: Neighbours averaged for the outlier distance.
        outlier_spread: Robust deviations above the median distance of an outlier.
        folds: Folds of the out-of-sample probabilities.
        seed: Seed of the folds.
    """

    candidates: int = 3
    min_inliers: int = 15
    min_agreement: float = 0.9
    same_cosine: float = 0.95
    label_min_score: float = 0.9
    outlier_k: int = 5
    outlier_spread: float = 4.0
    folds: int = 5
    seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "DoctorConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


@dataclasses.dataclass
class Findings:
    """What the doctor found.

    Attributes:
        issues: `data_issues.csv`'s rows (`ISSUE_COLUMNS`), by issue then score.
        groups: The near-duplicate group of every image (`-1`: in no group), by row.
        probabilities: `[N, C]` out-of-sample class probabilities.
    """

    issues: pd.DataFrame
    groups: np.ndarray
    probabilities: np.ndarray


def find_issues(paths: Sequence[str], classes: Sequence[str], class_names: Sequence[str],
                features: np.ndarray, folder: Path | None = None,
                exact_keys: Sequence[str] | None = None,
                config: DoctorConfig | None = None, workers: int = 2) -> Findings:
    """Near-duplicates, label issues and outliers of a labelled set of images.

    Args:
        paths: Image paths (relative to `folder`), one per feature row.
        classes: The given class of each image.
        class_names: Every class, in output order.
        features: `[N, D]` ImageNet pooled features.
        folder: Where the images are (None: near-duplicates from the features alone).
        exact_keys: The audit's sha256 of each image: equal bytes join a group.
        config: Thresholds.
        workers: Decoding and matching threads.

    Returns:
        The `Findings`.
    """
    config = config or DoctorConfig()
    n = len(paths)
    unit = normalized(features)
    if folder is None:  # no images to align: the features' word alone
        pairs, score = candidate_pairs(*nearest(unit, config.candidates),
                                       config.same_cosine)
        keep = np.ones(len(pairs), bool)
    else:
        files = [Path(folder) / p for p in paths]
        looks = Looks(files, workers)
        # Features and mirror-invariant thumbnails weigh the same: the similarity is the
        # mean of the two cosines.
        both = np.concatenate([unit, normalized(looks.mirror_invariant())], 1) / np.sqrt(2)
        pairs, _ = candidate_pairs(*nearest(both, config.candidates))
        inliers, score = looks.verify(pairs, config.min_inliers)
        keep = (inliers >= config.min_inliers) & (score >= config.min_agreement)
    pairs, score = pairs[keep], score[keep]
    component = groups_of(n, pairs, exact_keys)
    sizes = np.bincount(component)
    groups = np.where(sizes[component] > 1, component, -1)
    # Stable, readable group ids: numbered by the group's first path.
    ids = {g: i + 1 for i, g in enumerate(dict.fromkeys(groups[groups >= 0]))}
    groups = np.array([ids.get(g, -1) for g in groups], np.int64)
    best = np.zeros(n)
    for (a, b), s in zip(pairs, score):
        best[a], best[b] = max(best[a], s), max(best[b], s)
    for i in np.flatnonzero(groups >= 0):  # exact duplicates have no pair of their own
        best[i] = best[i] or 1.0

    labels = np.array([list(class_names).index(c) for c in classes], np.int64)
    probabilities = out_of_sample_probabilities(
        features, labels, np.where(groups >= 0, groups + n, np.arange(n)),
        len(class_names), config.folds, config.seed)
    flagged, label_scores = label_issues(labels, probabilities)
    sure = label_scores >= config.label_min_score
    flagged, label_scores = flagged[sure], label_scores[sure]
    distance = outlier_scores(nearest(normalized(features, centre=False),
                                      config.outlier_k)[1], config.outlier_k)
    far = outliers(distance, config.outlier_spread)

    rows = [(paths[i], classes[i], "near_duplicate", float(best[i]), int(groups[i]), "")
            for i in np.flatnonzero(groups >= 0)]
    rows += [(paths[i], classes[i], "label_issue", float(s), int(groups[i]),
              class_names[int(probabilities[i].argmax())])
             for i, s in zip(flagged, label_scores)]
    rows += [(paths[i], classes[i], "outlier", float(distance[i]), int(groups[i]), "")
             for i in far]
    issues = pd.DataFrame(rows, columns=list(ISSUE_COLUMNS))
    issues["group"] = issues["group"].astype("Int64").where(issues["group"] >= 0)
    order = issues["issue"].map({k: i for i, k in enumerate(ISSUES)})
    issues = issues.assign(_o=order).sort_values(
        ["_o", "score", "path"], ascending=[True, False, True], kind="stable")
    return Findings(issues.drop(columns="_o").reset_index(drop=True), groups, probabilities)
