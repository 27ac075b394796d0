"""A budget's time left buys ensemble members (`transferkit.budget.members`)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from transferkit import layout
from transferkit.budget import measured, members, session
from transferkit.config import TrainConfig

WIDTH_RATIO = (0.5 / 0.35) ** 2  # the pinned table's cost of the 0.5 (width², not measured)


@pytest.fixture(autouse=True)
def wider_first(monkeypatch):
    """A table that buys the 0.5 first, then seeds: the tests' prices do not depend on
    the figures measured."""
    monkeypatch.setattr(measured, "TABLE", (
        measured.Ingredient("wide", "", member="mobilenet_v2_0.5", log_loss_gain=0.08,
                            cost=WIDTH_RATIO),
        measured.Ingredient("seed", "", member="", log_loss_gain=0.03),
        measured.Ingredient("flips", "no gain")))


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    """The budget's clock, moved by hand (`clock.now += seconds`)."""
    fake = FakeClock()
    monkeypatch.setattr(session, "CLOCK", fake)
    return fake


def test_members_are_bought_by_measured_gain_per_cost_then_seeds(monkeypatch):
    config = TrainConfig(backbone="mobilenet_v2_0.35", weights="none", seed=7)
    wide = measured.Ingredient("wide", "", member="mobilenet_v2_0.5", log_loss_gain=0.04,
                               cost=2.0)
    seed = measured.Ingredient("seed", "", member="", log_loss_gain=0.03)
    other = measured.Ingredient("flips", "no gain")
    monkeypatch.setattr(measured, "TABLE", (wide, seed, other))
    # 0.03 per run for a seed beats 0.02 for the 0.5: the seed first; the third member
    # is the 0.5 (MAX_MEMBERS 3), at its cost.
    assert [c[:3] for c in members.candidates(config)] == [("mobilenet_v2_0.35", 8, 1.0),
                                                           ("mobilenet_v2_0.5", 9, 2.0)]
    monkeypatch.setattr(measured, "TABLE", (dataclasses.replace(wide, log_loss_gain=0.08),
                                            seed, other))
    assert [c[:2] for c in members.candidates(config)] == [("mobilenet_v2_0.5", 8),
                                                           ("mobilenet_v2_0.35", 9)]
    # Without the 0.5's weights (a weights file for 0.35 only), or for another backbone
    # than the table's: seeds only.
    own_file = dataclasses.replace(config, weights="/some/backbone.h5")
    assert [c[:2] for c in members.candidates(own_file)] == [("mobilenet_v2_0.35", 8),
                                                             ("mobilenet_v2_0.35", 9)]
    resnet = dataclasses.replace(config, backbone="resnet50")
    assert [c[:2] for c in members.candidates(resnet)] == [("resnet50", 8), ("resnet50", 9)]
    assert measured.left_out() == [{"ingredient": "flips", "finding": "no gain"}]


def test_too_little_time_left_trains_no_member():
    config = TrainConfig(backbone="mobilenet_v2_0.35", weights="none")
    # Member 1 cost 100 s with a 5 s reserve: the 0.5 member needs 100 x 2.04 and the
    # reserve for both members, 5 x 3.04: 219.3 s.
    need = 100 * WIDTH_RATIO + 5 * (1 + WIDTH_RATIO)
    wider, seed = members.candidates(config)  # two extra members at most (MAX_MEMBERS 3)
    short = members.price(wider, 100, 5, need - 1, [1.0])
    assert not short.trained and short.need_seconds == pytest.approx(need, abs=0.1)
    assert members.price(wider, 100, 5, need + 1, [1.0]).trained
    # A seed after the 0.5: 100 s and the reserve for three members, 5 x 4.04.
    after = members.price(seed, 100, 5, 121, [1.0, WIDTH_RATIO])
    assert after.trained and after.need_seconds == pytest.approx(120.2, abs=0.1)



def _budget_run(tiny_run, tmp_path, limit, spent=100.0, val=None):
    """A copy of tiny_run as a budget's default run: plan.json's budget says it cost
    `spent` of `limit` seconds (5 s reserve); `val` overrides its validation log loss."""
    from transferkit.run import Run

    path = tmp_path / "run"
    shutil.copytree(tiny_run.path, path)
    plan = json.loads((path / layout.PLAN_FILE).read_text())
    plan["budget"] = {"limit_seconds": limit, "reserve_seconds": 5.0,
                      "spent": {"total_seconds": spent}}
    (path / layout.PLAN_FILE).write_text(json.dumps(plan))
    if val is not None:
        metrics = json.loads((path / layout.METRICS_FILE).read_text())
        (path / layout.METRICS_FILE).write_text(json.dumps({**metrics, "val_log_loss": val}))
    config = dataclasses.replace(tiny_run.config, time_limit=limit, quiet=True,
                                 calibrate=False)  # the combined ensemble: no trust
    (path / layout.CONFIG_FILE).write_text(json.dumps(config.to_dict()))
    return Run(path, tiny_run.model, tiny_run.class_names, config)


def _fake_training(tiny_run, clock, seconds):
    """A member's training: a copy of tiny_run (same split and size), `seconds` long."""
    from transferkit.run import load_run

    asked = []

    def train_one(data, path, **options):
        asked.append(options)
        clock.now += seconds
        shutil.copytree(tiny_run.path, path)
        return load_run(path)

    return train_one, asked


def test_a_short_budget_keeps_the_default_run(tmp_path, tiny_run, clock):
    # 100 s left: neither the 0.5 (219.3 s) nor a seed (100 + 5 x 2 = 110 s) fits.
    run = _budget_run(tiny_run, tmp_path, limit=200)
    train_one, asked = _fake_training(tiny_run, clock, 200)
    assert members.spend_time_left(run, train_one) is run and asked == []
    record = json.loads((run.path / layout.PLAN_FILE).read_text())["extra_members"]
    assert not record["kept"] and [m["trained"] for m in record["members"]] == [False, False]
    assert record["left_out"] == [{"ingredient": "flips", "finding": "no gain"}]
    assert not (run.path / layout.MEMBERS_DIR).exists()


def test_a_member_too_dear_is_skipped_for_a_cheaper_one(tmp_path, tiny_run, clock):
    # 200 s left: not the 0.5 (219.3 s), but a seed of 0.35 (110 s).
    run = _budget_run(tiny_run, tmp_path, limit=300)
    train_one, asked = _fake_training(tiny_run, clock, 100)
    members.spend_time_left(run, train_one)
    assert [(o["backbone"], o["seed"]) for o in asked] == [("mobilenet_v2_0.35",
                                                            run.config.seed + 2)]
    assert asked[0]["time_limit"] == pytest.approx(200 - 5 * 2)
    record = json.loads((run.path / layout.PLAN_FILE).read_text())["extra_members"]
    assert [m["trained"] for m in record["members"]] == [False, True]
    # The trained member's figures are on its own entry, not the skipped one's.
    assert "val_accuracy" not in record["members"][0]
    assert record["members"][1]["val_accuracy"] == tiny_run.metrics["val_accuracy"]


@pytest.mark.parametrize("first_val, kept", [(99.0, True), (None, False)])
def test_a_long_budget_trains_a_member_kept_only_when_validation_says_so(
        tmp_path, tiny_run, clock, first_val, kept):
    from transferkit.model import members as ensemble_members
    from transferkit.run import load_run

    # 300 s left pay for the 0.5 member (219 s); 100 s after it do not pay for a seed
    # (100 s + 5 s x 4.04 to combine three).
    run = _budget_run(tiny_run, tmp_path, limit=400, val=first_val)
    train_one, asked = _fake_training(tiny_run, clock, 200)
    result = members.spend_time_left(run, train_one)
    assert len(asked) == 1
    assert (asked[0]["backbone"], asked[0]["image_size"], asked[0]["extra_members"]) == \
        ("mobilenet_v2_0.5", 96, False)
    assert asked[0]["splits_file"] == str((run.path / layout.SPLITS_FILE).resolve())
    assert asked[0]["time_limit"] == pytest.approx(300 - 5 * (1 + WIDTH_RATIO))
    record = json.loads((result.path / layout.PLAN_FILE).read_text())["extra_members"]
    assert [m["trained"] for m in record["members"]] == [True, False]
    # Two copies of one run: the ensemble's validation log loss is the member's own. It
    # is below a recorded 99 (kept), and not below itself (the default run stays).
    assert record["ensemble_val_log_loss"] == pytest.approx(tiny_run.metrics["val_log_loss"],
                                                            rel=1e-5)
    assert record["kept"] is kept
    loaded = load_run(run.path)
    if kept:
        assert len(ensemble_members(loaded.model)) == 2
        assert load_run(run.path / layout.MEMBERS_DIR / "m1").metrics["val_log_loss"] == 99
        described = json.loads((run.path / layout.ENSEMBLE_FILE).read_text())
        assert [m["run"] for m in described["members"]] == ["members/m1", "members/m2"]
    else:
        assert not ensemble_members(loaded.model)
        assert not (run.path / layout.MEMBERS_DIR).exists()


def test_a_stopped_member_stage_resumes_where_it_stopped(tmp_path, tiny_run, clock):
    from transferkit.run import load_run

    # 600 s left pay for the 0.5 (219.3 s), then for a seed (120.2 s).
    run = _budget_run(tiny_run, tmp_path, limit=700)
    train_one, asked = _fake_training(tiny_run, clock, 200)

    def stopped_in_the_seed(data, path, **options):
        if len(asked) == 0:
            return train_one(data, path, **options)
        asked.append(options)  # the seed: 50 s into its training, Ctrl-C
        clock.now += 50
        shutil.copytree(tiny_run.path, path)
        (path / layout.STATE_FILE).write_text(json.dumps({"state": "running"}))
        session.Ledger(path / layout.CHECKPOINTS_DIR / session.LEDGER_FILE,
                       clock=clock, started=clock.now - 50).save()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        members.spend_time_left(run, stopped_in_the_seed)
    assert members.unfinished(run.path, dataclasses.replace(run.config, seed=99)) is None
    stopped = members.unfinished(run.path, run.config)
    assert stopped.path == run.path
    clock.now += 1000  # stopped for a while: not the budget's time

    resumed = []

    def resume(data, path, **options):
        resumed.append((path.name, options))
        clock.now += 60
        shutil.rmtree(path)
        shutil.copytree(tiny_run.path, path)
        return load_run(path)

    members.spend_time_left(stopped, resume)
    # The finished 0.5 is reused; the seed resumes with the options it started with
    # (the same time limit: its own backups and ledger match).
    assert resumed == [("m3", asked[1])]
    record = json.loads((run.path / layout.PLAN_FILE).read_text())["extra_members"]
    assert [m["trained"] for m in record["members"]] == [True, True]
    # 200 s (the 0.5) + 50 s (the seed before the stop) + 60 s (after): 290 s left.
    assert record["left_seconds"] == pytest.approx(700 - 100 - 310)
    assert members.unfinished(run.path, run.config) is None  # decided: a finished run


def test_a_member_its_own_plan_refuses_leaves_its_folder_to_the_next(tmp_path, tiny_run,
                                                                   clock):
    from transferkit.errors import ConfigError

    run = _budget_run(tiny_run, tmp_path, limit=700)  # both members priced as fitting
    train_one, asked = _fake_training(tiny_run, clock, 100)

    def refuses_the_wide_one(data, path, **options):
        if options["backbone"] == "mobilenet_v2_0.5":
            path.mkdir(parents=True)  # it had started writing
            raise ConfigError("--time-limit 1m is too small")
        return train_one(data, path, **options)

    members.spend_time_left(run, refuses_the_wide_one)
    assert [o["backbone"] for o in asked] == ["mobilenet_v2_0.35"]
    record = json.loads((run.path / layout.PLAN_FILE).read_text())["extra_members"]
    assert [m["trained"] for m in record["members"]] == [False, True]
    assert record["members"][0]["why"] == \
        "its own plan refused the time left: --time-limit 1m is too small"
    assert record["members"][1]["val_accuracy"] == tiny_run.metrics["val_accuracy"]
