"""End to end: folder → run directory, the Run API, evaluate, TFDS, and the real photos."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

import transferkit
from transferkit.errors import DataError, RunError
from transferkit.testing import make_color_folder

RUN_FILES = ["config.json", "labels.json", "plan.json", "audit.csv", "splits.csv",
             "history.csv", "metrics.json", "per_class.csv", "confusion_matrix.csv",
             "confusion_matrix.png", "top_losses.csv", "model.keras", "run.json"]


def test_run_directory_is_complete_and_self_describing(tiny_run):
    for name in RUN_FILES:
        assert (tiny_run.path / name).is_file(), name
    config = json.loads((tiny_run.path / "config.json").read_text())
    assert config["image_size"] == 96 and config["backbone"] == "mobilenet_v2_0.35"
    assert config["val_split"] == 0.15 and config["seed"] == 42
    assert json.loads((tiny_run.path / "labels.json").read_text()) == ["blue", "green", "red"]
    assert list(pd.read_csv(tiny_run.path / "audit.csv").columns) == \
        ["path", "class", "status", "reason"]
    metrics = json.loads((tiny_run.path / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "n_test", "n_train", "n_val", "train_seconds"):
        assert key in metrics
    assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == 36
    plan = json.loads((tiny_run.path / "plan.json").read_text())
    assert plan["strategy"] == "feature-extract" and plan["reason"]
    history = pd.read_csv(tiny_run.path / "history.csv")
    assert set(history["phase"]) == {1} and "val_loss" in history
    assert not (tiny_run.path / "cache").exists()  # temporary files are cleaned up


def test_colors_are_learned_and_run_predicts(tiny_run, color_folder):
    metrics = json.loads((tiny_run.path / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.8
    files = sorted((color_folder / "red").glob("*.png"))[:3]
    probabilities = tiny_run.predict(files)
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    top = tiny_run.top_k(probabilities, k=2)
    assert top[0][0]["label"] == "red" and len(top[0]) == 2


def test_load_run_gives_the_same_answers(tiny_run, color_folder):
    files = sorted((color_folder / "blue").glob("*.png"))[:2]
    loaded = transferkit.load_run(tiny_run.path)
    np.testing.assert_allclose(loaded.predict(files), tiny_run.predict(files), atol=1e-6)
    assert loaded.class_names == tiny_run.class_names


def test_evaluate_on_a_subset_of_classes(tiny_run, color_folder, tmp_path):
    subset = tmp_path / "subset"
    shutil.copytree(color_folder / "green", subset / "green")
    (subset / "green" / "notes.txt").write_text("not an image")
    metrics = tiny_run.evaluate(subset)
    assert metrics["n_images"] == 12 and metrics["n_skipped"] == 1
    assert metrics["accuracy"] >= 0.8


def test_finished_run_is_not_overwritten(tiny_run, color_folder):
    with pytest.raises(RunError, match="--overwrite"):
        transferkit.train(color_folder, tiny_run.path, image_size=96, quiet=True)


def test_fine_tune_phase_and_history(tmp_path):
    data = make_color_folder(tmp_path / "data", n_per_class=10, size=48, seed=3)
    run = transferkit.train(data, tmp_path / "run", image_size=64, unfreeze=1,
                            fine_tune_epochs=2, augment_copies=0, head_epochs=3, quiet=True)
    history = pd.read_csv(run.path / "history.csv")
    assert list(history["phase"].unique()) == [1, 2]
    assert (history[history["phase"] == 2]["epoch"] == [1, 2]).all()
    plan = json.loads((run.path / "plan.json").read_text())
    assert plan["unfreeze_blocks"] == 1 and plan["overridden"]


def test_tfds_source_is_prepared_by_tfds_and_treated_like_a_folder(tfds_run, color_folder):
    """A real TFDS builder (train and test splits), prepared from local files."""
    audit = pd.read_csv(tfds_run.path / "audit.csv")
    assert len(audit) == len(list(color_folder.glob("*/*.png")))
    assert set(audit["status"]) == {"ok"}
    assert tfds_run.class_names == sorted(p.name for p in color_folder.iterdir())
    # Both TFDS splits were written, as the original encoded files.
    assert {p.split("_")[0] for p in audit["path"].str.split("/").str[-1]} == \
        {"train", "test"}
    assert tfds_run.data_folder.name == "transferkit_test_colors"
    test_images = tfds_run.split_paths("test")
    assert test_images and all(p.is_file() and p.parent.parent == tfds_run.data_folder
                               for p in test_images)
    original = color_folder / test_images[0].parent.name
    assert any(f.read_bytes() == test_images[0].read_bytes() for f in original.iterdir())


def test_unknown_tfds_name_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="cannot get TFDS dataset 'no_such_dataset_xyz'"):
        transferkit.train("tfds:no_such_dataset_xyz", tmp_path / "run", quiet=True)


def test_real_photos_beat_random_weights(flowers, tmp_path):
    """Real ImageNet weights vs random ones on a flowers5 subset (both measured here)."""
    subset = tmp_path / "flowers"
    for folder in sorted(flowers.iterdir()):
        (subset / folder.name).mkdir(parents=True)
        for file in sorted(folder.glob("*.jpg"))[:40]:
            (subset / folder.name / file.name).symlink_to(file)
    options = dict(image_size=96, strategy="feature-extract", augment_copies=0, quiet=True,
                   test_split=0.25)
    pretrained = transferkit.train(subset, tmp_path / "pretrained", **options)
    random = transferkit.train(subset, tmp_path / "random", weights="none", **options)
    accuracy = [json.loads((r.path / "metrics.json").read_text())["accuracy"]
                for r in (pretrained, random)]
    assert accuracy[0] >= 0.6, accuracy
    assert accuracy[0] >= accuracy[1] + 0.2, accuracy
