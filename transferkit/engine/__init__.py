"""The training engine: every classifier in transferkit is trained by `run_phase`
(phase.py; backup.py: a phase's backup; the step under replicas: `transferkit.distribute`).
Callers: training.py (every run's two phases), experiments/cells.py (docs/training.md)."""

from transferkit.engine import backup
from transferkit.engine.phase import Recipe, TimeLimit, class_weight, head_model, run_phase

__all__ = ["Recipe", "TimeLimit", "backup", "class_weight", "head_model", "run_phase"]
