"""The glue `training.train` calls when a run has a time limit, and its clock.

    ledger = open_ledger(...)   at the start (the limit covers the whole command)
    mark(ledger, "audit")       after each step: seconds spent, saved atomically
    plan_within(...)            measure, plan, refuse a budget too small; plan.json
    time_limit(...)             phase 2's stop; finish(...): what was spent, in plan.json

The ledger (`checkpoints/budget.json`, written after each step and epoch) holds the
seconds spent, so a killed run resumes with the time it has left.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from transferkit import layout
from transferkit.backbones import Backbone
from transferkit.budget.parse import format_seconds
from transferkit.budget.planner import SAFETY, BudgetPlan, plan_budget
from transferkit.budget.speed import measure
from transferkit.config import TrainConfig
from transferkit.engine.phase import TimeLimit
from transferkit.errors import ConfigError
from transferkit.fileio import read_json, write_json
from transferkit.plan import MIN_FINE_TUNE_SIZE, Plan

LEDGER_FILE = "budget.json"  # in the run's checkpoints
CLOCK = time.time  # the ledger's clock; tests replace it (never changed at run time)


class Ledger:
    """Seconds spent by this run across invocations (`before` this one, which
    `started` at that time on `clock`, an injectable clock), and its saved state."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time,
                 started: float | None = None):
        self.path, self.clock = Path(path), clock
        self.started = clock() if started is None else started
        saved = read_json(self.path) if self.path.exists() else {}
        self.before = float(saved.get("spent_seconds", 0.0))  # earlier invocations
        self.state: dict = dict(saved.get("state", {}))

    def spent(self) -> float:
        """Seconds spent in all invocations, up to now."""
        return self.before + self.clock() - self.started

    def deadline(self, seconds: float) -> float:
        """`seconds` into the run (all invocations) as a time on `clock`."""
        return self.started + seconds - self.before

    def save(self, **state) -> None:
        """Writes the seconds spent and `state` (merged into the saved state), atomically."""
        self.state.update(state)
        write_json(self.path, {"spent_seconds": round(self.spent(), 2), "state": self.state})


def open_ledger(out_dir: Path, config: TrainConfig, started: float) -> Ledger | None:
    """The run's ledger (None without a time limit); a resumed run's has its spent time.

    Raises:
        ConfigError: A resumed run has already used its whole budget.
    """
    if config.time_limit is None:
        return None
    # The command started before this call: carry the real seconds since onto CLOCK.
    ledger = Ledger(out_dir / layout.CHECKPOINTS_DIR / LEDGER_FILE, clock=CLOCK,
                    started=CLOCK() - (time.time() - started))
    if ledger.before >= config.time_limit:
        raise ConfigError(f"this unfinished run has already spent its --time-limit of "
                          f"{format_seconds(config.time_limit)}; pass --overwrite to start "
                          "again")
    return ledger


def mark(ledger: Ledger | None, step: str) -> None:
    """Records that `step` finished now (seconds spent so far), atomically.

    A step done again after a resume (the audit, say) is recorded as `"audit, resumed"`:
    the first invocation's marks stay."""
    if ledger is not None:
        marks = dict(ledger.state.get("marks", {}))
        marks[step if step not in marks else f"{step}, resumed"] = round(ledger.spent(), 1)
        ledger.save(marks=marks)


def candidate_sizes(backbone: Backbone, plan: Plan, fixed_size: bool) -> list[int]:
    """The rule's size, then every 32 px below it down to the smallest fine-tuning size.

    A frozen backbone (head only) and `--image-size` (`fixed_size`) keep their one size;
    no size above the rule's (224 px measured below 160 px, issue 25)."""
    if fixed_size or plan.strategy != "fine-tune":
        return [plan.image_size]
    return list(range(plan.image_size, max(MIN_FINE_TUNE_SIZE, backbone.min_size) - 1, -32))


def plan_within(ledger: Ledger, model: keras.Model, plan: Plan, config: TrainConfig,
                sizes: list[int], paths: dict, labels: dict, out_dir: Path,
                say) -> BudgetPlan:
    """Measures this machine (unless resuming), plans, and records it in plan.json.

    Args:
        ledger: The run's ledger.
        model: The classifier at the rule's size (measured there).
        plan: The rule's plan (`plan.make_plan` + `with_blocks`).
        config: The run's options (its epochs and views: the default recipe's).
        sizes: Candidate sizes (`candidate_sizes`).
        paths, labels: By split.
        out_dir: The run directory.
        say: Progress printer.

    Returns:
        The budget plan (`planner.plan_budget`; it raises ConfigError for a budget too
        small, with the measured minimum).
    """
    saved = ledger.state.get("plan")
    if saved is not None:  # resuming: the plan made when the run started
        budget = BudgetPlan.from_dict(saved)
        left = budget.limit_seconds - ledger.spent()
        say(f"Budget: resuming with {format_seconds(left)} of "
            f"{format_seconds(budget.limit_seconds)} left")
        _record(out_dir, budget, ledger.state["profile"])  # plan.json was written anew
        return budget
    say(f"Budget: {format_seconds(config.time_limit)}; measuring this machine at "
        f"{plan.image_size} px")
    profile = measure(model, paths["train"], keras.utils.to_categorical(
        np.asarray(labels["train"]), model.output_shape[-1]), plan.unfreeze_blocks,
        config.batch_size, config.workers)
    budget = plan_budget(profile, config.time_limit, ledger.spent(), len(paths["train"]),
                         len(paths["val"]), len(paths["test"]), sizes,
                         config.fine_tune_epochs if plan.unfreeze_blocks else 0,
                         config.augment_copies)
    say(f"Budget plan: {budget.reason}")
    ledger.save(plan=budget.to_dict(), profile=profile.__dict__)
    mark(ledger, "measure")
    _record(out_dir, budget, profile.__dict__)
    return budget


def time_limit(ledger: Ledger, budget: BudgetPlan) -> TimeLimit:
    """Phase 2's time stop: its last epoch must end before the reserve."""
    profile = ledger.state["profile"]
    return TimeLimit(ledger.clock, ledger.deadline(budget.limit_seconds
                                                   - budget.reserve_seconds),
                     SAFETY, profile["trace_train"] + profile["trace_predict"])


def finish(out_dir: Path, ledger: Ledger | None) -> None:
    """Adds what was spent (total and at each step's end) to plan.json's budget."""
    if ledger is None:
        return
    plan = read_json(out_dir / layout.PLAN_FILE)
    section = plan.setdefault("budget", {})
    spent = ledger.spent()
    section["spent"] = {
        "total_seconds": round(spent, 1), "at_end_of": ledger.state.get("marks", {}),
        "fine_tune_epochs": ledger.state.get("epochs", 0),
        "within_limit": spent <= section.get("limit_seconds", float("inf"))}
    write_json(out_dir / layout.PLAN_FILE, plan)


def _record(out_dir: Path, budget: BudgetPlan, profile: dict) -> None:
    """Adds the budget plan and the measured profile to plan.json."""
    path = out_dir / layout.PLAN_FILE
    write_json(path, {**read_json(path), "image_size": budget.image_size,
                      "budget": {**budget.to_dict(), "profile": profile}})
