"""Distillation: one student run trained on a teacher run's soft labels (issue 25).

    train DATA --out STUDENT --teacher RUN      any finished run teaches (an ensemble:
                                                K models' accuracy at one model's cost)
    train DATA --out RUN --ensemble K --distill the ensemble, then RUN/student/

The student is an ordinary run of the normal `train` path (same engine, phases,
augmentation, calibration; export, trust, explain and the demo read it unchanged). Only
its training targets differ (`student_targets`): the teacher's probabilities of each
training image are computed ONCE, before the student's phases, and every step trains on

    target = alpha * soften(teacher, T) + (1 - alpha) * one_hot(label)

with the engine's usual categorical cross-entropy. Why not `keras.distillation.Distiller`
(docs/training.md, "Distillation"): it runs the teacher on every step (an ensemble of 2-3
backbones would triple a CPU step), it needs the teacher and the student at one input
size, it distills logits (our models end in probabilities), and phase 1 trains the head
on stored features, where there is no image for a teacher to see. The price: the teacher
does not see the augmented view, so a crop or flip of an image gets the teacher's
probabilities of the whole image (mild augmentation here: flips, 55-100% crops).

The mixed-target form needs no T² factor: Hinton et al. scale the soft term by T²
because they soften the student's logits too (its gradients shrink by 1/T²); here the
student keeps T = 1 and fits the softened targets directly, and calibration then fits
its temperature on the validation split as for any run. Validation keeps the one-hot
labels: early stopping and every choice rank on the true classes.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import pandas as pd
from scipy.special import softmax

from transferkit import layout
from transferkit.backbones import get_backbone, validate_size
from transferkit.config import TrainConfig, absolute_data
from transferkit.errors import ConfigError, DataError
from transferkit.fileio import read_json, write_csv, write_json
from transferkit.run import Run, load_run, run_state

# How far below the ensemble (validation accuracy) a student may be and still be the
# run to export: the bar for a distilled student (within 1 point).
EXPORT_TOLERANCE = 0.01


def soften(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-softened probabilities: softmax(log p / T) (= p^(1/T), normalized).

    For one classifier this is its softmax at logits / T; for an ensemble, whose model
    averages probabilities, it treats log(mean p) as the logits.

    Args:
        probabilities: `[N, C]` rows summing to 1.
        temperature: T > 1 softens, T = 1 returns the rows.

    Returns:
        `[N, C]` float32 rows summing to 1.
    """
    logits = np.log(np.clip(np.asarray(probabilities, np.float64), 1e-12, 1.0))
    return softmax(logits / temperature, axis=1).astype(np.float32)


def mix(labels: np.ndarray, soft: np.ndarray, alpha: float) -> np.ndarray:
    """`alpha * soft + (1 - alpha) * labels`: a student's targets (rows sum to 1)."""
    return (alpha * np.asarray(soft) + (1 - alpha) * np.asarray(labels)).astype(np.float32)


def with_teacher(config: TrainConfig) -> TrainConfig:
    """A student's config: the teacher's split (its `splits.csv`) and, unless the student
    has one, the teacher's image size when the student's backbone accepts it; the teacher
    path made absolute. Any other config is returned as is.

    Raises:
        ConfigError: The teacher is not a finished run, or was trained on other data.
    """
    if config.teacher is None:
        return config
    teacher = Path(os.path.abspath(config.teacher))
    if run_state(teacher) != "complete" or not (teacher / layout.SPLITS_FILE).is_file():
        raise ConfigError(f"--teacher {config.teacher} is not a finished run directory; "
                          "train the teacher first (or finish it: run its command again)")
    saved = TrainConfig.from_dict(read_json(teacher / layout.CONFIG_FILE))
    if absolute_data(saved.data) != config.data:
        raise ConfigError(f"--teacher {teacher} was trained on {saved.data}, not "
                          f"{config.data}; train the student on the teacher's data")
    size = config.image_size
    if size is None and saved.image_size:
        try:
            validate_size(get_backbone(config.backbone), saved.image_size)
            size = saved.image_size
        except ConfigError:  # the plan chooses the student's own size
            pass
    return dataclasses.replace(
        config, teacher=str(teacher), image_size=size,
        splits_file=config.splits_file or str(teacher / layout.SPLITS_FILE))


def student_targets(out_dir: Path, config: TrainConfig, paths: list[str], labels: list[int],
                    classes: list[str], say: Callable = print) -> np.ndarray | None:
    """A student's training targets: its teacher's softened probabilities mixed with the
    one-hot labels (`soften`, `mix`); None for a run without a teacher.

    Args:
        out_dir: The run directory (the teacher's probabilities are kept there, so a
            resumed student does not run the teacher again).
        config: The run's options (`teacher`, `distill_alpha`, `distill_temperature`).
        paths, labels: The training images and their class indices.
        classes: The run's classes.
        say: Progress printer.

    Returns:
        float32 `[N, C]` rows, or None.
    """
    if config.teacher is None:
        return None
    teacher = teacher_probabilities(out_dir, config, paths, classes, say)
    return mix(keras.utils.to_categorical(labels, len(classes)),
               soften(teacher, config.distill_temperature), config.distill_alpha)


def teacher_probabilities(out_dir: Path, config: TrainConfig, paths: list[str],
                          classes: list[str], say: Callable = print) -> np.ndarray:
    """The teacher's probabilities of the un-augmented training images, computed once
    and kept in `teacher_probabilities.csv` (reused while its rows still match).

    Raises:
        ConfigError: The teacher has other classes than the student.
        DataError: A training image can no longer be read.
    """
    from transferkit.data.pipeline import image_dataset

    file = out_dir / layout.TEACHER_FILE
    if file.is_file():
        saved = pd.read_csv(file, keep_default_na=False)
        if saved["path"].tolist() == list(paths) and list(saved.columns[1:]) == classes:
            return saved[classes].to_numpy(np.float32)
    teacher = load_run(config.teacher)
    if teacher.class_names != classes:
        raise ConfigError(f"the teacher {config.teacher} has classes {teacher.class_names}, "
                          f"this run has {classes}; distill from a run of the same classes")
    say(f"Distillation: the teacher's probabilities of the {len(paths)} training images "
        f"({teacher.image_size} px, once)")
    probabilities = teacher.model.predict(image_dataset(
        paths, None, teacher.image_size, config.batch_size, workers=config.workers),
        verbose=0)
    if len(probabilities) != len(paths):
        raise DataError(f"{len(paths) - len(probabilities)} training images can no longer "
                        "be read since the audit; pass --overwrite to audit again")
    write_csv(file, pd.DataFrame(probabilities, columns=classes).assign(
        path=list(paths))[["path", *classes]])
    return probabilities.astype(np.float32)


def train_with_student(data: str | Path, out: str | Path, overwrite: bool = False, *,
                       train_one: Callable[..., Run], **options) -> Run:
    """`train --ensemble K --distill`: the ensemble in `out`, then its student in
    `out/student/` (member 1's backbone: the deployed size), recorded in the ensemble's
    metrics.json under "student". With a time limit the ensemble gets K / (K + 1) of it
    and the student what is left. A finished ensemble whose student is missing (the
    command was stopped while the student trained) is reused, not trained again.

    Args:
        data, out, overwrite: As for `transferkit.train`.
        train_one: `transferkit.training.train` (passed in: this module does not import
            training, which imports it).
        **options: Fields of `TrainConfig`, with `distill=True` and an ensemble.

    Returns:
        The ensemble's `Run` (its metrics name the run to export).
    """
    start = time.time()
    config = TrainConfig.from_options(data, options)
    out_dir = Path(out)
    say = (lambda *a: None) if config.quiet else (lambda *a: print(*a, flush=True))
    limit, k = config.time_limit, config.ensemble
    metrics_file = out_dir / layout.METRICS_FILE
    if not overwrite and run_state(out_dir) == "complete" and metrics_file.is_file() \
            and "student" not in read_json(metrics_file):
        say(f"Reusing the finished ensemble in {out_dir}; training its student")
        ensemble = load_run(out_dir)
    else:
        ensemble = train_one(data, out_dir, overwrite, **{
            **options, "distill": False, "preset": None,
            "time_limit": None if limit is None else limit * k / (k + 1)})
    student_options = {**config.to_dict(), "ensemble": 1, "backbones": None,
                       "distill": False, "teacher": str(out_dir), "image_size": None,
                       "splits_file": None, "preset": None, "extra_members": False,
                       "backbone": (config.backbones or [config.backbone])[0],
                       "time_limit": None if limit is None else
                       limit - (time.time() - start)}
    student_options.pop("data")
    if limit is not None and student_options["time_limit"] <= 0:
        say("No time left for a student: export the ensemble")
        return ensemble
    say(f"Distillation: one {student_options['backbone']} student on the ensemble's soft "
        f"labels (alpha {config.distill_alpha:g}, T {config.distill_temperature:g})")
    student = train_one(data, out_dir / layout.STUDENT_DIR, **student_options)
    record_student(ensemble, student, say)
    return ensemble


def record_student(ensemble: Run, student: Run, say: Callable = print) -> dict:
    """Adds the student to the ensemble's metrics.json (with both validation accuracies,
    the ensemble's computed here) and says which run to export: the student, one model's
    cost, unless it is more than `EXPORT_TOLERANCE` below the ensemble on validation."""
    from transferkit.evaluate import split_metrics

    metrics = ensemble.metrics or {}
    if "val_accuracy" not in metrics:
        metrics.update(split_metrics(ensemble))
    gap = metrics["val_accuracy"] - student.metrics["val_accuracy"]
    export = "student" if gap <= EXPORT_TOLERANCE else "ensemble"
    record = {"run": os.path.relpath(student.path, ensemble.path),
              "backbone": student.config.backbone,
              "val_accuracy": student.metrics["val_accuracy"],
              "test_accuracy": student.metrics["accuracy"], "export": export,
              "why": (f"within {EXPORT_TOLERANCE} of the ensemble on validation: one "
                      "model serves at 1/K of its cost") if export == "student" else
                     (f"more than {EXPORT_TOLERANCE} below the ensemble on validation: "
                      "its accuracy is worth its cost")}
    write_json(ensemble.path / layout.METRICS_FILE, {**metrics, "student": record})
    chosen = student.path if export == "student" else ensemble.path
    say(f"Student: validation accuracy {record['val_accuracy']:.3f} (ensemble "
        f"{metrics['val_accuracy']:.3f}), test {record['test_accuracy']:.3f}. Export "
        f"the {export}: transferkit export {chosen}")
    return record
