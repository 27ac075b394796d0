"""Acceptance run: `transferkit train <flowers5> --backbone mobilenet_v2_0.35`, defaults.

    python benchmarks/flowers_train.py [--out /tmp/flowers-run] [--holdout DIR] [options]

Prints wall time, the plan, test accuracy / macro-F1, and (with --holdout) accuracy on
a folder of photos the model never saw. Extra options are passed to `transferkit.train`
as key=value (e.g. image_size=160 fine_tune_epochs=4, or backbone=mobilenet_v2_0.5)
to compare recipes.
"""

from __future__ import annotations

import argparse
import json
import time

from transferkit.testing import flowers_dir, use_local_weights

use_local_weights()

import transferkit  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="/tmp/transferkit-flowers-run")
    parser.add_argument("--holdout", help="folder of other photos of the same classes")
    parser.add_argument("options", nargs="*", help="key=value training options")
    args = parser.parse_args()
    options = {k: json.loads(v) if v[:1].isdigit() or v in ("true", "false") else v
               for k, v in (o.split("=", 1) for o in args.options)}
    options.setdefault("backbone", "mobilenet_v2_0.35")
    start = time.perf_counter()
    run = transferkit.train(flowers_dir(), args.out, overwrite=True, **options)
    wall = time.perf_counter() - start
    metrics = json.loads((run.path / "metrics.json").read_text())
    plan = json.loads((run.path / "plan.json").read_text())
    print(f"wall {wall:.0f} s (budget 300 s); plan: {plan['strategy']}, "
          f"{plan['unfreeze_blocks']} blocks")
    print(f"test accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f} "
          f"on {metrics['n_test']} images")
    if args.holdout:
        print("holdout", json.dumps(run.evaluate(args.holdout)))


if __name__ == "__main__":
    main()
