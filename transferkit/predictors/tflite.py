"""`TFLitePredictor`: an exported `.tflite` model, float or full-integer."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from transferkit.data.pipeline import resize
from transferkit.errors import RunError
from transferkit.layout import LABELS_TXT
from transferkit.predictors.base import Predictor, check_classes, read_labels

_INPUT_TYPES = (np.float32, np.uint8, np.int8)


class TFLitePredictor(Predictor):
    """An exported `.tflite` model (fixed `[1, S, S, 3]` input).

    Images are resized to S here, with the training resize, one per call. A
    full-integer model's input is quantized and its output dequantized with the
    interpreter's own quantization parameters (for transferkit's `model_int8.tflite`:
    uint8 input with scale 1 and zero point 0, uint8 output with scale 1/256). Not safe
    to share between threads (the interpreter holds its tensors).

    Args:
        path: The `.tflite` file.
        class_names: Defaults to `labels.txt` beside it.
        num_threads: Interpreter threads (None: TFLite's default).

    Attributes:
        quantized: True for a full-integer model (integer input).

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
                or inputs[0]["dtype"] not in _INPUT_TYPES or len(outputs) != 1):
            raise RunError(f"{path} is not a TFLite model exported by transferkit "
                           "(expected one float32, uint8 or int8 [1, S, S, 3] input and "
                           "one output)")
        self.image_size = int(shape[1])
        self._input, self._output = inputs[0], outputs[0]
        self.quantized = inputs[0]["dtype"] != np.float32
        if class_names is None:
            class_names = read_labels(path.parent / LABELS_TXT)
        check_classes(class_names, int(outputs[0]["shape"][-1]), path)
        super().__init__(class_names, path)

    def invoke(self, image: np.ndarray) -> np.ndarray:
        """Runs the model on one resized image, float32 `[1, S, S, 3]` → `[1, C]`."""
        self.interpreter.set_tensor(self._input["index"],
                                    _quantize(np.asarray(image, np.float32), self._input))
        self.interpreter.invoke()
        return _dequantize(self.interpreter.get_tensor(self._output["index"]),
                           self._output)

    def _predict_pixels(self, pixels: list[np.ndarray], batch_size: int) -> np.ndarray:
        return np.concatenate([self.invoke(resize(p, self.image_size).numpy()[None])
                               for p in pixels])


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
