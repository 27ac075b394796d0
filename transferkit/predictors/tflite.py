"""`TFLitePredictor`: an exported `.tflite` model, float or full-integer."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from transferkit.data.pipeline import resize
from transferkit.errors import RunError
from transferkit.layout import LABELS_TXT, TRUST_FILE
from transferkit.predictors.base import Predictor, check_classes, read_labels, trust_fields
from transferkit.trust.params import load_trust

_INPUT_TYPES = (np.float32, np.uint8, np.int8)


class TFLitePredictor(Predictor):
    """An exported `.tflite` model (fixed `[1, S, S, 3]` input).

    Images are resized to S here, with the training resize, one per call. A
    full-integer model's input is quantized and its output dequantized with the
    interpreter's own quantization parameters (for transferkit's `model_int8.tflite`:
    uint8 input with scale 1 and zero point 0, uint8 output with scale 1/256). Not safe
    to share between threads (the interpreter holds its tensors).

    Trust: with `trust.json` beside the model (the export writes it), `abstained` is
    its max probability below `abstain_threshold`, and for a model with the second
    output `unknown_score` (float exports of a run with trust), `is_unknown` is the
    score above `unknown_threshold`. The full-integer model says "not sure" only.

    Args:
        path: The `.tflite` file.
        class_names: Defaults to `labels.txt` beside it.
        num_threads: Interpreter threads (None: TFLite's default).

    Attributes:
        quantized: True for a full-integer model (integer input).

    Raises:
        RunError: Not a TFLite model of this kind, no class names, or an unknown score
            output without the `trust.json` beside it.
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
        by_rank = {len(o["shape"]): o for o in outputs}  # [1, C] probabilities, [1] score
        if (len(shape) != 4 or shape[0] != 1 or shape[1] != shape[2] or shape[3] != 3
                or inputs[0]["dtype"] not in _INPUT_TYPES or 2 not in by_rank
                or set(by_rank) - {1, 2} or len(by_rank) != len(outputs)):
            raise RunError(f"{path} is not a TFLite model exported by transferkit "
                           "(expected one float32, uint8 or int8 [1, S, S, 3] input and "
                           "a probabilities output)")
        self.image_size = int(shape[1])
        self._input, self._output, self._score = inputs[0], by_rank[2], by_rank.get(1)
        self.quantized = inputs[0]["dtype"] != np.float32
        self.trust = load_trust(path.parent)
        if self._score is not None and self.trust is None:
            raise RunError(f"{path} has an unknown score but no {TRUST_FILE} beside it "
                           f"(its thresholds); copy the export's {TRUST_FILE} there")
        if class_names is None:
            class_names = read_labels(path.parent / LABELS_TXT)
        check_classes(class_names, int(by_rank[2]["shape"][-1]), path)
        super().__init__(class_names, path)

    @property
    def has_trust(self) -> bool:
        return self.trust is not None

    def invoke(self, image: np.ndarray) -> np.ndarray:
        """Runs the model on one resized image, float32 `[1, S, S, 3]` → `[1, C]`."""
        self.interpreter.set_tensor(self._input["index"],
                                    _quantize(np.asarray(image, np.float32), self._input))
        self.interpreter.invoke()
        return _dequantize(self.interpreter.get_tensor(self._output["index"]),
                           self._output)

    def unknown_scores(self) -> np.ndarray | None:
        """The last `invoke`'s unknown score `[1]` (None: the model has none)."""
        if self._score is None:
            return None
        return _dequantize(self.interpreter.get_tensor(self._score["index"]), self._score)

    def _assess_pixels(self, pixels: list[np.ndarray], batch_size: int
                       ) -> tuple[np.ndarray, list[dict[str, Any]] | None]:
        return self.assess_resized([resize(p, self.image_size).numpy() for p in pixels])

    def assess_resized(self, images: Sequence[np.ndarray]
                       ) -> tuple[np.ndarray, list[dict[str, Any]] | None]:
        """`assess` on images already resized to the model's size (float32 `[S, S, 3]`)."""
        probabilities, scores = [], []
        for image in images:
            probabilities.append(self.invoke(np.asarray(image)[None]))
            scores.append(self.unknown_scores())
        probabilities = np.concatenate(probabilities) if probabilities else np.zeros(
            (0, len(self.class_names)), np.float32)
        if self.trust is None:
            return probabilities, None
        abstained = probabilities.max(axis=1) < self.trust.abstain_threshold
        if self._score is None:
            return probabilities, trust_fields(abstained)
        score = np.concatenate(scores) if scores else np.zeros(0, np.float32)
        return probabilities, trust_fields(abstained, score > self.trust.unknown_threshold,
                                           score)


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """float → the tensor's type: q = round(x / scale) + zero_point, clipped."""
    dtype = detail["dtype"]
    if dtype == np.float32:
        return x
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.rint(x / scale) + zero_point, info.min, info.max).astype(dtype)


def _dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    """The tensor's type → float32: (q - zero_point) * scale."""
    if detail["dtype"] == np.float32:
        return q.copy()
    scale, zero_point = detail["quantization"]
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)


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
