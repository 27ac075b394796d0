"""Training: a folder of images → a finished run directory.

    audit (data/scan.py) → doctor (doctor/) → split (data/splits.py) → classifier (model.py) → plan (plan.py)
    → phase 1: the head on stored features (features.py)
    → phase 2: fine-tune the planned top blocks, end to end with augmentation
    → evaluate on the test split (evaluate.py) → model.keras, metrics.json
    → calibrate: temperature, "not sure", unknown score (trust/) → run.json
    → report.html (report/)

Every step writes its files atomically and a killed run resumes where it stopped: the
audit and split are reused, stored features are reloaded, phase 1 is skipped once its
weights are saved, and either phase continues from its last finished epoch (the
engine's backup, `transferkit.engine`).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from transferkit import layout
from transferkit.accelerator import precision
from transferkit.backbones import get_backbone, load_pretrained
from transferkit.budget import session as budget
from transferkit.budget.members import spend_time_left
from transferkit.engine.phase import Recipe, TimeLimit, restore, run_phase
from transferkit.engine.recipes import HEAD_BATCH, class_weight, head_model, training_loss
from transferkit.config import TrainConfig
from transferkit.data.pipeline import image_dataset
from transferkit.data.scan import audit_report, scan_folder, summarize_classes, \
    write_audit_csv
from transferkit.data.splits import check_unchanged, make_splits
from transferkit.data.tfds import data_folder
from transferkit.distill import split_targets, train_with_student, with_teacher
from transferkit.distribute import Distribution, make_distribution
from transferkit.doctor.training_step import doctor_before_split
from transferkit.errors import ConfigError, DataError
from transferkit.evaluate import split_metrics, write_report
from transferkit.features import FeatureKey, FeatureStore, feature_extractor
from transferkit.fileio import atomic_path, write_csv, write_json
from transferkit.model import backbone_blocks, build_classifier, rebuild_at_size, \
    set_trainable_blocks
from transferkit.plan import make_plan, with_blocks
from transferkit.report import write_run_report
from transferkit.run import Run
from transferkit.rundir import mark_complete, prepare_run_dir
from transferkit.trust.fit import fit_trust

PHASE1, PHASE2 = "phase1.npz", "phase2.npz"  # the phases' backups, in checkpoints/


def train(data: str | Path, out: str | Path, overwrite: bool = False,
          **options) -> Run | None:
    """Trains a classifier on a folder with one subfolder per class (or `tfds:NAME`).

    Args:
        data: The data folder, or `tfds:NAME`.
        out: The run directory to write (see `transferkit.layout`).
        overwrite: Replace a finished (or unfinished) run in `out`.
        **options: Any field of `TrainConfig` (e.g. `backbone="mobilenet_v2_0.35"`).

    Returns:
        The finished `Run`; None on the workers of a multi-worker run other than the
        chief (`--distribute multi-worker`: only the chief writes the run).

    Raises:
        TransferkitError: Bad data, options or output folder; the message says what to do.
    """
    if options.get("distill"):  # the ensemble, then its student (transferkit.distill)
        return train_with_student(data, out, overwrite, train_one=train, **options)
    if options.get("ensemble", 1) != 1 or options.get("backbones"):
        from transferkit.ensemble.train import train_ensemble  # K members, one run

        return train_ensemble(data, out, overwrite, train_one=train, **options)
    start = time.time()
    config = with_teacher(TrainConfig.from_options(data, options))
    # First: a multi-worker strategy must set up TensorFlow before any other op runs.
    # A time budget is planned for one device: `auto` then means the default strategy.
    dist = make_distribution("none" if config.time_limit and config.distribute == "auto"
                             else config.distribute)
    # Other workers than the chief write to a private folder, removed at the end; every
    # model is built in the precision's dtype; finite datasets end (Keras warns: noise).
    with precision(config.mixed_precision == "on"), warnings.catch_warnings(), \
            dist.writer_dir(Path(out)) as out_dir:
        warnings.filterwarnings("ignore", message=".*ran out of data.*")
        run = _train_in(out_dir, config, overwrite, dist, start)
    return spend_time_left(run, train)  # a budget's time left: ensemble members


def _train_in(out_dir: Path, config: TrainConfig, overwrite: bool, dist: Distribution,
              start: float) -> Run | None:
    keras.utils.set_random_seed(config.seed)
    backbone = get_backbone(config.backbone)
    # Weights first: a missing weights file is reported before a long audit, not after.
    pretrained = None if config.weights == "none" else \
        load_pretrained(backbone, config.weights)
    source = data_folder(config.data)
    resuming = prepare_run_dir(out_dir, config, overwrite)
    say = (lambda *a: None) if config.quiet else (lambda *a: print(*a, flush=True))
    verbose = 0 if config.quiet else (1 if sys.stdout.isatty() else 2)
    if resuming:
        say(f"Resuming the unfinished run in {out_dir}")
    ledger = budget.open_ledger(out_dir, config, start)  # None without --time-limit
    if ledger and dist.replicas > 1:
        raise ConfigError("--time-limit and --preset train on one device for now; drop "
                          f"them or use --distribute none ({dist.replicas} replicas here)")

    # 1. Audit and split.
    index = scan_folder(source, workers=config.workers, progress=not config.quiet)
    write_audit_csv(index, out_dir / layout.AUDIT_FILE)
    say(audit_report(index))
    classes, notices = summarize_classes(index, config.min_per_class)
    for notice in notices:
        say(f"warning: {notice}")
    write_json(out_dir / layout.LABELS_FILE, classes)
    groups, excluded = doctor_before_split(out_dir, source, index, classes, config,
                                           resuming, say, verbose)
    splits = _splits(out_dir, index[~index["path"].isin(excluded)], classes, config,
                     resuming, groups)
    paths = {name: [str(source / p) for p in part["path"]]
             for name, part in splits.groupby("split")}
    labels = {name: [classes.index(c) for c in part["class"]]
              for name, part in splits.groupby("split")}
    targets = split_targets(out_dir, config, paths, labels, classes, say)  # soft: a student
    budget.mark(ledger, "audit")

    # 2. Plan, model.
    train_rows = index.set_index("path").loc[splits.loc[splits["split"] == "train", "path"]]
    median_side = float(np.median(np.minimum(train_rows["width"], train_rows["height"])))
    train_counts = train_rows["class"].value_counts().to_dict()
    plan = make_plan(train_counts, config, backbone, median_side)
    size_given = config.image_size is not None  # --image-size: the budget keeps it
    config = dataclasses.replace(config, image_size=plan.image_size)
    with dist.scope():
        model = build_classifier(backbone, len(classes), config.image_size, pretrained,
                                 config.dropout)
    plan = with_blocks(plan, len(backbone_blocks(model)), config.unfreeze)
    write_json(out_dir / layout.PLAN_FILE, plan.to_dict())
    say(f"Plan: {plan.strategy} ({plan.reason})")
    recipe, limit = config, None  # the phases' epochs and views: the default's
    if ledger:  # the default recipe fitted to the time left (budget/planner.py)
        timed = budget.plan_within(ledger, model, plan, config, budget.candidate_sizes(
            backbone, plan, size_given), paths, labels, out_dir, say)
        model = rebuild_at_size(model, timed.image_size)
        config = dataclasses.replace(config, image_size=timed.image_size)
        recipe = dataclasses.replace(config, augment_copies=timed.augment_copies,
                                     fine_tune_epochs=timed.fine_tune_epochs)
        limit = budget.time_limit(ledger, timed)
    class_weights = class_weight(labels["train"], len(classes))
    write_json(out_dir / layout.CONFIG_FILE, config.to_dict())  # with its final size

    # 3. Phase 1: the head on stored features.
    checkpoints = out_dir / layout.CHECKPOINTS_DIR
    with dist.scope():
        head = head_model(model)
    history = restore(head, checkpoints / PHASE1)
    if history is not None:
        say("Phase 1: reusing the trained head")
    else:
        history = _train_head(model, out_dir, source, splits, targets, recipe,
                              class_weights, verbose, say, dist)
    history = [{"phase": 1, **row} for row in history]
    budget.mark(ledger, "phase1")

    # 4. Phase 2: fine-tune the top blocks (a finished phase 2 is restored, not run).
    if plan.unfreeze_blocks:
        set_trainable_blocks(model, plan.unfreeze_blocks)
        history += [{"phase": 2, **row} for row in _fine_tune(
            model, out_dir, paths, targets, plan.unfreeze_blocks, recipe, class_weights,
            verbose, say, dist, limit, ledger)]
    budget.mark(ledger, "phase2")
    if not dist.is_chief:  # the chief evaluates and writes the run; this one is done
        return None
    model = dist.local(model)
    write_csv(out_dir / layout.HISTORY_FILE, pd.DataFrame(history))

    # 5. Evaluate on the test split and finish.
    say("Evaluating on the test split")
    test_ds = image_dataset(paths["test"], None, config.image_size, config.batch_size,
                            workers=config.workers)
    probabilities = model.predict(test_ds, verbose=0)
    if len(probabilities) != len(labels["test"]):
        raise DataError(f"{len(labels['test']) - len(probabilities)} test images can no "
                        "longer be read since the audit; pass --overwrite to audit again")
    test_rel = splits.loc[splits["split"] == "test", "path"].tolist()
    metrics = write_report(out_dir, labels["test"], probabilities, classes, test_rel)
    metrics.update(split_metrics(Run(out_dir, model, classes, config)))  # val: to choose on
    model.trainable = True  # saved as fully trainable; BatchNorm stays in inference mode
    if not config.calibrate:  # calibrating saves the calibrated model
        with atomic_path(out_dir / layout.MODEL_FILE, suffix=".keras") as tmp:
            model.save(tmp)
    metrics.pop("n_images")
    metrics.update({f"n_{k}": len(v) for k, v in paths.items()}, n_classes=len(classes),
                   n_skipped=int((index["status"] != "ok").sum()), n_excluded=len(excluded),
                   strategy=plan.strategy, unfreeze_blocks=plan.unfreeze_blocks,
                   train_seconds=round(time.time() - start, 1))
    write_json(out_dir / layout.METRICS_FILE, metrics)
    budget.mark(ledger, "evaluate")
    run = Run(out_dir, model, classes, config)
    if config.calibrate:  # before the mark: a complete run is a calibrated one
        fit_trust(run, say=say)
    budget.mark(ledger, "calibrate")
    # Only now: a run killed while calibrating resumes from its finished phases.
    shutil.rmtree(checkpoints, ignore_errors=True)
    FeatureStore(out_dir / layout.FEATURES_DIR).drop_augmented()
    mark_complete(out_dir)
    say(f"Test accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f} "
        f"on {metrics['n_test']} images; {metrics['train_seconds']:.0f} s. Run: {out_dir}")
    say(f"Report: {write_run_report(run)}")
    budget.finish(out_dir, ledger)
    return run


def _splits(out_dir: Path, index: pd.DataFrame, classes: list[str], config: TrainConfig,
            resuming: bool, groups: dict[str, str] | None) -> pd.DataFrame:
    """The run's split: its own when resuming, the shared `splits_file` of an ensemble or
    compare, else a new one."""
    path = out_dir / layout.SPLITS_FILE
    if resuming and path.exists():
        splits = pd.read_csv(path, keep_default_na=False)
        check_unchanged(splits, index, classes)  # a folder changed since: one clear line
        return splits
    seed = config.seed if config.split_seed is None else config.split_seed
    splits = pd.read_csv(config.splits_file, keep_default_na=False) if config.splits_file \
        else make_splits(index, classes, config.val_split, config.test_split, seed, groups)
    write_csv(path, splits)
    return splits


def _train_head(model: keras.Model, out_dir: Path, source: Path, splits: pd.DataFrame,
                targets: dict, config: TrainConfig, class_weights, verbose: int, say,
                dist: Distribution) -> list[dict]:
    """Phase 1: the classifier's own head layers on pooled features stored once per image.

    The plain features of every image (all splits) go into the run's feature store,
    where they stay after training; the augmented views only phase 1 reads.
    """
    names = splits["path"].tolist()
    train = (splits["split"] == "train").to_numpy()
    val = (splits["split"] == "val").to_numpy()
    copies = config.augment_copies
    say(f"Phase 1: computing backbone features of the {len(names)} images, and "
        f"{copies} augmented views of the {int(train.sum())} training images")
    store = FeatureStore(out_dir / layout.FEATURES_DIR)
    extractor = dist.local(feature_extractor(model))

    def features(view: int, rows: list[str]) -> np.ndarray:
        return store.get(FeatureKey("imagenet", config.image_size, view), rows, source,
                         extractor, config.seed, config.batch_size, config.workers,
                         verbose)

    with dist.inference_scope():
        plain = features(0, names)
        train_names = [n for n, t in zip(names, train) if t]
        x_train = np.concatenate([plain[train]] + [features(view, train_names)
                                                   for view in range(1, 1 + copies)])
    say("Phase 1: training the head on the stored features")
    recipe = Recipe(config.head_epochs, config.head_learning_rate * dist.replicas,
                    training_loss(config.label_smoothing), patience=config.patience,
                    batch_size=HEAD_BATCH * dist.replicas, seed=config.seed,
                    log_dir=out_dir / layout.LOGS_DIR / "phase1")
    with dist.scope():
        head = head_model(model)
    return run_phase(head, (x_train, np.tile(targets["train"], (1 + copies, 1))),
                     (np.asarray(plain[val]), targets["val"]), recipe,
                     out_dir / layout.CHECKPOINTS_DIR / PHASE1, strategy=dist.replicated,
                     class_weight=class_weights, verbose=verbose)


def _fine_tune(model: keras.Model, out_dir: Path, paths: dict, targets: dict, n_blocks: int,
               config: TrainConfig, class_weights, verbose: int, say,
               dist: Distribution, limit: TimeLimit | None, ledger) -> list[dict]:
    """Phase 2: the top blocks, end to end on augmented images (global batches), one
    epoch of warm-up then cosine decay; within a time limit, the ledger records each
    epoch's seconds (a killed run resumes with the time it has left)."""
    batch = config.batch_size * dist.replicas
    rate = config.fine_tune_learning_rate * dist.replicas
    say(f"Phase 2: fine-tuning the top {n_blocks} blocks ({len(model.trainable_weights)} "
        f"weight tensors) for {config.fine_tune_epochs} epochs at learning rate {rate:g}"
        + (f", for at most {max(limit.deadline - limit.clock(), 0):.0f} s" if limit else ""))
    train_ds = image_dataset(paths["train"], targets["train"],
                             config.image_size, batch, shuffle_seed=config.seed,
                             augment_seed=config.seed, workers=config.workers)
    val_ds = image_dataset(paths["val"], targets["val"],
                           config.image_size, batch, workers=config.workers)
    recipe = Recipe(config.fine_tune_epochs, rate, training_loss(config.label_smoothing),
                    steps_per_epoch=math.ceil(len(paths["train"]) / batch), cosine=True,
                    patience=config.patience, time_limit=limit,
                    log_dir=out_dir / layout.LOGS_DIR / "phase2")
    spent = [] if ledger is None else [keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: ledger.save(epochs=epoch + 1))]
    return run_phase(model, train_ds, val_ds, recipe,
                     out_dir / layout.CHECKPOINTS_DIR / PHASE2, strategy=dist.replicated,
                     class_weight=class_weights, verbose=verbose, say=say, callbacks=spent)
