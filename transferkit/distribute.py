"""Distribution: the `tf.distribute` strategy a run trains under (`--distribute`).

    none          the default strategy (one device)
    mirrored      `MirroredStrategy`: every GPU of this machine (or its logical CPUs)
    multi-worker  `MultiWorkerMirroredStrategy`, configured by the standard `TF_CONFIG`
                  environment variable (any launcher that sets it: Kubernetes, Slurm,
                  Vertex AI)
    auto          mirrored when more than one GPU is visible, otherwise none

`config.batch_size` is the batch of one replica: a step takes the *global* batch,
`batch_size × replicas`, split evenly between them. The learning rates scale linearly
with it (`learning_rate × replicas`): the gradient of a batch n times larger is averaged
over n times more images, so n times larger steps keep the progress per image (Goyal et
al. 2017, "Accurate, large minibatch SGD"); phase 2's one-epoch warm-up eases the larger
first steps in. One replica changes nothing.

Only the chief writes the run directory: the task of type `chief` in `TF_CONFIG`, or
worker 0 when there is none. Every other worker trains the same steps in a private
folder of its own (`worker_dir`), kept across restarts so that a restarted worker
resumes from its own backup in step with the chief, and deleted when the run ends.

`model.fit` does not work under `MultiWorkerMirroredStrategy` in Keras 3 (it fails
before the first step, in `_maybe_symbolic_build`, converting a `PerReplica` batch to a
tensor: keras-team/keras#20585, tensorflow#72388; `benchmarks/mwms_fit_repro.py`
reproduces it), nor under `MirroredStrategy` when the replicas' shares of a batch differ
in size (the same function adds them up: "Inputs to operation AddN must have the same
size"). So with replicas, training goes through `fit` below: a step under
`strategy.run`, summed with `strategy.reduce`, driving the same Keras callbacks
`model.fit` would (CSV log, early stopping with the best weights, per-epoch backup).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import keras
import numpy as np
import tensorflow as tf

from transferkit.accelerator import detect
from transferkit.config import DISTRIBUTE_CHOICES
from transferkit.errors import ConfigError, RunError

CHOICES = DISTRIBUTE_CHOICES


@dataclasses.dataclass(frozen=True)
class Distribution:
    """The strategy of a run and this process's place in it.

    Attributes:
        kind: `"none"`, `"mirrored"` or `"multi-worker"` (auto resolved).
        strategy: The `tf.distribute.Strategy`.
        is_chief: Whether this process writes the run directory.
        task: This process in `TF_CONFIG`, e.g. `"worker 1"` (`""` on one machine).
    """

    kind: str
    strategy: tf.distribute.Strategy
    is_chief: bool = True
    task: str = ""

    @property
    def replicas(self) -> int:
        """Replicas in sync (devices of all workers together)."""
        return int(self.strategy.num_replicas_in_sync)

    def global_batch(self, per_replica: int) -> int:
        """The images of one step: `per_replica` on each replica."""
        return per_replica * self.replicas

    def learning_rate(self, rate: float) -> float:
        """`rate` (tuned for one replica) scaled linearly with the global batch."""
        return rate * self.replicas

    def dataset(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        """`ds` sharded between workers by batch (DATA): our file lists are in memory,
        so there are no files to shard, and every worker builds the same pipeline (same
        shuffle seed) and keeps its own batches of it."""
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.DATA
        return ds.with_options(options)

    def scope(self) -> contextlib.AbstractContextManager:
        """The strategy's scope: build, compile and train in it."""
        return self.strategy.scope()

    def inference_scope(self) -> contextlib.AbstractContextManager:
        """Where to compute features and predictions: the strategy's scope on one
        machine (its devices share the batches); none for multi-worker, where every
        worker computes all of them itself (each needs them all; a sharded predict
        would hand each only its own share)."""
        if self.kind == "multi-worker":
            return contextlib.nullcontext()
        return self.strategy.scope()

    def local(self, model: keras.Model) -> keras.Model:
        """`model` for inference (`inference_scope`): for multi-worker, the same layers
        in a model made outside the strategy, whose `predict` runs on this worker alone
        (a model built in the scope would predict under the strategy, sharded)."""
        if self.kind != "multi-worker":
            return model
        return keras.Model(model.inputs, model.outputs, name=model.name)

    def fit(self, model: keras.Model, x, y=None, validation_data=None, epochs: int = 1,
            batch_size: int | None = None, class_weight=None, callbacks=(),
            verbose: int = 0, seed: int = 0) -> keras.callbacks.History:
        """`model.fit` on one device; with replicas, the `fit` below (`model.fit` is
        broken there, see the module's docstring). Arrays are batched by `batch_size`
        and shuffled with `seed`; datasets are used as they are (global batches)."""
        if self.kind == "none":
            return model.fit(x, y, validation_data=validation_data, epochs=epochs,
                             batch_size=batch_size, class_weight=class_weight,
                             callbacks=list(callbacks), verbose=verbose)
        val = validation_data
        if not isinstance(x, tf.data.Dataset):
            x = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
                len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
            val = tf.data.Dataset.from_tensor_slices(tuple(val)).batch(batch_size)
        return fit(model, self.dataset(x), self.dataset(val), epochs, self.strategy,
                   class_weight, list(callbacks), verbose)

    @contextlib.contextmanager
    def writer_dir(self, out_dir: Path) -> Iterator[Path]:
        """The folder this process writes the run to: `out_dir` for the chief; for the
        other workers a private folder, removed when the run ends (not when it fails:
        a restarted worker resumes from it)."""
        if self.is_chief:
            yield out_dir
            return
        key = hashlib.sha256(str(out_dir.resolve()).encode()).hexdigest()[:12]
        private = Path(tempfile.gettempdir()) / \
            f"transferkit-{self.task.replace(' ', '')}-{key}"
        yield private
        shutil.rmtree(private, ignore_errors=True)


def make_distribution(name: str) -> Distribution:
    """Creates the strategy `--distribute name` asks for.

    Called before any other TensorFlow op of the process: `MultiWorkerMirroredStrategy`
    must configure the runtime before it starts.

    Args:
        name: One of `CHOICES`.

    Returns:
        The distribution.

    Raises:
        ConfigError: An unknown name, or `multi-worker` without a usable `TF_CONFIG`.
    """
    if name not in CHOICES:
        raise ConfigError(f"--distribute must be {', '.join(CHOICES[:-1])} or "
                          f"{CHOICES[-1]}, got {name!r}")
    if name == "multi-worker":
        task = _tf_config_task()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        return Distribution("multi-worker", strategy, _is_chief(task),
                            f"{task['type']} {task['index']}")
    if name == "auto":
        name = "mirrored" if detect().gpus > 1 else "none"
    if name == "mirrored":
        return Distribution("mirrored", tf.distribute.MirroredStrategy())
    return Distribution("none", tf.distribute.get_strategy())


def _tf_config_task() -> dict:
    text = os.environ.get("TF_CONFIG", "")
    help_ = ('set it to JSON like {"cluster": {"worker": ["host1:port", "host2:port"]}, '
             '"task": {"type": "worker", "index": 0}} (see README "Scaling out")')
    if not text.strip():
        raise ConfigError(f"--distribute multi-worker needs the TF_CONFIG environment "
                          f"variable; {help_}")
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        hosts = cluster[task["type"]]
        index = int(task["index"])
        if not 0 <= index < len(hosts):
            raise IndexError(index)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise ConfigError(f"TF_CONFIG is not a usable cluster description ({e!r}); "
                          f"{help_}") from None
    return {"type": task["type"], "index": index, "cluster": cluster}


def _is_chief(task: dict) -> bool:
    if task["type"] == "chief":
        return True
    return task["type"] == "worker" and task["index"] == 0 and \
        not task["cluster"].get("chief")


def fit(model: keras.Model, train: tf.data.Dataset, val: tf.data.Dataset, epochs: int,
        strategy: tf.distribute.Strategy, class_weight: dict[int, float] | None,
        callbacks: list[keras.callbacks.Callback], verbose: int = 0
        ) -> keras.callbacks.History:
    """`model.fit(train, validation_data=val, ...)` under a strategy with replicas.

    Each step runs on every replica (`strategy.run`): the loss of its images, weighted
    by `class_weight` and divided by the images of the whole global step, so the
    optimizer's all-reduced (summed) gradients are those of the global mean loss. The
    epoch's loss and accuracy are summed over replicas (`strategy.reduce`). The
    callbacks see the same calls and logs (`loss`, `accuracy`, `val_loss`,
    `val_accuracy`) as under `model.fit`; `BackupAndRestore` sets the first epoch.

    Args:
        model: A compiled model, built under `strategy.scope()`.
        train: The training batches (global batch), `(images, one-hot labels)`.
        val: The validation batches.
        epochs: Epochs to train (including those a backup says are done).
        strategy: The strategy.
        class_weight: Weight of each class's images; None: all 1.
        callbacks: Keras callbacks.
        verbose: Print a line per epoch (not 0).

    Returns:
        The `History` of the epochs trained in this call.
    """
    n_classes = model.output_shape[-1]
    weights = tf.constant([1.0] * n_classes if class_weight is None else
                          [class_weight[i] for i in range(n_classes)], tf.float32)
    loss_fn = model.loss
    optimizer = model.optimizer
    with strategy.scope():  # its variables now, not inside the first traced step
        optimizer.build(model.trainable_variables)

    def totals(x, y, training):
        pred = model(x, training=training)
        w = tf.gather(weights, tf.argmax(y, axis=-1)) if training else \
            tf.ones(tf.shape(y)[:1])
        losses = loss_fn.call(y, pred)  # per image: the compiled loss, unreduced
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

    def epoch_of(step, ds) -> tuple[float, float]:
        total = np.zeros(3)
        for batch in strategy.experimental_distribute_dataset(ds):
            total += run(step, batch).numpy()
        return total[0] / max(total[2], 1), total[1] / max(total[2], 1)

    history = keras.callbacks.History()
    hooks = keras.callbacks.CallbackList(callbacks + [history], model=model)
    model.stop_training = False
    model._initial_epoch = 0  # set by BackupAndRestore (model.fit reads it too)
    hooks.on_train_begin()
    first = _agreed_epoch(strategy, int(model._initial_epoch))
    for epoch in range(first, epochs):
        hooks.on_epoch_begin(epoch)
        loss, accuracy = epoch_of(train_step, train)
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
    return history


def _agreed_epoch(strategy: tf.distribute.Strategy, epoch: int) -> int:
    """The epoch every worker resumes from; they must agree, or the steps would not
    pair up across workers (a worker killed between two workers' backups)."""
    value = tf.constant([1, epoch, epoch * epoch], tf.int64)
    n, total, squares = (int(v) for v in strategy.reduce(
        "SUM", strategy.run(lambda: tf.identity(value)), axis=None))
    if total * total != n * squares:  # not all equal (Cauchy-Schwarz)
        raise RunError(f"the workers' backups are at different epochs (this one at "
                       f"{epoch}, the mean {total / n:g}); pass --overwrite to every "
                       "worker to start phase 2 again")
    return epoch
