"""`load_image`: every conversion gives the right pixels, every failure the right reason."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

import hostile
from transferkit.data.images import IMAGE_EXTENSIONS, MAX_PIXELS, as_rgb, check_pixels, \
    load_image
from transferkit.errors import ImageError


def _reason(data_or_path, **kwargs) -> str:
    with pytest.raises(ImageError) as caught:
        load_image(data_or_path, **kwargs)
    assert caught.value.reason
    return caught.value.reason


def _gray(array: np.ndarray) -> np.ndarray:
    """Asserts an RGB array is gray (R == G == B) and returns one channel."""
    assert np.array_equal(array[..., 0], array[..., 1])
    assert np.array_equal(array[..., 0], array[..., 2])
    return array[..., 0]


def _png_with_size(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + hostile.png_chunk(b"IHDR", header)
            + hostile.png_chunk(b"IDAT", zlib.compress(b""))
            + hostile.png_chunk(b"IEND", b""))


def test_the_pixel_limit_is_inclusive_and_read_from_the_header():
    at_limit = _png_with_size(MAX_PIXELS // 5000, 5000)  # exactly MAX_PIXELS pixels
    with pytest.raises(ImageError) as error:
        load_image(at_limit)  # allowed by size; then fails on its empty pixel data
    assert error.value.reason.startswith("truncated or corrupt image")
    with pytest.raises(ImageError, match="image too large"):
        load_image(_png_with_size(MAX_PIXELS // 5000, 5001))


def test_every_listed_extension_is_a_format_the_decoder_reads(tmp_path):
    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".gif": "GIF",
               ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}
    assert set(formats) == IMAGE_EXTENSIONS
    image = np.full((4, 6, 3), 120, np.uint8)
    for extension, fmt in formats.items():
        path = tmp_path / f"image{extension}"
        Image.fromarray(image).save(path, format=fmt)
        assert load_image(path).shape == (4, 6, 3), extension


def test_arrays_follow_one_rule():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(as_rgb(gray), np.stack([gray] * 3, axis=-1))
    rgba = np.zeros((2, 2, 4), np.uint8)
    assert as_rgb(rgba).shape == (2, 2, 3) and as_rgb(rgba).dtype == np.uint8
    floats = as_rgb(np.full((2, 2, 3), 200.5))
    assert floats.dtype == np.float32 and floats[0, 0, 0] == 200.5
    assert as_rgb(np.zeros((2, 2, 3))).dtype == np.float32  # black is black in any scale
    with pytest.raises(ImageError, match=r"all lie in \[0, 1\] \(max 0.9\): the image "
                                         "was scaled"):
        as_rgb(np.full((2, 2, 3), 0.9))
    with pytest.raises(ImageError, match="must lie in 0-255, got -1 to 3"):
        as_rgb(np.array([[[-1, 2, 3]]]))
    with pytest.raises(ImageError, match="NaN or infinite"):
        check_pixels(np.full((1, 2, 2, 3), np.nan))
    with pytest.raises(ImageError, match="expected an HxWx3 RGB array, got shape"):
        as_rgb(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ImageError, match="dtype <U1"):
        as_rgb(np.array([[["a", "b", "c"]]]))


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
def test_lossless_rgb_round_trip(fmt):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), np.uint8)
    params = {"lossless": True} if fmt == "WEBP" else {}
    out = load_image(hostile.encode(pixels, fmt, **params))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    assert out.flags.writeable and out.flags.c_contiguous
    np.testing.assert_array_equal(out, pixels)


def test_path_input_and_bytes_input_agree(tmp_path):
    data = hostile.encode(hostile.class_image((10, 200, 30), np.random.default_rng(1)), "PNG")
    path = tmp_path / "fleur été 🌸.png"
    path.write_bytes(data)
    from_bytes = load_image(data)
    np.testing.assert_array_equal(load_image(path), from_bytes)
    np.testing.assert_array_equal(load_image(str(path)), from_bytes)


@pytest.mark.parametrize("dtype, fmt", [("<u2", "PNG"), (">u2", "TIFF"), ("<u2", "TIFF")])
def test_16_bit_gray_is_scaled_not_clipped(dtype, fmt):
    values = np.array([[0, 257, 32768, 65535]], dtype)
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    out = load_image(hostile.encode(image, fmt))
    np.testing.assert_array_equal(_gray(out), [[0, 1, 128, 255]])


def test_16_bit_png_from_generator():
    values = np.array([[65535, 32768], [0, 1000]], np.uint16)
    out = _gray(load_image(hostile.gray16_png_bytes(values)))
    np.testing.assert_array_equal(out, [[255, 128], [0, 4]])


def test_32_bit_integer_image_in_16_bit_range_is_scaled_as_16_bit():
    image = Image.fromarray(np.array([[0, 32768, 65535]], np.int32))
    assert image.mode == "I"
    np.testing.assert_array_equal(_gray(load_image(hostile.encode(image, "TIFF"))),
                                  [[0, 128, 255]])


def test_32_bit_integer_image_out_of_16_bit_range_is_stretched():
    image = Image.fromarray(np.array([[-1000, 0, 1000]], np.int32))
    np.testing.assert_array_equal(_gray(load_image(hostile.encode(image, "TIFF"))),
                                  [[0, 127, 255]])


@pytest.mark.parametrize("values, expected", [
    ([[0.0, 0.5, 1.0]], [[0, 128, 255]]),  # Unit range: times 255.
    ([[0.0, 100.0, 255.0]], [[0, 100, 255]]),  # Already 0..255.
    ([[-2.0, 0.0, 2.0]], [[0, 128, 255]]),  # Anything else: min..max.
    ([[np.nan, 0.25, 1.0]], [[0, 64, 255]]),  # NaN is 0.
])
def test_float_image_is_scaled_sensibly(values, expected):
    image = Image.fromarray(np.array(values, np.float32))
    assert image.mode == "F"
    np.testing.assert_array_equal(_gray(load_image(hostile.encode(image, "TIFF"))), expected)


def test_alpha_is_composited_on_white():
    rgba = np.array([[[255, 0, 0, 255], [255, 0, 0, 0], [0, 0, 0, 128], [0, 0, 255, 51]]],
                    np.uint8)
    out = load_image(hostile.encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    expected = [[[255, 0, 0], [255, 255, 255], [127, 127, 127], [204, 204, 255]]]
    np.testing.assert_array_equal(out, expected)


def test_gray_with_alpha_is_composited_on_white():
    la = Image.fromarray(np.array([[[0, 255], [0, 0], [100, 255]]], np.uint8), "LA")
    np.testing.assert_array_equal(_gray(load_image(hostile.encode(la, "PNG"))),
                                  [[0, 255, 100]])


def test_palette_with_transparent_index_is_composited_on_white():
    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 200, 0, 0])
    palette.putdata([0, 1])
    out = load_image(hostile.encode(palette, "PNG", transparency=0))
    np.testing.assert_array_equal(out, [[[255, 255, 255], [200, 0, 0]]])


def test_palette_gif_gives_its_colours():
    colours = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [250, 250, 10]]], np.uint8)
    image = Image.fromarray(colours).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert image.mode == "P"
    np.testing.assert_array_equal(load_image(hostile.encode(image, "GIF")), colours)


def test_grayscale_and_bilevel_become_gray_rgb():
    gray = np.array([[0, 50, 255]], np.uint8)
    np.testing.assert_array_equal(_gray(load_image(hostile.encode(gray, "PNG"))), gray)
    bilevel = Image.fromarray(np.array([[0, 255, 0]], np.uint8)).convert("1")
    np.testing.assert_array_equal(_gray(load_image(hostile.encode(bilevel, "PNG"))),
                                  [[0, 255, 0]])


def test_cmyk_jpeg_becomes_rgb():
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:8] = (30, 200, 40)
    rgb[8:] = (220, 30, 30)
    cmyk = Image.fromarray(rgb).convert("CMYK")
    data = hostile.encode(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = load_image(data).astype(int)
    assert np.abs(out[2, 2] - (30, 200, 40)).max() <= 8
    assert np.abs(out[13, 13] - (220, 30, 30)).max() <= 8


def test_cmyk_tiff_is_exact():
    rgb = np.array([[[30, 200, 40], [0, 0, 0], [255, 255, 255]]], np.uint8)
    data = hostile.encode(Image.fromarray(rgb).convert("CMYK"), "TIFF")
    np.testing.assert_array_equal(load_image(data), rgb)


def test_ycbcr_and_lab_become_rgb():
    rgb = np.full((8, 8, 3), (30, 200, 40), np.uint8)
    ycbcr = hostile.encode(Image.fromarray(rgb).convert("YCbCr"), "JPEG", quality=95)
    assert np.abs(load_image(ycbcr).astype(int) - rgb).max() <= 8
    lab = Image.new("LAB", (2, 2), (50 * 255 // 100, 128, 128))  # Mid gray.
    out = _gray(load_image(hostile.encode(lab, "TIFF")))
    assert 100 < out.min() <= out.max() < 140


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_is_applied(orientation):
    data = hostile.exif_rotated_jpeg_bytes(orientation)
    assert Image.open(io.BytesIO(data)).size == hostile.UPRIGHT_SIZE[::-1]  # Stored sideways.
    out = load_image(data).astype(int)
    width, height = hostile.UPRIGHT_SIZE
    assert out.shape == (height, width, 3)
    assert np.abs(out[2, width // 2] - hostile.UPRIGHT_TOP).max() <= 10
    assert np.abs(out[-3, width // 2] - hostile.UPRIGHT_BOTTOM).max() <= 10


def test_animated_gif_gives_its_first_frame():
    out = load_image(hostile.animated_gif_bytes())
    assert (out == hostile.ANIMATED_FIRST).all()


def test_animated_webp_gives_its_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((0, 0, 255), (255, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    np.testing.assert_array_equal(load_image(buffer.getvalue()), np.asarray(frames[0]))


def test_png_named_jpg_loads(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(hostile.encode(np.zeros((3, 4, 3), np.uint8), "PNG"))
    assert load_image(path).shape == (3, 4, 3)


def test_extreme_aspect_ratios_and_single_pixel():
    assert load_image(hostile.encode(np.zeros((20, 2000, 3), np.uint8), "PNG")).shape == (
        20, 2000, 3)
    one = load_image(hostile.encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"))
    np.testing.assert_array_equal(one, [[[1, 2, 3]]])


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert _reason(path) == "empty file (0 bytes)"
    assert _reason(b"") == "empty file (0 bytes)"


def test_text_named_as_image():
    assert _reason(b"hello, this is a text file\nwith two lines\n") == (
        "not an image (looks like text)")
    assert "HTML" in _reason(b"<!DOCTYPE html><html><body>404</body></html>")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF"])
def test_truncated_images_are_errors(fmt):
    pixels = np.random.default_rng(2).integers(0, 256, (32, 32, 3), np.uint8)
    data = hostile.encode(pixels, fmt)
    assert _reason(data[:len(data) // 2]).startswith("truncated or corrupt image")


def test_truncated_jpeg_is_not_silently_padded():
    assert not ImageFile.LOAD_TRUNCATED_IMAGES  # We rely on Pillow's default.
    reason = _reason(hostile.truncated_jpeg_bytes(np.random.default_rng(3)))
    assert reason.startswith("truncated or corrupt image: ") and "truncated" in reason[27:]


def test_unsupported_formats_are_named():
    assert _reason(bytes(range(256)) * 4).startswith("unsupported image format")
    assert "HEIC" in _reason(b"\x00\x00\x00\x18ftypheic" + bytes(32))
    assert "PDF" in _reason(b"%PDF-1.7\n" + bytes(32))
    # A format Pillow reads but we do not expose to untrusted files.
    assert _reason(hostile.encode(np.zeros((4, 4, 3), np.uint8), "PPM")).startswith(
        "unsupported image format")


@pytest.mark.parametrize("width, height", [(0, 10), (10, 0)])
def test_zero_dimension_is_an_error(width, height):
    assert "zero width or height" in _reason(_png_with_size(width, height))


def test_bomb_is_refused_from_the_header_without_decoding(monkeypatch):
    calls = []
    original = ImageFile.ImageFile.load

    def spy(self):
        calls.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    reason = _reason(hostile.bomb_png_bytes(40000, 40000))
    assert reason.startswith("image too large: 40000x40000 pixels")
    assert "50,000,000" in reason
    assert calls == []
    load_image(hostile.encode(np.zeros((2, 2, 3), np.uint8), "PNG"))
    assert calls and set(calls) == {(2, 2)}  # The spy does see real decodes.


def test_max_pixels_is_per_call():
    data = hostile.encode(np.zeros((10, 10, 3), np.uint8), "PNG")
    assert _reason(data, max_pixels=99) == (
        "image too large: 10x10 pixels (limit 99); resize it or raise max_pixels")
    assert load_image(data, max_pixels=100).shape == (10, 10, 3)


def test_pillow_global_limit_is_untouched():
    before = Image.MAX_IMAGE_PIXELS
    _reason(hostile.bomb_png_bytes(40000, 40000))
    load_image(hostile.encode(np.zeros((2, 2, 3), np.uint8), "PNG"))
    assert Image.MAX_IMAGE_PIXELS == before


def test_file_system_failures(tmp_path):
    assert _reason(tmp_path / "missing.jpg") == "file not found"
    assert "folder" in _reason(tmp_path)
    link = tmp_path / "link.jpg"
    link.symlink_to(tmp_path / "gone.jpg")
    assert _reason(link) == "broken symbolic link"


def test_error_carries_the_path(tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageError) as caught:
        load_image(path)
    assert caught.value.path == str(path)
    assert str(path) in str(caught.value)


def test_a_resized_white_image_stays_a_valid_image():
    # Antialiased resizing overshoots 255 by rounding (255.00005 for this shape); what
    # comes out must still pass the pixel rule that explain and inspect apply.
    from transferkit.data.pipeline import resize

    white = np.full((37, 53, 3), 255, np.uint8)
    resized = resize(white, 16).numpy()
    assert resized.max() == 255.0
    check_pixels(resized)
