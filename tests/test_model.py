"""The registry, the flat classifier graph, its blocks, and weight loading."""

import keras
import numpy as np
import pytest

from transferkit.backbones import BACKBONES, get_backbone, weights_file
from transferkit.errors import ConfigError, WeightsError
from transferkit.explain import make_explainers
from transferkit.model import ImagePreprocessing, backbone_blocks, build_classifier, \
    feature_layer_name, is_transferkit_classifier, set_trainable_blocks


def test_registry_has_the_promised_names():
    for name in ["mobilenet_0.25", "mobilenet_v2_0.35", "mobilenet_v2", "mobilenet_v2_1.4",
                 "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
                 "efficientnet_b3", "efficientnet_v2_b2", "efficientnet_v2_s", "resnet50",
                 "resnet50_v2", "inception_v3", "xception", "convnext_tiny", "densenet121"]:
        assert name in BACKBONES
    with pytest.raises(ConfigError, match="mobilenet_v2_0.35"):
        get_backbone("mobilenet_v9")


@pytest.mark.parametrize("mode", ["tf", "caffe", "torch"])
def test_preprocessing_matches_keras(mode):
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = keras.applications.imagenet_utils.preprocess_input(x.copy(), mode=mode)
    np.testing.assert_allclose(ImagePreprocessing(mode)(x), expected, rtol=1e-5, atol=1e-4)


def live_classifier(backbone, size: int, images: np.ndarray) -> keras.Model:
    """A random-weight classifier whose heat maps carry signal, for the sweep below.

    Random weights shrink the activations layer after layer (to 1e-19 in MobileNet's
    last feature map), and maps that small count as constant (all zeros). Batch-norm
    statistics taken from `images` (one training-mode pass at momentum 0) keep each
    layer at unit scale, as trained weights do. Class 1's head weights are made
    positive, so its CAM weights are too.
    """
    keras.utils.set_random_seed(0)
    model = build_classifier(backbone, 3, size, weights=None)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(images, training=True)
    kernel, bias = model.get_layer("predictions").get_weights()
    kernel[:, 1] = np.abs(kernel[:, 1])
    model.get_layer("predictions").set_weights([kernel, bias])
    return model


# Few samples and steps: the sweep checks that every method runs, not its quality.
FAST = {"scorecam": {"top_k": 4}, "smoothgrad": {"samples": 2, "batch_size": 1},
        "integrated-gradients": {"steps": 2, "tolerance": None, "batch_size": 1}}


def _one_per_keras_module() -> list[str]:
    """The smallest backbone of each `keras.applications` module: the builders of one
    module (EfficientNetB0-B3, MobileNet's widths, ...) share their code and differ
    only in width and depth, so one of each covers every architecture's structure."""
    first: dict[str, str] = {}
    for name, backbone in BACKBONES.items():  # registry order: smallest first
        module = getattr(keras.applications, backbone.constructor).__module__
        first.setdefault(module, name)
    return sorted(first.values())


@pytest.mark.parametrize("name", _one_per_keras_module())
def test_every_architecture_is_flat_blocked_and_explainable(name):
    """One classifier per architecture (built once: the sweep dominates the suite's time)."""
    backbone = BACKBONES[name]
    # At its smallest size a valid-padding backbone (Inception) ends in a 1x1 feature
    # map, which locates nothing. Two strides more give 3x3: at 2x2 the batch-norm
    # statistics of two images (8 positions) make Inception's top channels sum to a
    # constant, and Score-CAM's map with them (TF 2.21).
    size = max(64, backbone.min_size + (64 if backbone.min_size > 32 else 32))
    images = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    model = live_classifier(backbone, size, images)
    assert is_transferkit_classifier(model)
    feature = feature_layer_name(model)
    if backbone.last_conv_layer is not None:
        assert feature == backbone.last_conv_layer
    # Blocks never cut a residual branch from its shortcut: the top of the network,
    # from any block boundary, is a model with a single input.
    blocks = backbone_blocks(model)
    assert len(blocks) >= 4
    for block in blocks[-3:]:
        keras.Model(block[0].input, model.output)
    # Flat: the gradient to the inner feature map is one graph from the input. Every
    # method runs on it; one shared graph, traced once per backbone.
    explainers = make_explainers(model, options=FAST)
    for method, explainer in explainers.items():
        maps = explainer(images, 1)
        assert maps.shape == (2, size, size), (name, method)
        assert np.isfinite(maps).all() and maps.min() >= 0, (name, method)
        # A broken method gives zeros, or one map whatever the image.
        np.testing.assert_allclose(maps.max(), 1.0, atol=1e-6, err_msg=f"{name} {method}")
        assert np.abs(maps[0] - maps[1]).max() > 0.05, (name, method)
    [graph] = {id(e.graph): e.graph for e in explainers.values()}.values()
    assert graph.layer_name == feature
    assert graph.backward.experimental_get_tracing_count() == 1, name


def test_a_model_of_other_origin_is_not_taken_for_a_transferkit_classifier():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    other = keras.Model(inputs, keras.layers.Dense(2, name="predictions")(x))
    assert not is_transferkit_classifier(other)  # no preprocess or head_dropout layer


def test_set_trainable_blocks_keeps_batchnorm_frozen():
    model = build_classifier(get_backbone("mobilenet_v2_0.35"), 4, 96, weights=None)
    counts = []
    for n in (0, 1, 3):
        counts.append(set_trainable_blocks(model, n))
        assert all(not layer.trainable for layer in model.layers
                   if isinstance(layer, keras.layers.BatchNormalization))
        assert model.get_layer("predictions").trainable
    assert counts[0] == 2  # head kernel and bias only
    assert counts[0] < counts[1] < counts[2]
    top = backbone_blocks(model)[-1]
    assert any(layer.trainable for layer in top)
    assert not any(layer.trainable for layer in backbone_blocks(model)[0])


def test_imagenet_weights_come_from_the_224_file_at_any_size():
    backbone = get_backbone("mobilenet_v2_0.35")
    model = build_classifier(backbone, 2, 160, weights="imagenet")
    reference = keras.applications.MobileNetV2(input_shape=(224, 224, 3), alpha=0.35,
                                               include_top=False, weights="imagenet")
    np.testing.assert_array_equal(model.get_layer("Conv_1").get_weights()[0],
                                  reference.get_layer("Conv_1").get_weights()[0])


def test_offline_without_cached_weights_names_the_file(monkeypatch):
    from keras.src.utils import file_utils

    def no_network(fname, origin=None, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- no network")

    monkeypatch.setattr(file_utils, "get_file", no_network)
    backbone = get_backbone("mobilenet_v2_1.4")
    with pytest.raises(WeightsError) as error:
        build_classifier(backbone, 2, 96)
    assert weights_file(backbone) in str(error.value)
    assert "models" in str(error.value) and "--weights none" in str(error.value)


def test_weights_path_is_loaded(tmp_path):
    backbone = get_backbone("mobilenet_0.25")
    source = backbone.build(weights=None)
    source.layers[1].set_weights([w + 1.0 for w in source.layers[1].get_weights()])
    path = tmp_path / "backbone.weights.h5"
    source.save_weights(path)
    model = build_classifier(backbone, 2, 96, weights=str(path))
    np.testing.assert_array_equal(model.get_layer(source.layers[1].name).get_weights()[0],
                                  source.layers[1].get_weights()[0])
    with pytest.raises(WeightsError, match="not found"):
        build_classifier(backbone, 2, 96, weights=str(tmp_path / "missing.h5"))
