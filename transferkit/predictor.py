"""One way to classify images, whatever was deployed: a run, a SavedModel or a TFLite file.

    predictor = load_predictor("runs/flowers/export/model.tflite")
    probabilities = predictor.predict(["a.jpg", open("b.png", "rb").read()])
    predictor.top_k(probabilities, k=3)  # [[{"label": "rose", "probability": 0.93}, ...]]

Every predictor decodes images the way training did (`transferkit.data.images.load_image`:
Pillow, EXIF orientation, transparency on white) and resizes them with
`transferkit.data.pipeline.resize`, so the three give the same top-k answers (their
probabilities agree to about 1e-6; `transferkit.export` checks this on every export).

This module also defines the layout of an export folder, as read here and written by
`transferkit.export`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from transferkit.data.images import load_image
from transferkit.data.pipeline import resize
from transferkit.errors import ImageError, RunError

SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
KERAS_FILE = "model.keras"
LABELS_FILE = "labels.txt"
CONFIG_FILE = "config.json"
PARITY_FILE = "parity.json"

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

    def predict(self, images: Sequence[ImageInput], batch_size: int = 32) -> np.ndarray:
        """Class probabilities of images given as paths, file bytes or RGB arrays.

        Args:
            images: Image file paths, encoded file contents (bytes), or uint8 `HxWx3`
                (or `HxW`) RGB arrays.
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

    def top_k(self, probabilities: np.ndarray, k: int = 3) -> list[list[dict[str, Any]]]:
        """The k most probable labels of each row: `[{"label", "probability"}, ...]`.

        Args:
            probabilities: `[N, C]`, as returned by `predict`.
            k: Labels per image (at most C).

        Returns:
            One list per image, most probable first.
        """
        probabilities = np.asarray(probabilities)
        k = min(k, len(self.class_names))
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        return [[{"label": self.class_names[j], "probability": float(p[j])} for j in row]
                for p, row in zip(probabilities, order)]

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
            inside = path / "assets" / LABELS_FILE
            class_names = read_labels(inside if inside.is_file() else path.parent /
                                      LABELS_FILE)
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
        parts = [self._serve_bytes(image_bytes=tf.constant(list(data[i:i + batch_size]),
                                                           tf.string))["probabilities"]
                 .numpy() for i in range(0, len(data), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.class_names)),
                                                            np.float32)

    def _predict_pixels(self, pixels: list[np.ndarray], batch_size: int) -> np.ndarray:
        return _by_shape(pixels, batch_size, lambda group: self._serve(
            images=tf.constant(np.stack(group)))["probabilities"].numpy())


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
            class_names = read_labels(path.parent / LABELS_FILE)
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
    from transferkit.run import STATE_FILE, load_run

    path = Path(path)
    if path.is_file() and path.suffix == ".tflite":
        return TFLitePredictor(path)
    if path.is_dir():
        if (path / STATE_FILE).is_file():
            return RunPredictor(load_run(path))
        if (path / "saved_model.pb").is_file():
            return SavedModelPredictor(path)
        if (path / SAVED_MODEL_DIR / "saved_model.pb").is_file():
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
                       f"{LABELS_FILE} there") from e
    names = (text[:-1] if text.endswith("\n") else text).split("\n")
    if not all(names):
        raise RunError(f"{path} holds no class names (one a line expected)")
    return names


def _check_classes(class_names: Sequence[str], n_outputs: int | None, path: Path) -> None:
    if n_outputs is not None and len(class_names) != n_outputs:
        raise RunError(f"{path} outputs {n_outputs} classes but its {LABELS_FILE} names "
                       f"{len(class_names)}; use the {LABELS_FILE} exported with it")


def _pixels(image: ImageInput) -> np.ndarray:
    """Any accepted image → uint8 `HxWx3` RGB, decoded as training decodes."""
    if not isinstance(image, np.ndarray):
        return load_image(image)
    if image.dtype != np.uint8:
        raise ImageError(f"expected a uint8 RGB array, got {image.dtype}; convert it to "
                         "uint8 in 0-255 first")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or 0 in image.shape:
        raise ImageError(f"expected an HxWx3 RGB array, got shape {image.shape}")
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def _by_shape(images: list[np.ndarray], batch_size: int,
              predict: Callable[[list[np.ndarray]], np.ndarray]) -> np.ndarray:
    """Calls `predict` on batches of same-sized images; returns rows in input order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(image.shape, []).append(i)
    out: np.ndarray | None = None
    for rows in groups.values():
        for start in range(0, len(rows), batch_size):
            part = rows[start:start + batch_size]
            probabilities = predict([images[i] for i in part])
            if out is None:
                out = np.zeros((len(images), probabilities.shape[1]), np.float32)
            out[part] = probabilities
    assert out is not None, "no images"
    return out


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
