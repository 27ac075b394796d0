"""The plan: from the dataset's size, what to freeze, how much to fine-tune, at what size.

The classic rule (Yosinski et al., 2014; CS231n's transfer-learning notes): with little
data per class a fine-tuned backbone overfits, so train only a new head on frozen
features; with more, also fine-tune the backbone from the top down, deeper the more data.
Blocks are unfrozen whole (`model.backbone_blocks`), BatchNorm layers always stay frozen.
Measured on flowers5 (128 px photos, 405 training images in the smallest class,
MobileNetV2-0.35, 2 CPU cores; docs/measurements.md, the recipe table): head only
0.67-0.70 (validation); top 3 of 11 blocks 0.71, all blocks 0.78 (test, taken before
choices moved to the validation split; all blocks: 0.774 on validation); hence all blocks
from 400 images per class. The threshold of 100 (`transferkit experiment transfer`, test
split): fine-tuning is level with the frozen head at 21 and 41 images per class and ahead
from 102 (+0.05), 203 (+0.08) and 405 (+0.10).

Resolution: a frozen backbone is best at its native size (where its features were
learned); a fine-tuned one adapts, so it trains at 1.25x the images' median side, at most
native: a little upsampling brings objects nearer the scale the filters know, more costs
time better spent on epochs. flowers5, all blocks, 10 epochs: 128 px 0.72, 160 px 0.78
test accuracy (no validation figure recorded for 128 px; 0.774 for 160 px).
"""

from __future__ import annotations

import dataclasses
import math

from transferkit.backbones import Backbone
from transferkit.config import TrainConfig
from transferkit.errors import ConfigError

FEATURE_EXTRACT_BELOW = 100  # training images in the smallest class
# Fraction of the backbone's blocks to fine-tune, by training images per class.
FINE_TUNE_FRACTIONS = ((400, 1.0), (200, 0.5), (FEATURE_EXTRACT_BELOW, 0.25))
MIN_FINE_TUNE_SIZE = 96
FINE_TUNE_UPSAMPLE = 1.25    # fine-tuning size / median image side


@dataclasses.dataclass
class Plan:
    """What phase 2 does, with the numbers behind the decision (saved as plan.json)."""

    strategy: str              # "feature-extract" or "fine-tune"
    fine_tune_fraction: float  # of the backbone's blocks
    unfreeze_blocks: int
    total_blocks: int
    train_images: int
    images_per_class: int      # training images of the smallest class
    image_size: int
    reason: str
    overridden: bool = False


def fine_tune_fraction(per_class: int) -> float:
    """The fraction of the backbone's blocks the rule fine-tunes (0: feature extraction)."""
    return next((f for least, f in FINE_TUNE_FRACTIONS if per_class >= least), 0.0)


def choose_image_size(backbone: Backbone, median_side: float, fine_tune: bool) -> int:
    """The input side: the native size when frozen; when fine-tuning, a multiple of 32
    near `median_side` (the training images' median shorter side, pixels)."""
    if not fine_tune:
        return backbone.default_size
    side = 32 * math.ceil(FINE_TUNE_UPSAMPLE * median_side / 32)
    return int(min(backbone.default_size, max(side, MIN_FINE_TUNE_SIZE, backbone.min_size)))


def make_plan(train_counts: dict[str, int], config: TrainConfig, backbone: Backbone,
              median_side: float) -> Plan:
    """Decides feature extraction or fine-tuning, how deep, and the image size (the
    module's rule; `config.strategy`, `config.unfreeze` and `config.image_size` override
    it). The number of blocks is filled in by `with_blocks` once the model is built.

    Args:
        train_counts: Training images per class.
        config: The run's options.
        backbone: Registry entry.
        median_side: Median shorter side of the training images (pixels).

    Returns:
        The plan (`unfreeze_blocks` still 0 and `total_blocks` 0).
    """
    per_class = min(train_counts.values())
    fraction = fine_tune_fraction(per_class)
    if fraction:
        steps = ", ".join(f"{f:.0%} from {least}" for least, f in reversed(FINE_TUNE_FRACTIONS))
        reason = (f"{per_class} training images in the smallest class: fine-tune "
                  f"{fraction:.0%} of the backbone's blocks ({steps} images per class)")
    else:
        reason = (f"{per_class} training images in the smallest class (< "
                  f"{FEATURE_EXTRACT_BELOW}): fine-tuning would overfit, so only the head "
                  "is trained, on frozen ImageNet features")
    overridden = False
    if config.strategy == "feature-extract" or config.unfreeze == 0:
        reason += "; overridden: feature extraction only" if fraction else ""
        fraction, overridden = 0.0, True
    elif config.unfreeze is not None or config.strategy == "fine-tune":
        reason += "; overridden: fine-tune"
        fraction, overridden = max(fraction, 0.25), True
    fine_tune = fraction > 0
    size = choose_image_size(backbone, median_side, fine_tune)
    if config.image_size is not None:
        size = config.image_size
        reason += f"; image size {size} (--image-size)"
    elif fine_tune and size < backbone.default_size:
        reason += (f"; image size {size}: {FINE_TUNE_UPSAMPLE:g}x the images' median side "
                   f"({median_side:.0f} px) instead of {backbone.default_size}, for "
                   f"{(backbone.default_size / size) ** 2:.1f}x the steps per second")
    else:
        reason += f"; image size {size} (the backbone's native size)"
    return Plan("fine-tune" if fine_tune else "feature-extract", fraction, 0, 0,
                sum(train_counts.values()), per_class, size, reason, overridden)


def with_blocks(plan: Plan, total_blocks: int, unfreeze: int | None = None) -> Plan:
    """`plan` with how many of the model's `total_blocks` blocks phase 2 fine-tunes
    (`--unfreeze N` overrides the fraction; more than the blocks raises ConfigError)."""
    if unfreeze is not None and unfreeze > total_blocks:
        raise ConfigError(f"--unfreeze {unfreeze} exceeds the backbone's {total_blocks} "
                          "blocks")
    blocks = unfreeze if unfreeze is not None else math.ceil(plan.fine_tune_fraction
                                                             * total_blocks)
    reason = plan.reason + (f"; top {blocks} of {total_blocks} blocks" if blocks else "")
    return dataclasses.replace(plan, unfreeze_blocks=blocks, total_blocks=total_blocks,
                               reason=reason)
