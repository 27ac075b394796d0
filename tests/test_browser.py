"""The web demo in a real browser: Debian's chromium, headless, driven by Playwright.

CI installs chromium (`apt-get install chromium`); without it this test fails (it does
not skip). Playwright's own browser downloads are never used.

Artifacts (a screenshot of the page with a prediction and its heat map) go to
`$TRANSFERKIT_ARTIFACTS` (default: a pytest temporary folder). Set
`TRANSFERKIT_DEMO_RUN` to a run directory to serve that run instead of the tiny one
(e.g. for the README screenshot).
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path(os.environ.get("TRANSFERKIT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(f"chromium not found at {CHROMIUM}: install it (apt-get install -y "
                    "chromium) or set TRANSFERKIT_CHROMIUM; the browser test needs it",
                    pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def served_run(request):
    from transferkit.run import load_run

    path = os.environ.get("TRANSFERKIT_DEMO_RUN")
    return load_run(path) if path else request.getfixturevalue("tiny_run")


@pytest.fixture(scope="module")
def demo(served_run):
    from transferkit.demo import launch

    app = launch(served_run.path, port=free_port(), block=False, quiet=True)
    yield app
    app.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    folder = os.environ.get("TRANSFERKIT_ARTIFACTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_image_to_label_and_heat_map_in_the_browser(browser, demo, served_run, artifacts,
                                                    tmp_path):
    from playwright.sync_api import expect

    # expect() has its own 5 s default; model work on a busy 2-core machine can take longer.
    expect.set_options(timeout=TIMEOUT_MS)

    # The test image the model is surest of (it makes the clearest screenshot).
    candidates = sorted(served_run.split_paths("test"))[:24]
    probabilities = served_run.predict(candidates)
    best = int(probabilities.max(axis=1).argmax())
    image = candidates[best]
    expected = served_run.class_names[int(probabilities[best].argmax())]

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(demo.local_url)
    expect(page.get_by_role("heading", name=re.compile("transferkit"))).to_be_visible()

    page.locator("#tk-input input[type=file]").set_input_files(str(image))

    top = page.locator("#tk-label [data-testid=label-output-value]")
    expect(top).to_have_text(expected)
    expect(page.locator("#tk-heatmap img")).to_be_visible()
    expect(page.locator("#tk-heatmap [data-testid=block-label]")).to_contain_text(
        f"Grad-CAM · {expected}")
    page.screenshot(path=str(artifacts / "demo.png"), full_page=True)

    # A file that is not an image: a readable reason in the page, no stale heat map,
    # and the app serves on.
    fake = tmp_path / "notes.png"
    fake.write_text("not a picture\n")
    page.locator("#tk-input input[type=file]").set_input_files(str(fake))
    expect(page.get_by_text(re.compile("not an image")).first).to_be_visible()
    expect(page.locator("#tk-heatmap img")).to_have_count(0)
    page.screenshot(path=str(artifacts / "demo-error.png"))
    page.locator("#tk-input input[type=file]").set_input_files(str(image))
    expect(top).to_have_text(expected)
    expect(page.locator("#tk-heatmap img")).to_be_visible()

    page.get_by_role("tab", name="Model", exact=True).click()  # not "Inside the model"
    expect(page.get_by_text("Test set, per class")).to_be_visible()
    page.screenshot(path=str(artifacts / "demo-model.png"), full_page=True)
    assert not errors, errors


def test_inside_tab_shows_the_feature_maps_of_an_uploaded_image(browser, demo, served_run,
                                                                 artifacts):
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    image = sorted(served_run.split_paths("test"))[0]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(demo.local_url)
    page.get_by_role("tab", name="Inside the model").click()
    page.locator("#tk-inside-input input[type=file]").set_input_files(str(image))
    expect(page.locator("#tk-inside-fmaps img")).to_be_visible()
    expect(page.locator("#tk-inside-caption")).to_contain_text("most active channels")
    expect(page.locator("#tk-inside-pooling img")).to_be_visible()
    # The grid is the picture of the channel tiles (64 px each at least), not a stub.
    size = page.locator("#tk-inside-fmaps img").evaluate(
        "img => [img.naturalWidth, img.naturalHeight]")
    assert min(size) >= 64, size
    page.screenshot(path=str(artifacts / "demo-inside.png"), full_page=True)
    assert not errors, errors


def _trust_candidates(run, folder: Path) -> list[Path]:
    """Test images, blends of two classes' images (to be unsure of) and drawn shapes
    (of no class), as files."""
    from PIL import Image, ImageDraw

    splits = run.splits
    test = splits[splits["split"] == "test"].sort_values("path", kind="stable")
    firsts = [run.data_folder / rows["path"].iloc[0]
              for _, rows in test.groupby("class", sort=True)]
    files = sorted(run.split_paths("test"))[:24]
    for i, (a, b) in enumerate(zip(firsts, firsts[1:] + firsts[:1])):
        blend = Image.blend(*(Image.open(p).convert("RGB").resize((160, 160))
                              for p in (a, b)), 0.5)
        files.append(folder / f"blend{i}.png")
        blend.save(files[-1])
    for i in range(3):
        drawing = Image.new("RGB", (160, 160), "white")
        pen = ImageDraw.Draw(drawing)
        pen.rectangle((20 + 10 * i, 30, 120, 100), outline="black", width=6)
        pen.ellipse((60, 60 + 10 * i, 150, 150), fill=(40 * i, 40 * i, 40 * i))
        files.append(folder / f"drawing{i}.png")
        drawing.save(files[-1])
    return files


def test_not_sure_and_not_one_of_my_classes_in_the_browser(browser, demo, served_run,
                                                          artifacts, tmp_path):
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    files = _trust_candidates(served_run, tmp_path)
    probabilities, fields = served_run.assess(files)
    assert fields is not None, "the served run has no trust.json (calibrate it)"
    unsure = [i for i, f in enumerate(fields) if f["abstained"] and not f["unknown"]]
    other = [i for i, f in enumerate(fields) if f["unknown"]]
    assert unsure and other, fields
    names = served_run.class_names
    guesses = np.argsort(-probabilities[unsure[0]], kind="stable")[:2]

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(demo.local_url)
    verdict = page.locator("#tk-verdict")
    top = page.locator("#tk-label [data-testid=label-output-value]")

    page.locator("#tk-input input[type=file]").set_input_files(str(files[unsure[0]]))
    expect(verdict).to_contain_text(
        f"Not sure — my best guesses are {names[guesses[0]]} "
        f"({probabilities[unsure[0], guesses[0]]:.0%}) or {names[guesses[1]]}")
    caption = page.locator("#tk-heatmap [data-testid=block-label]")
    # No winner: the label's heading is hidden; the probabilities still show below.
    expect(top).to_have_count(0)
    expect(page.locator("#tk-label")).to_contain_text(names[guesses[0]])
    expect(caption).to_contain_text(f"{names[guesses[0]]} (top prediction)")
    page.screenshot(path=str(artifacts / "demo_not_sure.png"), full_page=True)

    drawing = other[-1]  # the drawings come last
    best = names[int(probabilities[drawing].argmax())]
    page.locator("#tk-input input[type=file]").set_input_files(str(files[drawing]))
    expect(verdict).to_contain_text(f"This does not look like any of: {', '.join(names)}")
    expect(top).to_have_count(0)
    expect(page.locator("#tk-heatmap img")).to_be_visible()
    expect(caption).to_contain_text(f"{best} (top prediction)")
    page.screenshot(path=str(artifacts / "demo_unknown.png"), full_page=True)

    sure = [i for i, f in enumerate(fields) if not f["abstained"] and not f["unknown"]]
    page.locator("#tk-input input[type=file]").set_input_files(str(files[sure[0]]))
    expect(top).to_have_text(names[int(probabilities[sure[0]].argmax())])
    expect(verdict).not_to_contain_text("Not sure")
    expect(verdict).not_to_contain_text("does not look like")
    assert not errors, errors


def test_a_wrong_prediction_corrected_in_the_demo_is_saved_as_feedback(
        browser, demo, served_run, artifacts):
    import shutil

    import pandas as pd
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    feedback = served_run.path / "feedback"
    shutil.rmtree(feedback, ignore_errors=True)
    candidates = sorted(served_run.split_paths("test"))[:24]
    probabilities, _ = served_run.assess(candidates)
    best = int(probabilities.max(axis=1).argmax())  # a sure answer: the label shows it
    image = candidates[best]
    predicted = served_run.class_names[int(probabilities[best].argmax())]
    right = next(c for c in served_run.class_names if c != predicted)  # "it is wrong"
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(demo.local_url)
        page.locator("#tk-input input[type=file]").set_input_files(str(image))
        expect(page.locator("#tk-label [data-testid=label-output-value]")).to_have_text(
            predicted)
        assert not feedback.exists()  # an upload is saved only when the button is pressed
        page.locator("#tk-feedback-class input").click()
        page.get_by_role("option", name=right, exact=True).click()
        page.locator("#tk-feedback-save").click()
        expect(page.locator("#tk-feedback-status")).to_contain_text(f"Saved as {right}")
        page.screenshot(path=str(artifacts / "demo-feedback.png"), full_page=True)
        (saved,) = (feedback / right).iterdir()
        assert saved.read_bytes() == image.read_bytes()
        (row,) = pd.read_csv(feedback / "feedback.csv").to_dict("records")
        assert row["file"] == f"{right}/{saved.name}" and row["class"] == right
        assert row["predicted"] == predicted
        assert abs(row["probability"] - probabilities[best].max()) < 1e-4
        page.get_by_role("tab", name="Model", exact=True).click()
        # The table is read again when the tab opens: one image for the class given.
        expect(page.locator("#tk-feedback-counts")).to_contain_text(
            re.compile(rf"{re.escape(right)}\s+1(\s|$)"))
        page.screenshot(path=str(artifacts / "demo-feedback-model.png"), full_page=True)
    finally:
        shutil.rmtree(feedback, ignore_errors=True)  # the served run is shared
