"""The engine's step under a strategy with replicas (`--distribute mirrored/multi-worker`).

`model.fit` does not work under `MultiWorkerMirroredStrategy` in Keras 3 (it fails
before the first step, in `_maybe_symbolic_build`, converting a `PerReplica` batch to a
tensor: keras-team/keras#20585, tensorflow#72388; `benchmarks/mwms_fit_repro.py`
reproduces it), nor under `MirroredStrategy` when the replicas' shares of a batch differ
in size ("Inputs to operation AddN must have the same size"). So with replicas a phase
runs here: a step under `strategy.run`, summed with `strategy.reduce`, driving the same
callbacks `model.fit` would, from the epoch the phase's backup says.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from transferkit.errors import RunError


def fit(model: keras.Model, train: tf.data.Dataset, val: tf.data.Dataset, epochs: int,
        initial_epoch: int, strategy: tf.distribute.Strategy,
        class_weight: dict[int, float] | None, callbacks: list[keras.callbacks.Callback],
        verbose: int = 0) -> None:
    """`model.fit(train, validation_data=val, ...)` under a strategy with replicas.

    Each step runs on every replica (`strategy.run`): the loss of its images, weighted
    by `class_weight` (None: all 1) and divided by the images of the whole global step,
    so the optimizer's all-reduced (summed) gradients are those of the global mean loss.
    The epoch's loss and accuracy are summed over replicas (`strategy.reduce`).

    Args:
        model: A compiled model, built under `strategy.scope()`.
        train, val: Batches of `(x, one-hot y)`, the global batch.
        epochs, initial_epoch: Epochs of the phase, and those already done.
        strategy, class_weight, callbacks: As for `model.fit`.
        verbose: Print a line per epoch (not 0).
    """
    n_classes = model.output_shape[-1]
    weights = tf.constant([1.0] * n_classes if class_weight is None else
                          [class_weight[i] for i in range(n_classes)], tf.float32)
    optimizer = model.optimizer
    if not optimizer.built:  # its variables now, not inside the first traced step
        with strategy.scope():
            optimizer.build(model.trainable_variables)

    def totals(x, y, training):
        pred = model(x, training=training)
        w = tf.gather(weights, tf.argmax(y, axis=-1)) if training else \
            tf.ones(tf.shape(y)[:1])
        losses = model.loss.call(y, pred)  # per image: the compiled loss, unreduced
        correct = tf.cast(tf.equal(tf.argmax(y, -1), tf.argmax(pred, -1)), tf.float32)
        return losses, w, correct

    def train_step(x, y):
        context = tf.distribute.get_replica_context()
        count = context.all_reduce("SUM", tf.cast(tf.shape(y)[0], tf.float32))
        with tf.GradientTape() as tape:
            losses, w, correct = totals(x, y, True)
            loss = tf.reduce_sum(losses * w) / tf.maximum(count, 1.0)
            if model.losses:
                loss += tf.add_n(model.losses) / strategy.num_replicas_in_sync
            # mixed_float16: compile wrapped the optimizer in a LossScaleOptimizer, whose
            # apply_gradients divides by the scale; the loss must be multiplied by it.
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return tf.stack([tf.reduce_sum(losses * w), tf.reduce_sum(correct),
                         tf.cast(tf.shape(y)[0], tf.float32)])

    def test_step(x, y):
        losses, _, correct = totals(x, y, False)
        return tf.stack([tf.reduce_sum(losses), tf.reduce_sum(correct),
                         tf.cast(tf.shape(y)[0], tf.float32)])

    @tf.function
    def run(step, batch):
        return strategy.reduce("SUM", strategy.run(step, args=batch), axis=None)

    def epoch_of(step, ds, hooks=None) -> tuple[float, float]:
        total = np.zeros(3)
        for i, batch in enumerate(strategy.experimental_distribute_dataset(ds)):
            if hooks:
                hooks.on_train_batch_begin(i)
            total += run(step, batch).numpy()
            if hooks:
                hooks.on_train_batch_end(i)
                if model.stop_training:  # the time stop, mid-epoch
                    break
        return total[0] / max(total[2], 1), total[1] / max(total[2], 1)

    hooks = keras.callbacks.CallbackList(callbacks, model=model)
    model.stop_training = False
    hooks.on_train_begin()
    for epoch in range(_agreed_epoch(strategy, initial_epoch), epochs):
        hooks.on_epoch_begin(epoch)
        loss, accuracy = epoch_of(train_step, train, hooks)
        val_loss, val_accuracy = epoch_of(test_step, val)
        logs = {"accuracy": accuracy, "loss": loss, "val_accuracy": val_accuracy,
                "val_loss": val_loss}
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in logs.items()), flush=True)
        hooks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    hooks.on_train_end()


def _agreed_epoch(strategy: tf.distribute.Strategy, epoch: int) -> int:
    """The epoch every worker resumes from; they must agree, or the steps would not
    pair up across workers (a worker killed between two workers' backups)."""
    value = tf.constant([1, epoch, epoch * epoch], tf.int64)
    n, total, squares = (int(v) for v in strategy.reduce(
        "SUM", strategy.run(lambda: tf.identity(value)), axis=None))
    if total * total != n * squares:  # not all equal (Cauchy-Schwarz)
        raise RunError(f"the workers' backups are at different epochs (this one at "
                       f"{epoch}, the mean {total / n:g}); pass --overwrite to every "
                       "worker to start the phase again")
    return epoch
