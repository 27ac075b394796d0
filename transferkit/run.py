"""The run directory: the contract between training and everything that reads its result.

Its files are named in `transferkit.layout`. `load_run` gives a `Run`, the Python face of
a finished run directory and its one reader: the demo, the exporter, the explainers and
the command line read the run's files, data and split images through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import pandas as pd

from transferkit import layout
from transferkit.config import TrainConfig
from transferkit.data.splits import SPLITS
from transferkit.errors import RunError
from transferkit.fileio import read_json
from transferkit.inference import DEFAULT_BATCH, in_batches, top_k

def load_model(path: str | Path) -> keras.Model:
    """Loads a `.keras` file with `safe_mode=True` (no arbitrary code from the file).

    Raises:
        RunError: The file is missing, not a Keras model, or contains code (a Lambda
            layer: the file has been tampered with, or was not written by transferkit).
    """
    import transferkit.model  # noqa: F401  registers ImagePreprocessing

    path = Path(path)
    if not path.is_file():
        raise RunError(f"model file not found: {path}")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # Keras raises ValueError, TypeError, OSError... from deep inside
        if "lambda" in str(e).lower() or "safe_mode" in str(e):
            raise RunError(f"refusing to load {path}: it contains Python code (a Lambda "
                           "layer), which transferkit never writes; it may have been "
                           "tampered with. Retrain, or load it yourself only if you trust "
                           "its source") from e
        raise RunError(f"cannot load {path}: not a valid Keras model file ({e})") from e


def run_state(run_dir: Path) -> str | None:
    """`"complete"`, `"running"` (unfinished or killed) or None (not a run directory)."""
    try:
        return read_json(run_dir / layout.STATE_FILE).get("state")
    except (OSError, ValueError, AttributeError):
        return None


class Run:
    """A trained classifier and what it knows about itself.

    Attributes:
        path: The run directory (or an export folder holding `model.keras` and
            `config.json`, which has no split or metrics files).
        model: The Keras classifier (raw 0-255 RGB `[N, S, S, 3]` → probabilities).
        class_names: Output class names.
        config: The training options.
    """

    def __init__(self, path: Path, model: keras.Model, class_names: list[str],
                 config: TrainConfig):
        self.path = Path(path)
        self.model = model
        self.class_names = list(class_names)
        self.config = config
        self._found: dict[str, Path] = {}  # relative `data` (older runs) → its folder

    @property
    def image_size(self) -> int:
        return int(self.config.image_size)

    # The data: where the images are, and which ones each split holds.

    @property
    def data_folder(self) -> Path:
        """The folder the run was trained from (for `tfds:NAME`, its class folder).

        Runs store it absolute. An older run's relative path is taken from the working
        directory, else from the nearest folder above the run that holds its first
        image (`transferkit train sub --out run` from a parent folder is the common case).
        """
        from transferkit.data.tfds import data_folder

        data = self.config.data
        if data.startswith("tfds:") or Path(data).is_absolute():
            return data_folder(data, prepare=False)
        if data not in self._found:  # looked for once: callers ask per image
            table = self._table(layout.SPLITS_FILE)
            first = None if table is None or table.empty else table["path"].iloc[0]
            bases = [Path.cwd(), *self.path.resolve().parents]
            found = (base / data for base in bases
                     if first is not None and (base / data / first).is_file())
            self._found[data] = next(found, Path.cwd() / data)
        return self._found[data]

    def missing_images(self, what: str) -> RunError:
        """The error for images of the run (`what`, e.g. "test images") that are not
        where it says they are: one line, with what to do."""
        data = self.config.data
        hint = ("put them back" if data.startswith("tfds:") else
                "put them back, or write their new folder into config.json's data"
                if Path(data).is_absolute() else
                f"its config.json names the relative path {data!r}: run from the folder "
                "you trained in, or write the absolute path there")
        return RunError(f"the run's {what} are not under {self.data_folder} any more; "
                        f"{hint}")

    @property
    def splits(self) -> pd.DataFrame:
        """`splits.csv`: `path` (relative to `data_folder`), `class`, `split`.

        Raises:
            RunError: The run has no readable `splits.csv`.
        """
        table = self._table(layout.SPLITS_FILE)
        if table is None or not {"path", "class", "split"} <= set(table.columns):
            raise RunError(f"{self.path} has no readable {layout.SPLITS_FILE}; it is not "
                           "a run directory written by transferkit.train")
        return table

    def split_paths(self, split: str) -> list[Path]:
        """The images of one split (`train`, `val` or `test`), in `splits.csv` order.

        The paths are where the images were at training time; they may have moved.

        Raises:
            RunError: No `splits.csv`, or an unknown split name.
        """
        if split not in SPLITS:
            raise RunError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        splits = self.splits
        root = self.data_folder
        return [root / p for p in splits.loc[splits["split"] == split, "path"]]

    def test_samples(self, n: int) -> list[Path]:
        """Up to `n` test-split images that are still on disk, taking the classes in turn.

        Raises:
            RunError: No `splits.csv`, or none of the test images is found.
        """
        splits = self.splits
        test = splits[splits["split"] == "test"].sort_values("path", kind="stable")
        # Round-robin over classes so a few samples still show every class.
        order = test.assign(rank=test.groupby("class").cumcount()).sort_values(
            ["rank", "class"], kind="stable")
        root = self.data_folder
        files = [root / p for p in order["path"] if (root / p).is_file()][:n]
        if not files and n > 0:
            raise self.missing_images("test images")
        return files

    def features(self, weights: str = "final", batch_size: int = DEFAULT_BATCH,
                 verbose: int = 0) -> tuple[list[str], np.ndarray]:
        """Pooled backbone features of every image of the run (`splits.csv` order).

        Args:
            weights: `"imagenet"`: the backbone as training started (stored by phase 1);
                `"final"`: the trained model's, computed on first use and stored. A
                run that never fine-tuned has one set: its backbone never changed.
            batch_size: Images per forward pass, when they are computed.
            verbose: Keras progress bar (0: quiet).

        Returns:
            `(names, features)`: image paths as in `splits.csv`, and float32
            `[N, D]` read memory-mapped from `features/`.

        Raises:
            RunError: The ImageNet features are not stored (a run made before the store,
                or an export), or the run has no `splits.csv`.
            DataError: Images needed to compute the final features are gone.
        """
        from transferkit.features import FeatureKey, FeatureStore, feature_extractor

        if weights not in ("imagenet", "final"):
            raise RunError(f"unknown feature weights {weights!r}; use imagenet or final")
        store = FeatureStore(self.path / layout.FEATURES_DIR)
        names = self.splits["path"].tolist()
        initial = FeatureKey("imagenet", self.image_size)
        frozen = (self.plan or {}).get("unfreeze_blocks") == 0
        if weights == "imagenet" or frozen:
            stored = store.load(initial, names)
            if stored is not None:
                return names, stored
            if weights == "imagenet":
                raise RunError(f"{self.path} has no stored ImageNet features "
                               f"({layout.FEATURES_DIR}/{initial.name}); training writes "
                               "them: retrain to get them")
        return names, store.get(FeatureKey("final", self.image_size), names,
                                self.data_folder, feature_extractor(self.model),
                                self.config.seed, batch_size, self.config.workers, verbose)

    # The run's other files; None when absent (an export's Keras model has none).

    @property
    def metrics(self) -> dict[str, Any] | None:
        """`metrics.json`: test accuracy, macro-F1, their validation twins
        (`val_accuracy`, `val_macro_f1`: runs are chosen on these), counts, timings."""
        return self._json(layout.METRICS_FILE)

    @property
    def plan(self) -> dict[str, Any] | None:
        """`plan.json`: strategy, blocks fine-tuned, image size, and why."""
        return self._json(layout.PLAN_FILE)

    @property
    def history(self) -> pd.DataFrame | None:
        """`history.csv`: one row per epoch of both phases."""
        return self._table(layout.HISTORY_FILE)

    @property
    def per_class(self) -> pd.DataFrame | None:
        """`per_class.csv`: precision, recall, F1 and support of each class."""
        return self._table(layout.PER_CLASS_FILE)

    @property
    def top_losses(self) -> pd.DataFrame | None:
        """`top_losses.csv`: the most confidently wrong test images."""
        return self._table(layout.TOP_LOSSES_FILE)

    @property
    def confusion_matrix_image(self) -> Path | None:
        """`confusion_matrix.png`, if the run has one."""
        path = self.path / layout.CONFUSION_PNG
        return path if path.is_file() else None

    # Any other file, by its `layout` name (the report's optional parts: data_issues.csv,
    # trust.json, calibration.png, export/parity.json, inspect/embedding_tsne.png, ...).

    def file(self, name: str) -> Path | None:
        """`RUN/name` if it is a file (e.g. `layout.CALIBRATION_PNG`), else None."""
        path = self.path / name
        return path if path.is_file() else None

    def table(self, name: str) -> pd.DataFrame | None:
        """A CSV file of the run (e.g. `layout.DATA_ISSUES_FILE`), or None."""
        return self._table(name)

    def document(self, name: str) -> dict[str, Any] | None:
        """A JSON file of the run (e.g. `layout.TRUST_FILE`), or None."""
        return self._json(name)

    def _json(self, name: str) -> dict[str, Any] | None:
        try:
            value = read_json(self.path / name)
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def _table(self, name: str) -> pd.DataFrame | None:
        try:
            return pd.read_csv(self.path / name, keep_default_na=False)
        except (OSError, ValueError):
            return None

    # The model.

    def preprocess(self, images: Sequence[Any]) -> np.ndarray:
        """Loads and resizes images (paths, bytes or HxWx3 arrays) to a float32 batch.

        Raises:
            ImageError: An image cannot be decoded, or an array is not 0-255 RGB.
        """
        from transferkit.data.images import as_rgb, load_image
        from transferkit.data.pipeline import resize

        size = self.image_size
        batch = [resize(as_rgb(image) if isinstance(image, np.ndarray) else
                        load_image(image), size).numpy() for image in images]
        return np.stack(batch) if batch else np.zeros((0, size, size, 3), np.float32)

    def predict(self, images: Sequence[Any], batch_size: int = DEFAULT_BATCH
                ) -> np.ndarray:
        """Class probabilities `[N, C]` for images given as paths, bytes or arrays.

        Raises:
            ImageError: An image cannot be decoded (the message names it).
        """
        return in_batches(lambda part: self.model.predict_on_batch(self.preprocess(part)),
                          list(images), batch_size, len(self.class_names))

    def top_k(self, probabilities: np.ndarray, k: int = 3) -> list[list[dict]]:
        """The k most probable labels of each row: `[{"label", "probability"}, ...]`."""
        return top_k(probabilities, self.class_names, k)

    def known_images(self, data_dir: str | Path, progress: bool | None = None):
        """Audits a labelled folder whose classes must be a subset of the run's.

        Returns:
            `(index, ok)`: the whole audit and its usable rows.

        Raises:
            DataError: The folder has classes the model does not know, or no images.
        """
        from transferkit.evaluate import known_images

        progress = not self.config.quiet if progress is None else progress
        return known_images(self.class_names, data_dir, progress)

    def evaluate(self, data_dir: str | Path, unknown: str | Path | None = None,
                 batch_size: int = DEFAULT_BATCH) -> dict:
        """Metrics on a folder whose classes are a subset of the run's (see
        `transferkit.trust.assess.evaluate_run`): accuracy, macro-F1, ECE, and with
        trust the coverage and selective accuracy; `unknown` adds the unknown score's
        AUROC on a folder of images of other kinds.

        Raises:
            DataError: The folder has classes the model does not know, or no images.
        """
        from transferkit.trust.assess import evaluate_run

        return evaluate_run(self, data_dir, unknown, batch_size)

    # Trust: calibration, "not sure" and "not one of my classes" (transferkit.trust).

    @property
    def trust(self):
        """`TrustParams` from `trust.json` + `trust.npz`, or None (an uncalibrated run).

        Raises:
            RunError: `trust.json` exists but cannot be read.
        """
        from transferkit.trust.params import load_trust

        return load_trust(self.path)

    def trust_graph(self):
        """`TrustGraph`: pixels → probabilities and trust outputs in TF ops (None
        without trust); built once per `trust.json` (calibrating again rebuilds it)."""
        from transferkit.trust.graph import TrustGraph

        path = self.path / layout.TRUST_FILE
        key = path.stat().st_mtime_ns if path.is_file() else None
        if getattr(self, "_graph_key", ...) != key:
            params = self.trust
            self._graph = None if params is None else TrustGraph(self.model, params)
            self._graph_key = key
        return self._graph

    def assess(self, images: Sequence[Any], batch_size: int = DEFAULT_BATCH
               ) -> tuple[np.ndarray, list[dict[str, Any]] | None]:
        """Probabilities and the per-image trust fields of images (paths, bytes, arrays).

        Returns:
            `(probabilities [N, C], fields)`: `fields` has one
            `{"abstained", "unknown", "unknown_score"}` per image, or is None for a run
            without trust (nothing is claimed).

        Raises:
            ImageError: An image cannot be decoded (the message names it).
        """
        from transferkit.predictors.base import trust_fields

        graph = self.trust_graph()
        if graph is None:
            return self.predict(images, batch_size), None
        parts = [graph(self.preprocess(list(images)[i:i + batch_size]))
                 for i in range(0, len(images), batch_size)]
        if not parts:
            return np.zeros((0, len(self.class_names)), np.float32), []
        out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return out["probabilities"], trust_fields(out["abstained"], out["is_unknown"],
                                                  out["unknown_score"])


def load_run(run_dir: str | Path) -> Run:
    """Opens a finished run directory.

    Args:
        run_dir: Folder written by `transferkit.train`.

    Returns:
        The `Run`.

    Raises:
        RunError: Missing, unfinished or unsafe run directory.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory not found: {run_dir}")
    state = run_state(run_dir)
    if state != "complete":
        what = "unfinished (run the same train command again to resume it)" \
            if state == "running" else "not a transferkit run directory"
        raise RunError(f"{run_dir} is {what}")
    config = TrainConfig.from_dict(read_json(run_dir / layout.CONFIG_FILE))
    class_names = read_json(run_dir / layout.LABELS_FILE)
    return Run(run_dir, load_model(run_dir / layout.MODEL_FILE), class_names, config)
