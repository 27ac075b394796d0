"""One way to classify images, whatever was deployed: a run, a SavedModel or a TFLite file.

    predictor = load_predictor("runs/flowers/export/model.tflite")
    probabilities = predictor.predict(["a.jpg", open("b.png", "rb").read()])
    predictor.top_k(probabilities, k=3)  # [[{"label": "rose", "probability": 0.93}, ...]]

Every predictor decodes images the way training did (`transferkit.data.images.load_image`:
Pillow, EXIF orientation, transparency on white) and resizes them with
`transferkit.data.pipeline.resize`, so the three give the same top-k answers (their
probabilities agree to within `transferkit.export`'s parity tolerance, which every
export is checked against). `predict_files` classifies a list of files and reports each
file that cannot be used instead of failing the whole list.

Export folders are laid out as `transferkit.layout` names them.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from transferkit.data.images import as_rgb, load_image
from transferkit.data.pipeline import resize
from transferkit.errors import ImageError, RunError
from transferkit.inference import DEFAULT_BATCH, by_shape, in_batches, top_k
from transferkit.layout import (LABELS_TXT, SAVED_MODEL_DIR, SAVED_MODEL_PB, STATE_FILE,
                                TFLITE_FILE)

ImageInput = str | os.PathLike | bytes | np.ndarray


class Predictor:
    """Base class: decoding, batching and top-k, common to every kind of model.

    Attributes:
        class_names: Output class names, in order.
        source: What was loaded (a run directory, a SavedModel folder, a .tflite file).
        kind: `"run"`, `"savedmodel"` or `"tflite"`.
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

    def top_k(self, probabilities: np.ndarray, k: int = 3) -> list[list[dict[str, Any]]]:
        """The k most probable labels of each row (`transferkit.inference.top_k`)."""
        return top_k(probabilities, self.class_names, k)

    def _predict_pixels(self, pixels: list[np.ndarray], batch_size: int) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.source)!r}, {len(self.class_names)} classes)"


class RunPredictor(Predictor):
    """The run's own Keras model (`transferkit.run.Run.predict`)."""

    kind = "run"

    def __init__(self, run):
        super().__init__(run.class_names, run.path)
        self.run = run

    def _predict_pixels(self, pixels: list[np.ndarray], batch_size: int) -> np.ndarray:
        return np.asarray(self.run.predict(pixels, batch_size), np.float32)


class SavedModelPredictor(Predictor):
    """An exported SavedModel, through its `serving_default` signature.

    Args:
        path: The SavedModel folder.
        class_names: Defaults to its `assets/labels.txt`, else `labels.txt` beside it.

    Raises:
        RunError: Not a SavedModel written by `transferkit.export`, or no class names.
    """

    kind = "savedmodel"

    def __init__(self, path: str | Path, class_names: Sequence[str] | None = None):
        path = Path(path)
        try:
            self.loaded = tf.saved_model.load(str(path))
            self._serve = self.loaded.signatures["serving_default"]
            self._serve_bytes = self.loaded.signatures.get("serve_bytes")
        except (OSError, ValueError, KeyError, tf.errors.OpError) as e:
            raise RunError(f"cannot load the SavedModel {path}: {e}; point to the "
                           f"export's {SAVED_MODEL_DIR}/ folder") from e
        spec = self._serve.structured_input_signature[1].get("images")
        outputs = self._serve.structured_outputs
        if spec is None or spec.dtype != tf.uint8 or "probabilities" not in outputs:
            raise RunError(f"{path} is not a SavedModel exported by transferkit (its "
                           "serving_default signature does not take uint8 `images`)")
        if class_names is None:
            inside = path / "assets" / LABELS_TXT
            class_names = read_labels(inside if inside.is_file() else path.parent /
                                      LABELS_TXT)
        _check_classes(class_names, outputs["probabilities"].shape[-1], path)
        super().__init__(class_names, path)

    def predict_encoded(self, data: Sequence[bytes], batch_size: int = 32) -> np.ndarray:
        """Probabilities of encoded files, decoded inside the graph (`serve_bytes`).

        TensorFlow decodes here, not Pillow: the EXIF orientation is not applied and
        transparency is dropped (see `transferkit.export.decode_image_bytes`).

        Args:
            data: The files' bytes (JPEG, PNG, GIF, BMP or WebP).
            batch_size: Files per call.

        Returns:
            float32 `[N, C]` probabilities.

        Raises:
            tf.errors.InvalidArgumentError: A file is not an image TensorFlow decodes.
        """
        if self._serve_bytes is None:
            raise RunError(f"{self.source} has no serve_bytes signature; re-export it")
        return in_batches(lambda part: self._serve_bytes(
            image_bytes=tf.constant(list(part), tf.string))["probabilities"].numpy(),
            list(data), batch_size, len(self.class_names))

    def _predict_pixels(self, pixels: list[np.ndarray], batch_size: int) -> np.ndarray:
        # The signature takes uint8: float pixels (0-255) are rounded to it.
        return by_shape([_as_uint8(p) for p in pixels], lambda group: self._serve(
            images=tf.constant(group))["probabilities"].numpy(), batch_size,
            len(self.class_names))


class TFLitePredictor(Predictor):
    """An exported `.tflite` model (fixed `[1, S, S, 3]` float32 input).

    Images are resized to S here, with the training resize, one per call. Not safe to
    share between threads (the interpreter holds its tensors).

    Args:
        path: The `.tflite` file.
        class_names: Defaults to `labels.txt` beside it.
        num_threads: Interpreter threads (None: TFLite's default).

    Raises:
        RunError: Not a TFLite model of this kind, or no class names.
    """

    kind = "tflite"

    def __init__(self, path: str | Path, class_names: Sequence[str] | None = None,
                 num_threads: int | None = None):
        path = Path(path)
        try:
            self.interpreter = _interpreter(path, num_threads)
            self.interpreter.allocate_tensors()
        except (OSError, ValueError, RuntimeError) as e:
            raise RunError(f"cannot load the TFLite model {path}: {e}") from e
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        shape = tuple(inputs[0]["shape"]) if len(inputs) == 1 else ()
        if (len(shape) != 4 or shape[0] != 1 or shape[1] != shape[2] or shape[3] != 3
                or inputs[0]["dtype"] != np.float32 or len(outputs) != 1):
            raise RunError(f"{path} is not a TFLite model exported by transferkit "
                           "(expected one float32 [1, S, S, 3] input and one output)")
        self.image_size = int(shape[1])
        self._input = inputs[0]["index"]
        self._output = outputs[0]["index"]
        if class_names is None:
            class_names = read_labels(path.parent / LABELS_TXT)
        _check_classes(class_names, int(outputs[0]["shape"][-1]), path)
        super().__init__(class_names, path)

    def invoke(self, image: np.ndarray) -> np.ndarray:
        """Runs the model on one resized image, float32 `[1, S, S, 3]` → `[1, C]`."""
        self.interpreter.set_tensor(self._input, np.asarray(image, np.float32))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output).copy()

    def _predict_pixels(self, pixels: list[np.ndarray], batch_size: int) -> np.ndarray:
        return np.concatenate([self.invoke(resize(p, self.image_size).numpy()[None])
                               for p in pixels])


def load_predictor(path: str | os.PathLike) -> Predictor:
    """Opens a run directory, an export folder, a SavedModel folder or a `.tflite` file.

    Args:
        path: A finished run directory; an export folder (its SavedModel is used, else
            its TFLite model); a SavedModel folder (`export/saved_model`); or a
            `.tflite` file (class names from `labels.txt` beside it).

    Returns:
        A `Predictor`.

    Raises:
        RunError: The path is none of these, or its class names cannot be found.
    """
    from transferkit.run import load_run

    path = Path(path)
    if path.is_file() and path.suffix == ".tflite":
        return TFLitePredictor(path)
    if path.is_dir():
        if (path / STATE_FILE).is_file():
            return RunPredictor(load_run(path))
        if (path / SAVED_MODEL_PB).is_file():
            return SavedModelPredictor(path)
        if (path / SAVED_MODEL_DIR / SAVED_MODEL_PB).is_file():
            return SavedModelPredictor(path / SAVED_MODEL_DIR)
        if (path / TFLITE_FILE).is_file():
            return TFLitePredictor(path / TFLITE_FILE)
    what = "does not exist" if not path.exists() else "is not a model transferkit can load"
    raise RunError(f"{path} {what}; pass a run directory, an export folder, its "
                   f"{SAVED_MODEL_DIR}/ folder, or a .tflite file")


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


def _check_classes(class_names: Sequence[str], n_outputs: int | None, path: Path) -> None:
    if n_outputs is not None and len(class_names) != n_outputs:
        raise RunError(f"{path} outputs {n_outputs} classes but its {LABELS_TXT} names "
                       f"{len(class_names)}; use the {LABELS_TXT} exported with it")


def _pixels(image: ImageInput) -> np.ndarray:
    """Any accepted image → `HxWx3` RGB, decoded as training decodes."""
    return as_rgb(image) if isinstance(image, np.ndarray) else load_image(image)


def _as_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _interpreter(path: Path, num_threads: int | None):
    """LiteRT's interpreter when installed (`ai-edge-litert`), else TensorFlow's."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        with warnings.catch_warnings():  # "deprecated": it still ships with TF 2.21.
            warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is "
                                    "deprecated")
            return tf.lite.Interpreter(model_path=str(path), num_threads=num_threads)
    return Interpreter(model_path=str(path), num_threads=num_threads)
