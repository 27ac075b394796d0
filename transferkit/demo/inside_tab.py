"""The "Inside the model" tab: the lecture's views, interactive, on the served model.

The convolution calculator and the layer table; the feature maps and a max pooling of
an uploaded image at a chosen layer; the first-layer filters; the top patches of a
channel over the run's test images; activation maximization with an objective selector;
translation invariance of the uploaded image; what the network learned about the run's
own images: the t-SNE map of its CNN codes (ImageNet beside fine-tuned, from the run's
feature store) and the linear probe's accuracy by depth. Everything calls
`transferkit.inspect`.

Its events share one concurrency group of their own (`inside`, one at a time), so a
dream that takes seconds never holds up the Classify tab's predictions; the heavy views
(top patches, dream, t-SNE map, depth probe) run at most `access.HEAVY_JOBS` at once and
refuse further requests with "busy" rather than queueing them behind minutes of work.
Saliency (which pixels drove a prediction) is the Classify tab's heat map, not repeated
here.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from transferkit.data.images import load_image
from transferkit.demo.access import HEAVY_JOBS, JobLimit
from transferkit.demo.handlers import error
from transferkit.demo.session import Session
from transferkit.ensemble.members import inspected_run
from transferkit.errors import ImageError, TransferkitError
from transferkit.fileio import subplots

CONCURRENCY_ID = "inside"
CONCURRENCY_LIMIT = 1
HEAVY_ID = "inside-heavy"
HEAVY_CONCURRENCY = HEAVY_JOBS + 4  # threads that may run a view or answer "busy" at once
# The tab's embedding and probe use smaller samples than the commands (which default to
# 2,000 and 1,500 images): a map in well under a minute on 2 cores.
TAB_EMBEDDING_IMAGES = 600
TAB_PROBE_IMAGES = 500
TABLE_COLUMNS = ["name", "type", "output_shape", "kernel", "stride", "padding", "params",
                 "receptive_field", "jump"]


def _image(payload: Any) -> np.ndarray:
    """The uploaded image, decoded by transferkit (events run with preprocess=False)."""
    path = payload.get("path") if isinstance(payload, dict) else payload
    if not path:
        raise error("upload an image first")
    try:
        return load_image(str(path))
    except ImageError as e:
        raise error(f"Cannot use this file: {e.reason}", title="Not a usable image") from None


def _busy() -> gr.Error:
    return error("The server is busy with another heavy view (dream, t-SNE map, probe or "
                 "top patches); try again in a minute.", title="Busy")


def _guarded(fn):
    """Runs a view; a transferkit error becomes a readable message in the page."""
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TransferkitError as e:
            raise error(str(e)) from None
    return run


class InsideViews:
    """The tab's handlers for one served model."""

    def __init__(self, session: Session):
        from transferkit.inspect.base import feature_layers

        self.run = session.run
        self.model = inspected_run(self.run).model  # an ensemble: member 1
        self.layers = feature_layers(self.model)

    def calculate(self, n, k, p, s, filters, in_channels) -> str:
        from transferkit.inspect import calculator

        try:
            r = calculator(int(n), int(k), int(p), int(s), int(filters), int(in_channels))
        except (TransferkitError, TypeError, ValueError) as e:
            return f"*{e}*"
        h, w, c = r["output_shape"]
        return (f"**{int(n)}×{int(n)}×{int(in_channels)} → {h}×{w}×{c}**  \n"
                f"`out = {r['formula']}`  \nparameters: `{r['params_formula']}`")

    def table(self):
        import pandas as pd

        from transferkit.inspect import layer_table

        rows = [{k: (str(v) if isinstance(v, list) else v) for k, v in r.items()
                 if k in TABLE_COLUMNS} for r in layer_table(self.model)]
        return pd.DataFrame(rows, columns=TABLE_COLUMNS)

    def maps(self, payload, layer, n_channels=16):
        from transferkit.inspect.base import colorize, normalize, upscale
        from transferkit.inspect.feature_maps import channel_grid, feature_maps, most_active
        from transferkit.inspect.pooling import max_pool

        fmap = feature_maps(self.model, _image(payload), [layer])[layer]
        top = most_active(fmap, int(n_channels))
        grid = channel_grid(fmap, top)
        channel = int(fmap.std(axis=(0, 1)).argmax())  # the most contrast, as in the CLI
        values = fmap[..., channel]
        if min(values.shape) < 2:
            return grid, None, f"{layer}: {values.shape[0]}x{values.shape[1]}, too small to pool"
        pooled, winners = max_pool(values, 2)
        low, high = min(0.0, float(values.min())), float(values.max())
        marked = colorize(normalize(values, low, high))
        marked[winners] = (255, 0, 0)
        side = max(160, 4 * values.shape[0])
        picture = np.concatenate([upscale(marked, side), np.full((upscale(marked, side)
                                  .shape[0], 8, 3), 255, np.uint8),
                                  _fit(upscale(colorize(normalize(pooled, low, high)),
                                               side // 2), upscale(marked, side).shape[0])],
                                 axis=1)
        caption = (f"{layer}: {fmap.shape[0]}×{fmap.shape[1]}×{fmap.shape[2]}; most active "
                   f"channels {', '.join(map(str, top[:8]))}. Pooling: channel {channel}, "
                   f"2×2 max (winners red) → {pooled.shape[0]}×{pooled.shape[1]}")
        return grid, picture, caption

    def filters(self):
        from transferkit.inspect.base import tile_grid, upscale
        from transferkit.inspect.filters import filter_kernels, render_filter

        kernels = filter_kernels(self.model)
        scale = float(np.abs(kernels).max())
        return tile_grid([upscale(render_filter(k, scale), 40) for k in kernels], 8, gap=4)

    def patches(self, layer, channels, progress=gr.Progress()):
        from transferkit.inspect.patches import patches_picture, top_patches

        images = [str(p) for p in self.run.test_samples(64)]
        found = top_patches(self.run, layer, channels, n_top=5, images=images,
                            progress=lambda f: progress(f, desc="searching"))
        lines = [f"- channel {c['channel']}: top {c['top_mean']:.2f}, random 95th "
                 f"percentile {c['random_p95']:.2f}" for c in found["channels"]]
        return patches_picture(self.model, found), "\n".join(lines)

    def dream(self, objective, layer, channel, class_name, steps, progress=gr.Progress()):
        from transferkit.inspect import dream

        needs_class = objective in ("logit", "probability")
        r = dream(self.run, objective, layer=None if needs_class else layer,
                  channel=None if objective == "layer" or needs_class else int(channel),
                  class_name=class_name if needs_class else None, steps=int(steps),
                  size=min(128, self.run.image_size),
                  progress=lambda f: progress(f, desc="gradient ascent"))
        return r["image"], (f"{r['objective']} **{r['target']}**: {r['start']:.3f} → "
                            f"{r['end']:.3f} in {r['steps']} steps ({r['seconds']:.1f} s); "
                            f"8 random starts: {r['random_mean']:.3f} ± {r['random_std']:.3f}")

    def embedding(self, progress=gr.Progress()):
        from transferkit.inspect import embedding_view

        r = embedding_view(self.run, self.scratch(), max_images=TAB_EMBEDDING_IMAGES,
                           grid=16, progress=lambda f: progress(f, desc="t-SNE"))
        lines = [f"- **{x['features']}** codes of {x['n_images']} images: "
                 f"trustworthiness {x['trustworthiness']:.3f}, kNN accuracy "
                 f"{x['knn_accuracy']:.3f} (in 2-D {x['knn_accuracy_2d']:.3f})"
                 for x in r["records"]]
        return r["files"][0], r["files"][1], "\n".join(lines + [f"- *{n}*" for n in
                                                                r["notes"]])

    def probe(self, progress=gr.Progress()):
        from transferkit.inspect import depth_probe_view

        progress(0, desc="features at every depth")
        r = depth_probe_view(self.run, self.scratch(), max_images=TAB_PROBE_IMAGES,
                             progress=lambda f: progress(f, desc="t-SNE per depth"))
        by_set: dict[str, list[str]] = {}
        for x in r["records"]:
            by_set.setdefault(x["features"], []).append(f"{x['accuracy']:.2f}")
        lines = [f"- **{name}**: {' → '.join(values)}" for name, values in by_set.items()]
        return r["files"][0], r["files"][1], "\n".join(
            ["Linear probe test accuracy, depth by depth:"] + lines +
            [f"- *{n}*" for n in r["notes"]])

    def scratch(self) -> str:
        """A folder of this session's own for the pictures (the run may be read-only)."""
        import tempfile

        if getattr(self, "_scratch", None) is None:
            self._scratch = tempfile.mkdtemp(prefix="transferkit-inside-")
        return self._scratch

    def invariance(self, payload):
        from transferkit.inspect import invariance

        r = invariance(self.run, _image(payload), step=2)
        fig, ax = subplots(figsize=(7, 3))
        ax.plot(r["shifts"], r["probabilities"], "o-", ms=3, label=f"P({r['class']})")
        ax.plot(r["shifts"], r["feature_change"], "s-", ms=3, label="pooled feature change")
        for k in range(0, max(r["shifts"]) + 1, r["total_stride"]):
            ax.axvline(k, color="red", alpha=0.4, ls="--")
        ax.set_xlabel("shift (pixels); red: multiples of the total stride")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
        return fig


def _fit(image: np.ndarray, height: int) -> np.ndarray:
    """Pads an image with white at the bottom to `height` rows."""
    pad = max(0, height - image.shape[0])
    return np.pad(image[:height], ((0, pad), (0, 0), (0, 0)), constant_values=255)


def inside_tab(session: Session) -> None:
    """Adds the tab's components and events to the `gradio.Blocks` being built."""
    from transferkit.inspect.dream import OBJECTIVES
    from transferkit.inspect.feature_maps import default_layers

    if session.run is None:
        gr.Markdown("*The views inside the model need its Keras file; this export has "
                    "none beside it.*")
        return
    views = InsideViews(session)
    limits = {"concurrency_id": CONCURRENCY_ID, "concurrency_limit": CONCURRENCY_LIMIT}
    # The heavy views: refused at once beyond HEAVY_JOBS (`access.JobLimit`), never queued
    # behind a job of minutes; their own group lets a refusal through without waiting.
    heavy = JobLimit(HEAVY_JOBS, _busy).guard
    heavy_limits = {"concurrency_id": HEAVY_ID, "concurrency_limit": HEAVY_CONCURRENCY}
    stages = default_layers(views.model)
    gr.Markdown("What each layer of this classifier computes, as in the lecture on "
                "convolutional networks. Which pixels drove a prediction is the "
                "**Classify** tab's heat map (`transferkit explain`).")
    with gr.Accordion("Convolution arithmetic", open=False):
        with gr.Row():
            numbers = [gr.Number(v, label=name, precision=0, minimum=0) for name, v in
                       [("input side n", 32), ("kernel k", 5), ("padding p", 0),
                        ("stride s", 1), ("filters", 20), ("input channels", 3)]]
        answer = gr.Markdown(views.calculate(32, 5, 0, 1, 20, 3), elem_id="tk-calc")
        for number in numbers:
            number.change(views.calculate, numbers, answer, queue=False,
                          api_visibility="private")
        gr.Dataframe(views.table(), label="Every layer", interactive=False, max_height=320)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            image = gr.Image(label="Image", sources=["upload", "clipboard"], type="numpy",
                             height=260, elem_id="tk-inside-input")
            layer = gr.Dropdown(views.layers, value=stages[min(2, len(stages) - 1)],
                                label="Layer", elem_id="tk-inside-layer")
            invariance_button = gr.Button("Translation invariance of this image")
        with gr.Column(scale=2):
            grid = gr.Image(label="Feature maps: the most active channels", type="numpy",
                            format="png", interactive=False, elem_id="tk-inside-fmaps")
            pooled = gr.Image(label="Max pooling", type="numpy", format="png",
                              interactive=False, elem_id="tk-inside-pooling")
            caption = gr.Markdown(elem_id="tk-inside-caption")
    shift_plot = gr.Plot(label="Translation invariance", elem_id="tk-inside-invariance")
    gr.on([image.change, layer.change], _guarded(views.maps), [image, layer],
          [grid, pooled, caption], preprocess=False, trigger_mode="always_last",
          api_name="feature_maps", **limits)
    invariance_button.click(_guarded(views.invariance), [image], [shift_plot],
                            preprocess=False, api_visibility="private", **limits)
    with gr.Accordion("First-layer filters", open=False):
        gr.Image(views.filters(), label="Each filter as an RGB tile (grey = 0)",
                 interactive=False, format="png")
    with gr.Accordion("Top patches: what excites a channel, over the test images",
                      open=False):
        with gr.Row():
            patch_layer = gr.Dropdown(views.layers, value=stages[-2] if len(stages) > 1
                                      else stages[-1], label="Layer")
            patch_channels = gr.Textbox("0-7", label="Channels")
            patch_button = gr.Button("Find top patches")
        patch_picture = gr.Image(label="Top patches", format="png", interactive=False)
        patch_numbers = gr.Markdown()
        patch_button.click(heavy(_guarded(views.patches)), [patch_layer, patch_channels],
                           [patch_picture, patch_numbers], api_visibility="private",
                           **heavy_limits)
    with gr.Accordion("Dream: the image a channel or a class wants", open=False):
        with gr.Row():
            objective = gr.Dropdown(list(OBJECTIVES), value="channel", label="Objective")
            dream_layer = gr.Dropdown(views.layers, value=stages[-2] if len(stages) > 1
                                      else stages[-1], label="Layer")
            channel = gr.Number(0, label="Channel", precision=0, minimum=0)
            target = gr.Dropdown(session.class_names, value=session.class_names[0],
                                 label="Class (logit, probability)")
            steps = gr.Slider(8, 256, value=64, step=8, label="Steps")
        dream_button = gr.Button("Dream")
        dreamed = gr.Image(label="Dream", format="png", interactive=False, height=256)
        dream_numbers = gr.Markdown()
        dream_button.click(heavy(_guarded(views.dream)),
                           [objective, dream_layer, channel, target, steps],
                           [dreamed, dream_numbers], api_visibility="private",
                           **heavy_limits)
    with gr.Accordion("What the network learned about your images: CNN codes and depth",
                      open=False):
        gr.Markdown("The t-SNE map of the pooled features (the head's input) of a sample "
                    "of the run's images, framed by class, misclassified test images "
                    "crossed; the ImageNet backbone's codes beside the fine-tuned ones. "
                    "Then a logistic regression at each depth: how linearly separable the "
                    "classes are after each block (`transferkit inspect embedding`, "
                    "`inspect depth-probe`).")
        with gr.Row():
            map_button = gr.Button("Map the CNN codes (t-SNE)")
            probe_button = gr.Button("Probe separability by depth")
        tsne_map = gr.Image(label="t-SNE of the CNN codes", format="png",
                            interactive=False, elem_id="tk-inside-embedding")
        tsne_grid = gr.Image(label="The same map as a grid", format="png",
                             interactive=False)
        map_numbers = gr.Markdown(elem_id="tk-inside-embedding-numbers")
        map_button.click(heavy(_guarded(views.embedding)), [],
                         [tsne_map, tsne_grid, map_numbers], api_visibility="private",
                         **heavy_limits)
        probe_curve = gr.Image(label="Linear probe accuracy by depth", format="png",
                               interactive=False, elem_id="tk-inside-probe")
        probe_maps = gr.Image(label="t-SNE of the test images at each depth", format="png",
                              interactive=False)
        probe_numbers = gr.Markdown()
        probe_button.click(heavy(_guarded(views.probe)), [], [probe_curve, probe_maps,
                                                       probe_numbers],
                           api_visibility="private", **heavy_limits)
