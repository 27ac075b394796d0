"""The ensemble classifier: K transferkit classifiers as ONE flat functional Keras model.

    image ─┬─ m1_preprocess → m1_<backbone> → m1_head_pool → m1_predictions ─┐
           ├─ m2_preprocess → ...                        → m2_predictions ─┼─ ensemble_mean
           └─ ...                                                          ─┘

Every member's layers are cloned onto the one raw-pixel input with the prefix `m<i>_`
(Keras 3 refuses "/" in layer names, so not `m1/`), and the output is the mean of the
members' probabilities (`keras.layers.Average`, named `ensemble_mean`). Only built-in
and registered layers: it saves and loads as `model.keras` with `safe_mode=True`, and
exporters, predictors and the demo take it as any classifier (raw pixels in,
probabilities out).

Code that needs a member's usual layer names (`preprocess`, `head_pool`, `predictions`,
the backbone blocks) asks `member_model(model, i)`: a standalone classifier with the
member's weights and the names of `build_classifier`. `transferkit.model.members` lists
the prefixes.
"""

from __future__ import annotations

from typing import Sequence

import keras

from transferkit.errors import ConfigError
from transferkit.model import is_transferkit_classifier, members, rebuild_at_size

OUTPUT_LAYER = "ensemble_mean"


def prefix(i: int) -> str:
    """The layer prefix of member `i` (0-based): `m1_`, `m2_`, ..."""
    return f"m{i + 1}_"


def build_ensemble(models: Sequence[keras.Model], name: str = "transferkit_ensemble"
                   ) -> keras.Model:
    """One flat model averaging the probabilities of `models`.

    Args:
        models: Two or more classifiers from `build_classifier` (or loaded from a run),
            with the same number of classes. Members of another input size are rebuilt
            at the first one's (`transferkit.model.rebuild_at_size`).
        name: The model's name.

    Returns:
        A functional model `float32 [N, S, S, 3]` raw RGB → `[N, C]`, the mean of the
        members' probabilities; the members' weights are copied (the inputs are
        untouched).

    Raises:
        ConfigError: Fewer than two models, a model that is no transferkit classifier
            (or is an ensemble itself), or models with different numbers of classes.
    """
    models = list(models)
    if len(models) < 2:
        raise ConfigError(f"an ensemble needs at least 2 members, got {len(models)}")
    for i, model in enumerate(models):
        if members(model) or not is_transferkit_classifier(model):
            raise ConfigError(f"ensemble member {i + 1} ({model.name}) is not a single "
                              "transferkit classifier")
    n_classes = {int(m.output_shape[-1]) for m in models}
    if len(n_classes) > 1:
        raise ConfigError(f"ensemble members have different numbers of classes "
                          f"({sorted(n_classes)}); train them on the same classes")
    size = tuple(int(s) for s in models[0].input_shape[1:3])
    inputs = keras.Input((*size, 3), name=models[0].inputs[0].name)
    outputs = []
    for i, model in enumerate(models):
        model = rebuild_at_size(model, size)
        clone = keras.models.clone_model(model, input_tensors=inputs,
                                         clone_function=_renamer(prefix(i)))
        clone.set_weights(model.get_weights())
        outputs.append(clone.output)
    mean = keras.layers.Average(name=OUTPUT_LAYER)(outputs)
    return keras.Model(inputs, mean, name=name)


def member_model(model: keras.Model, i: int) -> keras.Model:
    """Member `i` (0-based) of an ensemble as a standalone classifier.

    The member's sub-graph is cloned with its prefix removed, so it has the layer names
    of `build_classifier` (`preprocess`, `head_pool`, `predictions`, the backbone's),
    and its weights are copied: explain, inspect and `set_trainable_blocks` take it as
    they take any run's model. A single classifier is returned as it is for `i == 0`.

    Raises:
        ConfigError: `i` is not a member.
    """
    prefixes = members(model)
    if not prefixes:
        if i == 0:
            return model
        raise ConfigError(f"--member {i + 1}: this model is not an ensemble (it has one "
                          "member: 1)")
    if not 0 <= i < len(prefixes):
        raise ConfigError(f"--member {i + 1}: the ensemble has {len(prefixes)} members "
                          f"(1 to {len(prefixes)})")
    view = keras.Model(model.inputs, model.get_layer(f"{prefixes[i]}predictions").output)
    strip = prefixes[i]
    clone = keras.models.clone_model(view, clone_function=_renamer(strip, remove=True))
    clone.set_weights(view.get_weights())
    clone.name = f"{model.name}_{strip.rstrip('_')}"
    return clone


def member_layer(model: keras.Model, i: int, name: str) -> keras.layers.Layer:
    """Layer `name` (e.g. `predictions`) of member `i` of an ensemble, in place."""
    return model.get_layer(f"{members(model)[i]}{name}")


def _renamer(text: str, remove: bool = False):
    def clone(layer):
        config = layer.get_config()
        name = layer.name
        if remove:
            name = name[len(text):] if name.startswith(text) else name
        else:
            name = text + name
        config["name"] = name
        return layer.__class__.from_config(config)
    return clone
