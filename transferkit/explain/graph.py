"""The model side of every explanation: class logits, the layer to explain, one gradient.

`TracedGraph` is the one gradient computation the methods share: a `tf.function` with a
fixed input signature (traced on first use and never again) that runs one forward and one
backward pass and returns the class logits, the feature map of a layer and the gradients.

Class scores: gradient methods differentiate the *pre-softmax logit* of the class, as in
the Grad-CAM and Integrated Gradients papers: a softmax probability near 1 saturates, so
its gradient vanishes, and it also mixes in every other class. When the model's output
layer is a softmax `Dense` (the transferkit classifier's `predictions`), the logit is
recomputed from its input, kernel and bias; any other output is used as the score as is.

The model's input is raw 0-255 RGB (preprocessing is a layer inside the model), so
gradients are taken with respect to raw pixels.
"""

from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf

from transferkit.errors import ConfigError
from transferkit.model import feature_layer_name, head_logits, is_transferkit_classifier


class TracedGraph:
    """The traced gradient computation of one model's class logits.

    Building it builds a Keras model for the scores; tracing happens on the first call.

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
        self.model = model
        self.layer_name = layer_name
        self.input_gradients = input_gradients or layer_name is None
        self._scores = score_model(model, layer_name)
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


def resolve_layer(model: keras.Model, layer_name: str | None) -> str:
    """The layer a CAM method uses: `layer_name`, checked, or the default.

    Args:
        model: The classifier.
        layer_name: A layer with a 4-D output, or None: the last convolutional feature
            map of a transferkit classifier, else the last layer with a 4-D output.

    Returns:
        The layer's name.

    Raises:
        ConfigError: No such layer, or its output is not a 4-D feature map.
    """
    names = feature_map_layers(model)
    if layer_name is None:
        if is_transferkit_classifier(model):
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


def feature_map_layers(model: keras.Model) -> list[str]:
    """Names of the layers with a 4-D (spatial) output, the input excluded, in graph
    order: the choices of `resolve_layer` (and of the inspect views)."""
    return [layer.name for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer) and _is_feature_map(layer)]


def _is_feature_map(layer: keras.layers.Layer) -> bool:
    try:
        return len(layer.output.shape) == 4
    except (AttributeError, ValueError):  # unused or shared layers have no single output
        return False


def score_model(model: keras.Model, layer_name: str | None
                 ) -> Callable[..., tuple[tf.Tensor, tf.Tensor]]:
    """A function images → `(activations of layer_name, class logits)`.

    Shared by the explainers and the inspect views (class-logit objectives): the logits
    are the softmax head's pre-activation, recomputed from its input, because the
    gradient of a saturated softmax vanishes.

    Args:
        model: A classifier whose output is a softmax Dense (or any model: then its
            output is taken as the scores).
        layer_name: The layer whose activations come first; None: the images.

    Returns:
        `scores(images, training=False) -> (activations, logits)`.
    """
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
            head = head_logits(output_layer, head)
        return activations, head

    return scores
