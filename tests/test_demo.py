"""The web demo, served on 127.0.0.1 and driven through its API with gradio_client."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from transferkit.demo import (  # noqa: E402
    CONCURRENCY, MAX_QUEUE, METHOD_LABELS, build_parser, launch)

MAX_FILE_SIZE = "50kb"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo(tiny_run):
    app = launch(tiny_run.path, port=free_port(), max_file_size=MAX_FILE_SIZE,
                 block=False, quiet=True)
    yield app
    app.close()


@pytest.fixture(scope="module")
def client(demo):
    return Client(demo.local_url, verbose=False)


@pytest.fixture(scope="module")
def test_images(tiny_run):
    """(path, class) of the run's test split."""
    splits = pd.read_csv(tiny_run.path / "splits.csv")
    test = splits[splits["split"] == "test"]
    data = Path(tiny_run.config.data)
    return [(data / p, c) for p, c in zip(test["path"], test["class"])]


def confidences(result: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in result["confidences"]}


def test_serves_localhost_only_with_safe_defaults(demo):
    assert demo.server_name == "127.0.0.1"
    assert demo.share_url is None
    assert demo.max_file_size == 50 * 1024
    assert demo._queue.default_concurrency_limit == CONCURRENCY
    assert demo._queue.max_size == MAX_QUEUE
    args = build_parser().parse_args(["runs/x"])
    assert (args.host, args.port, args.share, args.max_file_size) == \
        ("127.0.0.1", 7860, False, "10mb")


def test_predict_matches_the_run(client, tiny_run, test_images):
    path, _ = test_images[0]
    result = client.predict(handle_file(str(path)), api_name="/predict")
    got = confidences(result)
    expected = tiny_run.predict([path])[0]
    assert set(got) == set(tiny_run.class_names)
    assert result["label"] == tiny_run.class_names[int(np.argmax(expected))]
    for name, p in zip(tiny_run.class_names, expected):
        assert got[name] == pytest.approx(float(p), abs=1e-5)


def test_predict_is_mostly_right_on_test_images(client, test_images):
    right = sum(client.predict(handle_file(str(p)), api_name="/predict")["label"] == c
                for p, c in test_images)
    assert right >= 0.8 * len(test_images)


@pytest.mark.parametrize("method", list(METHOD_LABELS))
def test_explain_every_method(client, tiny_run, test_images, method):
    path, _ = test_images[0]
    picture, result = client.predict(handle_file(str(path)), method, "",
                                     api_name="/explain")
    overlay = np.asarray(Image.open(picture))
    original = np.asarray(Image.open(path).convert("RGB"))
    assert overlay.shape == original.shape and overlay.dtype == np.uint8
    assert not np.array_equal(overlay, original)  # a heat map is drawn over it
    assert result["label"] in tiny_run.class_names


def test_explain_a_chosen_class(client, tiny_run, test_images):
    path, _ = test_images[0]
    top = client.predict(handle_file(str(path)), api_name="/predict")["label"]
    other = next(c for c in tiny_run.class_names if c != top)
    picture_top, result = client.predict(handle_file(str(path)), "gradcam", "",
                                         api_name="/explain")
    picture_other, _ = client.predict(handle_file(str(path)), "gradcam", other,
                                      api_name="/explain")
    assert result["label"] == top  # the probabilities do not depend on the class asked
    assert not np.array_equal(np.asarray(Image.open(picture_top)),
                              np.asarray(Image.open(picture_other)))


@pytest.mark.parametrize("method, target, message", [
    ("lime", "", "unknown explanation method"),
    ("gradcam", "purple", "unknown class"),
])
def test_explain_rejects_bad_choices(client, test_images, method, target, message):
    path, _ = test_images[0]
    with pytest.raises(Exception, match=message):
        client.predict(handle_file(str(path)), method, target, api_name="/explain")


def test_not_an_image_gives_a_reason_and_the_app_keeps_serving(client, tmp_path,
                                                               test_images):
    fake = tmp_path / "notes.png"
    fake.write_text("these are my notes, not a picture\n")
    for api_name, extra in (("/predict", ()), ("/explain", ("gradcam", ""))):
        with pytest.raises(Exception, match="not an image") as info:
            client.predict(handle_file(str(fake)), *extra, api_name=api_name)
        assert "Traceback" not in str(info.value)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(test_images[0][0].read_bytes()[:200])
    with pytest.raises(Exception, match="truncated or corrupt"):
        client.predict(handle_file(str(truncated)), api_name="/predict")
    result = client.predict(handle_file(str(test_images[0][0])), api_name="/predict")
    assert result["label"]


def test_oversized_upload_is_rejected(client, tmp_path, test_images):
    big = tmp_path / "big.png"
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), np.uint8)
    Image.fromarray(noise).save(big)
    assert big.stat().st_size > 50 * 1024
    with pytest.raises(Exception, match="(?i)413|too large|max.*size|exceeds"):
        client.predict(handle_file(str(big)), api_name="/predict")
    result = client.predict(handle_file(str(test_images[0][0])), api_name="/predict")
    assert result["label"]


def test_model_tab_shows_the_run(demo, tiny_run):
    import gradio as gr

    blocks = list(demo.blocks.values())
    text = "\n".join(str(b.value) for b in blocks if isinstance(b, gr.Markdown))
    assert tiny_run.config.backbone in text
    assert "frozen" in text or "fine-tuned" in text  # the plan, and why
    assert "Test accuracy" in text
    tables = [b for b in blocks if isinstance(b, gr.Dataframe)]
    assert any("f1" in b.value["headers"] for b in tables)
    images = [b for b in blocks if isinstance(b, gr.Image) and b.value]
    assert any("confusion" in str(b.label).lower() for b in images)
    assert any(isinstance(b, gr.Dataset) for b in blocks)  # the clickable examples


def test_exports_explained_by_their_run_else_predictions_only(tiny_run, tmp_path,
                                                               test_images):
    pytest.importorskip("transferkit.predictor")
    import shutil

    from transferkit.demo import build_demo
    from transferkit.export import export_run

    run_copy = tmp_path / "run"
    shutil.copytree(tiny_run.path, run_copy,
                    ignore=shutil.ignore_patterns("cache", "checkpoints", "export"))
    export_run(run_copy, formats=("savedmodel",), n_parity=0, verbose=False)

    # RUN/export/saved_model: predictions from the SavedModel, heat maps from RUN.
    served = build_demo(run_copy / "export" / "saved_model").transferkit_classifier
    assert served.predictor is not None and served.can_explain and not served.notice
    assert served.run.path == run_copy

    # The SavedModel alone: predictions only, and the page and the API say why.
    lone = tmp_path / "elsewhere" / "saved_model"
    shutil.copytree(run_copy / "export" / "saved_model", lone)
    app = launch(lone, port=free_port(), block=False, quiet=True)
    try:
        assert "Predictions only" in app.transferkit_classifier.notice
        c = Client(app.local_url, verbose=False)
        path, _ = test_images[0]
        result = c.predict(handle_file(str(path)), api_name="/predict")
        expected = tiny_run.predict([path])[0]
        assert result["label"] == tiny_run.class_names[int(np.argmax(expected))]
        with pytest.raises(Exception, match="Heat maps are not available"):
            c.predict(handle_file(str(path)), "gradcam", "", api_name="/explain")
    finally:
        app.close()


def test_command_line_reports_a_bad_path_in_one_line(tmp_path, capsys):
    from transferkit.demo import main

    assert main([str(tmp_path / "missing"), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert err.startswith("transferkit-demo: error:") and "missing" in err
    assert "Traceback" not in err
