"""`train_ensemble`: K members on one split, combined into one run directory.

    RUN/members/m1 ... mK   complete member runs (seeds seed, seed+1, ...; or backbones)
    RUN/                    the ensemble's own run: model.keras (the averaged model),
                            config.json (ensemble, backbones), labels, splits (member 1's,
                            shared by all), metrics of the ensemble on the test split,
                            trust (one temperature, fitted on the average), report

Member 1 splits the data (with `split_seed`, else `seed`); members 2..K reuse its
`splits.csv` (`TrainConfig.splits_file`) and its image size, so every member sees the
same images and the average is of one input. A `time_limit` is shared: each member
gets an equal part of it after a reserve for the ensemble's own evaluation,
calibration and report. A killed ensemble resumes: finished members are reused, an
unfinished one resumes as any run does.
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
from transferkit.errors import ConfigError
from transferkit.evaluate import write_report
from transferkit.features import FeatureKey, FeatureStore
from transferkit.fileio import atomic_path, write_csv, write_json
from transferkit.run import Run, load_run, run_state
from transferkit.rundir import mark_complete, prepare_run_dir

RESERVE_SHARE = 0.1  # of --time-limit, kept for the ensemble's evaluation and trust
SHARED_FILES = (layout.AUDIT_FILE, layout.DATA_ISSUES_FILE, layout.DOCTOR_FILE)


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
    config = dataclasses.replace(config, image_size=runs[0].image_size)
    write_json(out_dir / layout.CONFIG_FILE, config.to_dict())
    return _combine(out_dir, config, runs, say)


def _combine(out_dir: Path, config: TrainConfig, runs: list[Run], say) -> Run:
    """The ensemble's own run directory from its finished members."""
    from transferkit.ensemble.model import build_ensemble, prefix
    from transferkit.ensemble.trust import EnsembleHead
    from transferkit.report import write_run_report
    from transferkit.trust.fit import fit_trust

    start = time.time()
    classes = runs[0].class_names
    for i, run in enumerate(runs[1:], 2):
        if run.class_names != classes:
            raise ConfigError(f"member {i} has classes {run.class_names}, member 1 has "
                              f"{classes}; pass --overwrite to train them again")
    sizes = [run.image_size for run in runs]
    if len(set(sizes)) > 1:  # the trust below reads each member's features at its size
        raise ConfigError(f"the members were trained at different image sizes "
                          f"({', '.join(map(str, sizes))} px); an ensemble needs one: "
                          "train them with the same --image-size")
    members_dir = runs[0].path
    write_json(out_dir / layout.LABELS_FILE, classes)
    for name in (layout.SPLITS_FILE, *SHARED_FILES):
        if (members_dir / name).is_file():
            shutil.copyfile(members_dir / name, out_dir / name)
    splits = runs[0].splits

    say("Ensemble: averaging the members' probabilities")
    model = build_ensemble([run.model for run in runs],
                           name=f"transferkit_ensemble_{len(runs)}")
    _uncalibrate(model, runs)
    # The members' pooled features, side by side: what the ensemble's trust reads.
    columns = [run.features("final") for run in runs]
    names = columns[0][0]

    features = FeatureStore(out_dir / layout.FEATURES_DIR).put(
        FeatureKey("final", config.image_size), names,
        np.concatenate([np.asarray(f) for _, f in columns], axis=1), config.seed)
    test = (splits["split"] == "test").to_numpy()
    head = EnsembleHead(model)
    probabilities = head.probabilities(head.logits(np.asarray(features[test])))
    labels = [classes.index(c) for c in splits.loc[test, "class"]]
    metrics = write_report(out_dir, labels, probabilities, classes,
                           splits.loc[test, "path"].tolist())
    model.trainable = True
    if not config.calibrate:  # calibrating saves the calibrated model
        with atomic_path(out_dir / layout.MODEL_FILE, suffix=".keras") as tmp:
            model.save(tmp)

    history = [run.history.assign(member=i + 1) for i, run in enumerate(runs)
               if run.history is not None]
    if history:
        write_csv(out_dir / layout.HISTORY_FILE, pd.concat(history, ignore_index=True))
    described = [{"member": i + 1, "prefix": prefix(i),
                  "run": _relative(run.path, out_dir), "backbone": run.config.backbone,
                  "seed": run.config.seed, "image_size": run.image_size,
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
    metrics.pop("n_images")
    member_seconds = sum(d["train_seconds"] or 0 for d in described)
    metrics.update({f"n_{k}": int(v) for k, v in splits["split"].value_counts().items()},
                   n_classes=len(classes), strategy="ensemble", unfreeze_blocks=None,
                   members=described,
                   train_seconds=round(member_seconds + time.time() - start, 1))
    write_json(out_dir / layout.METRICS_FILE, metrics)
    run = Run(out_dir, model, classes, config)
    if config.calibrate:
        fit_trust(run, say=say)
    mark_complete(out_dir)
    say(f"Ensemble of {len(runs)}: test accuracy {metrics['accuracy']:.3f}, macro-F1 "
        f"{metrics['macro_f1']:.3f} (members: "
        + ", ".join(f"{d['test_accuracy']:.3f}" for d in described
                    if d["test_accuracy"] is not None) + f"). Run: {out_dir}")
    say(f"Report: {write_run_report(run)}")
    return run


def combine_runs(runs: list[Run], out: str | Path, overwrite: bool = False,
                 calibrate: bool = True, quiet: bool = True) -> Run:
    """An ensemble run directory from finished runs that share one split.

    What `train_ensemble` does once its members are trained, for runs trained
    separately (e.g. `compare`'s, or runs with `splits_file` of a first run). The
    members stay where they are; `out` records their paths in `ensemble.json`.

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
    out_dir = Path(out)
    prepare_run_dir(out_dir, config, overwrite)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    return _combine(out_dir, config, runs, say)


def _uncalibrate(model, runs: list[Run]) -> None:
    """Puts each member's head before its own calibration back (the ensemble fits one
    temperature for all members, on their average); the members' models are untouched."""
    from transferkit.ensemble.model import prefix

    for i, run in enumerate(runs):
        trust = run.trust
        if trust is not None and trust.raw_head:
            model.get_layer(f"{prefix(i)}predictions").set_weights(
                [trust.raw_head["kernel"], trust.raw_head["bias"]])


def _relative(path: Path, root: Path) -> str:
    """`path` relative to `root` when inside it (members/m1), else absolute."""
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(Path(path).resolve())
