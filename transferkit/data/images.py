"""Decoding untrusted image files into upright RGB arrays.

Every image a user points transferkit at goes through `load_image`, which either
returns an `HxWx3` uint8 array or raises `ImageError` with a short reason a person
can act on ("empty file (0 bytes)", "image too large: ..."). It never raises any
other exception, whatever the bytes: one bad file in a folder of thousands must not
stop a run.

Pillow opens images lazily, so we read the header, check the dimensions against
our own limit, and only then decode the pixels: a 40000x40000 PNG of a few hundred
KB is refused without allocating 1.6 GB.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import struct
from typing import Iterator

import numpy as np
from PIL import Image, ImageFile, ImageOps

# Importing a plugin registers it in `Image.OPEN`; these are the only decoders we
# use (Pillow also ships readers for EPS, PSD, FITS, ...; we don't expose them to
# untrusted files).
from PIL import (  # noqa: F401
    BmpImagePlugin,
    GifImagePlugin,
    JpegImagePlugin,
    MpoImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

from transferkit.errors import ImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})

MAX_PIXELS = 50_000_000

# Pillow format ids tried, in order, against the file's leading bytes. The format is
# taken from the content, not the extension, so a PNG named `.jpg` still loads.
# (JPEG's factory also returns MPO, the multi-picture JPEG some cameras write.)
_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")
_FORMAT_NAMES = "JPEG, PNG, GIF, BMP, WebP or TIFF"

# What Pillow's decoders raise on malformed input. Truncation is an OSError because
# `ImageFile.LOAD_TRUNCATED_IMAGES` is left at its default (False).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError,
                  struct.error, EOFError, ZeroDivisionError, OverflowError,
                  NotImplementedError, RuntimeError, AttributeError)

# Leading bytes of common files that are not (supported) images, for a better reason
# than "unsupported image format".
_SIGNATURES = (
    (b"%PDF", "not an image (PDF document)"),
    (b"PK\x03\x04", "not an image (ZIP archive)"),
    (b"8BPS", "unsupported image format (Photoshop PSD)"),
    (b"\x00\x00\x00\x0cjP  ", "unsupported image format (JPEG 2000)"),
    (b"\xff\x4f\xff\x51", "unsupported image format (JPEG 2000)"),
)
_FTYP_BRANDS = {  # ISO-BMFF containers: bytes 8..12 after b"ftyp".
    b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF",
    b"avif": "AVIF", b"avis": "AVIF",
}
_SNIFF_BYTES = 1024


def load_image(source: str | os.PathLike | bytes, max_pixels: int = MAX_PIXELS
               ) -> np.ndarray:
    """Decodes an image file into an upright RGB array.

    EXIF orientation is applied; animated GIF/WebP give their first frame;
    transparency is composited on white; grayscale, palette, CMYK, YCbCr and LAB
    become RGB; 16-bit and float images are scaled to 8 bits.

    Args:
        source: A file path, or the file's bytes.
        max_pixels: Refuse images with more than this many pixels (width * height),
            checked from the header before any pixel is decoded.

    Returns:
        A C-contiguous, writeable `(height, width, 3)` uint8 array.

    Raises:
        ImageError: The file cannot be read or decoded, or is too large; `reason`
            says why in a few words. No other exception escapes.
    """
    path = _display_path(source)
    with _open(source) as im:
        _check_size(im.size, max_pixels, path)
        try:
            rgb = _to_rgb(_decode_upright(im))
            # np.array (not asarray) so callers get a writeable array of their own.
            array = np.array(rgb, dtype=np.uint8)
        except MemoryError:
            raise ImageError("not enough memory to decode this image", path) from None
        except Image.DecompressionBombError:
            raise ImageError("image too large (over Pillow's decompression-bomb limit)",
                             path) from None
        except _DECODE_ERRORS as e:
            raise ImageError(f"truncated or corrupt image: {_describe(e)}", path) from None
        except Exception as e:  # Last line of defence: see the module docstring.
            raise ImageError(f"cannot decode image: {_describe(e)}", path) from None
    if array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        raise ImageError(f"cannot decode image: unexpected pixel layout {array.shape}",
                         path)
    return array


def as_rgb(image: object) -> np.ndarray:
    """An RGB array given by a caller, checked: the one rule for pixels not from a file.

    Rule: uint8, or another integer or float type with values in 0-255. A float array
    whose values all lie in [0, 1] (and are not all 0) was scaled and is refused: read
    as 0-255 it would be an almost black image, and the model would answer nonsense.

    Args:
        image: `[H, W, 3]`, `[H, W, 4]` (alpha dropped), `[H, W, 1]` or `[H, W]` (gray).

    Returns:
        `[H, W, 3]`, C-contiguous: uint8 stays uint8, anything else becomes float32.

    Raises:
        ImageError: Not an image array, or its values are not 0-255 pixels.
    """
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape:
        raise ImageError(f"expected an HxWx3 RGB array, got shape {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return check_pixels(array[..., :3])


def check_pixels(array: np.ndarray) -> np.ndarray:
    """Checks that an array (one image or a batch) holds 0-255 pixel values.

    Args:
        array: Any shape; the last axis is the channels.

    Returns:
        The array, C-contiguous: uint8 as it is, any other numeric type as float32.

    Raises:
        ImageError: Not numeric, not finite, outside 0-255, or floats scaled to [0, 1].
    """
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype.kind not in "uif" or array.dtype == np.bool_:
        raise ImageError(f"expected pixel values (uint8, or numbers in 0-255), got dtype "
                         f"{array.dtype}")
    if array.size == 0:
        return np.ascontiguousarray(array, np.float32)
    if not np.isfinite(array).all():
        raise ImageError("the image contains NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 255:
        raise ImageError(f"pixel values must lie in 0-255, got {low:g} to {high:g}")
    if array.dtype.kind == "f" and 0 < high <= 1:
        raise ImageError(f"the pixel values all lie in [0, 1] (max {high:g}): the image "
                         "was scaled; pass 0-255 values (multiply by 255) or uint8")
    return np.ascontiguousarray(array, np.float32)


@contextlib.contextmanager
def _open(source: str | os.PathLike | bytes) -> Iterator[ImageFile.ImageFile]:
    """Identifies the image and parses its header; pixels are not decoded yet."""
    path = _display_path(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        stream = contextlib.nullcontext(io.BytesIO(bytes(source)))
    else:
        stream = _open_file(source, path)
    with stream as fp:
        try:
            head = fp.read(_SNIFF_BYTES)
        except OSError as e:
            raise ImageError(f"cannot read file: {_describe(e)}", path) from None
        if not head:
            raise ImageError("empty file (0 bytes)", path)
        im = _identify(fp, head, path)
        try:
            yield im
        finally:
            with contextlib.suppress(Exception):
                im.close()


def _open_file(source: str | os.PathLike, path: str) -> io.BufferedReader:
    try:
        # stat() first: opening a FIFO or device named `x.jpg` would block forever.
        mode = os.stat(source).st_mode
        if stat.S_ISDIR(mode):
            raise ImageError("a folder, not an image file", path)
        if not stat.S_ISREG(mode):
            raise ImageError("not a regular file", path)
        return open(source, "rb")
    except FileNotFoundError:
        reason = "broken symbolic link" if os.path.islink(source) else "file not found"
        raise ImageError(reason, path) from None
    except PermissionError:
        raise ImageError("cannot read file: permission denied", path) from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path.
        raise ImageError(f"cannot read file: {_describe(e)}", path) from None


def _identify(fp: io.IOBase, head: bytes, path: str | None) -> ImageFile.ImageFile:
    """Opens `fp` with the first plugin whose magic bytes match.

    This is `Image.open` restricted to `_FORMATS`, minus its decompression-bomb
    check: that check reads the global `Image.MAX_IMAGE_PIXELS` (and warns or raises
    on its own terms), while we apply `max_pixels` per call, with a better message.
    """
    for fmt in _FORMATS:
        factory, accept = Image.OPEN[fmt]
        try:
            accepted = accept is None or accept(head)
            if not accepted or isinstance(accepted, str):  # A str is a warning: no.
                continue
            fp.seek(0)
            return factory(fp, path or "")
        except MemoryError:
            raise ImageError("not enough memory to read the image header", path) from None
        except Image.DecompressionBombError:
            # Some readers (GIF frames) run Pillow's own check while parsing.
            raise ImageError("image too large (over Pillow's decompression-bomb limit)",
                             path) from None
        except Exception as e:  # The magic matched, so the file claims to be `fmt`.
            detail = _describe(e)
            if detail == "not identified by this driver":
                # What `ImageFile.__init__` raises for a zero width/height or no mode.
                detail = "zero width or height, or unknown pixel mode"
            raise ImageError(f"truncated or corrupt image: bad {fmt} header ({detail})",
                             path) from None
    raise ImageError(_not_an_image_reason(head), path)


def _not_an_image_reason(head: bytes) -> str:
    """Guesses what a file that no image plugin accepts actually is."""
    for signature, reason in _SIGNATURES:
        if head.startswith(signature):
            return reason
    if head[4:8] == b"ftyp" and head[8:12] in _FTYP_BRANDS:
        return (f"unsupported image format ({_FTYP_BRANDS[head[8:12]]}); "
                f"convert it to JPEG or PNG")
    text = _as_text(head)
    if text is not None:
        lowered = text.lstrip().lower()
        if lowered.startswith(("<!doctype html", "<html")):
            return "not an image (an HTML page, e.g. a failed download)"
        if lowered.startswith(("<svg", "<?xml")) and "<svg" in lowered:
            return "unsupported image format (SVG); convert it to PNG"
        return "not an image (looks like text)"
    return f"unsupported image format (expected {_FORMAT_NAMES})"


def _as_text(head: bytes) -> str | None:
    """Returns `head` decoded if it looks like text, else None."""
    if b"\x00" in head:  # UTF-16 text is rare enough to call binary.
        return None
    try:
        # A multi-byte character may be cut at the end of the sniffed block.
        text = head.decode("utf-8", errors="strict" if len(head) < _SNIFF_BYTES
                           else "ignore")
    except UnicodeDecodeError:
        return None
    printable = sum(c.isprintable() or c in "\t\r\n\f" for c in text)
    return text if printable >= 0.95 * len(text) else None


def _check_size(size: tuple[int, int], max_pixels: int, path: str | None) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"image has a zero dimension ({width}x{height} pixels)", path)
    if width * height > max_pixels:
        raise ImageError(f"image too large: {width}x{height} pixels (limit "
                         f"{max_pixels:,}); resize it or raise max_pixels", path)


def _decode_upright(im: ImageFile.ImageFile) -> Image.Image:
    """Decodes the first frame and applies its EXIF orientation."""
    im.load()  # Frame 0: `_open` leaves multi-frame images positioned there.
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except (MemoryError, Image.DecompressionBombError):
        raise
    except Exception:  # noqa: BLE001
        # The pixels decoded fine, only the EXIF block is malformed: keep the image
        # as stored rather than lose it over its metadata.
        pass
    return im


def _to_rgb(im: Image.Image) -> Image.Image:
    """Converts any Pillow mode to 8-bit RGB."""
    if im.mode == "RGB" and "transparency" not in im.info:
        return im
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(im))).convert("RGB")
    if im.has_transparency_data:
        return _composite_on_white(im)
    return im.convert("RGB")


def _composite_on_white(im: Image.Image) -> Image.Image:
    if im.mode == "La":  # Premultiplied: Pillow only converts it via "LA".
        im = im.convert("LA")
    rgba = np.asarray(im.convert("RGBA"), dtype=np.uint32)
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    # out = rgb * a + white * (1 - a), in integers with rounding.
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return Image.fromarray(out.astype(np.uint8), "RGB")


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Maps a 16-bit, 32-bit integer or float single-channel image to uint8.

    Integers in 0..65535 are taken as 16-bit samples (65535 -> 255, 32768 -> 128),
    so a dark 16-bit image stays dark. Floats in [0, 1] are scaled by 255, floats
    in [0, 255] kept; anything else (negative, larger, or a float range such as
    depth in metres) is stretched from its min..max. NaN and inf become 0.
    """
    if values.dtype.kind == "f":
        values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0,
                               neginf=0.0)
        low, high = (float(values.min()), float(values.max())) if values.size else (0, 0)
        if 0 <= low and high <= 1:
            scaled = values * 255
        elif 0 <= low and high <= 255:
            scaled = values
        else:
            scaled = (values - low) * (255 / (high - low)) if high > low else values * 0
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    values = values.astype(np.int64)
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if 0 <= low and high <= 65535:
        return ((values * 255 + 32767) // 65535).astype(np.uint8)
    span = max(high - low, 1)
    return ((values - low) * 255 // span).astype(np.uint8)


def _display_path(source: str | os.PathLike | bytes) -> str | None:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return None
    try:
        return os.fsdecode(source)
    except (TypeError, ValueError):
        return repr(source)


def _describe(error: BaseException) -> str:
    """A one-line description of a library exception, at most ~100 characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 100 else text[:97] + "..."
