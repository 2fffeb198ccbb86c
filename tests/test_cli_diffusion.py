"""The command line for Part II: train a diffusion model from a config, sample it (and a cascade) with a GIF of the
denoising trajectory, evaluate it on the text2img protocol, and refuse bad input in one line."""

import json

import pytest
import torch
from test_diffusion import tiny_denoiser

from imagen_tutorial.__main__ import main
from imagen_tutorial.cascade import DEFAULT_GUIDANCE
from imagen_tutorial.checkpoint import export_model


@pytest.fixture
def stages(tmp_path):
    base = export_model(tiny_denoiser(image_size=14, patch_size=7), tmp_path / "base.pt")
    sr = export_model(tiny_denoiser("caption_lowres", image_size=28, cond_size=14, patch_size=7), tmp_path / "sr.pt")
    return base, sr


def test_train_a_diffusion_model_from_a_config_file(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text('[model]\nfamily = "diffusion"\nimage_size = 14\npatch_size = 7\nd_model = 32\nn_layers = 3\n'
                      'n_enc_layers = 1\n[train]\nsteps = 2\nbatch_size = 8\neval_every = 0\nema_decay = 0.9\n'
                      'progress = false\n')
    assert main(["train", "--config", str(config), "--train-images", "64", "--out", str(tmp_path / "run")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 2 and "train_loss" in summary
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert "ema" in state and state["model_config"]["family"] == "diffusion"


def test_sample_a_base_model_an_sr_stage_and_a_cascade(stages, tmp_path, capsys):
    base, sr = stages
    for name, extra in (("base", ["--checkpoint", str(base), "--caption", "a bag", "--guidance", "2"]),
                        ("sr", ["--checkpoint", str(sr), "--aug-level", "0.1"]),
                        ("cascade", ["--checkpoint", str(base), "--sr-checkpoint", str(sr), "--sr-steps", "2",
                                     "--threshold", "static"])):
        png, gif = tmp_path / f"{name}.png", tmp_path / f"{name}.gif"
        argv = ["sample", *extra, "--n", "2", "--steps", "3", "--out", str(png), "--gif", str(gif)]
        assert main(argv) == 0, name
        assert png.stat().st_size > 0 and gif.stat().st_size > 0


def test_evaluate_a_cascade_judges_its_samples(stages, capsys):
    base, sr = stages
    argv = ["evaluate", "--checkpoint", str(base), "--sr-checkpoint", str(sr), "--per-class", "1", "--steps", "2",
            "--guidance", "1", "--guidance", "2", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "cascade" and result["images"] == 10
    assert [run["guidance"] for run in result["by_guidance"]] == [1.0, 2.0]
    assert 0 <= result["accuracy"] <= 1 and result["frechet_distance"] > 0 and result["seconds_per_image"] > 0


@pytest.mark.parametrize("extra, message", [
    (["--steps", "0"], r"--steps=0 is out of range: use 1\.\.1000"),
    (["--aug-level", "-0.5"], r"--aug-level=-0.5 is out of range: use a number in \[0, 1\]"),
    (["--caption", "a photo of a sneeker"], "caption word 'sneeker'"),
])
def test_bad_diffusion_sampling_input_is_one_line(stages, tmp_path, capsys, extra, message):
    base, sr = stages
    argv = ["sample", "--checkpoint", str(base), "--sr-checkpoint", str(sr), "--out", str(tmp_path / "x.png"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:")
    assert pytest.importorskip("re").search(message, err), err


def test_a_cascade_refuses_an_autoregressive_stage(stages, tmp_path, capsys):
    from conftest import tiny_model

    base, _ = stages
    ar = export_model(tiny_model(), tmp_path / "ar.pt")
    argv = ["sample", "--checkpoint", str(base), "--sr-checkpoint", str(ar), "--out", str(tmp_path / "x.png")]
    assert main(argv) == 2
    assert "sr stage must be a diffusion model" in capsys.readouterr().err



def test_guidance_flags_mean_one_thing_on_the_sr_stage_in_sample_and_evaluate(stages, tmp_path, capsys,
                                                                               monkeypatch):
    # --guidance guides the model in hand (an SR stage alone too; a cascade's base), --sr-guidance a cascade's SR
    # stage, whichever command reads them: what each stage is asked for, recorded at its generate call.
    import imagen_tutorial.__main__ as cli
    from imagen_tutorial.denoiser import Denoiser
    from imagen_tutorial.metrics import reference_features

    asked, generate = [], Denoiser.generate
    monkeypatch.setattr(Denoiser, "generate", lambda self, *a, **k: asked.append(
        ("sr" if self.reads_lowres else "base", k["guidance"])) or generate(self, *a, **k))
    monkeypatch.setattr(cli, "reference_features", lambda judge, levels: reference_features(judge, 50, levels=levels))
    base, sr = stages
    alone, cascade = ["--checkpoint", str(sr)], ["--checkpoint", str(base), "--sr-checkpoint", str(sr)]
    runs = {"sample": ["--n", "2", "--out", str(tmp_path / "x.png")], "evaluate": ["--per-class", "1", "--json"]}
    for command, extra in runs.items():
        for model, flags, expected in ((alone, ["--guidance", "8"], [("sr", 8.0)]), (
                cascade, ["--guidance", "2", "--sr-guidance", "8"], [("base", 2.0), ("sr", 8.0)])):
            asked.clear()
            assert main([command, *model, *flags, "--steps", "2", *extra]) == 0, capsys.readouterr().err
            assert asked == expected, (command, flags)
        assert main([command, *alone, "--sr-guidance", "8", *extra]) == 2
        assert "--sr-guidance applies only to the SR stage of a cascade" in capsys.readouterr().err
    sr_alone, both = cli.load_any(str(sr)), cli.load_any(str(base), sr=str(sr))  # the defaults, for both commands
    assert cli.stage_guidance(sr_alone) == DEFAULT_GUIDANCE[1] and cli.stage_guidance(both) == DEFAULT_GUIDANCE
