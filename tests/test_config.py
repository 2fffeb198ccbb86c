"""Configs validate themselves with messages that say what to change."""

import json
from pathlib import Path

import pytest
import tomllib

from imagen_tutorial import ImageTransformer, ModelConfig, TrainConfig


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


def test_shipped_training_configs_load_and_the_flagship_fits_a_16_mb_fp16_file():
    configs = Path(__file__).resolve().parent.parent / "configs"
    for path in sorted(configs.glob("*.toml")) + sorted(configs.glob("*.json")):
        values = tomllib.loads(path.read_text()) if path.suffix == ".toml" else json.loads(path.read_text())
        ModelConfig.from_dict(values["model"]), TrainConfig.from_dict(values["train"])
    flagship = json.loads((configs / "flagship.json").read_text())
    model = ImageTransformer(ModelConfig.from_dict(flagship["model"]))
    assert model.config.levels == 256 and model.config.condition == "caption"
    assert model.num_params() * 2 < 16 * 2**20  # fp16 weights
    train = TrainConfig.from_dict(flagship["train"])
    assert train.schedule == "time" and train.cond_dropout > 0 and train.ckpt_minutes == 1.0
