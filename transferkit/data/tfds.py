"""`tfds:NAME`: a TensorFlow Datasets image-classification dataset, as a class folder.

The dataset is downloaded and prepared by tensorflow-datasets in its own data dir, then
written once as `<cache>/<name>/<class>/<split>_<index>.<ext>` (the original encoded
bytes, not re-encoded), so that the audit, the split and the run directory are exactly
those of a folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from transferkit.errors import DataError
from transferkit.fileio import replace_dir

_MAGIC = {b"\xff\xd8\xff": ".jpg", b"\x89PNG": ".png", b"GIF8": ".gif", b"BM": ".bmp",
          b"RIFF": ".webp"}


def cache_root() -> Path:
    """`$TRANSFERKIT_CACHE/tfds`, default `~/.cache/transferkit/tfds`."""
    base = os.environ.get("TRANSFERKIT_CACHE") or Path.home() / ".cache" / "transferkit"
    return Path(base) / "tfds"


def data_folder(data: str, prepare: bool = True) -> Path:
    """The folder behind a `data` option: the path itself, or the folder of `tfds:NAME`.

    Args:
        data: A folder path or `tfds:NAME`.
        prepare: For `tfds:NAME`, download and write the folder if needed (else only
            say where it would be).
    """
    if not data.startswith("tfds:"):
        return Path(data)
    name = data[len("tfds:"):]
    return materialize(name) if prepare else dataset_folder(name)


def dataset_folder(name: str) -> Path:
    """Where `materialize` writes the TFDS dataset `name`."""
    return cache_root() / name.replace(":", "_").replace("/", "_")


def materialize(name: str, data_dir: str | None = None) -> Path:
    """Writes every split of a TFDS dataset as a class folder (once) and returns it.

    Args:
        name: TFDS name, e.g. `"tf_flowers"` (a version may follow: `"tf_flowers:3.*.*"`).
        data_dir: tensorflow-datasets' data dir (default: its own).

    Returns:
        The folder, with one subfolder per class.

    Raises:
        DataError: Unknown dataset, download failure, or not image classification.
    """
    import tensorflow_datasets as tfds

    folder = dataset_folder(name)
    if (folder / ".complete").exists():
        return folder
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # DatasetNotFoundError, bad version strings...
        raise DataError(f"unknown TFDS dataset {name!r} ({_first_line(e)}); check the name "
                        "in the catalogue (https://www.tensorflow.org/datasets/catalog), "
                        "or train from a folder instead") from e
    try:
        builder.download_and_prepare()
    except Exception as e:  # tfds and requests raise many types (network, disk, ...)
        raise DataError(f"cannot download and prepare TFDS dataset {name!r}: "
                        f"{_first_line(e)}. Check the network (tensorflow-datasets "
                        f"downloads into {builder.data_dir}), or train from a folder "
                        "instead") from e
    keys = builder.info.supervised_keys
    if not keys or len(keys) != 2:
        raise DataError(f"TFDS dataset {name!r} has no (image, label) supervised keys; "
                        "it is not an image classification dataset")
    image_key, label_key = keys
    class_names = builder.info.features[label_key].names
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=_ensure(folder.parent)))
    try:
        for split in builder.info.splits:
            ds = builder.as_dataset(split=split, decoders={
                image_key: tfds.decode.SkipDecoding()})
            for i, example in enumerate(tfds.as_numpy(ds)):
                data = example[image_key]  # the file as encoded (SkipDecoding)
                target = tmp / class_names[int(example[label_key])]
                target.mkdir(exist_ok=True)
                (target / f"{split}_{i:06d}{_extension(data)}").write_bytes(data)
        (tmp / ".complete").write_text("")
        replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _first_line(error: BaseException, limit: int = 300) -> str:
    """An exception's message as one line of at most `limit` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _extension(data: bytes) -> str:
    return next((ext for magic, ext in _MAGIC.items() if data.startswith(magic)), ".jpg")
