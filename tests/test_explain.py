"""Explanation methods: right answers on a model whose answer is known, and contracts.

The known-answer model follows the classifier contract (image → preprocess → convs →
head_pool → head_dropout → predictions) but sees the image through two masks: class 0's
score depends only on the top-left quadrant, class 1's only on the bottom-right one. So
every faithful method must put its heat map there, and explaining class 0 vs 1 must
move the map from one corner to the other.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from transferkit.data.images import load_image
from transferkit.errors import ConfigError, ImageError
from transferkit.explain import (
    DEFAULT_METHOD, METHODS, GradCAM, GradCAMPlusPlus, IntegratedGradients, Saliency,
    ScoreCAM, SmoothGrad, explain_files, make_explainers, overlay)
from transferkit.explain.graph import TracedGraph
from transferkit.model import ImagePreprocessing

MEASUREMENTS = Path(__file__).resolve().parents[1] / "docs" / "measurements.md"
SIZE = 32
NAMES = ("gradcam", "gradcam++", "scorecam", "saliency", "smoothgrad",
         "integrated-gradients")
# Settings that keep the tests fast; defaults are exercised on the known-answer model.
# Batch size 1 throughout: each new batch shape costs TensorFlow seconds on first use.
FAST = {"scorecam": {"top_k": 4}, "smoothgrad": {"samples": 2, "batch_size": 1},
        "integrated-gradients": {"steps": 2, "tolerance": None, "batch_size": 1}}


class QuadrantSplit(keras.layers.Layer):
    """[N, H, W, 3] → [N, H, W, 6]: the image masked to its top-left quadrant, then to
    its bottom-right quadrant."""

    def call(self, x):
        h, w = x.shape[1], x.shape[2]
        rows, cols = np.mgrid[:h, :w]
        top_left = ((rows < h // 2) & (cols < w // 2)).astype("float32")[..., None]
        bottom_right = ((rows >= h // 2) & (cols >= w // 2)).astype("float32")[..., None]
        return keras.ops.concatenate([x * top_left, x * bottom_right], axis=-1)

    def compute_output_shape(self, shape):
        return (*shape[:-1], 6)


def quadrant_model(size: int = SIZE, seed: int = 0) -> keras.Model:
    """Class 0 ← top-left quadrant only; class 1 ← bottom-right quadrant only.

    Positive kernels on positive pixels keep every ReLU active, so every channel carries
    signal; the block structure of the kernels keeps the two quadrants apart.
    """
    rng = np.random.default_rng(seed)
    inputs = keras.Input((size, size, 3), name="image")
    x = ImagePreprocessing("none", name="preprocess")(inputs)
    x = QuadrantSplit(name="split")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False,
                            activation="relu", name="conv1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, groups=2,
                            activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dropout(0.2, name="head_dropout")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs)
    conv1 = np.abs(rng.normal(0, 0.05, (3, 3, 6, 8)))
    conv1[:, :, :3, 4:] = 0  # top-left pixels feed channels 0-3 only
    conv1[:, :, 3:, :4] = 0  # bottom-right pixels feed channels 4-7 only
    model.get_layer("conv1").set_weights([conv1])
    # groups=2 keeps channels 0-3 and 4-7 apart.
    model.get_layer("conv2").set_weights([np.abs(rng.normal(0, 0.05, (3, 3, 4, 8)))])
    dense = np.zeros((8, 2))
    dense[:4, 0] = rng.uniform(0.01, 0.03, 4)
    dense[4:, 1] = rng.uniform(0.01, 0.03, 4)
    model.get_layer("predictions").set_weights([dense, np.zeros(2)])
    return model


def top_left_mass(maps: np.ndarray) -> np.ndarray:
    half = maps.shape[1] // 2
    return maps[:, :half, :half].sum(axis=(1, 2)) / maps.sum(axis=(1, 2))


def bottom_right_mass(maps: np.ndarray) -> np.ndarray:
    half = maps.shape[1] // 2
    return maps[:, half:, half:].sum(axis=(1, 2)) / maps.sum(axis=(1, 2))


def logits(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Pre-softmax class scores, computed independently of the explain package."""
    head = keras.Model(model.inputs, model.get_layer("predictions").input)
    kernel, bias = model.get_layer("predictions").get_weights()
    return np.asarray(head.predict_on_batch(images)) @ kernel + bias


@pytest.fixture(scope="module")
def model():
    return quadrant_model()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def flower_images(flowers):
    """Three real photos at 96 px (the tiny run's size), one per class folder."""
    paths = [next(iter(sorted((flowers / c).iterdir()))) for c in ("daisy", "rose", "tulip")]
    arrays = [np.asarray(Image.open(p).convert("RGB").resize(
        (96, 96), Image.Resampling.BILINEAR)) for p in paths]
    return np.stack(arrays).astype(np.float32)


def test_registry_names_and_classes():
    assert list(METHODS) == list(NAMES)
    assert METHODS["gradcam"] is GradCAM and METHODS["gradcam++"] is GradCAMPlusPlus
    assert METHODS["scorecam"] is ScoreCAM and METHODS["saliency"] is Saliency
    assert METHODS["smoothgrad"] is SmoothGrad
    assert METHODS["integrated-gradients"] is IntegratedGradients
    assert DEFAULT_METHOD == "gradcam"
    assert all(name == cls.name for name, cls in METHODS.items())


def test_every_method_has_a_label_of_its_own():
    labels = [cls.label for cls in METHODS.values()]
    assert all(label.strip() for label in labels), labels
    assert len(set(labels)) == len(labels), labels
    assert METHODS["gradcam"].label == "Grad-CAM"


def test_documented_method_table_follows_the_registry():
    section = MEASUREMENTS.read_text().split("## Faithfulness of the heat maps", 1)[1]
    section = section.split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\S+) \|", section, flags=re.MULTILINE)
    assert rows[0] == "method"  # the header, then one row per method, in METHODS' order
    assert [row for row in rows[1:] if row != "---"] == list(METHODS)


@pytest.mark.parametrize("name", NAMES)
def test_maps_concentrate_where_the_model_looks(model, images, name):
    explainer = METHODS[name](model)  # default settings
    for cls, mass in ((0, top_left_mass), (1, bottom_right_mass)):
        maps = explainer(images, cls)
        assert maps.shape == (3, SIZE, SIZE) and maps.dtype == np.float32
        assert maps.min() >= 0.0 and maps.max() <= 1.0
        np.testing.assert_allclose(maps.max(axis=(1, 2)), 1.0, atol=1e-6)
        assert (mass(maps) > 0.7).all(), f"{name} class {cls}: {mass(maps)}"


@pytest.mark.parametrize("name", NAMES)
def test_default_class_is_the_top_prediction(model, name):
    # Bright top-left, dim bottom-right: class 0 wins on the first image; the reverse
    # on the second.
    images = np.full((2, SIZE, SIZE, 3), 20.0, np.float32)
    images[0, :SIZE // 2, :SIZE // 2] = 250.0
    images[1, SIZE // 2:, SIZE // 2:] = 250.0
    images += np.random.default_rng(2).uniform(0, 5, images.shape).astype(np.float32)
    assert model.predict_on_batch(images).argmax(axis=-1).tolist() == [0, 1]
    explainer = METHODS[name](model)  # defaults: Score-CAM uses all 8 channels
    default = explainer(images)
    np.testing.assert_allclose(default, explainer(images, [0, 1]), atol=1e-6)
    swapped = explainer(images, [1, 0])
    assert np.abs(default - swapped).max() > 0.5
    assert top_left_mass(default)[0] > 0.7 and bottom_right_mass(default)[1] > 0.7


def test_make_explainers_share_one_graph_and_agree_with_standalone(model, images):
    explainers = make_explainers(model, options={"smoothgrad": {"samples": 3}})
    assert list(explainers) == list(NAMES)
    graphs = {id(e.graph) for e in explainers.values()}
    assert len(graphs) == 1
    for name, explainer in explainers.items():
        standalone = METHODS[name](model, **({"samples": 3} if name == "smoothgrad" else {}))
        np.testing.assert_allclose(explainer(images, 1), standalone(images, 1), atol=1e-5,
                                   err_msg=name)
    assert explainers["gradcam"].graph.backward.experimental_get_tracing_count() == 1
    assert list(make_explainers(model, ["saliency", "gradcam"])) == ["saliency", "gradcam"]
    with pytest.raises(ConfigError, match="unknown explanation method 'lime'.*gradcam"):
        make_explainers(model, ["gradcam", "lime"])


def test_layer_defaults_and_choice(model):
    assert GradCAM(model).layer_name == "conv2"  # head_pool's input
    assert GradCAM(model, layer_name="conv1").layer_name == "conv1"
    plain = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, name="c1"),
                              keras.layers.Conv2D(4, 3, name="c2"), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax")])
    assert GradCAM(plain).layer_name == "c2"  # no head_pool: last 4-D output
    maps = GradCAM(plain)(np.zeros((1, 16, 16, 3)) + 100)
    assert maps.shape == (1, 16, 16)


def test_gradcam_traces_once(model, images):
    explainer = GradCAM(model)
    explainer(images[:1])
    explainer(images)
    explainer(images[:2], [1, 0])
    assert explainer.graph.backward.experimental_get_tracing_count() == 1


def test_graphs_are_built_on_first_use_and_never_thrown_away(model, images, monkeypatch):
    built = []
    build = TracedGraph.__init__

    def counting(self, *args, **kwargs):
        built.append(args[1])  # the layer
        build(self, *args, **kwargs)

    monkeypatch.setattr(TracedGraph, "__init__", counting)
    alone = Saliency(model)
    shared = make_explainers(model, ["gradcam", "scorecam"])
    assert built == ["conv2"]  # the shared graph only; no explainer built its own
    for explainer in (alone, *shared.values()):
        explainer(images[:1])
    assert built == ["conv2", None]  # Saliency's own, on its first call


def test_use_graph_refuses_a_graph_that_does_not_fit(model):
    other = quadrant_model(seed=1)
    with pytest.raises(ConfigError, match="another model"):
        GradCAM(model).use_graph(TracedGraph(other, "conv2"))
    with pytest.raises(ConfigError, match="explains layer 'conv1'.*'conv2'"):
        GradCAM(model, layer_name="conv1").use_graph(TracedGraph(model, "conv2"))
    with pytest.raises(ConfigError, match="pixel gradients"):
        Saliency(model).use_graph(TracedGraph(model, "conv2"))


def test_cams_match_hand_computed_maps(model, images):
    feature = keras.Model(model.inputs, model.get_layer("conv2").output)
    acts = np.asarray(feature.predict_on_batch(images[:1]))[0]  # [h, w, 8]
    # conv2 → GAP → dense is linear, so d logit_0 / d A_k = w_k0 / (h * w) everywhere.
    grad = model.get_layer("predictions").get_weights()[0][:, 0] / acts[..., 0].size

    def as_heatmap(weights):
        cam = np.maximum((acts * weights).sum(axis=-1), 0)
        cam = keras.ops.image.resize(cam[None, ..., None], (SIZE, SIZE))
        cam = np.asarray(cam)[0, ..., 0]
        return (cam - cam.min()) / (cam.max() - cam.min())

    # Grad-CAM: the mean gradient.
    np.testing.assert_allclose(GradCAM(model)(images[:1], 0)[0], as_heatmap(grad), atol=1e-4)
    # Grad-CAM++: alpha = g^2 / (2 g^2 + sum(A) g^3), weight = sum_ij alpha * relu(g).
    alpha = np.divide(grad ** 2, 2 * grad ** 2 + acts.sum(axis=(0, 1)) * grad ** 3 + 1e-7,
                      out=np.zeros_like(grad), where=grad != 0)
    weights = acts[..., 0].size * alpha * np.maximum(grad, 0)
    np.testing.assert_allclose(GradCAMPlusPlus(model)(images[:1], 0)[0], as_heatmap(weights),
                               atol=1e-4)


def test_integrated_gradients_completeness(tiny_run, flower_images):
    # A real network: MobileNetV2 (ImageNet weights) + trained head, real photos.
    model = tiny_run.model
    x = flower_images[:2]
    classes = np.argmax(model.predict_on_batch(x), axis=-1)
    attributions = IntegratedGradients(model).attributions(x, classes)  # defaults
    assert attributions.shape == x.shape
    gap = (logits(model, x) - logits(model, np.zeros_like(x)))[np.arange(2), classes]
    assert (np.abs(gap) > 0.5).all()  # a meaningful difference to recover
    np.testing.assert_allclose(attributions.sum(axis=(1, 2, 3)), gap, rtol=0.05)


def test_integrated_gradients_rule_and_refinement(model, images):
    x = images[:1]
    # The known-answer model is linear in positive pixels (no biases, every ReLU active),
    # so the gradient is the same all along a path from a grey baseline: the trapezoid
    # rule is exact with a single interval.
    grey = IntegratedGradients(model, baseline=128.0, steps=1, tolerance=None)
    gap = logits(model, x)[0, 0] - logits(model, np.full_like(x, 128.0))[0, 0]
    np.testing.assert_allclose(grey.attributions(x, 0).sum(), gap, rtol=1e-4)
    # From black, every ReLU sits at its kink at the baseline (gradient 0 there); the
    # rest of the path has the constant gradient. Trapezoid weights 1/2 at the ends:
    # 2 intervals give (0/2 + 1 + 1/2) / 2 = 3/4 of the gap, 2^k intervals 1 - 2^-(k+1).
    gap = logits(model, x)[0, 0] - logits(model, np.zeros_like(x))[0, 0]
    fixed = IntegratedGradients(model, steps=2, tolerance=None)
    np.testing.assert_allclose(fixed.attributions(x, 0).sum(), 0.75 * gap, rtol=1e-4)
    refined = IntegratedGradients(model, steps=2, tolerance=0.05)  # → 16 intervals
    np.testing.assert_allclose(refined.attributions(x, 0).sum(), (1 - 1 / 32) * gap,
                               rtol=1e-4)
    attributions = IntegratedGradients(model).attributions(x, 0)  # default: 64
    np.testing.assert_allclose(attributions.sum(), (1 - 1 / 128) * gap, rtol=1e-4)
    assert np.abs(attributions[0, SIZE // 2:, :SIZE // 2]).max() == 0  # bottom-left


def test_integrated_gradients_warns_when_it_cannot_converge(tiny_run, flower_images):
    explainer = IntegratedGradients(tiny_run.model, steps=2, max_steps=4, tolerance=1e-6)
    with pytest.warns(UserWarning, match="completeness missed.*max_steps=4") as caught:
        explainer(flower_images[:1])
    assert _missed(caught).filename == __file__  # points at the caller
    with pytest.warns(UserWarning, match="completeness missed") as caught:
        explainer.attributions(flower_images[:1])
    assert _missed(caught).filename == __file__


def _missed(caught) -> warnings.WarningMessage:
    # Only the warning under test: the garbage collector may add others (e.g. an
    # unclosed event loop of an earlier test) while the block runs.
    [warning] = [w for w in caught if "completeness missed" in str(w.message)]
    return warning


def test_smoothgrad_is_saliency_without_noise_and_is_seeded(tiny_run, flower_images):
    model = tiny_run.model
    x = flower_images[:2]
    np.testing.assert_allclose(SmoothGrad(model, noise_level=0.0, samples=1)(x),
                               Saliency(model)(x), atol=1e-5)
    smooth = SmoothGrad(model, samples=3, seed=1)
    first = smooth(x)
    assert np.abs(first - Saliency(model)(x)).max() > 0.05  # the noise does something
    np.testing.assert_array_equal(first, smooth(x))  # seeded, no state between calls
    np.testing.assert_allclose(first[1:], smooth(x[1:]), atol=1e-6)  # nor between images
    smooth.seed = 2
    assert np.abs(first - smooth(x)).max() > 0.05


def test_scorecam_uses_top_k_channels(model, images):
    # k=4 of 8 channels: on a bright top-left image the top-left ones (larger mean
    # activation) are chosen, and they alone explain class 0.
    bright = np.full((1, SIZE, SIZE, 3), 10.0, np.float32)
    bright[:, :SIZE // 2, :SIZE // 2] = 250.0
    assert top_left_mass(ScoreCAM(model, top_k=4)(bright, 0))[0] > 0.9
    # The choice ignores the class (documented): class 1's map is made of the same
    # top-left channels, while with every channel it moves towards the bottom right.
    assert top_left_mass(ScoreCAM(model, top_k=4)(bright, 1))[0] > 0.9
    assert top_left_mass(ScoreCAM(model, top_k=8)(bright, 1))[0] < 0.9
    # More channels than the layer has is fine.
    assert ScoreCAM(model, top_k=100)(images[:1], 0).shape == (1, SIZE, SIZE)
    with pytest.raises(ConfigError, match="top_k"):
        ScoreCAM(model, top_k=0)


def test_uint8_and_float_inputs_agree(model, images):
    as_uint8 = np.rint(images).astype(np.uint8)
    np.testing.assert_allclose(GradCAM(model)(as_uint8),
                               GradCAM(model)(as_uint8.astype(np.float32)), atol=1e-6)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((SIZE, SIZE)), "shape"),
    (np.zeros((SIZE, SIZE, 3)), "batch axis"),
    (np.zeros((1, SIZE, SIZE, 4)), "3 colour channels"),
    (np.zeros((1, SIZE, SIZE, 1)), "3 colour channels"),
    (np.zeros((1, 20, 20, 3)), "model takes 32x32"),
    ("cat.jpg", "got a str"),
    (np.full((1, SIZE, SIZE, 3), "a"), "dtype <U1"),
    (np.full((1, SIZE, SIZE, 3), np.nan), "NaN"),
    # The one pixel rule (transferkit.data.images.check_pixels).
    (np.full((1, SIZE, SIZE, 3), 300.0), "0-255"),
    (np.full((1, SIZE, SIZE, 3), 0.5), "was scaled"),
])
def test_non_image_input_gives_a_clear_error(model, bad, match):
    for name in ("gradcam", "saliency", "integrated-gradients"):
        with pytest.raises(ImageError, match=match):
            METHODS[name](model)(bad)


def test_bad_options_give_a_clear_error(model, images):
    with pytest.raises(ConfigError, match="out of range"):
        GradCAM(model)(images, 2)
    with pytest.raises(ConfigError, match="2 class indices for 3 images"):
        GradCAM(model)(images, [0, 1])
    with pytest.raises(ConfigError, match="no layer named 'nope'.*conv2"):
        GradCAM(model, layer_name="nope")
    with pytest.raises(ConfigError, match="no 4-D"):
        GradCAM(model, layer_name="head_pool")
    with pytest.raises(ConfigError, match="steps"):
        IntegratedGradients(model, steps=0)
    with pytest.raises(ConfigError, match="samples"):
        SmoothGrad(model, samples=0)
    with pytest.raises(ImageError, match="model takes"):
        IntegratedGradients(model, baseline=np.zeros((8, 8, 3)))


def test_empty_batch(model):
    assert GradCAM(model)(np.zeros((0, SIZE, SIZE, 3))).shape == (0, SIZE, SIZE)


def test_overlay():
    image = np.full((8, 10, 3), 100, np.uint8)
    heat = np.zeros((8, 10), np.float32)
    heat[:, 5:] = 1.0
    out = overlay(image, heat, alpha=0.5)
    assert out.shape == (8, 10, 3) and out.dtype == np.uint8
    # jet: 0 is dark blue, 1 dark red.
    assert out[0, 0, 2] > out[0, 0, 0] and out[0, 9, 0] > out[0, 9, 2]
    np.testing.assert_array_equal(overlay(image, heat, alpha=0.0), image)
    full = overlay(image, heat, alpha=1.0, colormap="gray")
    assert full[0, 0].tolist() == [0, 0, 0] and full[0, 9].tolist() == [255, 255, 255]
    assert overlay(image, np.ones((4, 5)), alpha=1.0, colormap="gray").min() == 255
    with pytest.raises(ConfigError, match="colormap"):
        overlay(image, heat, colormap="no-such-map")
    with pytest.raises(ConfigError, match="alpha"):
        overlay(image, heat, alpha=2)
    with pytest.raises(ImageError, match="heat map"):
        overlay(image, np.zeros((2, 2, 2)))
    # The image follows the one pixel rule (transferkit.data.images.as_rgb).
    np.testing.assert_array_equal(overlay(image / 255.0 * 255.0, heat), overlay(image, heat))
    rgba = np.concatenate([image, np.zeros((8, 10, 1), np.uint8)], axis=-1)
    np.testing.assert_array_equal(overlay(rgba, heat), overlay(image, heat))
    np.testing.assert_array_equal(overlay(image[..., 0], heat), overlay(image, heat))
    with pytest.raises(ImageError, match="was scaled"):
        overlay(image / 255.0, heat)
    with pytest.raises(ImageError, match="HxWx3"):
        overlay(np.zeros((8, 10, 2)), heat)


def test_explain_files(tiny_run, color_folder, tmp_path):
    red = sorted((color_folder / "red").iterdir())[0]
    blue = sorted((color_folder / "blue").iterdir())[0]
    twin = tmp_path / "other" / red.name  # same stem, another folder
    twin.parent.mkdir()
    twin.write_bytes(blue.read_bytes())
    out = tmp_path / "explain"
    records = explain_files(tiny_run.path, [red, twin], methods=["all"], out=out)
    assert [(r["path"], r["method"]) for r in records] == \
        [(str(p), m) for p in (red, twin) for m in NAMES]
    probabilities = tiny_run.predict([red, twin])
    classes = probabilities.argmax(axis=-1)
    # Two deterministic, fast methods recomputed here; the files must hold their maps.
    expected = {name: explainer(tiny_run.preprocess([red, twin]), classes) for name, explainer
                in make_explainers(tiny_run.model, ["gradcam", "saliency"]).items()}
    for record in records:
        i = [str(red), str(twin)].index(record["path"])
        assert record["label"] == record["explained_class"] == tiny_run.class_names[classes[i]]
        np.testing.assert_allclose(record["probability"], probabilities[i, classes[i]],
                                   rtol=1e-5)
        heat = np.load(record["heatmap"])
        assert heat.shape == (96, 96) and heat.dtype == np.float32
        np.testing.assert_allclose(heat.max(), 1.0, atol=1e-6, err_msg=record["method"])
        if record["method"] in expected:
            np.testing.assert_allclose(heat, expected[record["method"]][i], atol=1e-5)
        with Image.open(record["overlay"]) as picture:
            assert picture.format == "PNG" and picture.size == (64, 64)  # the photo's size
            np.testing.assert_array_equal(np.asarray(picture),
                                          overlay(load_image(record["path"]), heat))
    assert records[0]["label"] == "red" and records[-1]["label"] == "blue"
    assert len({r["overlay"] for r in records}) == len(records)  # nothing overwritten
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}_{m}.{ext}" for stem in (red.stem, red.stem + "_2") for m in NAMES
        for ext in ("png", "npy"))

    records = explain_files(tiny_run, [red], class_name="green", out=out)
    assert records[0]["method"] == "gradcam" and records[0]["label"] == "red"
    assert records[0]["explained_class"] == "green"
    with pytest.raises(ConfigError, match="red, green, blue|blue, green, red"):
        explain_files(tiny_run, [red], class_name="purple", out=out)
    with pytest.raises(ConfigError, match="gradcam"):
        explain_files(tiny_run, [red], methods=["lime"], out=out)
    with pytest.raises(ImageError, match="not_an_image.txt"):
        bad = tmp_path / "not_an_image.txt"
        bad.write_text("hello")
        explain_files(tiny_run, [bad], out=out)
