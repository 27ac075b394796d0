"""Distribution (`--distribute`): the strategy a run trains under, and the engine's step
under it.

    none          the default strategy (one device)
    mirrored      `MirroredStrategy`: every GPU of this machine (or its logical CPUs)
    multi-worker  `MultiWorkerMirroredStrategy`, configured by the standard `TF_CONFIG`
    auto          mirrored when more than one GPU is visible, otherwise none

`config.batch_size` is one replica's batch; a step takes the global batch (`batch_size ×
replicas`) and the learning rates scale with it (Goyal et al. 2017); one replica changes
nothing. Only the chief (`chief` in `TF_CONFIG`, else worker 0) writes the run directory;
every other worker trains the same steps in a private folder (`writer_dir`), kept across
restarts so a restarted worker resumes from its own backup.

With replicas, `fit` replaces `model.fit`, which fails under `MultiWorkerMirroredStrategy`
in Keras 3 (a `PerReplica` batch converted to a tensor: keras-team/keras#20585,
`benchmarks/mwms_fit_repro.py`) and under `MirroredStrategy` when the replicas' shares of
a batch differ in size.
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
from transferkit.config import DISTRIBUTE_CHOICES as CHOICES
from transferkit.errors import ConfigError, RunError


@dataclasses.dataclass(frozen=True)
class Distribution:
    """The strategy of a run (`kind`: none, mirrored or multi-worker) and this process's
    place in it: whether it writes the run directory, its task (e.g. `"worker 1"`)."""

    kind: str
    strategy: tf.distribute.Strategy
    is_chief: bool = True
    task: str = ""

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    @property
    def replicated(self) -> tf.distribute.Strategy | None:
        """The strategy the engine trains under; None (`model.fit`) on one device."""
        return None if self.kind == "none" else self.strategy

    def scope(self) -> contextlib.AbstractContextManager:
        return self.strategy.scope()

    def inference_scope(self) -> contextlib.AbstractContextManager:
        """Where to compute features and predictions: none for multi-worker, where every
        worker needs all of them (a sharded predict would give each only its share)."""
        return contextlib.nullcontext() if self.kind == "multi-worker" else self.scope()

    def local(self, model: keras.Model) -> keras.Model:
        """For multi-worker, the same layers in a model made outside the strategy, whose
        `predict` runs on this worker alone."""
        if self.kind != "multi-worker":
            return model
        return keras.Model(model.inputs, model.outputs, name=model.name)

    @contextlib.contextmanager
    def writer_dir(self, out_dir: Path) -> Iterator[Path]:
        """`out_dir` for the chief; for other workers a private folder, removed when the
        run ends (not when it fails: a restarted worker resumes from it)."""
        if self.is_chief:
            yield out_dir
            return
        key = hashlib.sha256(str(out_dir.resolve()).encode()).hexdigest()[:12]
        private = Path(tempfile.gettempdir()) / \
            f"transferkit-{self.task.replace(' ', '')}-{key}"
        yield private
        shutil.rmtree(private, ignore_errors=True)


def make_distribution(name: str) -> Distribution:
    """Creates the strategy `--distribute name` asks for, before any other TensorFlow op
    (`MultiWorkerMirroredStrategy` must configure the runtime before it starts).

    Raises:
        ConfigError: An unknown name, or `multi-worker` without a usable `TF_CONFIG`.
    """
    if name not in CHOICES:
        raise ConfigError(f"--distribute must be {', '.join(CHOICES[:-1])} or "
                          f"{CHOICES[-1]}, got {name!r}")
    if name == "multi-worker":
        task = _tf_config_task()
        chief = task["type"] == "chief" or (task["type"] == "worker" and task["index"] == 0
                                            and not task["cluster"].get("chief"))
        return Distribution("multi-worker", tf.distribute.MultiWorkerMirroredStrategy(),
                            chief, f"{task['type']} {task['index']}")
    if name == "auto":
        name = "mirrored" if detect().gpus > 1 else "none"
    if name == "mirrored":
        return Distribution("mirrored", tf.distribute.MirroredStrategy())
    return Distribution("none", tf.distribute.get_strategy())


def _tf_config_task() -> dict:
    text = os.environ.get("TF_CONFIG", "")
    help_ = ('set it to JSON like {"cluster": {"worker": ["host1:port", "host2:port"]}, '
             '"task": {"type": "worker", "index": 0}} (docs/training.md, "Scaling out")')
    if not text.strip():
        raise ConfigError(f"--distribute multi-worker needs the TF_CONFIG environment "
                          f"variable; {help_}")
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        index = int(task["index"])
        if not 0 <= index < len(cluster[task["type"]]):
            raise IndexError(index)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise ConfigError(f"TF_CONFIG is not a usable cluster description ({e!r}); "
                          f"{help_}") from None
    return {"type": task["type"], "index": index, "cluster": cluster}


def batched(train, val, batch_size: int, seed: int) -> tuple[tf.data.Dataset, ...]:
    """`(x, y)` arrays as shuffled global batches; datasets sharded by DATA (every worker
    builds the same pipeline from in-memory file lists and keeps its own batches)."""
    if not isinstance(train, tf.data.Dataset):
        train = tf.data.Dataset.from_tensor_slices(tuple(train)).shuffle(
            len(train[0]), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
        val = tf.data.Dataset.from_tensor_slices(tuple(val)).batch(batch_size)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = \
        tf.data.experimental.AutoShardPolicy.DATA
    return train.with_options(options), val.with_options(options)


def fit(model: keras.Model, train: tf.data.Dataset, val: tf.data.Dataset, epochs: int,
        initial_epoch: int, strategy: tf.distribute.Strategy,
        class_weight: dict[int, float] | None, callbacks: list[keras.callbacks.Callback],
        verbose: int = 0) -> None:
    """`model.fit(train, validation_data=val, ...)` under a strategy with replicas.

    Each replica's loss is weighted by `class_weight` and divided by the images of the
    whole global step, so the all-reduced (summed) gradients are those of the global mean
    loss; the epoch's figures are summed over replicas (`strategy.reduce`).

    Args:
        model: A compiled model, built under `strategy.scope()`.
        train, val: Global batches of `(x, one-hot y)`.
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

    def step(x, y, training):
        count = tf.distribute.get_replica_context().all_reduce(
            "SUM", tf.cast(tf.shape(y)[0], tf.float32))
        with tf.GradientTape() as tape:
            pred = model(x, training=training)
            w = tf.gather(weights, tf.argmax(y, axis=-1)) if training else \
                tf.ones(tf.shape(y)[:1])
            losses = model.loss.call(y, pred) * w  # per image: the compiled loss
            loss = tf.reduce_sum(losses) / tf.maximum(count, 1.0)
            if model.losses:
                loss += tf.add_n(model.losses) / strategy.num_replicas_in_sync
            # mixed_float16: the LossScaleOptimizer's apply_gradients divides by the scale.
            scaled = optimizer.scale_loss(loss)
        if training:
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
        correct = tf.cast(tf.equal(tf.argmax(y, -1), tf.argmax(pred, -1)), tf.float32)
        return tf.stack([tf.reduce_sum(losses), tf.reduce_sum(correct),
                         tf.cast(tf.shape(y)[0], tf.float32)])

    @tf.function
    def run(batch, training):
        return strategy.reduce("SUM", strategy.run(lambda x, y: step(x, y, training),
                                                   args=batch), axis=None)

    def epoch_of(ds, hooks=None) -> tuple[float, float]:
        total = np.zeros(3)
        for i, batch in enumerate(strategy.experimental_distribute_dataset(ds)):
            if hooks:
                hooks.on_train_batch_begin(i)
            total += run(batch, hooks is not None).numpy()
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
        loss, accuracy = epoch_of(train, hooks)
        val_loss, val_accuracy = epoch_of(val)
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
    """The epoch every worker resumes from; they must agree, or the steps would not pair
    up across workers (a worker killed between two workers' backups)."""
    value = tf.constant([1, epoch, epoch * epoch], tf.int64)
    n, total, squares = (int(v) for v in strategy.reduce(
        "SUM", strategy.run(lambda: tf.identity(value)), axis=None))
    if total * total != n * squares:  # not all equal (Cauchy-Schwarz)
        raise RunError(f"the workers' backups are at different epochs (this one at "
                       f"{epoch}, the mean {total / n:g}); pass --overwrite to every "
                       "worker to start the phase again")
    return epoch
