"""Calibration of an ensemble: one temperature for every member, fitted on the average.

The ensemble's probability is `p = mean_k softmax(z_k / T)`: one T divides every
member's logits (it is folded into each member's head, `m<i>_predictions`), and it is
chosen to minimize the negative log-likelihood of the *averaged* probabilities on the
validation split. Why this and not a layer after the average: the saved model stays a
flat graph of built-in layers whose output is exactly the mean of its members'
probabilities (what an ensemble is, calibrated or not), calibration stays "folded into
the head's weights" as for one model, and one scalar is fitted, as for one model.
`transferkit.trust.head.Head` and `transferkit.trust.calibration` do it for both.

The "not sure" threshold is chosen on max p as for one model; the unknown score reads
the members' pooled features side by side (`transferkit.model.pooled_output`).
`max_softmax` is `1 - max p`; `energy` has no meaning for an average of
probabilities (its log-sum-exp is 0) and is refused.
"""

from __future__ import annotations

from transferkit.errors import ConfigError
from transferkit.trust.head import Head

EnsembleHead = Head  # the members' heads on their pooled features, side by side


def check_kind(kind: str) -> None:
    """Raises ConfigError for an unknown score an ensemble cannot compute."""
    if kind == "energy":
        raise ConfigError("--unknown-score energy is not defined for an ensemble (the "
                          "log-sum-exp of averaged probabilities is 0); choose "
                          "mahalanobis_normalized, mahalanobis or max_softmax")
