"""`RunPredictor`: a run directory's own Keras model."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from transferkit.inference import DEFAULT_BATCH
from transferkit.predictors.base import Predictor


class RunPredictor(Predictor):
    """The run's own Keras model (`transferkit.run.Run.predict`)."""

    kind = "run"

    def __init__(self, run):
        super().__init__(run.class_names, run.path)
        self.run = run

    def _predict_pixels(self, pixels: list[np.ndarray], batch_size: int) -> np.ndarray:
        return np.asarray(self.run.predict(pixels, batch_size), np.float32)

    def evaluate(self, data_dir: str | os.PathLike, unknown: str | os.PathLike | None = None,
                 batch_size: int = DEFAULT_BATCH) -> dict[str, Any]:
        """`Run.evaluate`: the run's own evaluation, with its trust measures."""
        return self.run.evaluate(data_dir, unknown, batch_size)
