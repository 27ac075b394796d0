"""A time budget's time left buys ensemble members (issue 25, item 1).

The default run, fitted to the budget, is always member 1: a budget never loses to the
default. When it finishes with time to spare, `spend_time_left` trains further members
on its split and at its image size, into `RUN/members/m2...`:

1. the members of the measured table (`budget/measured.py`) in the order of their
   validation log loss gain per default run of cost, each once, then more seeds of the
   run's backbone, up to `MAX_MEMBERS`; a wider backbone only when its weights are
   available;
2. each if the time left covers what member 1 cost (audit to report, measured) times
   the member's cost, plus the reserve to combine (member 1's own evaluation reserve,
   for every member the ensemble then runs); each member's own time limit is what is
   left less that reserve, so its planner and the engine's time stop keep it within the
   budget. One that does not fit is skipped for the next, which may cost less;
3. then the members are combined (`ensemble.train.combine_runs`), and the ensemble is
   KEPT only if its validation log loss is below member 1's (never the test split);
   then RUN becomes the ensemble and member 1 moves to `RUN/members/m1`. Else RUN stays
   member 1's run and the extra members are deleted.

plan.json's "extra_members" records what was trained, what it cost, and why, and the
table's other rows with the finding that keeps each out.

A command stopped while an extra member trains leaves RUN as member 1's finished run, and
the same command again resumes the members (`unfinished`): `RUN/members/budget.json`
holds the seconds they spent and each decision with its member's options, so finished
members are reused, the stopped one resumes from its own backups with the time it had
left, and the rest are priced as before.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Callable

from transferkit import layout
from transferkit.backbones import get_backbone, is_cached
from transferkit.budget import measured, session
from transferkit.config import TrainConfig
from transferkit.errors import ConfigError
from transferkit.fileio import read_json, write_json
from transferkit.run import Run, load_run, run_state
from transferkit.rundir import changed_options

MAX_MEMBERS = 3  # the served model costs K members: three is where the gain flattens


@dataclasses.dataclass
class Member:
    """An extra member the budget considered: what, its estimated cost, and whether the
    time left paid for it (`trained`), with `why`."""

    backbone: str
    seed: int
    cost_ratio: float
    need_seconds: float
    left_seconds: float
    trained: bool
    why: str


def candidates(config: TrainConfig) -> list[tuple[str, int, float, str]]:
    """The extra members in the order they are bought: `(backbone, seed, cost, why)`,
    cost in runs of member 1."""
    rows = [row for row in measured.members(config.backbone) if not row.member
            or config.weights == "none"
            or config.weights == "imagenet" and is_cached(get_backbone(row.member))]
    seed = next(row for row in rows if not row.member)
    rows += [seed] * (MAX_MEMBERS - 1 - len(rows))
    return [(row.member or config.backbone, config.seed + i, row.cost,
             f"{row.name}: {row.finding}")
            for i, row in enumerate(rows[:MAX_MEMBERS - 1], start=1)]


def price(candidate: tuple[str, int, float, str], first_seconds: float,
          reserve_seconds: float, left: float, ratios: list[float]) -> Member:
    """Whether `left` seconds pay for `candidate` (pure).

    Args:
        candidate: `(backbone, seed, cost, why)`, one of `candidates(config)`.
        first_seconds: What member 1 cost, measured (audit to report).
        reserve_seconds: Member 1's reserve for evaluation, calibration and the report.
        left: Seconds left of the budget.
        ratios: Cost ratios of the members so far (member 1's is 1).

    Returns:
        The member; `trained` tells whether it fits.
    """
    backbone, seed, ratio, why = candidate
    combine = reserve_seconds * (sum(ratios) + ratio)  # the ensemble predicts with all
    need = first_seconds * ratio + combine
    fits = left >= need
    return Member(backbone, seed, ratio, round(need, 1), round(left, 1), fits,
                  why if fits else f"{left:.0f} s left, it needs ~{need:.0f} s (member "
                  f"1's {first_seconds:.0f} s x {ratio:.2f}, {combine:.0f} s to combine)")


def unfinished(out: Path, config: TrainConfig) -> Run | None:
    """The finished default run in `out` of a budget with the same options whose extra
    members were stopped before the ensemble was decided (plan.json has a budget and no
    "extra_members"); None otherwise. `spend_time_left(run, ...)` resumes them."""
    if not _buys_members(config) or run_state(out) != "complete" or \
            not (out / layout.PLAN_FILE).exists():
        return None
    plan = read_json(out / layout.PLAN_FILE)
    if "budget" not in plan or "extra_members" in plan or changed_options(out, config):
        return None
    return load_run(out)


def _buys_members(config: TrainConfig) -> bool:
    return config.time_limit is not None and config.extra_members and \
        config.teacher is None


def spend_time_left(run: Run | None, train_one: Callable[..., Run]) -> Run | None:
    """After a budget's default run: extra members while the time left pays for them,
    then the ensemble if validation prefers it (see the module docstring). A stopped
    call resumes where it stopped.

    Args:
        run: The finished default run (None: a worker other than the chief).
        train_one: `transferkit.training.train` (passed in: no import cycle).

    Returns:
        The run in the same directory: the ensemble, or the default run as it was.
    """
    config = run.config if run is not None else None
    if config is None or not _buys_members(config):
        return run
    budget = run.plan["budget"]
    spent, reserve = budget["spent"]["total_seconds"], budget["reserve_seconds"]
    folder = run.path / layout.MEMBERS_DIR
    ledger = _stage_ledger(folder, config.quiet)

    def left() -> float:
        return budget["limit_seconds"] - spent - ledger.spent()

    decided = [Member(**m) for m in ledger.state.get("members", [])]
    options_of = dict(ledger.state.get("options", {}))
    members, ratios, considered = [run], [1.0], []

    def save(training: str | None = None) -> None:  # after each decision, each member
        ledger.save(members=[dataclasses.asdict(m) for m in considered],
                    options=options_of, training=training)

    for i, candidate in enumerate(candidates(config)):
        # A resumed call replays the decisions made before it stopped.
        member = decided[i] if i < len(decided) else \
            price(candidate, spent, reserve, left(), ratios)
        considered.append(member)
        if not member.trained:  # the next candidate may cost less (a seed, not wider)
            save()
            continue
        path = folder / f"m{len(members) + 1}"
        if path.name not in options_of:
            options = {**config.to_dict(), "backbone": member.backbone,
                       "seed": member.seed, "image_size": run.image_size, "preset": None,
                       "extra_members": False, "time_limit":
                       left() - reserve * (sum(ratios) + member.cost_ratio),
                       "splits_file": str(Path(run.path, layout.SPLITS_FILE).resolve())}
            options.pop("data")
            options_of[path.name] = options
        save(training=path.name)
        try:
            members.append(load_run(path) if run_state(path) == "complete" else
                           train_one(config.data, path, **options_of[path.name]))
        except ConfigError as e:  # its planner found the time too short after all
            member.trained = False
            member.why = f"its own plan refused the time left: {e}"
            shutil.rmtree(path, ignore_errors=True)  # the next one trains there
            del options_of[path.name]
        else:
            ratios.append(member.cost_ratio)
        save()
    record = {"left_out": measured.left_out(), "first_member_seconds": spent,
              "left_seconds": round(left(), 1),
              "members": [dataclasses.asdict(m) for m in considered],
              "first_val_accuracy": run.metrics["val_accuracy"],
              "first_val_log_loss": run.metrics["val_log_loss"]}
    if len(members) == 1:
        shutil.rmtree(folder, ignore_errors=True)
        return _finish(run, record, kept=False, why="no extra member was trained")
    from transferkit.ensemble.train import combine_runs

    staging = folder / "ensemble"
    if not config.quiet:  # combined quietly: its own lines would name the staging folder
        print(f"Budget: combining {len(members)} members (validation accuracy "
              + ", ".join(f"{m.metrics['val_accuracy']:.3f}" for m in members) + ")",
              flush=True)
    ensemble = combine_runs(members, staging, overwrite=True, calibrate=config.calibrate,
                            quiet=True)
    record.update(ensemble_val_accuracy=ensemble.metrics["val_accuracy"],
                  ensemble_val_log_loss=ensemble.metrics["val_log_loss"])
    trained = [described for described in record["members"] if described["trained"]]
    for described, member in zip(trained, members[1:]):
        described.update(val_accuracy=member.metrics["val_accuracy"],
                         val_log_loss=member.metrics["val_log_loss"],
                         train_seconds=member.metrics["train_seconds"])
    # Chosen on the validation log loss, not its accuracy: on ~500 images accuracy's
    # standard error is ~2 points. Measured on flowers5 (0.35 + 0.5): validation accuracy
    # 0.800 -> 0.792 but log loss 0.533 -> 0.491, and the test split agreed with the
    # log loss (0.770 -> 0.778; docs/measurements.md).
    if record["ensemble_val_log_loss"] >= record["first_val_log_loss"]:
        shutil.rmtree(folder)
        return _finish(run, record, kept=False, why="the ensemble's validation log loss "
                       "is not below member 1's")
    ledger.path.unlink()
    _promote(run.path, staging)
    return _finish(load_run(run.path), record, kept=True, why="the ensemble's validation "
                   "log loss is below member 1's")


def _stage_ledger(folder: Path, quiet: bool) -> session.Ledger:
    """The members' ledger in `folder`: seconds spent and decisions so far. Resuming, the
    member stopped mid-training adds its own seconds (its ledger, saved each epoch)."""
    ledger = session.Ledger(folder / session.LEDGER_FILE, clock=session.CLOCK)
    stopped = ledger.state.get("training")
    if stopped:
        ledger.before += _seconds_of(folder / stopped)
    if ledger.state and not quiet:
        print(f"Budget: resuming the extra members in {folder} ("
              f"{ledger.before:.0f} s spent on them)", flush=True)
    return ledger


def _seconds_of(path: Path) -> float:
    """The seconds a member's training spent: its plan.json's when finished, else its
    ledger's, else none (stopped before its first save)."""
    if run_state(path) == "complete":
        plan = read_json(path / layout.PLAN_FILE)
        return float(plan.get("budget", {}).get("spent", {}).get("total_seconds", 0.0))
    ledger = path / layout.CHECKPOINTS_DIR / session.LEDGER_FILE
    return float(read_json(ledger).get("spent_seconds", 0.0)) if ledger.exists() else 0.0


def _promote(root: Path, staging: Path) -> None:
    """Member 1's files into `root/members/m1`, the ensemble's from `staging` into
    `root`: renames, run.json first out and last in (the folder is a complete run
    again only when every file is in place)."""
    first = root / layout.MEMBERS_DIR / "m1"
    first.mkdir()
    (root / layout.STATE_FILE).rename(first / layout.STATE_FILE)
    for item in list(root.iterdir()):
        if item.name != layout.MEMBERS_DIR:
            item.rename(first / item.name)
    for item in list(staging.iterdir()):
        if item.name != layout.STATE_FILE:
            item.rename(root / item.name)
    described = read_json(root / layout.ENSEMBLE_FILE)
    for i, member in enumerate(described["members"]):  # combined where they were
        member["run"] = f"{layout.MEMBERS_DIR}/m{i + 1}"
    write_json(root / layout.ENSEMBLE_FILE, described)
    (staging / layout.STATE_FILE).rename(root / layout.STATE_FILE)
    staging.rmdir()


def _finish(run: Run, record: dict, kept: bool, why: str) -> Run:
    """Writes the record into the run's plan.json ("extra_members") and says it."""
    record.update(kept=kept, why=why)
    plan = read_json(run.path / layout.PLAN_FILE)
    write_json(run.path / layout.PLAN_FILE, {**plan, "extra_members": record})
    if not run.config.quiet:
        trained = [m for m in record["members"] if m["trained"]]
        print(f"Budget: {len(trained)} extra member(s) trained; "
              + ("the ensemble is the run" if kept else "the run is member 1's")
              + f" ({why}): test accuracy {run.metrics['accuracy']:.3f}. Run: {run.path}; "
              f"report: {run.path / layout.REPORT_FILE}", flush=True)
    return run
