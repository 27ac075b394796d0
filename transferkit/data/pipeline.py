"""tf.data input pipelines: decode (Pillow), resize, augment, batch, prefetch.

Decoding goes through `transferkit.data.images.load_image` (Pillow), which handles every
format, EXIF rotation and colour mode the audit accepted; TensorFlow's own decoders do not
(WebP, TIFF, CMYK JPEG, 16-bit PNG, EXIF). Resizing is `resize` below, the one function
the exported SavedModel also uses, so training and serving see identical pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from transferkit.data.images import load_image
from transferkit.errors import ImageError


def resize(images: tf.Tensor, size: int) -> tf.Tensor:
    """Resizes an image or a batch to `size`x`size` (bilinear, antialiased), float32 0-255.

    The aspect ratio is not kept (as in `keras.utils.image_dataset_from_directory`):
    cropping could cut off the object, squeezing only distorts it a little.
    """
    images = tf.cast(images, tf.float32)
    resized = tf.image.resize(images, (size, size), method="bilinear", antialias=True)
    # The antialiasing weights sum to 1 only up to rounding: a white image comes back at
    # 255.00005, which `check_pixels` (explain, inspect) rightly rejects.
    return tf.clip_by_value(resized, 0.0, 255.0)


def _load(path: bytes) -> tuple[np.ndarray, bool]:
    try:
        return load_image(path.decode("utf-8")), True
    except ImageError:
        # The audit decoded this file; it changed since. Drop it rather than crash.
        return np.zeros((1, 1, 3), np.uint8), False


def image_dataset(paths: Sequence[str | Path], labels: Sequence[int] | None, size: int,
                  batch_size: int, shuffle_seed: int | None = None,
                  augment_seed: int | None = None,
                  workers: int = 2, first_batch: int = 0) -> tf.data.Dataset:
    """A batched dataset of `(images, labels)` (or images alone when `labels` is None).

    Args:
        paths: Image files.
        labels: Class indices, or target rows `[N, C]`, one per path; or None.
        size: Output side in pixels.
        batch_size: Batch size.
        shuffle_seed: Shuffle each epoch with this seed; None keeps the order.
        augment_seed: Augment every batch (see `augment`), seeded by this and the
            batch's position; None: no augmentation.
        workers: Images decoded in parallel.
        first_batch: Position of the first batch in a longer sequence (its augmentation
            seed): a list augmented in pieces then gets the same images as augmented
            whole.

    Returns:
        The dataset; images are float32 raw RGB in [0, 255].
    """
    paths = [str(p) for p in paths]
    if labels is not None:  # class indices, or target rows (soft ones stay fractions)
        labels = np.asarray(labels)
        labels = labels.astype(np.float32 if labels.dtype.kind == "f" else np.int32)
    columns = (paths,) if labels is None else (paths, labels)
    ds = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle_seed is not None:
        ds = ds.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)

    def load(path, *label):
        image, ok = tf.numpy_function(_load, [path], (tf.uint8, tf.bool), stateful=False)
        image.set_shape((None, None, 3))
        return (resize(image, size), ok) + label

    ds = ds.map(load, num_parallel_calls=workers, deterministic=True)
    ds = ds.filter(lambda image, ok, *label: ok)
    ds = ds.map(lambda image, ok, *label: (image,) + label if label else image)
    ds = ds.batch(batch_size)
    if augment_seed is not None:
        # Batch i gets seed (augment_seed, i); reshuffling pairs images with new seeds
        # each epoch, and a cached view is reproducible.
        ds = ds.enumerate(start=first_batch).map(
            lambda i, batch: _augment_element(batch, tf.stack([augment_seed, i])),
            num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _augment_element(batch, seed):
    if isinstance(batch, tuple):
        return (augment(batch[0], tf.cast(seed, tf.int32)),) + batch[1:]
    return augment(batch, tf.cast(seed, tf.int32))


def augment(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random resized crop, horizontal flip and colour jitter of a batch, in one pass.

    The Inception-style crop (55-100% of the area, aspect 3/4-4/3) teaches scale and
    position invariance, the flip mirror symmetry; brightness and contrast jitter cover
    exposure. One `crop_and_resize` call does crop, flip (a reversed box) and resize:
    several times cheaper than chaining Keras' random zoom/shift/rotation layers, which
    matters because augmented copies are pushed through the backbone on the CPU.
    Stateless randomness: the same seed always gives the same batch.

    Args:
        images: float32 `[N, S, S, 3]` in [0, 255].
        seed: int32 `[2]` stateless seed.

    Returns:
        The augmented batch, same shape and range.
    """
    n, size = tf.shape(images)[0], tf.shape(images)[1:3]
    seeds = tf.random.experimental.stateless_split(seed, 7)

    def uniform(i, low, high):
        return tf.random.stateless_uniform([n], seeds[i], low, high)

    area = uniform(0, 0.55, 1.0)
    aspect = tf.exp(uniform(1, np.log(3 / 4), np.log(4 / 3)))
    h = tf.minimum(tf.sqrt(area / aspect), 1.0)
    w = tf.minimum(tf.sqrt(area * aspect), 1.0)
    y0 = uniform(2, 0.0, 1.0) * (1.0 - h)
    x0 = uniform(3, 0.0, 1.0) * (1.0 - w)
    flip = uniform(4, 0.0, 1.0) < 0.5
    x_start, x_end = tf.where(flip, x0 + w, x0), tf.where(flip, x0, x0 + w)
    boxes = tf.stack([y0, x_start, y0 + h, x_end], axis=1)
    out = tf.image.crop_and_resize(images, boxes, tf.range(n), size)
    mean = tf.reduce_mean(out, axis=[1, 2, 3], keepdims=True)
    contrast = tf.reshape(uniform(5, 0.8, 1.2), [-1, 1, 1, 1])
    brightness = tf.reshape(uniform(6, -20.0, 20.0), [-1, 1, 1, 1])
    return tf.clip_by_value((out - mean) * contrast + mean + brightness, 0.0, 255.0)
