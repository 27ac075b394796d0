"""Images as data URIs, so the report is one file that needs no network and no folder."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image

from transferkit.data.images import load_image
from transferkit.errors import ImageError

THUMBNAIL_SIDE = 96


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """`data:<mime>;base64,...` of some bytes."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def array_uri(image: np.ndarray, side: int | None = None, quality: int = 80) -> str:
    """A uint8 RGB array as a JPEG data URI, its long side shrunk to `side`."""
    picture = Image.fromarray(np.asarray(image, np.uint8))
    if side is not None:
        picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality)
    return data_uri(buffer.getvalue(), "image/jpeg")


def thumbnail(path: str | Path, side: int = THUMBNAIL_SIDE) -> str | None:
    """A small JPEG data URI of an image file, or None when it cannot be read any more."""
    try:
        return array_uri(load_image(path), side)
    except (ImageError, OSError):
        return None


def file_uri(path: Path) -> str:
    """A PNG file (a plot another command wrote) as a data URI."""
    return data_uri(Path(path).read_bytes())
