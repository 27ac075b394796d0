"""Inside the network: every view against a known answer (tiny models, tiny images)."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from transferkit.errors import ConfigError
from transferkit.inspect import (
    calculator, case_studies, conv_output, dream, feature_maps, geometries, invariance,
    layer_table, max_pool, shifted_feature_error, top_patches, toy_networks)
from transferkit.inspect.base import activations, model_images
from transferkit.inspect.filters import filter_kernels, maximizing_image, render_filter

L = keras.layers


@pytest.fixture(scope="module")
def mobilenet():
    """MobileNetV2-0.35 classifier, random weights, 96 px (shapes hold for any weights)."""
    from transferkit.backbones import get_backbone
    from transferkit.model import build_classifier

    keras.utils.set_random_seed(0)
    return build_classifier(get_backbone("mobilenet_v2_0.35"), 3, 96, weights=None)


# 1. Convolution arithmetic.

def test_the_lectures_arithmetic():
    first = calculator(32, 5, 0, 1, filters=20, in_channels=3)
    assert first["output_shape"] == [28, 28, 20] and first["params"] == 1520
    alex = calculator(227, 11, 0, 4, filters=96, in_channels=3)
    assert alex["output_shape"] == [55, 55, 96]
    pool = calculator(55, 3, 0, 2, in_channels=96, pool=True)
    assert pool["output_shape"] == [27, 27, 96] and pool["params"] == 0
    assert calculator(13, 1, 0, 1, filters=64, in_channels=256)["output_shape"][:2] == [13, 13]
    # Keras "same" with stride 2 pads unevenly: nothing before, one pixel after.
    assert conv_output(96, 3, 2, "same") == (48, (0, 1))
    assert conv_output(97, 3, 2, "same") == (49, (1, 1))
    with pytest.raises(ConfigError, match="does not fit"):
        conv_output(3, 5, 1, "valid")


def test_every_layers_shape_and_params_match_keras(mobilenet):
    from transferkit.inspect.case_studies import alexnet_convs, lenet5

    for model in (mobilenet, alexnet_convs(), lenet5()):
        table = layer_table(model)
        assert len(table) == len(model.layers) - 1  # the input layer has no row
        for row in table:
            layer = model.get_layer(row["name"])
            assert row["output_shape"] == list(layer.output.shape[1:])
            assert row["params"] == layer.count_params()
            if row["type"] in ("Conv2D", "DepthwiseConv2D", "Dense", "BatchNormalization"):
                assert row["params_formula"] == row["params"], row
            if row["kernel"] is not None:  # out = floor((n + p_b + p_a - k) / s) + 1
                for axis, pads in ((0, row["padding"][:2]), (1, row["padding"][2:])):
                    n, k, s = row["input_shape"][axis], row["kernel"][axis], row["stride"][axis]
                    assert (n + sum(pads) - k) // s + 1 == row["output_shape"][axis], row
    rows = {r["name"]: r for r in layer_table(mobilenet)}
    assert rows["Conv1"]["padding"] == [0, 1, 0, 1] and rows["Conv1"]["strided"]
    assert rows["block_1_pad"]["padding"] == [0, 1, 0, 1]
    assert rows["block_1_expand"]["depth_only"] and not rows["block_1_depthwise"]["depth_only"]
    assert rows["out_relu"]["jump"] == [32, 32]


def test_receptive_field_box_is_the_input_gradients_support():
    """Positive weights and linear units: a unit's input gradient is nonzero exactly on
    its receptive field (no cancellation), through padding, strides and a merge."""
    x = inputs = keras.Input((23, 21, 3))
    x = L.Conv2D(2, 3, name="a")(x)
    x = L.Conv2D(2, 3, strides=2, padding="same", name="b")(x)
    x = L.ZeroPadding2D(((1, 0), (0, 1)), name="pad")(x)
    wide = L.Conv2D(2, 3, padding="same", name="wide")(x)
    x = L.Add(name="merge")([L.Conv2D(2, 1, name="narrow")(x), wide])
    x = L.Conv2D(2, (3, 2), strides=2, name="c")(x)
    model = keras.Model(inputs, x)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([rng.uniform(0.1, 1.0, w.shape) for w in layer.get_weights()])
    geometry = geometries(model)["c"]
    h, w = model.output.shape[1:3]
    image = tf.constant(rng.uniform(0, 1, (1, 23, 21, 3)).astype(np.float32))
    for y, x in [(0, 0), (h - 1, w - 1), (h // 2, w // 2), (0, w - 1)]:
        with tf.GradientTape() as tape:
            tape.watch(image)
            unit = model(image)[0, y, x, 0]
        support = np.nonzero(np.abs(tape.gradient(unit, image).numpy()[0]).sum(-1))
        box = (support[0].min(), support[1].min(), support[0].max() + 1, support[1].max() + 1)
        assert geometry.box(y, x, 23, 21) == box, (y, x)


# 2-4. Pooling, feature maps, filters.

def test_max_pool_equals_numpy_and_keras():
    fmap = np.random.default_rng(1).standard_normal((8, 6)).astype(np.float32)
    pooled, winners = max_pool(fmap, 2)
    np.testing.assert_array_equal(pooled, fmap.reshape(4, 2, 3, 2).max(axis=(1, 3)))
    assert winners.sum() == pooled.size
    np.testing.assert_array_equal(np.sort(fmap[winners]), np.sort(pooled.ravel()))
    overlapping, _ = max_pool(fmap, 3, 2)
    keras_pool = L.MaxPooling2D(3, 2)(fmap[None, :, :, None])
    np.testing.assert_allclose(overlapping, np.asarray(keras_pool)[0, :, :, 0])


def test_an_edge_kernel_responds_only_at_the_edge_of_a_step():
    inputs = keras.Input((16, 16, 3))
    edge = L.Conv2D(1, (1, 3), use_bias=False, name="edge")
    model = keras.Model(inputs, edge(inputs))
    edge.set_weights([np.array([-1.0, 0.0, 1.0]).reshape(1, 3, 1, 1).repeat(3, 2) / 255])
    step = np.zeros((16, 16, 3), np.uint8)
    step[:, 8:] = 255
    response = feature_maps(model, step, ["edge"])["edge"][..., 0]
    columns = set(np.nonzero(np.abs(response) > 1e-6)[1])
    assert columns == {6, 7}  # the only windows (j, j+1, j+2) that straddle column 7|8
    np.testing.assert_allclose(response[:, 6:8], 3.0, rtol=1e-5)


def test_a_ramp_kernel_renders_as_a_ramp_and_bn_folds_in():
    ramp = np.zeros((3, 3, 3), np.float32)
    ramp[:, :, :] = np.array([-1.0, 0.0, 1.0])[None, :, None]
    tile = render_filter(ramp)
    assert (tile[:, 0] == 0).all() and (tile[:, 1] == 128).all() and (tile[:, 2] == 255).all()
    assert (maximizing_image(ramp)[:, 2] == 255).all() and (maximizing_image(ramp)[:, :2] == 0).all()
    inputs = keras.Input((8, 8, 3))
    conv = L.Conv2D(2, 3, use_bias=False)
    bn = L.BatchNormalization(epsilon=0.0)
    model = keras.Model(inputs, bn(conv(inputs)))
    conv.set_weights([np.stack([ramp, -ramp], axis=-1)])
    bn.set_weights([np.array([2.0, 1.0]), np.zeros(2), np.zeros(2), np.array([1.0, 4.0])])
    np.testing.assert_allclose(filter_kernels(model)[0], ramp)
    folded = filter_kernels(model, fold_batchnorm=True)
    np.testing.assert_allclose(folded[0], 2.0 * ramp)
    np.testing.assert_allclose(folded[1], -0.5 * ramp)


# 5. Maximally activating patches.

def test_top_patches_are_recorded_right_and_beat_random_positions(tiny_run):
    layer = "block_5_add"
    found = top_patches(tiny_run, layer, "0-3", n_top=3)
    model = tiny_run.model
    for record in found["channels"]:
        assert len({t["image"] for t in record["top"]}) == 3  # one patch per image
        assert record["top_mean"] > record["random_p95"]
        for t in record["top"]:
            fmap = activations(model, model_images(model, [t["path"]]), [layer])[0][0]
            assert fmap[t["y"], t["x"], record["channel"]] == pytest.approx(t["value"],
                                                                           rel=1e-4, abs=1e-5)
            top, left, bottom, right = t["box"]
            assert 0 <= top < bottom <= 96 and 0 <= left < right <= 96


# 6. Activation maximization.

def small_classifier(side: int = 32) -> keras.Model:
    """A random-weight CNN with the classifier's contract (raw pixels in, softmax out):
    fast to trace, so every objective can be tested."""
    keras.utils.set_random_seed(4)
    x = inputs = keras.Input((side, side, 3), name="image")
    x = L.Rescaling(1 / 127.5, -1.0, name="preprocess")(x)
    x = L.Conv2D(8, 3, strides=2, padding="same", name="conv1")(x)
    x = L.ReLU(6.0, name="relu1")(L.BatchNormalization(name="bn1")(x))
    x = L.Conv2D(16, 3, strides=2, padding="same", name="conv2")(x)
    x = L.ReLU(6.0, name="relu2")(L.BatchNormalization(name="bn2")(x))
    x = L.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, L.Dense(3, activation="softmax", name="predictions")(x))
    for name in ("bn1", "bn2"):  # as if trained: units that respond to their input
        bn = model.get_layer(name)
        gamma, beta, mean, variance = bn.get_weights()
        bn.set_weights([gamma, beta, mean, variance * 0.02])
    dense = model.get_layer("predictions")
    dense.set_weights([dense.get_weights()[0] * 10, dense.get_weights()[1]])
    return model


def test_dream_beats_random_starts_for_each_objective():
    model = small_classifier()
    for kwargs in [{"objective": "neuron", "layer": "relu2", "channel": 5},
                   {"objective": "channel", "layer": "relu2", "channel": 3},
                   {"objective": "layer", "layer": "bn1"},
                   {"objective": "logit", "class_name": 1},
                   {"objective": "probability", "class_name": 2}]:
        r = dream(model, steps=24, **kwargs)
        assert r["end"] > r["random_mean"] + 3 * r["random_std"], (kwargs, r)
        if r["start"] > 0:
            assert r["end"] >= 2 * r["start"], (kwargs, r)
        assert r["image"].dtype == np.uint8 and r["image"].shape == (32, 32, 3)
    assert r["end"] >= 0.9 and r["target"] == "class_2"
    # ReLU6 passes no gradient saturated: objectives use the BatchNorm output before it.
    assert dream(model, "channel", "relu2", 3, steps=1, random_starts=0)["layer"] == "bn2"


def test_dream_on_the_real_model_reaches_its_class_and_deepdream_keeps_the_size(tiny_run):
    r = dream(tiny_run, "probability", class_name="blue", steps=12)
    # It reaches its class: blue becomes the top class of 3 (over one half).
    assert r["end"] > 0.5 and r["target"] == "blue" and r["end"] > r["start"]
    photo = np.random.default_rng(0).integers(0, 256, (72, 104, 3), dtype=np.uint8)
    r = dream(tiny_run, "layer", layer="block_3_expand_relu", photo=photo, steps=3,
              random_starts=0)
    assert r["image"].shape == (72, 104, 3) and r["size"] == [72, 104]
    assert r["layer"] == "block_3_expand_BN" and r["end"] > r["start"]


def test_rebuild_at_size_keeps_the_weights():
    from transferkit.model import rebuild_at_size

    model = small_classifier(32)
    assert rebuild_at_size(model, 32) is model
    bigger = rebuild_at_size(model, (48, 40))
    assert bigger.input_shape[1:3] == (48, 40) and bigger.output_shape == (None, 3)
    back = rebuild_at_size(bigger, 32)
    image = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(back.predict_on_batch(image), model.predict_on_batch(image),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="too small"):
        rebuild_at_size(model, 8)


# 7. Translation invariance.

def test_features_shift_exactly_at_multiples_of_the_total_stride(mobilenet):
    layer = "block_2_add"
    assert geometries(mobilenet)[layer].jump == (4, 4)
    canvas = np.random.default_rng(2).uniform(0, 255, (96, 96 + 8, 3)).astype(np.float32)
    assert shifted_feature_error(mobilenet, layer, canvas, 8) < 1e-5
    assert shifted_feature_error(mobilenet, layer, canvas, 4) < 1e-5
    # Half the stride lands between the samples: no such equality (the check can fail).
    assert shifted_feature_error(mobilenet, layer, canvas, 2) > 1e-2


def test_invariance_record(tiny_run):
    # A photo already at the canvas size (96 + 8): its crops are plain slices of it,
    # 96 rows from row 4, 96 columns from each shift.
    photo = np.random.default_rng(3).integers(0, 256, (104, 104, 3), dtype=np.uint8)
    r = invariance(tiny_run, photo, max_shift=8, step=4)
    assert r["shifts"] == [0, 4, 8] and r["total_stride"] == 32
    assert r["feature_change"][0] == pytest.approx(0, abs=1e-6)
    crops = np.stack([photo[4:100, s:s + 96] for s in (0, 4, 8)]).astype(np.float32)
    expected = tiny_run.model.predict_on_batch(crops)
    target = int(expected[0].argmax())  # the class predicted at shift 0
    assert r["class"] == tiny_run.class_names[target]
    np.testing.assert_allclose(r["probabilities"], expected[:, target], atol=1e-4)
    assert r["amplitude"] == pytest.approx(np.ptp(expected[:, target]), abs=1e-4)


# 8. Gradients through depth.

def test_toy_networks_show_vanishing_gradients_and_the_residual_fix():
    toy = toy_networks(steps=3)
    assert all(np.isfinite(v["norms"]).all() and np.isfinite(v["ratio"]) for v in toy.values())
    assert toy["sigmoid"]["ratio"] < 1e-3
    assert toy["residual"]["ratio"] > 0.1
    assert toy["relu"]["loss"][-1] < toy["relu"]["loss"][0]  # it did train


# 9. Case studies.

def test_case_studies_match_the_hand_formulas():
    studies = case_studies()
    lenet = {r["name"]: r for r in studies["lenet5"]["layers"]}
    assert lenet["c1"]["output_shape"] == [28, 28, 6] and lenet["c1"]["params"] == 5 * 5 * 6 + 6
    assert lenet["s2"]["output_shape"] == [14, 14, 6]
    assert lenet["c3"]["params"] == 5 * 5 * 6 * 16 + 16 and lenet["s4"]["output_shape"] == [5, 5, 16]
    assert lenet["c5"]["params"] == 400 * 120 + 120 and lenet["output"]["params"] == 84 * 10 + 10
    alex = {r["name"]: r for r in studies["alexnet_convs"]["layers"]}
    assert alex["conv1"]["output_shape"] == [55, 55, 96]
    assert alex["conv1"]["params"] == 11 * 11 * 3 * 96 + 96
    assert alex["pool1"]["output_shape"] == [27, 27, 96]
    assert alex["conv2"]["output_shape"] == [27, 27, 256]
    assert alex["conv2"]["params"] == 5 * 5 * 96 * 256 + 256
    assert alex["conv4"]["params"] == 3 * 3 * 384 * 384 + 384
    assert alex["pool5"]["output_shape"] == [6, 6, 256]
    inception = {r["name"]: r for r in studies["inception_3a"]["layers"]}
    assert inception["concat"]["output_shape"] == [28, 28, 64 + 128 + 32 + 32]
    b = studies["bottleneck"]
    hw = 28 * 28
    assert b["multiplications"] == hw * (192 * 64 + 192 * 96 + 9 * 96 * 128 + 192 * 16
                                         + 25 * 16 * 32 + 192 * 32)
    assert b["naive_multiplications"] == hw * (192 * 64 + 9 * 192 * 128 + 25 * 192 * 32)
    assert b["naive_output_channels"] == 64 + 128 + 32 + 192
    residual = studies["residual_block"]
    assert residual["params"] == 2 * 3 * 3 * 64 * 64 + 2 * 4 * 64
    assert {r["name"]: r for r in residual["layers"]}["add"]["output_shape"] == [56, 56, 64]


# Bad input, the command line and its JSON.

def test_bad_input_is_one_clear_line_naming_the_choices(tiny_run, mobilenet):
    model = tiny_run.model
    with pytest.raises(ConfigError, match="no layer named 'nope'.*block_16"):
        feature_maps(model, np.zeros((96, 96, 3), np.uint8), ["nope"])
    with pytest.raises(ConfigError, match="'head_pool' has no 4-D"):
        top_patches(tiny_run, "head_pool", "0")
    with pytest.raises(ConfigError, match="channel 999 is out of range.*32 channels, choose 0 to 31"):
        dream(model, "channel", "block_12_add", 999)
    with pytest.raises(ConfigError, match="unknown class 'tulip'.*blue, green, red"):
        dream(tiny_run, "logit", class_name="tulip")
    with pytest.raises(ConfigError, match="unknown objective 'cat'; choose one of neuron"):
        dream(model, "cat")


def test_cli_views_write_pictures_and_stable_json(tiny_run, tmp_path, capsys, monkeypatch):
    import transferkit.run
    from transferkit.cli import main

    # The wiring is under test, not loading: hand every view the already loaded run.
    monkeypatch.setattr(transferkit.run, "load_run", lambda path: tiny_run)

    image = str(sorted(tiny_run.split_paths("test"))[0])
    expected = {
        ("architecture",): {"layers"},
        ("feature-maps", image, "--layer", "block_3_expand_relu"): {"layers"},
        ("pooling", image): {"layer", "channel", "strided"},
        ("filters",): {"kernel", "effective"},
        ("top-patches", "--channels", "0-1", "--top", "2", "--max-images", "8"): {"channels"},
        ("dream", "--layer", "block_2_add", "--channel", "1", "--steps", "2"):
            {"objective", "layer", "target", "start", "end", "steps", "seconds", "image"},
        ("invariance", image, "--max-shift", "4", "--step", "4"):
            {"shifts", "probabilities", "feature_change", "total_stride"},
        ("gradients", "--n", "2", "--toy-steps", "0"): {"layers", "toy"},
    }
    for (view, *rest), keys in expected.items():
        out = tmp_path / view
        assert main(["inspect", view, str(tiny_run.path), *rest, "--out", str(out),
                     "--json"]) == 0
        record = json.loads(capsys.readouterr().out)
        assert record["view"] == view and keys <= set(record), (view, set(record))
        assert record["files"] and all(Path(f).is_file() and Path(f).parent == out
                                       for f in record["files"])
    layer = record["layers"][0]
    assert set(layer) == {"name", "norm"} and set(record["toy"]) == {"sigmoid", "relu",
                                                                   "residual"}
    assert main(["inspect", "dream", str(tiny_run.path), "--objective", "channel",
                 "--layer", "nope", "--channel", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("transferkit: error: no layer named 'nope'") and "\n" not in err
    assert main(["inspect", "case-studies", "--out", str(tmp_path / "cases"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["studies"]["bottleneck"]["output_channels"] == 256
