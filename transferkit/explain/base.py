"""The one base class every explanation method derives from.

`Explainer` does what all methods share, once: it checks the input batch, builds the
gradient graph (`TracedGraph`: a `tf.function` with a fixed input signature, traced on
first use and never again), picks the classes to explain, and turns each method's raw
map into a heat map `[N, H, W]` in [0, 1] at the input's resolution. A method only
implements `_explain`, which returns raw (unnormalized, possibly low-resolution) maps.

Tracing a large backbone's gradient takes seconds; `make_explainers` builds several
methods for one model that share one traced graph.

Class scores: gradient methods differentiate the *pre-softmax logit* of the class, as in
the Grad-CAM and Integrated Gradients papers: a softmax probability near 1 saturates, so
its gradient vanishes, and it also mixes in every other class. When the model's output
layer is a softmax `Dense` (the transferkit classifier's `predictions`), the logit is
recomputed from its input, kernel and bias; any other output is used as the score as is.

The model's input is raw 0-255 RGB (preprocessing is a layer inside the model), so
gradients are taken with respect to raw pixels.
"""

from __future__ import annotations

from typing import Callable, ClassVar, Sequence

import keras
import numpy as np
import tensorflow as tf

from transferkit.errors import ConfigError, ImageError


class Explainer:
    """Base class: heat maps `[N, H, W]` in [0, 1] for a batch of raw images.

    Args:
        model: A Keras classifier mapping raw RGB `[N, H, W, 3]` in [0, 255] to class
            scores `[N, C]` (a transferkit classifier, or any model with that contract).
        layer_name: Layer whose activations a CAM method weighs. Default: the last
            convolutional feature map (`feature_layer_name(model)`) when the model has a
            `head_pool` layer, else the last layer with a 4-D output. Methods that
            explain input pixels directly (`uses_layer = False`) take no layer.
        batch_size: Most images (or perturbed copies of an image) run through the
            model at once; bounds memory, not the result.

    Raises:
        ConfigError: Unknown layer, a layer without a 4-D output, a layer given to a
            pixel-space method, or a model whose input is not `[N, H, W, 3]`.
    """

    name: ClassVar[str] = ""
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
        self._traced = TracedGraph(model, self.layer_name)  # see make_explainers

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
        classes = self._check_classes(class_indices, len(x))
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
        out = self._traced.backward(tf.convert_to_tensor(images, tf.float32),
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
        return np.concatenate([np.asarray(self.model.predict_on_batch(
            images[i:i + self.batch_size])) for i in range(0, len(images), self.batch_size)])

    def _resolve_classes(self, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Replaces -1 by the image's top prediction (methods that perturb the input
        must fix the class on the clean image first)."""
        classes = np.asarray(classes, np.int32).copy()
        top = classes < 0
        if top.any():
            # The traced graph, not model.predict: no second graph to trace.
            classes[top] = self._gradients(images[top], classes[top])[2]
        return classes

    def _check_classes(self, class_indices: int | Sequence[int] | None, n: int) -> np.ndarray:
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
        bad = values[(values < 0) | (values >= self.num_classes)]
        if bad.size:
            raise ConfigError(f"class index {int(bad[0])} is out of range: the model has "
                              f"{self.num_classes} classes (0 to {self.num_classes - 1})")
        return values.astype(np.int32)


class TracedGraph:
    """The traced gradient computation of one model's class logits.

    Args:
        model: The classifier.
        layer_name: Feature-map layer to differentiate with respect to (None: none).
        input_gradients: Differentiate with respect to the input pixels too. One
            backward pass gives both, but it then runs through the whole network
            instead of stopping at the layer (for a CAM method alone, that is waste).

    Attributes:
        backward: `tf.function(images [N, H, W, 3] float32, classes [N] int32) -> dict`
            with `activations` (of the layer, or the images when there is none),
            `activation_gradients`, `input_gradients` (when asked for), `classes`
            (-1 replaced by the top prediction) and `scores` (the class logits): one
            forward and one backward pass. Built once with a fixed signature (batch
            dimension free), so it is traced on first use and never again.
    """

    def __init__(self, model: keras.Model, layer_name: str | None,
                 input_gradients: bool = False):
        self.layer_name = layer_name
        self.input_gradients = input_gradients or layer_name is None
        self._scores = _score_model(model, layer_name)
        shape = tuple(model.input_shape)
        image_spec = tf.TensorSpec((None, shape[1], shape[2], 3), tf.float32)
        class_spec = tf.TensorSpec((None,), tf.int32)
        self.backward = tf.function(self._backward, input_signature=[image_spec, class_spec])

    def _backward(self, images: tf.Tensor, classes: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(images)
            activations, logits = self._scores(images, training=False)
            top = tf.argmax(logits, axis=-1, output_type=tf.int32)
            classes = tf.where(classes < 0, top, classes)
            scores = tf.gather(logits, classes, batch_dims=1)
        # Images are independent (inference mode: no batch statistics), so the gradient
        # of the summed scores is each image's own gradient.
        sources = [activations, images] if self.input_gradients else [activations]
        grads = tape.gradient(scores, sources)
        out = {"activations": activations, "activation_gradients": grads[0],
               "classes": classes, "scores": scores}
        if self.input_gradients:
            out["input_gradients"] = grads[-1]
        return out


def make_explainers(model: keras.Model, methods: str | Sequence[str] | None = None,
                    layer_name: str | None = None,
                    options: dict[str, dict] | None = None) -> dict[str, Explainer]:
    """Explainers of several methods for one model, sharing one traced graph.

    Tracing a large backbone's gradient takes seconds, as long as explaining dozens of
    images; the explainers built here share a single graph (one backward pass gives the
    feature-map gradients the CAM methods need and the pixel gradients of the others).

    Args:
        model: The classifier.
        methods: Method names (None or "all": every method).
        layer_name: Layer for the CAM methods (default as in `Explainer`).
        options: Per-method constructor arguments, e.g. `{"scorecam": {"top_k": 16}}`.

    Returns:
        Method name → explainer, in the order asked.

    Raises:
        ConfigError: Unknown method or layer, or bad options.
    """
    from transferkit.explain import METHODS  # the registry imports this module

    options = options or {}
    explainers = {}
    for name in resolve_methods(methods):
        cls = METHODS[name]
        layer = {"layer_name": layer_name} if cls.uses_layer and layer_name else {}
        explainers[name] = cls(model, **layer, **options.get(name, {}))
    if len(explainers) > 1:
        # Every CAM explainer here has the same layer (None when there is none).
        layer = next((e.layer_name for e in explainers.values() if e.uses_layer), None)
        pixels = any(not e.uses_layer for e in explainers.values())
        shared = TracedGraph(model, layer, input_gradients=pixels)
        for explainer in explainers.values():
            explainer._traced = shared
    return explainers


def check_images(images: object, size: tuple[int | None, int | None] = (None, None)
                 ) -> np.ndarray:
    """Validates a batch of raw RGB images and returns it as float32.

    Args:
        images: Candidate `[N, H, W, 3]` array (uint8 or float, 0-255).
        size: The model's `(H, W)`; None entries accept any size.

    Returns:
        float32 `[N, H, W, 3]`.

    Raises:
        ImageError: Not a numeric array of that shape, or not finite.
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
    if array.dtype.kind not in "uif":
        raise ImageError(f"expected a numeric array of images [N, H, W, 3], got dtype "
                         f"{array.dtype}; {hint}")
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
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ImageError("images contain NaN or infinite values")
    return array


def resolve_layer(model: keras.Model, layer_name: str | None) -> str:
    """The layer a CAM method uses: `layer_name`, checked, or the default.

    Raises:
        ConfigError: No such layer, or its output is not a 4-D feature map.
    """
    names = [layer.name for layer in model.layers if _is_feature_map(layer)]
    if layer_name is None:
        if "head_pool" in {layer.name for layer in model.layers}:
            from transferkit.model import feature_layer_name
            return feature_layer_name(model)
        if not names:
            raise ConfigError("the model has no layer with a 4-D (feature map) output "
                              "to explain")
        return names[-1]
    try:
        layer = model.get_layer(layer_name)
    except ValueError:
        raise ConfigError(f"no layer named {layer_name!r} in {model.name}; the last "
                          f"feature-map layers are: {', '.join(names[-8:])}") from None
    if not _is_feature_map(layer):
        raise ConfigError(f"layer {layer_name!r} has no 4-D (feature map) output; the last "
                          f"feature-map layers are: {', '.join(names[-8:])}")
    return layer_name


def resolve_methods(methods: str | Sequence[str] | None) -> list[str]:
    """Method names, checked; None, "all" or ["all"] mean every method.

    Raises:
        ConfigError: An unknown name (the message lists the known ones).
    """
    from transferkit.explain import METHODS  # the registry imports this module

    if methods is None or methods == "all" or list(methods) == ["all"]:
        return list(METHODS)
    names = [methods] if isinstance(methods, str) else list(methods)
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        what = f"unknown explanation method {unknown[0]!r}" if unknown else \
            "no explanation method given"
        raise ConfigError(f"{what}; choose from: {', '.join(METHODS)} (or all)")
    return list(dict.fromkeys(names))


def open_run(run_dir):
    """`load_run(run_dir)`, or `run_dir` itself when it already is a `Run`."""
    from transferkit.run import Run, load_run
    return run_dir if isinstance(run_dir, Run) else load_run(run_dir)


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


def _is_feature_map(layer: keras.layers.Layer) -> bool:
    try:
        return len(layer.output.shape) == 4
    except (AttributeError, ValueError):  # unused or shared layers have no single output
        return False


def _score_model(model: keras.Model, layer_name: str | None
                 ) -> Callable[..., tuple[tf.Tensor, tf.Tensor]]:
    """A function images → `(activations of layer_name, class logits)`; the activations
    are the images themselves when `layer_name` is None."""
    output_layer = model.outputs[0]._keras_history.operation
    softmax_dense = (isinstance(output_layer, keras.layers.Dense)
                     and getattr(output_layer.activation, "__name__", "") == "softmax")
    head_input = output_layer.input if softmax_dense else model.outputs[0]
    outputs = head_input if layer_name is None else \
        [model.get_layer(layer_name).output, head_input]
    inner = keras.Model(model.inputs, outputs)

    def scores(images, training=False):
        outputs = inner(images, training=training)
        activations, head = (images, outputs) if layer_name is None else outputs
        if softmax_dense:
            head = keras.ops.matmul(head, output_layer.kernel)
            if output_layer.use_bias:
                head = head + output_layer.bias
        return activations, head

    return scores
