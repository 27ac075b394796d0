"""`transferkit doctor DATA`: argument parsing only; the work is `doctor.diagnose`.

Registered by `transferkit.cli` (`COMMANDS["doctor"] = (add_doctor, run_doctor)`).
"""

from __future__ import annotations

import json

SHOWN = 10  # rows of each issue printed without --json


def add_doctor(sub) -> None:
    """Adds the `doctor` command to the CLI's subparsers."""
    p = sub.add_parser("doctor", help="near-duplicates, label issues and outliers of a "
                                      "folder")
    p.add_argument("data", help="folder with one subfolder per class")
    p.add_argument("--out", default="doctor",
                   help="folder for data_issues.csv, doctor.json and the features "
                        "(default ./doctor)")
    p.add_argument("--run", help="a run trained on DATA: reuse its stored features")
    p.add_argument("--backbone", help="default: the run's, else mobilenet_v2_0.35")
    p.add_argument("--image-size", type=int, help="default: the run's, else the plan's")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print data_issues.csv's records")


def run_doctor(args) -> int:
    """Runs the doctor; prints its records (`--json`) or a summary."""
    from transferkit.doctor.diagnose import diagnose

    issues = diagnose(args.data, out=args.out, run=args.run, backbone=args.backbone,
                      image_size=args.image_size, workers=args.workers,
                      progress=not args.json)
    if args.json:
        records = issues.astype(object).where(issues.notna(), None).to_dict("records")
        print(json.dumps(records, indent=1))
        return 0
    for issue, rows in issues.groupby("issue", sort=False):
        print(f"{issue}: {len(rows)} images")
        for row in rows.head(SHOWN).itertuples(index=False):
            extra = f" → {row.suggested_class}" if row.suggested_class else \
                (f" (group {row.group})" if row.issue == "near_duplicate" else "")
            print(f"  {row.score:6.3f}  {row.path}{extra}")
    print(f"all of them: {args.out}/data_issues.csv")
    return 0
