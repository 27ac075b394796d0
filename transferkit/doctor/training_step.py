"""The doctor inside `train`: before the split, on the run's own feature store.

Near-duplicates must be known before the split (each group goes to one split), so the
ImageNet features of every usable image are computed first, at the size the plan will
choose, into the run's feature store; phase 1 then finds them there and computes only
the augmented views. What the doctor adds to a training is its own work: one decoding
of each image (thumbnail and keypoints), the neighbour search, the keypoint check of
candidate pairs, k-fold logistic regressions.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import keras
import pandas as pd

from transferkit import layout
from transferkit.config import TrainConfig
from transferkit.doctor.examine import examine, extractor_at, planned_size, usable_rows
from transferkit.doctor.findings import DoctorConfig
from transferkit.features import FeatureKey, FeatureStore
from transferkit.fileio import read_json


def doctor_before_split(out_dir: Path, source: Path, index: pd.DataFrame,
                        classes: list[str], config: TrainConfig, resuming: bool, say,
                        verbose: int = 0) -> tuple[dict[str, str] | None, set[str]]:
    """Runs the doctor on every usable image; writes `data_issues.csv` and `doctor.json`.

    Args:
        out_dir: The run directory.
        source: The data folder.
        index: The audit.
        classes: The usable classes, in output order.
        config: The run's options.
        resuming: A resumed run reuses the doctor's files when they are there.
        say: Prints progress.
        verbose: Keras progress bar of the feature computation.

    Returns:
        `(groups, excluded)`: the split group of each path (near-duplicate groups, else
        the sha256), or None when the doctor did not run (weights `none`: random
        features find nothing); and the paths `--exclude-flagged` leaves out.
    """
    issues_file = out_dir / layout.DATA_ISSUES_FILE
    if config.weights == "none":
        say("Doctor: skipped (--weights none: no pretrained features to compare images)")
        return None, set()
    rows = usable_rows(index, classes)
    if resuming and issues_file.exists() and (out_dir / layout.DOCTOR_FILE).exists():
        issues = pd.read_csv(issues_file, keep_default_na=False)
        say("Doctor: reusing data_issues.csv")
    else:
        start = time.time()
        size = planned_size(index, classes, config)
        key = FeatureKey("imagenet", size)
        say(f"Doctor: ImageNet features of the {len(rows)} images at {size} px "
            "(phase 1 reuses them)")
        features = FeatureStore(out_dir / layout.FEATURES_DIR).get(
            key, rows["path"].tolist(), source, extractor_at(config, len(classes), size),
            config.seed, config.batch_size, config.workers, verbose)
        features_done = time.time()
        findings = examine(rows, classes, features, source, out_dir,
                           dataclasses.replace(DoctorConfig(), seed=config.seed),
                           {"features": key.name,
                            "feature_seconds": round(features_done - start, 1)},
                           config.workers)
        keras.utils.set_random_seed(config.seed)  # the model's init as without the doctor
        issues = findings.issues
        summary = read_json(out_dir / layout.DOCTOR_FILE)
        say(f"Doctor: {summary['near_duplicate_groups']} near-duplicate groups "
            f"({summary['counts']['near_duplicate']} images, kept in one split each), "
            f"{summary['counts']['label_issue']} possible label issues, "
            f"{summary['counts']['outlier']} outliers ({summary['seconds']:.0f} s beyond "
            f"the features); see {issues_file}")
    dup = issues[issues["issue"] == "near_duplicate"]
    groups = dict(zip(rows["path"], rows["sha256"]))
    groups.update({p: f"near-duplicate group {g}" for p, g in zip(dup["path"], dup["group"])})
    excluded = set()
    if config.exclude_flagged:
        excluded = set(issues.loc[issues["issue"].isin(["label_issue", "outlier"]), "path"])
        say(f"Doctor: --exclude-flagged leaves out {len(excluded)} flagged images "
            "(label issues and outliers; listed in data_issues.csv)")
    return groups, excluded
