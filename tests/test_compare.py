"""`compare` chooses on the validation split; the test split only reports."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from transferkit import layout
from transferkit.compare import compare, format_table

BACKBONES = ["mobilenet_v2_0.35", "mobilenet_0.25"]
OPTIONS = dict(latency_calls=1, image_size=96, strategy="feature-extract",
               augment_copies=1, quiet=True)  # tiny_run's options: its copies are reused


def finished_as(tiny_run, path, backbone, **metrics):
    """A copy of tiny_run, as the finished run of `backbone` with these metrics (None:
    the key removed, as in runs older than it)."""
    shutil.copytree(tiny_run.path, path)
    for name, update in ((layout.CONFIG_FILE, {"backbone": backbone}),
                         (layout.METRICS_FILE, metrics)):
        values = json.loads((path / name).read_text())
        values.update(update)
        (path / name).write_text(json.dumps({k: v for k, v in values.items()
                                             if v is not None}))


def test_the_winner_is_chosen_on_validation_when_test_disagrees(tiny_run, color_folder,
                                                                tmp_path):
    out = tmp_path / "cmp"
    finished_as(tiny_run, out / BACKBONES[0], BACKBONES[0], val_accuracy=0.70,
                val_macro_f1=0.70, accuracy=0.95, macro_f1=0.95)
    finished_as(tiny_run, out / BACKBONES[1], BACKBONES[1], val_accuracy=0.90,
                val_macro_f1=0.90, accuracy=0.60, macro_f1=0.60)
    table = compare(color_folder, BACKBONES, out, **OPTIONS)
    assert list(table["backbone"]) == BACKBONES[::-1]
    assert list(table["test_accuracy"]) == [0.60, 0.95]  # shown beside, chooses nothing
    winner = json.loads((out / layout.WINNER_FILE).read_text())
    assert (winner["backbone"], winner["val_accuracy"], winner["test_accuracy"]) == (
        BACKBONES[1], 0.90, 0.60)
    saved = pd.read_csv(out / layout.LEADERBOARD_FILE)
    assert list(saved["backbone"]) == BACKBONES[::-1]
    assert format_table(table).splitlines()[-1] == (
        f"Winner: {BACKBONES[1]} ({BACKBONES[1]}), by validation accuracy")


def test_a_run_without_validation_figures_gets_them_from_its_model(tiny_run, color_folder,
                                                                   tmp_path):
    """Runs trained before metrics.json had them: computed from the model and the val
    split; here as the run's own Keras model predicts its val images one by one."""
    val = tiny_run.splits.query("split == 'val'")
    predicted = tiny_run.predict(tiny_run.split_paths("val")).argmax(axis=1)
    expected = float(np.mean(predicted == [tiny_run.class_names.index(c)
                                           for c in val["class"]]))
    assert tiny_run.metrics["val_accuracy"] == pytest.approx(expected)  # as training
    out = tmp_path / "cmp"
    finished_as(tiny_run, out / BACKBONES[0], BACKBONES[0], val_accuracy=None,
                val_macro_f1=None)
    below = expected - 0.25  # the other run: worse on validation, not on test
    finished_as(tiny_run, out / BACKBONES[1], BACKBONES[1], val_accuracy=below,
                val_macro_f1=below, accuracy=1.0, macro_f1=1.0)
    table = compare(color_folder, BACKBONES, out, **OPTIONS)
    assert list(table["backbone"]) == BACKBONES
    assert table["val_accuracy"].iloc[0] == pytest.approx(expected)
