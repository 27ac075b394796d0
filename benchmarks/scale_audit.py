"""Many images: the audit and the feature store at 25k, 50k and 100k files.

    python benchmarks/scale_audit.py                       # 100,000 images in a temp dir
    python benchmarks/scale_audit.py --dir /tmp/many --sizes 25000,50000,100000

Makes a synthetic class-per-subfolder folder of small PNGs (random noise, so no two are
alike; made once, reused when --dir already holds it), then, for each size, runs in a
fresh child process (so its peak memory is its own):

- the audit (`transferkit.data.scan.scan_folder`) of the first N files, and
- the feature store (`transferkit.features.FeatureStore.get`) of those N files, with the
  smallest backbone at 32 px and random weights (`weights=None`: only throughput and
  memory are measured here, and the numbers do not depend on the weights' values).

Prints files/s and peak anonymous memory (RssAnon, polled) per stage, above the
process's memory right before the stage, and the index's own size (`DataFrame.memory_usage(deep=True)`).
Memory beyond the index must not grow with the folder: the "beyond index" column stays
flat from 25k to 100k.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

CLASSES = 4
SIDE = 24           # pixels of each generated image
BACKBONE = "mobilenet_v2_0.35"
IMAGE_SIZE = 32


def anon_mb() -> float:
    """This process's anonymous resident memory now (Linux /proc), in MiB.

    Anonymous: the heap, what the process really holds. Pages of a memory-mapped file
    (the feature store's `.npy`) count in the plain RSS while mapped, but they are the
    kernel's page cache, dropped under pressure, not memory the store holds.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PeakMemory:
    """The highest `anon_mb` seen, polled every 20 ms in a thread (a context manager)."""

    def __enter__(self) -> "PeakMemory":
        self.peak = anon_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, anon_mb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, anon_mb())


def make_folder(root: Path, n: int, seed: int = 0) -> None:
    """`root/all/class_k/img_XXXXXX.png`: n small PNGs of noise, round-robin classes."""
    from PIL import Image

    done = root / "all" / ".complete"
    if done.exists() and int(done.read_text()) >= n:
        return
    rng = np.random.default_rng(seed)
    for k in range(CLASSES):
        (root / "all" / f"class_{k}").mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for i in range(n):
        pixels = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "all" / f"class_{i % CLASSES}" /
                                     f"img_{i:06d}.png", compress_level=1)
    done.write_text(str(n))
    print(f"made {n} images in {time.perf_counter() - t:.0f} s", flush=True)


def subset(root: Path, n: int) -> Path:
    """`root/first_N`: hard links to the first n images (the same files, no copies)."""
    folder = root / f"first_{n}"
    marker = folder / ".complete"
    if marker.exists():
        return folder
    for i in range(n):
        cls = f"class_{i % CLASSES}"
        name = f"img_{i:06d}.png"
        (folder / cls).mkdir(parents=True, exist_ok=True)
        target = folder / cls / name
        if not target.exists():
            os.link(root / "all" / cls / name, target)
    marker.write_text(str(n))
    return folder


def stage(kind: str, folder: Path, work: Path) -> dict:
    """One measurement, in this (child) process; returns its figures."""
    if kind == "audit":
        from transferkit.data.scan import scan_folder

        base = anon_mb()
        with PeakMemory() as peak:
            t = time.perf_counter()
            index = scan_folder(folder, workers=2, progress=False)
            seconds = time.perf_counter() - t
        index_mb = index.memory_usage(deep=True).sum() / 2 ** 20
        n = len(index)
        assert (index["status"] == "ok").all()
    else:
        import keras

        from transferkit.backbones import get_backbone
        from transferkit.features import FeatureKey, FeatureStore, feature_extractor
        from transferkit.model import build_classifier

        names = sorted(f"{cls}/{name}" for cls in sorted(os.listdir(folder))
                       if not cls.startswith(".")
                       for name in os.listdir(folder / cls))
        keras.utils.set_random_seed(0)
        model = build_classifier(get_backbone(BACKBONE), CLASSES, IMAGE_SIZE, None)
        extractor = feature_extractor(model)
        store = FeatureStore(work / "features")
        # A warm-up (graph tracing, thread pools) outside the measurement.
        FeatureStore(work / "warm").get(FeatureKey("imagenet", IMAGE_SIZE), names[:256],
                                        folder, extractor, seed=0, batch_size=128)
        base = anon_mb()
        index_mb = sum(len(n) + 57 for n in names) / 2 ** 20  # the name list itself
        with PeakMemory() as peak:
            t = time.perf_counter()
            values = store.get(FeatureKey("imagenet", IMAGE_SIZE), names, folder,
                               extractor, seed=0, batch_size=128)
            seconds = time.perf_counter() - t
        assert values.shape[0] == len(names) and isinstance(values, np.memmap)
        n = len(names)
    peak = peak.peak
    return {"stage": kind, "files": n, "seconds": round(seconds, 1),
            "files_per_s": round(n / seconds), "base_mb": round(base, 1),
            "peak_mb": round(peak, 1), "index_mb": round(index_mb, 1),
            "beyond_index_mb": round(peak - base - index_mb, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", help="where to make the images (default: a temp dir, removed)")
    p.add_argument("--sizes", default="25000,50000,100000")
    p.add_argument("--stages", default="audit,features")
    p.add_argument("--child", nargs=3, metavar=("STAGE", "FOLDER", "WORK"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        kind, folder, work = args.child
        print(json.dumps(stage(kind, Path(folder), Path(work))))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = None if args.dir else tempfile.TemporaryDirectory(prefix="tk_scale_")
    root = Path(args.dir or tmp.name)
    try:
        make_folder(root, max(sizes))
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]),
                   TF_CPP_MIN_LOG_LEVEL="2")
        print(f"{'stage':<9}{'files':>8}{'s':>7}{'files/s':>9}{'base MB':>9}"
              f"{'peak MB':>9}{'index MB':>10}{'beyond index MB':>17}", flush=True)
        results = []
        for kind in args.stages.split(","):
            for n in sizes:
                folder = subset(root, n)
                with tempfile.TemporaryDirectory(dir=root, prefix="work_") as work:
                    out = subprocess.run([sys.executable, __file__, "--child", kind,
                                          str(folder), work], env=env, check=True,
                                         capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                print(f"{r['stage']:<9}{r['files']:>8}{r['seconds']:>7}"
                      f"{r['files_per_s']:>9}{r['base_mb']:>9}{r['peak_mb']:>9}"
                      f"{r['index_mb']:>10}{r['beyond_index_mb']:>17}", flush=True)
                results.append(r)
            # What each further file costs at the peak: the slope between sizes.
            runs = [r for r in results if r["stage"] == kind]
            for a, b in zip(runs, runs[1:]):
                growth = (b["peak_mb"] - b["base_mb"]) - (a["peak_mb"] - a["base_mb"])
                print(f"  {kind}: {a['files']} -> {b['files']} files: peak "
                      f"{growth * 2 ** 20 / (b['files'] - a['files']):+.0f} bytes per "
                      "added file", flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
