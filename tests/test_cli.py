"""The command line: every wrong invocation is one readable error line and a non-zero exit.

Run in-process through `transferkit.cli.main` (fast, and capsys sees exactly what a user
sees), except for the one check that `python -m transferkit` is the console command.
"""

import re
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import transferkit.training
from transferkit.backbones import BACKBONES
from transferkit.cli import main
from transferkit.run import run_state


def cli(capsys, *argv):
    """Runs `transferkit ARGV` in-process: (exit status, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    assert lines[0].startswith("transferkit: error: "), lines[0]
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def usage_error(capsys, *argv) -> str:
    """An argparse rejection: exit status 2 and the reason as the last stderr line."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


# --- train: bad data, options and output folders ---------------------------------------

def test_missing_data_folder_is_refused_before_a_run_directory_is_made(capsys, tmp_path):
    """Else the half-made run would remember the wrong path and refuse the fixed command."""
    code, out, err = cli(capsys, "train", tmp_path / "no_such_folder", "--out", tmp_path / "run")
    assert code == 2 and out == ""
    assert_one_error_line(err, "data folder not found", "no_such_folder")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["train", "audit"])
def test_a_file_given_instead_of_a_folder(capsys, tmp_path, command):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff")
    extra = ["--out", tmp_path / "run"] if command == "train" else []
    code, _, err = cli(capsys, command, photo, *extra)
    assert code == 2
    assert_one_error_line(err, "photo.jpg is a file, not a folder")
    assert not (tmp_path / "run").exists()


def test_unknown_backbone_lists_the_known_names(capsys, color_folder, tmp_path):
    code, _, err = cli(capsys, "train", color_folder, "--out", tmp_path / "run",
                       "--backbone", "resnet9000")
    assert code == 2
    line = assert_one_error_line(err, "unknown backbone 'resnet9000'")
    assert all(name in line for name in BACKBONES)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("size", ["0", "8", "-64", "5000"])
def test_image_size_out_of_range(capsys, color_folder, tmp_path, size):
    """0 included: it used to mean "the backbone's default" and trained at 224 silently."""
    code, _, err = cli(capsys, "train", color_folder, "--out", tmp_path / "run",
                       "--image-size", size)
    assert code == 2
    assert_one_error_line(err, f"--image-size {size} is out of range", "32 to 1024")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option, value", [("--val-split", "0"), ("--val-split", "1.5"),
                                           ("--test-split", "-0.1"), ("--test-split", "1"),
                                           ("--val-split", "half")])
def test_split_fraction_outside_zero_one(capsys, color_folder, tmp_path, option, value):
    line = usage_error(capsys, "train", color_folder, "--out", tmp_path / "run", option, value)
    assert line.startswith("transferkit train: error: argument " + option), line
    assert "between 0 and 1" in line or "not a number" in line
    assert not (tmp_path / "run").exists()


def test_splits_that_leave_no_training_data(capsys, color_folder, tmp_path):
    code, _, err = cli(capsys, "train", color_folder, "--out", tmp_path / "run",
                       "--val-split", "0.5", "--test-split", "0.45")
    assert code == 2
    assert_one_error_line(err, "at least 10% of the images for training")


def test_seed_out_of_range_is_an_error_not_a_traceback(capsys, color_folder, tmp_path):
    code, _, err = cli(capsys, "train", color_folder, "--out", tmp_path / "run",
                       "--seed", "-1")
    assert code == 2
    assert_one_error_line(err, "--seed must be between 0 and 2**32 - 1")
    assert not (tmp_path / "run").exists()


def test_output_folder_below_a_file_cannot_be_written(capsys, color_folder, tmp_path):
    """`out/file.txt/run` fails for root too (chmod would not stop root)."""
    (tmp_path / "file.txt").write_text("not a folder")
    code, _, err = cli(capsys, "train", color_folder, "--out", tmp_path / "file.txt" / "run",
                       "--image-size", "64")
    assert code == 2
    assert_one_error_line(err, "cannot write", "file.txt is a file, not a folder")


def test_output_folder_that_is_a_file(capsys, color_folder, tmp_path):
    (tmp_path / "run").write_text("not a folder")
    code, _, err = cli(capsys, "train", color_folder, "--out", tmp_path / "run")
    assert code == 2
    assert_one_error_line(err, "is a file; choose a folder")


def test_output_folder_holding_other_files_is_not_touched(capsys, color_folder, tmp_path):
    out = tmp_path / "documents"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    code, _, err = cli(capsys, "train", color_folder, "--out", out, "--image-size", "64")
    assert code == 2
    assert_one_error_line(err, "not empty and is not a transferkit run directory")
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


def test_audit_csv_below_a_file_cannot_be_written(capsys, color_folder, tmp_path):
    (tmp_path / "file.txt").write_text("not a folder")
    code, _, err = cli(capsys, "audit", color_folder, "--csv",
                       tmp_path / "file.txt" / "audit.csv")
    assert code == 2
    assert_one_error_line(err, "file.txt is a file, not a folder")


def test_disk_full_while_writing_keeps_finished_work(capsys, color_folder, tmp_path,
                                                    monkeypatch):
    """ENOSPC when audit.csv is renamed into place: one line, no half-written files, and
    what was already written (config.json, run.json) stays, so the run can resume."""
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == "audit.csv":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "run"
    code, _, err = cli(capsys, "train", color_folder, "--out", out, "--image-size", "64")
    assert code == 2
    assert_one_error_line(err, "disk full while writing", "audit.csv",
                          "finished work was kept")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "run.json"]
    assert json.loads((out / "config.json").read_text())["image_size"] == 64
    assert run_state(out) == "running"


def test_disk_full_raised_outside_transferkit_is_one_line(capsys, color_folder, tmp_path,
                                                          monkeypatch):
    """Keras and h5py write some files themselves; their ENOSPC must not be a traceback."""
    def scan_folder(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/weights.h5")

    monkeypatch.setattr(transferkit.training, "scan_folder", scan_folder)
    code, _, err = cli(capsys, "train", color_folder, "--out", tmp_path / "run",
                       "--image-size", "64")
    assert code == 2
    assert_one_error_line(err, "disk full while writing /somewhere/weights.h5")


# --- predict and evaluate ------------------------------------------------------------

def test_predict_on_non_images_names_each_bad_file(capsys, tiny_run, color_folder, tmp_path):
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture")
    good = sorted((color_folder / "red").glob("*.png"))[0]
    code, out, err = cli(capsys, "predict", tiny_run.path, notes, tmp_path / "gone.png", good)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err
    assert lines[0].startswith(f"transferkit: error: {notes}: not an image")
    assert lines[1] == f"transferkit: error: {tmp_path / 'gone.png'}: file not found"
    assert out.strip().splitlines() == [out.strip()]  # one prediction, for the good file
    # Its top class is red (flagged "not sure" / "not one of my classes" or not).
    assert re.match(rf"{re.escape(str(good))}: (not sure; |not one of my classes; )?red ", out)


def test_predict_samples_are_test_images_of_every_class(capsys, tiny_run):
    """What `make demo` runs after training."""
    code, out, err = cli(capsys, "predict", tiny_run.path, "--samples", "4", "--json")
    assert code == 0 and err == ""
    records = json.loads(out)
    test = {str(p) for p in tiny_run.split_paths("test")}
    assert len(records) == 4 and {r["path"] for r in records} <= test
    # The classes in turn: the first three samples are one of each class.
    assert sorted(Path(r["path"]).parent.name for r in records[:3]) == tiny_run.class_names
    assert all(len(r["top_k"]) == 3 for r in records)
    code, out, _ = cli(capsys, "predict", tiny_run.path, "--samples", "2", "--top-k", "1")
    assert code == 0 and len(out.strip().splitlines()) == 2


def test_predict_files_decodes_once_and_batches_the_good_files(tiny_run, color_folder,
                                                              tmp_path, monkeypatch):
    import transferkit.predictors.base
    from transferkit.predictor import load_predictor

    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    good = sorted((color_folder / "green").glob("*.png"))[:5]
    decoded, batches = [], []
    load_image = transferkit.predictors.base.load_image
    monkeypatch.setattr(transferkit.predictors.base, "load_image",
                        lambda p: decoded.append(p) or load_image(p))
    predictor = load_predictor(tiny_run.path)
    graph = predictor.run.trust_graph()  # the run is calibrated: its trust graph runs
    real = graph._eager
    monkeypatch.setattr(graph, "_eager", lambda x: batches.append(len(x)) or real(x))
    records = predictor.predict_files([good[0], notes, *good[1:]], k=2)
    assert [r["path"] for r in records] == [str(p) for p in [good[0], notes, *good[1:]]]
    assert records[1] == {"path": str(notes), "error": "not an image (looks like text)"}
    assert len(decoded) == 6 and batches == [5]
    # The batch gives each file the answer it gets alone.
    expected = tiny_run.top_k(tiny_run.predict(good), k=2)
    got = [r["top_k"] for r in records if "top_k" in r]
    assert [[t["label"] for t in row] for row in got] == \
        [[t["label"] for t in row] for row in expected]
    np.testing.assert_allclose([[t["probability"] for t in row] for row in got],
                               [[t["probability"] for t in row] for row in expected],
                               rtol=1e-5)


def test_explain_methods_repeated_or_comma_separated(capsys, tiny_run, color_folder, tmp_path):
    image = sorted((color_folder / "red").glob("*.png"))[0]
    code, out, _ = cli(capsys, "explain", tiny_run.path, image, "--method", "gradcam,saliency",
                       "--method", "smoothgrad", "--out", tmp_path / "maps", "--json")
    assert code == 0
    records = json.loads(out)
    assert [r["method"] for r in records] == ["gradcam", "saliency", "smoothgrad"]
    assert all(Path(r["overlay"]).is_file() and Path(r["heatmap"]).is_file() for r in records)
    # Without --method: Grad-CAM alone; human-readable lines.
    code, out, _ = cli(capsys, "explain", tiny_run.path, image, "--out", tmp_path / "maps")
    assert code == 0 and out.count("\n") == 1 and ": gradcam: red " in out
    code, _, err = cli(capsys, "explain", tiny_run.path, image, "--method", "lime",
                       "--out", tmp_path / "maps")
    assert code != 0
    assert_one_error_line(err, "unknown explanation method 'lime'")


def test_predict_with_a_missing_run(capsys, color_folder, tmp_path):
    image = sorted((color_folder / "red").glob("*.png"))[0]
    code, out, err = cli(capsys, "predict", tmp_path / "no_run", image)
    assert code == 2 and out == ""
    assert_one_error_line(err, "no_run does not exist")


def test_top_k_must_be_positive(capsys, tiny_run, color_folder):
    image = sorted((color_folder / "red").glob("*.png"))[0]
    line = usage_error(capsys, "predict", tiny_run.path, image, "--top-k", "0")
    assert "argument --top-k: must be at least 1" in line


def test_evaluate_with_classes_unknown_to_the_run(capsys, tiny_run, color_folder, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(color_folder / "red", data / "red")
    shutil.copytree(color_folder / "blue", data / "purple")
    code, out, err = cli(capsys, "evaluate", tiny_run.path, "--data", data)
    assert code == 2 and out == ""
    assert_one_error_line(err, "classes the model was not trained on: ['purple']",
                          "['blue', 'green', 'red']")


def test_evaluate_with_a_folder_that_is_not_a_run(capsys, color_folder, tmp_path):
    code, _, err = cli(capsys, "evaluate", color_folder, "--data", color_folder)
    assert code == 2
    assert_one_error_line(err, "is not a model transferkit can load; pass a run directory")


def test_no_command_is_a_usage_error(capsys):
    assert "required: COMMAND" in usage_error(capsys)


# --- backbones and the two entry points ----------------------------------------------

def test_backbones_json_lists_the_registry_with_cached_flags(capsys, tmp_path,
                                                             monkeypatch):
    from transferkit.backbones import get_backbone, weights_file

    # A Keras cache of our own, holding one weight file (its content is never read).
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / weights_file(get_backbone("mobilenet_v2_0.35"))).touch()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    code, out, _ = cli(capsys, "backbones", "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert list(rows) == list(BACKBONES)
    assert rows["mobilenet_v2_0.35"]["cached"] is True
    assert rows["mobilenet_0.25"]["cached"] is False
    assert rows["mobilenet_v2"]["cached"] is False
    assert rows["resnet50"]["cached"] is None  # file name unknown until Keras tries
    assert rows["efficientnet_b1"]["default_size"] == 240


def test_python_m_transferkit_is_the_console_command():
    console = Path(sys.executable).with_name("transferkit")
    assert console.is_file(), "pip install -e . installs the `transferkit` command"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    results = [subprocess.run([*command, "backbones"], capture_output=True, text=True,
                              env=env, timeout=120)
               for command in ([sys.executable, "-m", "transferkit"], [str(console)])]
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-2000:] for r in results]
    assert results[0].stdout == results[1].stdout
    assert "mobilenet_v2_0.35" in results[0].stdout


def test_two_tensorflow_packages_are_reported_with_the_fix(monkeypatch):
    from importlib import metadata

    from transferkit import packages

    versions = {"tensorflow": "2.21.0", "tensorflow-cpu": "2.21.0"}

    def version(name):
        if name not in versions:
            raise metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(packages.metadata, "version", version)
    message = packages.tensorflow_conflict()
    assert message.startswith("tensorflow==2.21.0 and tensorflow-cpu==2.21.0 are installed")
    assert "pip uninstall -y tensorflow-cpu && pip install --force-reinstall --no-deps " \
           "tensorflow==2.21.0" in message
    del versions["tensorflow-cpu"]
    assert packages.tensorflow_conflict() is None
    assert packages.installed_tensorflows() == ["tensorflow==2.21.0"]


def test_int8_tolerances_outside_0_to_1_are_one_line(tmp_path, capsys):
    # 98 (a percentage) instead of 0.98: refused before any run is opened.
    assert main(["export", str(tmp_path / "no_run"), "--int8-min-agreement", "98"]) == 2
    err = capsys.readouterr().err
    assert "--int8-min-agreement must be a fraction between 0 and 1, got 98.0" in err
    assert main(["export", str(tmp_path / "no_run"), "--int8-max-drop", "-0.1"]) == 2
    assert "--int8-max-drop must be a fraction" in capsys.readouterr().err
