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
