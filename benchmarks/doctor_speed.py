"""The doctor's own seconds (features cached) before and after a change, in one script.

    python benchmarks/doctor_speed.py DATA OUT --before OLD_CHECKOUT [--repeat 1] [--fresh]

OUT/features must hold the folder's features (a first `transferkit doctor DATA --out
OUT` computes them); both versions then read them, so the times are the doctor's own
work (decoding, neighbours, near-duplicate checks, k-fold regressions). With `--fresh`
OUT/features is emptied before each run: each version computes every feature it needs
(a version that needs its mirror images' features pays that pass). OLD_CHECKOUT is a
folder holding an older `transferkit` package (e.g. `git archive 7f3623d transferkit |
tar -x -C /tmp/before`). Each version runs in its own process, in turn, `--repeat` times;
the ratio is after / before of the medians (on a shared machine both see the same load).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(package_root: Path, data: Path, out: Path, fresh: bool
        ) -> tuple[float, float, float]:
    """(wall seconds of `transferkit doctor`, the seconds doctor.json reports, the CPU
    seconds of the process: on a shared machine the steadiest of the three)."""
    if fresh:
        shutil.rmtree(out / "features", ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(package_root), TF_CPP_MIN_LOG_LEVEL="3")
    # `python -m` puts the working directory first on sys.path: run from the version's
    # own root, or a checkout's package would shadow the other.
    start, cpu = time.time(), _children_cpu()
    subprocess.run([sys.executable, "-m", "transferkit", "doctor", str(data), "--out",
                    str(out), "--json"], env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, cwd=package_root)
    wall, cpu = time.time() - start, _children_cpu() - cpu
    return wall, json.loads((out / "doctor.json").read_text())["seconds"], cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    args.data, args.out, args.before = (p.resolve() for p in (args.data, args.out, args.before))
    times = {"before": [], "after": []}
    for _ in range(args.repeat):
        for name, root in (("before", args.before), ("after", ROOT)):
            times[name].append(run(root, args.data, args.out, args.fresh))
            print(f"{name}: {times[name][-1][0]:.1f} s wall, doctor.json "
                  f"{times[name][-1][1]:.1f} s, {times[name][-1][2]:.1f} CPU s", flush=True)
    wall = {k: statistics.median(t[0] for t in v) for k, v in times.items()}
    own = {k: statistics.median(t[1] for t in v) for k, v in times.items()}
    cpu = {k: statistics.median(t[2] for t in v) for k, v in times.items()}
    print(f"after / before: {wall['after'] / wall['before']:.2f}x wall (process start and "
          f"audit included), {own['after'] / own['before']:.2f}x the doctor's own seconds, "
          f"{cpu['after'] / cpu['before']:.2f}x CPU seconds")


if __name__ == "__main__":
    main()
