"""One cell of the transfer experiment: train one method on one subset, score the test split.

The three methods share everything but what they start from and what they train: split,
image size, batch, epochs, patience, augmentation, training's loss and class weights, Adam
with warm-up then cosine: one recipe of the engine (`engine.run_labelled`). The frozen
cell trains the classifier's own head on the pretrained features of the experiment's
feature store; the fine-tuned cell starts from that head, as training's phase 2 does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import numpy as np
import pandas as pd

from transferkit.backbones import get_backbone, load_pretrained
from transferkit.config import TrainConfig
from transferkit.data.pipeline import image_dataset
from transferkit.engine.phase import Recipe, head_model, run_labelled
from transferkit.errors import DataError
from transferkit.features import FeatureKey, FeatureStore, feature_extractor
from transferkit.model import backbone_blocks, build_classifier, set_trainable_blocks

_TRAIN = TrainConfig()
# Keras's MobileNet BatchNorm keeps 99.9% of its moving statistics per step: a network
# trained from scratch for a few hundred steps would be tested with its initial
# statistics (mean 0, variance 1) and score chance. A shorter memory fixes that.
SCRATCH_BN_MOMENTUM = 0.9


def cell_name(fraction: float, method: str) -> str:
    """The cell's file stem, e.g. `0.05_fine-tune`."""
    return f"{fraction:g}_{method}"


class Cells:
    """Trains the experiment's cells on one split.

    Args:
        config: The experiment's `TransferConfig`.
        out: The experiment's folder (its `features/` and the heads in `cells/`).
        splits: `splits.csv` (path, class, split).
        verbose: Keras progress (0 quiet, 1 bar, 2 a line per epoch).
        say: Prints a line of progress.
    """

    def __init__(self, config: Any, out: Path, splits: pd.DataFrame, verbose: int,
                 say: Callable[..., None]):
        self.config, self.out, self.verbose, self.say = config, Path(out), verbose, say
        self.folder = Path(config.data)
        self.names = splits["path"].tolist()
        self.classes = sorted(splits["class"].unique())
        self.labels = splits["class"].map(self.classes.index).to_numpy(np.int32)
        self.val = np.flatnonzero(splits["split"].to_numpy() == "val")
        self.test = np.flatnonzero(splits["split"].to_numpy() == "test")
        self.backbone = get_backbone(config.backbone)
        self._pretrained: keras.Model | None = None
        self._features: np.ndarray | None = None

    def train(self, method: str, fraction: float, rows: Sequence[int]) -> dict:
        """Trains `method` on the training images at `rows`; scores it on the test split.

        Returns:
            `{"correct": [0/1 per test image], "epochs": epochs trained}`.
        """
        config = self.config
        keras.utils.set_random_seed(config.seed)
        rows = self._repeated(np.asarray(rows))
        weights = None if method == "scratch" else self.pretrained()
        model = build_classifier(self.backbone, len(self.classes), config.image_size,
                                 weights, dropout=_TRAIN.dropout)
        recipe = Recipe(config.max_epochs, config.learning_rate, keras.losses.
                        CategoricalCrossentropy(label_smoothing=_TRAIN.label_smoothing),
                        cosine=True, patience=config.patience,
                        batch_size=config.batch_size, seed=config.seed)
        if method == "scratch":  # random weights: every layer learns, BatchNorm too
            for layer in model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = SCRATCH_BN_MOMENTUM
        else:  # the frozen cell's head (kept for the fine-tuned cell): its own layers
            features = self.features()
            epochs = len(run_labelled(
                head_model(model), (features[rows], self.labels[rows]),
                (features[self.val], self.labels[self.val]), recipe,
                self.out / "cells" / f"{cell_name(fraction, 'frozen')}_head.npz",
                verbose=self.verbose))
            if method == "frozen":
                predicted = head_model(model).predict(features[self.test], verbose=0)
                return {"correct": self._correct(predicted), "epochs": epochs}
            set_trainable_blocks(model, len(backbone_blocks(model)))
            recipe.learning_rate = config.fine_tune_learning_rate
        epochs = len(run_labelled(model, (self._paths(rows), self.labels[rows]),
                                  (self._paths(self.val), self.labels[self.val]), recipe,
                                  None, config.image_size, config.workers,
                                  verbose=self.verbose))
        test = image_dataset(self._paths(self.test), None, config.image_size,
                             config.batch_size, workers=config.workers)
        return {"correct": self._correct(model.predict(test, verbose=0)), "epochs": epochs}

    def pretrained(self) -> keras.Model:
        """The standalone ImageNet backbone (loaded once)."""
        if self._pretrained is None:
            self._pretrained = load_pretrained(self.backbone, "imagenet")
        return self._pretrained

    def features(self) -> np.ndarray:
        """The pretrained backbone's pooled features of every image, from the store."""
        config = self.config
        if self._features is None:
            self.say(f"pretrained features of the {len(self.names)} images "
                     f"({config.image_size} px; kept in {self.out / 'features'})")
            model = build_classifier(self.backbone, len(self.classes), config.image_size,
                                     self.pretrained())
            self._features = np.asarray(FeatureStore(self.out / "features").get(
                FeatureKey("imagenet", config.image_size), self.names, self.folder,
                feature_extractor(model), config.seed, config.batch_size,
                config.workers, verbose=self.verbose))
        return self._features

    def _repeated(self, rows: np.ndarray) -> np.ndarray:
        """`rows` repeated so that an epoch has at least `min_steps` steps."""
        need = self.config.min_steps * self.config.batch_size
        return np.tile(rows, max(1, math.ceil(need / len(rows))))

    def _paths(self, rows: Sequence[int]) -> list[str]:
        return [str(self.folder / self.names[i]) for i in rows]

    def _correct(self, probabilities: np.ndarray) -> list[int]:
        if len(probabilities) != len(self.test):
            raise DataError(f"{len(self.test) - len(probabilities)} test images under "
                            f"{self.folder} can no longer be decoded; restore them or use "
                            "a new --out")
        predicted = np.asarray(probabilities).argmax(axis=1)
        return (predicted == self.labels[self.test]).astype(int).tolist()
