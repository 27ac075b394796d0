"""Export a finished run for deployment: SavedModel, TFLite and Keras files that agree.

    export/
      saved_model/       TensorFlow SavedModel (needs nothing but TensorFlow to load)
        assets/labels.txt, assets/config.json
      model.tflite       TFLite model ("tflite" format)
      model_int8.tflite  full-integer TFLite model ("tflite-int8" format)
      model.onnx         ONNX model, resize inside ("onnx" format)
      model.keras        a copy of the run's model ("keras" format)
      labels.txt         class names, one a line, in output order
      config.json        the run's training options
      parity.json        how closely each exported model matches the Keras model

The names are `transferkit.layout`'s. The modules:

- `run_export`: `export_run`, the driver (options, destination, the atomic rename).
- `savedmodel`: `write_saved_model` and its two signatures; `decode_image_bytes`.
- `tflite`: `convert_to_tflite` (float32, or dynamic / float16 quantized) and
  `convert_to_tflite_int8` (full-integer).
- `int8`: the int8 model's calibration images and its acceptance check.
- `onnx`: `convert_to_onnx` (tf2onnx, with an ONNX `Resize` in front).
- `sample`, `parity`: every export is checked before it is kept: the exported models'
  probabilities on the run's test images must match the Keras model's.
- `latency`: `latency_ms`, for benchmarks; exports do not time anything.
"""

from transferkit.export.int8 import Int8Tolerance
from transferkit.export.latency import latency_ms
from transferkit.export.parity import MAX_ABS_DIFF, MIN_TOP1_AGREEMENT
from transferkit.export.run_export import FORMATS, export_run
from transferkit.export.savedmodel import decode_image_bytes, write_saved_model
from transferkit.export.onnx import convert_to_onnx
from transferkit.export.tflite import QUANTIZATIONS, convert_to_tflite, convert_to_tflite_int8

__all__ = ["FORMATS", "Int8Tolerance", "MAX_ABS_DIFF", "MIN_TOP1_AGREEMENT",
           "QUANTIZATIONS", "convert_to_onnx", "convert_to_tflite", "convert_to_tflite_int8",
           "decode_image_bytes", "export_run", "latency_ms", "write_saved_model"]
