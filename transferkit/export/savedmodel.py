"""The SavedModel: two signatures that resize (and decode) inside the graph.

Signatures (the names are part of the contract; they never change):

- `serving_default`: `images`, uint8 `[N, H, W, 3]` RGB of any size. Resized inside
  with `transferkit.data.pipeline.resize`, the function training used.
- `serve_bytes`: `image_bytes`, string `[N]`: encoded JPEG, PNG, GIF, BMP or WebP files,
  decoded and resized one by one inside the graph (`decode_image_bytes`).

Both return `probabilities` float32 `[N, C]`, `class_index` int64 `[N]` and
`class_name` string `[N]`; a run with trust (`trust.json`) adds `unknown_score` float32
`[N]` (higher: less like the training images), `is_unknown` bool `[N]` ("not one of my
classes") and `abstained` bool `[N]` ("not sure"), from `transferkit.trust.graph.
TrustGraph` with the run's thresholds inside the graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import tensorflow as tf

from transferkit.data.pipeline import resize

TRUST_DOC = {"unknown_score": "float32 [N], higher: less like the training images",
             "is_unknown": "bool [N], unknown_score above trust.json's unknown_threshold",
             "abstained": "bool [N], max probability below trust.json's "
                          "abstain_threshold (not sure)"}

# One endpoint of an `ExportArchive`: its function and input signature.
Endpoint = tuple[Callable[..., Any], Sequence[tf.TensorSpec]]


def write_saved_model(model: keras.Model, image_size: int, labels_file: Path,
                      config_file: Path, directory: Path, trust: Any = None) -> None:
    """Writes the SavedModel with its two signatures (see the module docstring).

    The class names and the training options travel inside as SavedModel assets
    (`assets/labels.txt`, `assets/config.json`): each is the source of a tracked lookup
    table, which is how `keras.export.ExportArchive` carries files. The labels table
    also maps `class_index` to `class_name` inside the graph.

    Args:
        model: The classifier (float32 `[N, S, S, 3]` raw RGB → probabilities).
        image_size: S, the side images are resized to.
        labels_file: Class names, one a line, in output order.
        config_file: The run's `config.json`.
        directory: The SavedModel folder to create.
        trust: The run's `TrustGraph` (its outputs are added), or None.
    """
    labels = _line_table(labels_file)
    config = _line_table(config_file)

    def outputs(images: tf.Tensor) -> dict[str, tf.Tensor]:
        result = ({"probabilities": model(images, training=False)} if trust is None
                  else trust.outputs(images))
        class_index = tf.argmax(result["probabilities"], axis=-1, output_type=tf.int64)
        return {**result, "class_index": class_index,
                "class_name": labels.lookup(class_index)}

    def serve_images(images: tf.Tensor) -> dict[str, tf.Tensor]:
        # Without these checks an empty batch fails deep inside the model, unreadably;
        # the computation waits on them, else whichever op fails first is scheduled
        # first.
        check = tf.debugging.assert_positive(
            tf.shape(images)[:3], message="serving_default: `images` must hold at least "
            "one image, of at least 1x1 pixels")
        with tf.control_dependencies([check] if check is not None else []):
            return outputs(resize(tf.identity(images), image_size))

    def serve_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        check = tf.debugging.assert_positive(
            tf.size(image_bytes), message="serve_bytes: `image_bytes` must hold at least "
            "one encoded image")
        with tf.control_dependencies([check] if check is not None else []):
            image_bytes = tf.identity(image_bytes)
        images = tf.map_fn(
            lambda data: resize(decode_image_bytes(data), image_size), image_bytes,
            fn_output_signature=tf.TensorSpec((image_size, image_size, 3), tf.float32))
        return outputs(images)

    tracked = [model, labels, config] + ([] if trust is None else trust.tracked)
    write_archive(directory, tracked, {
        "serving_default": (serve_images, [
            tf.TensorSpec((None, None, None, 3), tf.uint8, name="images")]),
        "serve_bytes": (serve_bytes, [
            tf.TensorSpec((None,), tf.string, name="image_bytes")]),
    })


def decode_image_bytes(data: tf.Tensor) -> tf.Tensor:
    """Decodes one encoded image inside a TensorFlow graph, as training decodes it.

    JPEGs go through `tf.io.decode_jpeg` with `dct_method="INTEGER_ACCURATE"`: the
    default (`tf.io.decode_image`) uses libjpeg's fast, less accurate inverse DCT and
    differs from Pillow (training) by up to 4 levels per pixel on real photos; the
    accurate one gives Pillow's pixels exactly. PNG, GIF (first frame), BMP and WebP
    go through `tf.io.decode_image`. Unlike training (Pillow), the EXIF orientation is
    not applied and transparency is dropped rather than composited on white.

    Args:
        data: A scalar string tensor: the file's bytes.

    Returns:
        uint8 `[H, W, 3]` RGB.

    Raises:
        tf.errors.InvalidArgumentError: Not a JPEG, PNG, GIF, BMP or WebP file, or a
            corrupt one (when the graph runs).
    """
    image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False))
    return tf.ensure_shape(image, (None, None, 3))


def write_archive(directory: str | Path, tracked: Sequence[Any],
                  endpoints: dict[str, Endpoint]) -> None:
    """Writes a SavedModel of `endpoints` with `keras.export.ExportArchive`.

    Args:
        directory: The SavedModel folder to create.
        tracked: The model, and any lookup table its endpoints use.
        endpoints: Signature name → (function, input signature).
    """
    archive = keras.export.ExportArchive()
    for resource in tracked:
        archive.track(resource)
    for name, (fn, input_signature) in endpoints.items():
        archive.add_endpoint(name, fn, input_signature=list(input_signature))
    archive.write_out(str(directory), verbose=False)


def signature_doc(n_classes: int, trust: bool = False) -> dict[str, Any]:
    """The SavedModel's signatures in words, for `parity.json`."""
    outputs = {"probabilities": f"float32 [N, {n_classes}]", "class_index": "int64 [N]",
               "class_name": "string [N]", **(TRUST_DOC if trust else {})}
    return {
        "serving_default": {"inputs": {"images": "uint8 [N, H, W, 3] RGB, any size"},
                            "outputs": outputs},
        "serve_bytes": {"inputs": {"image_bytes": "string [N] encoded JPEG/PNG/GIF/BMP/"
                                                  "WebP"},
                        "outputs": outputs},
    }


def _line_table(path: Path) -> tf.lookup.StaticHashTable:
    """Line number (int64) → line (string) of a text file, which becomes an asset."""
    return tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            str(path), tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
            tf.string, tf.lookup.TextFileIndex.WHOLE_LINE),
        default_value="")
