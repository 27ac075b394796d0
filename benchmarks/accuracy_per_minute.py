"""Accuracy per minute of each ingredient alone (issue 25, item 2), over seeds.

    python benchmarks/accuracy_per_minute.py [--seeds 42,43] [--out /tmp/apm]
    python benchmarks/accuracy_per_minute.py --dry-run      # a few images: checks the script

Data: $FLOWERS5 (default ../shared/data/flowers5). Every run shares ONE split (the first
seed's default run's `splits.csv`) and its image size, so every row is scored on the same
validation and test images and runs combine into ensembles; the seeds vary the
initialization, augmentation and shuffling. Rows (runs are reused across rows):

    default                 `transferkit.train` with its defaults
    flip TTA                the default run's model, averaging each image and its mirror
                            at prediction (seconds: the mirrored pass over val + test; in
                            service it doubles the latency)
    exclude flagged         the doctor's label issues and outliers (the default run's
                            data_issues.csv, what `--exclude-flagged` drops) left out of
                            the TRAINING split only: `--exclude-flagged` itself drops them
                            from every split, which would score it on easier images
    double epochs, regularized  twice the default's fine-tuning epochs, dropout 0.4 and label
                            smoothing 0.2 (schedule length with stronger regularization)
    mobilenet_v2_0.5        the wider backbone
    mobilenet_0.25          MobileNet v1 0.25, the third backbone whose weights ship here
    ensemble 0.35+0.5       `combine_runs` of the two runs above (seconds: both + combine)
    ensemble three backbones  0.35 + 0.5 + MobileNet v1 0.25
    ensemble two seeds      `combine_runs` of the default runs of two seeds (one value:
                            the first seed's default with each later seed's)
    distilled student       a mobilenet_v2_0.35 student of the 0.35+0.5 ensemble
                            (`--teacher`; seconds: the ensemble's + the student's)

Prints one row per ingredient: validation accuracy and log loss (uncalibrated; means of
the seeds: what a choice is made on), test accuracy (reports only), seconds, and the
validation accuracy gained per extra minute over the default. The member rows of
`transferkit/budget/measured.py` (the table a budget plans from) are the log losses of
the ensemble rows against the default's.

EMA of the weights and RandAugment are not rows: the package no longer has them. An
earlier budget that used them (with progressive resizing and MixUp) scored 0.739 in 20
minutes against the default's 0.764 on photos the product never saw.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss

from transferkit.testing import subset_folder, use_local_weights

use_local_weights()  # before Keras is imported: it reads KERAS_HOME once

import tensorflow as tf  # noqa: E402

import transferkit  # noqa: E402
from transferkit import layout  # noqa: E402
from transferkit.data.pipeline import image_dataset  # noqa: E402
from transferkit.ensemble import combine_runs  # noqa: E402

ROWS = ("default", "flip TTA", "exclude flagged", "double epochs, regularized",
        "mobilenet_v2_0.5", "mobilenet_0.25", "ensemble 0.35+0.5",
        "ensemble three backbones", "ensemble two seeds", "distilled student")
DRY_RUN = dict(image_size=64, head_epochs=2, fine_tune_epochs=1, augment_copies=0)


def _scores(run, reference, flip: bool = False) -> dict:
    """Validation and test accuracy of `run`'s model on `reference`'s split; with `flip`,
    the mean of each image's and its mirror's probabilities (and that pass's seconds)."""
    splits = reference.splits
    found = {}
    for split in ("val", "test"):
        part = splits[splits["split"] == split]
        paths = [str(reference.data_folder / p) for p in part["path"]]
        labels = np.array([run.class_names.index(c) for c in part["class"]])
        dataset = image_dataset(paths, None, run.image_size, 32)
        probabilities = run.model.predict(dataset, verbose=0)
        if flip:
            start = time.perf_counter()
            mirrored = dataset.map(lambda images: tf.reverse(images, axis=[2]))
            probabilities = (probabilities + run.model.predict(mirrored, verbose=0)) / 2
            found["seconds"] = found.get("seconds", 0.0) + time.perf_counter() - start
        found[split] = float(np.mean(probabilities.argmax(axis=1) == labels))
        if split == "val":
            found["val log loss"] = float(log_loss(labels, probabilities,
                                                   labels=range(len(run.class_names))))
    return found


def _row(name: str, run, reference, seconds: float, flip: bool = False) -> dict:
    scores = _scores(run, reference, flip)
    return {"ingredient": name, "val": scores["val"], "val log loss": scores["val log loss"],
            "test": scores["test"], "seconds": seconds + scores.get("seconds", 0.0)}


def _seconds(run) -> float:
    return float(run.metrics["train_seconds"])


def _exclusion_split(reference, out: Path) -> Path | None:
    """The reference split without the doctor's flagged training images (None: the
    doctor wrote no issues file)."""
    issues = reference.table(layout.DATA_ISSUES_FILE)
    if issues is None:
        return None
    flagged = set(issues.loc[issues["issue"].isin(["label_issue", "outlier"]), "path"])
    splits = reference.splits
    kept = splits[~((splits["split"] == "train") & splits["path"].isin(flagged))]
    print(f"exclude flagged: {len(splits) - len(kept)} flagged training images left out")
    path = out / "exclude-splits.csv"
    kept.to_csv(path, index=False)
    return path


def _seed_rows(data: Path, out: Path, seed: int, first, options: dict) -> tuple:
    """The rows of one seed; `first` is the first seed's default run (the split), None
    for the first seed itself. Returns (rows, this seed's default run)."""
    def train(name: str, **extra):
        return transferkit.train(data, out / f"{name}-s{seed}", overwrite=True, seed=seed,
                                 **{**options, **extra})

    shared = {} if first is None else {
        "splits_file": str((first.path / layout.SPLITS_FILE).resolve()),
        "image_size": first.image_size}
    default = train("default", split_seed=seed, **shared)
    reference = first or default
    shared = {"splits_file": str((reference.path / layout.SPLITS_FILE).resolve()),
              "image_size": reference.image_size}
    rows = [_row("default", default, reference, _seconds(default)),
            _row("flip TTA", default, reference, _seconds(default), flip=True)]
    exclusion = _exclusion_split(reference, out)
    if exclusion is not None:
        excluded = train("exclude", **{**shared, "splits_file": str(exclusion)})
        rows.append(_row("exclude flagged", excluded, reference, _seconds(excluded)))
    longer = train("longer", fine_tune_epochs=2 * default.config.fine_tune_epochs,
                   dropout=0.4, label_smoothing=0.2, **shared)
    rows.append(_row("double epochs, regularized", longer, reference, _seconds(longer)))
    wide = train("wide", backbone="mobilenet_v2_0.5", **shared)
    rows.append(_row("mobilenet_v2_0.5", wide, reference, _seconds(wide)))
    v1 = train("v1", backbone="mobilenet_0.25", **shared)
    rows.append(_row("mobilenet_0.25", v1, reference, _seconds(v1)))

    def combined(name: str, runs: list) -> tuple:
        start = time.perf_counter()
        ensemble = combine_runs(runs, out / f"{name}-s{seed}", overwrite=True)
        return ensemble, sum(map(_seconds, runs)) + time.perf_counter() - start

    pair, pair_seconds = combined("ensemble", [default, wide])
    rows.append(_row("ensemble 0.35+0.5", pair, reference, pair_seconds))
    trio, trio_seconds = combined("backbones", [default, wide, v1])
    rows.append(_row("ensemble three backbones", trio, reference, trio_seconds))
    if first is not None:
        seeds, seeds_seconds = combined("seeds", [first, default])
        rows.append(_row("ensemble two seeds", seeds, reference, seeds_seconds))
    student = train("student", teacher=str(pair.path))
    rows.append(_row("distilled student", student, reference,
                     pair_seconds + _seconds(student)))
    return rows, default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="42,43", help="comma-separated seeds")
    parser.add_argument("--out", default="/tmp/accuracy_per_minute")
    parser.add_argument("--dry-run", action="store_true",
                        help="6 images a class, 64 px, 1 epoch: checks the script only")
    args = parser.parse_args()
    data = Path(os.environ.get("FLOWERS5", "../shared/data/flowers5"))
    options = {"quiet": True}
    if args.dry_run:
        data, options = subset_folder(data, 6), {**options, **DRY_RUN, "calibrate": False}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, first = [], None
    for seed in [int(s) for s in args.seeds.split(",")]:
        found, default = _seed_rows(data, out, seed, first, options)
        rows += found
        first = first or default
    table = pd.DataFrame(rows).groupby("ingredient", sort=False).mean()
    table = table.loc[[name for name in ROWS if name in table.index]]
    base = table.loc["default"]
    extra = (table["seconds"] - base["seconds"]) / 60
    # Per extra minute: none for the default, nor for an ingredient that saves time.
    table["val gain / extra min"] = ((table["val"] - base["val"]) / extra).where(
        extra > 1e-9)
    print(table.round(4).to_string())
    table.to_csv(out / "accuracy_per_minute.csv")


if __name__ == "__main__":
    main()
