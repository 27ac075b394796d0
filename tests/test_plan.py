"""The freeze / fine-tune rule and the image size it picks."""

import pytest

from transferkit.backbones import get_backbone
from transferkit.config import TrainConfig
from transferkit.errors import ConfigError
from transferkit.plan import make_plan, with_blocks

MOBILENET = get_backbone("mobilenet_v2_0.35")


def counts(per_class, n_classes=5):
    return {f"c{i}": per_class for i in range(n_classes)}


def plan_for(per_class, config=TrainConfig(), median_side=500.0, total=12):
    plan = make_plan(counts(per_class), config, MOBILENET, median_side)
    return with_blocks(plan, total, config.unfreeze)


@pytest.mark.parametrize("per_class,blocks", [(5, 0), (99, 0), (100, 3), (250, 6),
                                              (405, 12), (100000, 12)])
def test_more_data_fine_tunes_more_blocks(per_class, blocks):
    plan = plan_for(per_class)
    assert plan.unfreeze_blocks == blocks and plan.total_blocks == 12
    assert plan.strategy == ("fine-tune" if blocks else "feature-extract")
    assert str(per_class) in plan.reason and not plan.overridden


def test_smallest_class_decides():
    plan = with_blocks(make_plan({"a": 5000, "b": 40}, TrainConfig(), MOBILENET, 500), 12)
    assert plan.unfreeze_blocks == 0 and plan.images_per_class == 40


@pytest.mark.parametrize("per_class,median,size", [
    (50, 128, 224),    # frozen: the backbone's native size, whatever the images
    (500, 128, 160),   # fine-tuned: near the images' own size (1.25x, to 32 px)
    (500, 100, 128),
    (500, 40, 96),     # but not below 96
    (500, 3000, 224),  # and never above the native size
])
def test_image_size_follows_the_data_when_fine_tuning(per_class, median, size):
    assert plan_for(per_class, median_side=median).image_size == size


def test_overrides():
    plan = plan_for(1000, TrainConfig(strategy="feature-extract"))
    assert plan.unfreeze_blocks == 0 and plan.overridden and "overridden" in plan.reason
    plan = plan_for(10, TrainConfig(strategy="fine-tune"))
    assert plan.unfreeze_blocks == 3 and plan.strategy == "fine-tune"
    plan = plan_for(10, TrainConfig(unfreeze=4))
    assert plan.unfreeze_blocks == 4
    assert plan_for(1000, TrainConfig(image_size=300)).image_size == 300
    with pytest.raises(ConfigError, match="exceeds"):
        plan_for(10, TrainConfig(unfreeze=13))
