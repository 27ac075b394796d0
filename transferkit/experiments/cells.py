"""One cell of the transfer experiment: train one method on one subset, score the test split.

The three methods share everything but what they start from and what they train: the
same split, image size, batch, maximum epochs, patience and augmentation
(`data.pipeline.augment`), training's loss (categorical cross-entropy with its label
smoothing, and its class weights), and Adam with one epoch of warm-up then cosine
decay: one recipe of the training engine (`transferkit.engine`). The frozen head is the
classifier's own head trained on the pretrained features from the experiment's feature
store (computed once for every image); the fine-tuned model starts from that very
head, as training's phase 2 starts from phase 1.
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
from transferkit.engine import Recipe, run_phase
from transferkit.engine.recipes import class_weight, head_model, one_hot, training_loss
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
        if method == "scratch":  # random weights: every layer learns, BatchNorm too
            for layer in model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = SCRATCH_BN_MOMENTUM
        else:  # the frozen cell's head (kept for the fine-tuned cell): its own layers
            features = self.features()
            epochs = len(self._phase(
                head_model(model), (features[rows], rows), (features[self.val], self.val),
                rows, config.learning_rate,
                self.out / "cells" / f"{cell_name(fraction, 'frozen')}_head.npz"))
            if method == "frozen":
                predicted = head_model(model).predict(features[self.test], verbose=0)
                return {"correct": self._correct(predicted), "epochs": epochs}
            set_trainable_blocks(model, len(backbone_blocks(model)))
        n = len(self.classes)
        train = image_dataset(self._paths(rows), one_hot(self.labels[rows], n),
                              config.image_size, config.batch_size,
                              shuffle_seed=config.seed, augment_seed=config.seed,
                              workers=config.workers)
        val = image_dataset(self._paths(self.val), one_hot(self.labels[self.val], n),
                            config.image_size, config.batch_size, workers=config.workers)
        epochs = len(self._phase(model, train, val, rows, config.learning_rate if
                                 method == "scratch" else config.fine_tune_learning_rate,
                                 None))
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

    def _phase(self, model, train, val, rows: np.ndarray, rate: float,
               path: Path | None) -> list[dict]:
        """One phase of the engine with training's loss and class weights, one epoch
        of warm-up then cosine decay; arrays `(x, rows)` get their one-hot labels."""
        n, config = len(self.classes), self.config
        if not hasattr(train, "element_spec"):  # features, and the rows they are of
            train, val = [(x, one_hot(self.labels[r], n)) for x, r in (train, val)]
        recipe = Recipe(config.max_epochs, rate, training_loss(_TRAIN.label_smoothing),
                        steps_per_epoch=math.ceil(len(rows) / config.batch_size),
                        cosine=True, patience=config.patience,
                        batch_size=config.batch_size, seed=config.seed)
        return run_phase(model, train, val, recipe, path, verbose=self.verbose,
                         class_weight=class_weight(self.labels[rows], n))

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
