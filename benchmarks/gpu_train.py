"""Training speed on this machine's GPU beside its CPU: images/s of both phases.

    python benchmarks/gpu_train.py                        # 512 images at 160 px
    python benchmarks/gpu_train.py --images 2048 --size 224 --backbone efficientnet_b0

Makes a synthetic folder (`transferkit.testing.make_color_folder`), then measures, as
`transferkit.train` runs them (same pipeline, same batch and precision defaults from
`transferkit.accelerator`):

- phase 1, feature extraction: the backbone's pooled features of every image, through
  the feature store (decode, resize, forward pass, write);
- phase 2, fine-tuning: training steps with the top blocks unfrozen, on augmented
  images (decode, augment, forward and backward pass).

Each device runs in its own child process (the CPU one with CUDA_VISIBLE_DEVICES=""),
after one untimed warm-up pass. While a GPU phase runs, `nvidia-smi` is polled in a
thread for the GPU's utilization (mean and max, %). Without a GPU only the CPU column
is printed. Random weights by default (`--weights imagenet` for the real ones): the
speed does not depend on their values. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


class GpuMonitor:
    """Mean and max GPU utilization (%) while in the block, from `nvidia-smi`."""

    def __enter__(self) -> "GpuMonitor":
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.25):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu",
                                      "--format=csv,noheader,nounits"], timeout=5,
                                     capture_output=True, text=True).stdout
                self.samples.append(max(float(v) for v in out.split()))
            except (OSError, ValueError, subprocess.TimeoutExpired):
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_util_mean": None, "gpu_util_max": None}
        return {"gpu_util_mean": round(sum(self.samples) / len(self.samples)),
                "gpu_util_max": round(max(self.samples))}


def measure(args: argparse.Namespace, data: Path, work: Path) -> dict:
    """Both phases on whatever device this process sees."""
    import keras

    from transferkit.accelerator import detect, precision
    from transferkit.backbones import get_backbone
    from transferkit.data.pipeline import image_dataset
    from transferkit.features import FeatureKey, FeatureStore, feature_extractor
    from transferkit.model import build_classifier, set_trainable_blocks

    device = detect()
    mixed = device.mixed_precision(args.mixed_precision)
    batch = args.batch_size or device.default_batch
    files = sorted(p for p in data.rglob("*.png"))
    names = [p.relative_to(data).as_posix() for p in files]
    classes = sorted({p.parent.name for p in files})
    labels = keras.utils.to_categorical([classes.index(p.parent.name) for p in files],
                                        len(classes))
    keras.utils.set_random_seed(0)
    result = {"device": f"{device.gpus} GPU" if device.has_gpu else "CPU",
              "mixed_precision": mixed, "batch": batch, "images": len(files)}
    with precision(mixed):
        weights = None if args.weights == "none" else args.weights
        model = build_classifier(get_backbone(args.backbone), len(classes), args.size,
                                 weights)
        extractor = feature_extractor(model)
        key = FeatureKey("imagenet", args.size)
        # Warm-up, untimed: a full batch and one of the last batch's size (each batch
        # size traces the graph once).
        FeatureStore(work / "warm").get(key, names[:batch + len(names) % batch], data,
                                        extractor, 0, batch, args.workers)
        with GpuMonitor() as gpu:
            t = time.perf_counter()
            FeatureStore(work / "features").get(key, names, data, extractor, 0, batch,
                                                args.workers)
            seconds = time.perf_counter() - t
        result["phase1_images_per_s"] = round(len(files) / seconds, 1)
        result["phase1_gpu"] = gpu.summary()

        set_trainable_blocks(model, args.unfreeze)
        model.compile(keras.optimizers.Adam(1e-4), "categorical_crossentropy")
        ds = image_dataset([str(f) for f in files], labels, args.size, batch,
                           shuffle_seed=0, augment_seed=0, workers=args.workers)
        model.fit(ds, epochs=1, verbose=0)  # warm-up, untimed: traces the train step
        with GpuMonitor() as gpu:
            t = time.perf_counter()
            model.fit(ds, epochs=args.epochs, verbose=0)
            seconds = time.perf_counter() - t
        result["phase2_images_per_s"] = round(args.epochs * len(files) / seconds, 1)
        result["phase2_gpu"] = gpu.summary()
    return result


def child(args: argparse.Namespace, data: Path, work: Path, cpu: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]),
               TF_CPP_MIN_LOG_LEVEL="2")
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    argv = [sys.executable, __file__, "--child", str(data), str(work)] + \
        sys.argv[1:]
    out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def gpu_visible() -> bool:
    """Whether nvidia-smi lists a GPU (asked without importing TensorFlow here)."""
    if not shutil.which("nvidia-smi"):
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "GPU" in out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--backbone", default="mobilenet_v2_0.35")
    p.add_argument("--weights", default="none", help="none (default) or imagenet")
    p.add_argument("--batch-size", type=int, help="default: the device's")
    p.add_argument("--mixed-precision", default="auto", choices=["auto", "on", "off"])
    p.add_argument("--unfreeze", type=int, default=2, help="phase 2's top blocks")
    p.add_argument("--epochs", type=int, default=2, help="phase 2 epochs timed")
    p.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2))
    p.add_argument("--cpu-only", action="store_true", help="skip the GPU column")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args, Path(args.child[0]), Path(args.child[1]))))
        return 0
    from transferkit.testing import make_color_folder

    with tempfile.TemporaryDirectory(prefix="tk_gpu_train_") as tmp:
        per_class = -(-args.images // 3)
        data = make_color_folder(Path(tmp) / "data", n_per_class=per_class,
                                 size=max(64, args.size), seed=0)
        columns = []
        if gpu_visible() and not args.cpu_only:
            columns.append(child(args, data, Path(tmp) / "gpu", cpu=False))
        columns.append(child(args, data, Path(tmp) / "cpu", cpu=True))
    rows = [("device", "device"), ("mixed precision", "mixed_precision"),
            ("batch", "batch"), ("images", "images"),
            ("phase 1 images/s", "phase1_images_per_s"),
            ("phase 1 GPU util % (mean/max)", "phase1_gpu"),
            ("phase 2 images/s", "phase2_images_per_s"),
            ("phase 2 GPU util % (mean/max)", "phase2_gpu")]
    print(f"{args.backbone} at {args.size} px, phase 2: top {args.unfreeze} blocks")
    for label, key in rows:
        values = []
        for c in columns:
            v = c[key]
            if isinstance(v, dict):
                v = "-" if v["gpu_util_mean"] is None else \
                    f"{v['gpu_util_mean']}/{v['gpu_util_max']}"
            values.append(f"{v!s:>14}")
        print(f"{label:<32}" + "".join(values))
    if len(columns) == 2:
        for phase in ("phase1", "phase2"):
            ratio = columns[0][f"{phase}_images_per_s"] / columns[1][f"{phase}_images_per_s"]
            print(f"{phase}: GPU x{ratio:.1f} the CPU")
    else:
        print("(no GPU visible: CPU figures only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
