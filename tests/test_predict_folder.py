"""`transferkit predict MODEL DIR --out table`: one row per file, bad files with a reason."""

from __future__ import annotations

import csv
import json

import numpy as np

from hostile import make_hostile_folder
from transferkit.cli import main


def test_a_hostile_folder_gives_one_row_per_file_the_bad_ones_with_a_reason(
        capsys, tiny_run, tmp_path):
    folder = tmp_path / "in"
    manifest = make_hostile_folder(folder, n_good_per_class=3)
    out = tmp_path / "table" / "predictions.csv"
    assert main(["predict", str(tiny_run.path), str(folder), "--out", str(out)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    with open(out, newline="", encoding="utf-8") as f:
        rows = {row["path"]: row for row in csv.DictReader(f)}
    # Every file the audit lists, and the top-level note (no class folder here); hidden
    # folders (.git, __MACOSX, .ipynb_checkpoints) are not walked.
    assert set(rows) == manifest["expected_ok"] | manifest["expected_skipped"] | \
        {"readme.txt"}
    for path in manifest["expected_ok"]:
        assert rows[path]["skipped"] == "" and rows[path]["top1"] in tiny_run.class_names
    for path in manifest["expected_skipped"] | {"readme.txt"}:
        assert rows[path]["skipped"] and rows[path]["top1"] == "", path
    assert rows["red/zero_bytes.jpg"]["skipped"] == "empty file (0 bytes)"
    assert rows["red/notes.txt"]["skipped"] == "not an image extension (.txt)"
    assert "pixels" in rows[manifest["bomb"]]["skipped"]
    # The table's answers are the run's own.
    good = sorted(p for p in manifest["expected_ok"] if p.startswith("blue/"))
    probabilities = tiny_run.predict([folder / p for p in good])
    assert [rows[p]["top1"] for p in good] == \
        [tiny_run.class_names[i] for i in probabilities.argmax(axis=1)]
    np.testing.assert_allclose([float(rows[p]["probability"]) for p in good],
                               probabilities.max(axis=1), rtol=1e-4)
    first = rows[good[0]]
    assert first["top_k"].split(";")[0] == f"{first['top1']}:{float(first['probability']):.6f}"
    assert len(first["top_k"].split(";")) == 3 and first["abstained"] in ("True", "False")


def test_jsonl_by_suffix_in_batches_of_the_size_asked(capsys, tiny_run, color_folder,
                                                      tmp_path, monkeypatch):
    from transferkit.predictors.base import Predictor

    seen = []
    real = Predictor.predict_files
    monkeypatch.setattr(Predictor, "predict_files",
                        lambda self, paths, *a: seen.append(len(paths)) or
                        real(self, paths, *a))
    out = tmp_path / "p.jsonl"
    assert main(["predict", str(tiny_run.path), str(color_folder), "--out", str(out),
                 "--batch-size", "5", "--top-k", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    n = sum(1 for _ in color_folder.rglob("*.png"))
    assert summary["n_files"] == summary["n_predicted"] == len(rows) == n
    assert max(seen) == 5 and sum(seen) == n  # never more than a batch decoded at once
    assert all(len(r["top_k"]) == 2 and r["top1"] == r["top_k"][0]["label"] and
               r["skipped"] is None for r in rows)
    assert {r["top1"] for r in rows if r["path"].startswith("red/")} == {"red"}


def test_a_folder_needs_out_and_out_needs_a_table_suffix(capsys, tiny_run, color_folder,
                                                          tmp_path):
    assert main(["predict", str(tiny_run.path), str(color_folder)]) == 2
    assert "--out predictions.csv" in capsys.readouterr().err
    assert main(["predict", str(tiny_run.path), str(color_folder), "--out",
                 str(tmp_path / "x.txt")]) == 2
    assert "write a .csv or a .jsonl file" in capsys.readouterr().err
