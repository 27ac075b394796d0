"""Feedback from the demo: "Wrong? The right class is [...]" saves the image for retraining.

Only when the visitor presses the button, the uploaded file (its original bytes) is
saved as `feedback/<class>/<time>-<hash><ext>` in the run directory (beside the model
for an export without one), and a row is added to `feedback/feedback.csv`: `file`
(relative to `feedback/`), `class` (the one given), `predicted` and `probability` (what
the model said), `time` (UTC). The folder is laid out like a training folder, so it
folds into the data as docs/feedback.md shows.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import threading
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from transferkit import layout
from transferkit.data.images import IMAGE_EXTENSIONS
from transferkit.demo.handlers import decode_upload, error, upload_source
from transferkit.demo.session import Session
from transferkit.fileio import atomic_path

COLUMNS = ["file", "class", "predicted", "probability", "time"]


class Feedback:
    """The feedback folder of a served model.

    Args:
        folder: `feedback/` (created on the first save).
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._lock = threading.Lock()  # one writer of feedback.csv at a time

    def save(self, data: bytes, suffix: str, class_name: str, predicted: str,
             probability: float) -> Path:
        """Saves one corrected image and its row; returns the image's path.

        Args:
            data: The file's bytes, as uploaded.
            suffix: Its extension (".png" when it had none transferkit reads).
            class_name: The right class, as the visitor gave it.
            predicted: The model's top class.
            probability: Its probability.
        """
        now = datetime.datetime.now(datetime.timezone.utc)
        suffix = suffix.lower() if suffix.lower() in IMAGE_EXTENSIONS else ".png"
        name = f"{now:%Y%m%d-%H%M%S}-{hashlib.sha256(data).hexdigest()[:10]}{suffix}"
        path = self.folder / class_name / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        table = self.folder / layout.FEEDBACK_CSV
        with self._lock:
            new = not table.exists()
            with open(table, "a", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                if new:
                    writer.writerow(COLUMNS)
                writer.writerow([path.relative_to(self.folder).as_posix(), class_name,
                                 predicted, f"{probability:.6f}",
                                 now.isoformat(timespec="seconds")])
        return path

    def counts(self, class_names: list[str]) -> pd.DataFrame:
        """Corrections saved so far: `class`, `images` (per class given, every class)."""
        table = self.folder / layout.FEEDBACK_CSV
        given = pd.read_csv(table)["class"].astype(str) if table.exists() else \
            pd.Series([], dtype=str)
        counts = given.value_counts()
        return pd.DataFrame({"class": class_names,
                             "images": [int(counts.get(c, 0)) for c in class_names]})


def feedback_folder(session: Session) -> Path:
    """`feedback/` in the run directory, else beside the exported model."""
    if session.run is not None:
        return session.run.path / layout.FEEDBACK_DIR
    path = Path(session.path)
    return (path if path.is_dir() else path.parent) / layout.FEEDBACK_DIR


def feedback_controls(session: Session, feedback: Feedback, image: gr.Image) -> None:
    """"Wrong? The right class is [dropdown]" and its button, under the prediction."""
    names = session.class_names
    with gr.Row(equal_height=True):
        right = gr.Dropdown(names, value=None, label="Wrong? The right class is",
                            elem_id="tk-feedback-class", scale=3)
        button = gr.Button("Save as feedback", elem_id="tk-feedback-save", scale=1)
    status = gr.Markdown("", elem_id="tk-feedback-status")

    def save(payload, class_name) -> str:
        source = upload_source(payload)
        if source is None:
            raise error("upload an image first")
        if class_name not in names:
            raise error(f"choose the right class among: {', '.join(names)}")
        array = decode_upload(source)  # a file the model cannot read is not saved
        probabilities, _ = session.assess(array)
        best = int(np.argmax(probabilities))
        if isinstance(source, bytes):
            data, suffix = source, ""
        else:
            data, suffix = Path(source).read_bytes(), Path(source).suffix
        try:
            path = feedback.save(data, suffix, class_name, names[best],
                                 float(probabilities[best]))
        except OSError as e:
            raise error(f"cannot save the feedback in {feedback.folder}: "
                        f"{e.strerror or e}") from None
        n = int(feedback.counts(names)["images"].sum())
        return (f"Saved as **{class_name}** (the model said {names[best]}, "
                f"{probabilities[best]:.0%}): `{path.relative_to(feedback.folder.parent)}`"
                f"; {n} correction{'s' if n != 1 else ''} so far.")

    button.click(save, [image, right], [status], preprocess=False,
                 api_visibility="private")
    image.change(lambda: "", None, [status], queue=False, api_visibility="private",
                 show_progress="hidden")


def feedback_counts(session: Session, feedback: Feedback, tab: gr.Tab) -> None:
    """The Model tab's table of corrections per class, read again when the tab opens."""
    table = gr.Dataframe(feedback.counts(session.class_names), interactive=False,
                         label=f"Feedback saved from this demo ({feedback.folder})",
                         elem_id="tk-feedback-counts")
    tab.select(lambda: feedback.counts(session.class_names), None, [table],
               api_visibility="private", queue=False)
