"""Which member explain and inspect look at, for an ensemble.

- Explain (`explainers`): by default each method runs on every member (the standalone
  `member_model` view) and the heat map is the mean of the members' maps, scaled to
  [0, 1] again; the class explained is the ensemble's (the caller passes it).
  `member=N` (0-based here, 1-based on the command line) explains one member.
- Inspect (`inspected_run`): member 0 by default, `member=N` another: the views get a
  `Run` whose model is that member with its usual layer names.

For a single classifier both return what they always did (member 0 is the model).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from transferkit.model import members


class AveragedExplainer:
    """One method's heat maps, averaged over the members of an ensemble.

    Args:
        parts: The method's explainer of each member (`member_model` views).
    """

    def __init__(self, parts: Sequence):
        self.parts = list(parts)
        first = self.parts[0]
        self.name, self.label = first.name, first.label

    def __call__(self, images: np.ndarray, class_indices=None) -> np.ndarray:
        """`normalize(mean of the members' maps)`, `[N, H, W]` in [0, 1].

        Args:
            images: Raw RGB `[N, H, W, 3]` at the model's size.
            class_indices: The classes to explain (give the ensemble's own: with None
                each member would explain its own top class).
        """
        from transferkit.explain.base import normalize

        maps = [part(images, class_indices) for part in self.parts]
        return normalize(np.mean(maps, axis=0))


def explainers(model, methods: Sequence[str] | str | None,
               member: int | None = None) -> dict:
    """`transferkit.explain.make_explainers`, ensemble-aware (see the module docstring).

    Args:
        model: A classifier or an ensemble.
        methods: Method names.
        member: 0-based member to explain alone; None: all of them, averaged.

    Returns:
        Method name → a callable `(images, classes) -> maps`.

    Raises:
        ConfigError: Unknown method, or no such member.
    """
    from transferkit.ensemble.model import member_model
    from transferkit.explain.registry import make_explainers

    if member is not None or not members(model):
        return make_explainers(member_model(model, member or 0), methods)
    per_member = [make_explainers(member_model(model, i), methods)
                  for i in range(len(members(model)))]
    return {name: AveragedExplainer([m[name] for m in per_member])
            for name in per_member[0]}


def explainer(model, method: str, member: int | None = None):
    """One method's (averaged) explainer: what the demo builds per method."""
    return explainers(model, [method], member)[method]


def inspected_run(run, member: int | None = None):
    """The `Run` the inspect views read: the run itself for a single classifier; for an
    ensemble, member `member` (0-based; default 0): its own run directory when it is
    still there (`ensemble.json`; the views that read stored features need it), else a
    `Run` of the ensemble's directory whose model is that member, with its usual names."""
    from transferkit import layout
    from transferkit.ensemble.model import member_model
    from transferkit.run import Run, load_run, run_state

    if not members(run.model) and not member:
        return run
    index = member or 0
    model = member_model(run.model, index)  # checks the member's number
    described = (run.document(layout.ENSEMBLE_FILE) or {}).get("members") or []
    if index < len(described):
        path = run.path / described[index]["run"]  # relative, or absolute
        if run_state(path) == "complete":
            return load_run(path)
    return Run(run.path, model, run.class_names, run.config)


def member_argument(value: int | None) -> int | None:
    """`--member N` (1-based, as the layers' `mN_` prefixes) → 0-based, or None."""
    from transferkit.errors import ConfigError

    if value is None:
        return None
    if value < 1:
        raise ConfigError(f"--member counts from 1 (the m1_ layers), got {value}")
    return value - 1
