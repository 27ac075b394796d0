"""Stratified, reproducible splits that keep duplicates together."""

import pandas as pd
import pytest

from transferkit.data.splits import check_unchanged, make_splits
from transferkit.errors import DataError


def index(n_per_class, dup_groups=0):
    rows = []
    for cls, n in n_per_class.items():
        for i in range(n):
            sha = f"{cls}{i}"
            rows.append({"path": f"{cls}/{i}.jpg", "class": cls, "status": "ok", "sha256": sha})
    for g in range(dup_groups):  # three copies of one file in class a
        for k in range(3):
            rows.append({"path": f"a/dup{g}_{k}.jpg", "class": "a", "status": "ok",
                         "sha256": f"dup{g}"})
    rows.append({"path": "a/bad.jpg", "class": "a", "status": "skipped", "sha256": ""})
    return pd.DataFrame(rows)


def test_stratified_proportions_and_reproducible():
    idx = index({"a": 100, "b": 40, "c": 10})
    s1 = make_splits(idx, ["a", "b", "c"], 0.15, 0.15, seed=1)
    s2 = make_splits(idx, ["a", "b", "c"], 0.15, 0.15, seed=1)
    s3 = make_splits(idx, ["a", "b", "c"], 0.15, 0.15, seed=2)
    pd.testing.assert_frame_equal(s1, s2)
    assert not s1["split"].equals(s3["split"])
    table = pd.crosstab(s1["class"], s1["split"])
    assert table.loc["a", "test"] == 15 and table.loc["a", "val"] == 15
    assert table.loc["b", "test"] == 6 and table.loc["c", "test"] >= 1
    assert table.loc["c", "val"] >= 1
    assert "a/bad.jpg" not in set(s1["path"])
    assert len(s1) == 150


def test_duplicates_stay_in_one_split():
    idx = index({"a": 30, "b": 30}, dup_groups=5)
    for seed in range(5):
        splits = make_splits(idx, ["a", "b"], 0.2, 0.2, seed)
        dups = splits[splits["path"].str.contains("dup")]
        groups = dups.assign(g=dups["path"].str.extract(r"dup(\d+)_")[0])
        assert (groups.groupby("g")["split"].nunique() == 1).all()


def test_only_requested_classes():
    idx = index({"a": 20, "b": 20, "c": 20})
    splits = make_splits(idx, ["a", "c"], 0.2, 0.2, 0)
    assert set(splits["class"]) == {"a", "c"}


def folder(paths, skipped=()):
    """An audit of these `class/name` paths (all ok but `skipped`)."""
    return pd.DataFrame([{"path": p, "class": p.split("/")[0],
                          "status": "skipped" if p in skipped else "ok",
                          "sha256": p} for p in paths])


def changed_message(before, after, classes=("a", "b"), skipped=()) -> str:
    splits = make_splits(folder(before), ["a", "b"], 0.2, 0.2, 0)
    with pytest.raises(DataError) as caught:
        check_unchanged(splits, folder(after, skipped), list(classes))
    return str(caught.value)


ORIGINAL = [f"{c}/{c}{i}.jpg" for c in "ab" for i in range(10)]


def test_an_unchanged_folder_passes_even_with_new_unusable_files():
    splits = make_splits(folder(ORIGINAL), ["a", "b"], 0.2, 0.2, 0)
    check_unchanged(splits, folder(ORIGINAL + ["a/notes.txt"], skipped={"a/notes.txt"}),
                    ["a", "b"])


def test_removed_moved_and_added_files_are_counted_apart():
    after = [p for p in ORIGINAL if p not in {"a/a0.jpg", "a/a1.jpg", "a/a2.jpg",
                                              "b/b0.jpg", "b/b1.jpg"}]
    after += ["a/b0.jpg", "a/b1.jpg",  # moved from b to a: same name below the class
              "a/new.jpg", "b/new.jpg", "b/sub/a3.jpg"]  # added (a3 is not gone)
    message = changed_message(ORIGINAL, after)
    assert message == ("the data folder changed since this run split it: 3 removed, "
                       "2 moved to another class, 3 added; pass --overwrite to start again "
                       "on the folder as it is, or restore it")


def test_an_unreadable_file_counts_as_removed_and_a_new_class_is_named():
    message = changed_message(ORIGINAL, ORIGINAL, skipped={"b/b5.jpg"})
    assert "1 removed, 0 moved to another class, 0 added;" in message
    message = changed_message(ORIGINAL, ORIGINAL + ["c/c0.jpg"], classes=("a", "b", "c"))
    assert "0 removed, 0 moved to another class, 1 added; new classes: c;" in message
