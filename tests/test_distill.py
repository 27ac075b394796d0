"""Distillation (`transferkit.distill`): a student run on a teacher run's soft labels."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from transferkit import layout
from transferkit.config import TrainConfig
from transferkit.errors import ConfigError
from transferkit.testing import make_color_folder

CLASSES = ["blue", "green", "red"]
# A made-up teacher's probabilities, chosen so that at T = 2 (p^(1/2), normalized) they
# soften to exactly (0.6, 0.3, 0.1).
TEACHER_P = np.array([36, 9, 1]) / 46


def _constant_teacher(folder, data, size=32):
    """A finished run directory whose model predicts TEACHER_P for every image: a
    random-weight classifier whose dense layer has zero weights and bias log(p)."""
    import keras

    from transferkit.backbones import get_backbone
    from transferkit.model import build_classifier

    model = build_classifier(get_backbone("mobilenet_0.25"), 3, size, weights=None)
    dense = model.get_layer("predictions")
    kernel, _ = dense.get_weights()
    dense.set_weights([np.zeros_like(kernel), np.log(TEACHER_P).astype(np.float32)])
    folder.mkdir(parents=True)
    model.save(folder / layout.MODEL_FILE)
    config = TrainConfig(data=str(data), backbone="mobilenet_0.25", image_size=size,
                         batch_size=8, weights="none")
    (folder / layout.CONFIG_FILE).write_text(json.dumps(config.to_dict()))
    (folder / layout.LABELS_FILE).write_text(json.dumps(CLASSES))
    rows = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.png"))
    pd.DataFrame({"path": rows, "class": [r.split("/")[0] for r in rows],
                  "split": ["train", "val", "test"] * (len(rows) // 3)}).to_csv(
        folder / layout.SPLITS_FILE, index=False)
    (folder / layout.STATE_FILE).write_text(json.dumps({"state": "complete"}))
    keras.backend.clear_session()
    return folder


def test_soft_targets_are_the_mix_of_softened_teacher_and_labels(tmp_path):
    from transferkit.distill import student_targets, with_teacher

    data = make_color_folder(tmp_path / "data", n_per_class=3, size=16)
    teacher = _constant_teacher(tmp_path / "teacher", data)
    config = with_teacher(TrainConfig(data=str(data), teacher=str(teacher),
                                      distill_alpha=0.25, distill_temperature=2.0,
                                      batch_size=4).resolved())
    assert config.splits_file == str(teacher / layout.SPLITS_FILE)
    assert config.image_size == 32  # the teacher's
    paths = {"train": [str(data / "green" / "green_001.png"),
                       str(data / "red" / "red_001.png")]}
    labels = {"train": [1, 2]}
    out = tmp_path / "student"
    out.mkdir()
    targets = student_targets(out, config, paths["train"], labels["train"], CLASSES,
                              say=lambda *a: None)
    # By hand: soft = (0.6, 0.3, 0.1); 0.25 * soft + 0.75 * one-hot.
    np.testing.assert_allclose(targets, [[0.15, 0.075 + 0.75, 0.025],
                                         [0.15, 0.075, 0.025 + 0.75]], atol=1e-5)
    # The teacher ran once: its probabilities are kept, a resumed student reads them.
    (teacher / layout.MODEL_FILE).unlink()
    again = student_targets(out, config, paths["train"], labels["train"], CLASSES,
                            say=lambda *a: None)
    np.testing.assert_array_equal(again, targets)
    assert student_targets(out, dataclasses.replace(config, teacher=None), paths["train"],
                           labels["train"], CLASSES) is None


def test_a_student_trains_on_the_teachers_split_and_records_the_teacher(
        tmp_path, tiny_run, color_folder, monkeypatch):
    import keras

    import transferkit

    fed = []  # what each model.fit trained on (phase 1: stored features, arrays)
    real = keras.Model.fit

    def recording(self, x=None, y=None, *args, **kwargs):
        fed.append(y)
        return real(self, x, y, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording)
    student = transferkit.train(color_folder, tmp_path / "student", teacher=str(
        tiny_run.path), strategy="feature-extract", augment_copies=1, head_epochs=3,
        distill_alpha=0.5, quiet=True)
    saved = json.loads((student.path / layout.CONFIG_FILE).read_text())
    assert saved["teacher"] == str(tiny_run.path)
    assert (saved["distill_alpha"], saved["distill_temperature"]) == (0.5, 2.0)
    assert student.image_size == tiny_run.image_size == 96
    pd.testing.assert_frame_equal(student.splits, tiny_run.splits)
    # The teacher's probabilities of the (un-augmented) training images ...
    train_paths = tiny_run.split_paths("train")
    probabilities = pd.read_csv(student.path / layout.TEACHER_FILE)
    assert probabilities["path"].tolist() == [str(p) for p in train_paths]
    p = probabilities[CLASSES].to_numpy()
    np.testing.assert_allclose(p, tiny_run.predict(train_paths), atol=1e-4)
    # ... are what phase 1 trained on, for the image and its augmented view alike.
    soft = np.sqrt(p) / np.sqrt(p).sum(axis=1, keepdims=True)
    labels = [CLASSES.index(c) for c in tiny_run.splits.query("split == 'train'")["class"]]
    expected = 0.5 * soft + 0.5 * np.eye(3)[labels]
    np.testing.assert_allclose(fed[0], np.concatenate([expected, expected]), atol=1e-5)
    assert student.trust is not None  # an ordinary, calibrated run


def test_distillation_options_are_checked_in_one_line(tmp_path, tiny_run, color_folder):
    from transferkit.distill import with_teacher

    with pytest.raises(ConfigError, match="--distill distills an ensemble"):
        TrainConfig(data=str(color_folder), distill=True).resolved()
    with pytest.raises(ConfigError, match="--teacher trains one student"):
        TrainConfig(data=str(color_folder), teacher="x", ensemble=2).resolved()
    with pytest.raises(ConfigError, match="--distill-alpha"):
        TrainConfig(data=str(color_folder), distill_alpha=1.5).resolved()
    with pytest.raises(ConfigError, match="is not a finished run directory"):
        with_teacher(TrainConfig(data=str(color_folder), teacher=str(tmp_path)).resolved())
    other = make_color_folder(tmp_path / "other", n_per_class=5, size=16)
    with pytest.raises(ConfigError, match="train the student on the teacher's data"):
        with_teacher(TrainConfig(data=str(other), teacher=str(tiny_run.path)).resolved())


def test_ensemble_distill_trains_the_student_of_member_1s_backbone(
        tmp_path, tiny_run, color_folder):
    from transferkit.distill import train_with_student
    from transferkit.run import load_run

    asked = []

    def train_one(data, path, overwrite=False, **options):  # a copy of tiny_run each time
        asked.append(options)
        shutil.copytree(tiny_run.path, path)
        return load_run(path)

    out = tmp_path / "ens"
    options = dict(backbones=["mobilenet_v2_0.35", "mobilenet_0.25"], distill=True,
                   time_limit=900, quiet=True)
    ensemble = train_with_student(color_folder, out, train_one=train_one, **options)
    first, second = asked
    assert first["distill"] is False and first["time_limit"] == pytest.approx(600)
    assert (second["backbone"], second["teacher"], second["ensemble"]) == \
        ("mobilenet_v2_0.35", str(out), 1)
    assert 0 < second["time_limit"] <= 900
    record = json.loads((out / layout.METRICS_FILE).read_text())["student"]
    # Student and "ensemble" are the same run here: no gap, the student is exported.
    assert record["run"] == layout.STUDENT_DIR and record["export"] == "student"
    assert record["val_accuracy"] == ensemble.metrics["val_accuracy"]
    # Stopped while the student trained: the finished ensemble is reused.
    shutil.rmtree(out / layout.STUDENT_DIR)
    metrics = json.loads((out / layout.METRICS_FILE).read_text())
    metrics.pop("student")
    (out / layout.METRICS_FILE).write_text(json.dumps(metrics))
    asked.clear()
    train_with_student(color_folder, out, train_one=train_one, **options)
    assert len(asked) == 1 and asked[0]["teacher"] == str(out)
