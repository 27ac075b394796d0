"""Minimal repro: does `model.fit` work under MultiWorkerMirroredStrategy (Keras 3)?

keras-team/keras#20585 and tensorflow#72388 report it broken since Keras 3. This starts
two worker processes on free localhost ports (CPU, TF_CONFIG), each running a tiny
`model.fit` under MWMS, and prints what happened to each (exit code, last lines).

    python benchmarks/mwms_fit_repro.py

Found with Keras 3.15.1, TensorFlow 2.21.0 (CPU, 2 workers, 2 replicas in sync): both
workers exit 1 before the first step, in
keras/src/backend/tensorflow/trainer.py:372 fit → :731 _maybe_symbolic_build
(`strategy.reduce("MEAN", batch)`):
    ValueError: Attempt to convert a value (PerReplica:{...}) with an unsupported type
    (<class 'tensorflow.python.distribute.values.PerReplica'>) to a Tensor.
So transferkit's engine trains with its own step under the strategy
(`transferkit/distribute.py`, strategy.run) instead.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

WORKER = r'''
import json, os, sys
import tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
import keras
keras.config.disable_traceback_filtering()  # show the Keras frame that fails
import numpy as np
print("replicas", strategy.num_replicas_in_sync, "keras", keras.__version__,
      "tf", tf.__version__, flush=True)
x = np.random.RandomState(0).rand(64, 8).astype("float32")
y = (x.sum(1) > 4).astype("float32")
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
opts = tf.data.Options()
opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
ds = ds.with_options(opts)
with strategy.scope():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
hist = model.fit(ds, epochs=2, verbose=2)
print("FIT OK", {k: [round(float(v), 4) for v in vs] for k, vs in hist.history.items()},
      "weights", float(np.sum(model.get_weights()[0])), flush=True)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def main() -> None:
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": cluster,
                                         "task": {"type": "worker", "index": i}}))
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    try:
        for i, p in enumerate(procs):
            out, _ = p.communicate(timeout=300)
            print(f"--- worker {i}: exit {p.returncode}")
            lines = out.strip().splitlines()
            # The error message quotes the whole batch: show the lines that say what failed.
            keep = [l.replace(sys.prefix, "") for l in lines
                    if l.startswith(("replicas", "FIT OK", "Traceback"))
                    or "keras/src" in l or "<string>" in l or "Error" in l]
            print("\n".join(keep[-20:]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


if __name__ == "__main__":
    main()
