"""Confidence you can trust: calibrated probabilities, "not sure", "not one of my classes".

- `calibration`: temperature scaling folded into the head; ECE, NLL, Brier, reliability.
- `head`: `Head`, the classifier's (or an ensemble's) head layers on pooled features.
- `abstain`: the confidence threshold below which the model says "not sure".
- `unknown`: the out-of-distribution score (one `keras.ops` implementation) and its
  threshold.
- `params`: `TrustParams`, the run's `trust.json` + `trust.npz`.
- `graph`: `TrustGraph`, the same outputs in TF ops, for `Run` and the exporters.
- `fit`: `fit_trust(run)`, run by training and by `transferkit calibrate`.
- `assess`: evaluation on a labelled folder and a folder of unknown images.
"""

from transferkit.trust.fit import fit_trust
from transferkit.trust.params import TrustParams, load_trust

__all__ = ["TrustParams", "fit_trust", "load_trust"]
