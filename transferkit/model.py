"""The classifier graph: raw pixels → preprocessing → backbone → C-class head.

One *flat* functional graph: the backbone's layers are applied directly to the
preprocessed input (not wrapped as a nested Model), so gradients to any inner layer work
(Grad-CAM, saliency) and each block can be frozen or unfrozen on its own.

Layer names the rest of transferkit relies on: `preprocess`, `head_pool`,
`head_dropout`, `predictions`.
"""

from __future__ import annotations

import re
from typing import Sequence

import keras
from keras import ops

from transferkit.backbones import Backbone, load_pretrained, validate_size
from transferkit.errors import ConfigError

HEAD_LAYERS = ("head_pool", "head_dropout", "predictions")

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="transferkit")
class ImagePreprocessing(keras.layers.Layer):
    """Maps raw RGB in [0, 255] to what a `keras.applications` backbone expects.

    The same arithmetic as `keras.applications.imagenet_utils.preprocess_input`, as a
    serializable layer so that saved models carry it (and load with `safe_mode=True`).

    Args:
        mode: `"tf"`, `"caffe"`, `"torch"` or `"none"`.
    """

    def __init__(self, mode: str = "tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("tf", "caffe", "torch", "none"):
            raise ValueError(f"unknown preprocessing mode {mode!r}")
        self.mode = mode

    def call(self, x):
        x = ops.cast(x, "float32")
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_MEAN_BGR)
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN)
            std = ops.convert_to_tensor(_TORCH_STD)
            return (x / 255.0 - mean) / std
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def build_classifier(backbone: Backbone, num_classes: int, image_size: int,
                     weights: str | keras.Model | None = "imagenet",
                     dropout: float = 0.2) -> keras.Model:
    """Builds the flat classifier.

    Args:
        backbone: Registry entry.
        num_classes: Number of output classes C.
        image_size: Square input side in pixels.
        weights: `"imagenet"`, None (random), a path to a backbone weights file, or the
            standalone backbone already loaded (`load_pretrained`).
        dropout: Dropout rate before the dense softmax layer.

    Returns:
        A functional model mapping `float32 [N, image_size, image_size, 3]` raw RGB in
        [0, 255] to class probabilities `[N, C]`.
    """
    validate_size(backbone, image_size)
    # Load the pretrained weights first, on a standalone size-less copy: it always picks
    # the file Keras has cached (224 for MobileNets) and fails before anything is built.
    pretrained = load_pretrained(backbone, weights) if isinstance(weights, str) else weights

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = ImagePreprocessing(backbone.preprocessing, name="preprocess")(inputs)
    features = backbone.build(input_tensor=x, weights=None)
    if pretrained is not None:
        features.set_weights(pretrained.get_weights())
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(features.output)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    # float32 even under mixed precision: a float16 softmax rounds small probabilities
    # to 0 (calibration and the unknown score read them) and can overflow in the loss.
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions",
                                 dtype="float32")(x)
    return keras.Model(inputs, outputs, name=f"transferkit_{backbone.name}")


def rebuild_at_size(model: keras.Model, size: int | tuple[int, int]) -> keras.Model:
    """The same classifier, with the same weights, taking images of another size.

    Convolution weights do not depend on the input size, so the graph is cloned onto a
    new input (every layer rebuilt from its config, names kept) and the weights copied.
    Size-dependent padding (MobileNet's `ZeroPadding2D`) keeps the original's values.

    Args:
        model: A functional classifier (raw RGB `[N, H, W, 3]` in).
        size: The new side, or `(height, width)` (e.g. a photo's own size).

    Returns:
        A new model; `model` itself is untouched (the original is returned when the size
        is already its own).

    Raises:
        ConfigError: A size under 32 pixels, or a model whose graph fixes the size (a
            Flatten before a Dense layer).
    """
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(height, width) < 32:
        raise ConfigError(f"image size {height}x{width} is too small; use at least 32 px")
    if tuple(model.input_shape[1:3]) == (height, width):
        return model
    try:
        inputs = keras.Input((height, width, 3), name=model.inputs[0].name)
        clone = keras.models.clone_model(model, input_tensors=inputs)
    except ValueError as e:  # e.g. Dense after Flatten: the graph only fits its own size
        raise ConfigError(f"cannot rebuild {model.name} at {height}x{width}: {e}") from None
    clone.set_weights(model.get_weights())
    return clone


def is_transferkit_classifier(model: keras.Model) -> bool:
    """Whether `model` is a classifier built by `build_classifier` (or loaded from one).

    Such a model has the named layers the rest of transferkit relies on (see the module
    docstring), and its pooling layer's input is a 4-D feature map.
    """
    names = {layer.name for layer in model.layers}
    if not ({"preprocess", *HEAD_LAYERS} <= names):
        return False
    return len(model.get_layer("head_pool").input.shape) == 4


def members(model: keras.Model) -> list[str]:
    """The layer prefixes of an ensemble's members (`["m1_", "m2_", ...]`), in order;
    `[]` for a single classifier (see `transferkit.ensemble.model`)."""
    found = []
    for layer in model.layers:
        match = re.fullmatch(r"(m(\d+)_)head_pool", layer.name)
        if match:
            found.append((int(match.group(2)), match.group(1)))
    return [p for _, p in sorted(found)]


def pooled_output(model: keras.Model):
    """The pooled features (the head's input): `head_pool`'s output, or for an
    ensemble its members' pooled features side by side (member order)."""
    prefixes = members(model)
    if not prefixes:
        return model.get_layer("head_pool").output
    return ops.concatenate([model.get_layer(f"{p}head_pool").output for p in prefixes],
                           axis=-1)


def feature_layer_name(model: keras.Model) -> str:
    """Name of the layer producing the last convolutional feature map (head_pool's input)."""
    tensor = model.get_layer("head_pool").input
    return tensor._keras_history.operation.name


def backbone_blocks(model: keras.Model) -> list[list[keras.layers.Layer]]:
    """Splits the backbone part of a classifier into blocks that can be unfrozen whole.

    A block ends where a merge (Add / Concatenate) leaves a single live tensor in the
    graph: cutting there never separates a residual (or dense) branch from its shortcut.
    Purely sequential backbones (MobileNet v1) have no merges; they are cut before each
    depthwise or spatial convolution instead (MobileNet's depthwise + pointwise pairs).

    Args:
        model: A classifier from `build_classifier`.

    Returns:
        Blocks in input-to-output order, each a list of layers (operations that are not
        `keras.layers.Layer`, e.g. ConvNeXt's `+`, are omitted: they have no weights).
    """
    operations = _backbone_operations(model)
    single_live = _single_live_positions(operations)

    def is_merge(op) -> bool:
        return isinstance(op, (keras.layers.Add, keras.layers.Concatenate)) or \
            type(op).__name__ in ("Add", "Concatenate")

    cuts = [i for i in single_live if is_merge(operations[i])]
    if len(cuts) < 4:
        def starts_block(op) -> bool:
            return isinstance(op, keras.layers.DepthwiseConv2D) or (
                isinstance(op, keras.layers.Conv2D) and max(op.kernel_size) > 1)
        cuts = [i for i in single_live
                if i + 1 < len(operations) and starts_block(operations[i + 1])]
    blocks, start = [], 0
    for cut in cuts + [len(operations) - 1]:
        if cut >= start:
            blocks.append(operations[start:cut + 1])
            start = cut + 1
    # What follows the last cut joins the top block unless it has a convolution of its
    # own (e.g. EfficientNet's top_conv); a lone BatchNorm/LayerNorm is no block.
    if len(blocks) > 1 and not any(_is_conv(op) for op in blocks[-1]):
        blocks[-2].extend(blocks.pop())
    return [[op for op in block if isinstance(op, keras.layers.Layer)] for block in blocks]


def set_trainable_blocks(model: keras.Model, n_blocks: int) -> int:
    """Freezes the backbone except its top `n_blocks` blocks; the head stays trainable.

    BatchNormalization layers always stay frozen: a frozen BN layer runs in inference
    mode, so its ImageNet statistics are not wrecked by small, unlike batches.

    Args:
        model: A classifier from `build_classifier`.
        n_blocks: Number of top blocks to train (0: feature extraction).

    Returns:
        The number of trainable weight tensors after the change.
    """
    blocks = backbone_blocks(model)
    train = {id(layer) for block in blocks[len(blocks) - n_blocks:] if n_blocks > 0
             for layer in block}
    model.trainable = True
    for layer in model.layers:
        if layer.name in HEAD_LAYERS:
            layer.trainable = True
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        else:
            layer.trainable = id(layer) in train
    return len(model.trainable_weights)


def _backbone_operations(model: keras.Model) -> list:
    """The backbone's operations in topological order (input → head_pool, exclusive)."""
    operations = list(model.operations)
    start = next(i for i, op in enumerate(operations) if op.name == "preprocess") + 1
    end = next(i for i, op in enumerate(operations) if op.name == "head_pool")
    return operations[start:end]


def _single_live_positions(operations: Sequence) -> list[int]:
    """Positions after which exactly one tensor produced so far is still needed."""
    index = {id(op): i for i, op in enumerate(operations)}
    last_use = {}
    for i, op in enumerate(operations):
        for node in op._inbound_nodes:
            for tensor in node.input_tensors:
                producer = tensor._keras_history.operation
                if id(producer) in index:
                    last_use[id(producer)] = max(last_use.get(id(producer), -1), i)
    positions = []
    for i in range(len(operations)):
        live = sum(1 for op in operations[:i + 1]
                   if last_use.get(id(op), len(operations)) > i)
        if live == 1:
            positions.append(i)
    return positions


def _is_conv(op) -> bool:
    return isinstance(op, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                           keras.layers.SeparableConv2D))


def head_logits(layer: keras.layers.Dense, x):
    """The pre-softmax output of a softmax `Dense` head (`predictions`): its own kernel
    and bias applied to its input `x` (keras.ops: eager or traced alike)."""
    logits = ops.matmul(x, layer.kernel)
    return logits + layer.bias if layer.use_bias else logits
