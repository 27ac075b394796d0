"""Phase 2 within its planned time: stages (progressive resizing) and the ingredients.

Each stage fine-tunes a copy of the classifier rebuilt at the stage's image size
(`model.rebuild_at_size`: convolutions do not depend on the input size, so the weights
carry over both ways), until its share of phase 2's time is used; the last stage runs at
the final size until the time kept for evaluation, calibration and the report.
The ingredients are Keras's own: `keras.layers.RandAugment` and `keras.layers.MixUp` in
the input pipeline, and the optimizer's weight averaging (`use_ema=True`; the averaged
weights are written into the model each epoch, so validation, the best-weights choice
and the saved model all see them).

Resume: the ledger holds phase 2's start, the best validation loss and the epochs done;
the best weights so far are in `checkpoints/budget_best.weights.h5`. A resumed phase 2
continues from them with the time it has left (the optimizer's moments start afresh).
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from transferkit import layout
from transferkit.budget.planner import SAFETY, BudgetPlan, SpeedProfile, first_epoch_extra
from transferkit.budget.stop import Ledger, TimeBudget
from transferkit.config import TrainConfig
from transferkit.data.pipeline import image_dataset
from transferkit.fileio import atomic_path, write_csv
from transferkit.model import rebuild_at_size, set_trainable_blocks

RANDAUGMENT = {"num_ops": 2, "factor": 0.3}   # gentle: on top of crop, flip and jitter
MIXUP_ALPHA = 0.2
EMA_MOMENTUM = 0.99


def with_ingredients(ds: tf.data.Dataset, ingredients: list[str],
                     seed: int) -> tf.data.Dataset:
    """Adds RandAugment and MixUp (if planned) to a batched `(images, one-hot)` dataset."""
    if "randaugment" in ingredients:
        rand = keras.layers.RandAugment(value_range=(0, 255), seed=seed, **RANDAUGMENT)
        ds = ds.map(lambda x, y: (rand(x, training=True), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    if "mixup" in ingredients:
        mix = keras.layers.MixUp(alpha=MIXUP_ALPHA, seed=seed)

        def mixed(x, y):
            out = mix({"images": x, "labels": y}, training=True)
            return out["images"], out["labels"]
        ds = ds.map(mixed, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def fine_tune_within(model: keras.Model, out_dir: Path, paths: dict, labels: dict,
                     n_blocks: int, config: TrainConfig, plan: BudgetPlan, ledger: Ledger,
                     loss: keras.losses.Loss, class_weight, verbose: int, say) -> None:
    """Phase 2 of a time-limited run; leaves the best weights (by val loss) in `model`.

    Args:
        model: The classifier at the final size, its head trained (phase 1).
        out_dir: The run directory.
        paths, labels: Image paths and class indices by split.
        n_blocks: Top blocks to fine-tune.
        config: The run's options (learning rate, batch size, seed).
        plan: The budget plan (stages, ingredients, reserve).
        ledger: The run's ledger (its clock and the seconds spent).
        loss: The training loss.
        class_weight: Keras class weights or None.
        verbose: Keras verbosity.
        say: Progress printer.
    """
    checkpoints = out_dir / layout.CHECKPOINTS_DIR
    done, best_path = checkpoints / "phase2.weights.h5", checkpoints / "budget_best.weights.h5"
    log = checkpoints / "phase2_history.csv"
    set_trainable_blocks(model, n_blocks)
    if done.exists():
        model.load_weights(done)
        say("Phase 2: reusing the fine-tuned weights")
        return
    state = ledger.state
    if "phase2_start" not in state:  # a fresh phase 2: stale remains go
        best_path.unlink(missing_ok=True)
        log.unlink(missing_ok=True)
        ledger.save(phase2_start=ledger.spent(), best_loss=math.inf, epochs=0)
    elif best_path.exists():
        model.load_weights(best_path)
        say(f"Phase 2: resuming from its best weights, {ledger.left(plan.limit_seconds):.0f} s "
            "left")
    start = state["phase2_start"]
    end = plan.limit_seconds - plan.reserve_seconds
    on_clock = lambda spent: ledger.started + spent - ledger.before  # noqa: E731
    rows = pd.read_csv(log).to_dict("records") if log.exists() else []
    profile = SpeedProfile.from_dict(state["profile"])
    n_classes = model.output_shape[-1]
    y_train = keras.utils.to_categorical(np.asarray(labels["train"]), n_classes)
    y_val = keras.utils.to_categorical(np.asarray(labels["val"]), n_classes)
    per_epoch = -(-len(paths["train"]) // config.batch_size)
    say(f"Phase 2: fine-tuning the top {n_blocks} blocks for ~{end - start:.0f} s "
        f"(until {end:.0f} s of the {plan.limit_seconds:.0f} s budget); recipe: "
        f"{', '.join(plan.ingredients) or 'today'}")
    for number, stage in enumerate(plan.stages):
        stage_end = start + stage.until_fraction * (end - start)
        if ledger.spent() >= stage_end - 1e-6 and number < len(plan.stages) - 1:
            continue  # finished before a resume
        sized = rebuild_at_size(model, stage.image_size)
        set_trainable_blocks(sized, n_blocks)
        train_ds = image_dataset(paths["train"], y_train, stage.image_size, config.batch_size,
                                 shuffle_seed=config.seed, augment_seed=config.seed + number,
                                 workers=config.workers)
        train_ds = with_ingredients(train_ds, plan.ingredients, config.seed + number)
        val_ds = image_dataset(paths["val"], y_val, stage.image_size, config.batch_size,
                               workers=config.workers)
        ema = "ema" in plan.ingredients
        optimizer = keras.optimizers.Adam(
            config.fine_tune_learning_rate, use_ema=ema, ema_momentum=EMA_MOMENTUM,
            ema_overwrite_frequency=per_epoch if ema else None)
        sized.compile(optimizer, loss, metrics=["accuracy"])

        def on_epoch(seconds, logs, best, size=stage.image_size, number=number):
            rows.append({"epoch": len(rows) + 1, **{k: float(v) for k, v in logs.items()},
                         "image_size": size, "seconds": round(seconds, 1)})
            write_csv(log, pd.DataFrame(rows))
            ledger.save(best_loss=best, best_stage=number, epochs=len(rows))

        # Validation losses at different sizes do not compare: each stage keeps the best
        # of its own epochs (a resumed stage, those before the kill too), so the weights
        # kept at the end were validated at the final size.
        best = float(state.get("best_loss", math.inf)) \
            if state.get("best_stage") == number else math.inf

        stop = TimeBudget(on_clock(stage_end), ledger.clock, phase_start=on_clock(start),
                          phase_end=on_clock(end), peak_rate=config.fine_tune_learning_rate,
                          warmup=min(0.1, plan.epoch_seconds / max(end - start, 1.0)),
                          best_loss=best,
                          best_path=best_path, safety=SAFETY, on_epoch=on_epoch,
                          restore_best=False, first_extra=first_epoch_extra(profile))
        sized.fit(train_ds, validation_data=val_ds, epochs=max(4 * stage.epochs, 8),
                  class_weight=class_weight, verbose=verbose, callbacks=[stop])
        if sized is not model:
            model.set_weights(sized.get_weights())
        say(f"Phase 2: {len(stop.durations)} epochs at {stage.image_size} px "
            f"({', '.join(f'{d:.0f}' for d in stop.durations)} s)")
    if best_path.exists():
        model.load_weights(best_path)
    frame = pd.DataFrame(rows, columns=None if rows else ["epoch"])
    frame.insert(0, "phase", 2)
    write_csv(log, frame)
    with atomic_path(done, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
