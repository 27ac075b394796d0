"""The run report: every section, every embedded image decodes, optional parts only when
present, and the page in a real browser (Chromium, headless; see test_browser.py).

Set `TRANSFERKIT_REPORT` to a report.html to screenshot that one in the browser test
(the README's screenshot), and `TRANSFERKIT_ARTIFACTS` to keep the screenshots.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import gradio as gr
import matplotlib
import numpy as np
import pytest
from PIL import Image

from test_browser import TIMEOUT_MS, artifacts, browser  # noqa: F401  (fixtures)
import transferkit
from transferkit import layout
from transferkit.report import write_run_report

matplotlib.use("Agg")

ALWAYS = ("summary", "data", "issues", "plan", "training", "metrics", "confusion",
          "per-class", "wrong")
OPTIONAL = ("fine-tuning", "export", "calibration", "embedding")
DATA_URI = re.compile(r'src="data:image/(png|jpeg);base64,([^"]+)"')


def section_ids(page: str) -> set[str]:
    return set(re.findall(r'<(?:section|div) id="([^"]+)"', page))


def decoded_images(page: str) -> list[Image.Image]:
    images = []
    for kind, payload in DATA_URI.findall(page):
        image = Image.open(io.BytesIO(base64.b64decode(payload)))
        image.load()  # a truncated or corrupt payload raises here
        assert image.format.lower() == kind
        images.append(image)
    return images


def test_train_writes_the_report_with_every_section(tiny_run):
    page = (tiny_run.path / layout.REPORT_FILE).read_text(encoding="utf-8")
    ids = section_ids(page)
    assert set(ALWAYS) <= ids
    assert not ids & {"fine-tuning", "export", "embedding"}  # none of them made
    # Calibration: there exactly when training calibrated the run (trust.json).
    assert ("calibration" in ids) == (tiny_run.path / layout.TRUST_FILE).is_file()
    assert "http://" not in page and "https://" not in page  # nothing from the network
    images = decoded_images(page)
    # Class balance, curves, one thumbnail per test image (cells), and the wrong ones.
    assert len(images) >= 2 + tiny_run.metrics["n_test"]
    # Every confusion-matrix cell links to the list of its images.
    links = set(re.findall(r'href="#(cell-\d+-\d+)"', page))
    assert links and links <= set(re.findall(r'<details id="(cell-\d+-\d+)"', page))
    assert f"{tiny_run.metrics['accuracy']:.3f}" in page


def test_optional_parts_render_when_their_files_exist(tiny_run, tmp_path):
    import matplotlib.pyplot as plt

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.path, run_dir, ignore=shutil.ignore_patterns(
        layout.FEATURES_DIR, layout.REPORT_FILE, layout.CALIBRATION_PNG,
        layout.RISK_COVERAGE_PNG, layout.TRUST_FILE, layout.DATA_ISSUES_FILE))
    bare = write_run_report(run_dir).read_text(encoding="utf-8")
    assert section_ids(bare) & set(OPTIONAL) == set()  # a run without any still renders
    assert "issues" not in section_ids(bare)  # nor without the doctor's files

    def picture(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [0, 1])
        fig.savefig(path)
        plt.close(fig)

    (run_dir / layout.TRUST_FILE).write_text(json.dumps({"temperature": 1.7}))
    picture(run_dir / layout.CALIBRATION_PNG)
    picture(run_dir / layout.INSPECT_DIR / layout.EMBEDDING_PNGS[0])
    (run_dir / layout.EXPORT_DIR).mkdir()
    (run_dir / layout.EXPORT_DIR / layout.PARITY_FILE).write_text(json.dumps(
        {"checked": True, "n_images": 8, "tflite": {"max_abs_diff": 3e-6,
                                                    "top1_agreement": 1.0}}))
    page = write_run_report(run_dir).read_text(encoding="utf-8")
    ids = section_ids(page)
    assert {"export", "calibration", "embedding"} <= ids
    assert "temperature: 1.7" in page and "top1_agreement" in page
    assert len(decoded_images(page)) == len(decoded_images(bare)) + 2  # both, embedded


def test_a_fine_tuned_run_has_its_fine_tuning_section(fine_tuned_run, tmp_path):
    page = write_run_report(fine_tuned_run, tmp_path / "r.html").read_text()
    assert "fine-tuning" in section_ids(page)
    assert "Top 1 of" in page
    decoded_images(page)


def test_report_command_rebuilds_it(tiny_run, tmp_path, capsys):
    from transferkit import cli

    out = tmp_path / "again.html"
    assert cli.main(["report", str(tiny_run.path), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert set(ALWAYS) <= section_ids(out.read_text())
    assert cli.main(["report", str(tmp_path / "nothing")]) == 2


def test_the_model_tab_shows_the_training_curves(tiny_run):
    from transferkit.demo import build_demo

    app = build_demo(tiny_run.path)
    plots = [b for b in app.blocks.values()
             if isinstance(b, gr.Plot) and b.label == "Training curves"]
    assert len(plots) == 1
    assert plots[0].value  # the figure, serialized


PLOTTING = """
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
matplotlib.use("svg")  # a notebook user's choice
import numpy as np
import pandas as pd

import transferkit.experiments.plot, transferkit.inspect
from transferkit.evaluate import plot_confusion_matrix
from transferkit.inspect.depth_probe import probe_figure
from transferkit.report.plots import class_balance, png_bytes
from transferkit.trust.abstain import plot_risk_coverage, risk_coverage

out = Path(sys.argv[1])
plot_confusion_matrix(np.array([[3, 1], [0, 2]]), ["a", "b"], out / "confusion.png")
plot_risk_coverage(risk_coverage(np.array([.9, .6, .3]), np.array([1, 1, 0])),
                   out / "risk.png", 0.5, 2 / 3, 1.0)
(out / "balance.png").write_bytes(png_bytes(class_balance(pd.DataFrame(
    {"path": ["x", "y"], "class": ["a", "b"], "split": ["train", "test"]}))))
probe_figure(["block_1"], {"trained": [0.5]}).savefig(out / "probe.png")
print(matplotlib.get_backend())
"""


def test_plotting_leaves_the_callers_matplotlib_backend_alone(tmp_path):
    root = Path(transferkit.__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", PLOTTING, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "svg"
    for name in ("confusion", "risk", "balance", "probe"):
        assert Image.open(tmp_path / f"{name}.png").format == "PNG"
    # And no module selects a backend or touches pyplot's global state.
    for path in (root / "transferkit").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"matplotlib\.use\(|import matplotlib\.pyplot|"
                             r"from matplotlib import pyplot", text), path


def test_the_report_in_a_real_browser(browser, tiny_run, artifacts):  # noqa: F811 (fixtures)
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    report = Path(os.environ.get("TRANSFERKIT_REPORT",
                                 tiny_run.path / layout.REPORT_FILE)).resolve()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, requests = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(report.as_uri())
    expect(page.get_by_role("heading", name="Confusion matrix (test split)")).to_be_visible()
    for name in ("The data", "Training curves", "Per class"):
        expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
    # Every picture decoded by the browser itself (naturalWidth 0: broken).
    widths = page.locator("img").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert widths and min(widths) > 0
    page.screenshot(path=str(artifacts / "report.png"), full_page=False)
    # A cell of the confusion matrix opens the list of its images.
    link = page.locator("table.confusion a").first
    target = link.get_attribute("href")
    link.click()
    page.locator(f"{target} summary").click() if not page.locator(target).evaluate(
        "d => d.open") else None
    expect(page.locator(f"{target} img").first).to_be_visible()
    # Readable on a phone: nothing wider than the screen but the scrollable tables.
    phone = browser.new_page(viewport={"width": 390, "height": 844})
    phone.goto(report.as_uri())
    overflow = phone.evaluate("document.documentElement.scrollWidth")
    assert overflow <= 390 + 1, overflow
    phone.screenshot(path=str(artifacts / "report-phone.png"))
    assert not errors, errors
    assert all(u.startswith(("file:", "data:")) for u in requests), requests


def test_classification_metrics_known_answers():
    from transferkit.evaluate import classification_metrics

    # Image 1 right at 0.8, image 2 a tie (argmax: class 0, wrong) at 0.5 for its class:
    # accuracy 1/2; log loss -(ln 0.8 + ln 0.5) / 2; class 2 never appears but counts.
    found = classification_metrics([0, 1], np.array([[0.8, 0.2, 0.0], [0.5, 0.5, 0.0]]),
                                   ["a", "b", "c"])
    assert found["accuracy"] == 0.5 and found["n_images"] == 2
    assert found["log_loss"] == pytest.approx(-(np.log(0.8) + np.log(0.5)) / 2)
