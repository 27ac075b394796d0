"""What every view shares: the run's model, a sub-model up to layer L, checked choices,
and the output folder the pictures go to.

The classifier is one flat functional graph, so any inner layer is one
`keras.Model(model.inputs, layer.output)` away; `submodel` builds that once per set of
layers. Layer names are checked by `transferkit.explain.graph.resolve_layer`, the same
check (and the same one-line message) as the explanation methods'.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np

from transferkit import layout
from transferkit.errors import ConfigError
# The layer choices are explain's: the same check and the same one-line message.
from transferkit.explain.graph import feature_map_layers as feature_layers  # noqa: F401
from transferkit.explain.graph import resolve_layer as check_layer  # noqa: F401
from transferkit.fileio import atomic_path

_ACTIVATIONS = ("ReLU", "Activation", "ELU", "LeakyReLU", "PReLU", "Softmax")


def as_model(source: Any) -> tuple[keras.Model, Any]:
    """`(model, run)` for a `Run`, a run directory or a Keras model (run None)."""
    from transferkit.run import Run, load_run

    if isinstance(source, keras.Model):
        return source, None
    from transferkit.ensemble.members import inspected_run

    # An ensemble: member 0 (`transferkit inspect ... --member N` passes another).
    run = inspected_run(source if isinstance(source, Run) else load_run(source))
    return run.model, run


def pre_activation(model: keras.Model, name: str) -> str:
    """The layer feeding an activation layer (`out_relu` → `Conv_1_bn`), else `name`.

    Gradient ascent needs the value before ReLU6: a saturated or negative unit passes
    no gradient, so objectives are taken on the BatchNorm or Add output before it.
    """
    layer = model.get_layer(name)
    if type(layer).__name__ not in _ACTIVATIONS:
        return name
    producer = layer.input._keras_history.operation
    return producer.name if producer.name in {l.name for l in model.layers} else name


def channels_of(model: keras.Model, layer: str) -> int:
    """Number of channels of a layer's output."""
    return int(model.get_layer(layer).output.shape[-1])


def check_channel(model: keras.Model, layer: str, channel: int) -> int:
    """Raises ConfigError unless `0 <= channel < channels`, naming the range."""
    n = channels_of(model, layer)
    if not 0 <= int(channel) < n:
        raise ConfigError(f"channel {channel} is out of range for layer {layer!r}: it has "
                          f"{n} channels, choose 0 to {n - 1}")
    return int(channel)


def parse_channels(text: str | Sequence[int] | None, model: keras.Model, layer: str,
                   default: int = 8) -> list[int]:
    """Channels from `"0-7"`, `"1,5,9"`, a list, or None (the first `default`)."""
    if text is None:
        return list(range(min(default, channels_of(model, layer))))
    if isinstance(text, str):
        picked: list[int] = []
        try:
            for part in (p.strip() for p in text.split(",") if p.strip()):
                low, _, high = part.partition("-")
                picked += list(range(int(low), int(high or low) + 1))
        except ValueError:
            raise ConfigError(f"--channels {text!r}: use numbers and ranges such as "
                              "0-7 or 1,5,9") from None
    else:
        picked = [int(c) for c in text]
    if not picked:
        raise ConfigError("no channels given; use e.g. --channels 0-7")
    return [check_channel(model, layer, c) for c in picked]


def class_index(class_names: Sequence[str], name: str | int) -> int:
    """The index of a class given by name (or index).

    Raises:
        ConfigError: Not one of the run's classes (the message lists them).
    """
    names = list(class_names)
    if isinstance(name, (int, np.integer)) and 0 <= int(name) < len(names):
        return int(name)
    if name in names:
        return names.index(name)
    raise ConfigError(f"unknown class {name!r}; the run's classes are: {', '.join(names)}")


def class_names_of(model: keras.Model, run: Any) -> list[str]:
    """The run's class names, or `class_0 ...` for a bare model."""
    if run is not None:
        return list(run.class_names)
    return [f"class_{i}" for i in range(int(model.output_shape[-1]))]


def submodel(model: keras.Model, layers: Sequence[str] | str) -> keras.Model:
    """The model from the image input to the output of a layer (a name), or to the
    outputs of several (a list of names: it returns a list of arrays)."""
    outputs = model.get_layer(layers).output if isinstance(layers, str) else \
        [model.get_layer(n).output for n in layers]
    # The single input tensor, not a list of one: called on a batch, Keras wants the
    # structure it was built with.
    return keras.Model(model.inputs[0], outputs)


def activations(model: keras.Model, images: np.ndarray, layers: Sequence[str]
                ) -> list[np.ndarray]:
    """The outputs of `layers` for a batch of raw images at the model's input size."""
    outputs = submodel(model, layers)(np.asarray(images, np.float32), training=False)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    return [np.asarray(o) for o in outputs]


def model_images(model: keras.Model, images: Sequence[Any]) -> np.ndarray:
    """Paths, bytes or RGB arrays → a float32 batch resized to the model's input size."""
    from transferkit.data.images import as_rgb, load_image
    from transferkit.data.pipeline import resize

    size = int(model.input_shape[1])
    batch = [resize(as_rgb(i) if isinstance(i, np.ndarray) else load_image(i), size).numpy()
             for i in images]
    return np.stack(batch).astype(np.float32)


class Output:
    """The folder a view writes into, and the files it wrote (for the JSON record).

    Args:
        out: The folder; None: `RUN/inspect/` (a bare model or no run: `./inspect`).
        run: The run, if any.
    """

    def __init__(self, out: str | os.PathLike | None, run: Any = None):
        if out is None:
            out = (run.path / layout.INSPECT_DIR) if run is not None else layout.INSPECT_DIR
        self.folder = Path(out)
        self.files: list[str] = []

    def png(self, name: str, picture: Any) -> str:
        """Writes an RGB array or a matplotlib figure as `name`.png (atomically)."""
        path = self.folder / f"{name}.png"
        with atomic_path(path) as tmp:
            if isinstance(picture, np.ndarray):
                from PIL import Image

                Image.fromarray(to_uint8(picture)).save(tmp, format="PNG")
            else:  # a matplotlib Figure: drawn by its own Agg canvas, nothing to close
                picture.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        self.files.append(str(path))
        return str(path)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Pixels in 0-255 (any float or int type) as uint8."""
    return np.clip(np.rint(np.asarray(image, np.float64)), 0, 255).astype(np.uint8)


def normalize(values: np.ndarray, low: float | None = None, high: float | None = None
              ) -> np.ndarray:
    """Values scaled to [0, 1] between `low` and `high` (default: their min and max)."""
    values = np.asarray(values, np.float32)
    low = float(values.min()) if low is None else low
    high = float(values.max()) if high is None else high
    if high - low < 1e-12:
        return np.zeros_like(values)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def colorize(values: np.ndarray, colormap: str = "viridis") -> np.ndarray:
    """A [0, 1] map `[H, W]` as uint8 RGB through a matplotlib colormap."""
    import matplotlib

    return to_uint8(matplotlib.colormaps[colormap](values)[..., :3] * 255.0)


def upscale(image: np.ndarray, side: int) -> np.ndarray:
    """Nearest-neighbour enlargement so that the short side is at least `side`."""
    factor = max(1, int(np.ceil(side / max(1, min(image.shape[:2])))))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def tile_grid(tiles: Sequence[np.ndarray], columns: int, gap: int = 2) -> np.ndarray:
    """Equal-size uint8 RGB tiles in a grid with white gaps."""
    if not tiles:
        return np.full((8, 8, 3), 255, np.uint8)
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + columns - 1) // columns
    grid = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        grid[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tile
    return grid
