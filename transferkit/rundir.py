"""Writing the run directory: a new run or a resumed one, and its end.

Training (one classifier or an ensemble) calls `prepare_run_dir` first and `finish_run`
last; `transferkit.run` reads what they write (`run_state`, `load_run`).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import pandas as pd

from transferkit import layout
from transferkit.config import TrainConfig, absolute_data
from transferkit.errors import RunError
from transferkit.evaluate import classification_metrics, split_probabilities, \
    write_report
from transferkit.features import FeatureStore
from transferkit.fileio import atomic_path, read_json, readable_error, write_json
from transferkit.report import write_run_report
from transferkit.run import Run, run_state
from transferkit.trust.fit import fit_trust


def prepare_run_dir(run_dir: Path, config: TrainConfig, overwrite: bool) -> bool:
    """Makes `run_dir` ready for training; decides between a new run and a resume.

    Args:
        run_dir: The output folder.
        config: The resolved options of this invocation.
        overwrite: Replace a finished or unfinished run.

    Returns:
        True when resuming an unfinished run with the same options.

    Raises:
        RunError: A finished run (without `overwrite`), an unfinished run with other
            options, a non-empty folder that is no run directory, or an unwritable path.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--out {run_dir} is a file; choose a folder")
    state = run_state(run_dir)
    try:
        if state is not None and overwrite:
            shutil.rmtree(run_dir)
            state = None
        elif state == "complete":
            raise RunError(f"{run_dir} holds a finished run; pass --overwrite to replace it, "
                           "or choose another --out")
        elif state is None and run_dir.is_dir() and any(run_dir.iterdir()):
            raise RunError(f"{run_dir} is not empty and is not a transferkit run directory; "
                           "choose a new or empty --out folder")
    except OSError as e:  # Unreadable folder, or a link where a folder should be.
        raise RunError(f"cannot use {run_dir} as the run directory: {e.strerror or e}; "
                       "choose another --out folder") from e
    # run.json is written before config.json, so a run marked "running" without a
    # config.json was stopped before doing any work: it starts again from scratch.
    resuming = state == "running" and (run_dir / layout.CONFIG_FILE).exists()
    if resuming:
        changed = changed_options(run_dir, config)
        if changed:
            raise RunError(f"{run_dir} holds an unfinished run with other options "
                           f"({'; '.join(changed)}); run the same command as before to "
                           "resume it, or pass --overwrite to start again")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise readable_error(e, run_dir) from e
    write_json(run_dir / layout.STATE_FILE, {"state": "running"})
    write_json(run_dir / layout.CONFIG_FILE, config.to_dict())
    return resuming


def finish_run(out_dir: Path, model: keras.Model, config: TrainConfig, classes: list[str],
               started: float, say: Callable[..., None],
               probabilities: dict[str, np.ndarray] | None = None,
               mark: Callable[[str], None] = lambda step: None, summary: str = "",
               **facts) -> Run:
    """Writes a trained run's end: the test report, metrics.json (with the validation
    figures that choices are made on), model.keras, the trust, the completion mark and
    report.html; then deletes the phases' backups and augmented features.

    Args:
        out_dir: The run directory (its `splits.csv` written).
        model, config, classes: The trained classifier (or ensemble), the final options,
            the class names in output order.
        started: When training started (`time.time()`), for `train_seconds`.
        say: Progress printer.
        probabilities: The model's on the `"test"` and `"val"` rows of `splits.csv`
            (None: predicted here, from the images).
        mark: Called with `"evaluate"`, then `"calibrate"` (the time budget's ledger).
        summary: Starts the last progress line (e.g. the ensemble's members).
        **facts: More fields of metrics.json (the plan's strategy, ...).

    Returns:
        The finished run.
    """
    run = Run(out_dir, model, classes, config)
    splits = run.splits
    if probabilities is None:
        probabilities = {s: split_probabilities(run, s) for s in ("test", "val")}
    part = {s: splits[splits["split"] == s] for s in ("test", "val")}
    labels = {s: [classes.index(c) for c in rows["class"]] for s, rows in part.items()}
    metrics = write_report(out_dir, labels["test"], probabilities["test"], classes,
                           part["test"]["path"].tolist())
    val = classification_metrics(labels["val"], probabilities["val"], classes)
    metrics.pop("n_images")
    metrics.update(val_accuracy=val["accuracy"], val_macro_f1=val["macro_f1"],
                   val_log_loss=val["log_loss"],
                   **{f"n_{k}": int(v) for k, v in splits["split"].value_counts().items()},
                   n_classes=len(classes), **facts,
                   train_seconds=round(time.time() - started, 1))
    model.trainable = True  # saved as fully trainable; BatchNorm stays in inference mode
    if not config.calibrate:  # calibrating saves the calibrated model
        with atomic_path(out_dir / layout.MODEL_FILE, suffix=".keras") as tmp:
            model.save(tmp)
    write_json(out_dir / layout.METRICS_FILE, metrics)
    mark("evaluate")
    if config.calibrate:  # before the mark: a complete run is a calibrated one
        fit_trust(run, say=say)
    mark("calibrate")
    # Only now: a run killed while calibrating resumes from its finished phases.
    shutil.rmtree(out_dir / layout.CHECKPOINTS_DIR, ignore_errors=True)
    FeatureStore(out_dir / layout.FEATURES_DIR).drop_augmented()
    write_json(out_dir / layout.STATE_FILE, {"state": "complete"})  # last: all written
    say(f"{summary}Test accuracy {metrics['accuracy']:.3f}, macro-F1 "
        f"{metrics['macro_f1']:.3f} on {metrics.get('n_test', 0)} images; "
        f"{metrics['train_seconds']:.0f} s. Run: {out_dir}")
    say(f"Report: {write_run_report(run)}")
    return run


def changed_options(run_dir: Path, config: TrainConfig) -> list[str]:
    """The options that change the model and differ between `config` and the run's
    config.json, each as `"name: before, now"` (empty: the same run).

    Raises:
        RunError: config.json cannot be read.
    """
    try:
        saved = read_json(run_dir / layout.CONFIG_FILE)
        previous = TrainConfig.from_dict(saved)
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise RunError(f"{run_dir} holds a run whose config.json cannot be read; "
                       "pass --overwrite to start again") from e
    ours, theirs = _comparable(config), _comparable(previous)
    if config.image_size is None:  # "auto" matches the size the plan chose before
        theirs["image_size"] = None
    # A run made before paths were stored absolute meant its folder from here too.
    theirs["data"] = absolute_data(theirs["data"])
    # An option this run's version did not have yet cannot differ from it.
    return [f"{k}: {theirs.get(k)!r} before, {v!r} now" for k, v in ours.items()
            if k in saved and theirs.get(k) != v]


def _comparable(config: TrainConfig) -> dict[str, Any]:
    values = config.to_dict()
    for key in ("quiet", "workers", "calibrate", "packages"):  # do not change the model
        values.pop(key)
    return values
