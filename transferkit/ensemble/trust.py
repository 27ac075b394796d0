"""Calibration of an ensemble: one temperature for every member, fitted on the average.

The ensemble's probability is `p = mean_k softmax(z_k / T)`: one T divides every
member's logits (it is folded into each member's head, `m<i>_predictions`), and it is
chosen to minimize the negative log-likelihood of the *averaged* probabilities on the
validation split. Why this and not a layer after the average: the saved model stays a
flat graph of built-in layers whose output is exactly the mean of its members'
probabilities (what an ensemble is, calibrated or not), calibration stays "folded into
the head's weights" as for one model, and one scalar is fitted, as for one model.

The "not sure" threshold is chosen on max p as for one model; the unknown score reads
the members' pooled features side by side (`transferkit.model.pooled_output`).
`max_softmax` is `1 - max p`; `energy` has no meaning for an average of
probabilities (its log-sum-exp is 0) and is refused.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from transferkit.errors import ConfigError
from transferkit.model import members
from transferkit.trust.calibration import TEMPERATURE_RANGE, softmax


class EnsembleHead:
    """The members' softmax heads, applied to the members' pooled features side by side.

    Args:
        model: An ensemble (`transferkit.ensemble.model.build_ensemble`).
        raw: The uncalibrated heads (`TrustParams.raw_head`: `m1_kernel`, `m1_bias`,
            ...), or None: the model's own heads.
    """

    def __init__(self, model, raw: dict[str, np.ndarray] | None = None):
        self.prefixes = members(model)
        self.kernels, self.biases = [], []
        for p in self.prefixes:
            if raw and f"{p}kernel" in raw:
                kernel, bias = raw[f"{p}kernel"], raw[f"{p}bias"]
            else:
                kernel, bias = model.get_layer(f"{p}predictions").get_weights()
            self.kernels.append(np.asarray(kernel, np.float32))
            self.biases.append(np.asarray(bias, np.float32))

    @property
    def raw(self) -> dict[str, np.ndarray]:
        """The heads, as `TrustParams.raw_head` stores them."""
        out = {}
        for p, kernel, bias in zip(self.prefixes, self.kernels, self.biases):
            out[f"{p}kernel"], out[f"{p}bias"] = kernel, bias
        return out

    def logits(self, features: np.ndarray) -> np.ndarray:
        """`[K, N, C]`: each member's logits from its slice of the features `[N, sum D]`."""
        features = np.asarray(features, np.float32)
        parts, start = [], 0
        for kernel, bias in zip(self.kernels, self.biases):
            parts.append(features[:, start:start + len(kernel)] @ kernel + bias)
            start += len(kernel)
        if start != features.shape[1]:
            raise ConfigError(f"the stored features have {features.shape[1]} columns but "
                              f"the ensemble's heads read {start}; calibrate again")
        return np.stack(parts)

    @staticmethod
    def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """`[N, C]`: the mean of the members' softmax(z_k / T)."""
        return np.mean([softmax(z / temperature) for z in logits], axis=0)

    def score_logits(self, logits: np.ndarray, temperature: float) -> np.ndarray:
        """Logits whose softmax is the averaged probabilities (for `max_softmax`)."""
        return np.log(np.maximum(self.probabilities(logits, temperature), 1e-30))

    @staticmethod
    def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
        """The T minimizing the NLL of the averaged probabilities (1 without a minimum:
        all validation answers right or all wrong, as for one model)."""
        labels = np.asarray(labels)
        z = np.asarray(logits, np.float64)
        right = EnsembleHead.probabilities(z).argmax(axis=1) == labels
        if right.all() or not right.any():
            return 1.0

        def loss(log_t: float) -> float:
            p = EnsembleHead.probabilities(z, np.exp(log_t))
            return float(-np.mean(np.log(np.maximum(p[np.arange(len(labels)), labels],
                                                    1e-300))))

        lo, hi = np.log(TEMPERATURE_RANGE)
        result = minimize_scalar(loss, bounds=(lo, hi), method="bounded",
                                 options={"xatol": 1e-6})
        return float(np.exp(result.x))

    def fold(self, model, temperature: float) -> None:
        """Writes the raw heads divided by T into the model's member heads."""
        for p, kernel, bias in zip(self.prefixes, self.kernels, self.biases):
            model.get_layer(f"{p}predictions").set_weights([kernel / temperature,
                                                            bias / temperature])


def check_kind(kind: str) -> None:
    """Raises ConfigError for an unknown score an ensemble cannot compute."""
    if kind == "energy":
        raise ConfigError("--unknown-score energy is not defined for an ensemble (the "
                          "log-sum-exp of averaged probabilities is 0); choose "
                          "mahalanobis_normalized, mahalanobis or max_softmax")


def ensemble_outputs(params, features: np.ndarray, probabilities: np.ndarray
                     ) -> dict[str, np.ndarray]:
    """`transferkit.trust.graph.outputs_from_features` for an ensemble: from its
    (calibrated) probabilities and its members' pooled features."""
    from transferkit.trust.unknown import unknown_score

    probabilities = np.asarray(probabilities, np.float32)
    logits = np.log(np.maximum(probabilities, 1e-30))
    score = unknown_score(params.unknown_kind, params.unknown_constants, features, logits)
    return {"probabilities": probabilities, "unknown_score": score,
            "is_unknown": score > params.unknown_threshold,
            "abstained": probabilities.max(axis=1) < params.abstain_threshold}
