"""Writing the run directory: a new run or a resumed one, and its completion mark.

Training calls `prepare_run_dir` first and `mark_complete` last; `transferkit.run` reads
what they write (`run_state`, `load_run`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from transferkit import layout
from transferkit.config import TrainConfig, absolute_data
from transferkit.errors import RunError
from transferkit.fileio import read_json, readable_error, write_json
from transferkit.run import run_state

def prepare_run_dir(run_dir: Path, config: TrainConfig, overwrite: bool) -> bool:
    """Makes `run_dir` ready for training; decides between a new run and a resume.

    Args:
        run_dir: The output folder.
        config: The resolved options of this invocation.
        overwrite: Replace a finished or unfinished run.

    Returns:
        True when resuming an unfinished run with the same options.

    Raises:
        RunError: A finished run (without `overwrite`), an unfinished run with other
            options, a non-empty folder that is no run directory, or an unwritable path.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--out {run_dir} is a file; choose a folder")
    state = run_state(run_dir)
    try:
        if state is not None and overwrite:
            shutil.rmtree(run_dir)
            state = None
        elif state == "complete":
            raise RunError(f"{run_dir} holds a finished run; pass --overwrite to replace it, "
                           "or choose another --out")
        elif state is None and run_dir.is_dir() and any(run_dir.iterdir()):
            raise RunError(f"{run_dir} is not empty and is not a transferkit run directory; "
                           "choose a new or empty --out folder")
    except OSError as e:  # Unreadable folder, or a link where a folder should be.
        raise RunError(f"cannot use {run_dir} as the run directory: {e.strerror or e}; "
                       "choose another --out folder") from e
    # run.json is written before config.json, so a run marked "running" without a
    # config.json was stopped before doing any work: it starts again from scratch.
    resuming = state == "running" and (run_dir / layout.CONFIG_FILE).exists()
    if resuming:
        try:
            saved = read_json(run_dir / layout.CONFIG_FILE)
            previous = TrainConfig.from_dict(saved)
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise RunError(f"{run_dir} holds an unfinished run whose config.json cannot be "
                           "read; pass --overwrite to start again") from e
        ours, theirs = _comparable(config), _comparable(previous)
        if config.image_size is None:  # "auto" matches the size the plan chose before
            theirs["image_size"] = None
        # A run made before paths were stored absolute meant its folder from here too.
        theirs["data"] = absolute_data(theirs["data"])
        # An option this run's version did not have yet cannot differ from it.
        changed = [f"{k}: {theirs.get(k)!r} before, {v!r} now" for k, v in ours.items()
                   if k in saved and theirs.get(k) != v]
        if changed:
            raise RunError(f"{run_dir} holds an unfinished run with other options "
                           f"({'; '.join(changed)}); run the same command as before to "
                           "resume it, or pass --overwrite to start again")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise readable_error(e, run_dir) from e
    write_json(run_dir / layout.STATE_FILE, {"state": "running"})
    write_json(run_dir / layout.CONFIG_FILE, config.to_dict())
    return resuming


def mark_complete(run_dir: Path) -> None:
    """Marks the run finished; done last, after every other file is written."""
    write_json(run_dir / layout.STATE_FILE, {"state": "complete"})


def _comparable(config: TrainConfig) -> dict[str, Any]:
    values = config.to_dict()
    for key in ("quiet", "workers", "calibrate", "packages"):  # do not change the model
        values.pop(key)
    return values
