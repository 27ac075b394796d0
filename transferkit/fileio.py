"""Atomic writes: a file in a run directory is either complete or absent.

The files of a run directory are written through here: to a temporary sibling, flushed,
fsynced, then `os.replace`d (atomic on POSIX), so a crash or a full disk never leaves a
half-written file behind. (An export is written into a hidden folder that is renamed
into place whole: `replace_dir`.)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from transferkit.errors import RunError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path next to `path`; renames it onto `path` on success.

    Args:
        path: The final file path.
        suffix: Suffix for the temporary file (some writers, e.g. Keras, check it).

    Yields:
        The temporary path to write to.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.",
                                   suffix=suffix or path.suffix + ".tmp", dir=path.parent)
    except OSError as e:  # A file where a folder should be, no permission, disk full...
        raise readable_error(e, path) from e
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; a run directory is for sharing
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise readable_error(e, path) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically writes `text` (UTF-8) to `path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically writes `obj` as indented JSON to `path`."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_csv(path: str | os.PathLike, frame) -> None:
    """Atomically writes a pandas DataFrame as CSV (no index) to `path`."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def read_json(path: str | os.PathLike) -> Any:
    """Reads a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Moves a finished temporary directory onto `final_dir`, replacing an old one."""
    old = None
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def readable_error(error: OSError, path: str | os.PathLike | None = None) -> RunError:
    """A one-line `RunError` for an OSError raised while writing `path`.

    Args:
        error: The error (its errno picks the message).
        path: The file being written; defaults to the error's own file name.
    """
    path = Path(path) if path is not None else error.filename
    if error.errno == errno.ENOSPC:
        return RunError(f"disk full while writing {path or 'a file'}; free some space and "
                        "run the same command again (finished work was kept)")
    if path is None:
        return RunError(f"cannot write a file: {error.strerror or error}")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return RunError(f"cannot write {path}: permission denied; choose another --out folder")
    blocker = _file_in_the_way(Path(path))
    if error.errno in (errno.ENOTDIR, errno.EEXIST) and blocker is not None:
        return RunError(f"cannot write {path}: {blocker} is a file, not a folder; choose "
                        "another path")
    return RunError(f"cannot write {path}: {error.strerror or error}")


def _file_in_the_way(path: Path) -> Path | None:
    """The first ancestor of `path` that exists but is not a folder, if any."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def subplots(*args: Any, figsize: tuple[float, float] | None = None,
             dpi: float | None = None, **kwargs: Any) -> tuple[Any, Any]:
    """`pyplot.subplots` without pyplot: a `matplotlib.figure.Figure` and its axes.

    The figure belongs to no pyplot state and selects no backend (`savefig` draws it
    with the Agg canvas), so plotting neither changes a notebook's backend nor shares
    state between the demo's threads; nothing needs closing.

    Args:
        *args: `nrows, ncols` as `Figure.subplots` takes them.
        figsize: `(width, height)` in inches.
        dpi: Dots per inch (None: matplotlib's default).
        **kwargs: `Figure.subplots`'s options (`sharex`, `squeeze`, ...).

    Returns:
        `(figure, axes)`.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots(*args, **kwargs)


def save_png(fig, path: Path) -> None:
    """Lays out a `matplotlib.figure.Figure` and writes it atomically as a PNG (no
    pyplot: nothing global to close)."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
