"""The training engine: every classifier in transferkit is trained here.

    phase.py     run_phase(model, train, val, recipe, backup): the one loop and the
                 one set of callbacks (history, best weights, early stopping, backup,
                 the time limit); replicas.py: the same under a strategy with replicas;
                 backup.py: a phase's backup; recipes.py: what the phases share

Callers: training.py (every run's two phases), experiments/cells.py (docs/training.md).
"""

from transferkit.engine import backup
from transferkit.engine.phase import Recipe, TimeLimit, run_phase

__all__ = ["Recipe", "TimeLimit", "backup", "run_phase"]
