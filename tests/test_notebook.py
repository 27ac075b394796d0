"""The notebooks run top to bottom, so they cannot rot."""

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str, folder: Path) -> list[dict]:
    """Runs `notebooks/NAME` in `folder`; returns its code cells' outputs (no errors)."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(folder)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code"
               for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    return outputs


def pictures(outputs: list[dict]) -> list[dict]:
    return [o for o in outputs if "image/png" in o.get("data", {})]


def test_quickstart_notebook_runs(tmp_path):
    assert pictures(execute("quickstart.ipynb", tmp_path)), \
        "the confusion matrix was not shown"


def test_inside_a_cnn_notebook_runs(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_RUN", str(tiny_run.path))
    assert len(pictures(execute("inside_a_cnn.ipynb", tmp_path))) >= 5
    assert os.listdir(tmp_path / "inspect")
