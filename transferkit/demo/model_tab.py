"""The Model tab: what the served classifier is, how it was trained and how it does.

Everything comes from the `Run`'s accessors (plan, metrics, splits, per-class table,
confusion matrix, training history, top losses, data folder), so a run trained from
`tfds:NAME` shows the same as one trained from a folder. An export without a Keras
model shows its classes.
"""

from __future__ import annotations

import html

import gradio as gr
import numpy as np

from transferkit.demo.handlers import display_copy
from transferkit.demo.session import Session
from transferkit.explain import DEFAULT_METHOD, overlay
from transferkit.report.plots import training_curves
from transferkit.report.sections import split_counts, top_loss_images

TOP_LOSSES_SHOWN = 6             # confidently wrong test images shown
GALLERY_SIDE = 256               # long side of each image of the gallery


def model_tab(session: Session) -> None:
    """Adds the tab's components to the `gradio.Blocks` being built."""
    run = session.run
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            gr.Markdown(_summary(session), elem_classes=["tk-metrics"])
            if run is None:
                return
            counts = split_counts(run)
            if counts is not None:
                gr.Dataframe(counts, label="Images per class and split", interactive=False)
            per_class = run.per_class
            if per_class is not None:
                per_class = per_class.round(
                    {c: 3 for c in ("precision", "recall", "f1") if c in per_class})
                gr.Dataframe(per_class, label="Test set, per class", interactive=False)
        with gr.Column(scale=1):
            matrix = run.confusion_matrix_image
            if matrix is not None:
                gr.Image(str(matrix), label="Confusion matrix (test set)", show_label=False,
                         interactive=False, buttons=["download", "fullscreen"])
    history = run.history
    if history is not None and not history.empty:  # the report's plot, the same code
        gr.Plot(training_curves(history), label="Training curves", elem_id="tk-curves")
    losses = run.top_losses
    if losses is None:
        return
    wrong = _top_losses(session)
    if wrong:
        gr.Markdown("### Most confidently wrong test images\nEach image beside the "
                    "Grad-CAM heat map of the class the model (wrongly) chose.")
        gr.Gallery(wrong, label="Most confidently wrong test images", show_label=False,
                   columns=3, height="auto", object_fit="contain", interactive=False)
    elif losses.empty:
        gr.Markdown("*No test image was misclassified.*")
    else:
        folder = html.escape(str(run.data_folder))
        gr.Markdown("*The most confidently wrong test images cannot be shown: the data "
                    f"folder is no longer where the run was trained ({folder})*")


def _top_losses(session: Session) -> list[tuple[np.ndarray, str]]:
    """The most confidently wrong test images still on disk, each beside its heat map
    of the (wrongly) predicted class, with a caption."""
    names = session.class_names
    images, rows = top_loss_images(session.run, TOP_LOSSES_SHOWN)
    if not images:
        return []
    maps = session.heatmaps(DEFAULT_METHOD, session.run.preprocess(images),
                            [names.index(r.predicted) for r in rows])
    gallery = []
    for image, heatmap, row in zip(images, maps, rows):
        small = display_copy(image, GALLERY_SIDE)
        gap = np.full((small.shape[0], 6, 3), 255, np.uint8)
        pair = np.concatenate([small, gap, overlay(small, heatmap)], axis=1)
        gallery.append((pair, f"{row.true} → predicted {row.predicted} "
                              f"({float(row.probability):.0%})"))
    return gallery


def _summary(session: Session) -> str:
    """Markdown: name, backbone, plan, classes, image counts, test metrics."""
    run = session.run
    classes = (f"- **Classes ({len(session.class_names)}):** "
               f"{html.escape(', '.join(session.class_names))}")
    lines = [f"### {html.escape(session.name)}"]
    if run is None:
        lines += [f"- **Model:** `{html.escape(str(session.path))}`", classes]
        return "\n".join(lines)
    config = run.config
    lines.append(f"- **Backbone:** `{config.backbone}` ({config.weights} weights), "
                 f"{run.image_size}×{run.image_size} px input")
    if session.predictor is not None:
        lines.append(f"- **Served from:** `{html.escape(str(session.path))}` "
                     f"(heat maps from `{html.escape(str(run.path))}`)")
    plan = run.plan
    if plan:
        lines.append(_plan_text(plan))
    lines.append(classes)
    metrics = run.metrics
    if metrics:
        lines += _metrics_lines(metrics)
    return "\n".join(lines)


def _plan_text(plan: dict) -> str:
    if plan.get("strategy") == "fine-tune":
        what = (f"**fine-tuned**: the top {plan.get('unfreeze_blocks')} of "
                f"{plan.get('total_blocks')} backbone blocks were trained after the head")
    else:
        what = "**frozen** backbone (feature extraction): only the new head was trained"
    return f"- **Plan:** {what}.\n- **Why:** {html.escape(plan.get('reason', ''))}"


def _metrics_lines(metrics: dict) -> list[str]:
    counts = ", ".join(f"{metrics[k]} {k[2:]}" for k in ("n_train", "n_val", "n_test")
                       if k in metrics)
    skipped = metrics.get("n_skipped")
    lines = [f"- **Images:** {counts}" +
             (f" ({skipped} unusable files skipped)" if skipped else "")]
    if "accuracy" in metrics:
        lines.append(f"- **Test accuracy:** {metrics['accuracy']:.1%} · "
                     f"**macro-F1:** {metrics.get('macro_f1', float('nan')):.3f}")
    if "train_seconds" in metrics:
        lines.append(f"- **Training time:** {metrics['train_seconds']:.0f} s")
    return lines
