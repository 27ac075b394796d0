"""Trust: calibration, "not sure" and "not one of my classes" (transferkit.trust)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import keras
import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy.special import softmax
from sklearn.metrics import log_loss

from transferkit import layout
from transferkit.cli import build_parser, main
from transferkit.errors import ConfigError, RunError
from transferkit.features import feature_extractor
from transferkit.run import load_run
from transferkit.trust import abstain, calibration, unknown
from transferkit.trust.assess import unknown_separation
from transferkit.predictor import load_predictor
from transferkit.trust.fit import fit_trust
from transferkit.trust.graph import TrustGraph, outputs_from_features


# The math, on tiny synthetic arrays.

def test_ece_and_reliability_bins_match_a_hand_computed_example():
    # Confidences .95 (right), .95 (wrong), .55 (right), .70 (right); 15 bins of 1/15.
    p = np.array([[.95, .05], [.95, .05], [.45, .55], [.30, .70]])
    y = np.array([0, 1, 1, 1])
    bins = calibration.reliability_bins(p, y)
    full = bins[bins["count"] > 0]
    assert full.index.tolist() == [8, 10, 14]  # (8/15, 9/15], (10/15, 11/15], (14/15, 1]
    assert full["count"].tolist() == [1, 1, 2]
    np.testing.assert_allclose(full["confidence"], [.55, .70, .95])
    np.testing.assert_allclose(full["accuracy"], [1.0, 1.0, 0.5])
    # (1 * .45 + 1 * .30 + 2 * .45) / 4
    assert calibration.ece(p, y) == pytest.approx(0.4125)
    # A bin's upper edge is inclusive: confidence .5 lies in (.25, .5] with 4 bins.
    edge = calibration.reliability_bins(np.array([[.5, .5]]), np.array([0]), n_bins=4)
    assert edge["count"].tolist() == [0, 1, 0, 0]
    assert calibration.scores(p, y)["brier"] == pytest.approx(
        np.mean([.005, 1.805, .405, .18]))
    assert calibration.scores(p, y)["nll"] == pytest.approx(
        -np.mean(np.log([.95, .05, .55, .70])))


@pytest.mark.parametrize("true_t", [2.0, 0.5])  # over- and under-confident
def test_temperature_scaling_recovers_a_known_temperature(true_t):
    rng = np.random.default_rng(0)
    calibrated = rng.normal(0, 2.0, (6000, 5))
    cumulative = np.cumsum(softmax(calibrated, axis=1), axis=1)
    labels = (cumulative < rng.random((6000, 1))).sum(axis=1)
    reported = calibrated * true_t  # the model's logits are T times too large/small
    t = calibration.fit_temperature(reported, labels)
    assert t == pytest.approx(true_t, rel=0.05)
    before = log_loss(labels, softmax(reported, axis=1))
    after = log_loss(labels, softmax(reported / t, axis=1))
    assert after < before - 0.01
    assert calibration.ece(softmax(reported / t, axis=1), labels) < \
        calibration.ece(softmax(reported, axis=1), labels)
    # Every answer right: the NLL has no minimum (T -> 0); T stays 1.
    assert calibration.fit_temperature(np.eye(3)[[0, 1, 2]], np.array([0, 1, 2])) == 1.0


def test_the_threshold_meets_its_target_on_the_split_it_was_chosen_on():
    rng = np.random.default_rng(1)
    conf = np.round(rng.uniform(0.3, 1.0, 400), 2)  # ties: answers are taken whole
    correct = rng.random(400) < conf
    levels = np.unique(conf)
    for target in (0.8, 0.9, 0.95):
        t, met = abstain.choose_threshold(conf, correct, "target_precision", target)
        precision, coverage = abstain.selective(conf, correct, t)
        assert met and precision >= target
        lower = levels[levels < t]
        if lower.size:  # the most coverage: one step lower misses the target
            assert abstain.selective(conf, correct, lower[-1])[0] < target
    t, _ = abstain.choose_threshold(conf, correct, "target_coverage", 0.6)
    assert abstain.selective(conf, correct, t)[1] >= 0.6
    assert abstain.selective(conf, correct, levels[levels > t][0])[1] < 0.6
    # Unreachable precision: never answer, and say so.
    t, met = abstain.choose_threshold(conf, np.zeros(400, bool), "target_precision", 0.9)
    assert not met and abstain.selective(conf, np.zeros(400, bool), t)[1] == 0.0
    curve = abstain.risk_coverage(conf, correct)
    assert curve["coverage"].iloc[-1] == 1.0 and curve["threshold"].is_monotonic_decreasing
    with pytest.raises(ConfigError, match="not both"):
        abstain.check_target(0.9, 0.5)


@pytest.mark.parametrize("kind", ["mahalanobis_normalized", "mahalanobis"])
def test_unknown_threshold_holds_its_false_rejection_on_another_split(kind):
    rng = np.random.default_rng(2)
    centers = rng.normal(0, 3, (3, 16)) + 10  # positive, like pooled ReLU features

    def known(n):
        labels = rng.integers(0, 3, n)
        return centers[labels] + rng.normal(0, 1, (n, 16)), labels

    (x_train, y_train), (x_val, _), (x_test, _) = known(3000), known(3000), known(3000)
    x_other = rng.normal(0, 3, (500, 16)) + 10  # another family, same range
    constants = unknown.fit_constants(kind, x_train, y_train, 3)
    no_logits = np.zeros((1, 3))

    def score(x):
        return unknown.unknown_score(kind, constants, x, no_logits)

    threshold = unknown.threshold_at(score(x_val), 0.05)
    assert abs(np.mean(score(x_test) > threshold) - 0.05) <= 0.03
    assert unknown_separation(score(x_test), score(x_other))["auroc"] > 0.9


def test_separation_metrics_on_a_known_case():
    m = unknown_separation(np.array([0., 1, 2, 3]), np.array([2.5, 4, 5]))
    assert m["auroc"] == pytest.approx(11 / 12)  # 11 of 12 pairs ordered right
    assert m["fpr_at_95_tpr"] == pytest.approx(1 / 3)  # all knowns kept: 2.5 passes too


# On a real (tiny) run.

def _shapes(root, n=12, size=96, seed=0):
    """Drawn shapes on white, in nested folders: no class of the colour run."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        image = Image.new("RGB", (size, size), "white")
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x, y = rng.integers(0, size - 30, 2)
            box = [int(x), int(y), int(x) + 28, int(y) + 28]
            (draw.ellipse if rng.random() < .5 else draw.rectangle)(box, outline="black",
                                                                    width=3)
        folder = root / ("circles" if i % 2 else "mixed/deeper")
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"shape_{i}.png")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def trusted(tiny_run, tmp_path_factory):
    """A copy of the session's tiny run (training calibrated it)."""
    copy = tmp_path_factory.mktemp("trust") / "run"
    shutil.copytree(tiny_run.path, copy)
    return load_run(copy)


def test_training_calibrates_and_the_folded_model_is_softmax_of_logits_over_t(trusted):
    params = trusted.trust
    metrics = trusted.metrics
    assert metrics["calibration"]["temperature"] == pytest.approx(params.temperature)
    for key in ("ece_before", "ece_after", "nll_before", "nll_after", "brier_after"):
        assert key in metrics["calibration"]
    assert metrics["calibration"]["nll_after"] <= metrics["calibration"]["nll_before"]
    assert set(metrics["abstain"]) >= {"threshold", "target_precision", "test_precision",
                                       "test_coverage"}
    for name in (layout.CALIBRATION_CSV, layout.CALIBRATION_PNG,
                 layout.RISK_COVERAGE_CSV, layout.RISK_COVERAGE_PNG):
        assert (trusted.path / name).stat().st_size > 0
    pixels = trusted.preprocess(trusted.split_paths("test"))
    features = feature_extractor(trusted.model).predict_on_batch(pixels)
    raw = features @ params.raw_head["kernel"] + params.raw_head["bias"]
    np.testing.assert_allclose(trusted.model.predict_on_batch(pixels),
                               softmax(raw / params.temperature, axis=1), atol=1e-5)
    assert trusted.model.output_shape == (None, len(trusted.class_names))  # one output
    # The tiny run's validation answers may all be right (T = 1): fold a known T too.
    model = keras.models.clone_model(trusted.model)
    model.set_weights(trusted.model.get_weights())
    model.get_layer("predictions").set_weights([params.raw_head["kernel"],
                                                params.raw_head["bias"]])
    calibration.fold_temperature(model, 1.7)
    np.testing.assert_allclose(model.predict_on_batch(pixels),
                               softmax(raw / 1.7, axis=1), atol=1e-5)


def test_trust_graph_equals_the_numpy_path_for_every_score(trusted):
    pixels = trusted.preprocess(trusted.split_paths("test") + trusted.split_paths("val"))
    features = feature_extractor(trusted.model).predict_on_batch(pixels)
    _, stored = trusted.features("final")
    splits = trusted.splits
    train = (splits["split"] == "train").to_numpy()
    y = [trusted.class_names.index(c) for c in splits["class"][train]]
    for kind in unknown.KINDS:
        constants = unknown.fit_constants(kind, stored[train], np.array(y), 3)
        params = dataclasses.replace(trusted.trust, unknown_kind=kind,
                                     unknown_constants=constants)
        ours = outputs_from_features(params, features, trusted.model)
        # The threshold at the median score, so that both flags take both values.
        params.unknown_threshold = float(np.median(ours["unknown_score"]))
        params.abstain_threshold = float(np.median(ours["probabilities"].max(axis=1)))
        ours = outputs_from_features(params, features, trusted.model)
        graph = TrustGraph(trusted.model, params)(pixels)
        np.testing.assert_allclose(graph["probabilities"], ours["probabilities"],
                                   atol=1e-5)
        np.testing.assert_allclose(graph["unknown_score"], ours["unknown_score"],
                                   rtol=1e-5, atol=1e-5)
        close = np.isclose(ours["unknown_score"], params.unknown_threshold, rtol=1e-5)
        assert (graph["is_unknown"] == ours["is_unknown"])[~close].all()
        assert (graph["abstained"] == ours["abstained"]).all()
        assert ours["is_unknown"].any() and not ours["is_unknown"].all()


def test_drawn_shapes_are_flagged_not_one_of_the_classes(trusted, color_folder, tmp_path,
                                                         capsys):
    shapes = _shapes(tmp_path / "shapes")
    assert main(["evaluate", str(trusted.path), "--data", str(color_folder),
                 "--unknown", str(shapes), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["n_unknown"] == 12  # recursive, notes.txt skipped
    assert m["auroc"] > 0.9 and m["n_flagged_unknown"] >= 9
    assert set(m["auroc_by_score"]) == set(unknown.KINDS)
    # The known images' numbers, from the run's own answers (ECE: the hand-computed test).
    images = sorted(color_folder.glob("*/*.png"))
    known, answers = trusted.assess(images)
    y = np.array([trusted.class_names.index(f.parent.name) for f in images])
    answered = ~np.array([a["abstained"] for a in answers])
    assert m["ece"] == pytest.approx(calibration.ece(known, y), abs=1e-6)
    assert m["coverage"] == answered.mean()
    assert m["selective_accuracy"] == pytest.approx((known.argmax(1) == y)[answered].mean())
    probabilities, fields = trusted.assess(sorted(shapes.rglob("*.png")))
    assert [f["unknown"] for f in fields].count(True) == m["n_flagged_unknown"]
    assert probabilities.shape == (12, 3)
    assert main(["predict", str(trusted.path), *map(str, sorted(shapes.rglob("*.png"))),
                 "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [{k: r[k] for k in ("abstained", "unknown")} for r in records] == [
        {"abstained": f["abstained"], "unknown": f["unknown"]} for f in fields]
    assert [r["unknown_score"] for r in records] == pytest.approx(
        [f["unknown_score"] for f in fields], rel=1e-5)
    # Without --json each line says it in words, as the demo does.
    files = sorted(shapes.rglob("*.png"))
    assert main(["predict", str(trusted.path), *map(str, files)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.startswith(f"{path}: not one of my classes; ") for path, line in
            zip(files, lines)] == [f["unknown"] for f in fields]
    assert [": not sure; " in line for line in lines] == [
        f["abstained"] and not f["unknown"] for f in fields]


def test_old_runs_without_trust_load_predict_and_calibrate(trusted, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(trusted.path, old)
    for name in (layout.TRUST_FILE, layout.TRUST_ARRAYS):
        (old / name).unlink()
    run = load_run(old)
    assert run.trust is None and run.trust_graph() is None
    files = run.split_paths("test")
    probabilities, fields = run.assess(files)
    assert fields is None  # nothing claimed
    np.testing.assert_array_equal(probabilities, run.predict(files))
    records = load_predictor(old).predict_files(files[:2])
    assert [sorted(r) for r in records] == [["path", "top_k"]] * 2
    assert "coverage" not in run.evaluate(trusted.data_folder)
    with pytest.raises(RunError, match="calibrate"):
        run.evaluate(trusted.data_folder, unknown=trusted.data_folder)
    # `calibrate` on it; twice gives the same answer (it starts from the raw head).
    assert main(["calibrate", str(old), "--target-coverage", "0.5", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    kernel = load_run(old).model.get_layer("predictions").get_weights()[0]
    assert main(["calibrate", str(old), "--target-coverage", "0.5", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["calibration"]["temperature"] == pytest.approx(
        first["calibration"]["temperature"], rel=1e-9)
    np.testing.assert_allclose(load_run(old).model.get_layer("predictions")
                               .get_weights()[0], kernel, rtol=1e-6)
    assert again["abstain"]["target_coverage"] == 0.5
    assert load_run(old).trust.abstain_rule == "target_coverage"


def test_cli_options():
    args = build_parser().parse_args(["train", "d", "--out", "o", "--no-calibrate"])
    assert args.calibrate is False
    assert build_parser().parse_args(["train", "d", "--out", "o"]).calibrate is True
    with pytest.raises(SystemExit):
        build_parser().parse_args(["calibrate", "r", "--target-precision", "0.9",
                                   "--target-coverage", "0.5"])
