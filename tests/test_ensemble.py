"""Ensembles (one Keras model averaging its members) and `transferkit compare`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from transferkit import layout


@pytest.fixture(scope="module")
def pair():
    """Two random-weight 3-class MobileNet-0.25 at 32 px and their ensemble (no
    training; the smallest graph: saving and loading are quick)."""
    import keras

    from transferkit.backbones import get_backbone
    from transferkit.ensemble import build_ensemble
    from transferkit.model import build_classifier

    backbone = get_backbone("mobilenet_0.25")
    keras.utils.set_random_seed(1)
    a = build_classifier(backbone, 3, 32, weights=None)
    keras.utils.set_random_seed(2)
    b = build_classifier(backbone, 3, 32, weights=None)
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    return a, b, build_ensemble([a, b]), images


@pytest.fixture(scope="module")
def compared(tmp_path_factory, tiny_run, color_folder):
    """`compare` of two backbones: MobileNetV2-0.35 (tiny_run, reused as a finished
    run) and MobileNet-0.25 (trained here, on tiny_run's split)."""
    from transferkit.compare import compare

    out = tmp_path_factory.mktemp("compare")
    shutil.copytree(tiny_run.path, out / "mobilenet_v2_0.35")
    table = compare(color_folder, ["mobilenet_v2_0.35", "mobilenet_0.25"], out,
                    latency_calls=3, image_size=96, strategy="feature-extract",
                    augment_copies=1, quiet=True)  # tiny_run's options
    return out, table


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory, compared, color_folder):
    """`train(..., backbones=[a, b])` of the two compared backbones; each member's
    training is the compared run, copied in (`train_one` records what it was asked)."""
    from transferkit.ensemble.train import train_ensemble
    from transferkit.run import load_run

    out, _ = compared
    asked = []

    def train_one(data, path, **options):
        asked.append(options)
        shutil.copytree(out / options["backbone"], path)
        return load_run(path)

    run = train_ensemble(color_folder, tmp_path_factory.mktemp("ens") / "run",
                         train_one=train_one, image_size=96, quiet=True,
                         backbones=["mobilenet_v2_0.35", "mobilenet_0.25"])
    return run, asked


def test_ensemble_is_the_mean_of_its_members_and_survives_save(pair, tmp_path):
    from transferkit.ensemble import member_model
    from transferkit.model import is_transferkit_classifier, members
    from transferkit.run import load_model

    a, b, ensemble, x = pair
    expected = (a.predict_on_batch(x) + b.predict_on_batch(x)) / 2
    np.testing.assert_allclose(ensemble.predict_on_batch(x), expected, atol=1e-6)
    assert members(ensemble) == ["m1_", "m2_"] and members(a) == []
    names = {layer.name for layer in ensemble.layers}
    assert {"m1_preprocess", "m2_head_pool", "m2_predictions", "ensemble_mean"} <= names
    ensemble.save(tmp_path / "model.keras")
    loaded = load_model(tmp_path / "model.keras")  # safe_mode: built-in layers only
    np.testing.assert_allclose(loaded.predict_on_batch(x), expected, atol=1e-6)
    second = member_model(loaded, 1)  # the usual names, member 2's weights
    assert is_transferkit_classifier(second)
    np.testing.assert_allclose(second.predict_on_batch(x), b.predict_on_batch(x),
                               atol=1e-6)


def test_gradcam_of_an_ensemble_is_the_mean_of_its_members_maps(pair):
    from transferkit.ensemble import member_model
    from transferkit.ensemble.members import explainers
    from transferkit.explain import GradCAM
    from transferkit.explain.base import normalize

    _, _, ensemble, x = pair
    classes = ensemble.predict_on_batch(x).argmax(axis=1)
    maps = explainers(ensemble, ["gradcam"])["gradcam"](x, classes)
    parts = [GradCAM(member_model(ensemble, i))(x, classes) for i in (0, 1)]
    np.testing.assert_allclose(maps, normalize(np.mean(parts, axis=0)), atol=1e-5)
    one = explainers(ensemble, ["gradcam"], member=1)["gradcam"](x, classes)
    np.testing.assert_allclose(one, parts[1], atol=1e-5)


def test_compare_writes_one_row_per_backbone_and_a_winner(compared):
    from transferkit.compare import format_table

    out, table = compared
    assert sorted(table["backbone"]) == ["mobilenet_0.25", "mobilenet_v2_0.35"]
    assert list(table["val_accuracy"]) == sorted(table["val_accuracy"], reverse=True)
    saved = __import__("pandas").read_csv(out / layout.LEADERBOARD_FILE)
    assert list(saved["backbone"]) == list(table["backbone"])
    # Each row is its run's: metrics from metrics.json, size of its model file in MB.
    for row in saved.itertuples():
        metrics = json.loads((out / row.run / layout.METRICS_FILE).read_text())
        assert (row.test_accuracy, row.test_macro_f1) == pytest.approx(
            (metrics["accuracy"], metrics["macro_f1"]))
        model_bytes = (out / row.run / layout.MODEL_FILE).stat().st_size
        assert row.size_mb == pytest.approx(model_bytes / 1e6, abs=0.005)
    assert (saved["latency_ms"] > 0).all()  # a median of timings: no known value
    winner = json.loads((out / layout.WINNER_FILE).read_text())
    assert winner["backbone"] == table.iloc[0]["backbone"]
    assert (out / winner["run"] / layout.MODEL_FILE).is_file()
    # Same split: the second backbone reused the first one's.
    first, second = ((out / b / layout.SPLITS_FILE).read_text()
                     for b in ("mobilenet_v2_0.35", "mobilenet_0.25"))
    assert first == second
    assert f"Winner: {winner['backbone']}" in format_table(table)


def test_compare_refuses_to_rank_runs_trained_otherwise(compared, color_folder):
    from transferkit.compare import compare
    from transferkit.errors import ConfigError

    out, _ = compared
    with pytest.raises(ConfigError, match=r"mobilenet_v2_0.35 was trained with other "
                                          r"options \(head_epochs\); pass --overwrite"):
        compare(color_folder, ["mobilenet_v2_0.35", "mobilenet_0.25"], out,
                image_size=96, strategy="feature-extract", augment_copies=1,
                head_epochs=2, quiet=True)


def test_ensemble_trains_its_members_on_one_split(ensemble_run):
    run, asked = ensemble_run
    assert [a["backbone"] for a in asked] == ["mobilenet_v2_0.35", "mobilenet_0.25"]
    assert asked[0]["splits_file"] is None and asked[1]["splits_file"] == str(
        (run.path / layout.MEMBERS_DIR / "m1" / layout.SPLITS_FILE).resolve())
    assert [a["seed"] for a in asked] == [42, 43] and asked[1]["image_size"] == 96
    assert run.config.ensemble == 2 and run.config.backbones == [a["backbone"]
                                                                  for a in asked]
    assert (run.path / layout.SPLITS_FILE).read_text() == (
        run.path / layout.MEMBERS_DIR / "m1" / layout.SPLITS_FILE).read_text()
    assert run.file(layout.REPORT_FILE) is not None


def test_ensemble_run_is_calibrated_on_its_average(ensemble_run):
    from transferkit.ensemble import member_model
    from transferkit.ensemble.trust import EnsembleHead
    from scipy.special import softmax

    run, _ = ensemble_run
    trust = run.trust
    t = trust.temperature
    images = run.preprocess(run.test_samples(6))
    # The model's output: the mean over members of softmax(raw logits / T).
    raw = []
    for i, p in enumerate(("m1_", "m2_")):
        member = member_model(run.model, i)
        pooled = __import__("keras").Model(member.inputs,
                                           member.get_layer("head_pool").output)
        f = np.asarray(pooled.predict_on_batch(images))
        raw.append(f @ trust.raw_head[f"{p}kernel"] + trust.raw_head[f"{p}bias"])
    expected = np.mean([softmax(z / t, axis=1) for z in raw], axis=0)
    np.testing.assert_allclose(run.model.predict_on_batch(images), expected, atol=1e-5)
    # T minimizes the NLL of the averaged probabilities on the validation split.
    from transferkit.trust.fit import split_arrays

    val = split_arrays(run)["val"]
    head = EnsembleHead(run.model, trust.raw_head)
    logits = head.logits(val["features"])

    def nll(temperature):
        p = head.probabilities(logits, temperature)
        return -np.mean(np.log(p[np.arange(len(p)), val["labels"]]))

    from transferkit.trust.calibration import TEMPERATURE_RANGE

    low = TEMPERATURE_RANGE[0]
    if t != 1.0:  # 1.0: no minimum (all validation answers right)
        # At the range's floor (answers all right, so sharper is always better) only
        # the side inside the range is a competitor.
        assert nll(t) <= (nll(t * 1.2) if t <= low * 1.001 else
                          min(nll(t * 1.2), nll(t / 1.2)))
    _, fields = run.assess(run.test_samples(3))  # "not sure" / unknown still answer
    assert set(fields[0]) == {"abstained", "unknown", "unknown_score"}
    described = json.loads((run.path / layout.ENSEMBLE_FILE).read_text())
    assert [m["backbone"] for m in described["members"]] == ["mobilenet_v2_0.35",
                                                             "mobilenet_0.25"]
    assert run.metrics["strategy"] == "ensemble" and "calibration" in run.metrics


def test_inspect_reads_a_member_run(ensemble_run):
    from transferkit.ensemble.members import inspected_run
    from transferkit.errors import ConfigError

    run, _ = ensemble_run
    second = inspected_run(run, 1)  # the member's own run directory
    assert second.path == run.path / layout.MEMBERS_DIR / "m2"
    assert second.config.backbone == "mobilenet_0.25"
    with pytest.raises(ConfigError, match="has 2 members"):
        inspected_run(run, 2)


def test_ensemble_run_exports_with_parity(ensemble_run, tmp_path):
    from transferkit.export import export_run

    report = export_run(ensemble_run[0].path, out=tmp_path / "export",
                        formats=("savedmodel", "tflite"), n_parity=4, verbose=0)
    assert report["checked"] is True
    assert (tmp_path / "export" / layout.TFLITE_FILE).is_file()


def test_member_options_share_the_split_and_the_budget():
    from transferkit.config import TrainConfig
    from transferkit.ensemble.train import RESERVE_SHARE, member_options

    config = TrainConfig(data="photos", ensemble=3, seed=5, time_limit=300)
    first = member_options(config, 0, None, None)
    third = member_options(config, 2, 128, "RUN/members/m1/splits.csv")
    assert (first["seed"], third["seed"]) == (5, 7)
    assert first["split_seed"] == third["split_seed"] == 5
    assert third["splits_file"] == "RUN/members/m1/splits.csv"
    assert third["image_size"] == 128 and third["ensemble"] == 1
    assert third["extra_members"] is False  # a budget's time left buys no member's members
    assert third["time_limit"] == pytest.approx(300 * (1 - RESERVE_SHARE) / 3)
    mixed = TrainConfig(backbones=["mobilenet_v2_0.35", "mobilenet_0.25"]).resolved()
    assert mixed.ensemble == 2  # --backbones alone sets the number of members
    assert member_options(mixed, 1, 96, None)["backbone"] == "mobilenet_0.25"


def test_bad_ensemble_options_say_one_line(capsys, color_folder, tmp_path):
    from transferkit.cli import main

    assert main(["train", str(color_folder), "--out", str(tmp_path / "a"),
                 "--ensemble", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ensemble must be at least 1" in err[0]
    assert main(["compare", str(color_folder), "--out", str(tmp_path / "b"),
                 "--backbones", "mobilenet_v2_0.35,resnet9000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown backbone 'resnet9000'" in err[0]
    assert main(["train", str(color_folder), "--out", str(tmp_path / "c"),
                 "--backbones", "mobilenet_v2_0.35,mobilenet_0.25", "--ensemble", "3"]) == 2
    assert "one backbone per member" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # compare's --time-limit is parsed as train's is (transferkit.budget.parse).
    assert main(["compare", str(color_folder), "--out", str(tmp_path / "d"),
                 "--backbones", "mobilenet_v2_0.35", "--time-limit", "20"]) == 2
    assert "--time-limit '20' is not a duration" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
