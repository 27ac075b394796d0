"""The TFLite model: fixed `[1, S, S, 3]` float32 input, optionally quantized.

The TFLite model takes float32 `[1, S, S, 3]` raw RGB in [0, 255], already resized to
the training size S with `transferkit.data.pipeline.resize` (`transferkit.predictor`
does it), and returns the probabilities `[1, C]`. Float32 (not uint8) input, because
antialiased resizing gives fractional pixel values: rounding them to uint8 would change
the answers.
"""

from __future__ import annotations

import tempfile
from typing import Any

import keras
import tensorflow as tf

from transferkit.export.savedmodel import write_archive

QUANTIZATIONS = (None, "dynamic", "float16")


def convert_to_tflite(model: keras.Model, image_size: int,
                      quantize: str | None = None) -> bytes:
    """Converts the classifier to a TFLite flatbuffer with a fixed `[1, S, S, 3]` input.

    Args:
        model: The classifier.
        image_size: S.
        quantize: None (float32), `"dynamic"` (int8 weights) or `"float16"` (float16
            weights).

    Returns:
        The `.tflite` file's content: input `image` float32 `[1, S, S, 3]` raw RGB in
        [0, 255]; output `probabilities` float32 `[1, C]`.
    """
    # ExportArchive → SavedModel → converter, as `keras.Model.export(format="litert")`
    # does: converting a concrete function directly keeps Keras 3's variables as
    # resource variables, which the TFLite interpreter then cannot read.
    with tempfile.TemporaryDirectory(prefix="transferkit-tflite-") as saved_model:
        write_archive(saved_model, [model], {"serving_default": (
            lambda image: {"probabilities": model(image, training=False)},
            [tf.TensorSpec((1, image_size, image_size, 3), tf.float32, name="image")])})
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model, signature_keys=["serving_default"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()


def signature_doc(n_classes: int, image_size: int) -> dict[str, Any]:
    """The TFLite model's input and output in words, for `parity.json`."""
    size = image_size
    return {"inputs": {"image": f"float32 [1, {size}, {size}, 3] raw RGB 0-255, resized "
                                "with transferkit's resize"},
            "outputs": {"probabilities": f"float32 [1, {n_classes}]"}}
