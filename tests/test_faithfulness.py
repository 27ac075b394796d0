"""Faithfulness checks: deletion/insertion on a case whose true map is known, the
model-randomization sanity check, and the explain_check report."""

from __future__ import annotations

import json
import re
import time

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from transferkit.backbones import BACKBONES
from transferkit.errors import ConfigError, DataError
from transferkit.explain import (
    GradCAM, blur, deletion_insertion, explain_check, random_heatmaps,
    randomization_check, randomize_model, rank_correlation, ratio_interval)
from transferkit.model import backbone_blocks, build_classifier
from transferkit.run import Run

SIZE = 32
SIGMA = 4.0


class TopLeft(keras.layers.Layer):
    """Keeps the top-left quadrant of the image, zeroes the rest."""

    def call(self, x):
        h, w = x.shape[1], x.shape[2]
        rows, cols = np.mgrid[:h, :w]
        return x * ((rows < h // 2) & (cols < w // 2)).astype("float32")[..., None]


def region_model(image: np.ndarray) -> keras.Model:
    """p(class 0) rises with the top-left quadrant's brightness; nothing else matters.

    Calibrated on `image` so that the image itself gives p0 ≈ 0.98 and its blurred copy
    (what deletion puts in place of a pixel) p0 ≈ 0.02. Class 1's logit is constant,
    so no other region can move p0 through the softmax.
    """
    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(TopLeft()(inputs))
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(pooled)
    model = keras.Model(inputs, outputs)
    blurred = ndimage.gaussian_filter(image, (SIGMA, SIGMA, 0), mode="reflect")
    sharp_level = image[:SIZE // 2, :SIZE // 2].mean() / 4  # the pooled channel mean
    blurred_level = blurred[:SIZE // 2, :SIZE // 2].mean() / 4
    assert sharp_level - blurred_level > 5  # the blur really removes evidence
    gain = 8.0 / (sharp_level - blurred_level)
    kernel = np.zeros((3, 2))
    kernel[:, 0] = gain / 3
    bias = np.array([-gain * (sharp_level + blurred_level) / 2, 0.0])
    model.get_layer("predictions").set_weights([kernel, bias])
    return model


@pytest.fixture(scope="module")
def bright_corner():
    """A bright, textured top-left quadrant on a dark image."""
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 30, (SIZE, SIZE, 3))
    image[:SIZE // 2, :SIZE // 2] = rng.uniform(200, 255, (SIZE // 2, SIZE // 2, 3))
    return image.astype(np.float32)


def test_true_map_beats_random_and_reversed(bright_corner):
    model = region_model(bright_corner)
    assert model.predict_on_batch(bright_corner[None])[0, 0] > 0.95
    truth = np.zeros((SIZE, SIZE), np.float32)
    truth[:SIZE // 2, :SIZE // 2] = 1.0
    maps = np.stack([truth, 1.0 - truth, random_heatmaps(1, SIZE, SIZE, seed=3)[0]])
    images = np.repeat(bright_corner[None], 3, axis=0)
    deletion, insertion = deletion_insertion(model, images, maps, [0, 0, 0],
                                             blur_sigma=SIGMA)
    true_del, reversed_del, random_del = deletion
    true_ins, reversed_ins, random_ins = insertion
    assert true_del < random_del < reversed_del
    assert true_ins > random_ins > reversed_ins
    # The evidence is a quarter of the pixels: gone (or back) within the first quarter.
    assert true_del < 0.25 and true_ins > 0.75
    assert reversed_del > 0.75 and reversed_ins < 0.25
    assert 0.3 < random_del < 0.7 and 0.3 < random_ins < 0.7


def test_auc_of_a_constant_model_is_its_probability(bright_corner):
    inputs = keras.Input((SIZE, SIZE, 3))
    dense = keras.layers.Dense(2, activation="softmax")
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    dense.set_weights([np.zeros((3, 2)), np.array([1.0, 0.0])])
    p = np.exp(1) / (np.exp(1) + 1)
    for steps in (1, 7, 20):  # the x-axis is the fraction of pixels, whatever the steps
        deletion, insertion = deletion_insertion(
            model, bright_corner[None], random_heatmaps(1, SIZE, SIZE), [0], steps=steps)
        np.testing.assert_allclose([deletion[0], insertion[0]], p, rtol=1e-5)


def test_all_steps_of_an_image_run_in_one_predict_call(bright_corner):
    model = region_model(bright_corner)
    sizes = []
    predict = model.predict_on_batch

    def counting(batch):
        sizes.append(len(batch))
        return predict(batch)

    model.predict_on_batch = counting
    deletion_insertion(model, np.stack([bright_corner] * 2), random_heatmaps(2, SIZE, SIZE),
                       [0, 0], steps=10)
    assert sizes == [22, 22]  # (steps + 1) deletion + (steps + 1) insertion images


def test_deletion_insertion_defaults_and_errors(bright_corner):
    model = region_model(bright_corner)
    maps = random_heatmaps(1, SIZE, SIZE, seed=1)
    np.testing.assert_array_equal(maps, random_heatmaps(1, SIZE, SIZE, seed=1))
    assert maps.min() >= 0 and maps.max() < 1 and maps.std() > 0.2
    # class_indices=None: the top prediction (class 0 here).
    default = deletion_insertion(model, bright_corner[None], maps)
    explicit = deletion_insertion(model, bright_corner[None], maps, [0])
    np.testing.assert_allclose(default, explicit)
    # Blurred copies computed once and passed in (explain_check): the same scores.
    given = deletion_insertion(model, bright_corner[None], maps,
                               blurred=blur(bright_corner)[None])
    np.testing.assert_allclose(given, default)
    # ... while other replacement images give other scores.
    black = deletion_insertion(model, bright_corner[None], maps,
                               blurred=np.zeros_like(bright_corner)[None])
    assert not np.allclose(black, default)
    with pytest.raises(ConfigError, match="not both"):
        deletion_insertion(model, bright_corner[None], maps, blur_sigma=2.0,
                           blurred=bright_corner[None])
    with pytest.raises(ConfigError, match="blurred images have shape"):
        deletion_insertion(model, bright_corner[None], maps, blurred=bright_corner)
    with pytest.raises(ConfigError, match="heatmaps have shape"):
        deletion_insertion(model, bright_corner[None], maps[:, :8], [0])
    with pytest.raises(ConfigError, match="class index 2 is out of range"):
        deletion_insertion(model, bright_corner[None], maps, [2])
    with pytest.raises(ConfigError, match="2 class indices for 1 images"):
        deletion_insertion(model, bright_corner[None], maps, [0, 0])


def test_rank_correlation():
    rng = np.random.default_rng(0)
    maps = rng.random((2, 8, 8))
    np.testing.assert_allclose(rank_correlation(maps, maps), 1.0)
    np.testing.assert_allclose(rank_correlation(maps, -maps), -1.0)
    np.testing.assert_allclose(rank_correlation(maps, maps ** 3), 1.0)  # ranks only
    assert rank_correlation(maps, np.zeros_like(maps)).tolist() == [0.0, 0.0]
    assert rank_correlation(np.zeros_like(maps), np.ones_like(maps)).tolist() == [1.0, 1.0]
    with pytest.raises(ConfigError):
        rank_correlation(maps, maps[:1])


def test_randomize_model_reinitializes_head_and_top_blocks_only(tiny_run):
    model = tiny_run.model
    before = [w.copy() for w in model.get_weights()]
    copy = randomize_model(model, n_blocks=3, seed=0)
    for old, new in zip(before, model.get_weights()):  # the original is untouched
        np.testing.assert_array_equal(old, new)
    blocks = backbone_blocks(copy)
    changed = {layer.name for block in blocks[-3:] for layer in block} | {"predictions"}

    def differs(layer_name: str) -> bool:
        ours = model.get_layer(layer_name).get_weights()
        theirs = copy.get_layer(layer_name).get_weights()
        return any(not np.array_equal(a, b) for a, b in zip(ours, theirs))

    for layer in copy.layers:
        if layer.weights:
            assert differs(layer.name) == (layer.name in changed), layer.name
    # BatchNormalization gets its initial statistics back; kernels their initializers.
    bn = next(layer for layer in blocks[-1]
              if isinstance(layer, keras.layers.BatchNormalization))
    np.testing.assert_array_equal(bn.moving_variance.numpy(), 1.0)
    # Seeded: the same seed gives the same weights, another seed others.
    again = randomize_model(model, n_blocks=3, seed=0)
    other = randomize_model(model, n_blocks=3, seed=1)
    kernel = copy.get_layer("predictions").get_weights()[0]
    np.testing.assert_array_equal(kernel, again.get_layer("predictions").get_weights()[0])
    assert not np.array_equal(kernel, other.get_layer("predictions").get_weights()[0])


def test_randomize_model_handles_layers_without_a_known_initializer():
    # ConvNeXt's LayerScale has a bare weight; it is redrawn like the original's.
    model = build_classifier(BACKBONES["convnext_tiny"], 2, 32, weights=None)
    copy = randomize_model(model, n_blocks=1, seed=0)
    top = backbone_blocks(copy)[-1]
    scale = next(layer for layer in top if type(layer).__name__ == "LayerScale")
    original = model.get_layer(scale.name).get_weights()[0]
    new = scale.get_weights()[0]
    assert not np.array_equal(original, new) and np.isfinite(new).all()
    assert all(np.isfinite(w).all() for w in copy.get_weights())


@pytest.fixture(scope="module")
def flower_images(flowers):
    paths = [sorted((flowers / c).iterdir())[i] for c in ("daisy", "rose", "tulip")
             for i in range(2)]
    arrays = [np.asarray(Image.open(p).convert("RGB").resize(
        (96, 96), Image.Resampling.BILINEAR)) for p in paths]
    return np.stack(arrays).astype(np.float32)


def test_randomization_check(tiny_run, flower_images):
    model = tiny_run.model
    identical = randomize_model(model, n_blocks=0, head=False)
    randomized = randomize_model(model, n_blocks=3, seed=0)
    different = {}
    for method in ("gradcam", "saliency"):
        same = randomization_check(model, method, flower_images, randomized=identical)
        np.testing.assert_allclose(same, 1.0, atol=1e-6)
        # Adebayo et al.: maps that explain the model must change with its weights.
        different[method] = randomization_check(model, method, flower_images,
                                                randomized=randomized)
        assert different[method].shape == (len(flower_images),)
        assert different[method].mean() < 0.5, (method, different[method])
    # The method may be a class; by default the copy is made (seeded) on demand. (Each
    # image's correlation is its own: the first two are those of the given copy.)
    on_demand = randomization_check(model, GradCAM, flower_images[:2], seed=0)
    np.testing.assert_allclose(on_demand, different["gradcam"][:2], rtol=1e-6, atol=1e-6)


def test_explain_check(tiny_run, color_folder, tmp_path, capsys):
    # Three images and n=3: all of them are used.
    data = tmp_path / "data"
    for name in ("red", "green", "blue"):
        (data / name).mkdir(parents=True)
        first = sorted((color_folder / name).iterdir())[0]
        (data / name / first.name).write_bytes(first.read_bytes())
    methods = ["gradcam", "saliency"]
    start = time.perf_counter()
    table = explain_check(tiny_run.path, data, n=3, methods=methods, out=tmp_path, seed=2)
    elapsed = time.perf_counter() - start
    assert list(table.columns) == [
        "method", "deletion_auc", "insertion_auc", "random_deletion_auc",
        "random_insertion_auc", "randomization_spearman", "seconds_per_image"]
    assert table["method"].tolist() == methods
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "explain_check.csv"), table)
    # Seconds per image, not per call nor milliseconds: three images of each method
    # took part of the call's time.
    assert 0 < 3 * table["seconds_per_image"].sum() < elapsed
    # One random baseline for every method.
    assert table["random_deletion_auc"].nunique() == table["random_insertion_auc"].nunique() == 1
    err = capsys.readouterr().err
    assert "gradcam (1/2)" in err and "saliency (2/2)" in err
    # Each AUC against random, with its sampling interval over the images.
    deletion = table.set_index("method").loc["gradcam", "deletion_auc"]
    assert re.search(rf"gradcam: deletion {deletion:.3f} \(\d+\.\d\dx random, 95% "
                     rf"interval \d+\.\d\d-\d+\.\d\d\), insertion", err), err

    # Known answers: a model whose output is a constant (zero head kernel, biases
    # [1, 0, 0]) keeps p = e / (e + 2) for class 0 whatever is deleted or inserted, so
    # every AUC is p; its maps are all zero (no gradient), uncorrelated with those of
    # the randomized model.
    constant = keras.models.clone_model(tiny_run.model)
    constant.set_weights(tiny_run.model.get_weights())
    head = constant.get_layer("predictions")
    head.set_weights([np.zeros_like(head.get_weights()[0]), np.array([1.0, 0.0, 0.0])])
    run = Run(tiny_run.path, constant, tiny_run.class_names, tiny_run.config)
    table = explain_check(run, data, n=3, methods=methods, out=tmp_path, seed=2)
    p = np.e / (np.e + 2)
    np.testing.assert_allclose(table[["deletion_auc", "insertion_auc", "random_deletion_auc",
                                      "random_insertion_auc"]], p, rtol=1e-5)
    assert table["randomization_spearman"].tolist() == [0.0, 0.0]


def test_ratio_interval_covers_the_true_ratio_and_narrows_with_more_images():
    rng = np.random.default_rng(0)

    def interval(n):  # a method whose AUCs are 1.3x the random maps', per image noisy
        baseline = rng.uniform(0.3, 0.6, n)
        return ratio_interval(1.3 * baseline + rng.normal(0, 0.1, n), baseline)

    ratio, low, high = interval(50)
    assert low < ratio < high and low < 1.3 < high
    _, low_800, high_800 = interval(800)
    assert high_800 - low_800 < (high - low) / 2  # about 1/sqrt(16) as wide
    # Identical AUCs: exactly 1, no spread; the seed makes it reproducible.
    same = rng.uniform(0.2, 0.8, 30)
    assert ratio_interval(same, same) == (1.0, 1.0, 1.0)
    values, baseline = rng.uniform(0, 1, (2, 40))
    assert ratio_interval(values, baseline, seed=3) == ratio_interval(values, baseline, seed=3)
    with pytest.raises(ConfigError, match="paired"):
        ratio_interval(values, baseline[:10])


def test_default_blur_removes_shapes_but_keeps_colour():
    # Stripes 4 px wide on a 64 px image: the default blur (a tenth of the side) must
    # flatten them, and the image's mean colour must stay.
    image = np.zeros((64, 64, 3), np.float32)
    image[:, ::8] = image[:, 1::8] = image[:, 2::8] = image[:, 3::8] = [200, 50, 10]
    blurred = blur(image)
    assert blurred.shape == image.shape

    def stripes(picture):  # largest jump between neighbouring columns
        return np.abs(np.diff(picture[..., 0], axis=1)).max()

    assert stripes(image) == 200 and stripes(blurred) < 5
    np.testing.assert_allclose(blurred.mean(axis=(0, 1)), image.mean(axis=(0, 1)), rtol=0.1)
    # An explicit sigma is used as given: a small one keeps the stripes.
    assert stripes(blur(image, sigma=0.5)) > 50


def test_explain_check_cli_json_and_seed(tiny_run, color_folder, tmp_path, capsys):
    from transferkit.cli import main

    def check(seed: int, *methods: str) -> list[dict]:
        methods = methods or ("--method", "gradcam")
        assert main(["explain-check", str(tiny_run.path), "--data", str(color_folder),
                     "--n", "2", *methods, "--seed", str(seed), "--json",
                     "--out", str(tmp_path)]) == 0
        return json.loads(capsys.readouterr().out)

    first, again = check(0), check(0)
    # --method repeated and comma-separated: every method named, once, in order.
    other = check(5, "--method", "saliency,gradcam", "--method", "saliency")
    assert [r["method"] for r in other] == ["saliency", "gradcam"]
    assert [r["method"] for r in first] == ["gradcam"]
    assert set(first[0]) == {"method", "deletion_auc", "insertion_auc", "random_deletion_auc",
                             "random_insertion_auc", "randomization_spearman",
                             "seconds_per_image"}
    same = ("deletion_auc", "random_deletion_auc", "randomization_spearman")
    assert [first[0][k] for k in same] == [again[0][k] for k in same]
    # Another seed: other images and other random maps.
    assert first[0]["random_deletion_auc"] != other[1]["random_deletion_auc"]
