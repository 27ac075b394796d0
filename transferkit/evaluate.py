"""Evaluation: accuracy, macro-F1, per-class table, confusion matrix, top losses.

Metrics come from scikit-learn (well-tested definitions of precision, recall, F1 and
the confusion matrix); this module only arranges them into the run directory's files.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import ConfusionMatrixDisplay, accuracy_score, \
    classification_report, confusion_matrix, f1_score, log_loss

from transferkit import layout
from transferkit.errors import DataError, RunError
from transferkit.fileio import atomic_path, save_png, subplots, write_csv


def classification_metrics(y_true: Sequence[int], probabilities: np.ndarray,
                           class_names: Sequence[str]) -> dict:
    """Accuracy and macro-F1 over the classes present in `y_true` or predicted, and the
    log loss (a proper scoring rule: it ranks models on a few hundred images with less
    noise than accuracy, which moves in steps of one image).

    Args:
        y_true: True class indices.
        probabilities: `[N, C]` predicted probabilities.
        class_names: The C class names.

    Returns:
        `{"accuracy", "macro_f1", "log_loss", "n_images"}`.
    """
    y_pred = np.argmax(probabilities, axis=1)
    present = sorted(set(np.asarray(y_true).tolist()) | set(y_pred.tolist()))
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro",
                                       zero_division=0)),
            "log_loss": float(log_loss(y_true, probabilities,
                                       labels=list(range(len(class_names))))),
            "n_images": int(len(y_true))}


def split_metrics(run, split: str = "val") -> dict[str, float]:
    """Accuracy and macro-F1 of a run's model on one split of its own images.

    The validation figures are what choices between runs are made on (`compare`); the
    test split only reports. Training records them in metrics.json; for an older run
    without them, `compare` computes them here from the run's model and split.

    Args:
        run: A `transferkit.run.Run` (its model, classes, `splits.csv`, data folder).
        split: `"val"`, `"train"` or `"test"`.

    Returns:
        `{"<split>_accuracy", "<split>_macro_f1", "<split>_log_loss"}`.

    Raises:
        RunError: The split's images are no longer all where the run says they are.
    """
    part = run.splits[run.splits["split"] == split]
    found = classification_metrics([run.class_names.index(c) for c in part["class"]],
                                   split_probabilities(run, split), run.class_names)
    return {f"{split}_{name}": found[name] for name in ("accuracy", "macro_f1", "log_loss")}


def split_probabilities(run, split: str) -> np.ndarray:
    """A run's model's probabilities on one split of its own images (`splits.csv` order).

    Raises:
        RunError: The split's images are no longer all where the run says they are, or
            can no longer be read.
    """
    from transferkit.data.pipeline import image_dataset

    paths = run.split_paths(split)
    if not all(p.is_file() for p in paths):
        raise run.missing_images(f"{split} images")
    dataset = image_dataset([str(p) for p in paths], None, run.image_size,
                            run.config.batch_size or 32, workers=run.config.workers)
    with warnings.catch_warnings():  # a finite dataset ends, as it is meant to
        warnings.filterwarnings("ignore", message=".*ran out of data.*")
        probabilities = run.model.predict(dataset, verbose=0)
    if len(probabilities) != len(paths):
        raise RunError(f"{len(paths) - len(probabilities)} {split} images of {run.path} "
                       "can no longer be read")
    return probabilities


def known_images(class_names: Sequence[str], data_dir: str | Path,
                 progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Audits a labelled folder whose classes must be a subset of `class_names`.

    Args:
        class_names: The model's classes.
        data_dir: A folder of class folders.
        progress: Show the audit's progress bar.

    Returns:
        `(index, ok)`: the whole audit and its usable rows.

    Raises:
        DataError: The folder has classes the model does not know, or no images.
    """
    from transferkit.data.scan import scan_folder

    index = scan_folder(data_dir, progress=progress)
    ok = index[index["status"] == "ok"]
    unknown = sorted(set(ok["class"]) - set(class_names))
    if unknown:
        raise DataError(f"{data_dir} has classes the model was not trained on: "
                        f"{unknown}; the run knows {list(class_names)}")
    if ok.empty:
        raise DataError(f"{data_dir} has no usable images")
    return index, ok


def evaluate_folder(assess: Callable[[list[Path], int], tuple[np.ndarray, list | None]],
                    class_names: Sequence[str], data_dir: str | Path,
                    unknown_dir: str | Path | None = None, batch_size: int = 32,
                    progress: bool = True, source: str = "the model") -> dict[str, Any]:
    """Metrics of any model (a run or an export) on a labelled folder, and optionally on
    a folder of images of other kinds.

    The trust measures come from the model's own per-image fields (`abstained`,
    `unknown`, `unknown_score`), so an export is judged by what it outputs.

    Args:
        assess: Image paths and a batch size → `(probabilities [N, C], fields)`, as
            `Predictor.assess` and `Run.assess` (fields None: the model has no trust).
        class_names: The model's classes; the folder's must be among them.
        data_dir: A folder of class folders.
        unknown_dir: Images of no class the model knows (searched recursively, its
            subfolder names ignored).
        batch_size: Images per model call.
        progress: Show the audit's progress bar.
        source: The model, as error messages name it.

    Returns:
        `accuracy`, `macro_f1`, `n_images`, `n_skipped`, `ece`; with trust also
        `coverage` (the share answered, not "not sure") and `selective_accuracy` (the
        accuracy of those answers, NaN when none); with `unknown_dir` also `auroc`,
        `fpr_at_95_tpr`, `n_unknown`, `n_flagged_unknown`, `n_known_flagged_unknown`.

    Raises:
        DataError: Unknown classes in `data_dir`, no images, or an unreadable image.
        RunError: `unknown_dir` given for a model without an unknown score.
    """
    from transferkit.data.scan import image_files
    from transferkit.trust.unknown import unknown_separation
    from transferkit.trust.calibration import ece

    index, ok = known_images(class_names, data_dir, progress)
    root = Path(data_dir)
    probabilities, fields = assess([root / p for p in ok["path"]], batch_size)
    y_true = np.array([list(class_names).index(c) for c in ok["class"]])
    metrics: dict[str, Any] = classification_metrics(y_true, probabilities, class_names)
    metrics["n_skipped"] = int((index["status"] != "ok").sum())
    metrics["ece"] = ece(probabilities, y_true)
    scored = fields is not None and all("unknown_score" in f for f in fields)
    if unknown_dir is not None and not scored:
        raise RunError(f"{source} has no unknown score (" + (
            "no trust.json: run `transferkit calibrate` on its run, then export again" if fields
            is None else "a full-integer TFLite model outputs probabilities only; use "
            "the float model") + ")")
    if fields is None:
        return metrics
    answered = ~np.array([f["abstained"] for f in fields], bool)
    correct = np.argmax(probabilities, axis=1) == y_true
    metrics.update(coverage=float(answered.mean()), selective_accuracy=float(
        correct[answered].mean()) if answered.any() else float("nan"))
    if unknown_dir is None:
        return metrics
    theirs = assess(image_files(unknown_dir), batch_size)[1]
    metrics.update(unknown_separation(np.array([f["unknown_score"] for f in fields]),
                                      np.array([f["unknown_score"] for f in theirs])))
    metrics.update(n_unknown=len(theirs),
                   n_flagged_unknown=sum(f["unknown"] for f in theirs),
                   n_known_flagged_unknown=sum(f["unknown"] for f in fields))
    return metrics


def write_report(run_dir: Path, y_true: Sequence[int], probabilities: np.ndarray,
                 class_names: Sequence[str], paths: Sequence[str], top_n: int = 20) -> dict:
    """Writes per_class.csv, confusion_matrix.csv/.png, top_losses.csv, test_predictions.csv.

    Args:
        run_dir: Run directory.
        y_true: True class indices of the test images.
        probabilities: `[N, C]` predicted probabilities.
        class_names: Class names.
        paths: Test image paths (relative to the data folder), for top_losses.csv.
        top_n: How many of the most confidently wrong images to list.

    Returns:
        Accuracy and macro-F1 (see `classification_metrics`).
    """
    y_true = np.asarray(y_true)
    y_pred = np.argmax(probabilities, axis=1)
    labels = list(range(len(class_names)))
    report = classification_report(y_true, y_pred, labels=labels, output_dict=True,
                                   target_names=list(class_names), zero_division=0)
    rows = pd.DataFrame([report[name] for name in class_names])
    write_csv(run_dir / layout.PER_CLASS_FILE, pd.DataFrame({
        "class": class_names, "precision": rows["precision"], "recall": rows["recall"],
        "f1": rows["f1-score"], "support": rows["support"].astype(int)}))
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    frame = pd.DataFrame(matrix, index=pd.Index(class_names, name="true \\ predicted"),
                         columns=class_names)
    with atomic_path(run_dir / layout.CONFUSION_CSV) as tmp:
        frame.to_csv(tmp)
    plot_confusion_matrix(matrix, class_names, run_dir / layout.CONFUSION_PNG)

    true_probability = probabilities[np.arange(len(y_true)), y_true]
    write_csv(run_dir / layout.TEST_PREDICTIONS_FILE, pd.DataFrame({
        "path": list(paths), "true": [class_names[i] for i in y_true],
        "predicted": [class_names[i] for i in y_pred],
        "probability": probabilities[np.arange(len(y_true)), y_pred],
        "true_probability": true_probability}))
    wrong = np.flatnonzero(y_pred != y_true)
    wrong = wrong[np.argsort(true_probability[wrong])][:top_n]
    write_csv(run_dir / layout.TOP_LOSSES_FILE, pd.DataFrame({
        "path": [paths[i] for i in wrong],
        "true": [class_names[y_true[i]] for i in wrong],
        "predicted": [class_names[y_pred[i]] for i in wrong],
        "probability": probabilities[wrong, y_pred[wrong]],
        "true_probability": true_probability[wrong],
        "loss": -np.log(np.clip(true_probability[wrong], 1e-7, 1.0))}))
    return classification_metrics(y_true, probabilities, class_names)


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: Path) -> None:
    """Saves the confusion matrix (counts, row-normalized colours) as a PNG."""
    n = len(class_names)
    size = max(4.0, 0.6 * n + 2)
    fig, ax = subplots(figsize=(size, size), dpi=100)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    display = ConfusionMatrixDisplay(rates, display_labels=list(class_names))
    display.plot(ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45,
                 include_values=n <= 30)
    display.im_.set_clim(0, 1)
    for text, count in zip(np.ravel(display.text_ if n <= 30 else []), matrix.ravel()):
        text.set_text(str(count))  # the counts, on colours of the row's rates
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (test split)")
    save_png(fig, path)
