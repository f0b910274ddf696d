from __future__ import annotations

import pytest

from titans.train import RunConfig, apply_overrides
from titans.train.config import preset_tiny


def test_overrides_are_typed():
    cfg = apply_overrides(RunConfig(), ["train.lr=1e-4", "model.variant=mag", "model.memory.depth=3",
                                        "data.data_dir=None", "train.max_steps=7", "train.lr=1"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.model.variant == "mag" and cfg.model.memory.depth == 3 and cfg.train.max_steps == 7


@pytest.mark.parametrize("item,match", [
    ("train.nope=1", "unknown key"), ("nosection.lr=1", "unknown key"), ("train.max_steps=1.5", "expected int"),
    ("train.compile=1", "expected bool"), ("model.variant=rnn", "variant"), ("train.lr", "KEY=VALUE"),
    ("model.memory=3", "is a section"), ("train.batch_size=0", "train.batch_size"),
])
def test_bad_overrides_name_the_key(item, match):
    with pytest.raises(ValueError, match=match):
        apply_overrides(RunConfig(), [item])


def test_round_trip_through_dict():
    cfg = preset_tiny()
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        RunConfig.from_dict({**cfg.to_dict(), "extra": {}})
