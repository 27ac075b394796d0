"""The report's sections, each a dict for the template (None: the section is left out).

Everything is read through `Run`: its accessors and `layout` names. Optional parts
(fine-tuning, export parity, calibration, the embedding map, the data doctor) are there
only when their files are, so artefacts added later slot in without touching this code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from transferkit import layout
from transferkit.report.pictures import THUMBNAIL_SIDE, array_uri, data_uri, file_uri, \
    thumbnail
from transferkit.report.plots import class_balance, png_bytes, training_curves
from transferkit.errors import RunError
from transferkit.run import Run

ISSUES_SHOWN = 24        # rows of each issue table (with thumbnails)
CELL_IMAGES = 30         # thumbnails per confusion-matrix cell
WRONG_SHOWN = 8          # most confidently wrong images with a Grad-CAM overlay


def html_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A pandas table as HTML (numbers rounded), for the template."""
    return frame.round(digits).to_html(index=False, classes="table", border=0,
                                       na_rep="", escape=True)


def data_section(run: Run) -> dict[str, Any]:
    """Audit counts, skipped files and why, class balance (per split)."""
    audit = run.table(layout.AUDIT_FILE)
    section: dict[str, Any] = {"balance": data_uri(png_bytes(class_balance(run.splits)))}
    section["splits"] = html_table(split_counts(run))
    if audit is not None:
        ok = audit["status"] == "ok"
        section["n_files"], section["n_ok"] = len(audit), int(ok.sum())
        section["n_duplicates"] = int(audit["reason"].str.startswith("duplicate of").sum())
        skipped = audit.loc[~ok, ["path", "class", "reason"]]
        section["n_skipped"] = len(skipped)
        section["skipped"] = html_table(skipped) if len(skipped) else None
        reasons = skipped.groupby("reason").size().rename("files").reset_index()
        section["reasons"] = html_table(reasons) if len(reasons) else None
    excluded = (run.metrics or {}).get("n_excluded")
    section["n_excluded"] = excluded
    return section


def split_counts(run: Run) -> pd.DataFrame | None:
    """Images per class and split, with totals: `class`, `train`, `val`, `test`, `total`
    (None: the run has no split file, e.g. an export's Keras model)."""
    try:
        splits = run.splits
    except RunError:
        return None
    table = splits.pivot_table(index="class", columns="split", aggfunc="size", fill_value=0)
    table = table.reindex(columns=[c for c in ("train", "val", "test") if c in table])
    table["total"] = table.sum(axis=1)
    table.columns.name = None
    return table.reset_index()


def issues_section(run: Run) -> dict[str, Any] | None:
    """The data doctor's findings with thumbnails (None: the run has no doctor files)."""
    issues = run.table(layout.DATA_ISSUES_FILE)
    if issues is None:
        return None
    root = run.data_folder
    summary = run.document(layout.DOCTOR_FILE) or {}
    dup = issues[issues["issue"] == "near_duplicate"]
    groups = []
    for group, members in dup.groupby("group", sort=False):
        groups.append({"id": group, "score": float(members["score"].max()),
                       "images": [{"path": p, "class": c, "uri": thumbnail(root / p)}
                                  for p, c in zip(members["path"], members["class"])]})
    groups.sort(key=lambda g: -g["score"])
    listed = {}
    for issue in ("label_issue", "outlier"):
        rows = issues[issues["issue"] == issue].head(ISSUES_SHOWN)
        listed[issue] = [{"path": r.path, "class": r[1], "score": float(r.score),
                          "suggested": r.suggested_class, "uri": thumbnail(root / r.path)}
                         for r in rows.itertuples(index=False)]
    return {"summary": summary, "n_groups": len(groups),
            "n_near": len(dup), "groups": groups[:ISSUES_SHOWN],
            "n_label": int((issues["issue"] == "label_issue").sum()),
            "n_outlier": int((issues["issue"] == "outlier").sum()),
            "labels": listed["label_issue"], "outliers": listed["outlier"]}


def training_section(run: Run) -> dict[str, Any] | None:
    """The curves of both phases, from `history.csv`, and the fine-tuning part if any."""
    history = run.history
    if history is None or history.empty:
        return None
    section: dict[str, Any] = {"curves": data_uri(png_bytes(training_curves(history))),
                               "fine_tuning": None}
    plan = run.plan or {}
    phase2 = history[history["phase"] == 2] if "phase" in history else history.iloc[:0]
    phase1 = history[history["phase"] == 1] if "phase" in history else history
    if plan.get("unfreeze_blocks") and len(phase2):
        config = run.config
        section["fine_tuning"] = {
            "blocks": plan.get("unfreeze_blocks"), "total": plan.get("total_blocks"),
            "epochs": len(phase2), "learning_rate": config.fine_tune_learning_rate,
            "val_before": _last(phase1, "val_accuracy"),
            "val_after": _best(phase2, "val_accuracy")}
    section["head_epochs"] = len(phase1)
    logs = run.path / layout.LOGS_DIR
    section["logs"] = logs.name if logs.is_dir() else None  # relative: the page moves with it
    return section


def _last(frame: pd.DataFrame, column: str) -> float | None:
    values = pd.to_numeric(frame.get(column), errors="coerce")
    return None if values is None or values.dropna().empty else float(values.dropna().iloc[-1])


def _best(frame: pd.DataFrame, column: str) -> float | None:
    values = pd.to_numeric(frame.get(column), errors="coerce")
    return None if values is None or values.dropna().empty else float(values.max())


def test_predictions(run: Run) -> pd.DataFrame:
    """Every test image's prediction: `test_predictions.csv`, else computed now (a run
    made before the file existed)."""
    table = run.table(layout.TEST_PREDICTIONS_FILE)
    if table is not None:
        return table
    splits = run.splits
    test = splits[splits["split"] == "test"]
    probabilities = run.predict(run.split_paths("test"))
    predicted = probabilities.argmax(axis=1)
    return pd.DataFrame({"path": test["path"].to_numpy(), "true": test["class"].to_numpy(),
                         "predicted": [run.class_names[i] for i in predicted],
                         "probability": probabilities.max(axis=1)})


def confusion_section(run: Run) -> dict[str, Any]:
    """The confusion matrix as a table whose cells link to their images."""
    predictions = test_predictions(run)
    names = run.class_names
    root = run.data_folder
    index = {c: i for i, c in enumerate(names)}
    matrix = np.zeros((len(names), len(names)), np.int64)
    cells = []
    for (true, predicted), rows in predictions.groupby(["true", "predicted"]):
        i, j = index[true], index[predicted]
        matrix[i, j] = len(rows)
        rows = rows.sort_values("probability", ascending=i == j)  # wrong: surest first
        cells.append({"id": f"cell-{i}-{j}", "true": true, "predicted": predicted,
                      "n": len(rows), "images": [
                          {"path": p, "probability": float(q), "uri": thumbnail(root / p)}
                          for p, q in zip(rows["path"][:CELL_IMAGES],
                                          rows["probability"][:CELL_IMAGES])]})
    cells.sort(key=lambda c: c["id"])
    totals = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    return {"names": names, "rows": [
        [{"n": int(matrix[i, j]), "rate": float(matrix[i, j] / totals[i, 0]),
          "id": f"cell-{i}-{j}"} for j in range(len(names))] for i in range(len(names))],
        "cells": cells, "n": int(matrix.sum()),
        "accuracy": float(np.trace(matrix) / max(matrix.sum(), 1))}


def top_loss_images(run: Run, n: int) -> tuple[list[np.ndarray], list[Any]]:
    """Up to `n` of the most confidently wrong test images still on disk (the report's
    and the demo's Model tab's).

    Returns:
        `(images, rows)`: the decoded images and their `top_losses.csv` rows.
    """
    from transferkit.data.images import load_image
    from transferkit.errors import ImageError

    losses = run.top_losses
    images, rows = [], []
    for row in ([] if losses is None else losses.itertuples(index=False)):
        if len(images) == n:
            break
        if row.predicted not in run.class_names:
            continue
        try:
            images.append(load_image(run.data_folder / row.path))
        except ImageError:  # moved or deleted since training
            continue
        rows.append(row)
    return images, rows


def wrong_section(run: Run) -> list[dict[str, Any]]:
    """The most confidently wrong test images, each beside its Grad-CAM overlay of the
    (wrongly) predicted class (`transferkit.explain`'s public API)."""
    from transferkit.explain import GradCAM, overlay

    images, rows = top_loss_images(run, WRONG_SHOWN)
    if not images:
        return []
    maps = GradCAM(run.model)(run.preprocess(images),
                              np.array([run.class_names.index(r.predicted) for r in rows]))
    side = 2 * THUMBNAIL_SIDE
    out = []
    for image, heatmap, row in zip(images, np.asarray(maps), rows):
        out.append({"path": row.path, "true": row.true, "predicted": row.predicted,
                    "probability": float(row.probability),
                    "image": array_uri(image, side),
                    "overlay": array_uri(overlay(image, heatmap), side)})
    return out


def optional_sections(run: Run) -> dict[str, Any]:
    """Export parity, calibration and the embedding map, where their files exist."""
    out: dict[str, Any] = {}
    parity = run.document(f"{layout.EXPORT_DIR}/{layout.PARITY_FILE}")
    if parity:
        rows = [{"format": name, **{k: v for k, v in value.items()
                                    if isinstance(v, (int, float, str, bool))}}
                for name, value in parity.items()
                if isinstance(value, dict) and name not in ("tolerance", "signatures")]
        out["export"] = {"n_images": parity.get("n_images"),
                         "table": html_table(pd.DataFrame(rows)) if rows else None}
    trust = run.document(layout.TRUST_FILE)
    pictures = [run.file(name) for name in (layout.CALIBRATION_PNG,
                                            layout.RISK_COVERAGE_PNG)]
    if trust or any(pictures):
        facts = {k: v for k, v in (trust or {}).items()
                 if isinstance(v, (int, float, str, bool))}
        out["calibration"] = {"facts": facts,
                              "pictures": [file_uri(p) for p in pictures if p]}
    embedding = [run.file(f"{layout.INSPECT_DIR}/{name}") for name in layout.EMBEDDING_PNGS]
    if any(embedding):
        out["embedding"] = [file_uri(p) for p in embedding if p]
    return out
