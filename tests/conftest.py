"""Shared fixtures. Keras must see KERAS_HOME before it is imported: set it here, first.

The trained runs (`tiny_run`, `fine_tuned_run`, `tfds_run`) and `tiny_export` are built once per test
session, whatever the number of xdist workers: the first worker to ask trains under a file
lock into a folder keyed by a hash of the package source and the fixture's options; the
others wait, then each worker gets its own copy (a test may modify its run).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable

import pytest
from filelock import FileLock

import transferkit.testing
from transferkit.testing import flowers_dir, make_color_folder, missing_test_data, \
    use_local_weights

KERAS_HOME = use_local_weights()
# One scratch folder per test session, shared by pytest and its xdist workers (they inherit
# the variable): the process that made it removes it, after the workers have finished.
_SCRATCH_VARIABLE = "TRANSFERKIT_TEST_SCRATCH"
OWNS_SCRATCH = _SCRATCH_VARIABLE not in os.environ
if OWNS_SCRATCH:
    os.environ[_SCRATCH_VARIABLE] = tempfile.mkdtemp(prefix="transferkit-tests-")
SCRATCH = Path(os.environ[_SCRATCH_VARIABLE])
# TFDS datasets prepared by the tests, and their class folders, stay out of ~/ (shared:
# `tfds_run` reads its class folder from the cache, whichever worker prepared it).
os.environ["TFDS_DATA_DIR"] = str(SCRATCH / "tensorflow_datasets")
os.environ["TRANSFERKIT_CACHE"] = str(SCRATCH / "cache")
# Set it to keep the trained fixtures between sessions (they are keyed by the source).
FIXTURES = Path(os.environ.get("TRANSFERKIT_TEST_FIXTURES") or SCRATCH / "fixtures")


def pytest_configure(config):
    # A machine without the photos or any way to get weights stops here, in one line.
    if problem := missing_test_data():
        pytest.exit(problem, returncode=2)


# The files that take longest, longest first (their tests' summed --durations in a full
# run on 2 workers): xdist's workers take them before the short ones, so that no long
# file starts last while the other worker runs out of work (--dist loadfile runs a
# file on one worker).
LONGEST_FIRST = ["test_resume.py", "test_ensemble.py", "test_distribute.py", "test_train.py",
                 "test_export.py", "test_model.py", "test_faithfulness.py",
                 "test_export_deploy.py", "test_demo.py", "test_inspect2.py", "test_trust.py",
                 "test_report.py", "test_notebook.py", "test_cli.py", "test_accelerator.py",
                 "test_explain.py", "test_budget.py", "test_doctor.py", "test_hostile_train.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable


def pytest_sessionfinish(session, exitstatus):
    if KERAS_HOME:  # None: Keras's own cache, not ours to delete
        shutil.rmtree(KERAS_HOME, ignore_errors=True)
    if OWNS_SCRATCH:
        shutil.rmtree(SCRATCH, ignore_errors=True)


def _source_key() -> str:
    """A hash of what a trained fixture depends on: the package, this file, Keras and TF."""
    digest = hashlib.sha256()
    package = Path(transferkit.testing.__file__).parent
    for file in [*sorted(package.rglob("*.py")), Path(__file__)]:
        digest.update(file.name.encode() + file.read_bytes())
    for dist in ("keras", "tensorflow"):
        digest.update(version(dist).encode())
    return digest.hexdigest()


SOURCE_KEY = _source_key()


def shared(name: str, build: Callable[..., Any], **options) -> Path:
    """The folder `build(folder, **options)` writes, built once for all the workers.

    Args:
        name: The folder's name (its key follows).
        build: Writes the folder; called by one worker, under a file lock.
        **options: JSON-serializable options of `build`, part of the key.

    Returns:
        The folder (shared: copy what a test modifies).
    """
    key = hashlib.sha256((SOURCE_KEY + json.dumps(options, sort_keys=True)).encode())
    folder = FIXTURES / f"{name}-{key.hexdigest()[:16]}"
    done = folder.with_name(folder.name + ".done")
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with FileLock(folder.with_name(folder.name + ".lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a failed build's leftovers
            build(folder, **options)
            done.touch()
    return folder


def trained_copy(tmp_path_factory, name: str, data: str | Path, **options):
    """A copy of the run `transferkit.train(data, ..., **options)`, trained once."""
    import transferkit

    def build(folder, data, **options):
        transferkit.train(data, folder / "run", quiet=True, **options)

    run = tmp_path_factory.mktemp(name) / "run"
    shutil.copytree(shared(name, build, data=str(data), **options) / "run", run)
    return transferkit.load_run(run)


@pytest.fixture(scope="session")
def flowers():
    """The real photo dataset (../shared/data/flowers5 or $TRANSFERKIT_FLOWERS)."""
    return flowers_dir()  # checked by pytest_configure


@pytest.fixture(scope="session")
def color_folder():
    """A small learnable folder: red / green / blue, 12 PNGs each (shared: do not modify)."""
    return shared("colors", lambda folder: make_color_folder(folder / "data")) / "data"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, color_folder):
    """A finished run (MobileNetV2-0.35 ImageNet weights, 96 px, head only): ~10 s."""
    return trained_copy(tmp_path_factory, "tiny", color_folder, backbone="mobilenet_v2_0.35",
                        image_size=96, strategy="feature-extract", augment_copies=1)


@pytest.fixture(scope="session")
def fine_tuned_run(tmp_path_factory):
    """A finished run that fine-tuned its top block for 2 epochs (64 px): ~15 s."""
    data = shared("fine_tuned_data", lambda folder: make_color_folder(
        folder / "data", n_per_class=10, size=48, seed=3)) / "data"
    return trained_copy(tmp_path_factory, "fine_tuned", data, image_size=64, unfreeze=1,
                        fine_tune_epochs=2, augment_copies=0, head_epochs=3)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_run):
    """`tiny_run` exported as SavedModel, TFLite and Keras (parity checked), exported
    once for all the workers: (a copy of the export folder, its parity report)."""
    from transferkit.export import export_run

    built = shared("tiny_export", lambda folder: export_run(
        tiny_run.path, folder / "export", formats=("savedmodel", "tflite", "keras"),
        verbose=0))
    out = tmp_path_factory.mktemp("tiny_export") / "export"
    shutil.copytree(built / "export", out)
    return out, json.loads((out / "parity.json").read_text())


TFDS_NAME = "transferkit_test_colors"


@pytest.fixture(scope="session")
def tfds_run(tmp_path_factory, color_folder):
    """A finished run trained from `tfds:NAME`: a real TFDS builder, prepared locally."""
    from transferkit.testing import register_tfds_folder

    register_tfds_folder(TFDS_NAME, color_folder)
    return trained_copy(tmp_path_factory, "tfds", f"tfds:{TFDS_NAME}",
                        backbone="mobilenet_v2_0.35", image_size=96,
                        strategy="feature-extract", augment_copies=0)
