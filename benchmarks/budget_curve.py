"""Accuracy per minute: test accuracy at 5, 10 and 20 minutes beside the Keras-guide recipe.

    python benchmarks/budget_curve.py [--budgets 5m,10m,20m] [--seed 42] [--subset N]
                                      [--guide-epochs 10,10] [--guide-top-layers 40]
                                      [--out /tmp/budget_curve]

Data: $TRANSFERKIT_FLOWERS (default ../shared/data/flowers5). Each budget is one
`transferkit.train(..., time_limit=...)` run (one seed). Then the Keras transfer-learning
recipe is trained on the same split and backbone as the first budget's run, at
`--guide-size` (160), in the same process, and timed: a frozen backbone and a new head
at Adam's default rate, then the top `--guide-top-layers` layers fine-tuned at 1e-5,
BatchNorm in inference mode, RandomFlip + RandomRotation(0.1). The defaults are the
variant that issue 25's table measured (0.683 in 298 s on photos we do not have): the
head 10 epochs, then the top 40 layers 10 epochs. `--guide-epochs 20,10
--guide-top-layers 0` is the text of keras.io/guides/transfer_learning (20 epochs, then
the whole backbone 10). Prints one table row per recipe; `--subset 25 --budgets 3m
--guide-epochs 1,1 --strategy fine-tune` checks the script in a few minutes (the
numbers then mean nothing).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from transferkit.testing import flowers_dir, subset_folder, use_local_weights

use_local_weights()  # before Keras is imported: it reads KERAS_HOME once

import keras  # noqa: E402


def keras_guide(run_dir: Path, data: Path, epochs: tuple[int, int], top_layers: int,
                size: int, seed: int) -> dict:
    """The Keras guide's two-phase recipe on `run_dir`'s split and backbone at `size`; phase 2
    trains the backbone's top `top_layers` layers (0: all of them), BatchNorm frozen."""
    import tensorflow as tf

    from transferkit.backbones import get_backbone
    from transferkit.data.pipeline import image_dataset
    from transferkit.model import HEAD_LAYERS, build_classifier, set_trainable_blocks

    start = time.time()
    keras.utils.set_random_seed(seed)
    config = json.loads((run_dir / "config.json").read_text())
    classes = json.loads((run_dir / "labels.json").read_text())
    splits = pd.read_csv(run_dir / "splits.csv", keep_default_na=False)
    batch = 32  # the guide's
    parts = {name: (list(data / part["path"]),
                    keras.utils.to_categorical([classes.index(c) for c in part["class"]],
                                               len(classes)))
             for name, part in splits.groupby("split")}
    flip = keras.layers.RandomFlip("horizontal", seed=seed)
    rotate = keras.layers.RandomRotation(0.1, seed=seed)
    train = image_dataset(*parts["train"], size, batch, shuffle_seed=seed).map(
        lambda x, y: (rotate(flip(x, training=True), training=True), y),
        num_parallel_calls=tf.data.AUTOTUNE)
    val = image_dataset(*parts["val"], size, batch)
    test = image_dataset(*parts["test"], size, batch)
    model = build_classifier(get_backbone(config["backbone"]), len(classes), size,
                             config["weights"], dropout=0.2)
    set_trainable_blocks(model, 0)
    model.compile(keras.optimizers.Adam(), "categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(train, validation_data=val, epochs=epochs[0], verbose=2)
    backbone = [layer for layer in model.layers if layer.name not in HEAD_LAYERS]
    for layer in backbone[-top_layers if top_layers else 0:]:
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
    model.compile(keras.optimizers.Adam(1e-5), "categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(train, validation_data=val, epochs=epochs[1], verbose=2)
    accuracy = model.evaluate(test, verbose=0, return_dict=True)["accuracy"]
    where = f"top {top_layers} layers" if top_layers else "whole backbone"
    return {"recipe": f"Keras guide ({epochs[0]}+{epochs[1]} epochs, {where})", "budget": "-",
            "seconds": round(time.time() - start), "test_accuracy": round(accuracy, 3),
            "image_size": size, "fine_tune_epochs": epochs[1], "within_limit": "-"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budgets", default="5m,10m,20m")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--subset", type=int, help="images per class (a quick check)")
    parser.add_argument("--guide-epochs", default="10,10")
    parser.add_argument("--guide-size", type=int, default=160)
    parser.add_argument("--guide-top-layers", type=int, default=40,
                        help="layers the guide's phase 2 trains (0: the whole backbone)")
    parser.add_argument("--strategy", default="auto",
                        help="fine-tune: force phase 2 on a small --subset (a check)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) /
                        "budget_curve")
    args = parser.parse_args()
    import transferkit
    from transferkit.budget.parse import parse_budget

    data = flowers_dir()
    if args.subset:
        data = subset_folder(data, args.subset)
    shutil.rmtree(args.out, ignore_errors=True)
    rows, first = [], None
    for budget in args.budgets.split(","):
        out = args.out / budget
        start = time.time()
        run = transferkit.train(data, out, time_limit=budget, seed=args.seed,
                                strategy=args.strategy, quiet=True)
        plan = json.loads((out / "plan.json").read_text()).get("budget", {})
        rows.append({"recipe": "transferkit --time-limit", "budget": budget,
                     "seconds": round(time.time() - start),
                     "test_accuracy": round(run.metrics["accuracy"], 3),
                     "image_size": plan.get("image_size"),
                     "fine_tune_epochs": plan.get("spent", {}).get("fine_tune_epochs"),
                     "within_limit": plan.get("spent", {}).get("within_limit")})
        first = first or out
        print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    epochs = tuple(int(e) for e in args.guide_epochs.split(","))
    rows.append(keras_guide(first, data, epochs, args.guide_top_layers,
                            args.guide_size, args.seed))
    table = pd.DataFrame(rows)
    table["seconds_per_limit"] = [
        round(r["seconds"] / parse_budget(r["budget"]), 2)
        if r["budget"] != "-" else np.nan for r in rows]
    print()
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
