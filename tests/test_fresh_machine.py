"""A machine without ../shared: the suite stops at once with one line saying what to provide."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from transferkit import testing

ROOT = Path(__file__).resolve().parents[1]


def _closed_port() -> tuple[str, int]:
    with socket.socket() as s:  # bound, never listening: a connection is refused at once
        s.bind(("127.0.0.1", 0))
        return "127.0.0.1", s.getsockname()[1]


def test_missing_test_data_names_each_missing_thing(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_SHARED", str(tmp_path / "empty"))
    monkeypatch.delenv("TRANSFERKIT_FLOWERS", raising=False)
    monkeypatch.delenv("TRANSFERKIT_WEIGHTS", raising=False)
    monkeypatch.setattr(testing, "WEIGHTS_HOST", _closed_port())
    problem = testing.missing_test_data(timeout=1)
    assert "\n" not in problem
    assert "TRANSFERKIT_FLOWERS" in problem and str(tmp_path / "empty" / "data") in problem
    assert "TRANSFERKIT_WEIGHTS" in problem

    photos, weights = tmp_path / "photos", tmp_path / "weights"
    (photos / "daisy").mkdir(parents=True)
    weights.mkdir()
    (weights / "w.h5").write_bytes(b"")
    monkeypatch.setenv("TRANSFERKIT_FLOWERS", str(photos))
    assert "TRANSFERKIT_FLOWERS" not in testing.missing_test_data(timeout=1)
    monkeypatch.setenv("TRANSFERKIT_WEIGHTS", str(weights))
    assert testing.missing_test_data(timeout=1) is None


def test_without_local_weights_keras_home_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", "/keras/home/of/the/user")
    assert testing.use_local_weights() is None
    assert os.environ["KERAS_HOME"] == "/keras/home/of/the/user"


def test_pytest_stops_with_one_line_without_shared(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TRANSFERKIT_FLOWERS", "TRANSFERKIT_WEIGHTS")}
    env["TRANSFERKIT_SHARED"] = str(tmp_path)
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(ROOT / "tests" / "test_design.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    lines = [line for line in output.splitlines() if "cannot start" in line]
    assert len(lines) == 1 and "TRANSFERKIT_FLOWERS" in lines[0], output
    assert "passed" not in output and "Traceback" not in output and "assert" not in output
