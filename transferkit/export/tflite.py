"""The TFLite models: float (optionally weight-quantized) and full-integer int8.

The TFLite model takes float32 `[1, S, S, 3]` raw RGB in [0, 255], already resized to
the training size S with `transferkit.data.pipeline.resize` (`transferkit.predictor`
does it), and returns the probabilities `[1, C]`. Float32 (not uint8) input, because
antialiased resizing gives fractional pixel values: rounding them to uint8 would change
the answers.

The full-integer model (`convert_to_tflite_int8`, `model_int8.tflite`) has int8 weights
and activations and takes uint8 `[1, S, S, 3]`: the resized pixels rounded to integers,
with scale 1 and zero point 0 (the uint8 value is the pixel value); its output is uint8
`[1, C]` with scale 1/256 and zero point 0 (probability = value / 256).

Trust: for a run with `trust.json`, the float model has a second output
`unknown_score` float32 `[1]` (`transferkit.trust.graph.TrustGraph`; for the
Mahalanobis score its fitted projection adds about 2.5 MB at 1280 features), and the
export folder carries `trust.json` (thresholds only, `TrustParams.save_thresholds`)
beside the `.tflite`: `TFLitePredictor` reads it and computes `abstained` (max
probability below `abstain_threshold`) and `is_unknown` (score above
`unknown_threshold`). The full-integer model keeps `probabilities` only (an int8
Mahalanobis distance would not hold the threshold's precision): its predictor says
"not sure" from the same asset, and claims no unknown score.
"""

from __future__ import annotations

import tempfile
from typing import Any, Iterable

import keras
import numpy as np
import tensorflow as tf

from transferkit.export.savedmodel import write_archive

QUANTIZATIONS = (None, "dynamic", "float16")


def convert_to_tflite(model: keras.Model, image_size: int,
                      quantize: str | None = None, trust: Any = None) -> bytes:
    """Converts the classifier to a TFLite flatbuffer with a fixed `[1, S, S, 3]` input.

    Args:
        model: The classifier.
        image_size: S.
        quantize: None (float32), `"dynamic"` (int8 weights) or `"float16"` (float16
            weights).
        trust: The run's `TrustGraph`, or None.

    Returns:
        The `.tflite` file's content: input `image` float32 `[1, S, S, 3]` raw RGB in
        [0, 255]; output `probabilities` float32 `[1, C]`, and with `trust`
        `unknown_score` float32 `[1]`.
    """
    def configure(converter: tf.lite.TFLiteConverter) -> None:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]

    return _convert(model, image_size, configure, trust)


def convert_to_tflite_int8(model: keras.Model, image_size: int,
                           representative: Iterable[np.ndarray]) -> bytes:
    """Converts the classifier to a full-integer TFLite model (int8 inside, uint8 ends).

    Args:
        model: The classifier.
        image_size: S.
        representative: Calibration images, float32 `[S, S, 3]` resized raw RGB with
            integer values 0-255 (what the model will be fed), covering 0 and 255.

    Returns:
        The `.tflite` file's content: input `image` uint8 `[1, S, S, 3]` (scale 1, zero
        point 0); output `probabilities` uint8 `[1, C]` (scale 1/256, zero point 0).
    """
    def configure(converter: tf.lite.TFLiteConverter) -> None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [np.asarray(image, np.float32)[None]] for image in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8

    return _convert(model, image_size, configure)


def graph_outputs(model: keras.Model, image: tf.Tensor, trust: Any = None
                  ) -> dict[str, tf.Tensor]:
    """What the TFLite models return: the one place that says it (float and int8).

    The flags are left to the predictor (thresholds in the `trust.json` asset).
    """
    if trust is None:
        return {"probabilities": model(image, training=False)}
    result = trust.outputs(image)
    return {"probabilities": result["probabilities"],
            "unknown_score": result["unknown_score"]}


def _convert(model: keras.Model, image_size: int, configure, trust: Any = None) -> bytes:
    """Converts `[1, S, S, 3]` float32 → `graph_outputs` with a configured converter."""
    # ExportArchive → SavedModel → converter, as `keras.Model.export(format="litert")`
    # does: converting a concrete function directly keeps Keras 3's variables as
    # resource variables, which the TFLite interpreter then cannot read.
    with tempfile.TemporaryDirectory(prefix="transferkit-tflite-") as saved_model:
        tracked = [model] + ([] if trust is None else trust.tracked)
        write_archive(saved_model, tracked, {"serving_default": (
            lambda image: graph_outputs(model, image, trust),
            [tf.TensorSpec((1, image_size, image_size, 3), tf.float32, name="image")])})
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model, signature_keys=["serving_default"])
        configure(converter)
        return converter.convert()


def signature_doc(n_classes: int, image_size: int, trust: bool = False
                  ) -> dict[str, Any]:
    """The TFLite model's input and output in words, for `parity.json`."""
    size = image_size
    outputs = {"probabilities": f"float32 [1, {n_classes}]"}
    if trust:
        outputs["unknown_score"] = ("float32 [1]; abstained and is_unknown from the "
                                    "thresholds in trust.json beside the model")
    return {"inputs": {"image": f"float32 [1, {size}, {size}, 3] raw RGB 0-255, resized "
                                "with transferkit's resize"},
            "outputs": outputs}


def int8_signature_doc(n_classes: int, image_size: int) -> dict[str, Any]:
    """The full-integer model's input and output in words, for `parity.json`."""
    size = image_size
    return {"inputs": {"image": f"uint8 [1, {size}, {size}, 3] raw RGB 0-255 (scale 1, "
                                "zero point 0), resized with transferkit's resize and "
                                "rounded"},
            "outputs": {"probabilities": f"uint8 [1, {n_classes}], scale 1/256, zero "
                                         "point 0: probability = value / 256"}}
