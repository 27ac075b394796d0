"""Whatever the bytes, `load_image` returns an RGB array or raises `ImageError`.

Random bytes rarely get past an image header, so most examples start from small
valid files of every supported format and damage them: flip, overwrite, insert and
delete bytes, truncate.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import hostile
from transferkit.data.images import load_image
from transferkit.data.scan import scan_folder
from transferkit.errors import ImageError


def _samples() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgb = hostile.class_image((200, 60, 30), rng, 12)
    rgba = Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (12, 12), np.uint8)]))
    buffer = io.BytesIO()
    frames = [Image.fromarray(rgb), Image.new("RGB", (12, 12), (0, 0, 255))]
    frames[0].save(buffer, "WEBP", save_all=True, append_images=frames[1:])
    return {
        "png": hostile.encode(rgb, "PNG"),
        "png_rgba": hostile.encode(rgba, "PNG"),
        "png_16": hostile.gray16_png_bytes(rng.integers(0, 65536, (6, 6))),
        "jpeg": hostile.encode(rgb, "JPEG", quality=80),
        "jpeg_progressive": hostile.encode(rgb, "JPEG", progressive=True),
        "jpeg_exif": hostile.exif_rotated_jpeg_bytes(6),
        "jpeg_cmyk": hostile.encode(Image.fromarray(rgb).convert("CMYK"), "JPEG"),
        "gif": hostile.encode(Image.fromarray(rgb).convert("P"), "GIF"),
        "gif_animated": hostile.animated_gif_bytes(),
        "bmp": hostile.encode(rgb, "BMP"),
        "bmp_rle": hostile.encode(Image.fromarray(rgb).convert("P"), "BMP", compression=1),
        "webp": hostile.encode(rgb, "WEBP"),
        "webp_lossless": hostile.encode(rgb, "WEBP", lossless=True),
        "webp_animated": buffer.getvalue(),
        "tiff": hostile.encode(rgb, "TIFF"),
        "tiff_deflate": hostile.encode(rgb, "TIFF", compression="tiff_deflate"),
        "tiff_float": hostile.encode(Image.fromarray(rng.random((6, 6), np.float32)), "TIFF"),
    }


SAMPLES = _samples()

# Pillow warns (UserWarning) about the corrupt metadata we feed it; that is expected.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 1 << 16), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 16), st.integers(1, 16)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16), st.just(0)),
)


def _mutate(data: bytes, mutations) -> bytes:
    data = bytearray(data)
    for kind, position, value in mutations:
        if not data:
            break
        i = position % len(data)
        if kind == "flip":
            data[i] ^= 1 << value
        elif kind == "set":
            data[i] = value
        elif kind == "insert":
            data[i:i] = value
        elif kind == "delete":
            del data[i:i + value]
        else:
            del data[i:]
    return bytes(data)


damaged_files = st.one_of(
    st.binary(max_size=2048),
    st.builds(_mutate, st.sampled_from(list(SAMPLES.values())),
              st.lists(_mutation, min_size=1, max_size=6)),
)


def _check(data: bytes) -> None:
    try:
        image = load_image(data)
    except ImageError as e:
        assert isinstance(e.reason, str) and e.reason.strip()
        return
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8
    assert image.ndim == 3 and image.shape[2] == 3 and image.shape[0] > 0 < image.shape[1]


def test_samples_are_valid():
    for name, data in SAMPLES.items():
        assert load_image(data).shape[2] == 3, name


@settings(max_examples=200, deadline=None)
@given(damaged_files)
def test_load_image_returns_rgb_or_raises_image_error(data):
    _check(data)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(damaged_files, st.sampled_from(["x.jpg", "x.png", "x.GIF", "x.webp", "x.tiff"]))
def test_scan_folder_survives_a_damaged_file(data, name):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "cls").mkdir()
        (root / "cls" / name).write_bytes(data)
        index = scan_folder(root, workers=1, progress=False)
    assert len(index) == 1
    row = index.iloc[0]
    if row["status"] == "ok":
        assert row["width"] > 0 and row["height"] > 0 and len(row["sha256"]) == 64
        assert row["reason"] == ""
    else:
        assert row["status"] == "skipped" and row["reason"].strip()
        assert row["sha256"] == "" and row["width"] == 0
