"""Stratified, reproducible train/validation/test splits that keep duplicates together."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def make_splits(index: pd.DataFrame, classes: list[str], val_split: float,
                test_split: float, seed: int,
                groups: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Assigns every usable image of `classes` to train, val or test.

    Stratified: each class is split in the same proportions (at least one image in val
    and test per class). Files with identical bytes (same `sha256`) always land in the
    same split, so a duplicate can never leak from training into the test set. The same
    index and seed always give the same split. `groups` (the data doctor's
    near-duplicate groups) extends this to any images given the same group key.

    Args:
        index: The audit (`scan_folder` output): columns path, class, status, sha256.
        classes: Classes to keep.
        val_split: Fraction of each class for validation.
        test_split: Fraction of each class for the test.
        seed: Seed of the shuffle.
        groups: Group key of each path (default: its sha256); images with the same
            key always land in the same split.

    Returns:
        A frame with columns path, class, split, sorted by path.
    """
    usable = index[(index["status"] == "ok") & index["class"].isin(classes)]
    usable = usable.sort_values("path")
    if groups is not None:
        usable = usable.assign(sha256=usable["path"].map(groups).fillna(usable["sha256"]))
    rng = np.random.default_rng(seed)
    split_of_group: dict[str, str] = {}
    for name in sorted(classes):
        groups = usable.loc[usable["class"] == name, "sha256"].drop_duplicates()
        groups = [g for g in groups if g not in split_of_group]  # seen in another class
        order = rng.permutation(len(groups))
        n = len(groups)
        n_test = max(1, round(n * test_split))
        n_val = max(1, round(n * val_split))
        for rank, i in enumerate(order):
            split_of_group[groups[i]] = ("test" if rank < n_test else
                                         "val" if rank < n_test + n_val else "train")
    out = usable[["path", "class"]].copy()
    out["split"] = usable["sha256"].map(split_of_group).to_numpy()
    return out.reset_index(drop=True)
