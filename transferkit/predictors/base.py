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
            `{"path", "error": reason}`; a model with trust adds `abstained` ("not
            sure"), `unknown` and `unknown_score` ("not one of my classes") to each
            classified record (a full-integer TFLite model: `abstained` only), and a
            model without trust claims neither.
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
            probabilities, fields = self._assess_pixels(pixels, batch_size)
            for i, (record, best) in enumerate(zip(good, self.top_k(probabilities, k))):
                record["top_k"] = best
                record.update(fields[i] if fields is not None else {})
        return records

    def assess(self, images: Sequence[ImageInput], batch_size: int = DEFAULT_BATCH
               ) -> tuple[np.ndarray, list[dict[str, Any]] | None]:
        """Probabilities and the per-image trust fields (as `transferkit.run.Run.assess`).

        Args:
            images: As `predict` takes them.
            batch_size: Images per model call.

        Returns:
            `(probabilities [N, C], fields)`: one `{"abstained", "unknown",
            "unknown_score"}` per image (`{"abstained"}` for a full-integer TFLite
            model), or None for a model without trust.

        Raises:
            ImageError: An image cannot be decoded (the message names it).
        """
        pixels = [_pixels(image) for image in images]
        if not pixels:
            return np.zeros((0, len(self.class_names)), np.float32), \
                (None if not self.has_trust else [])
        return self._assess_pixels(pixels, batch_size)

    @property
    def has_trust(self) -> bool:
        """Whether the model says "not sure" (and, most kinds, "not one of my classes")."""
        return False

    def evaluate(self, data_dir: str | os.PathLike, unknown: str | os.PathLike | None = None,
                 batch_size: int = DEFAULT_BATCH) -> dict[str, Any]:
        """Metrics on a labelled folder, and on a folder of unknown images
        (`transferkit.evaluate.evaluate_folder`, which lists them).

        Raises:
            DataError: The folder has classes the model does not know, or no images.
            RunError: `unknown` given for a model without an unknown score.
        """
        from transferkit.evaluate import evaluate_folder

        return evaluate_folder(self.assess, self.class_names, data_dir, unknown,
                               batch_size, source=str(self.source))

    def top_k(self, probabilities: np.ndarray, k: int = 3) -> list[list[dict[str, Any]]]:
        """The k most probable labels of each row (`transferkit.inference.top_k`)."""
        return top_k(probabilities, self.class_names, k)

    def _predict_pixels(self, pixels: list[np.ndarray], batch_size: int) -> np.ndarray:
        return self._assess_pixels(pixels, batch_size)[0]

    def _assess_pixels(self, pixels: list[np.ndarray], batch_size: int
                       ) -> tuple[np.ndarray, list[dict[str, Any]] | None]:
        """Probabilities `[N, C]` and trust fields (None without trust) of decoded images."""
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


def trust_fields(abstained: np.ndarray, unknown: np.ndarray | None = None,
                 score: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Per-image trust records from the flag arrays (`unknown` None: not claimed)."""
    fields = [{"abstained": bool(a)} for a in np.asarray(abstained).reshape(-1)]
    if unknown is not None:
        for field, u, s in zip(fields, np.asarray(unknown).reshape(-1),
                               np.asarray(score).reshape(-1)):
            field.update(unknown=bool(u), unknown_score=float(s))
    return fields


TRUST_OUTPUTS = ("unknown_score", "is_unknown", "abstained")


def pack(outputs: dict[str, Any]) -> np.ndarray:
    """A model's outputs as one float32 `[n, C + 3]` array (probabilities, then
    `TRUST_OUTPUTS`), so that `transferkit.inference.by_shape` batches them."""
    columns = [np.asarray(outputs["probabilities"], np.float32)]
    columns += [np.asarray(outputs[k], np.float32).reshape(-1, 1) for k in TRUST_OUTPUTS]
    return np.concatenate(columns, axis=1)


def unpack(packed: np.ndarray, n_classes: int
           ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """`pack`'s array → `(probabilities, trust_fields(...))`."""
    score, unknown, abstained = (packed[:, n_classes + i] for i in range(3))
    return packed[:, :n_classes], trust_fields(abstained > 0.5, unknown > 0.5, score)


def as_uint8(pixels: np.ndarray) -> np.ndarray:
    """Pixels for a uint8 model input: float pixels (0-255) are rounded."""
    if pixels.dtype == np.uint8:
        return pixels
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _pixels(image: ImageInput) -> np.ndarray:
    """Any accepted image → `HxWx3` RGB, decoded as training decodes."""
    return as_rgb(image) if isinstance(image, np.ndarray) else load_image(image)
