"""Phase 2 within its planned time: stages (progressive resizing) and the ingredients.

Each stage is one phase of the engine (`transferkit.engine.run_phase`) on a copy of
the classifier rebuilt at the stage's image size (`model.rebuild_at_size`: convolutions
do not depend on the input size, so the weights carry over both ways), until its share
of phase 2's time is used; the last stage runs at the final size until the time kept
for evaluation, calibration and the report. The rate follows phase 2's time (warm-up,
then cosine to 0 at its end). The ingredients are Keras's own: `keras.layers.RandAugment`
and `keras.layers.MixUp` in the input pipeline, and the optimizer's weight averaging
(`use_ema=True`; the averaged weights are written into the model each epoch, so
validation, the best-weights choice and the saved model all see them).

Validation losses at different sizes do not compare: each stage keeps the best of its
own epochs, and continues into the next from its last weights; the last stage ends on
its best. Resume: the ledger holds phase 2's start; each stage's backup
(`checkpoints/phase2_stageN.npz`) its epochs, optimizer state and best weights.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from transferkit import layout
from transferkit.budget.planner import SAFETY, BudgetPlan, SpeedProfile, first_epoch_extra
from transferkit.budget.ledger import Ledger
from transferkit.config import TrainConfig
from transferkit.data.pipeline import image_dataset
from transferkit.engine.phase import Recipe, TimeLimit, run_phase
from transferkit.engine.recipes import one_hot, training_loss
from transferkit.model import rebuild_at_size, set_trainable_blocks

RANDAUGMENT = {"num_ops": 2, "factor": 0.3}   # gentle: on top of crop, flip and jitter
MIXUP_ALPHA = 0.2


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
                     class_weights, verbose: int, say) -> list[dict]:
    """Phase 2 of a time-limited run; leaves the last stage's best weights in `model`.

    Args:
        model: The classifier at the final size, its head trained (phase 1).
        out_dir: The run directory.
        paths, labels: Image paths and class indices by split.
        n_blocks: Top blocks to fine-tune.
        config: The run's options (learning rate, batch size, seed).
        plan: The budget plan (stages, ingredients, reserve).
        ledger: The run's ledger (its clock and the seconds spent).
        class_weights: Keras class weights or None.
        verbose: Keras verbosity.
        say: Progress printer.

    Returns:
        Phase 2's history rows (epochs numbered across the stages).
    """
    checkpoints = out_dir / layout.CHECKPOINTS_DIR
    if "phase2_start" not in ledger.state:  # a fresh phase 2: stale stages go
        for stale in checkpoints.glob("phase2_stage*.npz"):
            stale.unlink()
        ledger.save(phase2_start=ledger.spent(), epochs=0)
    start = ledger.state["phase2_start"]
    end = plan.limit_seconds - plan.reserve_seconds
    on_clock = lambda spent: ledger.started + spent - ledger.before  # noqa: E731
    profile = SpeedProfile.from_dict(ledger.state["profile"])
    n_classes = model.output_shape[-1]
    y_train, y_val = one_hot(labels["train"], n_classes), one_hot(labels["val"], n_classes)
    say(f"Phase 2: fine-tuning the top {n_blocks} blocks for ~{end - start:.0f} s "
        f"(until {end:.0f} s of the {plan.limit_seconds:.0f} s budget); recipe: "
        f"{', '.join(plan.ingredients) or 'today'}")
    rows: list[dict] = []
    for number, stage in enumerate(plan.stages):
        last = number == len(plan.stages) - 1
        sized = rebuild_at_size(model, stage.image_size)
        set_trainable_blocks(sized, n_blocks)
        train_ds = with_ingredients(image_dataset(
            paths["train"], y_train, stage.image_size, config.batch_size,
            shuffle_seed=config.seed, augment_seed=config.seed + number,
            workers=config.workers), plan.ingredients, config.seed + number)
        val_ds = image_dataset(paths["val"], y_val, stage.image_size, config.batch_size,
                               workers=config.workers)
        stage_end = start + stage.until_fraction * (end - start)
        limit = TimeLimit(ledger.clock, on_clock(stage_end), on_clock(start), on_clock(end),
                          warmup=min(0.1, plan.epoch_seconds / max(end - start, 1.0)),
                          safety=SAFETY, first_extra=first_epoch_extra(profile))
        recipe = Recipe(max(4 * stage.epochs, 8), config.fine_tune_learning_rate,
                        training_loss(config.label_smoothing),
                        steps_per_epoch=-(-len(paths["train"]) // config.batch_size),
                        schedule="time", ema="ema" in plan.ingredients, restore_best=last,
                        time_limit=limit, row={"image_size": stage.image_size},
                        log_dir=out_dir / layout.LOGS_DIR / f"phase2_stage{number + 1}")
        stage_rows = run_phase(
            sized, train_ds, val_ds, recipe, checkpoints / f"phase2_stage{number + 1}.npz",
            class_weight=class_weights, verbose=verbose, say=say,
            callbacks=[keras.callbacks.LambdaCallback(  # the seconds spent, each epoch
                on_epoch_end=lambda epoch, logs: ledger.save())])
        if sized is not model:
            model.set_weights(sized.get_weights())
        rows += stage_rows
        ledger.save(epochs=len(rows))
        seconds = ", ".join(f"{row['seconds']:.0f}" for row in stage_rows)
        say(f"Phase 2: {len(stage_rows)} epochs at {stage.image_size} px ({seconds} s)")
    return [{**row, "epoch": i} for i, row in enumerate(rows, 1)]
