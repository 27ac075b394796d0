"""The glue `training.train` calls when a run has a time limit (`TrainConfig.time_limit`).

    ledger = open_ledger(...)         at the start (the limit covers the whole command)
    mark(ledger, "audit")             after each step: seconds spent, saved atomically
    plan = plan_within(...)           measure, plan, refuse a budget too small; plan.json
    finish(...)                       what was spent, beside the estimate, in plan.json
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import keras
import numpy as np

from transferkit import layout
from transferkit.backbones import Backbone
from transferkit.budget.parse import format_seconds
from transferkit.budget.planner import BudgetPlan, SpeedProfile, plan_budget
from transferkit.budget.speed import measure
from transferkit.budget.ledger import Ledger
from transferkit.config import TrainConfig
from transferkit.errors import ConfigError
from transferkit.fileio import read_json, write_json
from transferkit.plan import MIN_FINE_TUNE_SIZE, Plan

LEDGER_FILE = "budget.json"  # in the run's checkpoints
CLOCK = time.time  # the ledger's clock; tests replace it (never changed at run time)


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
        name = step if step not in marks else f"{step}, resumed"
        marks[name] = round(ledger.spent(), 1)
        ledger.save(marks=marks)


def candidate_sizes(backbone: Backbone, plan: Plan, fixed_size: bool) -> list[int]:
    """The rule's size and one step of 32 px either side, within the backbone's range.

    A frozen backbone (head only) and `--image-size` (`fixed_size`) keep their one size."""
    if fixed_size or plan.strategy != "fine-tune":
        return [plan.image_size]
    low = max(MIN_FINE_TUNE_SIZE, backbone.min_size)
    return sorted({s for s in (plan.image_size - 32, plan.image_size, plan.image_size + 32)
                   if low <= s <= backbone.default_size} | {plan.image_size})


def plan_within(ledger: Ledger, model: keras.Model, plan: Plan, config: TrainConfig,
                backbone: Backbone, paths: dict, labels: dict, out_dir: Path,
                say, fixed_size: bool = False) -> BudgetPlan:
    """Measures this machine (unless resuming), plans, and records it in plan.json.

    Args:
        ledger: The run's ledger.
        model: The classifier at the rule's size (measured at each candidate size).
        plan: The rule's plan (`plan.make_plan` + `with_blocks`).
        config: The run's options.
        backbone: Registry entry.
        paths, labels: By split.
        out_dir: The run directory.
        say: Progress printer.
        fixed_size: The user chose the image size (`--image-size`): no other candidates.

    Returns:
        The budget plan.

    Raises:
        ConfigError: The budget is too small (the measured minimum is in the message).
    """
    saved = ledger.state.get("plan")
    if saved is not None:  # resuming: the plan made when the run started
        budget = BudgetPlan.from_dict(saved)
        say(f"Budget: resuming with {format_seconds(ledger.left(budget.limit_seconds))} "
            f"of {format_seconds(budget.limit_seconds)} left")
        _record(out_dir, budget, ledger.state["profile"])  # plan.json was written anew
        return budget
    sizes = candidate_sizes(backbone, plan, fixed_size)
    n_classes = model.output_shape[-1]
    say(f"Budget: {format_seconds(config.time_limit)}; measuring this machine at "
        f"{', '.join(map(str, sizes))} px")
    profile = measure(model, paths["train"], keras.utils.to_categorical(
        np.asarray(labels["train"]), n_classes), sizes, plan.image_size,
        plan.unfreeze_blocks, config.batch_size, config.time_limit, config.workers,
        say=say)
    budget = plan_budget(profile, config.time_limit, ledger.spent(), len(paths["train"]),
                         len(paths["val"]), len(paths["test"]), plan.image_size, sizes,
                         plan.strategy == "fine-tune" and plan.unfreeze_blocks > 0)
    say(f"Budget plan: {budget.reason}")
    ledger.save(plan=budget.to_dict(), profile=profile.to_dict())
    mark(ledger, "measure")
    _record(out_dir, budget, profile.to_dict())
    return budget


def finish(out_dir: Path, ledger: Ledger | None) -> None:
    """Adds what was spent (total and at each step's end) to plan.json's budget."""
    if ledger is None:
        return
    marks = ledger.state.get("marks", {})
    plan = read_json(out_dir / layout.PLAN_FILE)
    section = plan.setdefault("budget", {})
    spent = ledger.spent()
    section["spent"] = {
        "total_seconds": round(spent, 1), "at_end_of": marks,
        "fine_tune_epochs": ledger.state.get("epochs", 0),
        "within_limit": spent <= section.get("limit_seconds", float("inf"))}
    write_json(out_dir / layout.PLAN_FILE, plan)


def head_config(config: TrainConfig, budget: BudgetPlan | None) -> TrainConfig:
    """Phase 1's options: the planned number of augmented views."""
    return config if budget is None else dataclasses.replace(
        config, augment_copies=budget.augment_copies)


def _record(out_dir: Path, budget: BudgetPlan, profile: dict) -> None:
    """Adds the budget plan and the measured profile to plan.json."""
    path = out_dir / layout.PLAN_FILE
    write_json(path, {**read_json(path), "image_size": budget.image_size,
                      "budget": {**budget.to_dict(), "profile": profile}})


__all__ = ["open_ledger", "mark", "plan_within", "finish", "head_config", "SpeedProfile"]
