"""What `training.train` calls when a run has a time limit: this machine's speed, the
plan, the ledger of seconds spent, phase 2's time stop.

The ledger (`checkpoints/budget.json`, saved after each step and epoch) holds the seconds
spent across invocations, so a killed run resumes with the time it has left. Speed is
measured in a few timed steps at the rule's size, each Keras function called once
untimed first (tracing, on a GPU compiling); smaller sizes scale by their pixels.
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
from transferkit.budget.planner import SAFETY, BudgetPlan, SpeedProfile, plan_budget
from transferkit.config import TrainConfig
from transferkit.data.pipeline import image_dataset
from transferkit.engine.phase import TimeLimit
from transferkit.errors import ConfigError
from transferkit.features import feature_extractor
from transferkit.fileio import read_json, write_json
from transferkit.model import set_trainable_blocks
from transferkit.plan import MIN_FINE_TUNE_SIZE, Plan

LEDGER_FILE = "budget.json"  # in the run's checkpoints
CLOCK = time.time  # the ledger's clock; tests replace it (never changed at run time)
TIMED_STEPS = 2


class Ledger:
    """Seconds spent by this run across invocations (`before` this one, which `started`
    at that time on `clock`), and its saved state."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time,
                 started: float | None = None):
        self.path, self.clock = Path(path), clock
        self.started = clock() if started is None else started
        saved = read_json(self.path) if self.path.exists() else {}
        self.before = float(saved.get("spent_seconds", 0.0))
        self.state: dict = dict(saved.get("state", {}))

    def spent(self) -> float:
        return self.before + self.clock() - self.started

    def deadline(self, seconds: float) -> float:
        """`seconds` into the run (all invocations) as a time on `clock`."""
        return self.started + seconds - self.before

    def save(self, **state) -> None:
        """Writes the seconds spent and `state` (merged into the saved state), atomically."""
        self.state.update(state)
        write_json(self.path, {"spent_seconds": round(self.spent(), 2), "state": self.state})


def open_ledger(out_dir: Path, config: TrainConfig, started: float) -> Ledger | None:
    """The run's ledger (None without a time limit; ConfigError when a resumed run has
    spent it all)."""
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
    """Records the seconds spent when `step` finished (`"audit, resumed"` when done again
    after a resume: the first invocation's marks stay)."""
    if ledger is not None:
        marks = dict(ledger.state.get("marks", {}))
        marks[step if step not in marks else f"{step}, resumed"] = round(ledger.spent(), 1)
        ledger.save(marks=marks)


def candidate_sizes(backbone: Backbone, plan: Plan, fixed_size: bool) -> list[int]:
    """The rule's size, then every 32 px below it down to the smallest fine-tuning size;
    a frozen backbone and `--image-size` (`fixed_size`) keep their one size (no size above
    the rule's: 224 px measured below 160 px, issue 25)."""
    if fixed_size or plan.strategy != "fine-tune":
        return [plan.image_size]
    return list(range(plan.image_size, max(MIN_FINE_TUNE_SIZE, backbone.min_size) - 1, -32))


def measure(model: keras.Model, paths: list[str], labels: np.ndarray, n_blocks: int,
            batch_size: int, workers: int = 2,
            clock: Callable[[], float] = time.perf_counter) -> SpeedProfile:
    """Times decoding, feature extraction and (`n_blocks` > 0) fine-tuning steps of the
    first `batch_size` of `paths` (one-hot `labels`) at the model's input size; the
    model's weights are restored after."""
    start, n = clock(), min(batch_size, len(paths))
    size = int(model.input_shape[1])
    batch = np.asarray(next(iter(image_dataset(paths[:n], None, size, n,
                                               workers=workers))))
    decode = (clock() - start) / n  # seconds per image

    def timed(call, times: int) -> tuple[float, float]:
        """Seconds of the first (tracing) call beyond the others, and of one other."""
        t0 = clock()
        call()
        first, t0 = clock() - t0, clock()
        for _ in range(times):
            call()
        each = (clock() - t0) / times
        return max(first - each, 0.0), each

    trunk = feature_extractor(model)
    trace_predict, forward = timed(lambda: trunk.predict_on_batch(batch), 1)
    trace_train, step = 0.0, 0.0
    if n_blocks:
        saved = model.get_weights()  # the timed steps must not change phase 1's start
        set_trainable_blocks(model, n_blocks)
        model.compile(keras.optimizers.Adam(1e-5), "categorical_crossentropy")
        trace_train, each = timed(lambda: model.train_on_batch(batch, labels[:n]),
                                  TIMED_STEPS)
        model.set_weights(saved)
        step = (each / n + decode) * batch_size
    return SpeedProfile(size, 1.0 / (decode + forward / n), step, batch_size,
                        clock() - start, trace_predict, trace_train)


def plan_within(ledger: Ledger, model: keras.Model, plan: Plan, config: TrainConfig,
                sizes: list[int], paths: dict, labels: dict, out_dir: Path,
                say) -> BudgetPlan:
    """Measures this machine (unless resuming), plans, and records it in plan.json.

    Args:
        ledger: The run's ledger.
        model: The classifier at the rule's size (measured there).
        plan: The rule's plan; `config`: the run's options (the default recipe).
        sizes: Candidate sizes (`candidate_sizes`).
        paths, labels, out_dir, say: By split; the run directory; progress printer.

    Returns:
        The budget plan (`planner.plan_budget`: ConfigError for a budget too small).
    """
    budget, profile = ledger.state.get("plan"), ledger.state.get("profile")
    if budget is not None:  # resuming: the plan made when the run started
        budget = BudgetPlan.from_dict(budget)
        say(f"Budget: resuming with {format_seconds(budget.limit_seconds - ledger.spent())}"
            f" of {format_seconds(budget.limit_seconds)} left")
    else:
        say(f"Budget: {format_seconds(config.time_limit)}; measuring this machine at "
            f"{plan.image_size} px")
        profile = vars(measure(model, paths["train"], keras.utils.to_categorical(
            labels["train"], model.output_shape[-1]), plan.unfreeze_blocks,
            config.batch_size, config.workers))
        budget = plan_budget(SpeedProfile(**profile), config.time_limit, ledger.spent(),
                             len(paths["train"]), len(paths["val"]), len(paths["test"]),
                             sizes, config.fine_tune_epochs if plan.unfreeze_blocks else 0,
                             config.augment_copies)
        say(f"Budget plan: {budget.reason}")
        ledger.save(plan=budget.to_dict(), profile=profile)
        mark(ledger, "measure")
    path = out_dir / layout.PLAN_FILE  # plan.json is written anew when resuming
    write_json(path, {**read_json(path), "image_size": budget.image_size,
                      "budget": {**budget.to_dict(), "profile": profile}})
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
    section, spent = plan.setdefault("budget", {}), ledger.spent()
    section["spent"] = {
        "total_seconds": round(spent, 1), "at_end_of": ledger.state.get("marks", {}),
        "fine_tune_epochs": ledger.state.get("epochs", 0),
        "within_limit": spent <= section.get("limit_seconds", float("inf"))}
    write_json(out_dir / layout.PLAN_FILE, plan)
