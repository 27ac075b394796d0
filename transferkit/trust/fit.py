"""`fit_trust`: calibrate a run, choose its thresholds, fit its unknown score.

Everything is fitted from the run's feature store (the final model's pooled features of
every image of the split), so no image is decoded twice: the head's logits are one
call of its own layers away (`transferkit.trust.head.Head`). T and both thresholds are
chosen on the validation split, the unknown score's constants on the training split,
and the test split reports the result into `metrics.json`.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from transferkit import layout
from transferkit.fileio import atomic_path, write_csv, write_json
from transferkit.model import members
from transferkit.trust import abstain, calibration, unknown
from transferkit.trust.head import Head
from transferkit.trust.params import TrustParams


def split_arrays(run) -> dict[str, dict[str, np.ndarray]]:
    """The final features and labels of each split, from the run's feature store.

    Args:
        run: A `transferkit.run.Run`.

    Returns:
        `{split: {"features": [N, D] float32, "labels": [N] int}}`.
    """
    _, features = run.features("final")
    splits = run.splits
    labels = np.array([run.class_names.index(c) for c in splits["class"]])
    return {name: {"features": np.asarray(features[(splits["split"] == name).to_numpy()],
                                          np.float32),
                   "labels": labels[(splits["split"] == name).to_numpy()]}
            for name in ("train", "val", "test")}


def fit_trust(run, target_precision: float | None = None,
              target_coverage: float | None = None,
              unknown_kind: str = unknown.DEFAULT_KIND,
              false_rejection: float = unknown.DEFAULT_FALSE_REJECTION,
              say: Callable[..., None] | None = None) -> dict[str, Any]:
    """Calibrates `run` in place and writes its trust files.

    Writes `trust.json` + `trust.npz`, `calibration.csv/.png`, `risk_coverage.csv/.png`,
    the calibrated `model.keras` (T folded into the head), and adds `calibration`,
    `abstain` and `unknown` to `metrics.json`. Calibrating again starts from the
    uncalibrated head (kept in `trust.npz`), so it gives the same result.

    Args:
        run: A `transferkit.run.Run` with its splits and feature store.
        target_precision: Precision of the answers given (default 0.90).
        target_coverage: Or: the share of inputs to answer.
        unknown_kind: The out-of-distribution score (`unknown.KINDS`).
        false_rejection: Share of known validation images flagged unknown.
        say: Progress printer (None: quiet).

    Returns:
        The new `metrics.json` sections: `{"calibration", "abstain", "unknown"}`.

    Raises:
        ConfigError: Bad targets or score kind.
        RunError: The run has no splits or feature store.
    """
    say = say or (lambda *a: None)
    rule, target = abstain.check_target(target_precision, target_coverage)
    unknown.check_kind(unknown_kind)
    ensemble = bool(members(run.model))
    if ensemble:
        from transferkit.ensemble.trust import check_kind

        check_kind(unknown_kind)
    previous = run.trust
    head = Head(run.model, previous.raw_head if previous is not None else None)
    say("Calibrating: temperature, 'not sure' threshold, unknown score")
    data = split_arrays(run)
    logits = {s: head.logits(d["features"]) for s, d in data.items()}
    y = {s: d["labels"] for s, d in data.items()}
    temperature = calibration.fit_temperature(logits["val"], y["val"])
    before = calibration.calibrated(logits["test"])
    after = {s: calibration.calibrated(v, temperature) for s, v in logits.items()}
    section = _calibration_metrics(before, after["test"], y["test"], temperature)
    bins = {"before": calibration.reliability_bins(before, y["test"]),
            "after": calibration.reliability_bins(after["test"], y["test"])}
    write_csv(run.path / layout.CALIBRATION_CSV, pd.concat(
        [b.assign(model=name) for name, b in bins.items()], ignore_index=True))
    calibration.plot_reliability(bins["before"], bins["after"],
                                 run.path / layout.CALIBRATION_PNG, temperature)

    conf = {s: p.max(axis=1) for s, p in after.items()}
    correct = {s: p.argmax(axis=1) == y[s] for s, p in after.items()}
    threshold, met = abstain.choose_threshold(conf["val"], correct["val"], rule, target)
    precision, coverage = abstain.selective(conf["test"], correct["test"], threshold)
    curve = abstain.risk_coverage(conf["test"], correct["test"])
    write_csv(run.path / layout.RISK_COVERAGE_CSV, curve)
    abstain.plot_risk_coverage(curve, run.path / layout.RISK_COVERAGE_PNG, threshold,
                               coverage, precision)
    abstain_section = {"threshold": threshold, rule: target, "met_on_val": met,
                       "test_precision": precision, "test_coverage": coverage}

    constants = unknown.fit_constants(unknown_kind, data["train"]["features"],
                                      y["train"], len(run.class_names))
    scores = {s: np.asarray(unknown.unknown_score(
        unknown_kind, constants, data[s]["features"], after[s],
        None if ensemble else logits[s][0] / temperature)) for s in ("val", "test")}
    unknown_threshold = unknown.threshold_at(scores["val"], false_rejection)
    unknown_section = {"score": unknown_kind, "threshold": unknown_threshold,
                       "false_rejection": false_rejection,
                       "test_false_rejection": float(np.mean(
                           scores["test"] > unknown_threshold))}

    params = TrustParams(temperature=temperature, abstain_threshold=threshold,
                         abstain_rule=rule, abstain_target=target, abstain_met=met,
                         unknown_kind=unknown_kind, unknown_threshold=unknown_threshold,
                         false_rejection=false_rejection, unknown_constants=constants,
                         raw_head=head.raw)
    # trust.npz (with the raw head) before the model: a kill between the two leaves a
    # model that calibrating again still starts from the right head.
    params.save(run.path)
    head.fold(run.model, temperature)
    with atomic_path(run.path / layout.MODEL_FILE, suffix=".keras") as tmp:
        run.model.save(tmp)
    sections = {"calibration": section, "abstain": abstain_section,
                "unknown": unknown_section}
    write_json(run.path / layout.METRICS_FILE, {**(run.metrics or {}), **sections})
    say(f"Calibrated: T = {temperature:.3f}, test ECE {section['ece_before']:.3f} → "
        f"{section['ece_after']:.3f}; answers {coverage:.0%} of test images at "
        f"precision {precision:.3f} (threshold {threshold:.3f})")
    return sections


def _calibration_metrics(before: np.ndarray, after: np.ndarray, labels: np.ndarray,
                         temperature: float) -> dict[str, Any]:
    section: dict[str, Any] = {"temperature": temperature, "n_test": int(len(labels))}
    for name, p in (("before", before), ("after", after)):
        section.update({f"{k}_{name}": v for k, v in calibration.scores(p, labels).items()})
        section[f"ece_{name}_interval"] = list(calibration.bootstrap_ece(p, labels))
    section["ece_noise_floor"] = calibration.ece_noise_floor(after)
    return section
