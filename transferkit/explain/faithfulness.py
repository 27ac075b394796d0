"""`explain_check`: are a run's explanations faithful to its model? The report over a
folder behind `transferkit explain-check`.

It scores each method with the two standard checks, on the same sampled images:
deletion / insertion against random maps (`transferkit.explain.deletion`) and model
randomization (`transferkit.explain.sanity`), and times it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from transferkit import layout
from transferkit.errors import ConfigError
from transferkit.explain.deletion import (
    blur, deletion_insertion, random_heatmaps, ratio_interval)
from transferkit.explain.registry import make_explainers, resolve_methods
from transferkit.explain.sanity import randomize_model, rank_correlation
from transferkit.fileio import write_csv
from transferkit.inference import in_batches
from transferkit.run import Run, load_run

CHECK_COLUMNS = ("method", "deletion_auc", "insertion_auc", "random_deletion_auc",
                 "random_insertion_auc", "randomization_spearman", "seconds_per_image")


def explain_check(run_dir: str | Path | Run, data_dir: str | Path, n: int = 50,
                  methods: Sequence[str] | None = None, seed: int = 0,
                  out: str | Path | None = None) -> pd.DataFrame:
    """Scores explanation methods on a trained run: faithfulness, sanity and speed.

    Each method explains the run's top prediction for `n` images sampled (seeded) from
    `data_dir`; the table holds means over those images. The random-map baseline
    (`random_heatmaps(seed)`) and the randomized model (head + top 3 blocks) are shared
    by all methods.

    Args:
        run_dir: A finished run directory (or a `transferkit.run.Run`).
        data_dir: Folder with one subfolder per class, classes a subset of the run's.
        n: Images to use (all usable ones when fewer).
        methods: Method names, None or ["all"] for every method.
        seed: Seed of the image sample, the random maps, the order of equally important
            pixels and the randomized model.
        out: Folder for `explain_check.csv`; default the run directory, next to the
            other evaluation files of the model it describes.

    Returns:
        A DataFrame, one row per method, columns `CHECK_COLUMNS`; seconds_per_image
        excludes the one-time graph tracing (a warm-up image runs first).

    Raises:
        RunError: `run_dir` is not a finished run.
        DataError: No usable images, or classes the run does not know.
        ConfigError: Unknown method, n < 1 or a negative seed.
    """
    names = resolve_methods(methods)
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    if seed < 0:
        raise ConfigError(f"seed must be 0 or more, got {seed}")
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    _, ok = run.known_images(data_dir, progress=False)
    pick = np.sort(np.random.default_rng(seed).choice(len(ok), min(n, len(ok)),
                                                      replace=False))
    images = run.preprocess([Path(data_dir) / p for p in ok["path"].iloc[pick]])
    model = run.model
    probabilities = in_batches(model.predict_on_batch, images)
    classes = probabilities.argmax(axis=-1)  # each image's top prediction is explained
    blurred = np.stack([blur(image) for image in images])  # shared by every method
    blurred_probabilities = in_batches(model.predict_on_batch, blurred)
    every = np.arange(len(classes))
    _progress(f"explain-check: {len(images)} images; mean probability of the explained "
              f"class {probabilities[every, classes].mean():.2f}, of their blurred copies "
              f"{blurred_probabilities[every, classes].mean():.2f} "
              f"(chance {1 / len(run.class_names):.2f})")

    def scores(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return deletion_insertion(model, images, maps, classes, seed=seed, blurred=blurred)

    _progress("explain-check: random baseline")
    random_del, random_ins = scores(random_heatmaps(len(images), *images.shape[1:3],
                                                    seed=seed))
    explainers = make_explainers(model, names)
    randomized_explainers = make_explainers(randomize_model(model, seed=seed), names)
    rows = []
    for i, (name, explainer) in enumerate(explainers.items(), start=1):
        _progress(f"explain-check: {name} ({i}/{len(names)})")
        explainer(images[:1], classes[:1])  # traces the graph outside the timing
        start = time.perf_counter()
        maps = explainer(images, classes)
        seconds = (time.perf_counter() - start) / len(images)
        deletion, insertion = scores(maps)
        spearman = rank_correlation(maps, randomized_explainers[name](images, classes))
        rows.append((name, deletion.mean(), insertion.mean(), random_del.mean(),
                     random_ins.mean(), spearman.mean(), seconds))
        _progress(f"explain-check: {name}: deletion {deletion.mean():.3f} "
                  f"({_vs_random(deletion, random_del, seed)}), insertion "
                  f"{insertion.mean():.3f} ({_vs_random(insertion, random_ins, seed)}), "
                  f"randomization rho {spearman.mean():.2f}, {seconds:.3f} s/image")
    table = pd.DataFrame(rows, columns=list(CHECK_COLUMNS))
    write_csv(Path(out if out is not None else run.path) / layout.EXPLAIN_CHECK_FILE, table)
    return table


def _vs_random(values: np.ndarray, baseline: np.ndarray, seed: int) -> str:
    ratio, low, high = ratio_interval(values, baseline, seed=seed)
    return f"{ratio:.2f}x random, 95% interval {low:.2f}-{high:.2f}"


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
