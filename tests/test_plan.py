"""The freeze / fine-tune rule."""

import pytest

from transferkit.config import TrainConfig
from transferkit.errors import ConfigError
from transferkit.plan import make_plan


def counts(per_class, n_classes=5):
    return {f"c{i}": per_class for i in range(n_classes)}


@pytest.mark.parametrize("per_class,blocks", [(5, 0), (99, 0), (100, 1), (250, 2),
                                              (405, 3), (1000, 4), (100000, 5)])
def test_more_data_fine_tunes_more_blocks(per_class, blocks):
    plan = make_plan(counts(per_class), total_blocks=11, config=TrainConfig())
    assert plan.unfreeze_blocks == blocks
    assert plan.strategy == ("fine-tune" if blocks else "feature-extract")
    assert str(per_class) in plan.reason and not plan.overridden


def test_smallest_class_decides():
    plan = make_plan({"a": 5000, "b": 40}, total_blocks=11, config=TrainConfig())
    assert plan.unfreeze_blocks == 0 and plan.images_per_class == 40


def test_overrides():
    plan = make_plan(counts(1000), 11, TrainConfig(strategy="feature-extract"))
    assert plan.unfreeze_blocks == 0 and plan.overridden and "overridden" in plan.reason
    plan = make_plan(counts(10), 11, TrainConfig(strategy="fine-tune"))
    assert plan.unfreeze_blocks == 1 and plan.strategy == "fine-tune"
    plan = make_plan(counts(10), 11, TrainConfig(unfreeze=4))
    assert plan.unfreeze_blocks == 4
    with pytest.raises(ConfigError, match="exceeds"):
        make_plan(counts(10), 11, TrainConfig(unfreeze=12))
