"""The images an export's parity is checked on: the run's own, else synthetic ones."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from transferkit.data.images import load_image
from transferkit.data.splits import SPLITS
from transferkit.errors import ImageError, RunError
from transferkit.run import Run

_SEED = 0
_MAX_SYNTHETIC = 32


@dataclasses.dataclass(frozen=True)
class Sample:
    """Parity images: Pillow-decoded pixels and the encoded files' bytes, in pairs.

    Attributes:
        pixels: uint8 `[H, W, 3]` arrays, as training decodes the files.
        data: The files' bytes, for the SavedModel's `serve_bytes`.
        kind: `"test"`, `"other"` (train/val images) or `"synthetic"`.
        source: Where the images come from, in words, for the report.
    """

    pixels: list[np.ndarray]
    data: list[bytes]
    kind: str
    source: str


def parity_sample(run: Run, n: int) -> Sample:
    """Up to `n` test-split images; other images of the run, or synthetic ones, if gone.

    Folder and `tfds:` runs alike (`Run.split_paths`). The data may have moved since
    training: then any of the run's images still found is used, and if none is, random
    images (PNG and JPEG) stand in.

    Args:
        run: The run being exported.
        n: The most images to take (at least 1).

    Returns:
        The sample, drawn in a fixed random order (the same on every export).
    """
    try:
        test = run.split_paths("test")
        other = [p for split in SPLITS if split != "test" for p in run.split_paths(split)]
    except RunError:  # No splits.csv.
        return synthetic_sample(n, f"the run {run.path} lists no split images")
    root = run.data_folder
    for paths, kind, source in (
            (test, "test", f"of the test split of {root}"),
            (other, "other", f"of the train/val splits of {root} (its test images were "
                             "not found)")):
        pixels, data = _read_some(paths, n)
        if pixels:
            return Sample(pixels, data, kind,
                          f"{len(pixels)} images (of {len(paths)}) {source}")
    return synthetic_sample(n, f"no image of the run's data ({run.config.data}) was found")


def synthetic_sample(n: int, why: str) -> Sample:
    """Up to `n` (at most 32) random images of assorted sizes, PNG and JPEG in turn.

    Args:
        n: The number of images wanted.
        why: Why no real image is used, for the report.
    """
    rng = np.random.default_rng(_SEED)
    pixels, data = [], []
    for i in range(min(n, _MAX_SYNTHETIC)):
        height, width = rng.integers(24, 300, 2)
        base = rng.integers(0, 256, 3)
        noise = rng.normal(0, 60, (height, width, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(
            buffer, format="PNG" if i % 2 == 0 else "JPEG")
        data.append(buffer.getvalue())
        pixels.append(load_image(data[-1]))
    return Sample(pixels, data, "synthetic",
                  f"{len(pixels)} SYNTHETIC random images ({why})")


def _read_some(paths: Sequence[Path], n: int) -> tuple[list[np.ndarray], list[bytes]]:
    """Up to `n` of `paths` that still read and decode, in a seeded random order."""
    pixels, data = [], []
    for i in np.random.default_rng(_SEED).permutation(len(paths)):
        try:
            encoded = paths[i].read_bytes()
            decoded = load_image(encoded)
        except (OSError, ImageError):
            continue
        pixels.append(decoded)
        data.append(encoded)
        if len(pixels) == n:
            break
    return pixels, data
