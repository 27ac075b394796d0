"""`transferkit calibrate RUN`: argument parsing only; the work is `fit_trust`.

Registered by `transferkit.cli` (`COMMANDS["calibrate"]`). Fits the trust outputs of an
existing run (one trained before calibration, or with `--no-calibrate`), or refits them
for another target.
"""

from __future__ import annotations

import argparse
import json

from transferkit.trust.unknown import DEFAULT_FALSE_REJECTION, DEFAULT_KIND, KINDS


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def add_calibrate(sub) -> None:
    """Adds the `calibrate` command to the CLI's subparsers."""
    p = sub.add_parser("calibrate", help="calibrated probabilities, 'not sure' threshold "
                                         "and unknown score for a run")
    p.add_argument("run", help="run directory")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target-precision", type=_share,
                        help="share of the answers given that should be right, chosen on "
                             "the validation split (default 0.90)")
    target.add_argument("--target-coverage", type=_share,
                        help="or: the share of inputs to answer")
    p.add_argument("--unknown-score", choices=KINDS, default=DEFAULT_KIND,
                   help=f"out-of-distribution score (default {DEFAULT_KIND})")
    p.add_argument("--false-rejection", type=_share, default=DEFAULT_FALSE_REJECTION,
                   help="share of known validation images flagged unknown (default 0.05)")
    p.add_argument("--json", action="store_true", help="print the new metrics as JSON")


def run_calibrate(args) -> int:
    """Runs `transferkit calibrate`."""
    from transferkit.run import load_run
    from transferkit.trust.fit import fit_trust

    sections = fit_trust(load_run(args.run), target_precision=args.target_precision,
                         target_coverage=args.target_coverage,
                         unknown_kind=args.unknown_score,
                         false_rejection=args.false_rejection,
                         say=None if args.json else print)
    if args.json:
        print(json.dumps(sections, indent=2))
    return 0
