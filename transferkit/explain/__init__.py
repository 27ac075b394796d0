"""Explaining predictions: class activation maps, pixel attributions, faithfulness checks.

    from transferkit.explain import GradCAM, overlay
    maps = GradCAM(run.model)(run.preprocess(["cat.jpg"]))    # [1, S, S] in [0, 1]
    picture = overlay(image, maps[0])                         # uint8 RGB

Every method is an `Explainer`: built once per model (its gradient graph is built and
traced on first use), then called on raw 0-255 RGB batches `[N, S, S, 3]` with an
optional class per image. `METHODS` maps the names the CLI accepts to the classes (each
with a `label` for people); `make_explainers` builds several for one model, sharing one
traced graph.

Modules, each importing only those above it: `graph` (class logits, the layer, the
traced gradient), `base` (`Explainer`), `cam` and `gradients` (the methods), `registry`,
`deletion` and `sanity` (the two faithfulness checks), `faithfulness` (`explain_check`),
`overlay` and `report` (`explain_files`).
"""

from transferkit.explain.base import Explainer
from transferkit.explain.cam import GradCAM, GradCAMPlusPlus, ScoreCAM
from transferkit.explain.deletion import (
    blur, deletion_insertion, random_heatmaps, ratio_interval)
from transferkit.explain.faithfulness import explain_check
from transferkit.explain.gradients import IntegratedGradients, Saliency, SmoothGrad
from transferkit.explain.overlay import overlay
from transferkit.explain.registry import DEFAULT_METHOD, METHODS, make_explainers
from transferkit.explain.report import explain_files
from transferkit.explain.sanity import randomization_check, randomize_model, rank_correlation

__all__ = ["METHODS", "DEFAULT_METHOD", "Explainer", "make_explainers", "GradCAM",
           "GradCAMPlusPlus", "ScoreCAM", "Saliency", "SmoothGrad", "IntegratedGradients",
           "overlay", "blur", "deletion_insertion", "explain_check", "explain_files",
           "random_heatmaps", "randomization_check", "randomize_model", "rank_correlation",
           "ratio_interval"]
