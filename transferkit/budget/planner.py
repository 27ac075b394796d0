"""The time-aware plan: measured speeds + dataset size + budget → what to train, how long.

Pure: no clock, no model. `speed.measure` produces the `SpeedProfile` on this machine and
this data; tests feed made-up profiles with known answers.

How the budget is spent (docs/training.md, "Time budgets"):
1. Fixed costs are set aside first: what was already spent (audit, doctor, measuring),
   phase 1's feature extraction, and the reserve after training (evaluation,
   calibration, report), estimated from the measured forward speed.
2. The image size: the largest candidate at which `ENOUGH_EPOCHS` fine-tuning epochs
   fit (the rule's size, `plan.choose_image_size`, was measured at 6 and 10); one
   size above the rule only when `LARGE_SIZE_EPOCHS` fit there; with less time the
   smallest candidate (more epochs at a lower resolution beat too few epochs).
3. The recipe's ingredients switch on as the epoch count grows, each once there are
   enough epochs for it to pay (stronger regularization needs more epochs to fit
   through): weight averaging (EMA), then RandAugment and progressive resizing, then
   MixUp. Below `EMA_FROM` epochs the recipe is exactly today's.
4. Phase 2's epochs are an estimate: the engine's time stop (`engine/stop.py`) re-estimates after
   every epoch and the learning rate follows the elapsed fraction of the phase's time.
"""

from __future__ import annotations

import dataclasses
import math

from transferkit.budget.parse import format_seconds
from transferkit.errors import ConfigError

# Fewest epochs for a size: the recipe table (docs/measurements.md) measured 160 px at 6 epochs level with
# 128 px at 10 (0.720 / 0.722), and 160 px at 10 epochs at 0.779: test-split figures (no
# validation figure was recorded for the first two; 0.774 for the third).
ENOUGH_EPOCHS = 6
LARGE_SIZE_EPOCHS = 30   # epochs that must fit before a size above the rule's is chosen
EMA_FROM = 8             # fine-tuning epochs from which each ingredient is used
RANDAUGMENT_FROM = 15
PROGRESSIVE_FROM = 15
MIXUP_FROM = 25
PROGRESSIVE_SHARE = 0.4  # of phase 2's time spent at the small size
SAFETY = 1.15            # epochs took 31-83 s in one run here: estimates are padded
MAX_HEAD_COPIES = 8      # augmented feature views for a head-only plan
PHASE1_SHARE = 0.25      # most of the usable time phase 1's augmented views may take
REPORT_SECONDS = 10.0    # writing report.html (plots), about constant
SAVE_SECONDS = 3.0       # model.keras and metrics
PREDICT_CALLS_AFTER = 4  # evaluation 1, calibration 3 (final features, val, test)


@dataclasses.dataclass
class SpeedProfile:
    """This machine's measured speed on this data, per candidate image size.

    Attributes:
        extract_ips: Images per second through the frozen classifier (decode included),
            by image size: feature extraction, validation, evaluation, calibration.
        step_seconds: Seconds per fine-tuning step of `batch_size` images, by size.
        batch_size: The batch size the steps were timed at.
        measure_seconds: What measuring cost (already spent).
        trace_predict: Seconds the first call of a prediction function costs beyond a
            batch (tracing; each `predict` of a new model or shape pays it).
        trace_train: The same for a training step (each stage's first epoch pays it).
        augment_seconds: Seconds RandAugment + MixUp add to a batch, by size (the
            input pipeline's cost when those ingredients are on).
    """

    extract_ips: dict[int, float]
    step_seconds: dict[int, float]
    batch_size: int
    measure_seconds: float = 0.0
    trace_predict: float = 0.0
    trace_train: float = 0.0
    augment_seconds: dict[int, float] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"extract_ips": {str(k): round(v, 2) for k, v in self.extract_ips.items()},
                "step_seconds": {str(k): round(v, 4) for k, v in self.step_seconds.items()},
                "batch_size": self.batch_size,
                "measure_seconds": round(self.measure_seconds, 1),
                "trace_predict": round(self.trace_predict, 2),
                "trace_train": round(self.trace_train, 2),
                "augment_seconds": {str(k): round(v, 4)
                                    for k, v in self.augment_seconds.items()}}

    @classmethod
    def from_dict(cls, values: dict) -> "SpeedProfile":
        return cls({int(k): v for k, v in values["extract_ips"].items()},
                   {int(k): v for k, v in values["step_seconds"].items()},
                   values["batch_size"], values.get("measure_seconds", 0.0),
                   values.get("trace_predict", 0.0), values.get("trace_train", 0.0),
                   {int(k): v for k, v in values.get("augment_seconds", {}).items()})


@dataclasses.dataclass
class Stage:
    """A stretch of phase 2 at one image size, ending at a fraction of phase 2's time."""

    image_size: int
    epochs: int            # estimated; the stop callback decides on the clock
    until_fraction: float  # of phase 2's time


@dataclasses.dataclass
class BudgetPlan:
    """What the budget buys (saved under "budget" in plan.json)."""

    limit_seconds: float
    image_size: int
    augment_copies: int
    head_seconds: float        # phase 1 estimate
    fine_tune_seconds: float   # phase 2's share of the budget
    fine_tune_epochs: int      # estimated at the final size (progressive: equivalent)
    epoch_seconds: float       # estimated at the final size
    reserve_seconds: float     # evaluation + calibration + report, kept for the end
    stages: list[Stage]
    ingredients: list[str]     # beyond today's recipe: ema, randaugment, progressive, mixup
    reason: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "BudgetPlan":
        values = dict(values)
        values["stages"] = [Stage(**s) for s in values["stages"]]
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def epoch_seconds(profile: SpeedProfile, size: int, n_train: int, n_val: int,
                  strong: bool = False) -> float:
    """One fine-tuning epoch at `size`: its training steps plus the validation pass
    (`strong`: with RandAugment and MixUp in the input pipeline)."""
    steps = math.ceil(n_train / profile.batch_size)
    step = _at(profile.step_seconds, size)
    if strong and profile.augment_seconds:
        step += _at(profile.augment_seconds, size)
    return steps * step + n_val / _at(profile.extract_ips, size, inverse=True)


def reserve_seconds(profile: SpeedProfile, size: int, n_val: int, n_test: int,
                    n_train: int) -> float:
    """Evaluation (test pass, save), calibration (features of every image), report.

    Each of those predicts with a newly made function: `PREDICT_CALLS_AFTER` traces."""
    ips = _at(profile.extract_ips, size, inverse=True)
    return SAFETY * ((n_test + n_train + n_val + n_test) / ips + PREDICT_CALLS_AFTER
                     * profile.trace_predict + SAVE_SECONDS + REPORT_SECONDS)


def head_seconds(profile: SpeedProfile, size: int, n_all: int, n_train: int,
                 copies: int) -> float:
    """Phase 1: features of every image, `copies` augmented views of the training ones,
    then the head's epochs on the stored features (a few seconds)."""
    ips = _at(profile.extract_ips, size, inverse=True)
    return (n_all + copies * n_train) / ips + (1 + copies) * profile.trace_predict + 5.0


def first_epoch_extra(profile: SpeedProfile) -> float:
    """What a stage's first epoch costs beyond the others: tracing its train and
    validation functions."""
    return profile.trace_train + profile.trace_predict


def plan_budget(profile: SpeedProfile, limit: float, spent: float, n_train: int,
                n_val: int, n_test: int, rule_size: int, sizes: list[int],
                fine_tune: bool) -> BudgetPlan:
    """Fits the run into `limit` seconds.

    Args:
        profile: Measured speeds, one entry per candidate size at least.
        limit: The whole command's budget (seconds).
        spent: Seconds already spent (audit, doctor, split, measuring).
        n_train, n_val, n_test: Images per split.
        rule_size: The size `plan.choose_image_size` picks without a budget.
        sizes: Candidate sizes (ascending), including `rule_size`.
        fine_tune: Whether the plan fine-tunes (else the head only).

    Returns:
        The plan.

    Raises:
        ConfigError: The budget cannot train anything: less than the fixed costs plus one
            epoch at the smallest size. The message gives the measured minimum.
    """
    n_all = n_train + n_val + n_test
    left = limit - spent
    smallest = min(sizes)
    base = [f"{format_seconds(limit)} budget, {format_seconds(spent)} spent before "
            "planning"]
    if not fine_tune:
        return _head_only(profile, limit, left, n_all, n_train, n_val, n_test, rule_size,
                          spent, base)
    minimum = spent + head_seconds(profile, smallest, n_all, n_train, 0) + \
        SAFETY * (epoch_seconds(profile, smallest, n_train, n_val) +
                  first_epoch_extra(profile)) + \
        reserve_seconds(profile, smallest, n_val, n_test, n_train)
    if limit < minimum:
        raise _too_small(limit, minimum, f"one fine-tuning epoch at {smallest} px")

    def fit(size: int, strong: bool = False) -> tuple[float, int, float, int, float]:
        """Phase 2 time, epochs, epoch seconds, copies and phase 1 time at `size`."""
        epoch = SAFETY * epoch_seconds(profile, size, n_train, n_val, strong)
        reserve = reserve_seconds(profile, size, n_val, n_test, n_train)
        copies = 2
        while copies and head_seconds(profile, size, n_all, n_train, copies) > \
                PHASE1_SHARE * max(left - reserve, 0):
            copies -= 1
        head = head_seconds(profile, size, n_all, n_train, copies)
        phase2 = left - reserve - head
        epochs = int((phase2 - SAFETY * first_epoch_extra(profile)) // epoch)
        return phase2, max(epochs, 0), epoch, copies, head

    above = [s for s in sizes if s > rule_size]
    below = [s for s in sizes if s <= rule_size]
    size = next((s for s in reversed(above) if fit(s)[1] >= LARGE_SIZE_EPOCHS), None)
    if size is not None:
        why = f"{size} px: {LARGE_SIZE_EPOCHS}+ epochs fit above the rule's {rule_size} px"
    else:
        size = next((s for s in reversed(below) if fit(s)[1] >= ENOUGH_EPOCHS), None)
        if size is not None:
            why = f"{size} px: the largest size at which {ENOUGH_EPOCHS}+ epochs fit"
        else:
            size = smallest
            why = (f"{size} px: fewer than {ENOUGH_EPOCHS} epochs fit at larger sizes, and "
                   "more epochs at a lower resolution beat too few")
    phase2, epochs, epoch, copies, head = fit(size)
    if epochs < 1:  # the larger reserve at this size: fall back to the smallest
        size = smallest
        phase2, epochs, epoch, copies, head = fit(size)
    if epochs >= RANDAUGMENT_FROM and profile.augment_seconds:
        # The strong augmentations cost input-pipeline time: count it, and keep them
        # only if enough epochs still fit with it (else weight averaging alone).
        strong = fit(size, strong=True)
        if strong[1] >= RANDAUGMENT_FROM:
            phase2, epochs, epoch, copies, head = strong
        else:
            epochs = min(epochs, RANDAUGMENT_FROM - 1)
    ingredients = [name for name, start in (("ema", EMA_FROM), ("randaugment",
                   RANDAUGMENT_FROM), ("progressive", PROGRESSIVE_FROM),
                   ("mixup", MIXUP_FROM)) if epochs >= start]
    stages = [Stage(size, epochs, 1.0)]
    small = max(smallest, 32 * round(size * 0.75 / 32))
    if "progressive" in ingredients and small < size:
        small_epoch = SAFETY * epoch_seconds(profile, small, n_train, n_val, True)
        extra = SAFETY * first_epoch_extra(profile)
        early = int((PROGRESSIVE_SHARE * phase2 - extra) // small_epoch)
        late = int(((1 - PROGRESSIVE_SHARE) * phase2 - extra) // epoch)
        stages = [Stage(small, early, PROGRESSIVE_SHARE), Stage(size, late, 1.0)]
    elif "progressive" in ingredients:
        ingredients.remove("progressive")
    reason = "; ".join(base + [
        why, f"~{epochs} fine-tuning epochs of ~{epoch:.0f} s in "
        f"{format_seconds(phase2)}", f"phase 1 ~{head:.0f} s with {copies} augmented "
        "views", f"{reserve_seconds(profile, size, n_val, n_test, n_train):.0f} s kept "
        "for evaluation, calibration and the report",
        "recipe: today's" + (" + " + ", ".join(ingredients) if ingredients else
                             f" (fewer than {EMA_FROM} epochs)")])
    return BudgetPlan(limit, size, copies, round(head, 1), round(phase2, 1), epochs,
                      round(epoch, 1), round(reserve_seconds(profile, size, n_val, n_test,
                                                             n_train), 1),
                      stages, ingredients, reason)


def _head_only(profile, limit, left, n_all, n_train, n_val, n_test, size, spent, base):
    reserve = reserve_seconds(profile, size, n_val, n_test, n_train)
    minimum = spent + head_seconds(profile, size, n_all, n_train, 0) + reserve
    if limit < minimum:
        raise _too_small(limit, minimum, "the head on features of every image")
    copies = 0
    while copies < MAX_HEAD_COPIES and \
            head_seconds(profile, size, n_all, n_train, copies + 1) <= left - reserve:
        copies += 1
    head = head_seconds(profile, size, n_all, n_train, copies)
    reason = "; ".join(base + [f"head only at {size} px: {copies} augmented views of the "
                               f"training images fit (~{head:.0f} s)",
                               f"{reserve:.0f} s kept for evaluation, calibration and the "
                               "report"])
    return BudgetPlan(limit, size, copies, round(head, 1), 0.0, 0, 0.0, round(reserve, 1),
                      [], [], reason)


def _too_small(limit: float, minimum: float, what: str) -> ConfigError:
    return ConfigError(f"--time-limit {format_seconds(limit)} is too small for this data "
                       f"on this machine: it needs at least {format_seconds(math.ceil(minimum))} "
                       f"(measured: what was spent so far, {what}, evaluation, "
                       "calibration and the report); run again with a larger "
                       "--time-limit and --overwrite")


def _at(table: dict[int, float], size: int, inverse: bool = False) -> float:
    """The measured value at `size`, else scaled by pixels from the nearest measured size
    (a convolution's cost is proportional to the pixels; `inverse` for a rate)."""
    if size in table:
        return table[size]
    near = min(table, key=lambda s: abs(s - size))
    ratio = (size / near) ** 2
    return table[near] / ratio if inverse else table[near] * ratio
