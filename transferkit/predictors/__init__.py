"""The model wrappers behind `transferkit.predictor.load_predictor`, one per format.

- `base`: `Predictor` (decoding, batching, top-k, `predict_files`) and label helpers.
- `run`: `RunPredictor`, a run directory's Keras model.
- `savedmodel`: `SavedModelPredictor`, an exported SavedModel.
- `tflite`: `TFLitePredictor`, a float or full-integer `.tflite` file.
- `onnx`: `ONNXPredictor`, an `.onnx` file in ONNX Runtime (imported only when used).
"""

from transferkit.predictors.base import ImageInput, Predictor, read_labels
from transferkit.predictors.onnx import ONNXPredictor
from transferkit.predictors.run import RunPredictor
from transferkit.predictors.savedmodel import SavedModelPredictor
from transferkit.predictors.tflite import TFLitePredictor

__all__ = ["ImageInput", "ONNXPredictor", "Predictor", "RunPredictor",
           "SavedModelPredictor", "TFLitePredictor", "read_labels"]
