"""The demo app: the page, its events and API names, and `launch` with safe defaults."""

from __future__ import annotations

import html
import sys
from functools import partial
from pathlib import Path
from typing import Sequence

import gradio as gr

from transferkit.demo.access import exposure_warning
from transferkit.demo.batching import MAX_BATCH
from transferkit.demo.feedback import Feedback, feedback_controls, feedback_counts, \
    feedback_folder
from transferkit.demo.handlers import (
    TOP_PREDICTION, TOP_PREDICTION_LABEL, Handlers, method_label)
from transferkit.demo.inside_tab import inside_tab
from transferkit.demo.model_tab import model_tab
from transferkit.demo.session import Session
from transferkit.errors import ConfigError, RunError
from transferkit.explain import DEFAULT_METHOD

TOP_K = 5                        # classes shown in the label
EXAMPLES_PER_CLASS = 2           # test images offered as examples, per class
MAX_EXAMPLES = 20

CONCURRENCY = 2                  # requests computed at once
MAX_QUEUE = 64                   # requests waiting; more are refused ("queue full")
DEFAULT_HOST = "127.0.0.1"       # this machine only
DEFAULT_PORT = 7860
DEFAULT_MAX_FILE_SIZE = "10mb"

CSS = """
.gradio-container { max-width: 1180px !important; margin: 0 auto !important; }
#tk-header h1 { margin-bottom: 0.1em; }
#tk-header p { color: var(--body-text-color-subdued); margin-top: 0; }
#tk-notice { border-left: 4px solid var(--color-accent); padding-left: 0.8em; }
.tk-metrics table { width: auto; }
"""


def build_demo(path: str | Path, *, concurrency: int = CONCURRENCY,
               max_queue: int = MAX_QUEUE, max_batch: int = MAX_BATCH) -> gr.Blocks:
    """Builds the web demo of a run directory or an exported model.

    Args:
        path: A finished run directory, an exported SavedModel directory or a `.tflite`
            file (see `transferkit.predictor.load_predictor`).
        concurrency: Requests computed at the same time (each holds an image and its
            activations in memory).
        max_queue: Requests allowed to wait; later ones are refused until there is room.
        max_batch: Concurrent `/predict` requests that share one forward pass (each
            decodes its image in its own thread, up to `max_batch` at once; see
            `transferkit.demo.batching`). 1: no sharing, `concurrency` at once.

    Returns:
        The `gradio.Blocks` app, queue configured; serve it with `launch` (or
        `.launch()` yourself; pass `theme=`/`css=` there, as Gradio 6 wants). Its
        `transferkit_session` attribute is the `Session` it serves.

    Raises:
        RunError: The path is not a finished run or a loadable export.
    """
    if max_batch < 1:
        raise ConfigError(f"--max-batch must be at least 1, got {max_batch}")
    session = Session(path, max_batch)
    handlers = Handlers(session)
    feedback = Feedback(feedback_folder(session))
    names = session.class_names
    with gr.Blocks(title=f"transferkit · {session.name}", analytics_enabled=False) as demo:
        gr.Markdown(_header(session), elem_id="tk-header")
        if session.notice:
            gr.Markdown(f"**Note:** {html.escape(session.notice)}", elem_id="tk-notice")

        with gr.Tab("Classify", id="classify"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=1):
                    # Events take this input unprocessed (preprocess=False): the file is
                    # decoded by transferkit, not by Gradio.
                    image = gr.Image(label="Image", sources=["upload", "clipboard", "webcam"],
                                     type="numpy", height=360, elem_id="tk-input")
                    methods = session.methods
                    method = gr.Dropdown(
                        [(method_label(m), m) for m in methods],
                        value=DEFAULT_METHOD if methods else None,
                        label="Explanation method", visible=bool(methods),
                        info="Grad-CAM is fast; Score-CAM, SmoothGrad and Integrated "
                             "Gradients take longer.", elem_id="tk-method")
                    target = gr.Dropdown(
                        [(TOP_PREDICTION_LABEL, TOP_PREDICTION)] + [(n, n) for n in names],
                        value=TOP_PREDICTION, label="Class to explain",
                        visible=session.can_explain, elem_id="tk-target")
                with gr.Column(scale=1):
                    heatmap = gr.Image(label="Heat map", type="numpy", format="png",
                                       interactive=False, height=360,
                                       visible=session.can_explain, elem_id="tk-heatmap")
                    # "Not sure" / "not one of my classes" instead of the label's winner
                    # (empty for a sure answer).
                    verdict = gr.Markdown("", elem_id="tk-verdict")
                    label = gr.Label(num_top_classes=min(TOP_K, len(names)),
                                     label="Prediction", elem_id="tk-label")
                    feedback_controls(session, feedback, image)
            examples = _examples(session)
            if examples:
                gr.Examples([[p] for p in examples], inputs=[image],
                            label="Examples from the test split (click one)",
                            examples_per_page=MAX_EXAMPLES)

        with gr.Tab("Model", id="model") as tab:
            model_tab(session)
            feedback_counts(session, feedback, tab)

        with gr.Tab("Inside the model", id="inside"):  # its own concurrency group
            inside_tab(session)

        _wire(handlers, image, method, target, heatmap, label)
        image.change(handlers.verdict, inputs=[image], outputs=[verdict, label],
                     preprocess=False, trigger_mode="always_last",
                     api_visibility="private", show_progress="hidden")

    demo.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    demo.transferkit_session = session  # for tests and tools
    return demo


def _wire(handlers: Handlers, image: gr.Image, method: gr.Dropdown, target: gr.Dropdown,
          heatmap: gr.Image, label: gr.Label) -> None:
    """The events, and the API names they answer to (`/predict`, `/explain`)."""
    if handlers.session.can_explain:
        # A new image: no stale heat map of the previous one meanwhile (or after an
        # error). Cleared first, then predicted: as a separate event a clear answered
        # late (a busy server) wiped the new heat map.
        changed = image.change(handlers.clear_heatmap, inputs=None, outputs=[heatmap],
                               queue=False, api_visibility="private",
                               show_progress="hidden", trigger_mode="always_last").then
    else:
        changed = partial(image.change, trigger_mode="always_last")
    # Batching: as many /predict requests at once as share a pass, in their own group
    # (the heat maps keep theirs); without it, the default group, as the other events.
    max_batch = handlers.session.batcher.max_batch
    group = {"concurrency_limit": max_batch, "concurrency_id": "predict"} \
        if max_batch > 1 else {}
    predicted = changed(handlers.predict, inputs=[image], outputs=[label],
                        api_name="predict", preprocess=False,
                        api_description="Class probabilities of an image.", **group)
    explain_inputs = [image, method, target]
    if not handlers.session.can_explain:  # /explain still answers, with the reason why not
        hidden = gr.Button(visible=False)
        hidden.click(handlers.explain, inputs=explain_inputs, outputs=[heatmap, label],
                     api_name="explain", preprocess=False)
        return
    explained = [
        predicted.success(
            handlers.explain, inputs=explain_inputs, outputs=[heatmap, label],
            api_name="explain", preprocess=False, show_progress="minimal",
            api_description="The heat map of a class (\"\": the top prediction) "
            "overlaid on the image, and the class probabilities."),
        gr.on([method.change, target.change], handlers.explain,
              inputs=explain_inputs, outputs=[heatmap, label], preprocess=False,
              trigger_mode="always_last", show_progress="minimal",
              api_visibility="private")]
    for event in explained:
        event.success(handlers.caption, inputs=[method, target, label],
                      outputs=[heatmap], queue=False, api_visibility="private")


def _header(session: Session) -> str:
    run = session.run
    metrics = run.metrics if run is not None else None
    accuracy = f" Test accuracy **{metrics['accuracy']:.1%}**." \
        if metrics and "accuracy" in metrics else ""
    backbone = f" `{run.config.backbone}`" if run is not None else ""
    names = session.class_names
    return (f"# transferkit · {html.escape(session.name)}\n"
            f"An image classifier{backbone} for {len(names)} classes: "
            f"{html.escape(', '.join(names))}.{accuracy} Drop in a photo to see what it "
            "predicts and which pixels drove the decision.")


def _examples(session: Session) -> list[str]:
    """A few test-split images per class, those still on disk (none for an export)."""
    if session.run is None:
        return []
    n = min(MAX_EXAMPLES, EXAMPLES_PER_CLASS * len(session.class_names))
    try:
        return [str(p) for p in session.run.test_samples(n)]
    except RunError:  # no split file, or the data has moved since training
        return []


def _theme() -> gr.themes.Base:
    # System fonts only: the page fetches nothing from the internet (Google Fonts are
    # the default), so it works offline and leaks no visits.
    return gr.themes.Soft(
        primary_hue="indigo", secondary_hue="sky", neutral_hue="slate",
        font=["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto",
              "Helvetica Neue", "Arial", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"])


def launch(path: str | Path, host: str = DEFAULT_HOST, port: int | None = DEFAULT_PORT,
           share: bool = False, max_file_size: str | int | None = DEFAULT_MAX_FILE_SIZE,
           max_batch: int = MAX_BATCH, auth: Sequence[tuple[str, str]] | None = None, *,
           block: bool = True, quiet: bool = False) -> gr.Blocks:
    """Serves the demo of a run or export.

    Args:
        path: See `build_demo`.
        host: Interface to bind; the default serves this machine only. Use
            `0.0.0.0` to serve the network, with `auth` (without, a warning is printed).
        port: TCP port (None: the first free one from 7860).
        share: Also open a public *.gradio.live link (off by default).
        max_file_size: Largest upload accepted, e.g. "10mb" or a number of bytes.
        max_batch: Concurrent `/predict` requests sharing a forward pass (1: none).
        auth: `(user, password)` logins required by the page and the API
            (`transferkit.demo.access`); None: no login.
        block: Serve until interrupted; False returns at once, the server running in
            a background thread (stop it with `demo.close()`).
        quiet: No startup messages.

    Returns:
        The running `gradio.Blocks` (`.local_url` is its address).

    Raises:
        RunError: The path is not a finished run or a loadable export.
    """
    demo = build_demo(path, max_batch=max_batch)
    if warning := exposure_warning(host, share, auth):
        print(warning, file=sys.stderr)
    demo.launch(server_name=host, server_port=port, share=share, auth=auth or None,
                max_file_size=max_file_size, prevent_thread_lock=not block,
                show_error=False, quiet=quiet, ssr_mode=False, theme=_theme(), css=CSS,
                footer_links=["api", "gradio"])
    return demo
