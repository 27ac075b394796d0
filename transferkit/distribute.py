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
folder of its own (`writer_dir`), kept across restarts so that a restarted worker
resumes from its own backup in step with the chief, and deleted when the run ends.
With replicas the engine trains with its own step (`transferkit.engine.replicas`:
`model.fit` breaks under these strategies in Keras 3).
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
import tensorflow as tf

from transferkit.accelerator import detect
from transferkit.config import DISTRIBUTE_CHOICES
from transferkit.errors import ConfigError

CHOICES = DISTRIBUTE_CHOICES


@dataclasses.dataclass(frozen=True)
class Distribution:
    """The strategy of a run (`kind`: none, mirrored or multi-worker; auto resolved)
    and this process's place in it: whether it writes the run directory (`is_chief`),
    its task in `TF_CONFIG` (e.g. `"worker 1"`; `""` on one machine)."""

    kind: str
    strategy: tf.distribute.Strategy
    is_chief: bool = True
    task: str = ""

    @property
    def replicas(self) -> int:
        """Replicas in sync (devices of all workers together)."""
        return int(self.strategy.num_replicas_in_sync)

    @property
    def replicated(self) -> tf.distribute.Strategy | None:
        """The strategy the engine trains under; None (`model.fit`) on one device."""
        return None if self.kind == "none" else self.strategy

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
    """Creates the strategy `--distribute name` (one of `CHOICES`) asks for.

    Called before any other TensorFlow op of the process: `MultiWorkerMirroredStrategy`
    must configure the runtime before it starts.

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
             '"task": {"type": "worker", "index": 0}} (docs/training.md, "Scaling out")')
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
