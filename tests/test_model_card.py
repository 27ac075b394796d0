"""MODEL_CARD.md: Hugging Face's format, its figures the run's own, in every export;
package versions in config.json and `transferkit --version`."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from importlib import metadata

import numpy as np
import pytest
import yaml

from transferkit import layout
from transferkit.cli import build_parser, main
from transferkit.config import TrainConfig
from transferkit.report.model_card import (API_ONLY, NOT_IN_COMMAND, accuracy,
                                           bootstrap_interval, macro_f1, reproduce_command)


def _card(path):
    text = path.read_text(encoding="utf-8")
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def test_the_run_card_is_hugging_face_format_and_its_figures_are_the_runs(tiny_run):
    front, body = _card(tiny_run.path / layout.MODEL_CARD_FILE)  # written by training
    metrics = json.loads((tiny_run.path / layout.METRICS_FILE).read_text())
    trust = json.loads((tiny_run.path / layout.TRUST_FILE).read_text())
    assert front["library_name"] == "keras" and front["license"] == "unknown"
    assert front["pipeline_tag"] == "image-classification"
    assert "mobilenet_v2_0.35" in front["tags"]
    results = {m["type"]: m["value"] for m in
               front["model-index"][0]["results"][0]["metrics"]}
    assert results == {"accuracy": round(metrics["accuracy"], 4),
                       "f1": round(metrics["macro_f1"], 4)}
    for name in tiny_run.class_names:
        assert re.search(rf"^\d+\. {name}$", body, re.M)
    assert f"at least\n  {trust['abstain_threshold']:.3f}" in body
    assert f"answers {100 * metrics['abstain']['test_coverage']:.1f}% of the images" in body
    assert f"{100 * metrics['unknown']['test_false_rejection']:.1f}% of the known test" in body
    assert f"**{metrics['calibration']['ece_after']:.4f}** after" in body
    n_test = metrics["n_test"]
    assert f"On the {n_test} images of the test split" in body
    assert "| tensorflow | " in body and f"| keras | {metadata.version('keras')} |" in body


def test_config_json_records_the_package_versions_and_version_prints_them(tiny_run, capsys):
    saved = json.loads((tiny_run.path / layout.CONFIG_FILE).read_text())["packages"]
    assert saved["keras"] == metadata.version("keras")
    assert saved["numpy"] == metadata.version("numpy")
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"transferkit {metadata.version('transferkit')}" in lines
    assert f"keras {metadata.version('keras')}" in lines


def test_every_export_folder_carries_the_card(tiny_run, tmp_path):
    from transferkit.export import export_run

    export_run(tiny_run.path, out=tmp_path / "exp", formats=("keras",), verbose=0)
    # Seeded bootstrap: the export's card is the run's, word for word.
    assert (tmp_path / "exp" / layout.MODEL_CARD_FILE).read_text() == \
        (tiny_run.path / layout.MODEL_CARD_FILE).read_text()


def test_bootstrap_intervals_known_answers():
    right = np.zeros(50, int)
    assert bootstrap_interval(accuracy, right, right, seed=0) == (1, 1)
    # Half right: the interval is about 0.5 ± 1.96 * sqrt(0.25 / 400) = 0.5 ± 0.049.
    y_true, y_pred = np.zeros(400, int), np.tile([0, 1], 200)
    low, high = bootstrap_interval(accuracy, y_true, y_pred, seed=3)
    assert 0.44 < low < 0.46 and 0.54 < high < 0.56
    assert (low, high) == bootstrap_interval(accuracy, y_true, y_pred, seed=3)


def test_macro_f1_is_scikit_learns_on_each_resample_at_once():
    from sklearn.metrics import f1_score

    # By hand: class 0 tp 1, fn 1 → 2/3; class 1 tp 1, fp 2 → 1/2; class 2 in neither
    # (left out); class 3 true once, never predicted → 0.
    assert macro_f1(np.array([0, 0, 1, 3]), np.array([0, 1, 1, 1])) == \
        pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 6, (4, 3, 40)), rng.integers(0, 6, (4, 3, 40))
    values = macro_f1(y_true, y_pred)
    assert values.shape == (4, 3)
    for index in np.ndindex(4, 3):
        present = sorted(set(y_true[index]) | set(y_pred[index]))
        assert values[index] == pytest.approx(f1_score(
            y_true[index], y_pred[index], labels=present, average="macro"))


def test_the_reproduce_command_parses_back_to_the_same_options(tmp_path):
    config = dataclasses.replace(
        TrainConfig(data=str(tmp_path / "my data")), seed=7, calibrate=False,
        image_size=128, backbones=["mobilenet_v2_0.35", "mobilenet_0.25"], ensemble=2,
        time_limit=300.0, exclude_flagged=True, batch_size=16, mixed_precision="off")
    words = shlex.split(reproduce_command(config, str(tmp_path / "run")))
    assert words[:2] == ["transferkit", "train"]
    args = build_parser().parse_args(words[1:])
    assert args.data == config.data and args.out == str(tmp_path / "run")
    for field in dataclasses.fields(TrainConfig):
        if field.name not in NOT_IN_COMMAND + API_ONLY + ("time_limit",):
            assert getattr(args, field.name) == getattr(config, field.name), field.name
    assert args.time_limit == "300s"
    # API_ONLY is exactly what the command line lacks.
    assert {f.name for f in dataclasses.fields(TrainConfig)} - set(vars(args)) - \
        set(NOT_IN_COMMAND) == set(API_ONLY)
    python = reproduce_command(dataclasses.replace(config, dropout=0.3), "run")
    assert python.startswith("import transferkit\ntransferkit.train(") and \
        "dropout=0.3" in python
