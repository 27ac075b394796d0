"""What the demo serves: a run or an export, and the explainers of its Keras model.

A run directory gives both predictions and heat maps. An export (`RUN/export/saved_model`,
a `.tflite` file) gives predictions through `transferkit.predictor`; its heat maps come
from the Keras model behind it, the run it came from or the export's own `model.keras`,
when one is found.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from transferkit import layout
from transferkit.config import TrainConfig
from transferkit.demo.batching import MAX_BATCH, Batcher
from transferkit.ensemble.members import explainer as ensemble_explainer
from transferkit.errors import TransferkitError
from transferkit.explain import DEFAULT_METHOD, METHODS, Explainer
from transferkit.fileio import read_json
from transferkit.predictor import Predictor, load_predictor
from transferkit.run import Run, load_model, load_run, run_state


class Session:
    """Predictions from the run or export at `path`, and heat maps when a Keras model
    is found. All model work goes through `Run`, the predictor and the explainers; this
    class only wires them together.

    Args:
        path: A finished run directory, an exported SavedModel directory or a `.tflite`
            file.
        max_batch: Most concurrent `/predict` images sharing one forward pass
            (`shared_probabilities`); 1: each request its own pass.

    Attributes:
        path: What was asked for.
        run: The `Run` behind the heat maps and the Model tab, or None.
        predictor: The export's predictor, or None when serving a run directory.
        notice: Why heat maps are unavailable, when they are ("" otherwise).
        class_names: Output class names.
        name: A short name for the page title.

    Raises:
        RunError: The path is not a finished run or a loadable export.
    """

    def __init__(self, path: str | Path, max_batch: int = MAX_BATCH):
        path = Path(path)
        self.path = path
        self.run: Run | None = None
        self.predictor: Predictor | None = None
        self.notice = ""
        if path.is_dir() and run_state(path) is not None:
            self.run = load_run(path)
            self.class_names = list(self.run.class_names)
            self.name = path.resolve().name
        else:
            self.predictor = load_predictor(path)
            self.class_names = list(self.predictor.class_names)
            self.run, self.notice = _find_keras_run(path, self.class_names)
            self.name = _export_name(path)
        self._explainers: dict[str, Explainer] = {}
        self._lock = threading.Lock()
        self.batcher = Batcher(self._predict_images, max_batch)
        if self.run is not None:
            size = self.run.image_size
            blank = np.zeros((1, size, size, 3), np.uint8)
            # Builds Keras's predict function now, not in two request threads at once,
            # and traces the default method's graph: the first visitor does not wait.
            self.run.model.predict_on_batch(self.run.preprocess(blank))
            if max_batch > 1:  # and its batch-size-free trace, which a 2nd size makes
                self.run.model.predict_on_batch(self.run.preprocess([blank[0]] * 2))
            self.heatmaps(DEFAULT_METHOD, blank, [0])

    @property
    def can_explain(self) -> bool:
        return self.run is not None

    @property
    def methods(self) -> list[str]:
        """The explanation methods offered, in display order (none without a model)."""
        return list(METHODS) if self.can_explain else []

    def probabilities(self, image: np.ndarray, batch: np.ndarray | None = None
                      ) -> np.ndarray:
        """Class probabilities of one decoded image.

        Args:
            image: The decoded RGB image.
            batch: The image already preprocessed for the Keras model, when at hand.

        Returns:
            float32 `[C]`.
        """
        if self.predictor is not None:  # the deployed model: what the user pointed at
            return np.asarray(self.predictor.predict([image]))[0]
        if batch is None:
            return np.asarray(self.run.predict([image]))[0]
        return np.asarray(self.run.model.predict_on_batch(batch))[0]

    def shared_probabilities(self, image: np.ndarray) -> np.ndarray:
        """Class probabilities `[C]` of one decoded image, computed in one forward pass
        with the images of concurrent callers (`Batcher`); the same numbers as
        `probabilities(image)`, up to float rounding."""
        return self.batcher(image)

    def _predict_images(self, images: list[np.ndarray]) -> np.ndarray:
        """Probabilities `[N, C]` of decoded images: `probabilities`, for several."""
        model = self.predictor if self.predictor is not None else self.run
        return np.asarray(model.predict(images))

    def assess(self, image: np.ndarray) -> tuple[np.ndarray, dict | None]:
        """Class probabilities `[C]` of one decoded image and its trust fields
        (`{"abstained", "unknown", "unknown_score"}`, or None: the model has no trust)."""
        probabilities, fields = (self.predictor or self.run).assess([image])
        return np.asarray(probabilities)[0], None if fields is None else fields[0]

    def heatmaps(self, method: str, batch: np.ndarray, classes: Sequence[int]
                 ) -> np.ndarray:
        """Heat maps `[N, S, S]`; each method's explainer is built once, on first use."""
        explainer = self._explainers.get(method)
        if explainer is None:
            with self._lock:  # the first call traces the graph: once, not concurrently
                explainer = self._explainers.get(method)
                if explainer is None:
                    # An ensemble: the mean of its members' maps.
                    explainer = ensemble_explainer(self.run.model, method)
                    maps = explainer(batch, list(classes))
                    self._explainers[method] = explainer
                    return maps
        return explainer(batch, list(classes))


def _find_keras_run(path: Path, class_names: list[str]) -> tuple[Run | None, str]:
    """The Keras model behind an export, as a `Run`, or `(None, why not)`.

    Looks for the run the export came from (`RUN/export/...` → `RUN`), then for the
    export's own `model.keras` (with its `config.json`).
    """
    if path.is_file() or (path / layout.SAVED_MODEL_PB).is_file():
        export_dir = path.parent  # RUN/export/saved_model, RUN/export/model.tflite
    else:
        export_dir = path         # RUN/export
    keras_file = export_dir / layout.MODEL_FILE
    config_file = export_dir / layout.CONFIG_FILE
    try:
        if run_state(export_dir.parent) == "complete":
            run = load_run(export_dir.parent)
        elif keras_file.is_file() and config_file.is_file():
            config = TrainConfig.from_dict(read_json(config_file))
            run = Run(export_dir, load_model(keras_file), class_names, config)
        else:
            return None, (f"Heat maps are not available: no Keras model was found for "
                          f"{path.name} (looked for the run directory {export_dir.parent} "
                          f"and {keras_file}). Predictions only.")
    except (TransferkitError, OSError, ValueError) as e:
        return None, f"Heat maps are not available ({e}). Predictions only."
    if list(run.class_names) != list(class_names):
        return None, (f"Heat maps are not available: the Keras model found at {run.path} "
                      "has other classes than the exported model. Predictions only.")
    return run, ""


def _export_name(path: Path) -> str:
    """The run's name for `RUN/export` and `RUN/export/<file>`, else the file's stem."""
    parts = path.resolve().parts
    if len(parts) >= 2 and parts[-1] == layout.EXPORT_DIR:
        return parts[-2]
    if len(parts) >= 3 and parts[-2] == layout.EXPORT_DIR:
        return parts[-3]
    return path.stem
