"""The data doctor: near-duplicates, label issues, outliers; the split keeps groups whole.

Folders are made here: real flowers5 photos (a few per class) with planted near-copies,
flipped labels and a screenshot; the features are MobileNetV2-0.35 ImageNet features at
128 px (computed once for the module, ~10 s). No model is trained.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from transferkit import layout
from transferkit.data.scan import scan_folder
from transferkit.data.splits import make_splits
from transferkit.doctor import DoctorConfig, diagnose, find_issues
from transferkit.doctor.findings import ISSUE_COLUMNS
from transferkit.features import FeatureKey, FeatureStore
from transferkit.testing import NEAR_COPY_KINDS, near_copy

PER_CLASS = 60
N_COPIES = 10
N_FLIPS = 6
SIZE = 128


def _screenshot(path) -> None:
    """A page of text on white: an image that belongs to no flower class."""
    image = Image.new("RGB", (128, 128), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 127, 14), fill=(40, 80, 160))
    for y in range(22, 124, 9):
        draw.line((6, y, 6 + (y * 37) % 110, y), fill="black", width=2)
    image.save(path)


@pytest.fixture(scope="module")
def planted(tmp_path_factory, flowers):
    """flowers5 photos, with near-copies (some filed under another class), flipped
    labels and a screenshot; returns (folder, pairs, flips, outlier, issues, out)."""
    root = tmp_path_factory.mktemp("doctor")
    data = root / "data"
    rng = np.random.default_rng(0)
    classes = sorted(p.name for p in flowers.iterdir() if p.is_dir())
    photos = {c: sorted((flowers / c).iterdir())[:PER_CLASS] for c in classes}
    for c, files in photos.items():
        (data / c).mkdir(parents=True)
        for f in files:
            shutil.copy(f, data / c / f.name)
    pairs, flips = [], []
    originals = [f for c in classes for f in photos[c][:2]]  # 2 per class: 10
    for k, original in enumerate(originals):
        kind = NEAR_COPY_KINDS[k % len(NEAR_COPY_KINDS)]
        # Every other copy is filed under the next class: groups can span classes.
        cls = original.parent.name if k % 2 == 0 else \
            classes[(classes.index(original.parent.name) + 1) % len(classes)]
        copy = data / cls / f"copy_{kind}_{original.name}"
        near_copy(Image.open(original).convert("RGB"), kind, rng).save(
            copy, format="JPEG", quality=40 if kind == "reencoded" else 90)
        pairs.append((f"{original.parent.name}/{original.name}", f"{cls}/{copy.name}"))
    for k in range(N_FLIPS):  # photos not copied, moved to another class
        c = classes[k % len(classes)]
        f = photos[c][5 + k]
        other = classes[(classes.index(c) + 2) % len(classes)]
        shutil.move(data / c / f.name, data / other / f.name)
        flips.append((f"{other}/{f.name}", c))
    _screenshot(data / "rose" / "screenshot.png")
    out = root / "doctor"
    issues = diagnose(data, out=out, image_size=SIZE, progress=False)
    return data, pairs, flips, "rose/screenshot.png", issues, out


def test_planted_near_copies_are_found_and_little_else(planted):
    data, pairs, _, _, issues, _ = planted
    dup = issues[issues["issue"] == "near_duplicate"]
    group = dict(zip(dup["path"], dup["group"]))
    found = [a in group and group.get(a) == group.get(b) for a, b in pairs]
    assert sum(found) >= 0.9 * N_COPIES, [p for p, f in zip(pairs, found) if not f]
    # Precision: no planted image is grouped with any image but its own copy...
    for a, b in pairs:
        assert set(dup.loc[dup["group"] == group.get(a), "path"]) <= {a, b}
    # ...and few other groups: flowers5 has near-duplicates of its own (among its first
    # 60 photos per class, five pairs, each the same photo re-edited, one in grayscale:
    # checked by eye).
    strangers = dup[~dup["path"].isin({p for pair in pairs for p in pair})]
    assert strangers["group"].nunique() <= 5, strangers
    assert list(issues.columns) == list(ISSUE_COLUMNS)


def test_groups_never_straddle_splits(planted):
    data, pairs, _, _, issues, _ = planted
    index = scan_folder(data, progress=False)
    dup = issues[issues["issue"] == "near_duplicate"]
    groups = {p: f"g{g}" for p, g in zip(dup["path"], dup["group"])}
    classes = sorted(index["class"].unique())
    for seed in range(10):
        splits = make_splits(index, classes, 0.2, 0.2, seed, groups).set_index("path")
        spread = splits.loc[list(groups)].groupby(pd.Series(groups))["split"].nunique()
        assert spread.max() == 1, seed
    # Without the groups some planted pair does straddle (the check can fail).
    straddle = 0
    for seed in range(10):
        split = make_splits(index, classes, 0.2, 0.2, seed).set_index("path")["split"]
        straddle += sum(split[a] != split[b] for a, b in pairs)
    assert straddle > 0


def test_flipped_flowers_rank_at_the_top_with_their_true_class(planted):
    _, _, flips, _, issues, _ = planted
    labels = issues[issues["issue"] == "label_issue"]
    assert labels["score"].is_monotonic_decreasing
    top = labels.head(2 * N_FLIPS)
    hits = [(p, c) for p, c in flips if p in set(top["path"])]
    assert len(hits) >= N_FLIPS / 2, (flips, top[["path", "suggested_class"]])
    suggested = dict(zip(labels["path"], labels["suggested_class"]))
    assert sum(suggested[p] == c for p, c in hits) >= len(hits) - 1


def test_the_screenshot_is_the_top_outlier(planted):
    _, _, _, screenshot, issues, _ = planted
    outliers = issues[issues["issue"] == "outlier"]
    assert outliers["path"].iloc[0] == screenshot, outliers
    assert len(outliers) <= 4


def test_separable_folder_flipped_labels_rank_first(tmp_path):
    """Plain colours (a perfect classifier): the flips are exactly the top 3."""
    rng = np.random.default_rng(1)
    data = tmp_path / "data"
    colours = {"red": (210, 30, 30), "green": (30, 190, 50), "blue": (30, 50, 210)}
    for name, colour in colours.items():
        (data / name).mkdir(parents=True)
        for i in range(16):
            pixels = np.clip(rng.normal(colour, 12, (48, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(data / name / f"{name}_{i:03d}.png")
    flips = [("red/red_003.png", "green"), ("green/green_007.png", "blue"),
             ("blue/blue_011.png", "red")]
    for path, to in flips:
        shutil.move(data / path, data / to / path.split("/")[1])
    issues = diagnose(data, out=tmp_path / "doctor", image_size=64, progress=False)
    labels = issues[issues["issue"] == "label_issue"]
    moved = {f"{to}/{path.split('/')[1]}": path.split("/")[0] for path, to in flips}
    assert set(labels["path"].head(3)) == set(moved), labels
    assert dict(zip(labels["path"].head(3), labels["suggested_class"].head(3))) == moved


def test_find_issues_on_features_alone():
    """Clusters with a copy (same vector + noise) and a flipped label, no images."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (3, 32))
    x = np.concatenate([c + 0.6 * rng.normal(0, 1, (30, 32)) for c in centres])
    x = np.maximum(np.concatenate([x, x[:1] + 0.01 * rng.normal(0, 1, (1, 32))]), 0)
    classes = ["a"] * 30 + ["b"] * 30 + ["c"] * 30 + ["a"]
    classes[40] = "c"  # a "b" filed as "c"
    paths = [f"{c}/{i}.png" for i, c in enumerate(classes)]
    findings = find_issues(paths, classes, ["a", "b", "c"], x)
    issues = findings.issues
    dup = issues[issues["issue"] == "near_duplicate"]
    assert set(dup["path"]) == {paths[0], paths[90]}
    assert findings.groups[0] == findings.groups[90] != -1
    top = issues[issues["issue"] == "label_issue"].iloc[0]
    assert (top["path"], top["suggested_class"]) == (paths[40], "b")


def test_cli_json_reuses_the_stored_features(planted, capsys, monkeypatch):
    from transferkit import cli

    data, _, _, _, issues, out = planted
    # Every feature must come from the store: computing one now fails the test.
    module = sys.modules["transferkit.doctor.diagnose"]  # the package exports the function
    monkeypatch.setattr(module, "extractor_at",
                        lambda *a: pytest.fail("features were recomputed"))
    assert cli.main(["doctor", str(data), "--out", str(out), "--image-size", str(SIZE),
                     "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == len(issues)
    assert set(records[0]) == set(ISSUE_COLUMNS)
    assert {r["issue"] for r in records} <= {"near_duplicate", "label_issue", "outlier"}
    table = pd.read_csv(out / layout.DATA_ISSUES_FILE, keep_default_na=False)
    assert len(table) == len(records)
    summary = json.loads((out / layout.DOCTOR_FILE).read_text())
    assert summary["features"] == f"imagenet_{SIZE}px_plain"


def test_a_training_run_is_doctored_and_phase1_reuses_the_features(tiny_run):
    """The conftest run: data_issues.csv written before the split, one ImageNet entry
    holding exactly the split's images (phase 1 read it, nothing recomputed)."""
    path = tiny_run.path
    assert (path / layout.DATA_ISSUES_FILE).is_file()
    summary = json.loads((path / layout.DOCTOR_FILE).read_text())
    assert summary["n_images"] == len(tiny_run.splits)
    store = FeatureStore(path / layout.FEATURES_DIR)
    assert store.keys() == [FeatureKey("imagenet", tiny_run.image_size)]
    assert store.names(store.keys()[0]) == tiny_run.splits["path"].tolist()


def test_the_store_serves_a_subset_without_recomputing(tmp_path):
    """`--exclude-flagged` trains on fewer images than the doctor saw: rows are kept."""
    store = FeatureStore(tmp_path / "features")
    key = FeatureKey("imagenet", 64)
    entry = tmp_path / "features" / key.name
    entry.mkdir(parents=True)
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(entry / "features.npy", values)
    (entry / "names.txt").write_text("a\nb\nc\nd\n")
    (entry / "meta.json").write_text(json.dumps(
        {"weights": "imagenet", "image_size": 64, "view": 0, "seed": 1, "rows": 4}))
    kept = store.get(key, ["b", "d"], tmp_path, extractor=None, seed=1)
    np.testing.assert_array_equal(kept, values[[1, 3]])
    assert store.names(key) == ["b", "d"]


def test_bad_doctor_config_is_one_clear_error(tmp_path, color_folder):
    from transferkit.errors import ConfigError

    with pytest.raises(ConfigError, match="folds"):
        diagnose(color_folder, out=tmp_path, config=DoctorConfig(folds=1), progress=False)


def _scene(seed: int, size: int = 128) -> Image.Image:
    """A made-up photo: overlapping coloured discs on grass green (seeded)."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), (40, 120, 40))
    draw = ImageDraw.Draw(image)
    for _ in range(30):
        x, y = rng.integers(0, size, 2)
        r = int(rng.integers(4, 20))
        draw.ellipse((x - r, y - r, x + r, y + r), outline=(0, 0, 0),
                     fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image


def test_a_mirrored_cropped_recoloured_copy_is_found_and_a_look_alike_is_not(tmp_path):
    """The copy's pixels align with its original's; the look-alike's features are even
    closer to the original (features alone group it), its pixels never align. The
    copy's features are as far from the original's as any other image's: only its
    mirror-invariant thumbnail makes it the original's nearest candidate."""
    from PIL import ImageEnhance, ImageOps

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
    for seed in range(6):
        _scene(seed).save(tmp_path / ("a" if seed < 3 else "b") / f"{seed}.png")
    copy = ImageOps.mirror(_scene(0).crop((8, 4, 120, 116)))  # 88%, mirrored
    copy = ImageEnhance.Color(ImageEnhance.Brightness(copy).enhance(1.12)).enhance(0.8)
    copy.save(tmp_path / "a" / "copy.jpg", quality=60)
    paths = ["a/0.png", "a/1.png", "a/2.png", "b/3.png", "b/4.png", "b/5.png", "a/copy.jpg"]
    rng = np.random.default_rng(0)
    features = np.abs(rng.normal(0, 1, (7, 16)))
    features[1] = features[0] + 0.01  # the look-alike: nearer than any copy
    classes = [p.split("/")[0] for p in paths]
    found = find_issues(paths, classes, ["a", "b"], features, tmp_path,
                        config=DoctorConfig(candidates=1))
    assert found.groups[0] == found.groups[6] != -1
    assert found.groups[1] == -1 and (found.groups[2:6] == -1).all()
    features_alone = find_issues(paths, classes, ["a", "b"], features)
    assert features_alone.groups[0] == features_alone.groups[1] != -1


def test_thumbnails_ignore_mirroring_and_say_which_way_round_a_pair_matches(tmp_path):
    from PIL import ImageOps

    from transferkit.doctor.duplicates import Looks

    scene = _scene(0)
    scene.save(tmp_path / "scene.png")
    ImageOps.mirror(scene).save(tmp_path / "mirror.png")
    scene.crop((4, 4, 124, 124)).save(tmp_path / "crop.png")
    _scene(1).save(tmp_path / "other.png")
    looks = Looks([tmp_path / f"{n}.png" for n in ("scene", "mirror", "crop", "other")])
    invariant = looks.mirror_invariant()
    np.testing.assert_allclose(invariant[0], invariant[1], atol=1e-4)
    assert np.abs(invariant[0] - invariant[3]).max() > 0.5
    assert looks.mirrored_better(np.array([[0, 1], [0, 2], [1, 2]])).tolist() == \
        [True, False, True]
    inliers, agreement = looks.verify(np.array([[0, 1], [0, 2], [0, 3]]), min_inliers=15)
    assert (inliers[:2] >= 15).all() and (agreement[:2] > 0.95).all()
    assert inliers[2] < 15 and agreement[2] == 0


def test_nearest_leaves_each_row_out_even_when_a_row_repeats_it():
    from transferkit.doctor.neighbours import nearest

    rows = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    indices, similarities = nearest(rows, 2)
    np.testing.assert_array_equal(indices, [[3, 2], [2, 0], [0, 1], [0, 2]])
    half = np.sqrt(0.5)
    np.testing.assert_allclose(similarities, [[1, half], [half, 0], [half, half],
                                              [1, half]], atol=1e-6)


def test_outliers_are_robust_deviations_above_the_median():
    from transferkit.doctor.outliers import outliers

    # Median 0.2; absolute deviations 0.1, 0, 0, 0.1, 0, 0.7: their median 0.05, so
    # one robust deviation is 1.4826 x 0.05 = 0.074.
    scores = np.array([0.1, 0.2, 0.2, 0.3, 0.2, 0.9])
    assert outliers(scores, 4.0).tolist() == [5]       # cut at 0.497
    assert outliers(scores, 1.0).tolist() == [5, 3]    # cut at 0.274, highest first


def test_out_of_sample_probabilities_cover_every_class_and_hold_groups_out():
    from transferkit.doctor.labels import out_of_sample_probabilities

    rng = np.random.default_rng(0)
    centres = np.eye(3, 8) * 5
    x = np.abs(np.concatenate([c + rng.normal(0, 0.3, (10, 8)) for c in centres]))
    labels = np.repeat([0, 1, 3], 10)  # class 2 has no image
    groups = np.arange(30)
    # Image 0 and a copy of it filed as class 1, in one group: held out together, the
    # copy cannot vouch for its own wrong label.
    x = np.concatenate([x, x[:1]])
    labels, groups = np.append(labels, 1), np.append(groups, 0)
    p = out_of_sample_probabilities(x, labels, groups, n_classes=4, folds=5)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    assert (p[:, 2] == 0).all()
    assert (p[:30].argmax(axis=1) == np.repeat([0, 1, 3], 10)).all()
    assert p[30].argmax() == 0
