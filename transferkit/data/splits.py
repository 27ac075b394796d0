"""Stratified, reproducible train/validation/test splits that keep duplicates together."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from transferkit.errors import DataError

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


def check_unchanged(splits: pd.DataFrame, index: pd.DataFrame, classes: list[str],
                    since: str = "this run split it") -> None:
    """Refuses a split that no longer matches the folder's usable images.

    A resumed run trains, validates and tests on the images its `splits.csv` lists. If
    the folder changed since, going on would fail deep inside (a listed image is gone),
    train on wrong labels (an image moved to another class folder keeps its old label
    in the split), or give a run that claims to have seen images it never did. So any
    change is refused, images *added* included: they belong to no split, and a new
    class would change the model's outputs. The user restores the folder, or starts
    the run again on the folder as it is now (`--overwrite`).

    An image the audit now skips (unreadable) counts as removed; a file the audit
    skips (not an image) is no change.

    Args:
        splits: The stored split (columns path, class, split).
        index: The audit of the folder now (`scan_folder`), less any images the
            run leaves out on purpose (the doctor's `--exclude-flagged`).
        classes: The usable classes now, in output order.
        since: When the split was made, as the message says it.

    Raises:
        DataError: One line with the counts (removed, moved to another class, added)
            and what to do.
    """
    now = index.loc[(index["status"] == "ok") & index["class"].isin(classes), "path"]
    before, now = set(splits["path"]), set(now)
    gone, new = before - now, now - before
    # A file moved to another class folder keeps its path below the class folder.
    moved = {_in_class(p) for p in gone} & {_in_class(p) for p in new}
    n_moved = sum(_in_class(p) in moved for p in gone)
    n_removed = len(gone) - n_moved
    n_added = len(new) - sum(_in_class(p) in moved for p in new)
    came = sorted(set(classes) - set(splits["class"]))
    went = sorted(set(splits["class"]) - set(classes))
    if not (gone or new or came or went):
        return
    extra = "".join(f"; {what}: {', '.join(names)}" for what, names in
                    (("new classes", came), ("classes gone", went)) if names)
    raise DataError(f"the data folder changed since {since}: {n_removed} removed, "
                    f"{n_moved} moved to another class, {n_added} added{extra}; pass "
                    "--overwrite to start again on the folder as it is, or restore it")


def _in_class(path: str) -> str:
    """`class/sub/name.jpg` → `sub/name.jpg`: the path below its class folder."""
    return path.split("/", 1)[-1]
