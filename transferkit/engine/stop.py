"""The time stop: ends a phase when its next epoch would not end before a deadline."""

from __future__ import annotations

from typing import Callable

import keras


class TimeStop(keras.callbacks.Callback):
    """Stops training when the next epoch would not end before `deadline`.

    After each epoch it predicts the next one's time from the epochs so far (the
    slowest of the last three, times `safety`: speed varies, and overrunning costs more
    than one epoch less). Within an epoch it stops at `deadline` itself.

    Args:
        deadline: Time on `clock` by which training must have stopped.
        clock: The clock (injectable: tests advance it themselves).
        safety: Padding of the next epoch's predicted time.
        first_extra: What the first epoch costs beyond the others (tracing): subtracted
            while it is the only epoch to go by.
    """

    def __init__(self, deadline: float, clock: Callable[[], float], safety: float = 1.15,
                 first_extra: float = 0.0):
        super().__init__()
        self.deadline, self.clock = deadline, clock
        self.safety, self.first_extra = safety, first_extra
        self.durations: list[float] = []
        self._epoch_start = 0.0

    def next_epoch_fits(self) -> bool:
        """Whether one more epoch, as slow as the slowest recent one, ends in time."""
        if not self.durations:
            return self.clock() < self.deadline
        # The first epoch also traced the functions: once there are others, it is no guide.
        recent = self.durations[1:][-3:] or [self.durations[0] - self.first_extra]
        return self.clock() + self.safety * max(recent) <= self.deadline

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.clock()

    def on_train_batch_end(self, batch, logs=None):
        if self.clock() >= self.deadline:  # mid-epoch: the limit itself
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.durations.append(self.clock() - self._epoch_start)
        if not self.next_epoch_fits():
            self.model.stop_training = True
