"""Ensembles: K classifiers saved as one Keras model averaging their probabilities.

`build_ensemble` / `member_model` (model.py), one temperature on the average (trust.py),
`train_ensemble` (train.py, what `transferkit train --ensemble K` runs) and the member
choice of explain and inspect (members.py).
"""

from transferkit.ensemble.model import build_ensemble, member_model

__all__ = ["build_ensemble", "member_model"]
