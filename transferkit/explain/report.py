"""Explanations of image files, written to disk: the Python side of `transferkit explain`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from transferkit.data.images import load_image
from transferkit.errors import ConfigError
from transferkit.explain.overlay import overlay
from transferkit.explain.registry import DEFAULT_METHOD, resolve_methods
from transferkit.fileio import atomic_path
from transferkit.run import Run, load_run

_BATCH = 16  # images decoded and explained at once: bounds memory for long file lists


def explain_files(run_dir: str | os.PathLike | Run, paths: Sequence[str | os.PathLike],
                  methods: Sequence[str] = (DEFAULT_METHOD,), class_name: str | None = None,
                  out: str | os.PathLike = "explain", member: int | None = None
                  ) -> list[dict]:
    """Explains a run's predictions for image files; writes an overlay and the raw map.

    For each image and method, writes `<stem>_<method>.png` (the heat map over the
    original photo, at its own resolution) and `<stem>_<method>.npy` (the float32 heat
    map `[S, S]` in [0, 1] at the model's input size) into `out`, atomically. Images
    sharing a file stem get `_2`, `_3`, ... appended to it, in input order.

    Args:
        run_dir: A finished run directory (or a `transferkit.run.Run`).
        paths: Image files.
        methods: Method names (see `METHODS`), or ["all"].
        class_name: The class to explain for every image (default: each image's
            predicted class).
        out: Output folder (created if needed).
        member: An ensemble's member to explain (0-based); None: each method's map
            is the mean of its members' maps (`transferkit.ensemble.members`).

    Returns:
        One record per image and method, in input order: `{"path", "method", "label"
        (predicted class), "probability" (of the predicted class), "explained_class",
        "overlay" (PNG path), "heatmap" (NPY path)}`.

    Raises:
        RunError: `run_dir` is not a finished run, or `out` is not writable.
        ConfigError: Unknown method, or `class_name` not one of the run's classes.
        ImageError: An image cannot be decoded (the message names it).
    """
    names = resolve_methods(methods)
    paths = list(paths)
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    if class_name is not None and class_name not in run.class_names:
        raise ConfigError(f"unknown class {class_name!r}; the run's classes are: "
                          f"{', '.join(run.class_names)}")
    out = Path(out)
    stems = _unique_stems(paths)
    records, explainers = [], None
    for start in range(0, len(paths), _BATCH):
        chunk = list(paths[start:start + _BATCH])
        originals = [load_image(p) for p in chunk]
        batch = run.preprocess(originals)
        probabilities = np.asarray(run.model.predict_on_batch(batch))
        predicted = probabilities.argmax(axis=-1)
        explained = predicted if class_name is None else \
            np.full(len(chunk), run.class_names.index(class_name))
        if explainers is None:  # after the first images decoded: bad input fails fast
            from transferkit.ensemble.members import explainers as member_explainers

            explainers = member_explainers(run.model, names, member)
        maps = {name: explainer(batch, explained) for name, explainer in explainers.items()}
        for j, path in enumerate(chunk):
            stem = stems[start + j]
            for name in names:
                png = out / f"{stem}_{name}.png"
                npy = out / f"{stem}_{name}.npy"
                with atomic_path(npy) as tmp, open(tmp, "wb") as f:
                    np.save(f, maps[name][j])
                with atomic_path(png) as tmp:
                    Image.fromarray(overlay(originals[j], maps[name][j])).save(
                        tmp, format="PNG")
                records.append({
                    "path": str(path), "method": name,
                    "label": run.class_names[predicted[j]],
                    "probability": float(probabilities[j, predicted[j]]),
                    "explained_class": run.class_names[explained[j]],
                    "overlay": str(png), "heatmap": str(npy)})
    return records


def _unique_stems(paths: Sequence[str | os.PathLike]) -> list[str]:
    """File stems, with `_2`, `_3`, ... added to repeats so no output overwrites another."""
    used: set[str] = set()
    stems = []
    for path in paths:
        stem = candidate = Path(path).stem
        suffix = 1
        while candidate in used:
            suffix += 1
            candidate = f"{stem}_{suffix}"
        used.add(candidate)
        stems.append(candidate)
    return stems
