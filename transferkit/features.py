"""Cached backbone features: the frozen backbone runs once per image, not once per epoch.

Phase 1 trains only the head, whose input is the pooled feature vector; while the
backbone is frozen that vector never changes, so computing it every epoch (the plain
Keras-guide recipe) wastes almost all of the time. Features are cached as `.npy` files in
the run directory, written atomically, so a killed run resumes from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from transferkit.data.pipeline import image_dataset
from transferkit.errors import DataError
from transferkit.fileio import atomic_path


def feature_extractor(model: keras.Model) -> keras.Model:
    """The classifier's trunk: raw pixels → pooled features (the head's input)."""
    return keras.Model(model.inputs, model.get_layer("head_pool").output)


def cached_features(extractor: keras.Model, paths: Sequence[str], cache_file: Path,
                    image_size: int, batch_size: int, augment_seed: int | None = None,
                    workers: int = 2, verbose: int = 1) -> np.ndarray:
    """Features of `paths` (optionally augmented), from the cache or computed and cached.

    Args:
        extractor: From `feature_extractor`.
        paths: Image files, in the order of the returned rows.
        cache_file: `.npy` file to read from or write to.
        image_size: Input side.
        batch_size: Batch size of the forward passes.
        augment_seed: Augment the images with this seed (None: the images as they are).
        workers: Decoding threads.
        verbose: Keras progress bar (0: quiet).

    Returns:
        A float32 array `[len(paths), D]`.

    Raises:
        DataError: Some images can no longer be decoded (changed or deleted since the
            audit).
    """
    features = _load_cache(cache_file)
    if features is not None and len(features) == len(paths):
        return features
    ds = image_dataset(paths, None, image_size, batch_size, augment_seed=augment_seed,
                       workers=workers)
    features = extractor.predict(ds, verbose=verbose).astype(np.float32)
    if len(features) != len(paths):
        # A resumed run reuses its split, so running the same command again would not help.
        raise DataError(f"{len(paths) - len(features)} of {len(paths)} images can no longer "
                        "be decoded (changed or deleted since the audit); restore them, or "
                        "pass --overwrite to audit and split the folder again")
    with atomic_path(cache_file, suffix=".tmp.npy") as tmp:
        np.save(tmp, features)
    return features


def _load_cache(cache_file: Path) -> np.ndarray | None:
    """The cached features, or None when there are none or they cannot be read."""
    try:
        features = np.load(cache_file, allow_pickle=False)
    except (OSError, ValueError, EOFError):  # missing, or not a whole .npy file
        return None
    return features if features.ndim == 2 else None
