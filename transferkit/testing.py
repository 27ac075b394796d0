"""Helpers for tests, benchmarks and notebooks: offline Keras weights, synthetic folders.

Keras reads `KERAS_HOME` once, when it is imported, so `use_local_weights` must run
before the first `import keras`.
"""

from __future__ import annotations

import os
import socket
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


def local_weights_dir() -> Path:
    """`$TRANSFERKIT_WEIGHTS`, default `<shared>/weights`: local Keras weight files."""
    return Path(os.environ.get("TRANSFERKIT_WEIGHTS", shared_dir() / "weights"))


def use_local_weights(weights_dir: str | Path | None = None) -> Path | None:
    """Points `KERAS_HOME` at a temporary folder whose `models/` links to local weights.

    The product then loads weights through Keras's own cache lookup, as on a user's
    machine, without downloading anything.

    Args:
        weights_dir: Folder of Keras weight files (default `local_weights_dir()`).

    Returns:
        The new `KERAS_HOME`; None (and `KERAS_HOME` left alone, so Keras finds or
        downloads weights as usual) when no folder was given and the default one holds
        no weight file.
    """
    files = sorted(Path(weights_dir or local_weights_dir()).glob("*.h5"))
    if not files and weights_dir is None:
        return None
    home = Path(tempfile.mkdtemp(prefix="transferkit-keras-home-"))
    (home / "models").mkdir()
    for file in files:
        (home / "models" / file.name).symlink_to(file.resolve())
    os.environ["KERAS_HOME"] = str(home)
    return home


# Where keras.applications downloads its weight files from.
WEIGHTS_HOST = ("storage.googleapis.com", 443)


def missing_test_data(timeout: float = 3.0) -> str | None:
    """What the test suite lacks on this machine, as one line saying how to provide it.

    The suite needs real photos (`flowers_dir()`) and ImageNet weights: local files
    (`local_weights_dir()`) or Keras's normal download, which needs to reach `WEIGHTS_HOST`.

    Args:
        timeout: Seconds to wait for the download host when there are no local weights.

    Returns:
        None when everything is there, else one line naming what is missing.
    """
    import socket

    problems = []
    if not flowers_dir().is_dir():
        problems.append(f"no photos at {flowers_dir()}: set TRANSFERKIT_FLOWERS to a folder "
                        "of daisy/ dandelion/ rose/ sunflower/ tulip/ photo subfolders")
    if not any(local_weights_dir().glob("*.h5")):
        try:
            socket.create_connection(WEIGHTS_HOST, timeout=timeout).close()
        except OSError:
            problems.append(f"no Keras weights in {local_weights_dir()} and no way to download "
                            f"them ({WEIGHTS_HOST[0]} unreachable): set TRANSFERKIT_WEIGHTS "
                            "to a folder of keras.applications .h5 files")
    if not problems:
        return None
    return "transferkit tests cannot start: " + "; ".join(problems) + \
        " (see docs/getting-started.md, Running the tests)"


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


def subset_folder(source: str | Path, per_class: int) -> Path:
    """A new temporary folder of links to the first `per_class` images of each class of
    `source` (the benchmarks' quick checks)."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="transferkit-subset-"))
    for folder in sorted(p for p in Path(source).iterdir() if p.is_dir()):
        (root / folder.name).mkdir()
        for file in sorted(folder.iterdir())[:per_class]:
            (root / folder.name / file.name).symlink_to(file.resolve())
    return root


NEAR_COPY_KINDS = ("reencoded", "resized", "cropped", "flipped", "colour")


def near_copy(image, kind: str, rng: np.random.Generator):
    """A near-copy of a PIL image: the same photo after an everyday edit.

    Args:
        image: A PIL RGB image.
        kind: One of `NEAR_COPY_KINDS` (`reencoded` returns the image as it is: save it
            at a low JPEG quality).
        rng: Random sizes, crops and colour factors.

    Returns:
        The edited PIL image.
    """
    from PIL import Image, ImageEnhance, ImageOps

    w, h = image.size
    if kind == "resized":
        scale = rng.uniform(0.6, 0.8)
        return image.resize((max(8, int(w * scale)), max(8, int(h * scale))),
                            Image.Resampling.BICUBIC)
    if kind == "cropped":
        keep = rng.uniform(0.85, 0.92)
        cw, ch = int(w * keep), int(h * keep)
        x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        return image.crop((x, y, x + cw, y + ch))
    if kind == "flipped":
        return ImageOps.mirror(image)
    if kind == "colour":
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(1.1, 1.25))
        return ImageEnhance.Color(image).enhance(rng.uniform(0.7, 1.3))
    return image  # re-encoded: the caller saves it at a low JPEG quality


def register_tfds_folder(name: str, folder: str | Path) -> None:
    """Registers a real TFDS dataset builder `name` whose examples are a class folder.

    The builder is a `tfds.core.GeneratorBasedBuilder` like any in the TFDS catalogue,
    with `train` and `test` splits; `download_and_prepare` reads the local files (no
    download), so `tfds:NAME` goes through tensorflow-datasets' own preparation code.

    Args:
        name: The dataset name (snake_case), not yet registered in this process.
        folder: One subfolder per class of PNG or JPEG files.
    """
    import tensorflow_datasets as tfds

    folder = Path(folder)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, description="Local test images.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(),
                "label": tfds.features.ClassLabel(names=classes)}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        files = sorted(folder.glob("*/*"))
        return {"train": self._generate_examples(files[0::2]),
                "test": self._generate_examples(files[1::2])}

    def _generate_examples(self, files):
        for file in files:
            yield file.name, {"image": str(file), "label": file.parent.name}

    type(f"Builder_{name}", (tfds.core.GeneratorBasedBuilder,), {
        "name": name, "VERSION": tfds.core.Version("1.0.0"), "_info": _info,
        "_split_generators": _split_generators,
        "_generate_examples": _generate_examples, "__module__": __name__})


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a test server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
