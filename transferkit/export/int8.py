"""The full-integer TFLite model's calibration images and its acceptance check.

Calibration: `N_REPRESENTATIVE` images of the run's train split, drawn stratified by
class (seeded), decoded and resized as training does, rounded to integers (the uint8
the model is fed). The int8 model is kept only if, on the run's whole test split, its
top-1 answers agree with the float Keras model's on at least `Int8Tolerance.
min_top1_agreement` of the images and its accuracy is at most `max_accuracy_drop`
below the Keras model's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.data.images import load_image
from transferkit.errors import ConfigError, ImageError, RunError
from transferkit.inference import in_batches
from transferkit.predictors.tflite import TFLitePredictor
from transferkit.run import Run

N_REPRESENTATIVE = 300
_SEED = 0


@dataclasses.dataclass(frozen=True)
class Int8Tolerance:
    """When a full-integer model is kept (JSON-serializable, for `parity.json`).

    Attributes:
        min_top1_agreement: Least fraction of test images on which its top class is the
            Keras model's.
        max_accuracy_drop: Most test accuracy it may lose (0.01: one point).
    """

    min_top1_agreement: float = 0.98
    max_accuracy_drop: float = 0.01

    def __post_init__(self):
        if not 0 <= self.min_top1_agreement <= 1:
            raise ConfigError("--int8-min-agreement must be a fraction between 0 and 1, "
                              f"got {self.min_top1_agreement}")
        if not 0 <= self.max_accuracy_drop <= 1:
            raise ConfigError("--int8-max-drop must be a fraction between 0 and 1 (0.01: "
                              f"one point), got {self.max_accuracy_drop}")


def representative_images(run: Run, n: int = N_REPRESENTATIVE) -> list[np.ndarray]:
    """About `n` train-split images, stratified by class, resized and rounded.

    Args:
        run: The run being exported.
        n: The number of images wanted (each class gets its share, at least one).

    Returns:
        float32 `[S, S, 3]` arrays of integers 0-255. The first has one black and one
        white pixel, so the calibrated input range is exactly 0-255 (scale 1, zero point
        0) whatever the photos hold.

    Raises:
        RunError: The run lists no train images, or none of them is found.
    """
    splits = run.splits
    train = splits[splits["split"] == "train"]
    rng = np.random.default_rng(_SEED)
    chosen: list[Path] = []
    for _, rows in train.groupby("class", sort=True):
        share = max(1, round(n * len(rows) / max(len(train), 1)))
        picks = rng.permutation(len(rows))[:share]
        chosen += [run.data_folder / rows["path"].iloc[i] for i in picks]
    images = []
    for path in chosen:
        try:
            images.append(np.rint(np.clip(run.preprocess([load_image(path)])[0], 0, 255)))
        except (OSError, ImageError):
            continue
    if not images:
        raise RunError(f"the int8 export calibrates on the run's train images, and none "
                       f"was found under {run.data_folder}; put the data back or export "
                       "another format")
    images[0][0, 0], images[0][0, -1] = 0.0, 255.0
    return images


def check_int8(run: Run, model_file: Path, tolerance: Int8Tolerance) -> dict[str, Any]:
    """Compares the int8 model with the Keras model on the run's test split.

    The int8 model is run through `TFLitePredictor`, as users run it: the resized
    pixels are rounded to its uint8 input, its uint8 output is divided by 256.

    Args:
        run: The exported run.
        model_file: The int8 `.tflite` file.
        tolerance: When it is kept.

    Returns:
        `n_images`, `top1_agreement`, `accuracy_keras`, `accuracy_int8`,
        `accuracy_change`, `max_abs_diff` and `tolerance`.

    Raises:
        RunError: It fails the tolerance (the message gives the numbers), or the test
            images are not found.
    """
    splits = run.splits
    test = splits[splits["split"] == "test"]
    pixels, labels = [], []
    for path, name in zip(test["path"], test["class"]):
        try:
            pixels.append(load_image(run.data_folder / path))
        except (OSError, ImageError):
            continue
        labels.append(run.class_names.index(name))
    if not pixels:
        raise RunError(f"the int8 export is checked on the run's test images, and none "
                       f"was found under {run.data_folder}; nothing was exported")
    batch = run.preprocess(pixels)
    reference = in_batches(run.model.predict_on_batch, batch)
    predictor = TFLitePredictor(model_file, run.class_names)
    quantized = np.concatenate([predictor.invoke(x[None]) for x in batch])
    y = np.asarray(labels)
    keras_top, int8_top = reference.argmax(axis=1), quantized.argmax(axis=1)
    result = {"n_images": len(pixels),
              "top1_agreement": float((keras_top == int8_top).mean()),
              "accuracy_keras": float((keras_top == y).mean()),
              "accuracy_int8": float((int8_top == y).mean()),
              "max_abs_diff": float(np.abs(reference - quantized).max()),
              "tolerance": dataclasses.asdict(tolerance)}
    result["accuracy_change"] = result["accuracy_int8"] - result["accuracy_keras"]
    failures = []
    if not result["top1_agreement"] >= tolerance.min_top1_agreement:
        failures.append(f"top-1 agreement with the Keras model {result['top1_agreement']:.1%}"
                        f" < {tolerance.min_top1_agreement:.0%}")
    if not -result["accuracy_change"] <= tolerance.max_accuracy_drop:
        drop = result["accuracy_keras"] - result["accuracy_int8"]
        failures.append(f"accuracy drop {drop * 100:.1f} points > "
                        f"{tolerance.max_accuracy_drop * 100:g}")
    if failures:
        raise RunError(
            f"the int8 TFLite model was refused: {'; '.join(failures)} ({summary(result)})."
            " Nothing was exported; use --format tflite (float32) or --quantize dynamic "
            "instead, or accept it knowingly with --int8-min-agreement / --int8-max-drop")
    return result


def summary(result: dict[str, Any]) -> str:
    """One line: the int8 model's agreement and accuracy change."""
    return (f"TFLite (int8): top-1 agreement {result['top1_agreement']:.1%}, accuracy "
            f"{result['accuracy_keras']:.3f} -> {result['accuracy_int8']:.3f} on "
            f"{result['n_images']} test images")
