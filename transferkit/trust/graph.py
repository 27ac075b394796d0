"""The trust outputs in TF ops: raw pixels → probabilities, unknown score, flags.

`TrustGraph` is built from the classifier's flat graph: the pooled features (the head
Dense's input) and the probabilities come from one forward pass of the model's own
layers; the unknown score and both flags are a few TF ops on them, with the fitted
arrays as constants. Exporters call `outputs` inside their signatures (it is traceable
by `tf.function` / `keras.export.ExportArchive`, and converts to TFLite); `Run` calls
it eagerly. `outputs_from_features` is the same arithmetic in numpy, for the tests and
for features read from the feature store.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from transferkit.trust.calibration import softmax
from transferkit.trust.params import TrustParams
from transferkit.trust.unknown import unknown_score

OUTPUTS = ("probabilities", "unknown_score", "is_unknown", "abstained")


def trunk_of(model: keras.Model) -> keras.Model:
    """Raw pixels → `[pooled features, probabilities]`, sharing the classifier's layers
    (an ensemble's pooled features: its members', side by side)."""
    from transferkit.model import pooled_output

    return keras.Model(model.inputs, [pooled_output(model), model.output],
                       name="transferkit_trunk")


class TrustGraph:
    """The classifier with its trust outputs.

    Args:
        model: A classifier from `build_classifier`, calibrated (T folded in).
        params: The run's `TrustParams`.

    Attributes:
        trunk: Keras model, raw pixels → `[pooled features, probabilities]` (shares
            the classifier's layers); exporters track it.
        image_size: `(height, width)` the model takes.
    """

    def __init__(self, model: keras.Model, params: TrustParams):
        self.params = params
        self.trunk = trunk_of(model)
        if params.unknown_kind == "energy":  # the only score that reads the logits
            kernel, bias = model.get_layer("predictions").get_weights()
            # numpy, not eager tensors: inside a traced function they become the graph's
            # own constants (tf2onnx would make captured eager tensors extra inputs).
            self._kernel = np.asarray(kernel, np.float32)
            self._bias = np.asarray(bias, np.float32)
        self._constants = {k: np.asarray(v, np.float32)
                           for k, v in params.unknown_constants.items()}
        self.image_size = tuple(int(s) for s in model.input_shape[1:3])
        h, w = self.image_size
        self._eager = tf.function(self.outputs, input_signature=[
            tf.TensorSpec((None, h, w, 3), tf.float32)])

    @property
    def tracked(self) -> list[Any]:
        """What an `ExportArchive` must track: the trunk (constants are in the graph)."""
        return [self.trunk]

    def outputs(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """The trust outputs of a batch, in TF ops.

        Args:
            images: float32 `[N, H, W, 3]` raw RGB 0-255 at the model's size.

        Returns:
            `probabilities` float32 `[N, C]`, `unknown_score` float32 `[N]` (higher:
            less like the training data), `is_unknown` bool `[N]` (score above the
            threshold), `abstained` bool `[N]` (max probability below the threshold).
        """
        features, probabilities = self.trunk(images, training=False)
        # float16 in a mixed-precision model; the trust constants are float32.
        score = self._score(tf.cast(features, tf.float32), probabilities)
        p = self.params
        return {"probabilities": probabilities, "unknown_score": score,
                "is_unknown": score > p.unknown_threshold,
                "abstained": tf.reduce_max(probabilities, axis=-1) < p.abstain_threshold}

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """`outputs` on a numpy batch, as numpy arrays."""
        return {k: v.numpy() for k, v in self._eager(
            tf.convert_to_tensor(np.asarray(images, np.float32))).items()}

    def _score(self, features: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
        kind = self.params.unknown_kind
        if kind == "max_softmax":  # the model's own (calibrated) probabilities
            return 1 - tf.reduce_max(probabilities, axis=-1)
        if kind == "energy":
            logits = tf.matmul(features, tf.constant(self._kernel)) + tf.constant(self._bias)
            return -tf.reduce_logsumexp(logits, axis=-1)
        x = features
        if kind == "mahalanobis_normalized":
            x = x / tf.maximum(tf.norm(x, axis=-1, keepdims=True), 1e-12)
        c = {k: tf.constant(v) for k, v in self._constants.items()}
        y = tf.matmul(x - c["center"], c["projection"])
        means = c["means"]
        distance = (tf.reduce_sum(y * y, axis=-1, keepdims=True)
                    - 2 * tf.matmul(y, means, transpose_b=True)
                    + tf.reduce_sum(means * means, axis=-1)[None, :])
        return tf.maximum(tf.reduce_min(distance, axis=-1), 0.0)


def outputs_from_features(params: TrustParams, features: np.ndarray, kernel: np.ndarray,
                          bias: np.ndarray) -> dict[str, np.ndarray]:
    """`TrustGraph.outputs` in numpy, from pooled features and the calibrated head.

    Args:
        params: The run's `TrustParams`.
        features: `[N, D]` pooled features.
        kernel: `[D, C]` the calibrated head's kernel.
        bias: `[C]` its bias.

    Returns:
        The same four arrays as `TrustGraph.outputs`.
    """
    logits = np.asarray(features, np.float32) @ kernel + bias
    probabilities = softmax(logits).astype(np.float32)
    score = unknown_score(params.unknown_kind, params.unknown_constants, features, logits)
    return {"probabilities": probabilities, "unknown_score": score,
            "is_unknown": score > params.unknown_threshold,
            "abstained": probabilities.max(axis=1) < params.abstain_threshold}
