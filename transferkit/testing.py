"""Helpers for tests, benchmarks and notebooks: offline Keras weights, synthetic folders.

Keras reads `KERAS_HOME` once, when it is imported, so `use_local_weights` must run
before the first `import keras`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def shared_dir() -> Path:
    """`$TRANSFERKIT_SHARED`, default `../shared` beside the checkout."""
    default = Path(__file__).resolve().parents[2] / "shared"
    return Path(os.environ.get("TRANSFERKIT_SHARED", default))


def flowers_dir() -> Path:
    """`$TRANSFERKIT_FLOWERS`, default `<shared>/data/flowers5`."""
    return Path(os.environ.get("TRANSFERKIT_FLOWERS", shared_dir() / "data" / "flowers5"))


def use_local_weights(weights_dir: str | Path | None = None) -> Path:
    """Points `KERAS_HOME` at a temporary folder whose `models/` links to local weights.

    The product then loads weights through Keras's own cache lookup, as on a user's
    machine, without downloading anything.

    Args:
        weights_dir: Folder of Keras weight files (default `<shared>/weights`).

    Returns:
        The new `KERAS_HOME`.
    """
    weights_dir = Path(weights_dir or os.environ.get("TRANSFERKIT_WEIGHTS",
                                                     shared_dir() / "weights"))
    home = Path(tempfile.mkdtemp(prefix="transferkit-keras-home-"))
    (home / "models").mkdir()
    for file in sorted(weights_dir.glob("*.h5")):
        (home / "models" / file.name).symlink_to(file.resolve())
    os.environ["KERAS_HOME"] = str(home)
    return home


def make_color_folder(root: str | Path, classes: dict[str, tuple[int, int, int]] | None = None,
                      n_per_class: int = 12, size: int = 64, seed: int = 0) -> Path:
    """Writes a small learnable dataset: each class is a colour, with noise and shapes.

    Args:
        root: Folder to create.
        classes: Class name → RGB colour (default red, green, blue).
        n_per_class: Images per class.
        size: Image side in pixels.
        seed: Seed of the noise.

    Returns:
        `root`.
    """
    from PIL import Image

    classes = classes or {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}
    rng = np.random.default_rng(seed)
    root = Path(root)
    for name, color in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            image = np.clip(rng.normal(color, 40, (size, size, 3)), 0, 255)
            x, y = rng.integers(0, size // 2, 2)
            image[y:y + size // 3, x:x + size // 3] = rng.integers(0, 255, 3)
            Image.fromarray(image.astype(np.uint8)).save(root / name / f"{name}_{i:03d}.png")
    return root
