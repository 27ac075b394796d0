"""The web demo: a trained classifier in the browser, with heat maps, and an HTTP API.

    python -m transferkit.demo runs/flowers      # → http://127.0.0.1:7860
    python apps/gradio_app.py runs/flowers       # the same

`build_demo(path)` returns the `gradio.Blocks` app; `launch` serves it with safe
defaults; `main` is the command line. `path` is a run directory, or an export
(`RUN/export/saved_model`, a `.tflite` file) served by `transferkit.predictor`.

Two tabs:

- **Classify**: an image (upload, paste or webcam) → the top classes and a heat map of
  the chosen class (Grad-CAM by default) beside the original; clickable examples from
  the run's test split.
- **Model**: backbone, plan (frozen or fine-tuned, and why), dataset counts, test
  metrics, per-class table, confusion matrix and the most confidently wrong test
  images with their Grad-CAM heat maps.

API (pinned names, for `gradio_client`):

- `/predict`: image → label confidences.
- `/explain`: image, method (`gradcam`, `gradcam++`, `scorecam`, `saliency`,
  `smoothgrad`, `integrated-gradients`), class name ("" = the top prediction) →
  (heat map overlaid on the image, label confidences).

Safety: binds 127.0.0.1 unless told otherwise, no share link unless asked, uploads
capped (`max_file_size`), images decoded by transferkit's own hardened decoder (never
by Gradio), so a bad file gives a one-line reason in the page and the app keeps
serving; requests queue with bounded concurrency and queue length.

Heat maps need the Keras model. For an export, the demo looks for the run it came from
(`RUN/export/saved_model` → `RUN`) or the export's `model.keras`; if there is none, it
serves predictions only and says so in the page.
"""

from __future__ import annotations

import argparse
import base64
import html
import os
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from transferkit.errors import ImageError, RunError, TransferkitError

# Every explanation method, in the order the selector shows them, with its label.
METHOD_LABELS = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "scorecam": "Score-CAM",
    "saliency": "Saliency (gradients)",
    "smoothgrad": "SmoothGrad",
    "integrated-gradients": "Integrated Gradients",
}
DEFAULT_METHOD = "gradcam"
TOP_PREDICTION = ""              # the class value meaning "explain the top prediction"
TOP_PREDICTION_LABEL = "top prediction"

TOP_K = 5                        # classes shown in the label
EXAMPLES_PER_CLASS = 2           # test images offered as examples, per class
MAX_EXAMPLES = 20
TOP_LOSSES_SHOWN = 6             # confidently wrong test images in the Model tab
DISPLAY_SIDE = 512               # long side of the overlay shown (and returned)
GALLERY_SIDE = 256

CONCURRENCY = 2                  # requests computed at once
MAX_QUEUE = 64                   # requests waiting; more are refused ("queue full")
DEFAULT_MAX_FILE_SIZE = "10mb"

CSS = """
.gradio-container { max-width: 1180px !important; margin: 0 auto !important; }
#tk-header h1 { margin-bottom: 0.1em; }
#tk-header p { color: var(--body-text-color-subdued); margin-top: 0; }
#tk-notice { border-left: 4px solid var(--color-accent); padding-left: 0.8em; }
.tk-metrics table { width: auto; }
"""


def _theme():
    import gradio as gr

    # System fonts only: the page fetches nothing from the internet (Google Fonts are
    # the default), so it works offline and leaks no visits.
    return gr.themes.Soft(
        primary_hue="indigo", secondary_hue="sky", neutral_hue="slate",
        font=["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto",
              "Helvetica Neue", "Arial", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"])


class _Classifier:
    """What the demo serves: predictions from the run or export at `path`, and heat
    maps from a Keras model when one is found. All model work goes through `Run`, the
    predictor and the explainers; this class only wires them together.
    """

    def __init__(self, path: str | Path):
        from transferkit.run import load_run, run_state

        path = Path(path)
        self.path = path
        self.run = None          # transferkit.run.Run: explanations, Model tab
        self.predictor = None    # transferkit.predictor object, for exports
        self.notice = ""         # why heat maps are unavailable, when they are
        if path.is_dir() and run_state(path) is not None:
            self.run = load_run(path)
            self.class_names = list(self.run.class_names)
            self.name = path.resolve().name
        else:
            try:
                from transferkit.predictor import load_predictor
            except ImportError as e:
                raise RunError(f"{path} is not a run directory, and this installation "
                               f"cannot load exported models ({e})") from e
            self.predictor = load_predictor(path)
            self.class_names = list(self.predictor.class_names)
            self.run, self.notice = _find_keras_run(path, self.class_names)
            self.name = _export_name(path)
        if self.run is not None:
            # Builds Keras's predict function now, not in two request threads at once.
            self.run.model.predict_on_batch(
                np.zeros((1, self.run.image_size, self.run.image_size, 3), np.float32))
        self._explainers: dict[str, Any] = {}
        self._lock = threading.Lock()
        if self.can_explain and DEFAULT_METHOD in self.methods:
            # Traces the default method's graph now: the first visitor does not wait.
            size = self.run.image_size
            self.heatmaps(DEFAULT_METHOD, np.zeros((1, size, size, 3), np.float32), [0])

    @property
    def can_explain(self) -> bool:
        return self.run is not None

    @property
    def methods(self) -> list[str]:
        if not self.can_explain:
            return []
        from transferkit.explain import METHODS

        return [m for m in METHOD_LABELS if m in METHODS] + \
            [m for m in METHODS if m not in METHOD_LABELS]

    def probabilities(self, image: np.ndarray, batch: np.ndarray | None = None
                      ) -> np.ndarray:
        """Class probabilities `[C]` of one decoded image (`batch`: the image already
        preprocessed for the Keras model, when at hand)."""
        if self.predictor is not None:  # the deployed model: what the user pointed at
            return np.asarray(self.predictor.predict([image]))[0]
        if batch is None:
            return np.asarray(self.run.predict([image]))[0]
        return np.asarray(self.run.model.predict_on_batch(batch))[0]

    def heatmaps(self, method: str, batch: np.ndarray, classes: Sequence[int]
                 ) -> np.ndarray:
        """Heat maps `[N, S, S]`; each method's explainer is built once, on first use."""
        explainer = self._explainers.get(method)
        if explainer is None:
            with self._lock:  # the first call traces the graph: once, not concurrently
                explainer = self._explainers.get(method)
                if explainer is None:
                    from transferkit.explain import METHODS

                    explainer = METHODS[method](self.run.model)
                    maps = explainer(batch, list(classes))
                    self._explainers[method] = explainer
                    return maps
        return explainer(batch, list(classes))


def _find_keras_run(path: Path, class_names: list[str]):
    """The Keras model behind an export, as a `Run`, or `(None, why not)`.

    Looks for the run the export came from (`RUN/export/...` → `RUN`), then for the
    export's own `model.keras` (with its `config.json`).
    """
    from transferkit.config import TrainConfig
    from transferkit.fileio import read_json
    from transferkit.run import Run, load_model, load_run, run_state

    if path.is_file() or (path / "saved_model.pb").is_file():
        export_dir = path.parent  # RUN/export/saved_model, RUN/export/model.tflite
    else:
        export_dir = path         # RUN/export
    keras_file, config_file = export_dir / "model.keras", export_dir / "config.json"
    try:
        if run_state(export_dir.parent) == "complete":
            run = load_run(export_dir.parent)
        elif keras_file.is_file() and config_file.is_file():
            config = TrainConfig.from_dict(read_json(config_file))
            run = Run(export_dir, load_model(keras_file), class_names, config)
        else:
            return None, (f"Heat maps are not available: no Keras model was found for "
                          f"{path.name} (looked for the run directory {export_dir.parent} "
                          f"and {keras_file}). Predictions only.")
    except (TransferkitError, OSError, ValueError) as e:
        return None, f"Heat maps are not available ({e}). Predictions only."
    if list(run.class_names) != list(class_names):
        return None, (f"Heat maps are not available: the Keras model found at {run.path} "
                      "has other classes than the exported model. Predictions only.")
    return run, ""


def _export_name(path: Path) -> str:
    parts = path.resolve().parts
    if len(parts) >= 2 and parts[-1] == "export":
        return parts[-2]
    if len(parts) >= 3 and parts[-2] == "export":
        return parts[-3]
    return path.stem


# Request handling ---------------------------------------------------------------------

def _source(payload: Any) -> str | bytes | None:
    """The uploaded file behind an image input (events run with preprocess=False, so
    Gradio never decodes it; Gradio has already checked the path is its own upload)."""
    if payload is None:
        return None
    if isinstance(payload, (str, Path)):
        return str(payload)
    if isinstance(payload, dict):
        if payload.get("path"):
            return str(payload["path"])
        url = payload.get("url") or ""
        if url.startswith("data:") and "," in url:
            try:
                return base64.b64decode(url.split(",", 1)[1], validate=False)
            except ValueError:
                raise _error("cannot read this image: invalid data URL") from None
    raise _error("no image received: upload an image file")


def _decode(source: str | bytes) -> np.ndarray:
    from transferkit.data.images import load_image

    try:
        return load_image(source)
    except ImageError as e:
        raise _error(f"Cannot use this file: {e.reason}", title="Not a usable image") \
            from None


def _error(message: str, title: str = "Error"):
    import gradio as gr

    return gr.Error(message, title=title, print_exception=False)


def _confidences(class_names: Sequence[str], probabilities: np.ndarray) -> dict[str, float]:
    return {name: float(p) for name, p in zip(class_names, probabilities)}


def _display_copy(image: np.ndarray, side: int) -> np.ndarray:
    """The image shrunk (aspect kept) so its long side is at most `side` pixels."""
    from PIL import Image

    height, width = image.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


class _Handlers:
    """The functions behind the events; each raises gr.Error with a readable reason."""

    def __init__(self, classifier: _Classifier):
        self.c = classifier

    def predict(self, image: Any) -> dict[str, float] | None:
        source = _source(image)
        if source is None:
            return None
        array = _decode(source)
        return _confidences(self.c.class_names, self.c.probabilities(array))

    def explain(self, image: Any, method: str | None = DEFAULT_METHOD,
                target: str | None = TOP_PREDICTION):
        from transferkit.explain import overlay

        source = _source(image)
        if source is None:
            return None, None
        if not self.c.can_explain:
            raise _error(self.c.notice)
        method = self._method(method)
        target = self._target(target)
        array = _decode(source)
        batch = self.c.run.preprocess([array])
        probabilities = self.c.probabilities(array, batch)
        index = int(np.argmax(probabilities)) if target is None else target
        try:
            heatmap = self.c.heatmaps(method, batch, [index])[0]
        except TransferkitError as e:
            raise _error(f"cannot explain this image: {e}") from None
        return (overlay(_display_copy(array, DISPLAY_SIDE), heatmap),
                _confidences(self.c.class_names, probabilities))

    @staticmethod
    def clear_heatmap():
        import gradio as gr

        return gr.update(value=None, label="Heat map")

    def caption(self, method: str | None, target: str | None, prediction: Any):
        """The heat map's title: which method, which class (UI only)."""
        import gradio as gr

        method = METHOD_LABELS.get(method or DEFAULT_METHOD, method)
        if target:
            return gr.update(label=f"{method} · {target}")
        # The Label's value, preprocessed: {class name: probability}.
        top = max(prediction, key=prediction.get) if isinstance(prediction, dict) \
            and prediction else None
        return gr.update(label=f"{method} · {top} (top prediction)" if top else method)

    def _method(self, method: str | None) -> str:
        method = str(method or DEFAULT_METHOD).strip()
        labels = {label.lower(): m for m, label in METHOD_LABELS.items()}
        method = labels.get(method.lower(), method)
        if method not in self.c.methods:
            raise _error(f"unknown explanation method {method!r}; choose one of: "
                         f"{', '.join(self.c.methods)}")
        return method

    def _target(self, target: str | None) -> int | None:
        """The class index to explain, or None for the top prediction."""
        target = "" if target is None else str(target)
        if target.strip() in (TOP_PREDICTION, TOP_PREDICTION_LABEL):
            return None
        if target not in self.c.class_names:
            raise _error(f"unknown class {target!r}; choose one of: "
                         f"{', '.join(self.c.class_names)} (or \"\" for the top "
                         "prediction)")
        return self.c.class_names.index(target)


# Model tab ------------------------------------------------------------------------------

def _read_json(path: Path) -> dict | None:
    from transferkit.fileio import read_json

    try:
        value = read_json(path)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _read_csv(path: Path):
    import pandas as pd

    try:
        return pd.read_csv(path)
    except (OSError, ValueError):
        return None


def _data_dir(classifier: _Classifier) -> Path | None:
    if classifier.run is None or not classifier.run.config.data:
        return None
    data = Path(classifier.run.config.data)
    return data if data.is_dir() else None


def _examples(classifier: _Classifier) -> list[str]:
    """A few test-split images per class, when the data folder is still there."""
    data = _data_dir(classifier)
    splits = _read_csv(classifier.run.path / "splits.csv") if data else None
    if splits is None or not {"path", "class", "split"} <= set(splits.columns):
        return []
    test = splits[splits["split"] == "test"].sort_values("path")
    examples = []
    for name in classifier.class_names:
        rows = test[test["class"] == name]["path"]
        found = [data / p for p in rows if (data / p).is_file()][:EXAMPLES_PER_CLASS]
        examples += [str(p) for p in found]
    return examples[:MAX_EXAMPLES]


def _top_losses(classifier: _Classifier) -> list[tuple[np.ndarray, str]]:
    """The most confidently wrong test images, each beside its Grad-CAM heat map of the
    (wrongly) predicted class."""
    from transferkit.data.images import load_image
    from transferkit.explain import METHODS, overlay

    data = _data_dir(classifier)
    losses = _read_csv(classifier.run.path / "top_losses.csv") if data else None
    if losses is None or DEFAULT_METHOD not in METHODS:
        return []
    images, rows = [], []
    for row in losses.itertuples():
        if len(images) == TOP_LOSSES_SHOWN:
            break
        if row.predicted not in classifier.class_names:
            continue
        try:
            images.append(load_image(data / row.path))
        except ImageError:
            continue
        rows.append(row)
    if not images:
        return []
    batch = classifier.run.preprocess(images)
    classes = [classifier.class_names.index(r.predicted) for r in rows]
    maps = classifier.heatmaps(DEFAULT_METHOD, batch, classes)
    gallery = []
    for image, heatmap, row in zip(images, maps, rows):
        small = _display_copy(image, GALLERY_SIDE)
        gap = np.full((small.shape[0], 6, 3), 255, np.uint8)
        pair = np.concatenate([small, gap, overlay(small, heatmap)], axis=1)
        gallery.append((pair, f"{row.true} → predicted {row.predicted} "
                              f"({float(row.probability):.0%})"))
    return gallery


def _plan_text(plan: dict | None) -> str:
    if not plan:
        return ""
    strategy = plan.get("strategy")
    if strategy == "fine-tune":
        what = (f"**fine-tuned**: the top {plan.get('unfreeze_blocks')} of "
                f"{plan.get('total_blocks')} backbone blocks were trained after the head")
    else:
        what = "**frozen** backbone (feature extraction): only the new head was trained"
    reason = plan.get("reason", "")
    return f"- **Plan:** {what}.\n- **Why:** {html.escape(reason)}"


def _model_markdown(classifier: _Classifier) -> str:
    run = classifier.run
    lines = [f"### {html.escape(classifier.name)}"]
    if run is None:
        lines.append(f"- **Model:** `{html.escape(str(classifier.path))}`")
        lines.append(f"- **Classes ({len(classifier.class_names)}):** "
                     f"{html.escape(', '.join(classifier.class_names))}")
        return "\n".join(lines)
    config = run.config
    lines.append(f"- **Backbone:** `{config.backbone}` ({config.weights} weights), "
                 f"{run.image_size}×{run.image_size} px input")
    if classifier.predictor is not None:
        lines.append(f"- **Served from:** `{html.escape(str(classifier.path))}` "
                     f"(heat maps from `{html.escape(str(run.path))}`)")
    plan = _read_json(run.path / "plan.json")
    if plan:
        lines.append(_plan_text(plan))
    metrics = _read_json(run.path / "metrics.json")
    lines.append(f"- **Classes ({len(classifier.class_names)}):** "
                 f"{html.escape(', '.join(classifier.class_names))}")
    if metrics:
        counts = ", ".join(f"{metrics[k]} {k[2:]}" for k in ("n_train", "n_val", "n_test")
                           if k in metrics)
        skipped = metrics.get("n_skipped")
        lines.append(f"- **Images:** {counts}" +
                     (f" ({skipped} unusable files skipped)" if skipped else ""))
        if "accuracy" in metrics:
            lines.append(f"- **Test accuracy:** {metrics['accuracy']:.1%} · "
                         f"**macro-F1:** {metrics.get('macro_f1', float('nan')):.3f}")
        if "train_seconds" in metrics:
            lines.append(f"- **Training time:** {metrics['train_seconds']:.0f} s")
    return "\n".join(lines)


def _split_counts(classifier: _Classifier):
    splits = _read_csv(classifier.run.path / "splits.csv") if classifier.run else None
    if splits is None or not {"class", "split"} <= set(splits.columns):
        return None
    table = splits.pivot_table(index="class", columns="split", aggfunc="size", fill_value=0)
    table = table.reindex(columns=[c for c in ("train", "val", "test") if c in table])
    table["total"] = table.sum(axis=1)
    return table.reset_index()


def _per_class(classifier: _Classifier):
    table = _read_csv(classifier.run.path / "per_class.csv") if classifier.run else None
    if table is None:
        return None
    return table.round({c: 3 for c in ("precision", "recall", "f1") if c in table})


# The app --------------------------------------------------------------------------------

def build_demo(path: str | Path, *, concurrency: int = CONCURRENCY,
               max_queue: int = MAX_QUEUE):
    """Builds the web demo of a run directory or an exported model.

    Args:
        path: A finished run directory, an exported SavedModel directory or a `.tflite`
            file (see `transferkit.predictor.load_predictor`).
        concurrency: Requests computed at the same time (each holds an image and its
            activations in memory).
        max_queue: Requests allowed to wait; later ones are refused until there is room.

    Returns:
        The `gradio.Blocks` app, queue configured; serve it with `launch` (or
        `.launch()` yourself; pass `theme=`/`css=` there, as Gradio 6 wants).

    Raises:
        RunError: The path is not a finished run or a loadable export.
    """
    import gradio as gr

    classifier = _Classifier(path)
    handlers = _Handlers(classifier)
    names = classifier.class_names
    metrics = _read_json(classifier.run.path / "metrics.json") if classifier.run else None

    with gr.Blocks(title=f"transferkit · {classifier.name}", analytics_enabled=False) as demo:
        accuracy = f" Test accuracy **{metrics['accuracy']:.1%}**." \
            if metrics and "accuracy" in metrics else ""
        backbone = f" `{classifier.run.config.backbone}`" if classifier.run else ""
        gr.Markdown(
            f"# transferkit · {html.escape(classifier.name)}\n"
            f"An image classifier{backbone} for {len(names)} classes: "
            f"{html.escape(', '.join(names))}.{accuracy} Drop in a photo to see what "
            "it predicts and which pixels drove the decision.",
            elem_id="tk-header")
        if classifier.notice:
            gr.Markdown(f"**Note:** {html.escape(classifier.notice)}", elem_id="tk-notice")

        with gr.Tab("Classify", id="classify"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=1):
                    # Events take this input unprocessed (preprocess=False): the file is
                    # decoded by transferkit, not by Gradio.
                    image = gr.Image(label="Image", sources=["upload", "clipboard", "webcam"],
                                     type="numpy", height=360, elem_id="tk-input")
                    methods = classifier.methods
                    method = gr.Dropdown(
                        [(METHOD_LABELS.get(m, m), m) for m in methods],
                        value=DEFAULT_METHOD if DEFAULT_METHOD in methods else None,
                        label="Explanation method", visible=bool(methods),
                        info="Grad-CAM is fast; Score-CAM, SmoothGrad and Integrated "
                             "Gradients take longer.", elem_id="tk-method")
                    target = gr.Dropdown(
                        [(TOP_PREDICTION_LABEL, TOP_PREDICTION)] + [(n, n) for n in names],
                        value=TOP_PREDICTION, label="Class to explain",
                        visible=classifier.can_explain, elem_id="tk-target")
                with gr.Column(scale=1):
                    heatmap = gr.Image(label="Heat map", type="numpy", format="png",
                                       interactive=False, height=360,
                                       visible=classifier.can_explain, elem_id="tk-heatmap")
                    label = gr.Label(num_top_classes=min(TOP_K, len(names)),
                                     label="Prediction", elem_id="tk-label")
            examples = _examples(classifier) if classifier.run else []
            if examples:
                gr.Examples([[p] for p in examples], inputs=[image],
                            label="Examples from the test split (click one)",
                            examples_per_page=MAX_EXAMPLES)

        with gr.Tab("Model", id="model"):
            _model_tab(gr, classifier)

        # The image is never decoded by Gradio (preprocess=False): `_decode` uses
        # transferkit's decoder, whose reasons end up in the page.
        predicted = image.change(handlers.predict, inputs=[image], outputs=[label],
                                 api_name="predict", preprocess=False,
                                 trigger_mode="always_last",
                                 api_description="Class probabilities of an image.")
        explain_inputs = [image, method, target]
        if classifier.can_explain:
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
            # A new image: no stale heat map of the previous one meanwhile (or after an
            # error).
            image.change(handlers.clear_heatmap, inputs=None, outputs=[heatmap],
                         queue=False, api_visibility="private", show_progress="hidden")
            for event in explained:
                event.success(handlers.caption, inputs=[method, target, label],
                              outputs=[heatmap], queue=False, api_visibility="private")
        else:  # The API still answers /explain, with the reason it cannot.
            hidden = gr.Button(visible=False)
            hidden.click(handlers.explain, inputs=explain_inputs, outputs=[heatmap, label],
                         api_name="explain", preprocess=False)

    demo.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    demo.transferkit_classifier = classifier  # for tests and tools
    return demo


def _model_tab(gr, classifier: _Classifier) -> None:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            gr.Markdown(_model_markdown(classifier), elem_classes=["tk-metrics"])
            counts = _split_counts(classifier)
            if counts is not None:
                gr.Dataframe(counts, label="Images per class and split", interactive=False)
            per_class = _per_class(classifier)
            if per_class is not None:
                gr.Dataframe(per_class, label="Test set, per class", interactive=False)
        with gr.Column(scale=1):
            matrix = classifier.run.path / "confusion_matrix.png" if classifier.run else None
            if matrix is not None and matrix.is_file():
                gr.Image(str(matrix), label="Confusion matrix (test set)", show_label=False,
                         interactive=False, buttons=["download", "fullscreen"])
    if classifier.run is None:
        return
    wrong = _top_losses(classifier)
    if wrong:
        gr.Markdown("### Most confidently wrong test images\nEach image beside the "
                    "Grad-CAM heat map of the class the model (wrongly) chose.")
        gr.Gallery(wrong, label="Most confidently wrong test images", show_label=False,
                   columns=3, height="auto", object_fit="contain", interactive=False)
    elif (classifier.run.path / "top_losses.csv").is_file():
        gr.Markdown("*The most confidently wrong test images cannot be shown: the data "
                    "folder is no longer where the run was trained*"
                    if _data_dir(classifier) is None else
                    "*No test image was misclassified.*")


def launch(path: str | Path, host: str = "127.0.0.1", port: int | None = 7860,
           share: bool = False, max_file_size: str | int | None = DEFAULT_MAX_FILE_SIZE,
           *, block: bool = True, quiet: bool = False):
    """Serves the demo of a run or export.

    Args:
        path: See `build_demo`.
        host: Interface to bind; the default serves this machine only. Use
            `0.0.0.0` to serve the network (the demo has no login).
        port: TCP port (None: the first free one from 7860).
        share: Also open a public *.gradio.live link (off by default).
        max_file_size: Largest upload accepted, e.g. "10mb" or a number of bytes.
        block: Serve until interrupted; False returns at once, the server running in
            a background thread (stop it with `demo.close()`).
        quiet: No startup messages.

    Returns:
        The running `gradio.Blocks` (`.local_url` is its address).
    """
    demo = build_demo(path)
    demo.launch(server_name=host, server_port=port, share=share,
                max_file_size=max_file_size, prevent_thread_lock=not block,
                show_error=False, quiet=quiet, ssr_mode=False, theme=_theme(), css=CSS,
                footer_links=["api", "gradio"])
    return demo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transferkit-demo",
        description="Serve a trained classifier as a web page with heat maps, and an "
                    "HTTP API (/predict, /explain).")
    parser.add_argument("path", help="run directory, exported SavedModel folder or "
                                     ".tflite file")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default 127.0.0.1: this machine only; "
                             "0.0.0.0 serves the network, with no login)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true",
                        help="also create a public gradio.live link (off by default)")
    parser.add_argument("--max-file-size", default=DEFAULT_MAX_FILE_SIZE,
                        help=f"largest upload accepted (default {DEFAULT_MAX_FILE_SIZE})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The `python -m transferkit.demo` / `apps/gradio_app.py` command line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        launch(args.path, host=args.host, port=args.port, share=args.share,
               max_file_size=args.max_file_size)
    except TransferkitError as e:
        print(f"transferkit-demo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
