"""The folder audit: which files of a class-per-subfolder dataset can be used, and why not.

`scan_folder` looks at every file under `data_dir/<class>/`, decodes each candidate
image once, and returns an index with one row per file: kept ("ok") or "skipped"
with a reason. Nothing is deleted or moved; the index is what training reads.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import pandas as pd

from transferkit import fileio
from transferkit.data.images import IMAGE_EXTENSIONS, MAX_PIXELS, load_image
from transferkit.errors import DataError, ImageError

AUDIT_CSV_COLUMNS = ("path", "class", "status", "reason")

# Files operating systems drop into folders; never images.
_SYSTEM_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini"})
_PROGRESS_ABOVE = 200  # files; smaller folders are audited in a blink.
_REPORT_LINES = 20


class _Row(NamedTuple):
    path: str
    cls: str
    status: str
    reason: str
    sha256: str = ""
    width: int = 0
    height: int = 0


def scan_folder(data_dir: str | os.PathLike, *, workers: int = 2, progress: bool = True,
                max_pixels: int = MAX_PIXELS) -> pd.DataFrame:
    """Audits a folder with one subfolder per class.

    Classes are the immediate, non-hidden subfolders of `data_dir`; files in nested
    folders belong to their top-level class; files directly in `data_dir` are
    ignored. Each file with an image extension is decoded once (in `workers`
    threads, keeping only its size); files with identical bytes are flagged
    "duplicate of <first path>" but stay "ok".

    Args:
        data_dir: The dataset folder.
        workers: Threads decoding images.
        progress: Print "audit: n/N files" to stderr about every 10% (for more than
            200 files).
        max_pixels: Images with more pixels are skipped (see `load_image`).

    Returns:
        A DataFrame with columns path (posix, relative to `data_dir`), class, status
        ("ok" or "skipped"), reason ("" when ok and unique), sha256 ("" when
        skipped), width and height (0 when skipped), sorted by (class, path).
        `attrs["classes"]` lists every class folder found, including empty ones.

    Raises:
        DataError: `data_dir` is missing, is not a folder, or has no class subfolders.
    """
    root = Path(data_dir)
    classes = _class_folders(root)
    # Candidates as (relative path, class) strings, not Path objects: with the index,
    # the only memory that grows with the folder (a Path costs several times more).
    rows, candidates = [], []
    for cls in classes:
        for file in files_under(root / cls):
            rel = file.relative_to(root).as_posix()
            reason = junk_reason(file)
            if not _is_utf8(rel):
                # Undecodable bytes (e.g. a zip made on Windows) cannot go into the CSVs;
                # list the file under a readable version of its name.
                rel = rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                reason = "file name is not valid UTF-8; rename it"
            if reason:
                rows.append(_Row(rel, cls, "skipped", reason))
            else:
                candidates.append((rel, cls))

    def audit(candidate: tuple[str, str]) -> _Row:
        rel, cls = candidate
        return _audit_image(root / rel, rel, cls, max_pixels=max_pixels)

    show = progress and len(candidates) > _PROGRESS_ABOVE
    step = max(1, math.ceil(len(candidates) / 10))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, row in enumerate(_bounded_map(pool, audit, candidates, 4 * workers),
                                   start=1):
            rows.append(row)
            if show and (done % step == 0 or done == len(candidates)):
                print(f"audit: {done}/{len(candidates)} files", file=sys.stderr, flush=True)

    rows = sorted(rows, key=lambda r: (r.cls, r.path))
    index = pd.DataFrame(rows, columns=_Row._fields).rename(columns={"cls": "class"})
    index = index.astype({"width": "int64", "height": "int64"})
    # Same bytes as an earlier usable file (in sorted order): flagged, kept.
    ok = index["status"] == "ok"
    copy = ok & index["sha256"].where(ok).duplicated()
    first = index[ok].drop_duplicates("sha256").set_index("sha256")["path"]
    if copy.any():
        index.loc[copy, "reason"] = "duplicate of " + index.loc[copy, "sha256"].map(first)
    index.attrs["classes"] = list(classes)
    return index


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Every file below `folder` with an image extension, recursively, sorted.

    Subfolder names mean nothing here (unlike `scan_folder`): for a folder of images
    of any kind, e.g. inputs of no known class. Hidden and system files are skipped.

    Raises:
        DataError: `folder` is missing, is not a folder, or holds no image file.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    files = sorted(f for f in files_under(root) if not junk_reason(f)
                   and _is_utf8(str(f)))
    if not files:
        raise DataError(f"no image files under {root}")
    return files


def summarize_classes(index: pd.DataFrame, min_per_class: int = 5
                      ) -> tuple[list[str], list[str]]:
    """Decides which classes can be trained on.

    Args:
        index: `scan_folder` output.
        min_per_class: Fewest usable images a kept class may have.

    Returns:
        `(classes, warnings)`: the usable class names, sorted, and one message per
        class left out because it has no usable image.

    Raises:
        DataError: A class has some, but fewer than `min_per_class`, usable images;
            or fewer than 2 classes are usable.
    """
    ok = Counter(index.loc[index["status"] == "ok", "class"])
    skipped = Counter(index.loc[index["status"] != "ok", "class"])
    all_classes = sorted(set(index.attrs.get("classes", [])) | set(index["class"]))
    warnings = []
    for name in all_classes:
        if ok[name] == 0:
            detail = (f"{skipped[name]} file{'s' if skipped[name] != 1 else ''} skipped"
                      if skipped[name] else "folder is empty")
            warnings.append(f"class '{name}' has no usable images ({detail}); "
                            "leaving it out")
    too_small = [f"'{name}' has {ok[name]}" for name in all_classes
                 if 0 < ok[name] < min_per_class]
    if too_small:
        raise DataError(f"too few usable images: class {', class '.join(too_small)}; "
                        f"need at least {min_per_class} per class: add images, or move "
                        "the class folder out of the data folder")
    usable = [name for name in all_classes if ok[name] > 0]
    if len(usable) < 2:
        raise DataError(f"need at least 2 classes with images, found {len(usable)}: "
                        f"{usable}")
    return usable, warnings


def write_audit_csv(index: pd.DataFrame, path: str | os.PathLike) -> None:
    """Atomically writes the audit (path, class, status, reason) as CSV.

    Args:
        index: `scan_folder` output.
        path: The CSV file to write.
    """
    fileio.write_csv(path, index.loc[:, list(AUDIT_CSV_COLUMNS)])


def audit_report(index: pd.DataFrame, max_files: int | None = _REPORT_LINES) -> str:
    """A short human summary of an audit.

    Args:
        index: `scan_folder` output.
        max_files: Most skipped files to list (then "... and N more"); None: all.

    Returns:
        Counts per class, then the skipped files grouped by reason.
    """
    limit = len(index) if max_files is None else max_files
    classes = sorted(set(index.attrs.get("classes", [])) | set(index["class"]))
    is_ok = index["status"] == "ok"
    n_dup = int(index["reason"].str.startswith("duplicate of ").sum())
    lines = [f"audit: {len(index)} files in {len(classes)} class folders: "
             f"{int(is_ok.sum())} ok, {int((~is_ok).sum())} skipped"
             + (f", {n_dup} exact duplicates (kept together in one split)" if n_dup else "")]
    width = max((len(name) for name in classes), default=0)
    for name in classes:
        in_class = index["class"] == name
        lines.append(f"  {name:<{width}}  {int((in_class & is_ok).sum()):>6} ok  "
                     f"{int((in_class & ~is_ok).sum()):>6} skipped")
    skipped = index.loc[~is_ok]
    if len(skipped):
        lines.append("skipped files:")
        shown = 0
        for reason, group in sorted(skipped.groupby("reason"), key=lambda g: -len(g[1])):
            if shown >= limit:
                break
            lines.append(f"  {reason} ({len(group)} file{'s' if len(group) != 1 else ''}):")
            for path in group["path"][:limit - shown]:
                lines.append(f"    {path}")
                shown += 1
        if len(skipped) > shown:
            lines.append(f"  ... and {len(skipped) - shown} more")
    return "\n".join(lines)


def _class_folders(root: Path) -> list[str]:
    """The class names under `root`: its non-hidden subfolders, sorted."""
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder; pass the folder that holds one "
                        "subfolder per class")
    try:
        classes = sorted(entry.name for entry in root.iterdir()
                         if entry.is_dir() and not _is_hidden_dir(entry.name))
    except OSError as e:
        raise DataError(f"cannot read data folder {root}: {e.strerror or e}") from e
    if not classes:
        raise DataError(f"no class subfolders in {root}; expected one subfolder per "
                        f"class, e.g. {root / 'cats'}/*.jpg")
    return classes


def files_under(folder: Path) -> Iterator[Path]:
    """Every file below `folder`, recursively, skipping hidden folders (one at a time:
    a list of every Path would grow with the folder).

    Links to folders are not followed (they could loop); they are returned like files
    and then skipped for their extension-less name or failed decode.
    """
    for parent, dirs, names in os.walk(folder, followlinks=False):
        # Pruned in place so os.walk does not descend into them.
        dirs[:] = [d for d in dirs if not _is_hidden_dir(d)]
        yield from (Path(parent) / d for d in dirs if os.path.islink(Path(parent) / d))
        yield from (Path(parent) / name for name in names)


def _bounded_map(pool: ThreadPoolExecutor, fn: Callable, items: Sequence,
                 in_flight: int) -> Iterator:
    """`pool.map(fn, items)`, in order, with at most `in_flight` items submitted ahead.

    (`Executor.map` submits every item at once: a future per file, about a kilobyte
    each, held until the whole folder is done.)
    """
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= in_flight:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def junk_reason(file: Path) -> str:
    """Why `file` is not even worth decoding, or "" if it is."""
    name = file.name
    if name.startswith("."):
        return "hidden file"
    if name.lower() in _SYSTEM_FILES:
        return "system file"
    if os.path.islink(file) and not os.path.exists(file):
        return "broken symbolic link"
    if os.path.isdir(file):
        return "link to a folder (not followed)"
    suffix = file.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        return f"not an image extension ({suffix or 'none'})"
    return ""


def _audit_image(file: Path, rel: str, cls: str, max_pixels: int) -> _Row:
    """Decodes one image (dropping the pixels at once) and hashes its bytes."""
    try:
        height, width = load_image(file, max_pixels=max_pixels).shape[:2]
        digest = _sha256(file)
    except ImageError as e:
        return _Row(rel, cls, "skipped", e.reason)
    except OSError as e:  # Vanished or became unreadable between decode and hash.
        return _Row(rel, cls, "skipped", f"cannot read file: {e.strerror or e}")
    return _Row(rel, cls, "ok", "", digest, width, height)


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_hidden_dir(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"
