"""The folder audit on a hostile folder: exactly the right files kept and skipped."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest

import hostile
from transferkit.data.scan import audit_report, scan_folder, summarize_classes, write_audit_csv
from transferkit.errors import DataError

COLUMNS = ["path", "class", "status", "reason", "sha256", "width", "height"]


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile") / "data"
    manifest = hostile.make_hostile_folder(root, seed=0)
    return root, manifest, scan_folder(root, workers=3, progress=False)


def _write_class(root, name, n, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = hostile.class_image((200, 40, 40), rng, 16)
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / f"{i}.png").write_bytes(hostile.encode(pixels, "PNG"))


def test_columns_and_sort_order(hostile_folder):
    _, _, index = hostile_folder
    assert list(index.columns) == COLUMNS
    keys = list(zip(index["class"], index["path"]))
    assert keys == sorted(keys)
    assert str(index["width"].dtype) == "int64" and str(index["height"].dtype) == "int64"


def test_kept_and_skipped_files_match_the_manifest(hostile_folder):
    _, manifest, index = hostile_folder
    assert set(index.loc[index["status"] == "ok", "path"]) == manifest["expected_ok"]
    assert set(index.loc[index["status"] == "skipped", "path"]) == manifest["expected_skipped"]
    assert set(index["status"]) == {"ok", "skipped"}
    assert not set(index["path"]) & manifest["ignored"]
    assert len(index) == len(manifest["expected_ok"]) + len(manifest["expected_skipped"])


def test_classes_are_top_level_folders(hostile_folder):
    root, _, index = hostile_folder
    assert set(index["class"]) == {"red", "green", "blue", "junk_only"}  # "empty" has no rows.
    assert index.attrs["classes"] == ["blue", "empty", "green", "junk_only", "red"]
    assert (index["path"].str.split("/").str[0] == index["class"]).all()
    nested = index.set_index("path").loc["red/nested/deeper/nested.png"]
    assert nested["class"] == "red" and nested["status"] == "ok"


def test_skipped_rows(hostile_folder):
    _, _, index = hostile_folder
    skipped = index[index["status"] == "skipped"]
    assert (skipped["reason"].str.len() > 0).all()
    assert (skipped["sha256"] == "").all()
    assert (skipped["width"] == 0).all() and (skipped["height"] == 0).all()
    reasons = dict(zip(index["path"], index["reason"]))
    assert reasons["red/.DS_Store"] == "hidden file"
    assert reasons["red/._red_000.jpg"] == "hidden file"
    assert reasons["red/Thumbs.db"] == "system file"
    assert reasons["green/desktop.ini"] == "system file"
    assert reasons["red/notes.txt"] == "not an image extension (.txt)"
    assert reasons["red/zero_bytes.jpg"] == "empty file (0 bytes)"
    assert reasons["red/text_named.jpg"] == "not an image (looks like text)"
    assert reasons["red/truncated.jpg"].startswith("truncated or corrupt image")
    assert reasons["red/bomb.png"].startswith("image too large: 40000x40000")
    assert reasons["red/broken_link.jpg"] == "broken symbolic link"


def test_ok_rows_have_size_and_hash(hostile_folder):
    root, manifest, index = hostile_folder
    ok = index[index["status"] == "ok"].set_index("path")
    assert (ok["sha256"].str.fullmatch("[0-9a-f]{64}")).all()
    assert tuple(ok.loc["green/wide_2000x20.png", ["width", "height"]]) == (2000, 20)
    assert tuple(ok.loc["blue/tiny_1x1.png", ["width", "height"]]) == (1, 1)
    # Upright size, after EXIF orientation.
    assert tuple(ok.loc[manifest["upright_check"], ["width", "height"]]) == hostile.UPRIGHT_SIZE
    data = (root / "blue/fleur été 🌸.png").read_bytes()
    assert ok.loc["blue/fleur été 🌸.png", "sha256"] == hashlib.sha256(data).hexdigest()


def test_duplicates_are_flagged_but_kept(hostile_folder):
    _, manifest, index = hostile_folder
    by_path = index.set_index("path")
    for copy, original in manifest["duplicates"].items():
        assert by_path.loc[copy, "status"] == "ok"
        assert by_path.loc[copy, "reason"] == f"duplicate of {original}"
        assert by_path.loc[original, "reason"] == ""
        assert by_path.loc[copy, "sha256"] == by_path.loc[original, "sha256"]
    flagged = set(index.loc[index["reason"].str.startswith("duplicate of"), "path"])
    assert flagged == set(manifest["duplicates"])


def test_summarize_leaves_out_classes_without_images(hostile_folder):
    _, manifest, index = hostile_folder
    classes, warnings = summarize_classes(index, min_per_class=5)
    assert classes == manifest["usable_classes"]
    assert len(warnings) == 2
    assert "'empty'" in warnings[0] and "leaving it out" in warnings[0]
    assert "'junk_only'" in warnings[1] and "4 files skipped" in warnings[1]


def test_summarize_too_few_images(hostile_folder):
    _, _, index = hostile_folder
    with pytest.raises(DataError, match=r"'blue' has 15.*'green' has 14.*at least 20"):
        summarize_classes(index, min_per_class=20)


def test_summarize_needs_two_classes(tmp_path):
    _write_class(tmp_path, "cats", 6)
    (tmp_path / "dogs").mkdir()
    (tmp_path / "dogs" / "notes.txt").write_text("todo")
    index = scan_folder(tmp_path, progress=False)
    expected = r"need at least 2 classes with images, found 1: \['cats'\]"
    with pytest.raises(DataError, match=expected):
        summarize_classes(index)


def test_summarize_small_class_names_count_and_minimum(tmp_path):
    _write_class(tmp_path, "cats", 6)
    _write_class(tmp_path, "dogs", 2, seed=1)
    with pytest.raises(DataError, match=r"'dogs' has 2.*at least 5"):
        summarize_classes(scan_folder(tmp_path, progress=False))


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="data folder not found: .*nope"):
        scan_folder(tmp_path / "nope")


def test_file_instead_of_folder(tmp_path):
    path = tmp_path / "data.zip"
    path.write_bytes(b"PK")
    with pytest.raises(DataError, match="is a file, not a folder"):
        scan_folder(path)


def test_no_class_subfolders(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / ".git").mkdir()
    with pytest.raises(DataError, match="expected one subfolder per class, e.g. .*cats"):
        scan_folder(tmp_path)


def test_empty_class_folders_give_an_empty_index(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    index = scan_folder(tmp_path, progress=False)
    assert list(index.columns) == COLUMNS and len(index) == 0
    with pytest.raises(DataError, match="found 0"):
        summarize_classes(index)


def test_link_to_a_folder_is_not_followed(tmp_path):
    _write_class(tmp_path, "cats", 2)
    (tmp_path / "cats" / "loop").symlink_to(tmp_path / "cats")
    index = scan_folder(tmp_path, progress=False).set_index("path")
    assert index.loc["cats/loop", "reason"] == "link to a folder (not followed)"
    assert (index["status"] == "ok").sum() == 2


def test_audit_csv_has_exactly_four_columns(hostile_folder, tmp_path):
    _, _, index = hostile_folder
    out = tmp_path / "audit.csv"
    write_audit_csv(index, out)
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "class", "status", "reason"]
    assert len(rows) == len(index) + 1
    assert ["blue/fleur été 🌸.png", "blue", "ok", ""] in rows


def test_audit_report(hostile_folder):
    _, manifest, index = hostile_folder
    report = audit_report(index)
    n_ok, n_skipped = len(manifest["expected_ok"]), len(manifest["expected_skipped"])
    assert f"{n_ok} ok, {n_skipped} skipped" in report
    for name in manifest["classes"]:
        assert f"  {name} " in report
    assert "hidden file (3 files):" in report
    assert "red/bomb.png" in report
    lines = report.splitlines()
    assert len(lines) < 60


def test_audit_report_is_capped(tmp_path):
    _write_class(tmp_path, "cats", 1)
    _write_class(tmp_path, "dogs", 1)
    for i in range(30):
        (tmp_path / "cats" / f"note{i:02d}.txt").write_text("x")
    report = audit_report(scan_folder(tmp_path, progress=False))
    assert sum(line.startswith("    cats/note") for line in report.splitlines()) == 20
    assert report.splitlines()[-1] == "  ... and 10 more"


def test_progress_is_printed_for_large_folders(tmp_path, capsys):
    data = hostile.encode(np.zeros((2, 2, 3), np.uint8), "PNG")
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(101):
            (tmp_path / cls / f"{i}.png").write_bytes(data)
    scan_folder(tmp_path, workers=4)
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == "audit: 202/202 files"
    assert 10 <= len(lines) <= 11
    scan_folder(tmp_path, progress=False)
    assert capsys.readouterr().err == ""


def test_file_name_that_is_not_utf8_is_skipped_with_reason(tmp_path):
    import os
    from transferkit.testing import make_color_folder

    data = make_color_folder(tmp_path / "data", n_per_class=5)
    bad = os.path.join(os.fsencode(data / "red"), b"caf\xe9.png")
    with open(bad, "wb") as f:
        f.write((data / "red" / "red_000.png").read_bytes())
    index = scan_folder(data, progress=False)
    row = index[index["reason"].str.contains("UTF-8")]
    assert len(row) == 1 and row["status"].iloc[0] == "skipped"
    assert (index["status"] == "ok").sum() == 15
