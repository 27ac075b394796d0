"""Untrusted inputs: a tampered model file runs no code; odd paths are only paths."""

import json
import shutil
from pathlib import Path

import keras
import pytest

import transferkit
from transferkit.cli import main
from transferkit.errors import RunError

# Shell syntax that would run `touch pwned` or delete `x` if a path ever reached a shell.
HOSTILE_NAMES = ["$(touch pwned)", "; rm -rf x", "`touch pwned`", "a|b&c>d 'q\" *?[x]"]


@pytest.fixture
def tampered_run(tiny_run, tmp_path):
    """A copy of a finished run whose model.keras was replaced by one with a Lambda layer.

    The Lambda touches `tmp_path/lambda_ran` whenever it is called, so the test can
    tell whether loading ran the code.
    """
    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run)
    marker = tmp_path / "lambda_ran"
    code = f"lambda x: x * float(__import__('pathlib').Path({str(marker)!r}).touch() is None)"
    inputs = keras.Input((96, 96, 3))
    outputs = keras.layers.Dense(3, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(keras.layers.Lambda(eval(code))(inputs)))
    keras.Model(inputs, outputs).save(run / "model.keras")
    assert marker.exists()  # building the model called it once: the Lambda works
    marker.unlink()
    return run, marker


def test_load_run_refuses_a_model_with_a_lambda_layer(tampered_run):
    run, marker = tampered_run
    with pytest.raises(RunError, match="refusing to load .*Lambda layer.*tampered"):
        transferkit.load_run(run)
    assert not marker.exists()


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_cli_refuses_a_tampered_run_in_one_line(tampered_run, color_folder, capsys, command):
    run, marker = tampered_run
    image = sorted((color_folder / "red").glob("*.png"))[0]
    argv = [command, str(run), str(image)] if command == "predict" else \
        [command, str(run), "--data", str(color_folder)]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("transferkit: error: refusing to load")
    assert "Lambda" in lines[0]
    assert not marker.exists()


def test_a_model_file_that_is_not_a_model(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run)
    (run / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(RunError, match="cannot load .*model.keras: not a valid Keras model"):
        transferkit.load_run(run)


@pytest.fixture
def hostile_paths(color_folder, tmp_path, monkeypatch):
    """A data folder and image files whose names are shell syntax, in a scratch cwd.

    The cwd holds a canary file `x` (for `rm -rf x`) and is where `touch pwned` would
    create its file.
    """
    monkeypatch.chdir(tmp_path)
    Path("x").write_text("canary")
    data = tmp_path / HOSTILE_NAMES[0]
    images = []
    for cls in ("red", "green", "blue"):
        for i, (name, source) in enumerate(zip(HOSTILE_NAMES, sorted(
                (color_folder / cls).glob("*.png")))):
            target = data / cls / f"{name} {i}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
            images.append(target)
    yield data, images
    assert Path("x").read_text() == "canary"
    assert not Path("pwned").exists() and not (tmp_path / "pwned").exists()


def test_shell_syntax_in_paths_is_audited_as_plain_names(hostile_paths, capsys):
    data, images = hostile_paths
    assert main(["audit", str(data), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert sorted(r["path"] for r in records) == \
        sorted(p.relative_to(data).as_posix() for p in images)
    assert {r["status"] for r in records} == {"ok"}


def test_shell_syntax_in_paths_is_predicted_and_evaluated(hostile_paths, tiny_run, capsys):
    data, images = hostile_paths
    red = [p for p in images if p.parent.name == "red"]
    assert main(["predict", str(tiny_run.path), *map(str, red)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert [line.rsplit(": ", 1)[0] for line in out] == [str(p) for p in red]
    assert main(["evaluate", str(tiny_run.path), "--data", str(data), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n_images"] == len(images) and metrics["n_skipped"] == 0
