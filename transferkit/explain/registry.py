"""The explanation methods by name: what the CLI, the demo and `make_explainers` offer.

`METHODS` maps each method's `name` (what `--method` accepts) to its class, in display
order; each class also carries a `label` for people (the demo's dropdown).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, Sequence

import keras

from transferkit.errors import ConfigError
from transferkit.explain.base import Explainer
from transferkit.explain.cam import GradCAM, GradCAMPlusPlus, ScoreCAM
from transferkit.explain.gradients import IntegratedGradients, Saliency, SmoothGrad
from transferkit.explain.graph import TracedGraph

# Read-only: the registry is a constant, not a plug-in point.
METHODS: Mapping[str, type[Explainer]] = MappingProxyType({cls.name: cls for cls in (
    GradCAM, GradCAMPlusPlus, ScoreCAM, Saliency, SmoothGrad, IntegratedGradients)})
DEFAULT_METHOD = "gradcam"


def resolve_methods(methods: str | Sequence[str] | None) -> list[str]:
    """Method names, checked; None, "all" or ["all"] mean every method.

    Args:
        methods: A name, several names (repeats are dropped), None or "all".

    Returns:
        Names of `METHODS`, in the order given.

    Raises:
        ConfigError: An unknown name (the message lists the known ones).
    """
    if methods is None or methods == "all" or list(methods) == ["all"]:
        return list(METHODS)
    names = [methods] if isinstance(methods, str) else list(methods)
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        what = f"unknown explanation method {unknown[0]!r}" if unknown else \
            "no explanation method given"
        raise ConfigError(f"{what}; choose from: {', '.join(METHODS)} (or all)")
    return list(dict.fromkeys(names))


def make_explainers(model: keras.Model, methods: str | Sequence[str] | None = None,
                    layer_name: str | None = None,
                    options: dict[str, dict] | None = None) -> dict[str, Explainer]:
    """Explainers of several methods for one model, sharing one traced graph.

    Tracing a large backbone's gradient takes seconds, as long as explaining dozens of
    images; the explainers built here share a single graph (one backward pass gives the
    feature-map gradients the CAM methods need and the pixel gradients of the others),
    traced when the first of them is called.

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
    options = options or {}
    explainers = {}
    for name in resolve_methods(methods):
        cls = METHODS[name]
        layer = {"layer_name": layer_name} if cls.uses_layer and layer_name else {}
        explainers[name] = cls(model, **layer, **options.get(name, {}))
    # Every CAM explainer here has the same layer (None when there is none).
    layer = next((e.layer_name for e in explainers.values() if e.uses_layer), None)
    pixels = any(not e.uses_layer for e in explainers.values())
    shared = TracedGraph(model, layer, input_gradients=pixels)
    for explainer in explainers.values():
        explainer.use_graph(shared)
    return explainers
