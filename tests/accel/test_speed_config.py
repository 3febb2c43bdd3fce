"""The ``train.speed`` section, and the flat keys it replaced still read (with a warning)."""

from __future__ import annotations

import warnings

import pytest
from pydantic import ValidationError

from tuneforge.recipe import SPEED_KEYS, SpeedConfig, TrainConfig


def test_the_speed_section_holds_the_speed_keys() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new form warns about nothing
        cfg = TrainConfig(max_length=64, speed={"packing": True, "pack_width": 128, "micro_batch_tokens": 96,
                                                "fused_lora": False, "frozen_dtype": "float32", "loss_chunk": None})
    assert cfg.speed == SpeedConfig(packing=True, pack_width=128, micro_batch_tokens=96, fused_lora=False,
                                    frozen_dtype="float32", loss_chunk=None)
    assert set(SpeedConfig.model_fields) == set(SPEED_KEYS)
    assert not set(SPEED_KEYS) & set(TrainConfig.model_fields)
    with pytest.raises(ValidationError, match="speed.micro_batch_tokens"):
        TrainConfig(max_length=128, speed={"micro_batch_tokens": 64})
    with pytest.raises(ValidationError, match="extra"):
        TrainConfig(speed={"packng": True})  # a typo names its key


def test_flat_speed_keys_move_into_the_section_with_a_warning() -> None:
    with pytest.warns(FutureWarning, match="train.packing, train.compile: these keys moved into train.speed"):
        cfg = TrainConfig(packing=True, compile=True, speed={"loss_chunk": 8})
    assert cfg.speed.packing and cfg.speed.compile and cfg.speed.loss_chunk == 8
    assert "packing" not in cfg.model_dump() and cfg.model_dump()["speed"]["packing"] is True
    with pytest.raises(ValidationError, match="packing given both in train and in train.speed"):
        TrainConfig(packing=True, speed={"packing": False})
    with pytest.warns(FutureWarning), pytest.raises(ValidationError, match="micro_batch_tokens"):
        TrainConfig(max_length=128, micro_batch_tokens=64)
