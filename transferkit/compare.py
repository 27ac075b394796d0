"""`transferkit compare`: several backbones, one split, one budget each, a leaderboard.

    DIR/<backbone>/      a complete run directory per backbone (kept, winner included)
    DIR/leaderboard.csv  backbone, val_accuracy, val_macro_f1, test_accuracy,
                         test_macro_f1, train_seconds, latency_ms, size_mb, run; sorted by
                         validation accuracy (then validation macro-F1, then latency)
    DIR/winner.json      the first row: backbone, run (relative to DIR), its numbers

The winner is chosen on the validation split; the test accuracy is shown beside it and
chooses nothing (chosen on the test split, it would no longer be an unbiased estimate of
the winner's accuracy). The first backbone splits the data; the others reuse its
`splits.csv` (`TrainConfig.splits_file`), so every figure is measured on the same images.
A run trained before metrics.json had `val_accuracy` gets it computed from its model
(`transferkit.evaluate.split_metrics`).
`time_limit` is each backbone's (the whole of its train command). A finished backbone
run is reused when compare runs again (a killed compare resumes; adding a backbone trains
only that one). Latency is batch-1 Keras `predict_on_batch`, the median of warm calls
(`transferkit.export.latency.latency_ms`, interleaved so load slows all alike).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from transferkit import layout
from transferkit.backbones import get_backbone
from transferkit.errors import ConfigError
from transferkit.fileio import write_csv, write_json

COLUMNS = ("backbone", "val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1",
           "train_seconds", "latency_ms", "size_mb", "run")


def compare(data: str | Path, backbones: Sequence[str], out: str | Path,
            time_limit: float | None = None, overwrite: bool = False,
            latency_calls: int = 20, **options) -> pd.DataFrame:
    """Trains each backbone on the same split and ranks them.

    Args:
        data: The data folder, or `tfds:NAME`.
        backbones: Registry names (two or more make a comparison; one is allowed).
        out: The comparison folder; each backbone's run goes to `out/<backbone>`.
        time_limit: Seconds for each backbone's training (None: the default recipe).
        overwrite: Retrain every backbone (default: finished runs are reused).
        latency_calls: Timed batch-1 calls per model.
        **options: Other `TrainConfig` fields, the same for every backbone.

    Returns:
        The leaderboard (also in `out/leaderboard.csv`), best first.

    Raises:
        ConfigError: No backbone, an unknown or repeated one, or bad options.
    """
    from transferkit.run import load_run, run_state
    from transferkit.training import train

    backbones = [b.strip() for b in backbones if b.strip()]
    if not backbones:
        raise ConfigError("--backbones: name at least one backbone, e.g. "
                          "mobilenet_v2_0.35,mobilenet_0.25")
    if len(set(backbones)) != len(backbones):
        raise ConfigError(f"--backbones lists a backbone twice: {','.join(backbones)}")
    for name in backbones:
        get_backbone(name)  # every name checked before anything is trained
    for key in ("backbone", "ensemble", "backbones", "splits_file"):
        if key in options:
            raise ConfigError(f"compare sets {key} itself; leave it out")
    out = Path(out)
    say = (lambda *a: None) if options.get("quiet") else (lambda *a: print(*a, flush=True))
    runs, splits_file = [], None
    for i, name in enumerate(backbones):
        path = out / name
        if run_state(path) == "complete" and not overwrite:
            say(f"[{i + 1}/{len(backbones)}] {name}: reusing the finished run {path}")
            run = load_run(path)
            _check_reused(run, dict(options, time_limit=time_limit))
        else:
            say(f"[{i + 1}/{len(backbones)}] {name}: training")
            run = train(data, path, overwrite=overwrite, backbone=name,  # one model each
                        time_limit=time_limit, splits_file=splits_file,
                        **{**options, "extra_members": False})
        runs.append(run)
        splits_file = splits_file or str((path / layout.SPLITS_FILE).resolve())
    table = leaderboard(runs, out, latency_calls)
    write_csv(out / layout.LEADERBOARD_FILE, table)
    best = table.iloc[0].to_dict()
    write_json(out / layout.WINNER_FILE, {**best, "why": "highest validation accuracy on "
                                          "the shared split (ties: validation macro-F1, "
                                          "latency); test accuracy only reports"})
    return table


def _check_reused(run, asked: dict) -> None:
    """A reused run must have been trained with the options asked for now (None: any)."""
    ignored = ("quiet", "workers", "calibrate")
    changed = [k for k, v in asked.items() if v is not None and k not in ignored
               and getattr(run.config, k, v) != v]
    if changed:
        raise ConfigError(f"{run.path} was trained with other options "
                          f"({', '.join(sorted(changed))}); pass --overwrite to retrain "
                          "every backbone, or another --out")


def leaderboard(runs, out: Path, latency_calls: int = 20) -> pd.DataFrame:
    """One row per run (see the module docstring), best on the validation split first."""
    from transferkit.evaluate import split_metrics
    from transferkit.export.latency import latency_ms

    batches = {run.config.backbone: np.zeros((1, run.image_size, run.image_size, 3),
                                             np.float32) for run in runs}
    models = {run.config.backbone: run.model for run in runs}
    times = latency_ms({name: (lambda m=models[name], x=batches[name]:
                               m.predict_on_batch(x)) for name in models},
                       n=latency_calls, warmup=3)
    rows = []
    for run in runs:
        name, metrics = run.config.backbone, run.metrics or {}
        if "val_accuracy" not in metrics:  # a run older than the validation figures
            metrics.update(split_metrics(run, "val"))
        rows.append({"backbone": name, "val_accuracy": metrics["val_accuracy"],
                     "val_macro_f1": metrics.get("val_macro_f1"),
                     "test_accuracy": metrics.get("accuracy"),
                     "test_macro_f1": metrics.get("macro_f1"),
                     "train_seconds": metrics.get("train_seconds"),
                     "latency_ms": times[name]["median_ms"],
                     "size_mb": round((run.path / layout.MODEL_FILE).stat().st_size / 1e6, 2),
                     "run": str(Path(run.path).relative_to(out))})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table = table.sort_values(["val_accuracy", "val_macro_f1", "latency_ms"],
                              ascending=[False, False, True], kind="stable")
    return table.reset_index(drop=True)


def format_table(table: pd.DataFrame) -> str:
    """The leaderboard as printed: aligned columns, then the winner (by validation)."""
    lines = [f"{'backbone':22} {'val acc':>8} {'val F1':>8} {'test acc':>8} "
             f"{'test F1':>8} {'train s':>8} {'latency ms':>10} {'size MB':>8}"]
    for row in table.itertuples():
        lines.append(f"{row.backbone:22} {row.val_accuracy:8.3f} {row.val_macro_f1:8.3f} "
                     f"{row.test_accuracy:8.3f} {row.test_macro_f1:8.3f} "
                     f"{row.train_seconds:8.0f} {row.latency_ms:10.1f} {row.size_mb:8.2f}")
    lines.append(f"Winner: {table.iloc[0]['backbone']} ({table.iloc[0]['run']}), by "
                 "validation accuracy")
    return "\n".join(lines)


def backbone_list(text: str) -> list[str]:
    """`--backbones a,b,c` as a list (names are checked by the command)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def add_compare(sub) -> None:
    """Adds the `compare` command to the CLI's subparsers."""
    p = sub.add_parser("compare", help="train several backbones on one split; leaderboard")
    p.add_argument("data", help="folder with one subfolder per class, or tfds:NAME")
    p.add_argument("--backbones", type=backbone_list, required=True,
                   help="comma-separated registry names (see `backbones`)")
    p.add_argument("--out", required=True, help="folder: one run per backbone, "
                                                "leaderboard.csv, winner.json")
    p.add_argument("--time-limit",
                   help="each backbone's budget: 90s, 20m, 1h, 1h30m (default: the "
                        "default recipe)")
    p.add_argument("--image-size", type=int, help="input side (default: each plan's)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--overwrite", action="store_true",
                   help="retrain every backbone (default: finished runs are reused)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def run_compare(args) -> int:
    """Runs `transferkit compare` and prints the leaderboard."""
    from transferkit.budget.parse import parse_budget

    limit = None if args.time_limit is None else parse_budget(args.time_limit)
    table = compare(args.data, args.backbones, args.out, time_limit=limit,
                    overwrite=args.overwrite, image_size=args.image_size, seed=args.seed,
                    quiet=args.quiet)
    print(format_table(table))
    return 0
