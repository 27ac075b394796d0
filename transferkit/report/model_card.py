"""`MODEL_CARD.md`: the run described in Hugging Face's model-card format.

YAML front matter (license, library, tags, datasets, metrics, `model-index` with the test
results) and Markdown sections: intended use, classes, data and what the audit skipped,
the plan, test metrics with seeded bootstrap intervals, calibration and the measured
meaning of "not sure" and "not one of my classes", the most confused pairs, known limits,
and how to reproduce it (command, seed, package versions). Written with the run report
(`write_run_report`) and copied into every export folder (`transferkit.export`).

Every figure comes from the run's files (`metrics.json`, `trust.json`,
`test_predictions.csv`, `audit.csv`, `splits.csv`, `plan.json`, `config.json`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
from pathlib import Path
from typing import Any, Callable

import numpy as np

from transferkit import layout
from transferkit.config import TrainConfig
from transferkit.fileio import write_text
from transferkit.report.sections import split_counts, test_predictions
from transferkit.run import Run

TEMPLATE = "model_card.md.j2"
N_RESAMPLES = 1000      # bootstrap resamples of the test predictions
LEVEL = 0.95            # the intervals' confidence level
CONFUSED_SHOWN = 5      # most confused (true, predicted) pairs listed
# Options that do not change the trained model, left out of the reproduce command.
NOT_IN_COMMAND = ("data", "packages", "quiet", "workers")
# Options of `transferkit.train` that `transferkit train` has no flag for.
API_ONLY = ("head_learning_rate", "fine_tune_learning_rate", "dropout", "label_smoothing",
            "patience", "splits_file")


def bootstrap_interval(statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
                       y_true: np.ndarray, y_pred: np.ndarray, seed: int,
                       n_resamples: int = N_RESAMPLES, level: float = LEVEL
                       ) -> tuple[float, float]:
    """A percentile bootstrap interval of a metric of paired labels (images resampled
    with replacement; `scipy.stats.bootstrap`, seeded, all resamples at once).

    Args:
        statistic: `(y_true, y_pred) -> value`, vectorized over the leading axes (the
            labels on the last axis), like `accuracy` and `macro_f1` here.
        y_true: True class indices.
        y_pred: Predicted class indices.
        seed: Seeds the resampling (the run's seed: the same card every time).
        n_resamples: Resamples drawn.
        level: Confidence level.

    Returns:
        `(low, high)`.
    """
    from scipy.stats import bootstrap

    result = bootstrap((np.asarray(y_true), np.asarray(y_pred)),
                       lambda t, p, axis: statistic(t, p), paired=True, vectorized=True,
                       n_resamples=n_resamples, confidence_level=level, method="percentile",
                       rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """The share of equal labels along the last axis."""
    return np.mean(y_true == y_pred, axis=-1)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Macro-F1 along the last axis over the classes present in either array (as
    `sklearn.metrics.f1_score(labels=present, average="macro")`, which takes one pair
    of arrays at a time: this counts a thousand resamples in one pass)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    lead, n_classes = y_true.shape[:-1], int(max(y_true.max(), y_pred.max())) + 1
    row = np.arange(int(np.prod(lead)))[:, None] * n_classes  # each resample's counts

    def counts(labels: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        index = row + labels
        index = index.ravel() if where is None else index[where]
        return np.bincount(index, minlength=len(row) * n_classes).reshape(len(row), -1)

    true, pred = y_true.reshape(len(row), -1), y_pred.reshape(len(row), -1)
    tp = counts(true, true == pred)
    wrong = counts(true) + counts(pred) - 2 * tp  # false negatives + false positives
    present = (tp + wrong) > 0
    f1 = np.where(present, 2 * tp / np.maximum(2 * tp + wrong, 1), 0.0)
    return (f1.sum(axis=-1) / present.sum(axis=-1)).reshape(lead)


def test_metrics(run: Run) -> dict[str, Any]:
    """Test accuracy and macro-F1 with bootstrap intervals, and the most confused pairs.

    Returns:
        `{"n", "accuracy", "accuracy_interval", "macro_f1", "macro_f1_interval",
        "confused": [{"true", "predicted", "n", "share"}]}` (`share`: of the true
        class's test images).
    """
    table = test_predictions(run)
    names = list(run.class_names)
    y_true = table["true"].map(names.index).to_numpy()
    y_pred = table["predicted"].map(names.index).to_numpy()
    out: dict[str, Any] = {"n": len(table)}
    for name, statistic in (("accuracy", accuracy), ("macro_f1", macro_f1)):
        out[name] = float(statistic(y_true, y_pred))
        out[f"{name}_interval"] = bootstrap_interval(statistic, y_true, y_pred,
                                                     run.config.seed)
    wrong = table[table["true"] != table["predicted"]]
    pairs = wrong.groupby(["true", "predicted"]).size().sort_values(ascending=False,
                                                                    kind="stable")
    support = table["true"].value_counts()
    out["confused"] = [{"true": t, "predicted": p, "n": int(n),
                        "share": n / int(support[t])}
                       for (t, p), n in pairs.head(CONFUSED_SHOWN).items()]
    return out


def reproduce_command(config: TrainConfig, out: str) -> str:
    """The command that trains this run again: every option that differs from its
    default, with the values the run resolved (batch size, image size, mixed precision),
    so the same machine gets the same run. `transferkit train ...` when the command line
    has every such option, else the Python call."""
    defaults = TrainConfig()
    changed = {f.name: getattr(config, f.name) for f in dataclasses.fields(TrainConfig)
               if f.name not in NOT_IN_COMMAND
               and getattr(config, f.name) != getattr(defaults, f.name)}
    if set(changed) & set(API_ONLY):
        arguments = "".join(f", {k}={v!r}" for k, v in changed.items())
        return f"import transferkit\ntransferkit.train({config.data!r}, {out!r}{arguments})"
    words = ["transferkit", "train", config.data, "--out", out]
    for name, value in changed.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else f"--no-{name.replace('_', '-')}")
        elif isinstance(value, list):
            words += [flag, ",".join(map(str, value))]
        elif name == "time_limit":
            words += [flag, f"{value:g}s"]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def render_card(run: Run, license: str = "unknown") -> str:
    """The model card of a finished run, as Markdown with YAML front matter.

    Args:
        run: The run (read through its accessors).
        license: The model's license identifier (Hugging Face's list; "unknown" until
            the owner sets one).

    Returns:
        The card's text.
    """
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=False,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined)
    environment.filters["json"] = lambda value: json.dumps(value, ensure_ascii=False)
    environment.filters["pct"] = lambda value: f"{100 * value:.1f}%"
    config = run.config
    metrics = run.metrics or {}
    audit = run.table(layout.AUDIT_FILE)
    skipped = None if audit is None else audit[audit["status"] != "ok"]
    reasons = [] if skipped is None else [
        {"reason": reason, "n": int(n)}
        for reason, n in skipped.groupby("reason").size().sort_values(
            ascending=False, kind="stable").items()]
    counts = split_counts(run)
    context = {
        "name": run.path.resolve().name, "license": license, "config": config,
        "dataset": config.data[5:] if config.data.startswith("tfds:") else None,
        "classes": run.class_names, "metrics": metrics, "plan": run.plan or {},
        "image_size": run.image_size,
        "counts": None if counts is None else {"columns": list(counts.columns),
                                               "rows": counts.values.tolist()},
        "n_files": None if audit is None else len(audit),
        "n_skipped": None if skipped is None else len(skipped), "reasons": reasons,
        "test": test_metrics(run), "n_resamples": N_RESAMPLES, "level": LEVEL,
        "trust": run.document(layout.TRUST_FILE),
        # Each part only where its numbers are (an older or partly calibrated run).
        "calibration": metrics.get("calibration") or {},
        "abstain": metrics.get("abstain") or {}, "unknown": metrics.get("unknown") or {},
        "command": reproduce_command(config, str(run.path)),
        "packages": config.packages,
    }
    return environment.get_template(TEMPLATE).render(**context)


def write_model_card(run: Run | str | os.PathLike, out: str | os.PathLike | None = None
                     ) -> Path:
    """Writes the run's `MODEL_CARD.md` (atomically).

    Args:
        run: A finished run directory, or its `Run`.
        out: The file to write (default `RUN/MODEL_CARD.md`).

    Returns:
        The path written.
    """
    from transferkit.run import load_run

    run = run if isinstance(run, Run) else load_run(run)
    path = Path(out) if out is not None else run.path / layout.MODEL_CARD_FILE
    write_text(path, render_card(run))
    return path
