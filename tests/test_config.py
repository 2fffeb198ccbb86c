"""Configs validate themselves with messages that say what to change."""

import dataclasses
import json
from pathlib import Path

import pytest
import tomllib

from imagen_tutorial import ImageTransformer, ModelConfig, TrainConfig
from imagen_tutorial.config import check_value


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


@pytest.mark.parametrize(
    "cls, fields, message",
    [
        (TrainConfig, {"progress": "false"}, "TrainConfig.progress='false' is not true or false: write true or false "
                                             "without quotes"),
        (ModelConfig, {"pixel_condition": 1}, "ModelConfig.pixel_condition=1 is not true or false"),
        (ModelConfig, {"levels": 2.5}, "ModelConfig.levels=2.5 is not a whole number: use 2..256"),
        (ModelConfig, {"levels": "16"}, "ModelConfig.levels='16' is a string, not an integer: write it without quotes"),
        (ModelConfig, {"d_model": True}, "ModelConfig.d_model=True is not an integer"),
        (TrainConfig, {"lr": "1e-3"}, "TrainConfig.lr='1e-3' is a string, not a number"),
        (TrainConfig, {"lr": float("nan")}, "TrainConfig.lr=nan is not a finite number: use a number > 0"),
        (TrainConfig, {"lr": 0}, "TrainConfig.lr=0.0 is out of range: use a number > 0"),
        (TrainConfig, {"min_lr_ratio": -0.1}, "TrainConfig.min_lr_ratio=-0.1 is out of range: use a number in [0, 1]"),
        (TrainConfig, {"weight_decay": -0.01}, "TrainConfig.weight_decay=-0.01 is out of range: use a number >= 0"),
        (TrainConfig, {"train_images": -5}, "TrainConfig.train_images=-5 is out of range: use 0..60000"),
        (TrainConfig, {"eval_images": 0}, "TrainConfig.eval_images=0 is out of range: use 1..10000"),
        (TrainConfig, {"log_every": 0}, "TrainConfig.log_every=0 is out of range: use 1..1000000000"),
        (TrainConfig, {"ckpt_every": 0}, "TrainConfig.ckpt_every=0 is out of range: use 1..1000000000"),
        (TrainConfig, {"betas": (0.9,)}, "TrainConfig.betas=(0.9,) is not a list of 2 values"),
        (TrainConfig, {"betas": (0.9, 1.5)}, r"TrainConfig.betas\[1\]=1.5 is out of range: use a number in [0, 1)"),
        (TrainConfig, {"device": "gpu"}, "TrainConfig.device='gpu' is not a device: use auto, cpu, cuda, cuda:N"),
        (TrainConfig, {"schedule": "epochs"}, "TrainConfig.schedule='epochs' is unknown: use one of steps, time"),
        (TrainConfig, {"ema_decay": 1.0}, "TrainConfig.ema_decay=1.0 is out of range: use a number in [0, 1)"),
        (TrainConfig, {"aug_max": 2}, "TrainConfig.aug_max=2.0 is out of range: use a number in [0, 1]"),
        (ModelConfig, {"family": "gan"}, "ModelConfig.family='gan' is unknown: use one of autoregressive, diffusion"),
        (ModelConfig, {"prediction": "x0"}, "ModelConfig.prediction='x0' is unknown: use one of eps, v"),
        (ModelConfig, {"condition": "caption_lowres"}, "condition='caption_lowres' is unknown for "
                                                       "family='autoregressive': use one of caption, lowres"),
    ],
)
def test_every_field_is_checked_for_type_and_range(cls, fields, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[0", r"\[0")):
        cls(**fields)


def test_every_field_has_a_spec_and_values_come_back_in_their_type():
    for cls in (ModelConfig, TrainConfig):
        assert {f.name for f in dataclasses.fields(cls)} == set(cls.SPECS), cls.__name__
    cfg = TrainConfig.from_dict({"lr": 1, "steps": 100.0, "betas": [0.8, 0.9]})  # as JSON may write them
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.steps == 100 and isinstance(cfg.steps, int)
    assert cfg.betas == (0.8, 0.9)


def test_config_files_and_checkpoints_go_through_the_same_check():
    with pytest.raises(ValueError, match="TrainConfig.compile='true' is not true or false"):
        TrainConfig.from_dict(tomllib.loads('compile = "true"'))
    with pytest.raises(ValueError, match="TrainConfig values must be a table of field = value, got list"):
        TrainConfig.from_dict([1, 2])


@pytest.mark.parametrize(
    "args, message",
    [
        (("temperature", -1.0, float), "temperature=-1.0 is out of range: use a number >= 0"),
        (("top_k", 0, int), "top_k=0 is out of range: use an integer >= 1"),
        (("--n", 0, int), "--n=0 is out of range: use an integer >= 1"),
    ],
)
def test_check_value_is_the_one_helper_for_other_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        check_value(*args, low=1 if args[2] is int else 0)
    assert check_value("top_k", None, int, low=1, optional=True) is None


def test_every_count_has_a_documented_maximum(capsys):
    from imagen_tutorial.__main__ import FLAG_SPECS, build_parser, main
    from imagen_tutorial.config import SAMPLING_SPECS

    tables = {**{f"ModelConfig.{k}": s for k, s in ModelConfig.SPECS.items()},
              **{f"TrainConfig.{k}": s for k, s in TrainConfig.SPECS.items()},
              **{f"sampling {k}": s for k, s in SAMPLING_SPECS.items()}, **{f"--{k}": s for k, s in FLAG_SPECS.items()}}
    assert [name for name, spec in tables.items() if spec.kind is int and spec.high is None] == []
    for command in ("train", "sample", "evaluate", "demo"):  # every integer flag has one, and --help shows it
        parser = build_parser()._subparsers._group_actions[0].choices[command]
        for action in parser._actions:
            if action.type is int:
                configs = {**ModelConfig.SPECS, **TrainConfig.SPECS}
                spec = configs[action.dest] if command == "train" else FLAG_SPECS[action.dest]
                assert spec.high is not None and f"{spec.high}" in action.help, (command, action.dest)
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    assert "--steps STEPS sampler steps (the base stage's, in a cascade); 1..1000" in " ".join(
        capsys.readouterr().out.split())
    assert main(["sample", "--checkpoint", "diffusion_base", "--steps", "100000000000000"]) == 2
    assert "--steps=100000000000000 is out of range: use 1..1000" in capsys.readouterr().err
    model = ImageTransformer(ModelConfig(image_size=4, d_model=8, n_layers=1, condition="none"))
    with pytest.raises(ValueError, match=r"batch_size=1000000 is out of range: use 1\.\.10000"):
        model.generate(batch_size=10**6)
