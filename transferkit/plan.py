"""The plan: from the dataset's size, what to freeze and how much to fine-tune, and why.

The classic transfer-learning rule (Yosinski et al., 2014; CS231n's "transfer learning"
notes): with little data per class, a fine-tuned backbone overfits, so train only a new
head on frozen features. With more data, also fine-tune the top of the backbone, whose
features are the most specific to ImageNet; the more data, the deeper. Blocks are
unfrozen whole (`transferkit.model.backbone_blocks`) so no residual branch is cut from
its shortcut, and BatchNorm layers always stay frozen.
"""

from __future__ import annotations

import dataclasses
import math

from transferkit.config import TrainConfig
from transferkit.errors import ConfigError

FEATURE_EXTRACT_BELOW = 100  # training images per class
BLOCKS_PER_DOUBLING = 1      # one more block each time the data per class doubles
MAX_FRACTION = 0.5           # never fine-tune more than half the backbone's blocks


@dataclasses.dataclass
class Plan:
    """What phase 2 does, with the numbers behind the decision (saved as plan.json)."""

    strategy: str              # "feature-extract" or "fine-tune"
    unfreeze_blocks: int
    total_blocks: int
    train_images: int
    images_per_class: int      # training images of the smallest class
    reason: str
    overridden: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def make_plan(train_counts: dict[str, int], total_blocks: int, config: TrainConfig) -> Plan:
    """Decides between feature extraction and fine-tuning, and how many top blocks.

    Rule: fewer than 100 training images in the smallest class → feature extraction.
    Otherwise fine-tune 1 block at 100-199 images per class, one more per doubling
    (2 at 200-399, 3 at 400-799, ...), at most half of the backbone's blocks.
    `config.strategy` and `config.unfreeze` override it.

    Args:
        train_counts: Training images per class.
        total_blocks: Number of blocks of the backbone (`backbone_blocks`).
        config: The run's options.

    Returns:
        The plan.
    """
    per_class = min(train_counts.values())
    n_train = sum(train_counts.values())
    if per_class < FEATURE_EXTRACT_BELOW:
        blocks = 0
        reason = (f"{per_class} training images in the smallest class (< "
                  f"{FEATURE_EXTRACT_BELOW}): fine-tuning would overfit, so only the head "
                  "is trained on frozen ImageNet features")
    else:
        doublings = int(math.log2(per_class / FEATURE_EXTRACT_BELOW))
        cap = max(1, int(total_blocks * MAX_FRACTION))
        blocks = min(1 + BLOCKS_PER_DOUBLING * doublings, cap)
        reason = (f"{per_class} training images in the smallest class (>= "
                  f"{FEATURE_EXTRACT_BELOW}): after the head, fine-tune the top {blocks} of "
                  f"{total_blocks} backbone blocks (1 block at {FEATURE_EXTRACT_BELOW}, one "
                  "more per doubling, at most half)")
    overridden = False
    if config.strategy == "feature-extract" or config.unfreeze == 0:
        if blocks:
            reason += "; overridden: feature extraction only"
        blocks, overridden = 0, True
    elif config.unfreeze is not None or config.strategy == "fine-tune":
        wanted = config.unfreeze if config.unfreeze is not None else max(blocks, 1)
        if wanted > total_blocks:
            raise ConfigError(f"--unfreeze {wanted} exceeds the backbone's {total_blocks} "
                              "blocks")
        if wanted != blocks:
            reason += f"; overridden: fine-tune the top {wanted} blocks"
        blocks, overridden = wanted, True
    return Plan("fine-tune" if blocks else "feature-extract", blocks, total_blocks, n_train,
                per_class, reason, overridden)
