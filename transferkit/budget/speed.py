"""Measuring this machine's speed on this data: a few timed steps at the rule's size.

The first call of a Keras function traces (and on a GPU compiles) it, so each is called
once untimed, then timed. Decoding is timed too (it is part of every epoch). Smaller
sizes are scaled by their pixels (`SpeedProfile.at`), so measuring costs seconds.
"""

from __future__ import annotations

import time
from typing import Callable

import keras
import numpy as np

from transferkit.budget.planner import SpeedProfile
from transferkit.data.pipeline import image_dataset
from transferkit.features import feature_extractor
from transferkit.model import set_trainable_blocks

TIMED_STEPS = 2


def measure(model: keras.Model, paths: list[str], labels: np.ndarray, n_blocks: int,
            batch_size: int, workers: int = 2,
            clock: Callable[[], float] = time.perf_counter) -> SpeedProfile:
    """Times feature extraction and fine-tuning steps at the model's input size.

    Args:
        model: The classifier (its weights are restored after the timed steps).
        paths: Training images (the first `batch_size` are used).
        labels: Their one-hot labels.
        n_blocks: Top blocks fine-tuned (0: feature extraction only, no steps timed).
        batch_size: The training batch size.
        workers: Decoding threads.
        clock: The clock.

    Returns:
        The measured profile.
    """
    start, n = clock(), min(batch_size, len(paths))
    size = int(model.input_shape[1])
    batch = np.asarray(next(iter(image_dataset(paths[:n], None, size, n,
                                               workers=workers))))
    decode = (clock() - start) / n  # seconds per image

    def timed(call, times: int) -> tuple[float, float]:
        """Seconds of the first (tracing) call beyond the others, and of one other."""
        t0 = clock()
        call()
        first = clock() - t0
        t0 = clock()
        for _ in range(times):
            call()
        each = (clock() - t0) / times
        return max(first - each, 0.0), each

    trunk = feature_extractor(model)
    trace_predict, forward = timed(lambda: trunk.predict_on_batch(batch), 1)
    trace_train, step = 0.0, 0.0
    if n_blocks:
        saved = model.get_weights()  # the timed steps must not change phase 1's start
        set_trainable_blocks(model, n_blocks)
        model.compile(keras.optimizers.Adam(1e-5), "categorical_crossentropy")
        trace_train, each = timed(lambda: model.train_on_batch(batch, labels[:n]),
                                  TIMED_STEPS)
        model.set_weights(saved)
        step = (each / n + decode) * batch_size
    return SpeedProfile(size, 1.0 / (decode + forward / n), step, batch_size,
                        clock() - start, trace_predict, trace_train)
