"""The measured table that a time budget plans from (issue 25, item 2).

Each row is something a budget could spend time on beyond the default recipe. It gives
what the row measured on flowers5 against the default recipe (docs/measurements.md,
"What extra time buys") and its cost, counted in default runs. The budget reads it:

- members: ensemble members are bought in the order of their measured gain in
  validation log loss per default run of cost (`budget/members.py`);
- every other row is recorded in plan.json with the finding that keeps it out.

Choices rest on validation figures. Where only test or unseen-photo figures exist,
they are the reason a row stays out; nothing is chosen on them.
"""

from __future__ import annotations

import dataclasses

BASE = "mobilenet_v2_0.35"  # the default backbone: the table's gains are against it


@dataclasses.dataclass(frozen=True)
class Ingredient:
    """One row of the table.

    Attributes:
        name: What it is, in words.
        finding: What was measured, in words (plan.json quotes it).
        member: For an ensemble member, its backbone; "" for another seed of the run's
            own backbone; None for a row that is not a member.
        log_loss_gain: Validation log loss of the default run minus that of the default
            run averaged with this member (uncalibrated, one split).
        cost: Its training time in default runs, measured.
    """

    name: str
    finding: str
    member: str | None = None
    log_loss_gain: float = 0.0
    cost: float = 1.0

    @property
    def gain_per_cost(self) -> float:
        return self.log_loss_gain / self.cost


TABLE = (
    Ingredient("another seed of the run's backbone", member="", log_loss_gain=0.533 - 0.511,
               finding="with the default run: validation log loss 0.533 -> 0.511"),
    # Its cost: 685 s of training against 623 s for a seed of 0.35 in the same 60-minute
    # budget. The square of the width ratio (2.04) had priced it at twice what it took.
    Ingredient("a MobileNetV2-0.5 member", member="mobilenet_v2_0.5", cost=685 / 623,
               log_loss_gain=0.533 - 0.491,
               finding="with the default run: validation log loss 0.533 -> 0.491; all "
               "three 0.488"),
    Ingredient("flip test-time augmentation", finding="validation accuracy +0.7, +0.2 and "
               "-1.2 points on three runs: no consistent gain, for twice the prediction "
               "cost"),
    Ingredient("a distilled student", finding="validation accuracy 0.800, its ensemble "
               "0.794, the same backbone alone 0.800: it kept none of the ensemble's gain "
               "(`--distill` makes one on request)"),
    Ingredient("more epochs, a larger input", finding="30 epochs 0.753 and 224 px 0.755 on "
               "unseen photos, against the default's 0.764: a budget never trains more "
               "than the default recipe"),
    Ingredient("EMA, RandAugment, progressive resizing, MixUp", finding="0.739 in 20 "
               "minutes on unseen photos, against 0.764 for the default"),
    Ingredient("leaving the doctor's flagged images out of training",
               finding="not measured per minute yet (`--exclude-flagged` on request)"),
)


def members(backbone: str) -> list[Ingredient]:
    """The member rows that apply to a run of `backbone`, best gain per cost first
    (another backbone than `BASE`: only its other seeds, whose gain was not measured)."""
    rows = [row for row in TABLE if row.member is not None
            and (backbone == BASE or row.member == "")]
    return sorted(rows, key=lambda row: row.gain_per_cost, reverse=True)


def left_out() -> list[dict]:
    """The rows a budget does not spend time on, with why (plan.json)."""
    return [{"ingredient": row.name, "finding": row.finding}
            for row in TABLE if row.member is None]
