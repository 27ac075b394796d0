"""The trust outputs in TF ops: raw pixels → probabilities, unknown score, flags.

`TrustGraph` is built from the classifier's flat graph: the pooled features (the head
Dense's input) and the probabilities come from one forward pass of the model's own
layers; the unknown score and both flags are `trust_outputs`, a few `keras.ops` on them
with the fitted arrays as constants. Exporters call `outputs` inside their signatures
(it is traceable by `tf.function` / `keras.export.ExportArchive`, and converts to
TFLite and ONNX); `Run` calls it eagerly. `outputs_from_features` runs the same
`trust_outputs` on pooled features (the feature store's, or an evaluation's), through
the classifier's own head layers.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from transferkit.model import head_logits, members
from transferkit.trust.head import Head
from transferkit.trust.params import TrustParams
from transferkit.trust.unknown import unknown_score

OUTPUTS = ("probabilities", "unknown_score", "is_unknown", "abstained")


def trunk_of(model: keras.Model) -> keras.Model:
    """Raw pixels → `[pooled features, probabilities]`, sharing the classifier's layers
    (an ensemble's pooled features: its members', side by side)."""
    from transferkit.model import pooled_output

    return keras.Model(model.inputs, [pooled_output(model), model.output],
                       name="transferkit_trunk")


def trust_outputs(params: TrustParams, features: Any, probabilities: Any,
                  logits: Any = None) -> dict[str, Any]:
    """The four trust outputs from pooled features and probabilities, in `keras.ops`.

    Args:
        params: The run's `TrustParams`.
        features: `[N, D]` pooled features.
        probabilities: `[N, C]` the (calibrated) model's output.
        logits: `[N, C]` its logits (the `energy` score only).

    Returns:
        `probabilities` `[N, C]`, `unknown_score` float32 `[N]` (higher: less like the
        training data), `is_unknown` bool `[N]` (score above the threshold), `abstained`
        bool `[N]` (max probability below the threshold); backend tensors.
    """
    score = unknown_score(params.unknown_kind, params.unknown_constants, features,
                          probabilities, logits)
    return {"probabilities": probabilities, "unknown_score": score,
            "is_unknown": score > params.unknown_threshold,
            "abstained": ops.max(probabilities, axis=-1) < params.abstain_threshold}


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
        # The only score that reads the logits: the classifier's own head layer.
        self._head = model.get_layer("predictions") if params.unknown_kind == "energy" \
            else None
        self.image_size = tuple(int(s) for s in model.input_shape[1:3])
        h, w = self.image_size
        self._eager = tf.function(self.outputs, input_signature=[
            tf.TensorSpec((None, h, w, 3), tf.float32)])

    @property
    def tracked(self) -> list[Any]:
        """What an `ExportArchive` must track: the trunk (constants are in the graph)."""
        return [self.trunk]

    def outputs(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """`trust_outputs` of a batch of raw images (traceable: the exporters call it).

        Args:
            images: float32 `[N, H, W, 3]` raw RGB 0-255 at the model's size.
        """
        features, probabilities = self.trunk(images, training=False)
        # float16 in a mixed-precision model; the trust constants are float32.
        features = ops.cast(features, "float32")
        logits = None if self._head is None else head_logits(self._head, features)
        return trust_outputs(self.params, features, probabilities, logits)

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """`outputs` on a numpy batch, as numpy arrays."""
        return {k: v.numpy() for k, v in self._eager(
            tf.convert_to_tensor(np.asarray(images, np.float32))).items()}


def outputs_from_features(params: TrustParams, features: np.ndarray,
                          model: keras.Model) -> dict[str, np.ndarray]:
    """`TrustGraph.outputs` from pooled features, as numpy arrays (the feature store's
    features, or a forward pass's).

    Args:
        params: The run's `TrustParams`.
        features: `[N, D]` pooled features (an ensemble's members' side by side).
        model: The calibrated classifier or ensemble, whose head layers are applied.

    Returns:
        The same four arrays as `TrustGraph.outputs`.
    """
    head = Head(model)
    logits = head.logits(features)[0] if not members(model) else None
    out = trust_outputs(params, np.asarray(features, np.float32), head.predict(features),
                        logits)
    return {k: np.asarray(ops.convert_to_numpy(v)) for k, v in out.items()}
