"""A corrupted copy of a class folder for the data doctor: flipped labels, planted near-copies.

    python benchmarks/doctor_corrupt.py SOURCE OUT [--generator a|b|single] [--flip 0.05]
        [--copies 40] [--seed 0]

OUT/data/<class>/ holds links to every SOURCE photo, 5% of them (at random) filed under
another class, plus `--copies` altered copies of other photos beside their originals.
Two generators edit differently, so that thresholds chosen on one are checked on the
other (issue 27):

- `a`: a crop keeping 85-95% of each side, a mirror half the time, brightness ±15%,
  JPEG at quality 55-80;
- `b`: a crop keeping 80-95%, a rotation of at most 3°, colour (saturation) and contrast
  ±20%, a downscale to 55-85% of the size, a mirror half the time, WebP or JPEG at
  quality 50-85;
- `single`: one everyday edit per copy in turn (`transferkit.testing.NEAR_COPY_KINDS`).

OUT/truth.json names the flipped files and the planted pairs; `doctor_measure.py`
scores the doctor against it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from transferkit.testing import NEAR_COPY_KINDS, near_copy


def _crop(image: Image.Image, low: float, high: float, rng) -> Image.Image:
    w, h = image.size
    keep = rng.uniform(low, high)
    cw, ch = int(w * keep), int(h * keep)
    x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
    return image.crop((x, y, x + cw, y + ch))


def generator_a(image: Image.Image, rng) -> tuple[Image.Image, dict]:
    """Crop 85-95% + mirror half the time + brightness ±15%; JPEG 55-80."""
    image = _crop(image, 0.85, 0.95, rng)
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.85, 1.15))
    return image, {"format": "JPEG", "quality": int(rng.integers(55, 81))}


def generator_b(image: Image.Image, rng) -> tuple[Image.Image, dict]:
    """Crop 80-95% + rotation ≤ 3° + colour/contrast ±20% + downscale 55-85% + mirror
    half the time; WebP or JPEG 50-85."""
    image = _crop(image, 0.80, 0.95, rng)
    image = image.rotate(rng.uniform(-3, 3), Image.Resampling.BILINEAR, expand=False)
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.8, 1.2))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.8, 1.2))
    scale = rng.uniform(0.55, 0.85)
    w, h = image.size
    image = image.resize((max(16, int(w * scale)), max(16, int(h * scale))),
                         Image.Resampling.LANCZOS)
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    fmt = "WEBP" if rng.random() < 0.5 else "JPEG"
    return image, {"format": fmt, "quality": int(rng.integers(50, 86))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--generator", choices=("a", "b", "single"), default="a")
    parser.add_argument("--flip", type=float, default=0.05)
    parser.add_argument("--copies", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    classes = sorted(p.name for p in args.source.iterdir() if p.is_dir())
    files = sorted(p for c in classes for p in (args.source / c).iterdir() if p.is_file())
    order = rng.permutation(len(files))
    n_flip = round(args.flip * len(files))
    flipped, originals = order[:n_flip], order[n_flip:n_flip + args.copies]
    flipped_set = set(flipped.tolist())
    data = args.out / "data"
    truth = {"generator": args.generator, "flipped": [], "pairs": []}
    new_path = {}
    for i, file in enumerate(files):
        cls = file.parent.name
        if i in flipped_set:
            cls = rng.choice([c for c in classes if c != cls])
            truth["flipped"].append({"path": f"{cls}/{file.name}",
                                     "true": file.parent.name})
        target = data / cls / file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(file.resolve())
        new_path[i] = f"{cls}/{file.name}"
    for j, i in enumerate(originals):
        file = files[i]
        image = Image.open(file).convert("RGB")
        if args.generator == "single":
            kind = NEAR_COPY_KINDS[j % len(NEAR_COPY_KINDS)]
            image = near_copy(image, kind, rng)
            save = {"format": "JPEG", "quality": 40 if kind == "reencoded" else 90}
        else:
            kind = args.generator
            image, save = (generator_a if kind == "a" else generator_b)(image, rng)
        suffix = ".webp" if save["format"] == "WEBP" else ".jpg"
        copy = data / file.parent.name / f"{file.stem}_copy_{kind}{suffix}"
        image.save(copy, **save)
        truth["pairs"].append({"original": new_path[i], "copy": copy.relative_to(data)
                               .as_posix(), "kind": kind})
    (args.out / "truth.json").write_text(json.dumps(truth, indent=1))
    print(f"{len(files)} photos, {n_flip} flipped, {args.copies} near-copies → {data}")


if __name__ == "__main__":
    main()
