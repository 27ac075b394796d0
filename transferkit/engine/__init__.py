"""The training engine: every classifier in transferkit is trained here.

    engine/phase.py     run_phase(model, train, val, recipe, backup): the one loop
                        (model.fit on one device) and the one set of callbacks:
                        history rows, best weights by validation loss + early
                        stopping, a backup every epoch, the time stop, progress
    engine/replicas.py  the same phase under a strategy with replicas (model.fit
                        breaks under MultiWorkerMirroredStrategy): a strategy.run step
    engine/backup.py    a phase's backup: weights, optimizer, best weights, epoch,
                        early stopping's count and the history, in one atomic file
    engine/schedule.py  warm-up + cosine: by steps (Keras CosineDecay) or by time
    engine/stop.py      the time stop: the next epoch must end before the deadline
    engine/recipes.py   the default recipe's two phases: the head (phase 1, the
                        classifier's own head layers on stored features) and
                        fine-tuning (phase 2, images), and the training loss

Who calls it:

    training.py            phase 1 and phase 2 of every run (recipes.train_head,
                           recipes.fine_tune), with --distribute's strategy
    budget/finetune.py     phase 2 within a time limit: one run_phase per stage
                           (image size), the time-tied rate, RandAugment/MixUp/EMA
    ensemble/train.py      each member is a whole run (training.train)
    experiments/cells.py   the transfer experiment's head, fine-tuned and scratch
                           cells, with training's loss and class weights
    distribute.py          sets up the strategy; the engine trains under it
"""

from transferkit.engine import backup
from transferkit.engine.phase import Recipe, TimeLimit, run_phase

__all__ = ["Recipe", "TimeLimit", "backup", "run_phase"]
