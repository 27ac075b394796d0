"""The one base class every explanation method derives from.

`Explainer` does what all methods share, once: it checks the input batch, picks the
classes to explain, gets the gradients from the model's `TracedGraph` (built on first
use), and turns each method's raw map into a heat map `[N, H, W]` in [0, 1] at the
input's resolution. A method only implements `_explain`, which returns raw
(unnormalized, possibly low-resolution) maps.

Tracing a large backbone's gradient takes seconds; `make_explainers` (in the registry)
builds several methods for one model that share one traced graph (`Explainer.use_graph`).
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import keras
import numpy as np
import tensorflow as tf

from transferkit.data.images import check_pixels
from transferkit.errors import ConfigError, ImageError
from transferkit.explain.graph import TracedGraph, resolve_layer
from transferkit.inference import in_batches


class Explainer:
    """Base class: heat maps `[N, H, W]` in [0, 1] for a batch of raw images.

    Args:
        model: A Keras classifier mapping raw RGB `[N, H, W, 3]` in [0, 255] to class
            scores `[N, C]` (a transferkit classifier, or any model with that contract).
        layer_name: Layer whose activations a CAM method weighs. Default: the last
            convolutional feature map of a transferkit classifier, else the last layer
            with a 4-D output. Methods that explain input pixels directly
            (`uses_layer = False`) take no layer.
        batch_size: Most images (or perturbed copies of an image) run through the
            model at once; bounds memory, not the result.

    Raises:
        ConfigError: Unknown layer, a layer without a 4-D output, a layer given to a
            pixel-space method, or a model whose input is not `[N, H, W, 3]`.
    """

    name: ClassVar[str] = ""   # the registry's and the CLI's name, e.g. "gradcam"
    label: ClassVar[str] = ""  # for people, e.g. "Grad-CAM"
    uses_layer: ClassVar[bool] = True

    def __init__(self, model: keras.Model, layer_name: str | None = None,
                 batch_size: int = 32):
        if not self.uses_layer and layer_name is not None:
            raise ConfigError(f"{self.name} explains input pixels and takes no layer_name "
                              f"(got {layer_name!r})")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.batch_size = int(batch_size)
        shape = tuple(model.input_shape)
        if len(shape) != 4 or shape[-1] != 3:
            raise ConfigError(f"cannot explain a model with input shape {shape}: expected "
                              "images [N, H, W, 3]")
        self.input_size: tuple[int | None, int | None] = (shape[1], shape[2])
        self.num_classes = int(model.output_shape[-1])
        self.layer_name = (resolve_layer(model, layer_name) if self.uses_layer else None)
        self._graph: TracedGraph | None = None  # built on first use, or shared

    @property
    def graph(self) -> TracedGraph:
        """The traced gradient graph: this explainer's own, built on first use, or the
        one given to `use_graph`."""
        if self._graph is None:
            self._graph = TracedGraph(self.model, self.layer_name)
        return self._graph

    def use_graph(self, graph: TracedGraph) -> None:
        """Uses `graph` (e.g. one shared by several methods) instead of building one.

        Raises:
            ConfigError: `graph` is of another model, of another layer, or lacks the
                pixel gradients this method needs.
        """
        if graph.model is not self.model:
            raise ConfigError(f"{self.name}: the graph is of another model; build it "
                              "from this explainer's model")
        if self.uses_layer and graph.layer_name != self.layer_name:
            raise ConfigError(f"{self.name} explains layer {self.layer_name!r} but the "
                              f"graph differentiates {graph.layer_name!r}")
        if not self.uses_layer and not graph.input_gradients:
            raise ConfigError(f"{self.name} needs pixel gradients: build the graph with "
                              "input_gradients=True")
        self._graph = graph

    def __call__(self, images: np.ndarray, class_indices: int | Sequence[int] | None = None
                 ) -> np.ndarray:
        """Explains one class per image.

        Args:
            images: Raw RGB `[N, H, W, 3]` (uint8 or float, 0-255) at the model's input
                size.
            class_indices: The class to explain: one int for every image, one per image,
                or None for each image's top prediction.

        Returns:
            float32 heat maps `[N, H, W]` in [0, 1] (1 = most important; a map with no
            signal at all is all zeros).

        Raises:
            ImageError: `images` is not a batch of RGB images of the model's input size.
            ConfigError: A class index is out of range, or their count is not N.
        """
        x = check_images(images, self.input_size)
        classes = check_classes(class_indices, len(x), self.num_classes)
        height, width = x.shape[1:3]
        maps = []
        for i in range(0, len(x), self.batch_size):  # a loop: warnings keep their stack
            maps.append(self._explain(x[i:i + self.batch_size],
                                      classes[i:i + self.batch_size]))
        if not maps:
            return np.zeros((0, height, width), np.float32)
        raw = tf.concat([tf.cast(m, tf.float32) for m in maps], axis=0)
        return normalize(upsample(raw, (height, width)))

    def _explain(self, images: np.ndarray, classes: np.ndarray) -> tf.Tensor | np.ndarray:
        """The method itself: raw maps `[n, h, w]` (any scale, any resolution).

        Args:
            images: float32 `[n, H, W, 3]`, at most `batch_size` images.
            classes: int32 `[n]`; -1 means "the top prediction".
        """
        raise NotImplementedError

    # Helpers for subclasses.

    def _gradients(self, images: np.ndarray, classes: np.ndarray
                   ) -> tuple[tf.Tensor, tf.Tensor, np.ndarray, np.ndarray]:
        """One forward + backward pass (see `TracedGraph`).

        Returns:
            `(activations, d score / d activations, classes, scores)`; for pixel-space
            methods the activations are the images. Classes of -1 become the top
            prediction, within the same pass.
        """
        out = self.graph.backward(tf.convert_to_tensor(images, tf.float32),
                                  tf.convert_to_tensor(classes, tf.int32))
        if self.uses_layer:
            activations, grads = out["activations"], out["activation_gradients"]
        else:
            activations, grads = tf.convert_to_tensor(images), out["input_gradients"]
        return activations, grads, out["classes"].numpy(), out["scores"].numpy()

    def _probabilities(self, images: np.ndarray) -> np.ndarray:
        """The model's own output `[n, C]` (probabilities), `batch_size` at a time."""
        # predict_on_batch reuses the model's compiled predict function, shared by every
        # explainer of the same model.
        return in_batches(self.model.predict_on_batch, images, self.batch_size,
                          self.num_classes)

    def _resolve_classes(self, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Replaces -1 by the image's top prediction (methods that perturb the input
        must fix the class on the clean image first)."""
        classes = np.asarray(classes, np.int32).copy()
        top = classes < 0
        if top.any():
            # The traced graph, not model.predict: no second graph to trace.
            classes[top] = self._gradients(images[top], classes[top])[2]
        return classes


def check_images(images: object, size: tuple[int | None, int | None] = (None, None)
                 ) -> np.ndarray:
    """Validates a batch of raw RGB images and returns it as float32.

    The pixel values follow `transferkit.data.images.check_pixels` (uint8, or numbers
    in 0-255; floats all in [0, 1] were scaled and are refused).

    Args:
        images: Candidate `[N, H, W, 3]` array (uint8 or float, 0-255).
        size: The model's `(H, W)`; None entries accept any size.

    Returns:
        float32 `[N, H, W, 3]`.

    Raises:
        ImageError: Not an array of that shape, or not 0-255 pixel values.
    """
    hint = ("load files with transferkit.data.images.load_image and resize them, e.g. "
            "with Run.preprocess")
    if isinstance(images, (str, bytes, bytearray)) or hasattr(images, "__fspath__"):
        raise ImageError(f"expected a batch of images [N, H, W, 3], got a "
                         f"{type(images).__name__} ({images!r:.60}); {hint}")
    try:
        array = np.asarray(images)
    except (ValueError, TypeError) as e:  # ragged lists
        raise ImageError(f"expected a batch of images [N, H, W, 3] of one size ({e})"
                         ) from None
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        raise ImageError(f"expected a batch [N, H, W, 3], got one image of shape "
                         f"{array.shape}; add a batch axis (images[None])")
    if array.ndim != 4:
        raise ImageError(f"expected a batch of RGB images [N, H, W, 3], got an array of "
                         f"shape {array.shape}")
    if array.shape[-1] != 3:
        raise ImageError(f"expected 3 colour channels (RGB), got {array.shape[-1]} "
                         f"(shape {array.shape}); convert grayscale or RGBA images to RGB")
    height, width = size
    if (height is not None and array.shape[1] != height) or \
            (width is not None and array.shape[2] != width):
        raise ImageError(f"images are {array.shape[1]}x{array.shape[2]} but the model "
                         f"takes {height}x{width}; {hint}")
    return np.asarray(check_pixels(array), np.float32)


def check_classes(class_indices: int | Sequence[int] | None, n: int, num_classes: int
                  ) -> np.ndarray:
    """Checked class indices for `n` images; -1 marks "the top prediction".

    Args:
        class_indices: One int for every image, one per image, or None (top prediction).
        n: Number of images.
        num_classes: Classes of the model.

    Returns:
        int32 `[n]`.

    Raises:
        ConfigError: Not integers, not one per image, or out of range.
    """
    if class_indices is None:
        return np.full(n, -1, np.int32)
    values = np.asarray(class_indices)
    if values.dtype.kind not in "iu" and not (
            values.dtype.kind == "f" and np.all(values == np.round(values))):
        raise ConfigError(f"class indices must be integers, got {class_indices!r}")
    values = np.broadcast_to(values.astype(np.int64), (n,)) if values.ndim == 0 \
        else values.astype(np.int64)
    if values.shape != (n,):
        raise ConfigError(f"got {values.size} class indices for {n} images; give one "
                          "per image, a single index, or None for the top prediction")
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size:
        raise ConfigError(f"class index {int(bad[0])} is out of range: the model has "
                          f"{num_classes} classes (0 to {num_classes - 1})")
    return values.astype(np.int32)


def upsample(maps: tf.Tensor | np.ndarray, size: tuple[int, int]) -> tf.Tensor:
    """Bilinear resize of maps `[N, h, w]` to `[N, *size]` (identity when equal)."""
    maps = tf.convert_to_tensor(maps, tf.float32)
    if tuple(maps.shape[1:3]) == tuple(size):
        return maps
    return tf.image.resize(maps[..., None], size, method="bilinear")[..., 0]


def normalize(maps: tf.Tensor | np.ndarray) -> np.ndarray:
    """Scales each map to [0, 1] (min to 0, max to 1); a constant map becomes zeros."""
    maps = np.nan_to_num(np.asarray(maps, np.float32))
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    # A constant map carries no ranking: report "nothing stands out" (zeros), not noise.
    return np.where(span > 1e-12, (maps - low) / np.maximum(span, 1e-12), 0.0
                    ).astype(np.float32)
