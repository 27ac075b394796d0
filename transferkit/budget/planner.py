"""The time-aware plan: the default recipe fitted to the budget by measured speeds.

Pure: no clock, no model. `session.measure` produces the `SpeedProfile` on this machine and
this data; tests feed made-up profiles with known answers.

A budget never trains more than the default recipe: on photos the product never saw,
more epochs (0.753 at 30), a larger input (0.755 at 224 px) and the former ingredients
(EMA, RandAugment, progressive resizing, MixUp: 0.739 in 20 minutes) all scored below
the default's 0.764 (issue 25; docs/measurements.md). Time left after it buys ensemble
members (`budget/members.py`, in the order of the measured table, `budget/measured.py`).
So (docs/training.md, "Time budgets"):
1. Fixed costs are set aside first: what was already spent (audit, doctor, measuring),
   phase 1's feature extraction (its augmented views cut when they would take over
   `PHASE1_SHARE` of the time), and the reserve after training (evaluation,
   calibration, report), estimated from the measured forward speed.
2. The image size: the rule's (`plan.choose_image_size`), else the largest of the
   sizes 32 px apart below it at which `ENOUGH_EPOCHS` fit, else the smallest. The
   epochs: the default's (`--fine-tune-epochs`), or as many as fit when fewer do.
3. The engine's time stop (`engine.phase.TimeLimit`) keeps the limit if the estimate
   was optimistic.
"""

from __future__ import annotations

import dataclasses
import math

from transferkit.budget.parse import format_seconds
from transferkit.errors import ConfigError

# Fewest epochs for a size: the recipe table (docs/measurements.md) measured 160 px at 6
# epochs level with 128 px at 10 (0.720 / 0.722), and 160 px at 10 epochs at 0.779:
# test-split figures (no validation figure was recorded for the first two; 0.774 for the
# third).
ENOUGH_EPOCHS = 6
SAFETY = 1.15            # epochs took 31-83 s in one run here: estimates are padded
# The reserve is padded more: an epoch too many is stopped by the time stop, but nothing
# stops the work after training. A 5-minute run with the suite beside it took 91 s for
# a reserve estimated at 48 s (1.15 x, without the validation pass); 1.5 x with it
# gives 67 s there, and about 60 s quiet where the work takes about 30 s. A machine whose
# load rises after the speeds were measured can still overrun (docs/measurements.md).
RESERVE_SAFETY = 1.5
PHASE1_SHARE = 0.25      # most of the usable time phase 1's augmented views may take
REPORT_SECONDS = 10.0    # writing report.html (plots), about constant
SAVE_SECONDS = 3.0       # model.keras and metrics
PREDICT_CALLS_AFTER = 4  # evaluation 1, calibration 3 (final features, val, test)


@dataclasses.dataclass
class SpeedProfile:
    """This machine's measured speed on this data at `image_size`: images per second
    through the frozen classifier (decoding included), seconds per fine-tuning step of
    `batch_size` images, and what the first call of a prediction or a training function
    costs beyond the others (tracing)."""

    image_size: int
    extract_ips: float
    step_seconds: float
    batch_size: int
    measure_seconds: float = 0.0
    trace_predict: float = 0.0
    trace_train: float = 0.0

    def at(self, size: int) -> tuple[float, float]:
        """Images per second and seconds per step at `size`: a convolution's cost is
        proportional to the pixels."""
        ratio = (size / self.image_size) ** 2
        return self.extract_ips / ratio, self.step_seconds * ratio


@dataclasses.dataclass
class BudgetPlan:
    """What the budget buys (saved under "budget" in plan.json)."""

    limit_seconds: float
    image_size: int
    augment_copies: int
    fine_tune_epochs: int
    epoch_seconds: float       # padded estimate
    head_seconds: float        # phase 1 estimate
    reserve_seconds: float     # evaluation + calibration + report, kept for the end
    reason: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "BudgetPlan":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def plan_budget(profile: SpeedProfile, limit: float, spent: float, n_train: int,
                n_val: int, n_test: int, sizes: list[int], epochs: int,
                copies: int) -> BudgetPlan:
    """Fits the default recipe into `limit` seconds.

    Args:
        profile: Measured speeds.
        limit: The whole command's budget (seconds).
        spent: Seconds already spent (audit, doctor, split, measuring).
        n_train, n_val, n_test: Images per split.
        sizes: Candidate sizes, the rule's first, then smaller ones (descending).
        epochs: The default recipe's fine-tuning epochs (0: the head only).
        copies: The default recipe's augmented views in phase 1.

    Returns:
        The plan: never more epochs, views or pixels than the default recipe's.

    Raises:
        ConfigError: The budget cannot train anything: less than the fixed costs plus one
            epoch (or the head) at the smallest size. The message gives the measured
            minimum.
    """
    n_all, left = n_train + n_val + n_test, limit - spent
    share = PHASE1_SHARE if epochs else 1.0  # head only: phase 1 is the training
    first_extra = SAFETY * (profile.trace_train + profile.trace_predict)

    def seconds(size: int, views: int) -> tuple[float, float, float]:
        """A padded fine-tuning epoch (steps + validation); phase 1 (features of every
        image and of `views` augmented views of the training ones, tracing each, then
        a few seconds of the head's epochs); the reserve: evaluation (test, then
        validation), calibration (features of every image) and the report, each
        predict traced once more."""
        ips, step = profile.at(size)
        epoch = SAFETY * (math.ceil(n_train / profile.batch_size) * step + n_val / ips)
        head = (n_all + views * n_train) / ips + (1 + views) * profile.trace_predict + 5
        reserve = RESERVE_SAFETY * ((n_all + n_test + n_val) / ips + PREDICT_CALLS_AFTER
                                    * profile.trace_predict + SAVE_SECONDS
                                    + REPORT_SECONDS)
        return epoch, head, reserve

    def fit(size: int) -> tuple[int, int, float, float, float]:
        """Epochs, views, epoch, phase 1 and reserve seconds at `size`."""
        views = copies
        while views and seconds(size, views)[1] > share * max(left - seconds(size, 0)[2],
                                                              0):
            views -= 1
        epoch, head, reserve = seconds(size, views)
        n = int((left - reserve - head - first_extra) // epoch) if epochs else 0
        return min(max(n, 0), epochs), views, epoch, head, reserve

    size = next((s for s in sizes if fit(s)[0] >= min(ENOUGH_EPOCHS, epochs)), sizes[-1])
    n, views, epoch, head, reserve = fit(size)
    if (epochs and n < 1) or head + reserve > left:
        smallest, (epoch0, head0, reserve0) = sizes[-1], seconds(sizes[-1], 0)
        minimum = spent + head0 + reserve0 + (epoch0 + first_extra if epochs else 0.0)
        what = f"one fine-tuning epoch at {smallest} px" if epochs else \
            "the head on features of every image"
        raise ConfigError(f"--time-limit {format_seconds(limit)} is too small for this "
                          f"data on this machine: it needs at least "
                          f"{format_seconds(math.ceil(minimum))} (measured: what was spent "
                          f"so far, {what}, evaluation, calibration and the report); run "
                          "again with a larger --time-limit and --overwrite")
    why = f"head only at {size} px" if not epochs else (
        f"the default recipe fits: {n} fine-tuning epochs at {size} px" if n == epochs else
        f"only {n} of the default's {epochs} fine-tuning epochs fit, at {size} px"
        + (f" (fewer than {ENOUGH_EPOCHS} at larger sizes)" if size != sizes[0] else ""))
    reason = "; ".join([
        f"{format_seconds(limit)} budget, {format_seconds(spent)} spent before planning",
        why + (f" (~{epoch:.0f} s each)" if epochs else ""),
        f"phase 1 ~{head:.0f} s with {views} augmented views",
        f"{reserve:.0f} s kept for evaluation, calibration and the report"])
    return BudgetPlan(limit, size, views, n, round(epoch, 1), round(head, 1),
                      round(reserve, 1), reason)
