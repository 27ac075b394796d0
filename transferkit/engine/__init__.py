"""The training engine: every classifier in transferkit is trained here.

    engine/phase.py     run_phase(model, train, val, recipe, backup): the one loop
                        (model.fit on one device) and the one set of callbacks:
                        history rows, best weights by validation loss + early
                        stopping, a backup every epoch, the time limit, progress
    engine/replicas.py  the same phase under a strategy with replicas (model.fit
                        breaks under MultiWorkerMirroredStrategy): a strategy.run step
    engine/backup.py    a phase's backup: weights, optimizer, best weights, epoch,
                        early stopping's count and the history, in one atomic file
    engine/recipes.py   what the default recipe's phases share: the loss, the class
                        weights, the classifier's own head as a model over features

Who calls it: training.py (phase 1 and phase 2 of every run, under --distribute's
strategy, within --time-limit's stop), experiments/cells.py (the transfer experiment's
cells, with training's loss and class weights); ensemble members are whole runs.
"""

from transferkit.engine import backup
from transferkit.engine.phase import Recipe, TimeLimit, run_phase

__all__ = ["Recipe", "TimeLimit", "backup", "run_phase"]
