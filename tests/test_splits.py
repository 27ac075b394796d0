"""Stratified, reproducible splits that keep duplicates together."""

import pandas as pd

from transferkit.data.splits import make_splits


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
