"""`transferkit experiment NAME ...`: argument parsing; the work is in the API.

Registered by `transferkit.cli` (`COMMANDS["experiment"] = (add_experiment,
run_experiment)`).
"""

from __future__ import annotations

import json

from transferkit.errors import ConfigError


def _numbers(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--fractions {text!r}: give numbers in (0, 1] separated by "
                          "commas, e.g. 0.05,0.1,0.25,0.5,1") from None


def add_experiment(sub) -> None:
    """Adds the `experiment` command and its experiments to the CLI's subparsers."""
    from transferkit.experiments.transfer import FRACTIONS, METHODS, TransferConfig

    defaults = TransferConfig(data="")
    p = sub.add_parser("experiment", help="experiments on your data behind the defaults")
    names = p.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    t = names.add_parser("transfer", help="from scratch vs frozen vs fine-tuned, as the "
                                          "training data grows")
    t.add_argument("data", help="folder with one subfolder per class")
    t.add_argument("--out", required=True, help="experiment folder (rerun to resume)")
    t.add_argument("--fractions", default=",".join(f"{f:g}" for f in FRACTIONS),
                   help="fractions of the training split (default %(default)s)")
    t.add_argument("--methods", default=",".join(METHODS),
                   help="any of %(default)s")
    t.add_argument("--backbone", default=defaults.backbone)
    t.add_argument("--image-size", type=int, default=defaults.image_size)
    t.add_argument("--max-epochs", type=int, default=defaults.max_epochs)
    t.add_argument("--patience", type=int, default=defaults.patience)
    t.add_argument("--min-steps", type=int, default=defaults.min_steps,
                   help="fewest steps per epoch (small subsets repeat)")
    t.add_argument("--seed", type=int, default=defaults.seed)
    t.add_argument("--json", action="store_true", help="print the table as JSON")


def run_experiment(args) -> int:
    """Runs the experiment; prints its table (or JSON records) and the files written."""
    from transferkit.experiments.transfer import CSV_FILE, PLOT_FILE, transfer_experiment

    table = transfer_experiment(
        args.data, args.out, progress=not args.json, fractions=_numbers(args.fractions),
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        backbone=args.backbone, image_size=args.image_size, max_epochs=args.max_epochs,
        patience=args.patience, min_steps=args.min_steps, seed=args.seed)
    files = [f"{args.out}/{CSV_FILE}", f"{args.out}/{PLOT_FILE}"]
    if args.json:
        print(json.dumps({"experiment": "transfer", "files": files,
                          "records": table.to_dict(orient="records")}, indent=2))
        return 0
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for path in files:
        print(f"wrote {path}")
    return 0
