"""Killed runs resume: kill -9 a training process in phase 1 (storing features) or in
phase 2 (fine-tuning), run the same command again, and it continues where it stopped.

The killed runs are real `python -m transferkit train` processes; the same command is
then run again in-process (`transferkit.cli.main`), where the test can watch what is
recomputed.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from killing import KILL_AFTER_FIRST_BACKUP

import transferkit
import transferkit.features
import transferkit.rundir
import transferkit.training
from transferkit.cli import main
from transferkit.config import TrainConfig
from transferkit.engine import backup
from transferkit.errors import RunError
from transferkit.features import FeatureStore
from transferkit.rundir import prepare_run_dir
from transferkit.run import run_state
from transferkit.testing import make_color_folder

# os.environ holds conftest's KERAS_HOME (offline ImageNet weights) for the subprocesses.
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
PHASE1 = ["--image-size", "64", "--strategy", "feature-extract", "--augment-copies", "1",
          "--head-epochs", "30"]
FINE_TUNE_EPOCHS = 2
PHASE2 = ["--image-size", "64", "--unfreeze", "1", "--fine-tune-epochs", str(FINE_TUNE_EPOCHS),
          "--augment-copies", "0", "--head-epochs", "30"]



@pytest.fixture(scope="module")
def colors(tmp_path_factory):
    return make_color_folder(tmp_path_factory.mktemp("colors") / "data", n_per_class=30,
                             size=48)


def train_again(capsys, colors, run, options, *extra) -> str:
    """The same command again, in-process; returns what it printed."""
    assert main(["train", str(colors), "--out", str(run), *options, *extra]) == 0
    return capsys.readouterr().out


def stored_features(run) -> dict[str, int]:
    """Finished feature-store entries and chunks (not temporary files): path → mtime."""
    root = run / "features"
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.glob("*/**/*.npy")
            if not p.name.startswith(".")}


def assert_finished_well(run, phases: dict[int, int]) -> None:
    """Complete, learned the colours, and one history row per epoch (no gaps, no repeats)."""
    assert run_state(run) == "complete"
    assert transferkit.load_run(run).class_names == ["blue", "green", "red"]
    assert json.loads((run / "metrics.json").read_text())["accuracy"] >= 0.8
    history = pd.read_csv(run / "history.csv")
    for phase, n_epochs in phases.items():
        epochs = history.loc[history["phase"] == phase, "epoch"].tolist()
        want = n_epochs or len(epochs)  # phase 1 may stop early
        assert epochs == list(range(1, want + 1)), (phase, epochs)
    assert not (run / "checkpoints").exists()
    # The plain features of every image stay; the augmented views are dropped. A
    # fine-tuned model's own features are stored too: calibration fits its unknown
    # score on them (with frozen features they are the ImageNet ones).
    kept = ["final_64px_plain"] if 2 in phases else []
    assert sorted(p.name for p in (run / "features").iterdir()) == kept + ["imagenet_64px_plain"]


class Reached(Exception):
    """Raised where a test stops a training (once what it checks is decided)."""


def stop_at_phase1(monkeypatch) -> None:
    """Phase 1 raises `Reached` instead of training: the audit, the doctor, the split
    and its check against the folder have run (the full resume is the kill tests')."""
    def train_head(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(transferkit.training, "_train_head", train_head)


def test_kill_while_storing_features_then_the_same_command_resumes(colors, tmp_path,
                                                                   capsys, monkeypatch):
    run = tmp_path / "run"
    with open(tmp_path / "killed.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "transferkit", "train", str(colors), "--out", str(run),
             *PHASE1], stdout=log, stderr=subprocess.STDOUT, env=ENV)
        deadline = time.monotonic() + 240
        while not stored_features(run):
            assert process.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no stored features after 240 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
    before = stored_features(run)
    assert not (run / "checkpoints" / "phase1.npz").exists()  # killed in phase 1
    assert run_state(run) == "running"

    # Watch which entries the resumed run recomputes, and their mtimes when it reads them.
    computed, seen = [], {}
    dataset = transferkit.features.image_dataset
    monkeypatch.setattr(transferkit.features, "image_dataset",
                        lambda *a, **k: computed.append(1) or dataset(*a, **k))
    real_get = FeatureStore.get

    def spy(self, key, *args, **kwargs):
        n = len(computed)
        done = f"{key.name}/features.npy"
        features = real_get(self, key, *args, **kwargs)
        seen[key.name] = (len(computed) > n, before.get(done),
                          (self.root / done).stat().st_mtime_ns)
        return features

    monkeypatch.setattr(FeatureStore, "get", spy)
    out = train_again(capsys, colors, run, PHASE1)

    assert f"Resuming the unfinished run in {run}" in out
    assert sorted(seen) == ["imagenet_64px_aug1", "imagenet_64px_plain"]
    for name, (recomputed, mtime_at_kill, mtime_now) in seen.items():
        # Stored before the kill (whole, or its one chunk): read back, not recomputed.
        finished = any(k.startswith(f"{name}/") for k in before)
        assert recomputed != finished, name
        if mtime_at_kill is not None:
            assert mtime_now == mtime_at_kill, name
    assert_finished_well(run, {1: 0})


@pytest.fixture(scope="module")
def killed_in_fine_tuning(colors, tmp_path_factory):
    """A run killed at the end of its first fine-tuning epoch (do not modify: copy it)."""
    run = tmp_path_factory.mktemp("killed") / "run"
    result = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_FIRST_BACKUP, "train", str(colors), "--out",
         str(run), *PHASE2], capture_output=True, text=True, env=ENV, timeout=400)
    assert result.returncode == -signal.SIGKILL, (result.stdout + result.stderr)[-3000:]
    assert run_state(run) == "running"
    assert backup.load(run / "checkpoints" / "phase1.npz").state.finished
    assert backup.load(run / "checkpoints" / "phase2.npz").state.epoch == 1
    return run


@pytest.fixture
def killed_copy(killed_in_fine_tuning, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(killed_in_fine_tuning, run, symlinks=True)
    return run


def test_kill_while_fine_tuning_then_the_same_command_continues(colors, killed_copy,
                                                                capsys):
    """Phase 1 is reused, phase 2 goes on from epoch 2, and history.csv has each epoch
    once. (The kill comes right after the epoch-1 backup: if the history row of that
    epoch is written only after the backup, it is lost here.)"""
    out = train_again(capsys, colors, killed_copy, PHASE2)
    assert f"Resuming the unfinished run in {killed_copy}" in out
    assert "Phase 1: reusing the trained head" in out
    epochs_run = re.findall(rf"^Epoch (\d+)/{FINE_TUNE_EPOCHS}$", out, re.MULTILINE)
    assert epochs_run == [str(e) for e in range(2, FINE_TUNE_EPOCHS + 1)]  # not from 1
    assert_finished_well(killed_copy, {1: 0, 2: FINE_TUNE_EPOCHS})


def test_backup_cut_short_by_the_kill_does_not_block_the_run(colors, killed_copy, capsys):
    """A backup cut short (a disk that lost its end) must not block the run: running
    the same command again still finishes (phase 2 from its start)."""
    saved = killed_copy / "checkpoints" / "phase2.npz"
    saved.write_bytes(saved.read_bytes()[:saved.stat().st_size // 2])
    out = train_again(capsys, colors, killed_copy, PHASE2)
    assert "Phase 1: reusing the trained head" in out
    assert_finished_well(killed_copy, {1: 0, 2: FINE_TUNE_EPOCHS})


def test_a_finished_fine_tuning_is_restored_and_said_so(colors, killed_copy, capsys,
                                                       monkeypatch):
    """Killed after phase 2 ended (while evaluating): the same command restores the
    fine-tuned weights and says so, instead of announcing a fine-tuning it skips."""
    path = killed_copy / "checkpoints" / "phase2.npz"
    saved = backup.load(path)
    saved.state.finished = True
    backup.save(path, saved.state, saved.weights, [], [])

    def finish_run(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(transferkit.training, "finish_run", finish_run)
    with pytest.raises(Reached):
        main(["train", str(colors), "--out", str(killed_copy), *PHASE2])
    out = capsys.readouterr().out
    assert "Phase 1: reusing the trained head" in out
    assert "Phase 2: reusing the fine-tuned weights" in out
    assert "Phase 2: fine-tuning" not in out and "Epoch" not in out


def test_an_unfinished_run_cannot_be_loaded(killed_in_fine_tuning, colors, capsys):
    with pytest.raises(RunError, match="is unfinished .*run the same train command again"):
        transferkit.load_run(killed_in_fine_tuning)
    image = sorted((colors / "red").glob("*.png"))[0]
    assert main(["predict", str(killed_in_fine_tuning), str(image)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is unfinished" in err


def test_an_unfinished_run_with_other_options_is_refused(colors, killed_copy, capsys):
    files = sorted(p.relative_to(killed_copy) for p in killed_copy.rglob("*"))
    options = [*PHASE2[:-1], "20"]  # --head-epochs 20 instead of 30
    assert main(["train", str(colors), "--out", str(killed_copy), *options]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "holds an unfinished run with other options (head_epochs: 30 before, 20 now)" \
        in err
    assert "--overwrite" in err
    assert sorted(p.relative_to(killed_copy) for p in killed_copy.rglob("*")) == files


def test_overwrite_starts_an_unfinished_run_again(colors, killed_copy, capsys, monkeypatch):
    """Stopped as soon as phase 1 would train: it does, so nothing old was reused. Its
    options (--image-size given: final from the start) are written once."""
    stop_at_phase1(monkeypatch)
    written = []
    for module in (transferkit.rundir, transferkit.training):
        monkeypatch.setattr(module, "write_json", lambda path, value, real=module.write_json:
                            written.append(Path(path).name) or real(path, value))
    with pytest.raises(Reached):
        main(["train", str(colors), "--out", str(killed_copy), *PHASE2, "--overwrite"])
    assert "Resuming" not in capsys.readouterr().out
    assert not (killed_copy / "checkpoints").exists()
    assert run_state(killed_copy) == "running"
    assert written.count("config.json") == 1


def test_run_stopped_before_writing_its_options_starts_afresh(tmp_path, colors):
    """run.json is written before config.json: "running" without config.json means no
    work was done yet, so it is a new run, not "not a run directory"."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"state": "running"}')
    config = TrainConfig(data=str(colors), image_size=64).resolved()
    assert prepare_run_dir(run, config, overwrite=False) is False
    assert json.loads((run / "config.json").read_text())["image_size"] == 64
    (run / "config.json").write_text("{trunc")
    with pytest.raises(RunError, match="config.json cannot be read.*--overwrite"):
        prepare_run_dir(run, config, overwrite=False)


# Runs read and resumed from other working directories; folders changed under a run.
TINY = ["--backbone", "mobilenet_v2_0.35", "--image-size", "96", "--strategy",
        "feature-extract", "--augment-copies", "1"]  # conftest's tiny_run


def test_the_data_path_is_stored_absolute(tmp_path, monkeypatch):
    """`cd parent && train sub` must not mean `/sub` to a command started from `/`. A
    run that stored `sub` before resumes from the folder it meant (`.` then)."""
    make_color_folder(tmp_path / "sub", n_per_class=1, size=8)
    monkeypatch.chdir(tmp_path)
    config = TrainConfig.from_options("sub", {"image_size": 64})
    assert config.data == str(tmp_path / "sub")
    assert TrainConfig(data="tfds:beans").resolved().data == "tfds:beans"
    run = tmp_path / "run"
    assert prepare_run_dir(run, config, overwrite=False) is False
    older = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(dict(older, data="sub")))
    assert prepare_run_dir(run, config, overwrite=False) is True


def test_predict_samples_from_another_working_directory(tiny_run, monkeypatch, capsys):
    monkeypatch.chdir("/")
    assert main(["predict", str(tiny_run.path), "--samples", "3"]) == 0
    printed = [Path(line.split(": ")[0]) for line in capsys.readouterr().out.splitlines()]
    splits = tiny_run.splits.set_index("path")
    rows = splits.loc[[p.relative_to(tiny_run.data_folder).as_posix() for p in printed]]
    assert list(rows["split"]) == ["test"] * 3  # the run's own test images,
    assert sorted(rows["class"]) == ["blue", "green", "red"]  # one of each class


def test_an_older_run_with_a_relative_path_is_found_from_its_folder(tiny_run, tmp_path,
                                                                   monkeypatch, capsys):
    """Runs made before the path was stored absolute: the folder above the run holding
    its images; none: one line naming the relative path and what to do."""
    shutil.copytree(tiny_run.data_folder, tmp_path / "old" / "sub")
    shutil.copytree(tiny_run.path, tmp_path / "old" / "run")
    config_file = tmp_path / "old" / "run" / "config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps(dict(config, data="sub")))
    monkeypatch.chdir("/")
    assert main(["predict", str(tmp_path / "old" / "run"), "--samples", "2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and all(line.startswith(str(tmp_path / "old" / "sub"))
                                     for line in printed)
    config_file.write_text(json.dumps(dict(config, data="gone")))
    assert main(["predict", str(tmp_path / "old" / "run"), "--samples", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"test images are not under {Path('/gone')} any more; its config.json names " \
           "the relative path 'gone'" in err


def test_a_resume_from_elsewhere_uses_the_folder_the_run_started_on(tiny_run, tmp_path,
                                                                    monkeypatch, capsys):
    """Another folder of the same relative name is refused (it used to be trained on);
    the run's own folder, named from any directory, resumes it: its audit matches the
    split, so the run goes on to phase 1 (the other folder's 10 images a class would
    be refused as a changed folder)."""
    data = tiny_run.data_folder
    shutil.copytree(tiny_run.path, tmp_path / "run")
    (tmp_path / "run" / "run.json").write_text('{"state": "running"}')  # as if killed
    make_color_folder(tmp_path / "elsewhere" / data.name, n_per_class=10, size=32, seed=5)
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["train", data.name, "--out", str(tmp_path / "run"), *TINY]) == 2
    err = capsys.readouterr().err
    assert f"(data: '{data}' before, '{tmp_path / 'elsewhere' / data.name}' now)" in err
    stop_at_phase1(monkeypatch)
    with pytest.raises(Reached):
        main(["train", str(data), "--out", str(tmp_path / "run"), *TINY])
    assert f"Resuming the unfinished run in {tmp_path / 'run'}" in capsys.readouterr().out
    assert (tmp_path / "run" / "splits.csv").read_text() == \
        (tiny_run.path / "splits.csv").read_text()


@pytest.mark.parametrize("change, counts", [
    ("remove 3 red, move 2 green to blue", "3 removed, 2 moved to another class, 0 added"),
    ("add 2 blue", "0 removed, 0 moved to another class, 2 added")])
def test_a_folder_changed_since_the_split_is_refused_in_one_line(tiny_run, tmp_path,
                                                                 capsys, change, counts):
    """Resuming on it used to fail deep inside (`KeyError: [...] not in index`), or
    would train on images no split holds."""
    data, run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(tiny_run.data_folder, data)
    shutil.copytree(tiny_run.path, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(dict(config, data=str(data))))
    (run / "run.json").write_text('{"state": "running"}')  # as if killed
    if change.startswith("remove"):
        for path in sorted((data / "red").iterdir())[:3]:
            path.unlink()
        for path in sorted((data / "green").iterdir())[:2]:
            path.rename(data / "blue" / path.name)
    else:
        make_color_folder(tmp_path / "more", {"blue": (40, 60, 200)}, n_per_class=2,
                          size=32, seed=9)
        for path in (tmp_path / "more" / "blue").iterdir():
            path.rename(data / "blue" / f"new_{path.name}")
    assert main(["train", str(data), "--out", str(run), *TINY]) == 2
    assert capsys.readouterr().err == (
        "transferkit: error: the data folder changed since this run split it: "
        f"{counts}; pass --overwrite to start again on the folder as it is, or restore "
        "it\n")
    assert run_state(run) == "running"
    assert (run / "splits.csv").read_text() == (tiny_run.path / "splits.csv").read_text()
