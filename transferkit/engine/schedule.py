"""The learning rate of a phase: linear warm-up from peak / 10, then cosine decay to 0.

Two clocks drive the same curve: steps (`step_schedule`, Keras's own `CosineDecay`,
evaluated by the optimizer on its step counter, so it resumes with the optimizer's
state) or elapsed time (`TimeTiedRate`, for a time budget: the curve ends at the end of
the budget whatever the machine's speed does meanwhile).
"""

from __future__ import annotations

import math
from typing import Callable

import keras


def cosine_rate(fraction: float, peak: float, warmup: float) -> float:
    """The rate at `fraction` (0 to 1) of a phase: linear warm-up from peak / 10 over
    the first `warmup` fraction, then cosine decay to 0 at fraction 1."""
    fraction = min(max(fraction, 0.0), 1.0)
    if fraction < warmup:
        return peak / 10 + (peak - peak / 10) * fraction / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (fraction - warmup) / (1 - warmup)))


def step_schedule(peak: float, steps_per_epoch: int, epochs: int
                  ) -> keras.optimizers.schedules.CosineDecay:
    """One epoch of warm-up (at most half the steps), then cosine decay to zero.

    The new head's first gradients are large and would wreck pretrained filters: the
    warm-up eases them in.

    Args:
        peak: The rate after the warm-up.
        steps_per_epoch: Optimizer steps of one epoch.
        epochs: Epochs of the phase.
    """
    total = max(1, steps_per_epoch * epochs)
    warmup = min(steps_per_epoch, total // 2)
    return keras.optimizers.schedules.CosineDecay(
        peak / 10, max(1, total - warmup), warmup_target=peak, warmup_steps=warmup)


class TimeTiedRate(keras.callbacks.Callback):
    """Sets the optimizer's rate before each step from the elapsed fraction of a phase.

    Args:
        peak: Peak rate.
        warmup: Warm-up fraction of the phase.
        clock: The clock (injectable).
        start, end: Where the phase begins and ends on `clock`.
    """

    def __init__(self, peak: float, warmup: float, clock: Callable[[], float],
                 start: float, end: float):
        super().__init__()
        self.peak, self.warmup, self.clock = peak, warmup, clock
        self.start, self.span = start, max(end - start, 1e-9)

    def on_train_batch_begin(self, batch, logs=None):
        fraction = (self.clock() - self.start) / self.span
        self.model.optimizer.learning_rate.assign(cosine_rate(fraction, self.peak,
                                                              self.warmup))
