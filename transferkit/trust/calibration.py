"""Calibration: temperature scaling (Guo et al., 2017) and the measures that judge it.

The head is a softmax Dense layer, so dividing its logits by a temperature T is the
same as dividing its kernel and bias by T: `fold_temperature` does that, and the Keras
model (and every export made from it) is calibrated with no new layer or output.

T is fitted by minimizing the negative log-likelihood of the validation split's logits
(an ensemble: of its members' averaged probabilities, one T for all);
the test split then judges it: ECE over 15 equal-width confidence bins, NLL, Brier score,
and a bootstrap interval of the ECE (on a few hundred images ECE has a noise floor of
its own: `ece_noise_floor` measures it).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import softmax
from sklearn.metrics import brier_score_loss, log_loss

from transferkit.fileio import save_png, subplots
from transferkit.model import members

N_BINS = 15
TEMPERATURE_RANGE = (0.05, 20.0)  # beyond it, the logits carry no usable ranking


def calibrated(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The calibrated probabilities: softmax(logits / T), averaged over an ensemble's
    members.

    Args:
        logits: `[N, C]` one model's, or `[K, N, C]` an ensemble's members'.
        temperature: T.

    Returns:
        float64 `[N, C]`.
    """
    z = np.asarray(logits, np.float64)
    return softmax(z / temperature, axis=-1).reshape(-1, *z.shape[-2:]).mean(axis=0)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimizing the NLL of `calibrated(logits, T)`.

    One T for one model or for all the members of an ensemble: their averaged
    probabilities are what the NLL judges.

    Args:
        logits: `[N, C]` or `[K, N, C]` (uncalibrated).
        labels: `[N]` true class indices.

    Returns:
        T (> 1 softens over-confident logits, < 1 sharpens under-confident ones); 1
        when the answers are all right or all wrong (the NLL then has no minimum).
    """
    z = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    classes = range(z.shape[-1])
    right = calibrated(z).argmax(axis=1) == labels
    if right.all() or not right.any():
        # No minimum: with every answer right the NLL falls as T → 0 (and with every one
        # wrong as T → inf). A small validation split gives no evidence: leave T at 1.
        return 1.0

    def loss(log_t: float) -> float:
        return log_loss(labels, calibrated(z, np.exp(log_t)), labels=classes)

    # For one model the NLL is convex in 1/T (a log-sum-exp of linear functions): a
    # bounded 1-D search finds the one minimum.
    lo, hi = np.log(TEMPERATURE_RANGE)
    result = minimize_scalar(loss, bounds=(lo, hi), method="bounded",
                             options={"xatol": 1e-6})
    return float(np.exp(result.x))


def scores(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ECE, NLL and the multi-class Brier score (sum over classes, not halved) of
    probabilities, from scikit-learn where it has them.

    Returns:
        `{"ece", "nll", "brier"}`.
    """
    classes = range(np.shape(probabilities)[1])
    return {"ece": ece(probabilities, labels),
            "nll": float(log_loss(labels, probabilities, labels=classes)),
            "brier": float(brier_score_loss(labels, probabilities, labels=classes,
                                            scale_by_half=False))}


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray,
                     n_bins: int = N_BINS) -> pd.DataFrame:
    """The reliability table: confidence (max probability) in equal-width bins.

    Bin i holds the images with confidence in `(i / n, (i + 1) / n]` (the first bin
    also takes confidence 0).

    Args:
        probabilities: `[N, C]`.
        labels: `[N]` true class indices.
        n_bins: Number of bins.

    Returns:
        One row per bin: `lower`, `upper`, `count`, `confidence` (mean), `accuracy`
        (NaN for an empty bin), `gap` (accuracy - confidence).
    """
    p = np.asarray(probabilities, np.float64)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == np.asarray(labels)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, confidence, n_bins) / count
        accuracy = np.bincount(index, correct, n_bins) / count
    return pd.DataFrame({"lower": edges[:-1], "upper": edges[1:], "count": count,
                         "confidence": mean_conf, "accuracy": accuracy,
                         "gap": accuracy - mean_conf})


def ece(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error: sum over bins of count / N * |accuracy - confidence|."""
    bins = reliability_bins(probabilities, labels, n_bins)
    full = bins[bins["count"] > 0]
    return float(np.sum(full["count"] / full["count"].sum() * np.abs(full["gap"])))


def bootstrap_ece(probabilities: np.ndarray, labels: np.ndarray, n_boot: int = 1000,
                  level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval of the ECE (images resampled with replacement).

    Returns:
        `(low, high)`.
    """
    rng = np.random.default_rng(seed)
    p, y = np.asarray(probabilities), np.asarray(labels)
    values = [ece(p[rows], y[rows]) for rows in
              (rng.integers(0, len(y), len(y)) for _ in range(n_boot))]
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def ece_noise_floor(probabilities: np.ndarray, n_sim: int = 200, seed: int = 0) -> float:
    """The mean ECE of a perfectly calibrated model with these confidences and this N.

    Labels are drawn from the probabilities themselves, so the true calibration error
    is zero; what ECE still measures is sampling noise. An ECE near this floor cannot
    be told from perfect calibration on this many images.
    """
    rng = np.random.default_rng(seed)
    p = np.asarray(probabilities, np.float64)
    cumulative = np.cumsum(p, axis=1)
    values = []
    for _ in range(n_sim):
        draws = rng.random((len(p), 1))
        labels = np.minimum((cumulative < draws).sum(axis=1), p.shape[1] - 1)
        values.append(ece(p, labels))
    return float(np.mean(values))


def fold_temperature(model: keras.Model, factor: float,
                     raw: dict[str, np.ndarray] | None = None) -> None:
    """Divides the kernel and bias of each softmax head (`predictions`, or an
    ensemble's `m<i>_predictions`) by `factor`, in place.

    Args:
        model: A classifier from `build_classifier`, or an ensemble.
        factor: The temperature to divide the logits by.
        raw: The heads' weights to start from (`TrustParams.raw_head`: `kernel`,
            `bias`, or `m1_kernel`, ...); None: the model's own.
    """
    for p in members(model) or [""]:
        dense = model.get_layer(f"{p}predictions")
        kernel, bias = (raw[f"{p}kernel"], raw[f"{p}bias"]) if raw else dense.get_weights()
        dense.set_weights([kernel / factor, bias / factor])


def plot_reliability(before: pd.DataFrame, after: pd.DataFrame, path: Path,
                     temperature: float) -> None:
    """Saves the reliability diagram (accuracy per confidence bin, before and after)."""
    fig, ax = subplots(figsize=(5, 5), dpi=100)
    centers = (before["lower"] + before["upper"]) / 2
    width = float(before["upper"].iloc[0] - before["lower"].iloc[0])
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    ax.bar(centers, before["accuracy"].fillna(0), width=width, alpha=0.35,
           edgecolor="black", label="before")
    ax.bar(centers, after["accuracy"].fillna(0), width=width * 0.5, alpha=0.8,
           label=f"after (T = {temperature:.3f})")
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Reliability (test split)")
    ax.legend(loc="upper left")
    save_png(fig, path)
