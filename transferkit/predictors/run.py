"""`RunPredictor`: a run directory's own Keras model."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from transferkit.inference import DEFAULT_BATCH
from transferkit.predictors.base import Predictor


class RunPredictor(Predictor):
    """The run's own Keras model (`transferkit.run.Run.assess`), with its trust fields."""

    kind = "run"

    def __init__(self, run):
        super().__init__(run.class_names, run.path)
        self.run = run

    @property
    def has_trust(self) -> bool:
        return self.run.trust_graph() is not None

    def _assess_pixels(self, pixels: list[np.ndarray], batch_size: int
                       ) -> tuple[np.ndarray, list[dict[str, Any]] | None]:
        probabilities, fields = self.run.assess(pixels, batch_size)
        return np.asarray(probabilities, np.float32), fields

    def _predict_pixels(self, pixels: list[np.ndarray], batch_size: int) -> np.ndarray:
        return np.asarray(self.run.predict(pixels, batch_size), np.float32)

    def evaluate(self, data_dir: str | os.PathLike, unknown: str | os.PathLike | None = None,
                 batch_size: int = DEFAULT_BATCH) -> dict[str, Any]:
        """`Run.evaluate`: the same evaluation, plus the run-only `auroc_by_score`."""
        return self.run.evaluate(data_dir, unknown, batch_size)
