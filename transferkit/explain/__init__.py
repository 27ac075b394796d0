"""Explaining predictions: class activation maps, pixel attributions, faithfulness checks.

    from transferkit.explain import GradCAM, overlay
    maps = GradCAM(run.model)(run.preprocess(["cat.jpg"]))    # [1, S, S] in [0, 1]
    picture = overlay(image, maps[0])                         # uint8 RGB

Every method is an `Explainer`: built once per model (its gradient graph is traced on
first use), then called on raw 0-255 RGB batches `[N, S, S, 3]` with an optional class
per image. `METHODS` maps the names the CLI accepts to the classes; `make_explainers`
builds several for one model, sharing their traced graphs.
"""

from transferkit.explain.base import Explainer, make_explainers
from transferkit.explain.cam import GradCAM, GradCAMPlusPlus, ScoreCAM
from transferkit.explain.faithfulness import (
    blur, deletion_insertion, explain_check, random_heatmaps, randomization_check,
    randomize_model, rank_correlation, ratio_interval)
from transferkit.explain.gradients import IntegratedGradients, Saliency, SmoothGrad
from transferkit.explain.overlay import overlay
from transferkit.explain.report import explain_files

METHODS: dict[str, type[Explainer]] = {cls.name: cls for cls in (
    GradCAM, GradCAMPlusPlus, ScoreCAM, Saliency, SmoothGrad, IntegratedGradients)}

__all__ = ["METHODS", "Explainer", "make_explainers", "GradCAM", "GradCAMPlusPlus",
           "ScoreCAM", "Saliency", "SmoothGrad", "IntegratedGradients", "overlay",
           "blur", "deletion_insertion",
           "explain_check", "explain_files", "random_heatmaps", "randomization_check",
           "randomize_model", "rank_correlation", "ratio_interval"]
