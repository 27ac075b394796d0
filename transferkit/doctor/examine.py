"""The doctor's shared steps: which images, at which size, through which trunk; then
the findings written to `data_issues.csv` and `doctor.json`.

Used by `diagnose` (a folder) and `training_step` (inside `train`).
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from transferkit import layout
from transferkit.backbones import get_backbone, load_pretrained
from transferkit.config import TrainConfig
from transferkit.doctor.findings import DoctorConfig, Findings, find_issues
from transferkit.features import feature_extractor
from transferkit.fileio import write_csv, write_json
from transferkit.model import build_classifier
from transferkit.plan import make_plan


def usable_rows(index: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """The audit's usable images of `classes`, sorted by path: the split's (and the
    feature store's) row order."""
    usable = index[(index["status"] == "ok") & index["class"].isin(classes)]
    return usable.sort_values("path").reset_index(drop=True)


def examine(rows: pd.DataFrame, classes: list[str], features: np.ndarray, folder: Path,
            out: Path, config: DoctorConfig, extra: dict | None = None,
            workers: int = 2) -> Findings:
    """Finds the issues of `rows` and writes `data_issues.csv` and `doctor.json` to `out`.

    Args:
        rows: `usable_rows` output (path, class, sha256).
        classes: Class names, in output order.
        features: `[len(rows), D]` ImageNet features, in row order.
        folder: The data folder.
        out: Folder for the two files.
        config: Thresholds.
        extra: More fields for `doctor.json` (e.g. the feature key).
        workers: Decoding and matching threads.

    Returns:
        The `Findings`.
    """
    start = time.time()
    findings = find_issues(rows["path"].tolist(), rows["class"].tolist(), classes,
                           features, folder, rows["sha256"].tolist(), config, workers)
    issues = findings.issues
    write_csv(out / layout.DATA_ISSUES_FILE, issues)
    counts = issues["issue"].value_counts().to_dict()
    write_json(out / layout.DOCTOR_FILE, {
        "n_images": len(rows), "config": config.to_dict(),
        "counts": {k: int(counts.get(k, 0)) for k in ("near_duplicate", "label_issue",
                                                       "outlier")},
        "near_duplicate_groups": int(issues.loc[issues["issue"] == "near_duplicate",
                                                "group"].nunique()),
        "seconds": round(time.time() - start, 1), **(extra or {})})
    return findings


def planned_size(index: pd.DataFrame, classes: list[str], config: TrainConfig) -> int:
    """The image size the plan will choose, estimated before the split.

    The plan reads the training split's smallest class and median side; before the split
    they are estimated from the whole folder (the split is stratified, so the estimate
    is off by an image or so per class: a plan on a threshold may still choose another
    size, and phase 1 then computes its features at that size).
    """
    rows = usable_rows(index, classes)
    counts = rows["class"].value_counts().to_dict()
    train = {c: max(1, n - max(1, round(n * config.val_split))
                    - max(1, round(n * config.test_split))) for c, n in counts.items()}
    median = float((rows[["width", "height"]].min(axis=1)).median())
    return make_plan(train, config, get_backbone(config.backbone), median).image_size


def extractor_at(config: TrainConfig, n_classes: int, size: int) -> keras.Model:
    """The pretrained trunk of `config`'s backbone at `size` (raw pixels → features)."""
    backbone = get_backbone(config.backbone)
    pretrained = None if config.weights == "none" else \
        load_pretrained(backbone, config.weights)
    return feature_extractor(build_classifier(backbone, n_classes, size, pretrained,
                                              config.dropout))

