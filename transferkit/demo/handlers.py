"""The functions behind the demo's events: decode the upload, predict, explain.

Events run with `preprocess=False`: Gradio never decodes an image, transferkit's own
decoder does (`transferkit.data.images.load_image`), so a bad file gives its one-line
reason in the page. Every failure is a `gradio.Error` with a readable message.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Sequence

import gradio as gr
import numpy as np
from PIL import Image

from transferkit.data.images import load_image
from transferkit.demo.session import Session
from transferkit.errors import ImageError, TransferkitError
from transferkit.explain import DEFAULT_METHOD, METHODS, overlay

TOP_PREDICTION = ""              # the class value meaning "explain the top prediction"
TOP_PREDICTION_LABEL = "top prediction"
DISPLAY_SIDE = 512               # long side of the overlay shown (and returned)


def error(message: str, title: str = "Error") -> gr.Error:
    """The exception a handler raises: its message is shown in the page, no traceback."""
    return gr.Error(message, title=title, print_exception=False)


def display_copy(image: np.ndarray, side: int) -> np.ndarray:
    """The image shrunk (aspect kept) so that its long side is at most `side` pixels."""
    height, width = image.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def upload_source(payload: Any) -> str | bytes | None:
    """The uploaded file behind an image input (Gradio has already checked that a path
    is its own upload)."""
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
                raise error("cannot read this image: invalid data URL") from None
    raise error("no image received: upload an image file")


def decode_upload(source: str | bytes) -> np.ndarray:
    try:
        return load_image(source)
    except ImageError as e:
        raise error(f"Cannot use this file: {e.reason}", title="Not a usable image") \
            from None


def _confidences(class_names: Sequence[str], probabilities: np.ndarray) -> dict[str, float]:
    return {name: float(p) for name, p in zip(class_names, probabilities)}


def verdict_text(class_names: Sequence[str], probabilities: np.ndarray,
                 fields: dict[str, Any] | None, n_guesses: int = 2) -> str:
    """Markdown: what the model says of an image beyond its probabilities.

    Args:
        class_names: The model's classes.
        probabilities: `[C]`.
        fields: The image's trust fields, or None (nothing is claimed: "").
        n_guesses: Best guesses named when not sure.

    Returns:
        "This does not look like any of: …" (unknown, which takes precedence), "Not
        sure — my best guesses are …" (abstained), or "".
    """
    if fields is None:
        return ""
    if fields.get("unknown"):
        return ("### This does not look like any of: " +
                ", ".join(html.escape(name) for name in class_names))
    if fields.get("abstained"):
        order = np.argsort(-np.asarray(probabilities), kind="stable")[:n_guesses]
        guesses = " or ".join(f"{html.escape(class_names[i])} ({probabilities[i]:.0%})"
                              for i in order)
        return f"### Not sure — my best guesses are {guesses}"
    return ""


def method_label(method: str) -> str:
    """The name a method is shown under ("Grad-CAM" for "gradcam")."""
    return METHODS[method].label if method in METHODS else method


class Handlers:
    """The event handlers of one session.

    Args:
        session: What is served.
    """

    def __init__(self, session: Session):
        self.session = session

    def predict(self, image: Any) -> dict[str, float] | None:
        """`/predict`: the class probabilities of an image (None: no image)."""
        source = upload_source(image)
        if source is None:
            return None
        array = decode_upload(source)  # here, not in the shared pass: a bad file fails alone
        return _confidences(self.session.class_names,
                            self.session.shared_probabilities(array))

    def verdict(self, image: Any) -> tuple[str, Any]:
        """The answer in words, for a model with trust: "Not sure — my best guesses are
        …" when it abstains, "This does not look like any of: …" when the image is
        unlike its classes, and then the label shows no winner (its heading hidden; the
        probabilities stay); "" and the winner for a sure, known answer (or no trust).

        Returns:
            `(markdown, label update)`.
        """
        text = ""
        try:  # a bad file: `predict` already says why, once
            source = upload_source(image)
            array = None if source is None else decode_upload(source)
        except gr.Error:
            array = None
        if array is not None:
            probabilities, fields = self.session.assess(array)
            text = verdict_text(self.session.class_names, probabilities, fields)
        return text, gr.Label(show_heading=not text)

    def explain(self, image: Any, method: str | None = DEFAULT_METHOD,
                target: str | None = TOP_PREDICTION
                ) -> tuple[np.ndarray | None, dict[str, float] | None]:
        """`/explain`: the heat map of a class over the image, and the probabilities.

        Args:
            image: The uploaded image.
            method: A name of `transferkit.explain.METHODS`, or its label.
            target: A class name, or "" (or "top prediction") for the top prediction.

        Returns:
            `(overlay, confidences)`; `(None, None)` without an image.
        """
        session = self.session
        source = upload_source(image)
        if source is None:
            return None, None
        if not session.can_explain:
            raise error(session.notice)
        method = self._method(method)
        target = self._target(target)
        array = decode_upload(source)
        batch = session.run.preprocess([array])
        probabilities = session.probabilities(array, batch)
        index = int(np.argmax(probabilities)) if target is None else target
        try:
            heatmap = session.heatmaps(method, batch, [index])[0]
        except TransferkitError as e:
            raise error(f"cannot explain this image: {e}") from None
        return (overlay(display_copy(array, DISPLAY_SIDE), heatmap),
                _confidences(session.class_names, probabilities))

    @staticmethod
    def clear_heatmap() -> dict:
        """A new image: no stale heat map of the previous one (UI only)."""
        return gr.update(value=None, label="Heat map")

    @staticmethod
    def caption(method: str | None, target: str | None, prediction: Any) -> dict:
        """The heat map's title: which method, which class (UI only)."""
        label = method_label(method or DEFAULT_METHOD)
        if target:
            return gr.update(label=f"{label} · {target}")
        # The Label's value, preprocessed: {class name: probability}.
        top = max(prediction, key=prediction.get) if isinstance(prediction, dict) \
            and prediction else None
        return gr.update(label=f"{label} · {top} (top prediction)" if top else label)

    def _method(self, method: str | None) -> str:
        method = str(method or DEFAULT_METHOD).strip()
        methods = self.session.methods
        by_label = {method_label(m).lower(): m for m in methods}
        method = by_label.get(method.lower(), method)
        if method not in methods:
            raise error(f"unknown explanation method {method!r}; choose one of: "
                        f"{', '.join(methods)}")
        return method

    def _target(self, target: str | None) -> int | None:
        """The class index to explain, or None for the top prediction."""
        names = self.session.class_names
        target = "" if target is None else str(target)
        if target.strip() in (TOP_PREDICTION, TOP_PREDICTION_LABEL):
            return None
        if target not in names:
            raise error(f"unknown class {target!r}; choose one of: {', '.join(names)} "
                        "(or \"\" for the top prediction)")
        return names.index(target)
