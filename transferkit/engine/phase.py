"""`run_phase`: trains one phase of any recipe, with the one set of callbacks.

A phase trains the weights `model` has trainable (the caller freezes the rest) on arrays
(stored features) or `tf.data` batches (images), by a `Recipe`. Its callbacks, the same
under `model.fit` and under replicas (`distribute.fit`): the time limit, the caller's
own, Keras's `TensorBoard`, and the `Tracker`, which after every epoch appends the
history row, keeps the best weights by validation loss with early stopping's count, and
writes the backup. A killed phase resumes from its backup (next epoch, optimizer state,
best epoch, patience left); a finished phase is restored, not trained again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from transferkit import distribute
from transferkit.data.pipeline import image_dataset
from transferkit.engine import backup

IMBALANCE_RATIO = 1.5  # largest / smallest class above which classes are re-weighted
HEAD_BATCH = 64        # phase 1's batch of stored features (one replica)


class TimeLimit(keras.callbacks.Callback):
    """The time stop: ends a phase at `deadline` on `clock` (injectable), or before an
    epoch predicted to end after it: the slowest of the last three times `safety`, the
    first one less `first_extra` (its tracing) while it is the only one to go by."""

    def __init__(self, clock: Callable[[], float], deadline: float, safety: float = 1.15,
                 first_extra: float = 0.0):
        super().__init__()
        self.clock, self.deadline = clock, deadline
        self.safety, self.first_extra = safety, first_extra
        self.durations: list[float] = []
        self._epoch_start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.clock()

    def on_train_batch_end(self, batch, logs=None):
        self.model.stop_training |= self.clock() >= self.deadline

    def on_epoch_end(self, epoch, logs=None):
        self.durations.append(self.clock() - self._epoch_start)
        recent = self.durations[1:][-3:] or [self.durations[0] - self.first_extra]
        if self.clock() + self.safety * max(recent) > self.deadline:
            self.model.stop_training = True


@dataclasses.dataclass
class Recipe:
    """How a phase trains: at most `epochs` epochs of Adam at `learning_rate` (global,
    for all replicas) on `loss`; `cosine`: one epoch of `steps_per_epoch` steps of warm-up
    from the rate / 10 (at most half the steps: a new head's first gradients would wreck
    pretrained filters), then cosine decay to 0. Early stopping after `patience` epochs
    without a better validation loss (None: off); `time_limit` (its clock times the
    epochs); global batches shuffled by `seed`; TensorBoard files in `log_dir`."""

    epochs: int
    learning_rate: float
    loss: keras.losses.Loss
    steps_per_epoch: int = 1
    cosine: bool = False
    patience: int | None = None
    time_limit: TimeLimit | None = None
    batch_size: int = 64
    seed: int = 0
    log_dir: Path | None = None

    def rate(self) -> float | keras.optimizers.schedules.LearningRateSchedule:
        """Adam's rate: the number, or Keras's warm-up + cosine by steps."""
        if not self.cosine:
            return self.learning_rate
        total = max(1, self.steps_per_epoch * self.epochs)
        warmup = min(self.steps_per_epoch, total // 2)
        return keras.optimizers.schedules.CosineDecay(
            self.learning_rate / 10, max(1, total - warmup),
            warmup_target=self.learning_rate, warmup_steps=warmup)


class Tracker(keras.callbacks.Callback):
    """History row, best weights and early stopping, backup: after every epoch."""

    def __init__(self, path: Path | None, state: backup.State, best: list | None,
                 recipe: Recipe, clock: Callable[[], float]):
        super().__init__()
        self.path, self.state, self.best, self.recipe = path, state, best, recipe
        self.clock, self._start = clock, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        state, logs = self.state, {k: float(v) for k, v in sorted((logs or {}).items())}
        state.rows.append({"epoch": epoch + 1, **logs,
                           "seconds": round(self.clock() - self._start, 1)})
        state.epoch = epoch + 1
        loss = logs.get("val_loss", math.nan)
        if loss < state.best:
            state.best, state.wait, self.best = loss, 0, self.model.get_weights()
        else:
            state.wait += 1
            if self.recipe.patience is not None and state.wait >= self.recipe.patience:
                self.model.stop_training = True
        state.stopped = bool(self.model.stop_training)
        if self.path is not None:
            backup.save(self.path, state, self.model.get_weights(),
                        [v.numpy() for v in self.model.optimizer.variables],
                        self.best or [])


def run_phase(model: keras.Model, train, val, recipe: Recipe, path: Path | None, *,
              strategy: tf.distribute.Strategy | None = None, class_weight=None,
              verbose: int = 0, callbacks: Sequence[keras.callbacks.Callback] = (),
              say: Callable[..., None] = lambda *a: None) -> list[dict]:
    """Trains `model`'s trainable weights by `recipe`; resumes from / backs up to `path`.

    Args:
        model: The classifier, or its head.
        train, val: `(x, one-hot y)` arrays, or batched `tf.data.Dataset`s of them.
        recipe: How to train.
        path: The phase's backup file (None: no backup, no resume).
        strategy: A strategy with replicas (None: one device, `model.fit`).
        class_weight, verbose: As for `model.fit`.
        callbacks: More callbacks (before the tracker).
        say: Progress printer (a backup that cannot be read).

    Returns:
        The phase's history, one row per epoch (of all invocations when resumed); a
        finished phase's at once, its final weights restored.
    """
    finished = restore(model, path) if path is not None else None
    if finished is not None:
        return finished
    saved = backup.load(path) if path is not None and path.exists() else None
    if path is not None and path.exists() and saved is None:
        say(f"{path}: this backup cannot be read; starting its phase again")
    if saved is not None and len(saved.weights) != len(model.weights):
        saved = None  # another model's (e.g. the other strategy's): start afresh
    if strategy is not None:
        train, val = distribute.batched(train, val, recipe.batch_size, recipe.seed)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model.compile(keras.optimizers.Adam(recipe.rate()), recipe.loss,
                      metrics=["accuracy"])
        model.optimizer.build(model.trainable_variables)
        if saved is not None:
            model.set_weights(saved.weights)
            for variable, value in zip(model.optimizer.variables, saved.optimizer):
                variable.assign(value)
    state = saved.state if saved is not None else backup.State()
    limit = recipe.time_limit
    clock = limit.clock if limit else time.time
    hooks = ([limit] if limit else []) + list(callbacks)
    if recipe.log_dir is not None:  # Keras's own writer (it logs the rate too)
        hooks.append(keras.callbacks.TensorBoard(str(recipe.log_dir), write_graph=False))
    tracker = Tracker(path, state, (saved.best or None) if saved else None, recipe, clock)
    hooks.append(tracker)
    in_time = limit is None or clock() < limit.deadline
    if not state.stopped and state.epoch < recipe.epochs and in_time:
        if strategy is None:
            x, y = (train, None) if isinstance(train, tf.data.Dataset) else train
            model.fit(x, y, batch_size=None if y is None else recipe.batch_size,
                      validation_data=val, epochs=recipe.epochs,
                      initial_epoch=state.epoch, class_weight=class_weight,
                      shuffle=y is not None,  # datasets shuffle themselves
                      verbose=verbose, callbacks=hooks)
        else:
            distribute.fit(model, train, val, recipe.epochs, state.epoch, strategy,
                           class_weight, hooks, verbose)
    if tracker.best:
        model.set_weights(tracker.best)
    state.finished = True
    if path is not None:
        backup.save(path, state, model.get_weights(), [], [])
    return state.rows


def run_labelled(model: keras.Model, train: tuple, val: tuple, recipe: Recipe,
                 path: Path | None, image_size: int | None = None, workers: int = 2,
                 targets: np.ndarray | None = None, **options) -> list[dict]:
    """`run_phase` on `(x, class indices)` pairs, as every phase of transferkit trains:
    one-hot labels, `class_weight`, the schedule's steps from the training examples.

    Args:
        model, recipe, path, **options: As for `run_phase` (`recipe.batch_size`: global).
        train, val: `x` stored features, or image paths when `image_size` is given
            (decoded; the training images shuffled and augmented, seeded by `recipe.seed`).
        image_size: The images' side; None for features.
        workers: Images decoded in parallel.
        targets: `[N, C]` rows the training examples train on instead of their one-hot
            labels (a distilled run's soft targets, `transferkit.distill`); the labels
            still weigh the classes, and validation keeps them.

    Returns:
        The phase's history (`run_phase`).
    """
    n, batch = model.output_shape[-1], recipe.batch_size
    recipe = dataclasses.replace(recipe, steps_per_epoch=math.ceil(len(train[0]) / batch))
    (x, y), (val_x, val_y) = train, val
    rows = keras.utils.to_categorical(y, n) if targets is None else targets
    if image_size is None:
        train, val = (np.asarray(x), rows), \
            (np.asarray(val_x), keras.utils.to_categorical(val_y, n))
    else:
        train = image_dataset(x, rows, image_size, batch,
                              recipe.seed, recipe.seed, workers)
        val = image_dataset(val_x, keras.utils.to_categorical(val_y, n), image_size, batch,
                            workers=workers)
    return run_phase(model, train, val, recipe, path, class_weight=class_weight(y, n),
                     **options)


def restore(model: keras.Model, path: Path) -> list[dict] | None:
    """Sets `model` to the final weights of the phase finished at `path`.

    Returns:
        The phase's history; None when `path` holds no finished phase of this model.
    """
    saved = backup.load(path) if path.exists() else None
    if saved is None or not saved.state.finished or \
            len(saved.weights) != len(model.weights):
        return None
    model.set_weights(saved.weights)
    return saved.state.rows


def class_weight(labels, n_classes: int) -> dict[int, float] | None:
    """'Balanced' class weights (n / (C * count)) when the largest class is over
    `IMBALANCE_RATIO` times the smallest; None when it is not."""
    counts = np.bincount(labels, minlength=n_classes)
    if counts.max() <= IMBALANCE_RATIO * counts.min():
        return None
    weights = compute_class_weight("balanced", classes=np.arange(n_classes),
                                   y=np.asarray(labels))
    return dict(enumerate(weights.tolist()))


def head_model(model: keras.Model) -> keras.Model:
    """The classifier's head as a model over its pooled features: its very `head_dropout`
    and `predictions` layers (phase 1 trains the classifier itself, nothing is copied)."""
    features = keras.Input(model.get_layer("head_pool").output.shape[1:])
    head = model.get_layer("predictions")(model.get_layer("head_dropout")(features))
    return keras.Model(features, head, name="head")
