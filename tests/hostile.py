"""A generator of hostile image folders: everything real-world datasets contain.

`make_hostile_folder` writes a small class-per-subfolder dataset whose good images
are learnable (each class's images are dominated by its colour) and which also holds
every kind of file an audit must survive: truncated, empty and mislabelled files,
OS junk, unusual colour modes, EXIF rotation, animation, odd sizes, a decompression
bomb, nested folders, duplicates, an empty class and a junk-only class. The returned
manifest says which files must be kept and which skipped.

The byte-level helpers (`encode`, `bomb_png_bytes`, `exif_rotated_jpeg_bytes`, ...)
are public so unit tests and benchmarks can reuse them.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

CLASS_COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
UPRIGHT_TOP = (255, 0, 0)  # EXIF test image: red top half ...
UPRIGHT_BOTTOM = (0, 0, 255)  # ... blue bottom half, once oriented.
UPRIGHT_SIZE = (48, 32)  # (width, height) once oriented; stored as 32x48.
ANIMATED_FIRST, ANIMATED_SECOND = (0, 255, 0), (255, 0, 255)


def class_image(color: tuple[int, int, int], rng: np.random.Generator, size: int = 64
                ) -> np.ndarray:
    """An RGB image dominated by `color`: noise plus a few small random rectangles."""
    pixels = np.array(color, np.float64) + rng.normal(0, 20, (size, size, 3))
    for _ in range(rng.integers(1, 4)):
        x, y = rng.integers(0, size - size // 4, 2)
        w, h = rng.integers(2, size // 4, 2)
        pixels[y:y + h, x:x + w] = rng.integers(0, 256, 3)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def encode(image: Image.Image | np.ndarray, fmt: str, **params) -> bytes:
    """Encodes an image (or RGB array) with Pillow, returning the file's bytes."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def bomb_png_bytes(width: int = 40000, height: int = 40000) -> bytes:
    """A valid, complete 1-bit grayscale PNG of `width`x`height` black pixels.

    Built without ever holding the raw pixels: all-zero input is deflated once in
    1 MiB pieces, each ended by a full flush so it decodes on its own, and the piece
    is repeated. (Deflate cannot beat ~1032:1, so 40000x40000 takes ~200 KB.)
    """
    raw_length = height * (1 + (width + 7) // 8)  # A filter byte per row, 8 px/byte.
    piece_length = 1 << 20
    count, rest = divmod(raw_length, piece_length)
    stream = [b"\x78\x9c"]  # zlib header: deflate, 32K window.
    stream += [_deflate_zeros(piece_length)] * count
    stream += [_deflate_zeros(rest), b"\x03\x00"]  # \x03\x00: empty final block.
    # Adler-32 of n zero bytes: a stays 1, b grows by 1 per byte.
    stream.append(struct.pack(">I", ((raw_length % 65521) << 16) | 1))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", b"".join(stream)) + png_chunk(b"IEND", b""))


def exif_rotated_jpeg_bytes(orientation: int = 6) -> bytes:
    """A JPEG stored sideways whose EXIF Orientation makes it upright.

    Upright, it is `UPRIGHT_SIZE` with an `UPRIGHT_TOP` top half and an
    `UPRIGHT_BOTTOM` bottom half. Orientation 6 means "rotate 90° clockwise to
    display", 8 "rotate 90° counter-clockwise".
    """
    width, height = UPRIGHT_SIZE
    upright = np.zeros((height, width, 3), np.uint8)
    upright[:height // 2] = UPRIGHT_TOP
    upright[height // 2:] = UPRIGHT_BOTTOM
    store = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation]
    stored = Image.fromarray(upright).transpose(store)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def animated_gif_bytes() -> bytes:
    """A two-frame GIF: `ANIMATED_FIRST` then `ANIMATED_SECOND`."""
    frames = [Image.new("RGB", (16, 16), c) for c in (ANIMATED_FIRST, ANIMATED_SECOND)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100,
                   loop=0)
    return buffer.getvalue()


def gray16_png_bytes(values: np.ndarray) -> bytes:
    """A 16-bit grayscale PNG holding `values` (a 2-D uint16 array)."""
    return encode(Image.fromarray(values.astype(np.uint16)), "PNG")


def truncated_jpeg_bytes(rng: np.random.Generator, size: int = 64) -> bytes:
    """A JPEG cut off in the middle of its compressed data."""
    data = encode(class_image((128, 128, 128), rng, size), "JPEG", quality=90)
    return data[:len(data) * 6 // 10]


def make_hostile_folder(root: Path, seed: int = 0, n_good_per_class: int = 8,
                        size: int = 64) -> dict:
    """Writes the hostile dataset under `root` (created if needed).

    Args:
        root: The data folder to create.
        seed: Seeds the random image content.
        n_good_per_class: Plain learnable images per colour class (PNG and JPEG).
        size: Side of the plain images, in pixels.

    Returns:
        A manifest: "expected_ok" and "expected_skipped" (sets of posix paths
        relative to `root`, together every file the audit must list),
        "ignored" (files that must not be listed), "duplicates" ({copy: original}),
        "upright_check" (the EXIF-rotated JPEG), "animated_gif", "classes" (every
        class folder), "usable_classes" and "left_out_classes".
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    ok, skipped, ignored = set(), set(), set()

    def put(rel: str, data: bytes, expect: set | None) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if expect is not None:
            expect.add(rel)

    def colored(cls: str, side: int = size) -> np.ndarray:
        return class_image(CLASS_COLORS[cls], rng, side)

    for cls in CLASS_COLORS:
        for i in range(n_good_per_class):
            fmt, ext = ("PNG", "png") if i % 2 else ("JPEG", "jpg")
            put(f"{cls}/{cls}_{i:03d}.{ext}", encode(colored(cls), fmt), ok)

    # red: broken and mislabelled files, alpha and gray modes, EXIF, nesting, a bomb.
    put("red/truncated.jpg", truncated_jpeg_bytes(rng, size), skipped)
    put("red/zero_bytes.jpg", b"", skipped)
    put("red/text_named.jpg", b"This is not an image, just some notes.\n" * 3, skipped)
    put("red/download.jpeg", b"<!DOCTYPE html><html><body>403 Forbidden</body></html>\n",
        skipped)
    put("red/actually_png.jpg", encode(colored("red"), "PNG"), ok)
    put("red/Thumbs.db", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504), skipped)
    put("red/.DS_Store", b"\x00\x00\x00\x01Bud1" + bytes(64), skipped)
    put("red/._red_000.jpg", b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X", skipped)
    put("red/notes.txt", b"collected from the garden, 2021\n", skipped)
    rgba = np.dstack([colored("red"), rng.integers(0, 256, (size, size), np.uint8)])
    put("red/rgba.png", encode(Image.fromarray(rgba, "RGBA"), "PNG"), ok)
    put("red/gray.png", encode(Image.fromarray(colored("red")[..., 0], "L"), "PNG"), ok)
    put("red/gray16.png", gray16_png_bytes(rng.integers(0, 65536, (size, size))), ok)
    put("red/rotated_exif.jpg", exif_rotated_jpeg_bytes(6), ok)
    put("red/bomb.png", bomb_png_bytes(40000, 40000), skipped)
    put("red/nested/deeper/nested.png", encode(colored("red"), "PNG"), ok)

    # green: palette, animation, CMYK, BMP, an extreme aspect ratio.
    put("green/palette.gif", encode(Image.fromarray(colored("green")).convert("P"),
                                    "GIF"), ok)
    put("green/animated.gif", animated_gif_bytes(), ok)
    put("green/cmyk.jpg", encode(Image.fromarray(colored("green")).convert("CMYK"),
                                 "JPEG"), ok)
    put("green/image.bmp", encode(colored("green"), "BMP"), ok)
    put("green/wide_2000x20.png", encode(np.tile(colored("green", 20), (1, 100, 1)),
                                         "PNG"), ok)
    put("green/desktop.ini", b"[.ShellClassInfo]\r\n", skipped)
    palette_alpha = Image.fromarray(colored("green")).convert("P")
    put("green/palette_transparent.png", encode(palette_alpha, "PNG", transparency=0), ok)

    # blue: WebP, TIFF, upper-case extension, a non-ASCII name, 1x1, duplicates.
    put("blue/image.webp", encode(colored("blue"), "WEBP", quality=80), ok)
    put("blue/image.tif", encode(colored("blue"), "TIFF"), ok)
    put("blue/UPPER.JPG", encode(colored("blue"), "JPEG"), ok)
    put("blue/fleur été 🌸.png", encode(colored("blue"), "PNG"), ok)
    put("blue/tiny_1x1.png", encode(Image.new("RGB", (1, 1), CLASS_COLORS["blue"]), "PNG"),
        ok)
    duplicate = encode(colored("blue"), "PNG")
    put("blue/dup_a.png", duplicate, ok)
    put("blue/sub/dup_b.png", duplicate, ok)

    # Classes that end up unusable, and things outside any class.
    (root / "empty").mkdir(parents=True, exist_ok=True)
    put("junk_only/Thumbs.db", bytes(512), skipped)
    put("junk_only/.DS_Store", bytes(64), skipped)
    put("junk_only/readme.md", b"# nothing here\n", skipped)
    put("junk_only/broken.png", b"\x89PNG\r\n\x1a\n" + bytes(10), skipped)
    put("readme.txt", b"top-level files are not a class\n", ignored)
    put(".git/HEAD", b"ref: refs/heads/main\n", ignored)
    put("__MACOSX/red/._red_000.jpg", b"\x00\x05\x16\x07", ignored)
    put("red/.ipynb_checkpoints/red_000-checkpoint.png", encode(colored("red"), "PNG"),
        ignored)
    os.symlink(root / "red" / "no_such_target.jpg", root / "red" / "broken_link.jpg")
    skipped.add("red/broken_link.jpg")

    return {
        "expected_ok": ok,
        "expected_skipped": skipped,
        "ignored": ignored,
        "duplicates": {"blue/sub/dup_b.png": "blue/dup_a.png"},
        "upright_check": "red/rotated_exif.jpg",
        "animated_gif": "green/animated.gif",
        "bomb": "red/bomb.png",
        "classes": sorted([*CLASS_COLORS, "empty", "junk_only"]),
        "usable_classes": sorted(CLASS_COLORS),
        "left_out_classes": ["empty", "junk_only"],
    }


def _deflate_zeros(n: int) -> bytes:
    """Raw deflate blocks for `n` zero bytes, byte-aligned and self-contained."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(bytes(n)) + compressor.flush(zlib.Z_FULL_FLUSH)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and CRC."""
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data)))
