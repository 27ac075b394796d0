"""The feature store: pooled backbone features of a run's images, computed once, on disk.

Phase 1 trains only the head, whose input is the pooled feature vector; while the
backbone is frozen that vector never changes, so computing it every epoch (the plain
Keras-guide recipe) wastes almost all of the time. The same vectors serve everything
that looks at the data through the network (calibration, the data doctor, embeddings),
so they live in the run directory, one entry per `FeatureKey`:

    features/<weights>_<size>px_<view>/
      meta.json       the key, the seed, the number of rows and their dimension
      names.txt       one image a line (its path in splits.csv), in row order
      features.npy    float32 [rows, dim], read memory-mapped
      chunks/         while being computed: one .npy per chunk of rows

A chunk is written atomically as soon as it is computed, so a killed run resumes from
its last finished chunk; an entry is reused only when its key, seed and rows match.
"""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from transferkit.data.pipeline import image_dataset
from transferkit.errors import DataError
from transferkit.fileio import atomic_path, read_json, write_json, write_text

WEIGHTS = ("imagenet", "final")
BATCHES_PER_CHUNK = 16


@dataclasses.dataclass(frozen=True)
class FeatureKey:
    """Which features: of which weights, at which input size, of which view.

    Attributes:
        weights: `"imagenet"` (the pretrained backbone, before any fine-tuning) or
            `"final"` (the run's trained model).
        image_size: The input side the images were resized to.
        view: 0 for the images as they are; k >= 1 for augmented copy k (augmentation
            seeded with the run's seed + k).
    """

    weights: str
    image_size: int
    view: int = 0

    def __post_init__(self):
        if self.weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {self.weights!r}")
        if self.view < 0:
            raise ValueError(f"view must be 0 or more, got {self.view}")

    @property
    def name(self) -> str:
        view = "plain" if self.view == 0 else f"aug{self.view}"
        return f"{self.weights}_{self.image_size}px_{view}"


def feature_extractor(model: keras.Model) -> keras.Model:
    """The classifier's trunk: raw pixels → pooled features (the head's input; an
    ensemble's members' side by side, `transferkit.model.pooled_output`)."""
    from transferkit.model import pooled_output

    return keras.Model(model.inputs, pooled_output(model))


class FeatureStore:
    """The `features/` folder of a run directory.

    Args:
        root: The folder (`RUN/features`).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def get(self, key: FeatureKey, names: Sequence[str], folder: Path,
            extractor: keras.Model, seed: int, batch_size: int = 32, workers: int = 2,
            verbose: int = 0) -> np.ndarray:
        """The features of `names`, from the store or computed (and stored) now.

        Args:
            key: Which features.
            names: The images, as paths relative to `folder`; one row each, in order.
            folder: Where the images are.
            extractor: Raw pixels → pooled features (`feature_extractor`), of the
                weights the key names.
            seed: The run's seed (augmented view k is augmented with seed + k).
            batch_size: Images per forward pass.
            workers: Decoding threads.
            verbose: Keras progress bar (0: quiet).

        Returns:
            float32 `[len(names), dim]`, memory-mapped (read-only).

        Raises:
            DataError: Some images can no longer be decoded (changed or deleted since
                the audit).
        """
        names = [str(n) for n in names]
        stored = self.load(key, names, seed)
        if stored is not None:
            return stored
        subset = self._subset(key, names, seed)
        if subset is not None:
            return subset
        entry = self.root / key.name
        meta = {"weights": key.weights, "image_size": key.image_size, "view": key.view,
                "seed": seed, "rows": len(names)}
        if self._meta(entry) != meta or _names(entry) != names:
            shutil.rmtree(entry, ignore_errors=True)  # another key's or stale rows
            write_text(entry / "names.txt", "".join(f"{n}\n" for n in names))
            write_json(entry / "meta.json", meta)
        rows = batch_size * BATCHES_PER_CHUNK
        chunks = []
        for index, start in enumerate(range(0, len(names), rows)):
            chunk = entry / "chunks" / f"{index:05d}.npy"
            part = names[start:start + rows]
            if not _readable(chunk, len(part)):
                ds = image_dataset([folder / n for n in part], None, key.image_size,
                                   batch_size, augment_seed=seed + key.view if key.view
                                   else None, workers=workers,
                                   first_batch=index * BATCHES_PER_CHUNK)
                with warnings.catch_warnings():  # a finite dataset ends: it is meant to
                    warnings.filterwarnings("ignore", message=".*ran out of data.*")
                    values = np.asarray(extractor.predict(ds, verbose=verbose), np.float32)
                if len(values) != len(part):
                    # A resumed run reuses its split: running the command again won't help.
                    raise DataError(
                        f"{len(part) - len(values)} of {len(part)} images can no longer be "
                        f"decoded (changed or deleted since the audit) under {folder}; "
                        "restore them, or pass --overwrite to audit and split again")
                with atomic_path(chunk, suffix=".tmp.npy") as tmp:
                    np.save(tmp, values)
            chunks.append(chunk)
        self._assemble(entry, chunks, len(names))
        return self.load(key, names, seed)

    def put(self, key: FeatureKey, names: Sequence[str], values: np.ndarray,
            seed: int) -> np.ndarray:
        """Stores features computed elsewhere (an ensemble's: its members' side by side).

        Args:
            key: Which features.
            names: The images, one row each, in order.
            values: `[len(names), dim]`.
            seed: The run's seed.

        Returns:
            The stored features, memory-mapped.
        """
        entry = self.root / key.name
        shutil.rmtree(entry, ignore_errors=True)
        names = [str(n) for n in names]
        write_text(entry / "names.txt", "".join(f"{n}\n" for n in names))
        with atomic_path(entry / "features.npy", suffix=".tmp.npy") as tmp:
            np.save(tmp, np.asarray(values, np.float32))
        # meta.json last: an entry without it is no entry (a kill leaves nothing half-read).
        write_json(entry / "meta.json", {"weights": key.weights, "image_size":
                                         key.image_size, "view": key.view, "seed": seed,
                                         "rows": len(names)})
        return self.load(key, names, seed)

    def load(self, key: FeatureKey, names: Sequence[str] | None = None,
             seed: int | None = None) -> np.ndarray | None:
        """The stored features of `key` (memory-mapped), or None when not stored.

        Args:
            key: Which features.
            names: When given, the rows must be exactly these images, in this order.
            seed: When given, the entry must have been computed with this seed.
        """
        entry = self.root / key.name
        meta = self._meta(entry)
        if meta is None or (seed is not None and meta.get("seed") != seed):
            return None
        if names is not None and _names(entry) != [str(n) for n in names]:
            return None
        try:
            features = np.load(entry / "features.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return None
        return features if features.shape[:1] == (meta.get("rows"),) else None

    def rows(self, key: FeatureKey, names: Sequence[str], seed: int | None = None
             ) -> np.ndarray | None:
        """The stored features of `names`, in that order, from an entry holding them all
        (and perhaps more), or None.

        Args:
            key: Which features.
            names: The images wanted.
            seed: When given, the entry must have been computed with this seed.
        """
        values = self.load(key, seed=seed)
        stored = _names(self.root / key.name) if values is not None else None
        if stored is None:
            return None
        position = {n: i for i, n in enumerate(stored)}
        if not all(str(n) in position for n in names):
            return None
        return np.asarray(values[[position[str(n)] for n in names]])

    def names(self, key: FeatureKey) -> list[str] | None:
        """The images of a stored entry, in row order (None when not stored)."""
        return _names(self.root / key.name) if self.load(key) is not None else None

    def keys(self) -> list[FeatureKey]:
        """Every complete entry."""
        keys = []
        for entry in sorted(self.root.glob("*/meta.json")):
            meta = self._meta(entry.parent)
            key = FeatureKey(meta["weights"], meta["image_size"], meta["view"])
            if self.load(key) is not None:
                keys.append(key)
        return keys

    def drop_augmented(self) -> None:
        """Removes the augmented views (only phase 1 reads them) and unfinished entries."""
        for entry in self.root.glob("*"):
            meta = self._meta(entry)
            if meta is None or meta.get("view") or not (entry / "features.npy").is_file():
                shutil.rmtree(entry, ignore_errors=True)

    def _subset(self, key: FeatureKey, names: list[str], seed: int) -> np.ndarray | None:
        """Keeps only `names` of a stored entry holding them all (the doctor stores every
        image; `--exclude-flagged` then trains on fewer), instead of recomputing."""
        entry = self.root / key.name
        rows = self.rows(key, names, seed)  # read out of the memory map: it is replaced
        if rows is None:
            return None
        with atomic_path(entry / "features.npy", suffix=".tmp.npy") as tmp:
            np.save(tmp, rows)
        write_text(entry / "names.txt", "".join(f"{n}\n" for n in names))
        write_json(entry / "meta.json", {**self._meta(entry), "rows": len(names)})
        return self.load(key, names, seed)

    @staticmethod
    def _meta(entry: Path) -> dict | None:
        try:
            meta = read_json(entry / "meta.json")
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    @staticmethod
    def _assemble(entry: Path, chunks: list[Path], rows: int) -> None:
        """Writes the chunks as one `.npy`, streaming (never all rows in memory)."""
        first = np.load(chunks[0], mmap_mode="r") if chunks else np.zeros((0, 0))
        with atomic_path(entry / "features.npy", suffix=".tmp.npy") as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                            shape=(rows, first.shape[1]))
            start = 0
            for chunk in chunks:
                values = np.load(chunk, mmap_mode="r")
                out[start:start + len(values)] = values
                start += len(values)
            out.flush()
            del out
        shutil.rmtree(entry / "chunks", ignore_errors=True)


def _names(entry: Path) -> list[str] | None:
    try:
        text = (entry / "names.txt").read_text(encoding="utf-8")
    except OSError:
        return None
    return text.splitlines()


def _readable(chunk: Path, rows: int) -> bool:
    try:
        return np.load(chunk, mmap_mode="r").shape[0] == rows
    except (OSError, ValueError):  # missing, or not a whole .npy file
        return False
