"""The web demo, served on 127.0.0.1 and driven through its API with gradio_client."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from transferkit.testing import free_port
from gradio_client import Client, handle_file
from PIL import Image

import transferkit.cli
from transferkit import layout
from transferkit.data.images import load_image
from transferkit.demo.batching import MAX_BATCH, Batcher
from transferkit.demo import build_demo, launch
from transferkit.demo.app import CONCURRENCY, MAX_QUEUE
from transferkit.explain import METHODS
from transferkit.errors import ConfigError
from transferkit.fileio import read_json, write_json

MAX_FILE_SIZE = "50kb"
APP_SCRIPT = Path(__file__).resolve().parents[1] / "apps" / "gradio_app.py"


@pytest.fixture(scope="module")
def demo(tiny_run):
    """The served demo of tiny_run; `queued` lists the calls of Gradio's public
    `Blocks.queue` that `launch` made (the last one is `launch`'s: Blocks() calls it
    with Gradio's defaults first)."""
    queued, queue = [], gr.Blocks.queue
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gr.Blocks, "queue", lambda self, *args, **kwargs: (
            queued.append((args, kwargs)), queue(self, *args, **kwargs))[1])
        app = launch(tiny_run.path, port=free_port(), max_file_size=MAX_FILE_SIZE,
                     block=False, quiet=True)
    app.queued = queued
    yield app
    app.close()


@pytest.fixture(scope="module")
def client(demo):
    return Client(demo.local_url, verbose=False)


@pytest.fixture(scope="module")
def test_images(tiny_run):
    """(path, class) of the run's test split."""
    splits = tiny_run.splits
    classes = splits.loc[splits["split"] == "test", "class"]
    return list(zip(tiny_run.split_paths("test"), classes))


def confidences(result: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in result["confidences"]}


def blocks_of(app: gr.Blocks, kind: type) -> list:
    return [b for b in app.blocks.values() if isinstance(b, kind)]


def markdown_text(app: gr.Blocks) -> str:
    return "\n".join(str(b.value) for b in blocks_of(app, gr.Markdown))


def example_paths(app: gr.Blocks) -> list[Path]:
    """The files behind the clickable examples (as given, before Gradio caches them)."""
    return [Path(sample[0]) for d in blocks_of(app, gr.Dataset) for sample in d.raw_samples]


def test_serves_localhost_only_with_safe_defaults(demo):
    assert demo.server_name == "127.0.0.1"
    assert demo.share_url is None
    assert demo.max_file_size == 50 * 1024
    # The queue, as `launch` asked Gradio for it: CONCURRENCY requests at once,
    # MAX_QUEUE waiting (Gradio refuses the next ones).
    assert demo.queued[-1] == ((), {"default_concurrency_limit": CONCURRENCY,
                                    "max_size": MAX_QUEUE})


def test_predict_matches_the_run(client, tiny_run, test_images):
    path, _ = test_images[0]
    result = client.predict(handle_file(str(path)), api_name="/predict")
    got = confidences(result)
    expected = tiny_run.predict([path])[0]
    assert set(got) == set(tiny_run.class_names)
    assert result["label"] == tiny_run.class_names[int(np.argmax(expected))]
    for name, p in zip(tiny_run.class_names, expected):
        assert got[name] == pytest.approx(float(p), abs=1e-5)


def test_concurrent_predicts_get_their_own_answers_and_errors(demo, tiny_run,
                                                              test_images, tmp_path):
    """8 requests at once (the batched path): each gets one-at-a-time's answer, and a
    bad upload among them fails alone, with its own reason."""
    fake = tmp_path / "notes.png"
    fake.write_text("not a picture\n")
    files = [test_images[i % len(test_images)][0] for i in range(6)] + [fake, fake]
    clients = [Client(demo.local_url, verbose=False) for _ in files]
    jobs = [c.submit(handle_file(str(f)), api_name="/predict")
            for c, f in zip(clients, files)]
    for job, path in zip(jobs, files):
        if path == fake:
            with pytest.raises(Exception, match="not an image"):
                job.result(timeout=120)
            continue
        got = confidences(job.result(timeout=120))
        expected = tiny_run.predict([path])[0]
        for name, p in zip(tiny_run.class_names, expected):
            assert got[name] == pytest.approx(float(p), abs=1e-5)
    for c in clients:
        c.close()


def test_shared_passes_give_one_at_a_time_answers(demo, test_images):
    """The Batcher around the served model: while one pass runs, the next 4 requests
    wait and then share one pass; every answer is the image's own."""
    session = demo.transferkit_session
    images = [load_image(p) for p, _ in test_images[:5]]
    alone = [session.probabilities(image) for image in images]
    gate, calls = threading.Event(), []

    def gated(batch):
        calls.append(len(batch))
        gate.wait(60)
        return session._predict_images(batch)

    batcher = Batcher(gated, max_batch=8)
    results = [None] * 5

    def ask(i):
        results[i] = batcher(images[i])

    first = threading.Thread(target=ask, args=(0,))
    first.start()
    while not calls:  # the first pass has started (and blocks on the gate)
        time.sleep(0.01)
    rest = [threading.Thread(target=ask, args=(i,)) for i in range(1, 5)]
    for t in rest:
        t.start()
    while len(batcher._pending) < 4:  # all four are waiting for the next pass
        time.sleep(0.01)
    gate.set()
    for t in [first, *rest]:
        t.join(60)
    assert calls == [1, 4] and batcher.passes == 2
    for got, expected in zip(results, alone):
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_a_failed_pass_fails_only_its_requests():
    def predict(batch):
        if "bad" in batch:
            raise ValueError("no")
        return np.array([[len(item)] for item in batch])

    batcher = Batcher(predict, max_batch=4)
    assert batcher("abc").tolist() == [3]
    with pytest.raises(ValueError, match="no"):
        batcher("bad")
    assert batcher("ok").tolist() == [2] and batcher.passes == 3


def test_max_batch_must_be_positive(tiny_run):
    with pytest.raises(ConfigError, match="--max-batch"):
        build_demo(tiny_run.path, max_batch=0)


def test_predict_is_mostly_right_on_test_images(client, test_images):
    right = sum(client.predict(handle_file(str(p)), api_name="/predict")["label"] == c
                for p, c in test_images)
    assert right >= 0.8 * len(test_images)


def test_method_selector_is_the_explain_registry(demo):
    (selector,) = [b for b in blocks_of(demo, gr.Dropdown) if b.elem_id == "tk-method"]
    assert selector.choices == [(cls.label, name) for name, cls in METHODS.items()]
    assert selector.value == "gradcam"


@pytest.mark.parametrize("method", list(METHODS))
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
    text = markdown_text(demo)
    assert tiny_run.config.backbone in text
    assert "frozen" in text or "fine-tuned" in text  # the plan, and why
    assert f"Test accuracy:** {tiny_run.metrics['accuracy']:.1%}" in text
    tables = blocks_of(demo, gr.Dataframe)
    assert any("f1" in b.value["headers"] for b in tables)
    images = [b for b in blocks_of(demo, gr.Image) if b.value]
    assert any("confusion" in str(b.label).lower() for b in images)
    assert example_paths(demo)  # the clickable examples


def copy_with_a_top_loss(run, folder: Path) -> tuple[Path, str]:
    """A copy of a run whose top_losses.csv lists one test image, confidently wrong, and
    the caption the Model tab gives it."""
    shutil.copytree(run.path, folder, ignore=shutil.ignore_patterns(
        layout.FEATURES_DIR, layout.CHECKPOINTS_DIR, layout.EXPORT_DIR))
    image = run.splits.query("split == 'test'").iloc[0]
    wrong = next(c for c in run.class_names if c != image["class"])
    (folder / layout.TOP_LOSSES_FILE).write_text(
        "path,true,predicted,probability,true_probability,loss\n"
        f"{image['path']},{image['class']},{wrong},0.9,0.1,2.3\n")
    return folder, f"{image['class']} → predicted {wrong} (90%)"


def test_a_tfds_run_is_served_like_a_folder_run(tfds_run, tmp_path):
    run_copy, caption = copy_with_a_top_loss(tfds_run, tmp_path / "run")
    app = build_demo(run_copy)
    examples = example_paths(app)
    assert examples and set(examples) <= set(tfds_run.split_paths("test"))
    assert {p.parent.name for p in examples} == set(tfds_run.class_names)  # every class
    text = markdown_text(app)
    assert f"Test accuracy:** {tfds_run.metrics['accuracy']:.1%}" in text
    assert "no longer where the run was trained" not in text
    assert any(b.label == "Images per class and split" for b in blocks_of(app, gr.Dataframe))
    (gallery,) = blocks_of(app, gr.Gallery)  # the top loss, read from the TFDS folder
    assert [item["caption"] for item in gallery.value] == [caption]


def test_a_run_whose_data_moved_says_so(tiny_run, tmp_path):
    run_copy, _ = copy_with_a_top_loss(tiny_run, tmp_path / "run")
    config = read_json(run_copy / layout.CONFIG_FILE)
    config["data"] = str(tmp_path / "moved")
    write_json(run_copy / layout.CONFIG_FILE, config)

    app = build_demo(run_copy)
    assert example_paths(app) == [] and blocks_of(app, gr.Gallery) == []
    assert f"no longer where the run was trained ({tmp_path / 'moved'})" in markdown_text(app)


def test_exports_explained_by_their_run_else_predictions_only(tiny_run, tiny_export,
                                                               tmp_path, test_images):
    run_copy = tmp_path / "run"
    shutil.copytree(tiny_run.path, run_copy, ignore=shutil.ignore_patterns(
        layout.FEATURES_DIR, layout.CHECKPOINTS_DIR, layout.EXPORT_DIR))
    shutil.copytree(tiny_export[0], run_copy / layout.EXPORT_DIR)  # `transferkit export`'s
    saved_model = run_copy / layout.EXPORT_DIR / layout.SAVED_MODEL_DIR

    # RUN/export/saved_model: predictions from the SavedModel, heat maps from RUN.
    served = build_demo(saved_model).transferkit_session
    assert served.predictor is not None and served.can_explain and not served.notice
    assert served.run.path == run_copy

    # The SavedModel alone: predictions only, and the page and the API say why.
    lone = tmp_path / "elsewhere" / layout.SAVED_MODEL_DIR
    shutil.copytree(saved_model, lone)
    app = launch(lone, port=free_port(), block=False, quiet=True)
    try:
        assert "Predictions only" in app.transferkit_session.notice
        c = Client(app.local_url, verbose=False)
        path, _ = test_images[0]
        result = c.predict(handle_file(str(path)), api_name="/predict")
        expected = tiny_run.predict([path])[0]
        assert result["label"] == tiny_run.class_names[int(np.argmax(expected))]
        with pytest.raises(Exception, match="Heat maps are not available"):
            c.predict(handle_file(str(path)), "gradcam", "", api_name="/explain")
    finally:
        app.close()


# The command line: `transferkit serve` and apps/gradio_app.py, one entry point.

@pytest.fixture
def launched(monkeypatch):
    """The keyword arguments `gradio.Blocks.launch` is called with (it serves nothing)."""
    calls = []
    monkeypatch.setattr(gr.Blocks, "launch",
                        lambda self, **kwargs: calls.append(dict(kwargs, blocks=self)))
    return calls


@pytest.mark.parametrize("options, expected", [
    ([], {"server_name": "127.0.0.1", "server_port": 7860, "share": False,
          "max_file_size": "10mb"}),
    (["--host", "0.0.0.0", "--port", "7861", "--share", "--max-file-size", "1mb",
      "--max-batch", "1"],
     {"server_name": "0.0.0.0", "server_port": 7861, "share": True,
      "max_file_size": "1mb"}),
])
def test_serve_command_launches_with_its_options(tiny_run, launched, options, expected):
    assert transferkit.cli.main(["serve", str(tiny_run.path), *options]) == 0
    (kwargs,) = launched
    assert {k: kwargs[k] for k in expected} == expected
    # --max-batch 1: every /predict its own forward pass (the unbatched path).
    session = kwargs["blocks"].transferkit_session
    assert session.batcher.max_batch == (1 if "--max-batch" in options else MAX_BATCH)
    if "--max-batch" in options:
        path = next(iter(session.run.test_samples(1)))
        np.testing.assert_allclose(session.shared_probabilities(load_image(path)),
                                   tiny_run.predict([path])[0], atol=1e-6)
    assert kwargs["prevent_thread_lock"] is False  # serves until interrupted


def test_serve_command_reports_a_bad_path_in_one_line(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert transferkit.cli.main(["serve", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("transferkit: error:") and "missing" in err[0]


def test_app_script_is_the_serve_command(tmp_path):
    missing = tmp_path / "missing"
    done = subprocess.run([sys.executable, str(APP_SCRIPT), str(missing)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("transferkit")]
    assert len(errors) == 1 and errors[0].startswith("transferkit: error:")
    assert str(missing) in errors[0] and "Traceback" not in done.stderr
