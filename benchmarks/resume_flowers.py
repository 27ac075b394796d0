"""Kill -9 a flowers5 training run once in each phase, resume it, compare accuracies.

    python benchmarks/resume_flowers.py [--out /tmp/transferkit-resume] [--reference RUN]

Runs `python -m transferkit train <flowers5> --backbone mobilenet_v2_0.35` (defaults),
sends SIGKILL once the first chunk of stored features exists (the feature store) and again after the
second fine-tuning epoch is logged (phase 2), runs the same command to finish, and
compares its test accuracy with an uninterrupted run of the same seed (`--reference`,
or one trained here).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from transferkit import layout
from transferkit.testing import flowers_dir, use_local_weights


def _command(out: Path) -> list[str]:
    return [sys.executable, "-m", "transferkit", "train", str(flowers_dir()), "--out",
            str(out), "--backbone", "mobilenet_v2_0.35", "--quiet"]


def _run_until(out: Path, ready, env) -> None:
    process = subprocess.Popen(_command(out), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    while process.poll() is None and not ready():
        time.sleep(0.5)
    if process.poll() is not None:
        raise SystemExit("training finished before it could be killed")
    process.send_signal(signal.SIGKILL)
    process.wait()


def _phase2_rows(out: Path) -> int:
    from transferkit.engine import backup

    saved = backup.load(out / layout.CHECKPOINTS_DIR / "phase2.npz")
    return saved.state.epoch if saved else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="/tmp/transferkit-resume")
    parser.add_argument("--reference", help="an uninterrupted run with the same options")
    args = parser.parse_args()
    use_local_weights()
    env = dict(os.environ)
    out = Path(args.out)
    killed = out / "killed"
    subprocess.run(["rm", "-rf", str(killed)], check=True)

    features = killed / layout.FEATURES_DIR
    _run_until(killed, lambda: any(features.glob("*/chunks/*.npy")), env)
    print("killed while storing features; stored:",
          sorted(p.name for p in features.glob("*/chunks/*.npy")))
    _run_until(killed, lambda: _phase2_rows(killed) >= 2, env)
    print(f"killed in phase 2 after {_phase2_rows(killed)} logged epochs")
    subprocess.run(_command(killed), env=env, check=True, stdout=subprocess.DEVNULL)

    reference = Path(args.reference) if args.reference else out / "reference"
    if not args.reference:
        subprocess.run(["rm", "-rf", str(reference)], check=True)
        subprocess.run(_command(reference), env=env, check=True, stdout=subprocess.DEVNULL)
    accuracy = {name: json.loads((path / "metrics.json").read_text())["accuracy"]
                for name, path in (("resumed", killed), ("uninterrupted", reference))}
    print(json.dumps(accuracy), f"difference {accuracy['resumed'] - accuracy['uninterrupted']:+.3f}")


if __name__ == "__main__":
    main()
