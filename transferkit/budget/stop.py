"""The clock of a time-limited run: the ledger, the stop callback, the time-tied rate.

The limit covers the whole command. The ledger (`checkpoints/budget.json`, written
atomically after each step and each epoch) holds the seconds spent so far, so a killed
run resumes with the time it has left rather than a fresh budget. Every clock here is
injectable (`clock=`), so tests drive them without waiting.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from transferkit.fileio import atomic_path, read_json, write_json

Clock = Callable[[], float]


class Ledger:
    """Seconds spent by this run across invocations, and phase 2's progress.

    Args:
        path: The ledger file (in the run's checkpoints).
        clock: Seconds, monotonic enough (default `time.time`).
        started: This invocation's start on `clock` (default: now).
    """

    def __init__(self, path: Path, clock: Clock = time.time, started: float | None = None):
        self.path = Path(path)
        self.clock = clock
        self.started = clock() if started is None else started
        saved = read_json(self.path) if self.path.exists() else {}
        self.before = float(saved.get("spent_seconds", 0.0))  # earlier invocations
        self.state: dict = dict(saved.get("state", {}))

    def spent(self) -> float:
        """Seconds spent in all invocations, up to now."""
        return self.before + self.clock() - self.started

    def left(self, limit: float) -> float:
        """Seconds of `limit` not yet spent."""
        return limit - self.spent()

    def deadline(self, limit: float) -> float:
        """The limit as a time on `clock`."""
        return self.started + limit - self.before

    def save(self, **state) -> None:
        """Writes the seconds spent and `state` (merged into the saved state), atomically."""
        self.state.update(state)
        write_json(self.path, {"spent_seconds": round(self.spent(), 2), "state": self.state})


def cosine_rate(fraction: float, peak: float, warmup: float) -> float:
    """The learning rate at `fraction` of phase 2's time: linear warm-up from peak / 10
    over the first `warmup` fraction, then cosine decay to 0 at fraction 1.

    Tied to time rather than steps, the schedule ends at the end of the budget whatever
    the machine's speed does meanwhile (an epoch count fixed in advance would stop
    mid-decay when epochs slow down, or sit at zero when they speed up).
    """
    fraction = min(max(fraction, 0.0), 1.0)
    if fraction < warmup:
        return peak / 10 + (peak - peak / 10) * fraction / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (fraction - warmup) / (1 - warmup)))


class TimeBudget(keras.callbacks.Callback):
    """Stops fitting when the next epoch would not end before `deadline`; keeps the best.

    After each epoch it predicts the next one's time from the epochs so far (the
    slowest of the last three, times `safety`: speed varies, and overrunning costs
    more than one epoch less) and stops when it would end after `deadline`. Within an
    epoch it stops at `deadline` itself. The weights with the lowest validation loss
    seen (this or an earlier stage or invocation: `best_loss`) are restored at the end,
    and saved to `best_path` whenever they improve, so a killed run keeps them.
    It also sets the learning rate each step from the elapsed fraction of the phase.

    Args:
        deadline: Time on `clock` by which fitting must have stopped.
        clock: The clock.
        phase_start: Time on `clock` where the phase (fraction 0) began.
        phase_end: Where it ends (fraction 1).
        peak_rate: Peak learning rate (None: leave the optimizer's rate alone).
        warmup: Warm-up fraction of the phase.
        best_loss: Best validation loss before this fit (inf: none yet).
        best_path: Where improved weights are saved (None: kept in memory only).
        safety: Padding of the next epoch's predicted time.
        on_epoch: Called after each epoch with (seconds, logs, best loss): the ledger.
        first_extra: What the first epoch cost beyond the others (tracing, measured):
            subtracted while it is the only epoch to go by.
        restore_best: Restore the best weights at the end (False: a stage of several,
            which continues from its last weights; the caller restores at the end).
    """

    def __init__(self, deadline: float, clock: Clock = time.time,
                 phase_start: float | None = None, phase_end: float | None = None,
                 peak_rate: float | None = None, warmup: float = 0.1,
                 best_loss: float = math.inf, best_path: Path | None = None,
                 safety: float = 1.15, on_epoch: Callable | None = None,
                 restore_best: bool = True, first_extra: float = 0.0):
        super().__init__()
        self.deadline, self.clock = deadline, clock
        self.phase_start = clock() if phase_start is None else phase_start
        self.phase_end = deadline if phase_end is None else phase_end
        self.peak_rate, self.warmup = peak_rate, warmup
        self.best_loss, self.best_path = best_loss, best_path
        self.best_weights: list[np.ndarray] | None = None
        self.safety, self.on_epoch, self.restore_best = safety, on_epoch, restore_best
        self.first_extra = first_extra
        self.durations: list[float] = []
        self.stopped_by_time = False
        self._epoch_start = None

    def fraction(self) -> float:
        """The elapsed fraction of phase 2's time (0 to 1)."""
        span = max(self.phase_end - self.phase_start, 1e-9)
        return (self.clock() - self.phase_start) / span

    def next_epoch_fits(self) -> bool:
        """Whether one more epoch, as slow as the slowest recent one, ends in time."""
        if not self.durations:
            return self.clock() < self.deadline
        # The first epoch also traced the functions: once there are others, it is no guide.
        recent = self.durations[1:][-3:] or [self.durations[0] - self.first_extra]
        predicted = self.safety * max(recent)
        return self.clock() + predicted <= self.deadline

    def on_train_begin(self, logs=None):
        if not self.next_epoch_fits():
            self._stop()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.clock()

    def on_train_batch_begin(self, batch, logs=None):
        if self.peak_rate is not None:
            self.model.optimizer.learning_rate.assign(
                cosine_rate(self.fraction(), self.peak_rate, self.warmup))

    def on_train_batch_end(self, batch, logs=None):
        if self.clock() >= self.deadline:  # mid-epoch: the limit itself
            self._stop()

    def on_epoch_end(self, epoch, logs=None):
        duration = self.clock() - self._epoch_start
        self.durations.append(duration)
        loss = (logs or {}).get("val_loss")
        if loss is not None and loss < self.best_loss:
            self.best_loss = float(loss)
            self.best_weights = self.model.get_weights()
            if self.best_path is not None:
                with atomic_path(self.best_path, suffix=".weights.h5") as tmp:
                    self.model.save_weights(tmp)
        if self.on_epoch is not None:
            self.on_epoch(duration, dict(logs or {}), self.best_loss)
        if not self.next_epoch_fits():
            self._stop()

    def on_train_end(self, logs=None):
        if self.restore_best and self.best_weights is not None:
            self.model.set_weights(self.best_weights)

    def _stop(self):
        self.stopped_by_time = True
        self.model.stop_training = True
