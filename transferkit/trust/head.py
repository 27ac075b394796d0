"""The classifier's softmax head(s), read through the classifier's own layers.

A classifier has one head, `predictions`; an ensemble one per member (`m1_predictions`,
...) averaged by `ensemble_mean`. `Head` is a Keras model from the pooled features to the
classifier's output: a clone of that part of the classifier's graph (its own layers,
same configs), holding the head's weights *before* calibration. Calibration reads the
logits from its `predictions` layers and folds the fitted temperature into the
classifier (`transferkit.trust.calibration.fold_temperature`); nothing re-implements
the head.
"""

from __future__ import annotations

import keras
import numpy as np

from transferkit.errors import ConfigError
from transferkit.model import head_logits, members
from transferkit.trust import calibration


class Head:
    """The head(s) of a classifier or an ensemble, on pooled features.

    Args:
        model: A classifier (`build_classifier`) or an ensemble (`build_ensemble`).
        raw: The uncalibrated heads' weights (`TrustParams.raw_head`: `kernel`, `bias`
            or `m1_kernel`, `m1_bias`, ...), or None: the model's own. `model` is not
            changed.

    Attributes:
        model: Keras model, pooled features (one input per member) → probabilities.
    """

    def __init__(self, model: keras.Model, raw: dict[str, np.ndarray] | None = None):
        self.prefixes = members(model) or [""]
        pools = [model.get_layer(f"{p}head_pool").output for p in self.prefixes]
        self.widths = [int(t.shape[-1]) for t in pools]
        view = keras.Model(pools, model.output)
        self.model = keras.models.clone_model(view)
        self.model.set_weights(view.get_weights())
        self.layers = [self.model.get_layer(f"{p}predictions") for p in self.prefixes]
        for p, layer in zip(self.prefixes, self.layers):
            if raw and f"{p}kernel" in raw:
                layer.set_weights([raw[f"{p}kernel"], raw[f"{p}bias"]])

    @property
    def raw(self) -> dict[str, np.ndarray]:
        """The heads' weights, as `TrustParams.raw_head` stores them."""
        out = {}
        for p, layer in zip(self.prefixes, self.layers):
            out[f"{p}kernel"], out[f"{p}bias"] = layer.get_weights()
        return out

    def split(self, features: np.ndarray) -> list[np.ndarray]:
        """Each member's slice of pooled `features` `[N, sum D]` (members side by side).

        Raises:
            ConfigError: The features have another width than the heads read.
        """
        features = np.asarray(features, np.float32)
        if features.shape[1] != sum(self.widths):
            raise ConfigError(f"the stored features have {features.shape[1]} columns but "
                              f"the model's heads read {sum(self.widths)}; calibrate again")
        return np.split(features, np.cumsum(self.widths)[:-1], axis=1)

    def logits(self, features: np.ndarray) -> np.ndarray:
        """`[K, N, C]`: each member's logits (K = 1 for one classifier)."""
        return np.stack([keras.ops.convert_to_numpy(head_logits(layer, part))
                         for layer, part in zip(self.layers, self.split(features))])

    def predict(self, features: np.ndarray) -> np.ndarray:
        """`[N, C]`: the classifier's output for pooled `features` (its own layers)."""
        return keras.ops.convert_to_numpy(self.model(self.split(features), training=False))

    probabilities = staticmethod(calibration.calibrated)
    fit_temperature = staticmethod(calibration.fit_temperature)

    def fold(self, model: keras.Model, temperature: float) -> None:
        """Writes these heads divided by T into `model`'s heads."""
        calibration.fold_temperature(model, temperature, self.raw)
