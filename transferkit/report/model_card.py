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


def bootstrap_interval(statistic: Callable[[np.ndarray, np.ndarray], float],
                       y_true: np.ndarray, y_pred: np.ndarray, seed: int,
                       n_resamples: int = N_RESAMPLES, level: float = LEVEL
                       ) -> tuple[float, float]:
    """A percentile bootstrap interval of a metric of paired labels (images resampled
    with replacement; `scipy.stats.bootstrap`, seeded).

    Args:
        statistic: `(y_true, y_pred) -> float`.
        y_true: True class indices.
        y_pred: Predicted class indices.
        seed: Seeds the resampling (the run's seed: the same card every time).
        n_resamples: Resamples drawn.
        level: Confidence level.

    Returns:
        `(low, high)`.
    """
    from scipy.stats import bootstrap

    result = bootstrap((np.asarray(y_true), np.asarray(y_pred)), statistic, paired=True,
                       vectorized=False, n_resamples=n_resamples, confidence_level=level,
                       method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def test_metrics(run: Run) -> dict[str, Any]:
    """Test accuracy and macro-F1 with bootstrap intervals, and the most confused pairs.

    Returns:
        `{"n", "accuracy", "accuracy_interval", "macro_f1", "macro_f1_interval",
        "confused": [{"true", "predicted", "n", "share"}]}` (`share`: of the true
        class's test images).
    """
    from sklearn.metrics import accuracy_score, f1_score

    table = test_predictions(run)
    names = list(run.class_names)
    y_true = table["true"].map(names.index).to_numpy()
    y_pred = table["predicted"].map(names.index).to_numpy()

    def macro_f1(t: np.ndarray, p: np.ndarray) -> float:
        present = sorted(set(t.tolist()) | set(p.tolist()))  # as `classification_metrics`
        return f1_score(t, p, labels=present, average="macro", zero_division=0)

    out: dict[str, Any] = {"n": len(table)}
    for name, statistic in (("accuracy", accuracy_score), ("macro_f1", macro_f1)):
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
