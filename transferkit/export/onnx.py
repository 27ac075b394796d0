"""The ONNX model: uint8 images of any size in, the resize inside, as the SavedModel.

The SavedModel's antialiased resize (`tf.image.resize(..., antialias=True)`, which
TensorFlow runs as `ScaleAndTranslate`) has no ONNX operator, so a converted SavedModel
does not load in ONNX Runtime. Instead the classifier is converted at its fixed input
size (tf2onnx, opset 18) and an ONNX `Resize` node goes in front of it:
`mode="linear", antialias=1, exclude_outside=1`, half-pixel coordinates. Measured on
flowers photos against `transferkit.data.pipeline.resize`: at most 0.0011 of 255 per
pixel at 224 px and 0.0005 at 96 px (`exclude_outside=0` differs by up to 0.27 at 96 px,
since TensorFlow renormalizes the filter at the borders).

Graph (names are the contract):

- input `images`: uint8 `[N, H, W, 3]` RGB, any size (one size per call).
- outputs `probabilities` float32 `[N, C]`, `class_index` int64 `[N]`, `class_name`
  string `[N]`: what the SavedModel's signatures return (`graph_outputs`); for a run
  with trust also the SavedModel's `unknown_score` float32 `[N]`, `is_unknown` and
  `abstained` bool `[N]` (the score converted from `TrustGraph`, the two comparisons
  with the run's thresholds as ONNX `Greater` / `Less` nodes), so the `.onnx` file
  needs nothing beside it.

The class names also travel as the model's metadata (`class_names`, a JSON list) and
`image_size` tells the training size.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import keras
import tensorflow as tf

OPSET = 18
INPUT = "images"
# The Resize attributes chosen by measurement (module docstring).
RESIZE = {"mode": "linear", "antialias": 1, "exclude_outside": 1,
          "coordinate_transformation_mode": "half_pixel"}


def convert_to_onnx(model: keras.Model, image_size: int,
                    class_names: Sequence[str], trust: Any = None) -> bytes:
    """Converts the classifier to an ONNX model that resizes inside.

    Args:
        model: The classifier (float32 `[N, S, S, 3]` raw RGB → probabilities).
        image_size: S.
        class_names: Output class names, in order (outputs and metadata).
        trust: The run's `TrustGraph` (its outputs are added), or None.

    Returns:
        The `.onnx` file's content (see the module docstring for its graph).
    """
    import onnx
    import tf2onnx
    from onnx import TensorProto, helper

    spec = (tf.TensorSpec((None, image_size, image_size, 3), tf.float32, name="x"),)
    def core(x: tf.Tensor):
        if trust is None:
            return model(x, training=False)
        result = trust.outputs(x)
        return result["probabilities"], result["unknown_score"]

    proto, _ = tf2onnx.convert.from_function(tf.function(core), input_signature=spec,
                                             opset=OPSET)
    graph = proto.graph
    (core_input,) = graph.input
    core_in = core_input.name
    core_out, *score = [o.name for o in graph.output]
    del graph.input[:]
    del graph.output[:]
    front = [
        helper.make_node("Cast", [INPUT], ["images_float"], to=TensorProto.FLOAT),
        helper.make_node("Resize", ["images_float", "", "", "resize_sizes"], [core_in],
                         axes=[1, 2], **RESIZE),
    ]
    graph.initializer.append(helper.make_tensor("resize_sizes", TensorProto.INT64, [2],
                                                [image_size, image_size]))
    nodes = front + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.input.append(helper.make_tensor_value_info(
        INPUT, TensorProto.UINT8, ["N", "H", "W", 3]))
    graph_outputs(graph, core_out, class_names, *score,
                  thresholds=None if trust is None else trust.params)
    graph.name = "transferkit_classifier"
    for key, value in {"class_names": json.dumps(list(class_names)),
                       "image_size": str(image_size),
                       "input": "images: uint8 [N, H, W, 3] RGB, any size"}.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    proto.producer_name = "transferkit"
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def graph_outputs(graph: Any, probabilities: str, class_names: Sequence[str],
                  score: str | None = None, thresholds: Any = None) -> None:
    """Adds the graph's outputs: the one place that says what the ONNX model returns.

    Args:
        graph: The ONNX `GraphProto`, whose tensor `probabilities` is the softmax.
        probabilities: That tensor's name.
        class_names: Output class names (a string constant, for `class_name`).
        score: The unknown score's tensor name (a run with trust), or None.
        thresholds: The run's `TrustParams` (with `score`).
    """
    from onnx import TensorProto, helper

    n_classes = len(class_names)
    graph.node.extend([
        helper.make_node("Identity", [probabilities], ["probabilities"]),
        helper.make_node("ArgMax", ["probabilities"], ["class_index"], axis=-1,
                         keepdims=0),
        helper.make_node("Gather", ["class_names", "class_index"], ["class_name"],
                         axis=0),
    ])
    graph.initializer.append(helper.make_tensor(
        "class_names", TensorProto.STRING, [n_classes],
        [name.encode("utf-8") for name in class_names]))
    graph.output.extend([
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                      ["N", n_classes]),
        helper.make_tensor_value_info("class_index", TensorProto.INT64, ["N"]),
        helper.make_tensor_value_info("class_name", TensorProto.STRING, ["N"]),
    ])
    if score is not None:
        graph.node.extend([
            helper.make_node("Identity", [score], ["unknown_score"]),
            helper.make_node("ReduceMax", [probabilities, "last_axis"], ["confidence"],
                             keepdims=0),
            helper.make_node("Less", ["confidence", "abstain_threshold"], ["abstained"]),
            helper.make_node("Greater", ["unknown_score", "unknown_threshold"],
                             ["is_unknown"]),
        ])
        graph.initializer.extend([
            helper.make_tensor("last_axis", TensorProto.INT64, [1], [-1]),
            helper.make_tensor("abstain_threshold", TensorProto.FLOAT, [],
                               [thresholds.abstain_threshold]),
            helper.make_tensor("unknown_threshold", TensorProto.FLOAT, [],
                               [thresholds.unknown_threshold])])
        graph.output.extend([
            helper.make_tensor_value_info("unknown_score", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("is_unknown", TensorProto.BOOL, ["N"]),
            helper.make_tensor_value_info("abstained", TensorProto.BOOL, ["N"])])


def signature_doc(n_classes: int, trust: bool = False) -> dict[str, Any]:
    """The ONNX model's input and outputs in words, for `parity.json`."""
    from transferkit.export.savedmodel import TRUST_DOC

    return {"inputs": {INPUT: "uint8 [N, H, W, 3] RGB, any size (resized inside: ONNX "
                              "Resize, linear, antialias=1, exclude_outside=1)"},
            "outputs": {"probabilities": f"float32 [N, {n_classes}]",
                        "class_index": "int64 [N]", "class_name": "string [N]",
                        **(TRUST_DOC if trust else {})},
            "opset": OPSET}
