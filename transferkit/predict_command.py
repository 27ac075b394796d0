"""`transferkit predict MODEL IMAGES...` and `transferkit predict MODEL DIR --out x.csv`:
argument parsing only; the work is `Predictor.predict_files` and `predict_folder`.

Registered by `transferkit.cli` (`COMMANDS["predict"] = (add_predict, run_predict)`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def add_predict(sub) -> None:
    """Adds the `predict` command to the CLI's subparsers."""
    p = sub.add_parser("predict", help="classify images, or a whole folder into a table, "
                                       "with a run or an exported model")
    p.add_argument("model", help="run directory, export folder, SavedModel directory, "
                                 ".tflite or .onnx file")
    p.add_argument("images", nargs="*", help="image files, or one folder with --out")
    p.add_argument("--out", help="with a folder: the table to write, .csv or .jsonl (one "
                                 "row per file below the folder, recursively)")
    p.add_argument("--samples", type=int, default=0,
                   help="also predict N images of the run's test split (run directories)")
    p.add_argument("--top-k", type=_positive_int, default=3)
    p.add_argument("--batch-size", type=_positive_int, default=32,
                   help="images decoded and classified at once (default 32)")
    p.add_argument("--json", action="store_true", help="print JSON")


def run_predict(args) -> int:
    """Prints the predictions of image files, or writes a folder's table (`--out`)."""
    from transferkit.errors import ConfigError
    from transferkit.predictor import load_predictor

    folders = [p for p in args.images if Path(p).is_dir()]
    if args.out is not None or folders:
        if args.out is None or len(args.images) != 1 or not folders or args.samples:
            raise ConfigError("a folder is predicted into a table: transferkit predict "
                              "MODEL FOLDER --out predictions.csv (one folder, no other "
                              "images, no --samples)")
        return _predict_folder(load_predictor(args.model), folders[0], args)
    predictor = load_predictor(args.model)
    images = list(args.images)
    if args.samples:
        if predictor.kind != "run":
            raise ConfigError(f"--samples needs a run directory; {args.model} is an "
                              "exported model")
        images += [str(p) for p in predictor.run.test_samples(args.samples)]
    if not images:
        raise ConfigError("nothing to predict: give image files, a folder with --out, or "
                          "--samples N")
    records = predictor.predict_files(images, args.top_k, args.batch_size)
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        for r in records:
            if "error" in r:  # stderr, so stdout holds only predictions
                print(f"transferkit: error: {r['path']}: {r['error']}", file=sys.stderr)
            else:
                best = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in r["top_k"])
                # The same words as the demo's verdict ("unknown" takes precedence).
                claim = ("not one of my classes; " if r.get("unknown") else
                         "not sure; " if r.get("abstained") else "")
                print(f"{r['path']}: {claim}{best}")
    return 1 if any("error" in r for r in records) else 0


def _predict_folder(predictor, folder: str, args) -> int:
    from transferkit.predict_folder import predict_folder

    counts = predict_folder(predictor, folder, args.out, args.top_k, args.batch_size)
    if args.json:
        print(json.dumps({**counts, "out": args.out}))
    else:
        print(f"{counts['n_predicted']} images classified, {counts['n_skipped']} files "
              f"skipped (the reason is in the table): {args.out}")
    return 0
