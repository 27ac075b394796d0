"""`transferkit report RUN`: argument parsing only; the work is `report.write_run_report`.

Registered by `transferkit.cli` (`COMMANDS["report"] = (add_report, run_report)`).
"""

from __future__ import annotations


def add_report(sub) -> None:
    """Adds the `report` command to the CLI's subparsers."""
    p = sub.add_parser("report", help="rebuild a run's report.html (one self-contained "
                                      "page)")
    p.add_argument("run", help="run directory")
    p.add_argument("--out", help="file to write (default RUN/report.html)")


def run_report(args) -> int:
    """Writes the report and prints its path."""
    from transferkit.report import write_run_report

    print(write_run_report(args.run, args.out))
    return 0
