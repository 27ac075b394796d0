""""Not sure": a threshold on the calibrated confidence below which the model abstains.

The threshold is chosen on the validation split, for a target precision of the answers
given (the most inputs answered while at least that share of the answers is right) or
for a target coverage (the share of inputs answered). The test split then reports what
it really gives. The risk-coverage curve shows the whole trade-off.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from transferkit.errors import ConfigError
from transferkit.fileio import save_png, subplots

DEFAULT_TARGET_PRECISION = 0.90


def check_target(target_precision: float | None, target_coverage: float | None
                 ) -> tuple[str, float]:
    """Which rule chooses the threshold: `("target_precision" | "target_coverage", value)`.

    Raises:
        ConfigError: Both are given, or a value outside (0, 1].
    """
    if target_precision is not None and target_coverage is not None:
        raise ConfigError("give --target-precision or --target-coverage, not both")
    rule, value = ("target_coverage", target_coverage) if target_coverage is not None \
        else ("target_precision", DEFAULT_TARGET_PRECISION if target_precision is None
              else target_precision)
    if not 0 < float(value) <= 1:
        raise ConfigError(f"--{rule.replace('_', '-')} must be in (0, 1], got {value}")
    return rule, float(value)


def choose_threshold(confidence: np.ndarray, correct: np.ndarray, rule: str,
                     value: float) -> tuple[float, bool]:
    """The confidence threshold meeting `rule` on these answers (answer: conf >= t).

    Args:
        confidence: `[N]` max calibrated probability of each image.
        correct: `[N]` whether the top class is right.
        rule: `"target_precision"` (the lowest threshold whose answers are at least
            `value` right, i.e. the most coverage) or `"target_coverage"` (the highest
            threshold answering at least `value` of the images).
        value: The target.

    Returns:
        `(threshold, met)`; when no threshold meets a precision target, the threshold is
        just above the highest confidence (never answer) and `met` is False.
    """
    order = np.argsort(-np.asarray(confidence, np.float64), kind="stable")
    conf = np.asarray(confidence, np.float64)[order]
    hits = np.asarray(correct, np.float64)[order]
    n = len(conf)
    if n == 0:
        return 1.0, False
    # Only cut between different confidences: a threshold answers all its ties.
    ends = np.flatnonzero(np.append(conf[1:] < conf[:-1], True))  # last index of a tie run
    if rule == "target_coverage":
        k = max(1, math.ceil(value * n - 1e-9))
        end = ends[np.searchsorted(ends, k - 1)]
        return float(conf[end]), True
    precision = np.cumsum(hits)[ends] / (ends + 1)
    ok = np.flatnonzero(precision >= value - 1e-12)
    if ok.size == 0:
        return float(np.nextafter(conf[0], np.inf)), False
    return float(conf[ends[ok[-1]]]), True


def selective(confidence: np.ndarray, correct: np.ndarray, threshold: float
              ) -> tuple[float, float]:
    """`(precision, coverage)` of the answers with confidence >= threshold.

    Precision (the selective accuracy) is NaN when nothing is answered.
    """
    answered = np.asarray(confidence) >= threshold
    coverage = float(answered.mean()) if answered.size else 0.0
    precision = float(np.asarray(correct)[answered].mean()) if answered.any() else \
        float("nan")
    return precision, coverage


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> pd.DataFrame:
    """The risk-coverage curve: one row per distinct threshold, highest first.

    Returns:
        `threshold`, `coverage`, `precision` (selective accuracy) and `risk` (1 -
        precision) of answering the images with confidence >= threshold.
    """
    order = np.argsort(-np.asarray(confidence, np.float64), kind="stable")
    conf = np.asarray(confidence, np.float64)[order]
    hits = np.asarray(correct, np.float64)[order]
    ends = np.flatnonzero(np.append(conf[1:] < conf[:-1], True)) if len(conf) else \
        np.zeros(0, int)
    precision = np.cumsum(hits)[ends] / (ends + 1) if len(conf) else np.zeros(0)
    return pd.DataFrame({"threshold": conf[ends], "coverage": (ends + 1) / max(len(conf), 1),
                         "precision": precision, "risk": 1 - precision})


def plot_risk_coverage(curve: pd.DataFrame, path: Path, threshold: float,
                       coverage: float, precision: float) -> None:
    """Saves the risk-coverage curve with the chosen operating point marked."""

    fig, ax = subplots(figsize=(5, 4), dpi=100)
    ax.plot(curve["coverage"], curve["risk"], label="test split")
    ax.scatter([coverage], [1 - precision], color="red", zorder=3,
               label=f"threshold {threshold:.3f}")
    ax.set_xlabel("coverage (share of images answered)")
    ax.set_ylabel("risk (share of answers wrong)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max(0.05, float(curve["risk"].max()) * 1.1) if len(curve) else 1)
    ax.set_title("Risk-coverage (test split)")
    ax.legend(loc="upper left")
    save_png(fig, path)
