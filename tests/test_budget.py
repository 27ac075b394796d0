"""Training within a time budget (issue 16): parsing, the planner, the clock, one run.

No test waits on a real clock: the planner takes made-up speed profiles, the ledger
takes an injected clock, and the end-to-end run replaces the ledger's clock with one
that the test moves itself, by a minute per fine-tuning step (the engine's time stop
and time-tied rate: tests/test_engine.py).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from transferkit.budget import session
from transferkit.budget.parse import format_seconds, parse_budget, resolve_budget
from transferkit.budget.planner import SpeedProfile, plan_budget
from transferkit.budget.session import Ledger
from transferkit.config import TrainConfig
from transferkit.errors import ConfigError
from transferkit.testing import make_color_folder


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- parsing -------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [("90s", 90), ("20m", 1200), ("1h", 3600),
                                           ("1h30m", 5400), ("1.5h", 5400), (" 2M ", 120),
                                           ("1m30s", 90), (45, 45.0)])
def test_budgets_parse(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["20", "m", "20x", "30m1h", "1h1h", "-5m", "0s", "",
                                  "1 h", "20 minutes", True])
def test_bad_budgets_are_one_clear_line(text):
    with pytest.raises(ConfigError, match="--time-limit") as e:
        parse_budget(text)
    assert "\n" not in str(e.value)


def test_presets_and_the_explicit_limit_wins():
    assert format_seconds(3900) == "1h05m" and format_seconds(270) == "4m30s"
    assert resolve_budget(None, "balanced") == 1200 and resolve_budget(None, "best") == 3600
    assert resolve_budget(None, "fast") is None and resolve_budget(None, None) is None
    assert resolve_budget("90s", "best") == 90
    with pytest.raises(ConfigError, match="--preset"):
        resolve_budget(None, "fastest")
    assert TrainConfig(time_limit="20m").resolved().time_limit == 1200
    assert TrainConfig(preset="best").resolved().time_limit == 3600


# --- the planner ---------------------------------------------------------------------

def _profile(**kw) -> SpeedProfile:
    # 64 images/s forward and 0.5 s a step at 128 px; other sizes scale with the pixels.
    return SpeedProfile(128, 64.0, 0.5, 32, **kw)


def _plan(limit, spent=20, sizes=(128,), epochs=10, copies=2, profile=None):
    return plan_budget(profile or _profile(), limit=limit, spent=spent, n_train=320,
                       n_val=64, n_test=64, sizes=list(sizes), epochs=epochs,
                       copies=copies)


def test_plan_is_the_default_recipe_when_it_fits():
    # 320 training images = 10 steps: an epoch is 10 x 0.5 + 64 val / 64 = 6 s, 6.9 padded.
    # Reserve: 1.5 x ((448 all + 64 test + 64 val) / 64 + 3 save + 10 report) = 33 s.
    # Phase 1 with 2 views: (448 + 640) / 64 + 5 = 22 s (within a quarter of the rest).
    # 180 s left -> 125 s = 18 epochs fit: the default's 10, not more.
    plan = _plan(200)
    assert (plan.image_size, plan.augment_copies, plan.fine_tune_epochs) == (128, 2, 10)
    assert plan.epoch_seconds == 6.9 and plan.reserve_seconds == 33.0
    assert "the default recipe fits: 10 fine-tuning epochs at 128 px" in plan.reason
    # An hour buys the same recipe: more epochs measured worse (issue 25).
    long = _plan(3600, sizes=(128, 96))
    assert (long.image_size, long.augment_copies, long.fine_tune_epochs) == (128, 2, 10)


def test_a_short_budget_trains_fewer_epochs_or_at_a_smaller_size():
    # 130 s: 110 left - 33 reserve; phase 1's quarter is 19.25 s: 1 view (17 s), not 2
    # (22 s); 60 s for phase 2 = 8 epochs of 6.9 s at 128 px.
    plan = _plan(130, sizes=(128, 96))
    assert (plan.image_size, plan.augment_copies, plan.fine_tune_epochs) == (128, 1, 8)
    assert "only 8 of the default's 10 fine-tuning epochs fit, at 128 px" in plan.reason
    # 95 s: 75 left; at 128 px no view (12 s) and 30 s = 4 epochs (< 6): 96 px, where
    # an epoch is 1.15 x (10 x 0.28125 + 64 / 113.8) = 3.88 s, the reserve
    # 1.5 x (576 / 113.8 + 13) = 27.1 s, phase 1 with 1 view (768 / 113.8 + 5 = 11.75 s,
    # within 12 s): 36.2 s = 9 epochs.
    plan = _plan(95, sizes=(128, 96))
    assert (plan.image_size, plan.augment_copies, plan.fine_tune_epochs) == (96, 1, 9)
    assert "only 9 of the default's 10 fine-tuning epochs fit, at 96 px (fewer than 6 " \
        "at larger sizes)" in plan.reason


def test_too_small_a_budget_is_refused_with_the_measured_minimum():
    # Minimum: 20 spent + phase 1 without views (448 / 64 + 5 = 12) + one padded epoch
    # (6.9) + reserve (33) = 71.9 s.
    with pytest.raises(ConfigError, match=r"--time-limit 40s is too small .* at least "
                                          r"1m12s"):
        _plan(40)


def test_head_only_plan_keeps_the_default_views_when_they_fit():
    # 180 s left - 33 reserve: phase 1 with the default's 2 views (22 s), never more.
    plan = _plan(200, epochs=0)
    assert (plan.augment_copies, plan.fine_tune_epochs) == (2, 0)
    # 48 s: 15 s for phase 1 = 12 + 5 per view -> none; 44 s cannot hold 12 + 33.
    assert _plan(48, spent=0, epochs=0).augment_copies == 0
    with pytest.raises(ConfigError, match="at least 45s"):
        _plan(44, spent=0, epochs=0)


# --- the clock ------------------------------------------------------------------------

def test_ledger_resumes_with_the_time_left(tmp_path):
    clock = FakeClock(1000)
    ledger = Ledger(tmp_path / "budget.json", clock=clock, started=1000)
    clock.now = 1030
    ledger.save(epochs=2)
    # A new invocation (killed after 30 s) starts at 5000 on the clock.
    clock.now = 5000
    again = Ledger(tmp_path / "budget.json", clock=clock, started=5000)
    clock.now = 5010
    assert again.before == 30 and again.spent() == 40
    assert again.deadline(100) == 5070 and again.state == {"epochs": 2}
    cfg = TrainConfig(time_limit=30)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "budget.json").rename(tmp_path / "checkpoints" / "budget.json")
    with pytest.raises(ConfigError, match="already spent its --time-limit"):
        session.open_ledger(tmp_path, cfg, started=0)


# --- one run ------------------------------------------------------------------------

def test_time_limited_run_writes_its_plan_and_spending(tmp_path, monkeypatch):
    import transferkit
    from transferkit.engine import TimeLimit

    clock = FakeClock()
    monkeypatch.setattr(session, "CLOCK", clock)
    step_end = TimeLimit.on_train_batch_end

    def step_takes_a_minute(self, batch, logs=None):
        clock.now += 60
        step_end(self, batch, logs)

    monkeypatch.setattr(TimeLimit, "on_train_batch_end", step_takes_a_minute)
    data = make_color_folder(tmp_path / "data", n_per_class=10, size=48, seed=3)
    # What is checked is the clock's arithmetic, not what is learned: random weights
    # (no doctor either, it needs pretrained features).
    run = transferkit.train(data, tmp_path / "run", image_size=64, unfreeze=1,
                            head_epochs=1, batch_size=32, time_limit="4m",
                            weights="none", calibrate=False, quiet=True)
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    budget = plan["budget"]
    assert budget["limit_seconds"] == 240 and budget["image_size"] == 64
    assert budget["profile"]["image_size"] == 64 and budget["fine_tune_epochs"] == 10
    assert set(budget["spent"]["at_end_of"]) == {"audit", "measure", "phase1", "phase2",
                                                 "evaluate", "calibrate"}
    marks = budget["spent"]["at_end_of"]
    assert list(marks.values()) == sorted(marks.values())
    # One step an epoch (the 21 training images fit one batch): 60 s epochs. Phase 2
    # stopped when the next epoch (69 s with the padding) would have passed its end.
    end = 240 - budget["reserve_seconds"]
    assert end - 69 < marks["phase2"] <= end
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    phase2 = history[history["phase"] == 2]
    assert len(phase2) == budget["spent"]["fine_tune_epochs"] >= 1
    assert phase2["epoch"].tolist() == list(range(1, len(phase2) + 1))
    assert (phase2["seconds"] == 60).all()
    assert run.config.time_limit == 240


def test_cli_refuses_a_bare_number_before_any_work(capsys, tmp_path):
    from transferkit.cli import main

    data = make_color_folder(tmp_path / "data", n_per_class=5, size=32)
    code = main(["train", str(data), "--out", str(tmp_path / "run"), "--time-limit", "20",
                 "--preset", "best"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert err == ("transferkit: error: --time-limit '20' is not a duration: use e.g. 90s, "
                   "20m, 1h or 1h30m (a number and a unit h, m or s)")
    assert not (tmp_path / "run").exists()


def test_a_resumed_run_keeps_its_plan_and_records_the_spending(tmp_path):
    # The first invocation planned and spent 100 s; the second (killed run, same command)
    # starts at 1000 on its clock: no measuring, the old plan, 100 s of 200 left.
    budget = _plan(200)
    ledger_path = tmp_path / "checkpoints" / session.LEDGER_FILE
    clock = FakeClock(0)
    first = Ledger(ledger_path, clock=clock, started=0)
    clock.now = 100
    first.save(plan=budget.to_dict(), profile=vars(_profile()), marks={"audit": 5})
    (tmp_path / "plan.json").write_text(json.dumps({"strategy": "fine-tune"}))
    clock.now = 1000
    again = Ledger(ledger_path, clock=clock, started=1000)
    said = []
    resumed = session.plan_within(again, None, None, TrainConfig(time_limit=200), [128],
                                  {}, {}, tmp_path, said.append)
    assert resumed == budget and said == ["Budget: resuming with 1m40s of 3m20s left"]
    clock.now = 1090
    session.finish(tmp_path, again)
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["strategy"] == "fine-tune" and plan["budget"]["image_size"] == 128
    assert plan["budget"]["spent"] == {"total_seconds": 190.0, "at_end_of": {"audit": 5},
                                       "fine_tune_epochs": 0, "within_limit": True}


def test_candidate_sizes_the_rule_and_below_unless_the_user_chose_one():
    from transferkit.backbones import get_backbone
    from transferkit.plan import Plan

    backbone = get_backbone("mobilenet_v2_0.35")
    plan = Plan("fine-tune", 1.0, 11, 11, 2400, 405, 160, "")
    assert session.candidate_sizes(backbone, plan, fixed_size=False) == [160, 128, 96]
    assert session.candidate_sizes(backbone, plan, fixed_size=True) == [160]
    small = Plan("fine-tune", 1.0, 11, 11, 2400, 405, 96, "")
    assert session.candidate_sizes(backbone, small, fixed_size=False) == [96]
    frozen = Plan("feature-extract", 0.0, 0, 11, 200, 20, 224, "")
    assert session.candidate_sizes(backbone, frozen, fixed_size=False) == [224]
