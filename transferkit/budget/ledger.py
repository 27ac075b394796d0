"""The clock of a time-limited run: the ledger (the stop and the time-tied rate are the
engine's: `engine/stop.py`, `engine/schedule.py`).

The limit covers the whole command. The ledger (`checkpoints/budget.json`, written
atomically after each step and each epoch) holds the seconds spent so far, so a killed
run resumes with the time it has left rather than a fresh budget. Every clock here is
injectable (`clock=`), so tests drive them without waiting.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from transferkit.fileio import read_json, write_json

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
