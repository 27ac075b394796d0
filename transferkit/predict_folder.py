"""A whole folder in, a table out: `transferkit predict MODEL DIR --out predictions.csv`.

Every file below the folder (recursively, hidden folders left out) gets one row: its
top class, probability, top-k and trust flags, or the reason it was skipped (not an
image, corrupt, too large...). Memory stays flat however large the folder: files are
walked lazily, decoded one batch at a time (`Predictor.predict_files`), and each row is
written as soon as its batch is done, so neither the images nor the rows accumulate.

`.csv` (top-k as `label:probability` pairs joined by `;`) or `.jsonl` (one JSON object
a line, top-k as a list), chosen by the file's suffix.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

from transferkit.data.scan import files_under, junk_reason
from transferkit.errors import ConfigError, DataError
from transferkit.inference import DEFAULT_BATCH
from transferkit.predictors import Predictor

FORMATS = (".csv", ".jsonl")
COLUMNS = ["path", "top1", "probability", "top_k", "abstained", "unknown", "unknown_score",
           "skipped"]


def predict_folder(predictor: Predictor, folder: str | os.PathLike, out: str | os.PathLike,
                   k: int = 3, batch_size: int = DEFAULT_BATCH, progress: bool = True
                   ) -> dict[str, int]:
    """Classifies every file below `folder` and writes one row per file to `out`.

    Args:
        predictor: Any model `transferkit.predictor.load_predictor` opens.
        folder: The folder to walk (recursively).
        out: The table to write: `.csv` or `.jsonl`.
        k: Labels per row in `top_k`.
        batch_size: Images decoded and classified at once (the memory held).
        progress: Show a progress bar (on an interactive terminal).

    Returns:
        `{"n_files", "n_predicted", "n_skipped"}`.

    Raises:
        ConfigError: `out` has another suffix.
        DataError: `folder` is not a folder.
    """
    folder, out = Path(folder), Path(out)
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"--out {out}: write a .csv or a .jsonl file")
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    total = sum(1 for _ in files_under(folder))  # a walk holds nothing; the bar needs N
    bar = _progress_bar(total) if progress else None
    counts = {"n_files": 0, "n_predicted": 0, "n_skipped": 0}
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as stream:
        write = _writer(stream, suffix)
        for rows in _batches(predictor, folder, k, batch_size):
            for row in rows:
                write(row)
                counts["n_skipped" if row["skipped"] else "n_predicted"] += 1
            counts["n_files"] += len(rows)
            stream.flush()
            if bar is not None:
                bar.update(counts["n_files"])
    return counts


def _batches(predictor: Predictor, folder: Path, k: int, batch_size: int
             ) -> Iterator[list[dict[str, Any]]]:
    """Rows in walk order, a batch of decodable candidates (and the junk between) at a
    time."""
    pending: list[tuple[Path, str]] = []
    n_images = 0
    for file in files_under(folder):
        reason = junk_reason(file)
        pending.append((file, reason))
        n_images += not reason
        if n_images >= batch_size:
            yield _rows(predictor, folder, pending, k, batch_size)
            pending, n_images = [], 0
    if pending:
        yield _rows(predictor, folder, pending, k, batch_size)


def _rows(predictor: Predictor, folder: Path, files: list[tuple[Path, str]], k: int,
          batch_size: int) -> list[dict[str, Any]]:
    records = iter(predictor.predict_files([f for f, reason in files if not reason], k,
                                           batch_size))
    rows = []
    for file, reason in files:
        record = {"error": reason} if reason else next(records)
        rows.append(_row(file.relative_to(folder).as_posix(), record))
    return rows


def _row(path: str, record: dict[str, Any]) -> dict[str, Any]:
    """A `predict_files` record as a table row (trust fields None where not claimed)."""
    if "error" in record:
        return {**dict.fromkeys(COLUMNS), "path": path, "skipped": record["error"]}
    best = record["top_k"]
    return {"path": path, "top1": best[0]["label"], "probability": best[0]["probability"],
            "top_k": best, "abstained": record.get("abstained"),
            "unknown": record.get("unknown"), "unknown_score": record.get("unknown_score"),
            "skipped": None}


def _writer(stream, suffix: str):
    """A function writing one row to `stream` as CSV or JSON Lines."""
    if suffix == ".jsonl":
        return lambda row: stream.write(json.dumps(row, ensure_ascii=False) + "\n")
    table = csv.DictWriter(stream, COLUMNS)
    table.writeheader()

    def write(row: dict[str, Any]) -> None:
        flat = dict(row)
        if row["top_k"] is not None:
            flat["top_k"] = ";".join(f"{t['label']}:{t['probability']:.6f}"
                                     for t in row["top_k"])
        table.writerow({key: "" if value is None else value for key, value in flat.items()})
    return write


def _progress_bar(total: int):
    """Keras's progress bar, on an interactive terminal only (a log gets no bars)."""
    if not sys.stdout.isatty():
        return None
    import keras

    return keras.utils.Progbar(total, unit_name="file")
