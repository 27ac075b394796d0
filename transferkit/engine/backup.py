"""A phase's backup (`checkpoints/<phase>.npz`): the model's weights, the optimizer's
variables, the best weights so far and the `State`, replaced atomically after every
epoch: a kill at any moment leaves either the previous epoch's backup or this one's."""

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
    """Where a phase stands: epochs finished, the lowest validation loss and the epochs
    since (early stopping's patience used), the history rows, whether early stopping or
    the time stop ended it (`stopped`) and whether it is done (`finished`)."""

    epoch: int = 0
    best: float = math.inf
    wait: int = 0
    rows: list[dict] = dataclasses.field(default_factory=list)
    stopped: bool = False
    finished: bool = False


@dataclasses.dataclass
class Backup:
    state: State
    weights: list[np.ndarray]
    optimizer: list[np.ndarray]
    best: list[np.ndarray]


def save(path: Path, state: State, weights: list, optimizer: list, best: list) -> None:
    """Writes the backup atomically."""
    arrays = {f"{p}{i}": np.asarray(a) for p, part in zip("wob", (weights, optimizer, best))
              for i, a in enumerate(part)}
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
