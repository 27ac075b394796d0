"""Training on a hostile folder (tests/hostile.py): it trains end to end, skips exactly the
files it must, uses every good file, and reports the classes it leaves out."""

import contextlib
import io
import json
import re

import pandas as pd
import pytest

import transferkit
from hostile import make_hostile_folder
from transferkit.cli import main
from transferkit.run import run_state


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """(data folder, manifest): a freshly generated hostile folder."""
    root = tmp_path_factory.mktemp("hostile") / "data"
    return root, make_hostile_folder(root, seed=11)


@pytest.fixture(scope="module")
def hostile_run(hostile, tmp_path_factory):
    """(Run, what training printed): small and fast, head only."""
    root, _ = hostile
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        run = transferkit.train(root, tmp_path_factory.mktemp("runs") / "hostile",
                                image_size=64, strategy="feature-extract", augment_copies=0,
                                head_epochs=10)
    return run, printed.getvalue()


def read_csv(path):
    # keep_default_na=False: a file or class named "NA" or "null" stays a string.
    return pd.read_csv(path, keep_default_na=False)


def test_trains_end_to_end(hostile, hostile_run):
    _, manifest = hostile
    run, _ = hostile_run
    assert run_state(run.path) == "complete"
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["n_skipped"] == len(manifest["expected_skipped"])
    assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == \
        len(manifest["expected_ok"])
    assert run.class_names == manifest["usable_classes"]
    assert transferkit.load_run(run.path).class_names == manifest["usable_classes"]


def test_audit_csv_skips_exactly_the_expected_files(hostile, hostile_run):
    _, manifest = hostile
    audit = read_csv(hostile_run[0].path / "audit.csv")
    skipped = audit[audit["status"] != "ok"]
    assert set(skipped["path"]) == manifest["expected_skipped"]
    assert set(audit.loc[audit["status"] == "ok", "path"]) == manifest["expected_ok"]
    assert len(audit) == len(manifest["expected_ok"]) + len(manifest["expected_skipped"])
    assert (skipped["reason"].str.len() > 0).all()
    assert not set(audit["path"]) & manifest["ignored"]


def test_every_good_file_is_used(hostile, hostile_run):
    """Each expected-ok file is in splits.csv, unless its whole class was left out."""
    _, manifest = hostile
    splits = read_csv(hostile_run[0].path / "splits.csv")
    used = {p for p in manifest["expected_ok"]
            if p.split("/")[0] not in manifest["left_out_classes"]}
    assert set(splits["path"]) == used
    assert len(splits) == len(used)  # no file twice
    for cls, part in splits.groupby("class"):
        assert set(part["split"]) == {"train", "val", "test"}, cls
    copy, original = next(iter(manifest["duplicates"].items()))
    split_of = dict(zip(splits["path"], splits["split"]))
    assert split_of[copy] == split_of[original]


def test_empty_and_junk_only_classes_are_reported_and_left_out(hostile, hostile_run):
    _, manifest = hostile
    run, printed = hostile_run
    assert "warning: class 'empty' has no usable images (folder is empty); leaving it out" \
        in printed
    assert "warning: class 'junk_only' has no usable images (4 files skipped); leaving it " \
        "out" in printed
    labels = json.loads((run.path / "labels.json").read_text())
    assert labels == manifest["usable_classes"]
    splits = read_csv(run.path / "splits.csv")
    assert not set(splits["class"]) & set(manifest["left_out_classes"])


def test_audit_command_prints_each_skipped_file_with_its_reason(hostile, hostile_run,
                                                                 capsys):
    root, manifest = hostile
    assert main(["audit", str(root)]) == 0
    out = capsys.readouterr().out
    reason_of, reason = {}, None
    for line in out.split("skipped files:\n", 1)[1].splitlines():
        header = re.fullmatch(r"  (\S.*) \(\d+ files?\):", line)
        if header:
            reason = header.group(1)
        elif line.startswith("    "):
            reason_of[line.strip()] = reason
        else:
            break
    assert set(reason_of) == manifest["expected_skipped"]
    audit = read_csv(hostile_run[0].path / "audit.csv")
    expected = dict(audit.loc[audit["status"] != "ok", ["path", "reason"]].values)
    assert reason_of == expected  # same reasons as the training run wrote
    assert "warning: class 'empty' has no usable images" in out
    assert "warning: class 'junk_only' has no usable images" in out
    assert out.rstrip().endswith("usable classes: blue, green, red")
