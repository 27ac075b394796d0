"""The hardware choices: mixed precision, the default batch, a mixed-precision model."""

import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from transferkit import layout
from transferkit.accelerator import CPU_BATCH, GPU_BATCH, Accelerator, detect, precision
from transferkit.backbones import get_backbone
from transferkit.config import TrainConfig
from transferkit.errors import ConfigError
from transferkit.export import export_run
from transferkit.model import build_classifier
from transferkit.run import load_run


@pytest.mark.parametrize("device, choice, mixed", [
    (Accelerator(), "auto", False),                  # CPU: float16 is slower there
    (Accelerator(1, (8, 0)), "auto", True),          # A100: tensor cores
    (Accelerator(2, (7, 0)), "auto", True),          # V100
    (Accelerator(1, (6, 1)), "auto", False),         # P100/GTX 10xx: no tensor cores
    (Accelerator(1, None), "auto", False),           # capability unknown
    (Accelerator(), "on", True),
    (Accelerator(1, (8, 0)), "off", False),
])
def test_mixed_precision_choice(device, choice, mixed):
    assert device.mixed_precision(choice) is mixed


def test_default_batch_per_device():
    assert Accelerator().default_batch == CPU_BATCH == 32
    assert Accelerator(1, (8, 0)).default_batch == GPU_BATCH == 128


def test_config_resolves_the_device_defaults(tmp_path):
    # What TensorFlow sees decides: CPU_BATCH in float32 on a CPU, the GPU's own choice
    # on a GPU machine.
    gpus = tf.config.list_physical_devices("GPU")
    device = detect()
    assert device.gpus == len(gpus) and device.has_gpu == bool(gpus)
    config = TrainConfig(data=str(tmp_path)).resolved()
    assert (config.batch_size, config.mixed_precision) == ((CPU_BATCH, "off") if not gpus else (
        device.default_batch, "on" if device.mixed_precision("auto") else "off"))
    config = TrainConfig(data=str(tmp_path), batch_size=7, mixed_precision="on").resolved()
    assert (config.batch_size, config.mixed_precision) == (7, "on")
    with pytest.raises(ConfigError, match="--mixed-precision must be auto, on or off"):
        TrainConfig(data=str(tmp_path), mixed_precision="fp16").resolved()
    with pytest.raises(ConfigError, match="--batch-size"):
        TrainConfig(data=str(tmp_path), batch_size=0).resolved()


def test_precision_restores_the_policy_on_error():
    with pytest.raises(RuntimeError):
        with precision(True):
            assert keras.config.dtype_policy().name == "mixed_float16"
            raise RuntimeError
    assert keras.config.dtype_policy().name == "float32"


def test_mixed_precision_classifier_saves_loads_and_exports(tiny_run, tmp_path):
    """The tiny run's classifier rebuilt under `mixed_float16` (its weights: variables
    stay float32): float32 probabilities, and model.keras loads and exports with parity.
    (Training itself under the policy is for a GPU: float16 on a CPU is far too slow
    for a test.)"""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.path, run_dir, ignore=shutil.ignore_patterns("export"))
    with precision(True):
        model = build_classifier(get_backbone(tiny_run.config.backbone),
                                 len(tiny_run.class_names), tiny_run.image_size, None)
    assert keras.config.dtype_policy().name == "float32"
    model.set_weights(tiny_run.model.get_weights())
    assert model.get_layer("Conv1").dtype_policy.name == "mixed_float16"
    assert model.get_layer("predictions").dtype_policy.name == "float32"
    batch = tiny_run.preprocess(sorted(tiny_run.split_paths("test"))[:4])
    probabilities = model.predict_on_batch(batch)
    assert probabilities.dtype == np.float32
    # float16 activations: close to the float32 model, not equal.
    np.testing.assert_allclose(probabilities, tiny_run.model.predict_on_batch(batch),
                               atol=0.05)
    model.save(run_dir / layout.MODEL_FILE)
    loaded = load_run(run_dir).model
    assert loaded.get_layer("predictions").dtype_policy.name == "float32"
    np.testing.assert_allclose(loaded.predict_on_batch(batch), probabilities, atol=1e-6)
    report = export_run(run_dir, formats=("savedmodel",), n_parity=4, verbose=0)
    assert report["checked"]
    assert report["savedmodel"]["serving_default"]["max_abs_diff"] < 1e-4
