"""A corrupted copy of a class folder for the data doctor: flipped labels, planted near-copies.

    python benchmarks/doctor_corrupt.py SOURCE OUT [--flip 0.05] [--copies 50] [--seed 0]

OUT/data/<class>/ holds links to every SOURCE photo, 5% of them (at random) filed under
another class, plus `--copies` altered copies of other photos (re-encoded, resized,
cropped, flipped or colour-shifted, in turn) beside their originals. OUT/truth.json
names the flipped files and the planted pairs; `doctor_measure.py` scores the doctor
against it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from transferkit.testing import NEAR_COPY_KINDS, near_copy

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--flip", type=float, default=0.05)
    parser.add_argument("--copies", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    classes = sorted(p.name for p in args.source.iterdir() if p.is_dir())
    files = sorted(p for c in classes for p in (args.source / c).iterdir() if p.is_file())
    order = rng.permutation(len(files))
    n_flip = round(args.flip * len(files))
    flipped, originals = order[:n_flip], order[n_flip:n_flip + args.copies]
    data = args.out / "data"
    truth = {"flipped": [], "pairs": []}
    new_path = {}
    for i, file in enumerate(files):
        cls = file.parent.name
        if i in set(flipped.tolist()):
            cls = rng.choice([c for c in classes if c != cls])
            truth["flipped"].append({"path": f"{cls}/{file.name}",
                                     "true": file.parent.name})
        target = data / cls / file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(file.resolve())
        new_path[i] = f"{cls}/{file.name}"
    for j, i in enumerate(originals):
        kind = NEAR_COPY_KINDS[j % len(NEAR_COPY_KINDS)]
        file = files[i]
        copy = data / file.parent.name / f"{file.stem}_copy_{kind}.jpg"
        image = near_copy(Image.open(file).convert("RGB"), kind, rng)
        image.save(copy, format="JPEG", quality=40 if kind == "reencoded" else 90)
        truth["pairs"].append({"original": new_path[i], "copy": copy.relative_to(data)
                               .as_posix(), "kind": kind})
    (args.out / "truth.json").write_text(json.dumps(truth, indent=1))
    print(f"{len(files)} photos, {n_flip} flipped, {args.copies} near-copies → {data}")


if __name__ == "__main__":
    main()
