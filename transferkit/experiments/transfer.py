"""Transfer vs scratch: test accuracy as the amount of training data grows.

The transfer-learning slide, measured on the user's folder. For each fraction of the
training split (stratified and nested: the 10% set holds the 5% set) three classifiers
are trained and scored on the same test split:

- `scratch`: the backbone from random weights (`--weights none`), every layer trained,
  BatchNorm included (frozen BatchNorm statistics of a random network mean nothing);
- `frozen`: only the head (dropout + dense softmax) on the pretrained backbone's pooled
  features, read from the experiment's feature store (computed once for every image);
- `fine-tune`: that head, then every block of the pretrained backbone trained end to end
  (BatchNorm frozen, as in training), whatever the plan would choose at that size.

All three stop early on the validation loss with the same maximum epochs and patience
(the best weights restored). A small subset would give an epoch of two or three steps,
so an epoch is at least `min_steps` steps (the subset repeated): every method gets at
least `max_epochs * min_steps` chances to learn. The plan's own choice at each size
(`plan.fine_tune_fraction`) is marked in `transfer.csv` (`plan_choice`), and its
thresholds are drawn on the plot (`experiments/plot.py`).

Every cell (fraction, method) writes `cells/<fraction>_<method>.json` atomically when
it finishes, so a killed experiment run again skips the finished cells.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

import keras
import numpy as np
import pandas as pd

from transferkit.accelerator import CPU_BATCH
from transferkit.config import TrainConfig
from transferkit.errors import ConfigError
from transferkit.fileio import read_json, write_csv, write_json

METHODS = ("scratch", "frozen", "fine-tune")
FRACTIONS = (0.05, 0.1, 0.25, 0.5, 1.0)
COLUMNS = ["fraction", "images_per_class", "method", "accuracy", "ci_low", "ci_high",
           "epochs", "seconds", "plan_choice"]
_TRAIN = TrainConfig()
CSV_FILE, PLOT_FILE, CONFIG_FILE, SPLITS_FILE = ("transfer.csv", "transfer.png",
                                                 "experiment.json", "splits.csv")


@dataclasses.dataclass
class TransferConfig:
    """The experiment's options (saved as `experiment.json`; a rerun must match them).

    Attributes:
        data: Folder with one subfolder per class.
        fractions: Fractions of the training split, each in (0, 1].
        methods: Any of `scratch`, `frozen`, `fine-tune`.
        backbone: Registry name.
        image_size: Input side for every method.
        max_epochs: Maximum epochs of every method.
        patience: Early-stopping patience (epochs without a better validation loss).
        min_steps: Fewest steps an epoch has (small subsets are repeated).
        batch_size: Images per step.
        learning_rate: Adam's rate for the head and for training from scratch.
        fine_tune_learning_rate: Adam's peak rate when fine-tuning (after one epoch of
            warm-up, then cosine decay; small steps keep the pretrained filters).
        val_split: Fraction of each class held out for early stopping.
        test_split: Fraction of each class held out for the score.
        seed: Seed of the split, the subsets, initialization and augmentation.
        workers: Threads decoding images.
    """

    data: str
    fractions: tuple[float, ...] = FRACTIONS
    methods: tuple[str, ...] = METHODS
    # Training's own defaults where the experiment has the same option: it measures them.
    backbone: str = _TRAIN.backbone
    image_size: int = 128
    max_epochs: int = 6
    patience: int = 2
    min_steps: int = 16
    batch_size: int = CPU_BATCH  # fixed, not the device's: cells compare alike
    learning_rate: float = _TRAIN.head_learning_rate
    fine_tune_learning_rate: float = _TRAIN.fine_tune_learning_rate
    val_split: float = _TRAIN.val_split
    test_split: float = _TRAIN.test_split
    seed: int = _TRAIN.seed
    workers: int = _TRAIN.workers

    def checked(self) -> "TransferConfig":
        """A copy with sorted, validated fractions and methods.

        Raises:
            ConfigError: A fraction outside (0, 1], an unknown method, or a count < 1.
        """
        fractions = tuple(sorted({float(f) for f in self.fractions}))
        if not fractions or not all(0 < f <= 1 for f in fractions):
            raise ConfigError(f"--fractions must be numbers in (0, 1], e.g. "
                              f"0.05,0.1,0.25,0.5,1; got {self.fractions}")
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown or not self.methods:
            raise ConfigError(f"unknown method {unknown[0] if unknown else '(none)'!r}; "
                              f"choose from {', '.join(METHODS)}")
        for name in ("max_epochs", "min_steps", "batch_size", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        methods = tuple(m for m in METHODS if m in self.methods)
        return dataclasses.replace(self, fractions=fractions, methods=methods)


def nested_subsets(splits: pd.DataFrame, fractions: Sequence[float], seed: int
                   ) -> dict[float, list[int]]:
    """Row positions of the training split kept at each fraction.

    Stratified and nested: each class's training images are shuffled once (seeded) and
    fraction f keeps the first `ceil(f * n)` of them (at least one), so a smaller
    fraction's set is always inside a larger one's.

    Args:
        splits: `splits.csv` (path, class, split).
        fractions: Fractions in (0, 1].
        seed: Seed of the shuffle.

    Returns:
        Fraction → sorted positions (into `splits`) of its training images.
    """
    rng = np.random.default_rng(seed)
    train = splits.index[splits["split"] == "train"].to_numpy()
    orders = {name: rng.permutation(train[splits.loc[train, "class"].to_numpy() == name])
              for name in sorted(splits["class"].unique())}
    return {f: sorted(int(i) for order in orders.values()
                      for i in order[:max(1, math.ceil(f * len(order)))])
            for f in fractions}


def transfer_experiment(data: str | Path, out: str | Path,
                        progress: bool = True, **options) -> pd.DataFrame:
    """Runs (or resumes) the experiment; writes `transfer.csv` and `transfer.png` in `out`.

    Args:
        data: Folder with one subfolder per class.
        out: The experiment's folder (made if missing; reused to resume).
        progress: Print each cell and the epochs' progress (to stderr / stdout).
        **options: Any field of `TransferConfig` (e.g. `fractions=(0.1, 1)`).

    Returns:
        The table (`COLUMNS`), one row per (fraction, method).

    Raises:
        ConfigError: Bad options, or `out` holds an experiment with other options.
        DataError: The folder is missing or has no usable classes.
    """
    from transferkit.experiments.cells import Cells, cell_name
    from transferkit.experiments.plot import plot_transfer
    from transferkit.plan import fine_tune_fraction

    config = TransferConfig(data=str(data), **options).checked()
    out = Path(out)
    _check_previous(out, config)
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if progress else \
        (lambda *a: None)
    splits = _splits(out, config, progress)
    subsets = nested_subsets(splits, config.fractions, config.seed)
    cells = Cells(config, out, splits, verbose=(1 if sys.stdout.isatty() else 2)
                  if progress else 0, say=say)
    todo = [(f, m) for f in config.fractions for m in config.methods]
    rows = []
    for number, (fraction, method) in enumerate(todo, 1):
        path = out / "cells" / f"{cell_name(fraction, method)}.json"
        per_class = int(splits.loc[subsets[fraction], "class"].value_counts().min())
        label = (f"[{number}/{len(todo)}] fraction {fraction:g} ({len(subsets[fraction])} "
                 f"images, {per_class} in the smallest class), {method}")
        if path.exists():
            cell = read_json(path)
            say(f"{label}: done before, accuracy {cell['accuracy']:.3f}")
        else:
            say(f"{label} ...")
            start = time.time()
            with warnings.catch_warnings():  # finite datasets end; that is meant
                warnings.filterwarnings("ignore", message=".*ran out of data.*")
                result = cells.train(method, fraction, subsets[fraction])
            cell = _cell_record(result, fraction, per_class, method, time.time() - start,
                                config.seed)
            write_json(path, cell)
            say(f"{label}: accuracy {cell['accuracy']:.3f} [{cell['ci_low']:.3f}, "
                f"{cell['ci_high']:.3f}], {cell['epochs']} epochs, {cell['seconds']:.0f} s")
            keras.backend.clear_session()  # each cell builds new models: free the old
        planned = "fine-tune" if fine_tune_fraction(per_class) > 0 else "frozen"
        rows.append({**{k: cell[k] for k in COLUMNS if k in cell},
                     "plan_choice": method == planned})
    table = pd.DataFrame(rows, columns=COLUMNS)
    write_csv(out / CSV_FILE, table)
    plot_transfer(table, out / PLOT_FILE, title=f"{Path(config.data).name}: "
                  f"{config.backbone}, {config.image_size} px, up to {config.max_epochs} "
                  f"epochs, patience {config.patience}")
    return table


def _cell_record(result: dict, fraction: float, per_class: int, method: str,
                 seconds: float, seed: int) -> dict:
    from transferkit.explain.deletion import ratio_interval

    correct = np.asarray(result["correct"], np.float64)
    # The accuracy over a test set of ones: a paired mean ratio, bootstrapped by image.
    accuracy, low, high = ratio_interval(correct, np.ones_like(correct), seed=seed)
    return {"fraction": fraction, "images_per_class": per_class, "method": method,
            "accuracy": accuracy, "ci_low": low, "ci_high": high,
            "epochs": int(result["epochs"]), "seconds": round(seconds, 1),
            "correct": [int(c) for c in correct]}


def _check_previous(out: Path, config: TransferConfig) -> None:
    """Refuses to resume an experiment that used other options (its cells would mix)."""
    path = out / CONFIG_FILE
    ours = dataclasses.asdict(config)
    if path.exists():
        theirs = read_json(path)
        same = {k: v for k, v in ours.items() if k not in ("fractions", "methods",
                                                           "workers")}
        changed = [k for k, v in same.items() if k in theirs and theirs[k] != v]
        if changed:
            raise ConfigError(f"{out} holds a transfer experiment with other options "
                              f"({', '.join(changed)}); run it with the same options to "
                              "resume, or choose another --out")
    write_json(path, {**ours, "fractions": list(config.fractions),
                      "methods": list(config.methods)})


def _splits(out: Path, config: TransferConfig, progress: bool) -> pd.DataFrame:
    """The audit's train / val / test split, made once and kept in `splits.csv`."""
    from transferkit.data.scan import scan_folder, summarize_classes
    from transferkit.data.splits import make_splits

    path = out / SPLITS_FILE
    if path.exists():
        return pd.read_csv(path, keep_default_na=False)
    index = scan_folder(config.data, workers=config.workers, progress=progress)
    classes, _ = summarize_classes(index)
    splits = make_splits(index, classes, config.val_split, config.test_split, config.seed)
    write_csv(path, splits)
    return splits

