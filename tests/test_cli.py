"""The command line: train, sample, evaluate, and errors printed for people (exit code 2)."""

import json

import pytest
import torch
from conftest import tiny_model
from torch.testing import assert_close

from imagen_tutorial.__main__ import main
from imagen_tutorial.checkpoint import export_model
from imagen_tutorial.data import load_fashion_mnist, make_caption, quantize, resize


def test_evaluate_json_equals_model_bits_per_dim(tmp_path, capsys):
    model = tiny_model("caption")
    path = export_model(model, tmp_path / "tiny.pt")
    argv = ["evaluate", "--checkpoint", str(path), "--split", "test", "--limit", "20", "--per-class", "0", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    images, labels = load_fashion_mnist("test")
    levels = quantize(resize(images[:20], 6), 8)
    expected = model.bits_per_dim(levels, [make_caption(int(k)) for k in labels[:20]]).mean()
    assert result["images"] == 20
    assert_close(torch.tensor(result["bits_per_dim"]), expected)


def test_train_then_sample_from_the_command_line(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text('[model]\nimage_size = 6\nlevels = 8\nd_model = 32\nn_layers = 1\nn_enc_layers = 1\n'
                      '[train]\nsteps = 2\nbatch_size = 8\neval_every = 0\nprogress = false\n')
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--train-images", "64", "--lr", "0.01", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 2
    png, gif = tmp_path / "s.png", tmp_path / "s.gif"
    args = ["sample", "--checkpoint", str(out / "checkpoint.pt"), "--caption", "an ankle boot", "--caption",
            "a bag", "--n", "2", "--guidance", "2", "--top-k", "4", "--out", str(png), "--gif", str(gif)]
    assert main(args) == 0
    assert png.stat().st_size > 0 and gif.stat().st_size > 0
    assert main(["train", "--config", str(config), "--steps", "3", "--out", str(out), "--resume"]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "--checkpoint", "missing.pt"], "checkpoint missing.pt does not exist"),
        (["train", "--levels", "300"], "levels=300 is out of range"),
        (["train", "--config", "nowhere.json"], "config file nowhere.json does not exist"),
    ],
)
def test_bad_input_prints_a_clear_error(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_unknown_caption_word_from_the_command_line(tmp_path, capsys):
    path = export_model(tiny_model("caption"), tmp_path / "tiny.pt")
    assert main(["sample", "--checkpoint", str(path), "--caption", "a photo of a sneeker"]) == 2
    assert "did you mean 'sneaker'" in capsys.readouterr().err


def test_help_lists_the_four_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "{train,sample,evaluate,demo}" in capsys.readouterr().out


def test_demo_draws_a_row_per_class_and_reports_the_judge(tmp_path, capsys):
    path = export_model(tiny_model("caption"), tmp_path / "tiny.pt")
    argv = ["demo", "--checkpoint", str(path), "--columns", "2", "--out", str(tmp_path / "demo")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "the judge classifier assigns" in out
    assert (tmp_path / "demo" / "samples.png").is_file() and (tmp_path / "demo" / "generation.gif").is_file()


def test_demo_refuses_a_model_without_captions(tmp_path, capsys):
    path = export_model(tiny_model("lowres"), tmp_path / "tiny.pt")
    assert main(["demo", "--checkpoint", str(path), "--out", str(tmp_path / "demo")]) == 2
    assert "draws from captions" in capsys.readouterr().err


def test_evaluate_a_shipped_checkpoint_matches_a_direct_computation(capsys):
    # The check: `evaluate --limit 200` on a shipped checkpoint within 0.02 of model.bits_per_dim.
    from imagen_tutorial import load_pretrained
    from imagen_tutorial.pretrained import CHECKPOINT_DIR

    argv = ["evaluate", "--checkpoint", str(CHECKPOINT_DIR / "text2img.pt"), "--limit", "200", "--per-class", "0",
            "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    model = load_pretrained("text2img")
    images, labels = load_fashion_mnist("test")
    captions = [make_caption(int(k)) for k in labels[:200]]
    direct = torch.cat([model.bits_per_dim(quantize(images[i : i + 100], 16), captions[i : i + 100])
                        for i in (0, 100)]).mean().item()
    assert result["images"] == 200 and abs(result["bits_per_dim"] - direct) < 0.02


def test_evaluate_judges_samples_at_each_guidance(tmp_path, capsys):
    path = export_model(tiny_model("caption"), tmp_path / "tiny.pt")
    argv = ["evaluate", "--checkpoint", str(path), "--limit", "10", "--per-class", "1", "--guidance", "1",
            "--guidance", "3", "--temperature", "0.5", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert [run["guidance"] for run in result["by_guidance"]] == [1.0, 3.0]
    assert [run["temperature"] for run in result["by_guidance"]] == [0.5, 0.5]
    assert result["samples"] == 10 and 0 <= result["accuracy"] <= 1 and result["frechet_distance"] >= 0
    assert 0.1 < result["judge_accuracy_on_test_images"] <= 1  # real test images at 6×6, 8 levels: hard to judge
