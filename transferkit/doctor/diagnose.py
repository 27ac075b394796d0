"""`transferkit doctor DATA`: the audit, then the findings on the feature store's features.

The features come from the one feature store (`transferkit.features`): a run's, when
`run` is given and it holds the ImageNet features of these images (no network pass at
all), else `OUT/features/`, computed once and reused by the next call. Training calls
`doctor_before_split` (`doctor/training_step.py`) instead, on its own run directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from transferkit import layout
from transferkit.config import TrainConfig
from transferkit.data.scan import scan_folder, summarize_classes
from transferkit.doctor.examine import examine, extractor_at, planned_size, usable_rows
from transferkit.doctor.findings import DoctorConfig
from transferkit.errors import ConfigError
from transferkit.features import FeatureKey, FeatureStore


def diagnose(data: str | os.PathLike, out: str | os.PathLike = "doctor",
             run: str | os.PathLike | None = None, backbone: str | None = None,
             image_size: int | None = None, config: DoctorConfig | None = None,
             workers: int = 2, progress: bool = True) -> pd.DataFrame:
    """Audits a class folder and finds near-duplicates, label issues and outliers.

    Args:
        data: Folder with one subfolder per class.
        out: Folder for `data_issues.csv`, `doctor.json` and (unless a run's are used)
            the feature store.
        run: A finished run directory trained on `data`: its stored ImageNet features
            (and backbone, image size) are used when they cover the folder's images.
        backbone: Registry name (default: the run's, else `TrainConfig`'s).
        image_size: Input side (default: the run's, else what training would plan).
        config: Thresholds.
        workers: Decoding threads.
        progress: Print progress.

    Returns:
        `data_issues.csv`'s rows: path, class, issue, score, group, suggested_class.

    Raises:
        DataError: Missing folder, or fewer than 2 usable classes.
        RunError: `run` is not a finished run directory.
    """
    from transferkit.run import load_run

    config = check_config(config or DoctorConfig())
    folder, out = Path(data), Path(out)
    index = scan_folder(folder, workers=workers, progress=progress)
    classes, _ = summarize_classes(index)
    rows = usable_rows(index, classes)
    names = rows["path"].tolist()
    features = source = None
    if run is not None:
        trained = load_run(run)
        backbone = backbone or trained.config.backbone
        image_size = image_size or trained.image_size
        # The run's features only for its own backbone and its own data (the store is
        # keyed by image size and relative path: another folder or backbone would match).
        if backbone == trained.config.backbone and \
                trained.data_folder.resolve() == folder.resolve():
            stored = FeatureStore(trained.path / layout.FEATURES_DIR)
            features = stored.rows(FeatureKey("imagenet", image_size), names)
            source = str(trained.path)
    defaults = TrainConfig(data=str(folder), backbone=backbone or TrainConfig.backbone)
    if image_size is None:
        image_size = planned_size(index, classes, defaults.resolved())
    key = FeatureKey("imagenet", image_size)
    # The doctor's own store, one per backbone (its keys name weights and size only).
    own = FeatureStore(out / layout.FEATURES_DIR / defaults.backbone)
    if features is None:
        features = own.load(key, names, defaults.seed)
        source = str(out)
    if features is None:
        if progress:
            print(f"doctor: computing the ImageNet features of {len(names)} images "
                  f"({defaults.backbone}, {image_size} px)", flush=True)
        features = own.get(key, names, folder,
                           extractor_at(defaults, len(classes), image_size),
                           defaults.seed, workers=workers)
        source = str(out)
    findings = examine(rows, classes, features, folder, out, config,
                       {"features": key.name, "feature_store": source}, workers)
    return findings.issues


def check_config(config: DoctorConfig) -> DoctorConfig:
    """Validates thresholds (one readable line per mistake)."""
    if config.candidates < 1 or config.outlier_k < 1:
        raise ConfigError("doctor: candidates and outlier_k must be at least 1")
    if config.folds < 2:
        raise ConfigError(f"doctor: folds must be at least 2, got {config.folds}")
    return config
