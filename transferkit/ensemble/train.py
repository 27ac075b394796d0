"""`train_ensemble`: K members on one split, combined into one run directory.

    RUN/members/m1 ... mK   complete member runs (seeds seed, seed+1, ...; or backbones)
    RUN/                    the ensemble's own run: model.keras (the averaged model),
                            config.json, labels, splits (member 1's, shared by all),
                            metrics, trust (one temperature, fitted on the average), report

Members 2..K reuse member 1's `splits.csv` (`TrainConfig.splits_file`) and image size, so
the average is of one input. A `time_limit` is shared: each member gets an equal part of
it after a reserve for the ensemble's own end. A killed ensemble resumes: finished members
are reused, an unfinished one resumes as any run does.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from transferkit import layout
from transferkit.config import TrainConfig
from transferkit.ensemble.model import build_ensemble, prefix
from transferkit.ensemble.trust import EnsembleHead
from transferkit.errors import ConfigError
from transferkit.features import FeatureKey, FeatureStore
from transferkit.fileio import write_csv, write_json
from transferkit.run import Run, load_run, run_state
from transferkit.rundir import finish_run, prepare_run_dir

RESERVE_SHARE = 0.1  # of --time-limit, kept for the ensemble's evaluation and trust
SHARED_FILES = (layout.SPLITS_FILE, layout.AUDIT_FILE, layout.DATA_ISSUES_FILE,
                layout.DOCTOR_FILE)


def member_options(config: TrainConfig, i: int, image_size: int | None,
                   splits_file: str | None) -> dict:
    """The `train` options of member `i` (0-based): its seed or backbone, the shared
    split and size, its share of the time limit."""
    options = config.to_dict()
    options.pop("data")
    share = None if config.time_limit is None else \
        config.time_limit * (1 - RESERVE_SHARE) / config.ensemble
    options.update(ensemble=1, backbones=None, seed=config.seed + i,
                   split_seed=config.seed if config.split_seed is None else
                   config.split_seed,
                   backbone=config.backbones[i] if config.backbones else config.backbone,
                   image_size=image_size, splits_file=splits_file, time_limit=share,
                   extra_members=False)  # a member is one model
    return options


def train_ensemble(data: str | Path, out: str | Path, overwrite: bool = False,
                   *, train_one: Callable[..., Run], **options) -> Run:
    """Trains `ensemble` members and writes the ensemble's run directory `out`.

    Args:
        data, out, overwrite: As for `transferkit.train`; the members go to
            `out/members/m1..mK`.
        train_one: What trains one member (`transferkit.training.train`, which passes
            itself: this module does not import training, which imports it).
        **options: Fields of `TrainConfig`; `ensemble` (K >= 2) and/or `backbones`.

    Returns:
        The finished ensemble `Run` (its model averages the members' probabilities).
    """
    config = TrainConfig.from_options(data, options)
    if config.ensemble < 2:
        raise ConfigError(f"--ensemble {config.ensemble}: an ensemble has at least 2 "
                          "members (leave --ensemble out for one classifier)")
    out_dir = Path(out)
    say = (lambda *a: None) if config.quiet else (lambda *a: print(*a, flush=True))
    if prepare_run_dir(out_dir, config, overwrite):
        say(f"Resuming the unfinished ensemble in {out_dir}")
    runs: list[Run] = []
    # Absolute: the same option when the command is resumed from another folder.
    shared = str((out_dir / layout.MEMBERS_DIR / "m1" / layout.SPLITS_FILE).resolve())
    for i in range(config.ensemble):
        path = out_dir / layout.MEMBERS_DIR / f"m{i + 1}"
        opts = member_options(config, i, runs[0].image_size if runs else
                              config.image_size, shared if runs else None)
        done = run_state(path) == "complete"
        say(f"Member {i + 1}/{config.ensemble}: " + (
            f"reusing the finished run {path}" if done else
            f"{opts['backbone']}, seed {opts['seed']}" + (
                f", {opts['time_limit']:.0f} s" if opts["time_limit"] else "")))
        runs.append(load_run(path) if done else train_one(config.data, path, **opts))
    if config.image_size != runs[0].image_size:  # prepare_run_dir wrote it as asked
        config = dataclasses.replace(config, image_size=runs[0].image_size)
        write_json(out_dir / layout.CONFIG_FILE, config.to_dict())
    return _combine(out_dir, config, runs, say)


def combine_runs(runs: list[Run], out: str | Path, overwrite: bool = False,
                 calibrate: bool = True, quiet: bool = True) -> Run:
    """An ensemble run directory from finished runs that share one split (e.g.
    `compare`'s, or runs with `splits_file` of a first run); the members stay where they
    are, `out/ensemble.json` records their paths.

    Args:
        runs: Two or more finished runs with the same classes, split and image size.
        out: The ensemble's run directory.
        overwrite: Replace a run in `out`.
        calibrate: Fit one temperature on the average (and the trust thresholds).
        quiet: No progress lines.

    Returns:
        The ensemble `Run`; ConfigError for runs that do not fit together.
    """
    runs = list(runs)
    if len(runs) < 2:
        raise ConfigError(f"an ensemble needs at least 2 runs, got {len(runs)}")
    first = runs[0].splits[["path", "split"]]
    for i, run in enumerate(runs[1:], 2):
        if not run.splits[["path", "split"]].equals(first):
            raise ConfigError(f"run {i} ({run.path}) has another split than run 1 "
                              f"({runs[0].path}); train it with splits_file="
                              f"{runs[0].path / layout.SPLITS_FILE}")
    backbones = [run.config.backbone for run in runs]
    config = dataclasses.replace(
        runs[0].config, ensemble=len(runs), calibrate=calibrate, quiet=quiet,
        backbones=backbones if len(set(backbones)) > 1 else None, splits_file=None)
    prepare_run_dir(Path(out), config, overwrite)
    return _combine(Path(out), config, runs, (lambda *a: None) if quiet else
                    (lambda *a: print(*a, flush=True)))


def _combine(out_dir: Path, config: TrainConfig, runs: list[Run], say) -> Run:
    """The ensemble's own run directory from its finished members."""
    start, classes = time.time(), runs[0].class_names
    for i, run in enumerate(runs[1:], 2):
        if run.class_names != classes:
            raise ConfigError(f"member {i} has classes {run.class_names}, member 1 has "
                              f"{classes}; pass --overwrite to train them again")
    sizes = [run.image_size for run in runs]
    if len(set(sizes)) > 1:  # the trust below reads each member's features at its size
        raise ConfigError(f"the members were trained at different image sizes "
                          f"({', '.join(map(str, sizes))} px); an ensemble needs one: "
                          "train them with the same --image-size")
    write_json(out_dir / layout.LABELS_FILE, classes)
    for name in SHARED_FILES:
        if (runs[0].path / name).is_file():
            shutil.copyfile(runs[0].path / name, out_dir / name)
    splits = runs[0].splits
    say("Ensemble: averaging the members' probabilities")
    model = build_ensemble([run.model for run in runs],
                           name=f"transferkit_ensemble_{len(runs)}")
    for i, run in enumerate(runs):  # each member's head before its own calibration: one
        trust = run.trust           # temperature is fitted for all, on their average
        if trust is not None and trust.raw_head:
            model.get_layer(f"{prefix(i)}predictions").set_weights(
                [trust.raw_head["kernel"], trust.raw_head["bias"]])
    # The members' pooled features, side by side: what the ensemble's trust reads.
    columns = [run.features("final") for run in runs]
    features = np.asarray(FeatureStore(out_dir / layout.FEATURES_DIR).put(
        FeatureKey("final", config.image_size), columns[0][0],
        np.concatenate([np.asarray(f) for _, f in columns], axis=1), config.seed))
    head = EnsembleHead(model)
    probabilities = {s: head.probabilities(head.logits(features[(splits["split"] == s)
                                                                .to_numpy()]))
                     for s in ("test", "val")}
    history = [run.history.assign(member=i + 1) for i, run in enumerate(runs)
               if run.history is not None]
    if history:
        write_csv(out_dir / layout.HISTORY_FILE, pd.concat(history, ignore_index=True))
    described = [{"member": i + 1, "prefix": prefix(i), "run": _relative(run.path, out_dir),
                  "backbone": run.config.backbone, "seed": run.config.seed,
                  "image_size": run.image_size,
                  **{f"test_{k}": (run.metrics or {}).get(k) for k in ("accuracy",
                                                                       "macro_f1")},
                  "train_seconds": (run.metrics or {}).get("train_seconds")}
                 for i, run in enumerate(runs)]
    write_json(out_dir / layout.PLAN_FILE, {
        "strategy": "ensemble", "image_size": config.image_size, "unfreeze_blocks": None,
        "reason": f"the mean of {len(runs)} members' probabilities (members/m1..m"
                  f"{len(runs)}, each with its own plan.json)",
        "members": [run.plan for run in runs]})
    write_json(out_dir / layout.ENSEMBLE_FILE, {
        "members": described, "combine": "mean of the members' probabilities",
        "calibration": "one temperature dividing every member's logits, fitted on the "
                       "NLL of the averaged probabilities (validation split)"})
    tested = [f"{d['test_accuracy']:.3f}" for d in described if d["test_accuracy"] is not None]
    return finish_run(out_dir, model, config, classes,
                      start - sum(d["train_seconds"] or 0 for d in described), say,
                      probabilities=probabilities,
                      summary=f"Ensemble of {len(runs)} (members' test accuracy "
                              f"{', '.join(tested)}): ", strategy="ensemble",
                      unfreeze_blocks=None, members=described)


def _relative(path: Path, root: Path) -> str:
    """`path` relative to `root` when inside it (members/m1), else absolute."""
    path, root = Path(path).resolve(), root.resolve()
    return str(path.relative_to(root) if path.is_relative_to(root) else path)
