"""Configs validate themselves with messages that say what to change."""

import pytest

from imagen_tutorial import ModelConfig, TrainConfig


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"levels": 1}, "levels=1 is out of range: use 2..256"),
        ({"levels": 512}, "levels=512 is out of range"),
        ({"image_size": 100}, "image_size=100 is out of range: use 4..64"),
        ({"condition": "sketch"}, "condition='sketch' is unknown: use one of caption, lowres, edges, none"),
        ({"d_model": 30, "n_heads": 4}, "d_model=30 must be a positive multiple of n_heads=4"),
        ({"condition": "lowres", "cond_size": 28}, "cond_size=28 must be smaller than image_size=28"),
        ({"condition": "edges", "patch_size": 5}, "patch_size=5 must divide the condition image side 28"),
    ],
)
def test_bad_model_config_says_what_is_wrong(fields, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ModelConfig(**fields)


def test_bad_train_config_says_what_is_wrong():
    with pytest.raises(ValueError, match="batch_size=10 must be divisible by accum_steps=3"):
        TrainConfig(batch_size=10, accum_steps=3)
    with pytest.raises(ValueError, match="precision='fp8' is unknown"):
        TrainConfig(precision="fp8")


def test_round_trip_and_unknown_keys():
    cfg = ModelConfig(levels=256, condition="lowres", cond_size=14, patch_size=2)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    train = TrainConfig(betas=(0.8, 0.9))
    assert TrainConfig.from_dict({**train.to_dict(), "betas": [0.8, 0.9]}) == train
    with pytest.raises(ValueError, match=r"no field\(s\) 'level' \(did you mean \['levels'\]\?\)"):
        ModelConfig.from_dict({"level": 16})
