"""Measuring this machine's speed on this data: a few timed steps per candidate size.

The first call of a Keras function traces (and on a GPU compiles) it, so each size gets
one untimed warm-up step, then timed ones. Decoding is timed too (it is part of every
epoch). The measuring stops adding sizes once it has used its share of the budget
(`MEASURE_SHARE`); sizes not measured are scaled by pixels from the nearest measured one
(`planner._at`), so measuring stays a small, bounded part of the run.
"""

from __future__ import annotations

import time

import keras
import numpy as np

from transferkit.budget.planner import SpeedProfile
from transferkit.budget.ledger import Clock
from transferkit.data.pipeline import image_dataset
from transferkit.features import feature_extractor
from transferkit.model import rebuild_at_size, set_trainable_blocks

MEASURE_SHARE = 0.05   # of the budget; the first size is always measured
TIMED_STEPS = 2


def measure(model: keras.Model, paths: list[str], labels: np.ndarray, sizes: list[int],
            first: int, n_blocks: int, batch_size: int, limit: float, workers: int = 2,
            clock: Clock = time.perf_counter, say=lambda *a: None) -> SpeedProfile:
    """Times feature extraction and fine-tuning steps at candidate image sizes.

    Args:
        model: The classifier (rebuilt at each size; its weights are restored after).
        paths: Training images (the first `batch_size` are used).
        labels: Their one-hot labels.
        sizes: Candidate sizes.
        first: The size measured first (the rule's): always measured.
        n_blocks: Top blocks fine-tuned (0: feature extraction only, no steps timed).
        batch_size: The training batch size.
        limit: The budget in seconds (bounds the measuring).
        workers: Decoding threads.
        clock: The clock.
        say: Progress printer.

    Returns:
        The measured profile (sizes measured; the planner extrapolates the others).
    """
    # At the model's own size rebuild_at_size returns the model itself, whose timed
    # training steps would change the weights phase 1 and the feature store then use.
    saved = model.get_weights()
    try:
        return _measure(model, paths, labels, sizes, first, n_blocks, batch_size, limit,
                        workers, clock, say)
    finally:
        model.set_weights(saved)


def _measure(model, paths, labels, sizes, first, n_blocks, batch_size, limit, workers,
             clock, say) -> SpeedProfile:
    start = clock()
    n = min(batch_size, len(paths))
    order = [first] + sorted((s for s in sizes if s != first), reverse=True)
    extract, steps, augment = {}, {}, {}
    trace_predict = trace_train = 0.0
    for size in order:
        if extract and clock() - start > MEASURE_SHARE * limit:
            break
        t0 = clock()
        batch = next(iter(image_dataset(paths[:n], None, size, n, workers=workers)))
        batch = np.asarray(batch)
        decode = (clock() - t0) / n  # seconds per image
        sized = rebuild_at_size(model, size)  # at the model's own size: the model itself
        trunk = feature_extractor(sized)
        t0 = clock()
        trunk.predict_on_batch(batch)  # warm-up: traces the function
        warm = clock() - t0
        t0 = clock()
        trunk.predict_on_batch(batch)
        forward = clock() - t0
        extract[size] = 1.0 / (decode + forward / n)
        trace_predict = max(trace_predict, warm - forward)
        if n_blocks:
            set_trainable_blocks(sized, n_blocks)
            sized.compile(keras.optimizers.Adam(1e-5), "categorical_crossentropy")
            y = labels[:n]
            t0 = clock()
            sized.train_on_batch(batch, y)  # warm-up
            warm = clock() - t0
            t0 = clock()
            for _ in range(TIMED_STEPS):
                sized.train_on_batch(batch, y)
            step = (clock() - t0) / TIMED_STEPS
            trace_train = max(trace_train, warm - step)
            per_image = step / n + decode
            steps[size] = per_image * batch_size
            augment[size] = _augment_seconds(batch, y, clock) * batch_size / n
        say(f"Budget: measured {size} px: {extract[size]:.0f} images/s forward"
            + (f", {steps[size]:.2f} s per fine-tuning step" if n_blocks else ""))
    if not n_blocks:
        steps = {s: 0.0 for s in extract}
    return SpeedProfile(extract, steps, batch_size, clock() - start,
                        trace_predict, trace_train, augment)


def _augment_seconds(batch: np.ndarray, labels: np.ndarray, clock: Clock) -> float:
    """Seconds RandAugment + MixUp take on `batch` in a tf.data pipeline (warmed up)."""
    import tensorflow as tf

    from transferkit.budget.finetune import with_ingredients

    ds = tf.data.Dataset.from_tensors((batch, labels.astype("float32"))).repeat(1 + TIMED_STEPS)
    batches = iter(with_ingredients(ds, ["randaugment", "mixup"], seed=0))
    next(batches)  # warm-up: traces the maps
    t0 = clock()
    for _ in range(TIMED_STEPS):
        next(batches)
    return (clock() - t0) / TIMED_STEPS
