"""One way to classify images, whatever was deployed: a run, a SavedModel, TFLite or ONNX.

    predictor = load_predictor("runs/flowers/export/model.onnx")
    probabilities = predictor.predict(["a.jpg", open("b.png", "rb").read()])
    predictor.top_k(probabilities, k=3)  # [[{"label": "rose", "probability": 0.93}, ...]]

Every predictor decodes images the way training did (`transferkit.data.images.load_image`:
Pillow, EXIF orientation, transparency on white) and resizes them as training did, so
they give the same top-k answers (their probabilities agree to within
`transferkit.export`'s parity tolerance, which every export is checked against; the
full-integer TFLite model agrees on the top class, as its export checked).
`predict_files` classifies a list of files and reports each file that cannot be used
instead of failing the whole list. The wrappers live in `transferkit.predictors`; this
module is the public front.

Export folders are laid out as `transferkit.layout` names them.
"""

from __future__ import annotations

import os
from pathlib import Path

from transferkit.errors import RunError
from transferkit.layout import (ONNX_FILE, SAVED_MODEL_DIR, SAVED_MODEL_PB, STATE_FILE,
                                TFLITE_FILE, TFLITE_INT8_FILE)
from transferkit.predictors import (ImageInput, ONNXPredictor, Predictor, RunPredictor,
                                    SavedModelPredictor, TFLitePredictor, read_labels)

__all__ = ["ImageInput", "ONNXPredictor", "Predictor", "RunPredictor",
           "SavedModelPredictor", "TFLitePredictor", "load_predictor", "read_labels"]


def load_predictor(path: str | os.PathLike) -> Predictor:
    """Opens a run directory, an export folder, a SavedModel folder, a .tflite or .onnx file.

    Args:
        path: A finished run directory; an export folder (its SavedModel is used, else
            its float TFLite model, else its int8 TFLite model, else its ONNX model); a
            SavedModel folder (`export/saved_model`); a `.tflite` file (float or
            full-integer; class names from `labels.txt` beside it); or an `.onnx` file
            (class names from its metadata).

    Returns:
        A `Predictor`.

    Raises:
        RunError: The path is none of these, or its class names cannot be found.
    """
    from transferkit.run import load_run

    path = Path(path)
    if path.is_file() and path.suffix == ".tflite":
        return TFLitePredictor(path)
    if path.is_file() and path.suffix == ".onnx":
        return ONNXPredictor(path)
    if path.is_dir():
        if (path / STATE_FILE).is_file():
            return RunPredictor(load_run(path))
        if (path / SAVED_MODEL_PB).is_file():
            return SavedModelPredictor(path)
        if (path / SAVED_MODEL_DIR / SAVED_MODEL_PB).is_file():
            return SavedModelPredictor(path / SAVED_MODEL_DIR)
        for name in (TFLITE_FILE, TFLITE_INT8_FILE):
            if (path / name).is_file():
                return TFLitePredictor(path / name)
        if (path / ONNX_FILE).is_file():
            return ONNXPredictor(path / ONNX_FILE)
    what = "does not exist" if not path.exists() else "is not a model transferkit can load"
    raise RunError(f"{path} {what}; pass a run directory, an export folder, its "
                   f"{SAVED_MODEL_DIR}/ folder, a .tflite or an .onnx file")
