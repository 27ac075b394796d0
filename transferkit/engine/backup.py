"""A phase's backup: everything a killed phase needs to go on as if it had not been.

One file per phase (`checkpoints/<phase>.npz`), replaced atomically after every
epoch: the model's weights, the optimizer's variables (moments, step count, averaged
weights), the best weights so far, and the state below as JSON. One file written by
one rename cannot be half old and half new, so a kill at any moment leaves either the
previous epoch's backup or this one's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zipfile
from pathlib import Path

import numpy as np

from transferkit.fileio import atomic_path


@dataclasses.dataclass
class State:
    """Where a phase stands.

    Attributes:
        epoch: Epochs finished.
        best: Lowest validation loss so far (inf: none yet).
        wait: Epochs since it was reached (early stopping's patience used).
        rows: The history, one dict per finished epoch.
        stopped: Early stopping or the time stop ended the phase.
        finished: The phase is done; the weights are its final ones.
    """

    epoch: int = 0
    best: float = math.inf
    wait: int = 0
    rows: list[dict] = dataclasses.field(default_factory=list)
    stopped: bool = False
    finished: bool = False


@dataclasses.dataclass
class Backup:
    """A loaded backup: the state and the arrays."""

    state: State
    weights: list[np.ndarray]
    optimizer: list[np.ndarray]
    best: list[np.ndarray]


def save(path: Path, state: State, weights: list, optimizer: list, best: list) -> None:
    """Writes the backup atomically (see the module's docstring)."""
    arrays = {f"w{i}": w for i, w in enumerate(weights)}
    arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(optimizer)})
    arrays.update({f"b{i}": w for i, w in enumerate(best)})
    with atomic_path(path, suffix=".tmp.npz") as tmp:
        np.savez(tmp, state=np.array(json.dumps(dataclasses.asdict(state))), **arrays)


def load(path: Path) -> Backup | None:
    """The backup at `path`; None when there is none or it cannot be read."""
    try:
        with np.load(path) as saved:
            state = State(**json.loads(str(saved["state"])))
            part = lambda p: [saved[f"{p}{i}"] for i in range(  # noqa: E731
                sum(k[0] == p and k[1:].isdigit() for k in saved.files))]
            return Backup(state, part("w"), part("o"), part("b"))
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError):
        return None
