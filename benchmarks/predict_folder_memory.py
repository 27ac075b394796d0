"""Peak memory of `transferkit predict MODEL DIR --out table.csv`: 1,000 vs 10,000 images.

    python benchmarks/predict_folder_memory.py                 # temp dir, tiny run made here
    python benchmarks/predict_folder_memory.py --dir /tmp/pf --sizes 1000,10000

Makes a folder of small noise PNGs (made once, reused when --dir holds it) and a tiny run
(smallest backbone, 32 px, random weights: memory does not depend on the weights'
values), then runs `predict_folder` over N files in a fresh child process per size, so
each peak (ru_maxrss, which includes TensorFlow itself) is its own. Images are streamed
in batches and rows written as they are done, so the peak must not grow with the folder:
the ratio printed last (largest / smallest) should stay within 1.2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIDE = 24


def make_images(root: Path, n: int, seed: int = 0) -> None:
    """`n` noise PNGs in subfolders of 1,000 (kept when already there)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        path = root / f"part{i // 1000:03d}" / f"img{i:06d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), np.uint8)).save(path)


def child(run: str, folder: str, out: str) -> None:
    """Predicts the folder; prints the counts, seconds and this process's peak RSS."""
    import resource

    from transferkit.predict_folder import predict_folder
    from transferkit.predictor import load_predictor

    start = time.time()
    counts = predict_folder(load_predictor(run), folder, out, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({**counts, "seconds": round(time.time() - start, 1),
                      "peak_mib": round(peak, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="work folder (default: a temporary one)")
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    import transferkit
    from transferkit.testing import make_color_folder

    root = Path(args.dir or tempfile.mkdtemp(prefix="predict-folder-"))
    sizes = sorted(int(s) for s in args.sizes.split(","))
    run = root / "run"
    if not (run / "model.keras").exists():
        data = make_color_folder(root / "train", n_per_class=8, size=32)
        transferkit.train(data, run, weights="none", image_size=32, head_epochs=2,
                          strategy="feature-extract", augment_copies=0, quiet=True,
                          overwrite=True)
    results = {}
    for n in sizes:
        folder = root / f"images{n}"
        make_images(folder, n)
        line = subprocess.run([sys.executable, __file__, "--child", str(run), str(folder),
                               str(root / f"predictions{n}.csv")], check=True,
                              capture_output=True, text=True, env=os.environ).stdout
        results[n] = json.loads(line.strip().splitlines()[-1])
        print(f"{n:>7} files: {results[n]}", flush=True)
    small, large = results[sizes[0]], results[sizes[-1]]
    print(f"peak memory {sizes[-1]} / {sizes[0]} files: "
          f"{large['peak_mib'] / small['peak_mib']:.3f}x")


if __name__ == "__main__":
    main()
