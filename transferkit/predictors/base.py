"""`Predictor`, the base of every model wrapper: decoding, batching, top-k, labels.

Every predictor decodes images the way training did (`transferkit.data.images.load_image`:
Pillow, EXIF orientation, transparency on white) and resizes them with
`transferkit.data.pipeline.resize` (or its ONNX equivalent, inside the ONNX model), so
they all give the same top-k answers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from transferkit.data.images import as_rgb, load_image
from transferkit.errors import ImageError, RunError
from transferkit.inference import DEFAULT_BATCH, top_k
from transferkit.layout import LABELS_TXT

ImageInput = str | os.PathLike | bytes | np.ndarray


class Predictor:
    """Base class: decoding, batching and top-k, common to every kind of model.

    Attributes:
        class_names: Output class names, in order.
        source: What was loaded (a run directory, a SavedModel folder, a model file).
        kind: `"run"`, `"savedmodel"`, `"tflite"` or `"onnx"`.
    """

    kind = ""

    def __init__(self, class_names: Sequence[str], source: Path):
        self.class_names = list(class_names)
        self.source = source

    def predict(self, images: Sequence[ImageInput], batch_size: int = DEFAULT_BATCH
                ) -> np.ndarray:
        """Class probabilities of images given as paths, file bytes or RGB arrays.

        Args:
            images: Image file paths, encoded file contents (bytes), or `HxWx3` (or
                `HxW`) RGB arrays: uint8, or numbers in 0-255 (`as_rgb`).
            batch_size: Images per model call, where the model takes batches.

        Returns:
            float32 `[N, C]` probabilities.

        Raises:
            ImageError: An image cannot be decoded (the message names it).
        """
        pixels = [_pixels(image) for image in images]
        if not pixels:
            return np.zeros((0, len(self.class_names)), np.float32)
        return self._predict_pixels(pixels, batch_size)

    def predict_files(self, paths: Sequence[str | os.PathLike], k: int = 3,
                      batch_size: int = DEFAULT_BATCH) -> list[dict[str, Any]]:
        """Classifies files, one record per file: its top k labels, or why it was skipped.

        Each file is decoded once; the readable ones are classified in batches, so one
        bad file among many costs nothing but its own record.

        Args:
            paths: Image files.
            k: Labels per image.
            batch_size: Images per model call.

        Returns:
            In input order: `{"path", "top_k": [{"label", "probability"}, ...]}` or
            `{"path", "error": reason}`.
        """
        records: list[dict[str, Any]] = []
        pixels, good = [], []
        for path in paths:
            records.append({"path": str(path)})
            try:
                pixels.append(load_image(path))
            except ImageError as e:
                records[-1]["error"] = e.reason
                continue
            good.append(records[-1])
        if pixels:
            for record, best in zip(good, self.top_k(
                    self._predict_pixels(pixels, batch_size), k)):
                record["top_k"] = best
        return records

    def evaluate(self, data_dir: str | os.PathLike, unknown: str | os.PathLike | None = None,
                 batch_size: int = DEFAULT_BATCH) -> dict[str, Any]:
        """Accuracy and macro-F1 on a folder whose classes are among the model's.

        Returns:
            `{"accuracy", "macro_f1", "n_images", "n_skipped"}`.

        Raises:
            DataError: The folder has classes the model does not know, or no images.
            ConfigError: `unknown` given: an exported model is evaluated on known classes
                only (pass the run directory).
        """
        from transferkit.errors import ConfigError
        from transferkit.evaluate import evaluate_folder

        if unknown is not None:
            raise ConfigError(f"--unknown needs the run directory, not {self.source}")

        return evaluate_folder(self.predict, self.class_names, data_dir, batch_size)

    def top_k(self, probabilities: np.ndarray, k: int = 3) -> list[list[dict[str, Any]]]:
        """The k most probable labels of each row (`transferkit.inference.top_k`)."""
        return top_k(probabilities, self.class_names, k)

    def _predict_pixels(self, pixels: list[np.ndarray], batch_size: int) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.source)!r}, {len(self.class_names)} classes)"


def read_labels(path: str | Path) -> list[str]:
    """Reads a `labels.txt`: one class name a line, in output order.

    Raises:
        RunError: The file is missing, unreadable or empty.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"cannot read the class names from {path}: "
                       f"{getattr(e, 'strerror', None) or e}; copy the export's "
                       f"{LABELS_TXT} there") from e
    names = (text[:-1] if text.endswith("\n") else text).split("\n")
    if not all(names):
        raise RunError(f"{path} holds no class names (one a line expected)")
    return names


def check_classes(class_names: Sequence[str], n_outputs: int | None, path: Path) -> None:
    """RunError unless the model's output count matches its class names."""
    if n_outputs is not None and len(class_names) != n_outputs:
        raise RunError(f"{path} outputs {n_outputs} classes but its {LABELS_TXT} names "
                       f"{len(class_names)}; use the {LABELS_TXT} exported with it")


def as_uint8(pixels: np.ndarray) -> np.ndarray:
    """Pixels for a uint8 model input: float pixels (0-255) are rounded."""
    if pixels.dtype == np.uint8:
        return pixels
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _pixels(image: ImageInput) -> np.ndarray:
    """Any accepted image → `HxWx3` RGB, decoded as training decodes."""
    return as_rgb(image) if isinstance(image, np.ndarray) else load_image(image)
