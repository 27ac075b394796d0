"""Ensembles: K classifiers saved as one Keras model averaging their probabilities.

`build_ensemble` / `member_model` (model.py), one temperature on the average (trust.py),
`train_ensemble` (train.py, what `transferkit.train(..., ensemble=K)` dispatches to) and the member
choice of explain and inspect (members.py).
"""

from transferkit.ensemble.model import build_ensemble, member_model


def __getattr__(name):  # train.py imports training: loaded on first use, not here
    if name == "combine_runs":
        from transferkit.ensemble import train

        return getattr(train, name)
    raise AttributeError(name)


__all__ = ["build_ensemble", "member_model", "combine_runs"]
