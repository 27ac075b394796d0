"""Training: a folder of images → a finished run directory.

    audit (data/scan.py) → doctor (doctor/) → split (data/splits.py) → classifier
    (model.py) → plan (plan.py) → phase 1: the head on stored features (features.py)
    → phase 2: fine-tune the planned top blocks, end to end with augmentation
    → evaluate, calibrate (trust/), report: `rundir.finish_run`

Every step writes its files atomically and a killed run resumes where it stopped: the
audit and split are reused, stored features reloaded, a finished phase restored, an
unfinished one continued from its last finished epoch (`transferkit.engine`).
"""

from __future__ import annotations

import dataclasses
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
from transferkit.budget.members import spend_time_left, unfinished
from transferkit.engine.phase import HEAD_BATCH, Recipe, TimeLimit, head_model, restore, \
    run_labelled
from transferkit.config import TrainConfig
from transferkit.data.scan import audit_report, scan_folder, summarize_classes, \
    write_audit_csv
from transferkit.data.splits import check_unchanged, make_splits
from transferkit.data.tfds import data_folder
from transferkit.distill import student_targets, train_with_student, with_teacher
from transferkit.distribute import Distribution, make_distribution
from transferkit.doctor.training_step import doctor_before_split
from transferkit.errors import ConfigError
from transferkit.features import FeatureKey, FeatureStore, feature_extractor
from transferkit.fileio import write_csv, write_json
from transferkit.model import backbone_blocks, build_classifier, rebuild_at_size, \
    set_trainable_blocks
from transferkit.plan import make_plan, with_blocks
from transferkit.run import Run
from transferkit.rundir import finish_run, prepare_run_dir

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
    stopped = None if overwrite else unfinished(Path(out), config)
    if stopped is not None:  # a budget's default run, stopped in its extra members
        return spend_time_left(stopped, train)
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
    parts = dict(tuple(splits.groupby("split")))
    paths = {name: [str(source / p) for p in part["path"]] for name, part in parts.items()}
    labels = {name: [classes.index(c) for c in part["class"]]
              for name, part in parts.items()}
    soft = student_targets(out_dir, config, paths["train"], labels["train"], classes, say)
    budget.mark(ledger, "audit")

    # 2. Plan, model.
    train_rows = index.set_index("path").loc[parts["train"]["path"]]
    median_side = float(np.median(np.minimum(train_rows["width"], train_rows["height"])))
    plan = make_plan(train_rows["class"].value_counts().to_dict(), config, backbone,
                     median_side)
    asked = config.image_size  # --image-size: the budget keeps it
    config = dataclasses.replace(config, image_size=plan.image_size)
    with dist.scope():
        model = build_classifier(backbone, len(classes), config.image_size, pretrained,
                                 config.dropout)
    plan = with_blocks(plan, len(backbone_blocks(model)), config.unfreeze)
    write_json(out_dir / layout.PLAN_FILE, dataclasses.asdict(plan))
    say(f"Plan: {plan.strategy} ({plan.reason})")
    recipe, limit = config, None  # the phases' epochs and views: the default's
    if ledger:  # the default recipe fitted to the time left (budget/planner.py)
        timed = budget.plan_within(ledger, model, plan, config, budget.candidate_sizes(
            backbone, plan, asked is not None), paths, labels, out_dir, say)
        model = rebuild_at_size(model, timed.image_size)
        config = dataclasses.replace(config, image_size=timed.image_size)
        recipe = dataclasses.replace(config, augment_copies=timed.augment_copies,
                                     fine_tune_epochs=timed.fine_tune_epochs)
        limit = budget.time_limit(ledger, timed)
    if config.image_size != asked:  # prepare_run_dir wrote the options as asked, so
        # that a run killed in the audit or the doctor resumes (and refuses changes).
        write_json(out_dir / layout.CONFIG_FILE, config.to_dict())

    # 3. Phase 1: the head on stored features; 4. phase 2: fine-tune the top blocks. A
    # finished phase is restored, not run.
    checkpoints = out_dir / layout.CHECKPOINTS_DIR
    with dist.scope():
        history = restore(head_model(model), checkpoints / PHASE1)
    if history is not None:
        say("Phase 1: reusing the trained head")
    else:
        history = _train_head(model, out_dir, source, splits, labels, soft, recipe, verbose,
                              say, dist)
    history = [{"phase": 1, **row} for row in history]
    budget.mark(ledger, "phase1")
    if plan.unfreeze_blocks:
        set_trainable_blocks(model, plan.unfreeze_blocks)
        rows = restore(model, checkpoints / PHASE2)
        if rows is not None:
            say("Phase 2: reusing the fine-tuned weights")
        else:
            rows = _fine_tune(model, out_dir, paths, labels, soft, plan.unfreeze_blocks,
                              recipe, verbose, say, dist, limit, ledger)
        history += [{"phase": 2, **row} for row in rows]
    budget.mark(ledger, "phase2")
    if not dist.is_chief:  # the chief evaluates and writes the run; this one is done
        return None
    model = dist.local(model)
    write_csv(out_dir / layout.HISTORY_FILE, pd.DataFrame(history))

    # 5. Evaluate, calibrate, report.
    say("Evaluating on the test split")
    run = finish_run(out_dir, model, config, classes, start, say,
                     mark=lambda step: budget.mark(ledger, step),
                     n_skipped=int((index["status"] != "ok").sum()), n_excluded=len(excluded),
                     strategy=plan.strategy, unfreeze_blocks=plan.unfreeze_blocks)
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
                labels: dict, soft, config: TrainConfig, verbose: int, say,
                dist: Distribution) -> list[dict]:
    """Phase 1: the classifier's own head layers on pooled features stored once per image
    (the plain ones of every image stay in the run's feature store; the augmented views
    of the training images, only phase 1 reads, are dropped at the end)."""
    names = splits["path"].tolist()
    train, val = ((splits["split"] == s).to_numpy() for s in ("train", "val"))
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
                    _loss(config), patience=config.patience,
                    batch_size=HEAD_BATCH * dist.replicas, seed=config.seed,
                    log_dir=out_dir / layout.LOGS_DIR / "phase1")
    with dist.scope():
        head = head_model(model)
    return run_labelled(head, (x_train, labels["train"] * (1 + copies)),
                        (plain[val], labels["val"]), recipe,
                        out_dir / layout.CHECKPOINTS_DIR / PHASE1, strategy=dist.replicated,
                        verbose=verbose, targets=None if soft is None else
                        np.tile(soft, (1 + copies, 1)))  # a view: its image's


def _fine_tune(model: keras.Model, out_dir: Path, paths: dict, labels: dict, soft,
               n_blocks: int, config: TrainConfig, verbose: int, say, dist: Distribution,
               limit: TimeLimit | None, ledger) -> list[dict]:
    """Phase 2: the top blocks, end to end on augmented images (global batches), one
    epoch of warm-up then cosine decay; within a time limit, the ledger records each
    epoch (a killed run resumes with the time it has left)."""
    rate = config.fine_tune_learning_rate * dist.replicas
    say(f"Phase 2: fine-tuning the top {n_blocks} blocks ({len(model.trainable_weights)} "
        f"weight tensors) for {config.fine_tune_epochs} epochs at learning rate {rate:g}"
        + (f", for at most {max(limit.deadline - limit.clock(), 0):.0f} s" if limit else ""))
    recipe = Recipe(config.fine_tune_epochs, rate, _loss(config), cosine=True,
                    patience=config.patience, time_limit=limit,
                    batch_size=config.batch_size * dist.replicas, seed=config.seed,
                    log_dir=out_dir / layout.LOGS_DIR / "phase2")
    spent = [] if ledger is None else [keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: ledger.save(epochs=epoch + 1))]
    return run_labelled(model, (paths["train"], labels["train"]),
                        (paths["val"], labels["val"]), recipe,
                        out_dir / layout.CHECKPOINTS_DIR / PHASE2, config.image_size,
                        config.workers, strategy=dist.replicated, verbose=verbose, say=say,
                        callbacks=spent, targets=soft)


def _loss(config: TrainConfig) -> keras.losses.Loss:
    return keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
