"""How this process uses the hardware it sees: GPUs, mixed precision, the default batch.

On a GPU with tensor cores (compute capability 7.0 and up: V100, T4, A100, H100, RTX
20xx and later) `mixed_float16` computes in float16 and keeps the weights in float32:
about twice the images per second, and half the activation memory, so a larger batch
fits. The classifier's output layer stays float32 (`model.build_classifier`): a float16
softmax loses small probabilities, which calibration and the "not sure" threshold read.
On a CPU float16 is slower than float32, so `auto` never turns it on there.

Everything here is decided once per training run and recorded in its `config.json`
(the resolved batch size and precision), so a run says how it was trained.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator

import keras
import tensorflow as tf

from transferkit.errors import ConfigError

CPU_BATCH = 32          # images per step on a CPU: larger only costs memory there
GPU_BATCH = 128         # per GPU (replica): keeps a GPU busy with a small backbone
MIXED_PRECISION = ("auto", "on", "off")
MIN_CAPABILITY = (7, 0)  # tensor cores: float16 matrix units


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """The GPUs this process sees.

    Attributes:
        gpus: Visible GPUs.
        capability: The lowest compute capability among them (None: no GPU, or
            TensorFlow does not report it).
    """

    gpus: int = 0
    capability: tuple[int, int] | None = None

    @property
    def has_gpu(self) -> bool:
        """Whether any GPU is visible."""
        return self.gpus > 0

    @property
    def default_batch(self) -> int:
        """Images per training step (per replica) when `--batch-size` is not given."""
        return GPU_BATCH if self.has_gpu else CPU_BATCH

    def mixed_precision(self, choice: str = "auto") -> bool:
        """Whether to train in `mixed_float16`.

        Args:
            choice: `"auto"` (on a GPU of compute capability 7.0 or more), `"on"` or
                `"off"`.

        Raises:
            ConfigError: Another choice.
        """
        check_mixed_precision(choice)
        if choice != "auto":
            return choice == "on"
        return self.has_gpu and self.capability is not None and \
            self.capability >= MIN_CAPABILITY


def check_mixed_precision(choice: str) -> None:
    """Raises ConfigError unless `choice` is one of `MIXED_PRECISION`."""
    if choice not in MIXED_PRECISION:
        raise ConfigError(f"--mixed-precision must be auto, on or off, got {choice!r}")


def detect() -> Accelerator:
    """The GPUs TensorFlow sees now (`CUDA_VISIBLE_DEVICES` decides which)."""
    gpus = tf.config.list_physical_devices("GPU")
    capabilities = []
    for gpu in gpus:
        try:
            details = tf.config.experimental.get_device_details(gpu)
        except (ValueError, RuntimeError):  # some builds cannot say
            continue
        if details.get("compute_capability"):
            capabilities.append(tuple(details["compute_capability"]))
    # All GPUs compute in the one policy: the weakest one decides.
    return Accelerator(len(gpus), min(capabilities) if len(capabilities) == len(gpus)
                       and capabilities else None)


@contextlib.contextmanager
def precision(mixed: bool) -> Iterator[None]:
    """Builds and trains the models of the block in `mixed_float16` (or float32).

    Keras keeps the dtype policy globally; this sets it for the block only and puts
    back whatever was there before, also when the block raises.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16" if mixed else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
