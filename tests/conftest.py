"""Shared fixtures. Keras must see KERAS_HOME before it is imported: set it here, first."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from transferkit.testing import flowers_dir, make_color_folder, missing_test_data, \
    use_local_weights

KERAS_HOME = use_local_weights()
# TFDS datasets prepared by the tests, and their class folders, stay out of ~/.
SCRATCH = tempfile.mkdtemp(prefix="transferkit-tests-")
os.environ["TFDS_DATA_DIR"] = os.path.join(SCRATCH, "tensorflow_datasets")
os.environ["TRANSFERKIT_CACHE"] = os.path.join(SCRATCH, "cache")


def pytest_configure(config):
    # A machine without the photos or any way to get weights stops here, in one line.
    if problem := missing_test_data():
        pytest.exit(problem, returncode=2)


def pytest_sessionfinish(session, exitstatus):
    if KERAS_HOME:  # None: Keras's own cache, not ours to delete
        shutil.rmtree(KERAS_HOME, ignore_errors=True)
    shutil.rmtree(SCRATCH, ignore_errors=True)


@pytest.fixture(scope="session")
def flowers():
    """The real photo dataset (../shared/data/flowers5 or $TRANSFERKIT_FLOWERS)."""
    return flowers_dir()  # checked by pytest_configure


@pytest.fixture(scope="session")
def color_folder(tmp_path_factory):
    """A small learnable folder: red / green / blue, 12 PNGs each."""
    return make_color_folder(tmp_path_factory.mktemp("colors") / "data")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, color_folder):
    """A finished run (MobileNetV2-0.35 ImageNet weights, 96 px, head only): ~10 s."""
    import transferkit

    out = tmp_path_factory.mktemp("runs") / "tiny"
    return transferkit.train(color_folder, out, backbone="mobilenet_v2_0.35", image_size=96,
                             strategy="feature-extract", augment_copies=1, quiet=True)


@pytest.fixture(scope="session")
def fine_tuned_run(tmp_path_factory):
    """A finished run that fine-tuned its top block for 2 epochs (64 px): ~15 s."""
    import transferkit

    root = tmp_path_factory.mktemp("fine_tuned")
    data = make_color_folder(root / "data", n_per_class=10, size=48, seed=3)
    return transferkit.train(data, root / "run", image_size=64, unfreeze=1,
                             fine_tune_epochs=2, augment_copies=0, head_epochs=3,
                             quiet=True)


TFDS_NAME = "transferkit_test_colors"


@pytest.fixture(scope="session")
def tfds_run(tmp_path_factory, color_folder):
    """A finished run trained from `tfds:NAME`: a real TFDS builder, prepared locally."""
    import transferkit
    from transferkit.testing import register_tfds_folder

    register_tfds_folder(TFDS_NAME, color_folder)
    out = tmp_path_factory.mktemp("runs") / "tfds"
    return transferkit.train(f"tfds:{TFDS_NAME}", out, backbone="mobilenet_v2_0.35",
                             image_size=96, strategy="feature-extract", augment_copies=0,
                             quiet=True)
