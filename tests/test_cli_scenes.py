"""Part III from the command line: a tiny scenes cascade shipped by tools/ship_checkpoint.py into a temporary checkpoint
folder (IMAGEN_TUTORIAL_CHECKPOINTS points the package at it), then sampled, evaluated and demonstrated; captions
outside the scenes grammar, or of the other grammar, refused in one line before any sampling."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from test_scenes import tiny_scenes_denoiser

from imagen_tutorial.__main__ import main, stage_aug_level
from imagen_tutorial.cascade import Cascade
from imagen_tutorial.config import TrainConfig
from imagen_tutorial.pretrained import CHECKPOINT_DIR, load_pretrained, read_manifest
from imagen_tutorial.train import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import ship_checkpoint  # noqa: E402

STAGES = ("scenes_base", "scenes_sr")


def train_tiny(out: Path, condition: str, data, steps: int = 2, train: dict | None = None,
               **model_overrides) -> Path:
    """A real (tiny) scenes run of the Trainer: OUT/checkpoint.pt and OUT/log.jsonl, as a run leaves them."""
    config = tiny_scenes_denoiser(condition=condition).config
    config = type(config).from_dict({**config.to_dict(), **model_overrides})
    cfg = TrainConfig(**{**dict(data="scenes", batch_size=8, steps=steps, warmup_steps=1, log_every=1, eval_every=0,
                                ckpt_every=100, progress=False, seed=0, ema_decay=0.9), **(train or {})})
    Trainer(config, cfg, out, data=data).run()
    return out


def ship(root: Path, *argv: str) -> int:
    return ship_checkpoint.main(["scenes", *argv, "--to", str(root), "--limit", "16"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, train_slice):
    folder = tmp_path_factory.mktemp("runs")
    return {"scenes_base": train_tiny(folder / "scenes_base", "caption", train_slice),
            "scenes_sr": train_tiny(folder / "scenes_sr", "caption_lowres", train_slice)}


def new_root(folder: Path) -> Path:
    """A checkpoint folder holding only the grader's slot classifier (the judge's network, shipped with the course)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("slot_classifier", "classifier"):
        entry = read_manifest(CHECKPOINT_DIR)[name]
        shutil.copyfile(CHECKPOINT_DIR / entry["file"], folder / entry["file"])
        ship_checkpoint.write_entries({name: entry}, folder)
    return folder


def stage_args(runs: dict, base: str = "scenes_base", sr: str = "scenes_sr") -> list[str]:
    return ["--stage", "scenes_base", str(runs[base]), "--stage", "scenes_sr", str(runs[sr])]


@pytest.fixture(scope="module")
def root(tmp_path_factory, runs):
    folder = new_root(tmp_path_factory.mktemp("checkpoints"))
    assert ship(folder, *stage_args(runs)) == 0
    return folder


@pytest.fixture
def shipped(root, monkeypatch):
    monkeypatch.setenv("IMAGEN_TUTORIAL_CHECKPOINTS", str(root))
    return root


# ---------------------------------------------------------------- the shipped cascade
def test_generate_of_a_scenes_cascade_gives_two_slot_canvases_in_the_unit_range():
    cascade = Cascade(tiny_scenes_denoiser(), tiny_scenes_denoiser(condition="caption_lowres"), guidance=(2.0, 1.0))
    images = cascade.generate(["a dark bag to the left of a small sneaker", "two dresses", "a coat on the right"],
                              steps=2, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, 1, 8, 16)  # the tiny SR stage's canvas, aspect 2: [B, 1, 28, 56] at full size
    assert images.min() >= 0 and images.max() <= 1


def test_a_cascade_samples_at_its_own_aug_level_unless_told_otherwise():
    base, sr = tiny_scenes_denoiser(), tiny_scenes_denoiser(condition="caption_lowres")
    cascade = Cascade(base, sr, aug_level=0.0)
    assert cascade.aug_level == 0.0 and Cascade(base, sr).aug_level == 0.2  # cascade.DEFAULT_AUG_LEVEL

    def draw(**kw):
        return cascade.generate(["two dresses", "a coat on the right"], steps=2,
                                generator=torch.Generator().manual_seed(0), **kw)

    torch.testing.assert_close(draw(), draw(aug_level=0.0), rtol=0, atol=0)
    assert not torch.equal(draw(), draw(aug_level=0.5))
    assert stage_aug_level(cascade) == 0.0 and stage_aug_level(cascade, 0.3) == 0.3
    assert stage_aug_level(sr) == 0.2  # an SR stage alone: the default
    with pytest.raises(ValueError, match=r"aug_level=2.0 is out of range: use a number in \[0, 1\]"):
        Cascade(base, sr, aug_level=2.0)


def test_one_command_ships_both_stages_and_the_scenes_cascade(root, runs):
    manifest = read_manifest(root)
    for stage in STAGES:
        entry, state = manifest[stage], torch.load(root / f"{stage}.pt", weights_only=True)
        assert entry["steps"] == 2 and entry["train_minutes"] >= 0 and entry["test_images"] == 16
        assert entry["size_bytes"] <= 16 * 2**20 and entry["config"]["vocabulary"] == "scenes"
        assert all(v.dtype == torch.float16 for v in state["model"].values() if v.is_floating_point())
        ema = torch.load(runs[stage] / "checkpoint.pt", weights_only=True)["ema"]
        torch.testing.assert_close(state["model"]["head.weight"], ema["head.weight"].half())  # the EMA weights
        assert (root / entry["log"]).is_file()
    scenes = manifest["scenes"]
    assert scenes["kind"] == "cascade" and list(scenes["stages"]) == list(STAGES)
    assert scenes["stages"]["scenes_base"] == manifest["scenes_base"]["sha256"]
    assert scenes["default_guidance"] == [3.0, 3.0] and "evaluation" not in scenes
    assert scenes["default_aug_level"] == 0.2
    cascade = load_pretrained("scenes", root=root)
    assert isinstance(cascade, Cascade) and cascade.guidance == (3.0, 3.0) and cascade.aug_level == 0.2


def test_shipping_refuses_stages_that_do_not_chain(tmp_path, runs, capsys):
    folder = new_root(tmp_path / "root")
    before = (folder / "manifest.json").read_text()
    assert ship(folder, *stage_args(runs, base="scenes_sr", sr="scenes_base")) == 2  # the SR stage first
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "base stage must read condition='caption'" in err
    wide = train_tiny(tmp_path / "wide", "caption_lowres", None, steps=1, image_size=12, cond_size=6)
    assert ship(folder, "--stage", "scenes_base", str(runs["scenes_base"]), "--stage", "scenes_sr", str(wide)) == 2
    assert re.search(r"do not chain: the SR stage reads 6×12 images .* but the base draws 4×8", capsys.readouterr().err)
    assert (folder / "manifest.json").read_text() == before and sorted(p.name for p in folder.glob("*.pt")) == \
        ["classifier.pt", "slot_classifier.pt"]  # nothing shipped, no file left behind


def test_one_stage_of_a_shipped_cascade_is_replaced_by_its_fine_tuned_run_and_the_other_kept(
        tmp_path, runs, train_slice, monkeypatch, capsys):
    folder = new_root(tmp_path / "root")
    assert ship(folder, *stage_args(runs)) == 0
    manifest = read_manifest(folder)  # as the shipped stages were: trained before these fields existed
    for field in ("scene_forms", "and_in_order"):
        del manifest["scenes_sr"]["train_config"][field]
    ship_checkpoint.write_entries(manifest, folder)
    before, base_bytes = read_manifest(folder), (folder / "scenes_base.pt").read_bytes()
    old_log = (folder / "scenes_sr_log.jsonl").read_text()
    monkeypatch.setenv("IMAGEN_TUTORIAL_CHECKPOINTS", str(folder))  # --init-from scenes_sr: the shipped SR stage
    tuned = train_tiny(tmp_path / "tuned", "caption_lowres", train_slice, steps=3,
                       train={"init_from": "scenes_sr", "lr": 1e-4, "seed": 1,
                              "scene_forms": (1, 1, 1, 6, 3, 3, 1), "and_in_order": True})
    assert ship(folder, "--stage", "scenes_nope", str(tuned)) == 2
    assert "the shipped scenes has the stages scenes_base and scenes_sr: name one of them" in capsys.readouterr().err
    assert ship(folder, "--stage", "scenes_sr", str(tuned), "--replace") == 0
    after = read_manifest(folder)
    assert after["scenes_base"] == before["scenes_base"] and (folder / "scenes_base.pt").read_bytes() == base_bytes
    assert after["scenes_sr"]["steps"] == 3 and after["scenes_sr"]["sha256"] != before["scenes_sr"]["sha256"]
    assert after["scenes"]["stages"] == {"scenes_base": before["scenes_base"]["sha256"],
                                         "scenes_sr": after["scenes_sr"]["sha256"]}
    trained = after["scenes_sr"]["trained"]
    assert re.match(r"fine-tuned from the shipped scenes_sr \(2 steps in [\d.]+ min\): 3 steps of batch 8", trained)
    assert trained.endswith("--config configs/scenes_sr.toml --init-from scenes_sr --steps 3 --lr 0.0001 --seed 1 "
                            "--scene-forms 1.0 1.0 1.0 6.0 3.0 3.0 1.0 --and-in-order --out runs/scenes_sr")
    log = (folder / "scenes_sr_log.jsonl").read_text()  # the shipped stage's history, then the fine-tuning's
    assert log == old_log + '{"fine_tuned_from": "scenes_sr", "steps_before": 2}\n' + (tuned / "log.jsonl").read_text()
    assert isinstance(load_pretrained("scenes", root=folder), Cascade)


def test_shipping_refuses_a_run_that_is_not_a_scenes_model(tmp_path, train_slice, capsys):
    from conftest import tiny_config

    run = tmp_path / "text2img"
    cfg = TrainConfig(batch_size=8, steps=1, warmup_steps=1, log_every=1, eval_every=0, progress=False)
    Trainer(tiny_config(), cfg, run, data=train_slice).run()
    folder = new_root(tmp_path / "root")
    assert ship_checkpoint.main(["scenes_base", "--run", str(run), "--to", str(folder)]) == 2
    assert "is not a scenes model (its vocabulary is 'classes'" in capsys.readouterr().err
    assert not (folder / "scenes_base.pt").exists()


def test_a_shipped_cascade_is_not_replaced_by_one_model(root, runs, capsys):
    before = (root / "manifest.json").read_text()
    assert ship_checkpoint.main(["scenes", "--run", str(runs["scenes_base"]), "--to", str(root)]) == 2
    assert "'scenes' is a shipped cascade, not one model: ship it with --stage twice" in capsys.readouterr().err
    assert (root / "manifest.json").read_text() == before


def test_shipping_refuses_a_file_over_16_mb(tmp_path, runs, capsys, monkeypatch):
    monkeypatch.setattr(ship_checkpoint, "MAX_BYTES", 50_000)  # the tiny stages are ~150 kB: over this limit
    folder = new_root(tmp_path / "root")
    assert ship(folder, *stage_args(runs)) == 2
    assert re.search(r"scenes_base\.pt would be 0\.\d MB, over the 16 MB limit .* nothing was replaced",
                     capsys.readouterr().err)
    assert not list(folder.glob("scenes*")) and not list(folder.glob(".*tmp"))


def test_shipping_never_replaces_a_better_stage_or_evaluation(tmp_path, runs, capsys):
    folder = new_root(tmp_path / "root")
    assert ship(folder, *stage_args(runs)) == 0
    manifest = read_manifest(folder)
    manifest["scenes_base"]["test_loss"] = 0.0  # as if the shipped base were perfect
    ship_checkpoint.write_entries(manifest, folder)
    assert ship(folder, *stage_args(runs)) == 2
    assert "the shipped scenes_base has test_loss 0.0 after 2 steps; this run has" in capsys.readouterr().err
    assert read_manifest(folder) == manifest
    assert ship(folder, *stage_args(runs), "--replace") == 0
    capsys.readouterr()
    evaluation = {"checkpoint": "scenes", "kind": "scenes", "stages": read_manifest(folder)["scenes"]["stages"],
                  "runs": [_run(per_category=20)]}
    (tmp_path / "eval.json").write_text(json.dumps(evaluation))
    assert ship(folder, "--evaluation", str(tmp_path / "eval.json")) == 0
    evaluation["runs"] = [_run(per_category=10)]
    (tmp_path / "eval.json").write_text(json.dumps(evaluation))
    assert ship(folder, "--evaluation", str(tmp_path / "eval.json")) == 2
    assert "holds an evaluation of 20 captions per category; this one has 10" in capsys.readouterr().err
    assert ship(folder, "--evaluation", str(tmp_path / "eval.json"), "--replace") == 0


def _run(per_category: int, guidance=(3.0, 3.0), rate: float = 0.5, aug_level: float = 0.2) -> dict:
    """One guidance of an evaluation, as grader.evaluate_scenes returns it."""
    names = ("single object", "position twins")
    return {"guidance": list(guidance), "steps": [2, 2], "aug_level": aug_level, "per_category": per_category,
            "seconds_per_scene": 0.1,
            "scores": {n: {"rate": rate, "n": per_category, "swapped": 0.0} for n in names},
            "ceiling": {n: {"rate": 0.8, "n": per_category, "swapped": 0.0} for n in names}}


def test_evaluation_figures_merge_with_their_best_guidance_and_only_for_the_files_measured(tmp_path, runs, capsys):
    folder = new_root(tmp_path / "root")
    assert ship(folder, *stage_args(runs)) == 0
    stages = read_manifest(folder)["scenes"]["stages"]
    evaluation = {"checkpoint": "scenes", "kind": "scenes", "stages": stages,
                  "runs": [_run(10, (1.0, 3.0), 0.2), _run(10, (5.0, 1.0), 0.6, aug_level=0.0)]}
    (tmp_path / "eval.json").write_text(json.dumps(evaluation))
    assert ship(folder, "--evaluation", str(tmp_path / "eval.json")) == 0
    entry = read_manifest(folder)["scenes"]
    assert entry["default_guidance"] == [5.0, 1.0] and entry["evaluation"]["best_fraction_of_ceiling"] == 0.75
    assert entry["default_aug_level"] == 0.0 and entry["evaluation"]["best_aug_level"] == 0.0
    assert entry["evaluation"]["by_guidance"][0]["scores"] == {"single object": 0.2, "position twins": 0.2}
    cascade = load_pretrained("scenes", root=folder)
    assert cascade.guidance == (5.0, 1.0) and cascade.aug_level == 0.0
    assert ship(folder, "--default-aug-level", "0.1") == 0  # told: the evaluation's best is overridden
    assert read_manifest(folder)["scenes"]["default_aug_level"] == 0.1
    assert read_manifest(folder)["scenes"]["default_guidance"] == [5.0, 1.0]  # the rest is kept
    for argv, message in ((["--default-aug-level", "2"], "aug_level=2.0 is out of range"),
                          (["--run", str(runs["scenes_base"]), "--default-aug-level", "0"],
                           "--default-aug-level applies to a cascade")):
        assert ship(folder, *argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err
    assert read_manifest(folder)["scenes"]["default_aug_level"] == 0.1  # nothing written by a refusal
    evaluation["stages"] = {"scenes_base": "0" * 64, "scenes_sr": stages["scenes_sr"]}
    (tmp_path / "other.json").write_text(json.dumps(evaluation))
    assert ship(folder, "--evaluation", str(tmp_path / "other.json")) == 2
    assert "measured other files than the stages shipped" in capsys.readouterr().err


# ---------------------------------------------------------------- the command line
def test_sample_draws_a_scene_caption_with_its_gif(shipped, tmp_path, capsys):
    png, gif = tmp_path / "bag.png", tmp_path / "bag.gif"
    argv = ["sample", "--checkpoint", "scenes", "--caption", "a dark bag to the left of a small sneaker", "--n", "2",
            "--steps", "2", "--out", str(png), "--gif", str(gif)]
    assert main(argv) == 0, capsys.readouterr().err
    assert png.stat().st_size > 0 and gif.stat().st_size > 0


def test_sample_without_captions_draws_each_twin_beside_its_caption(shipped, tmp_path, capsys):
    from PIL import Image

    assert main(["sample", "--checkpoint", "scenes", "--steps", "2", "--out", str(tmp_path / "twins.png")]) == 0
    out = capsys.readouterr().out
    assert "'a bag to the left of a sneaker' | 'a sneaker to the left of a bag'" in out
    width, height = Image.open(tmp_path / "twins.png").size
    assert (width, height) == (4 * (2 + 2 * 18), 4 * (2 + 5 * 10))  # two 8×16 scenes a row, five rows (padding 2)


@pytest.mark.parametrize("caption, message", [
    ("a bag left of a sneaker", "caption 'a bag left of a sneaker' is not in the scenes grammar; the closest valid "
                                "caption is 'a bag to the left of a sneaker' (`python -m imagen_tutorial grammar` "
                                "prints the grammar)"),
    ("a photo of a bag", "is a single-garment caption (Parts I and II), which text2img, diffusion_base and cascade "
                         "read; scenes draws scenes of two garments: the closest scene caption is 'a bag'"),
])
def test_a_caption_outside_the_scenes_grammar_is_one_line_before_any_sampling(shipped, tmp_path, capsys,
                                                                              monkeypatch, caption, message):
    from imagen_tutorial.denoiser import Denoiser

    monkeypatch.setattr(Denoiser, "generate", lambda *a, **k: pytest.fail("sampled before checking the captions"))
    argv = ["sample", "--checkpoint", "scenes", "--caption", "a bag", "--caption", caption, "--out",
            str(tmp_path / "x.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_a_scene_caption_given_to_a_single_garment_model_names_the_checkpoint_that_reads_it(tmp_path, capsys):
    from conftest import tiny_model

    from imagen_tutorial.checkpoint import export_model

    path = export_model(tiny_model(), tmp_path / "t2i.pt")
    assert main(["sample", "--checkpoint", str(path), "--caption", "a bag to the left of a sneaker"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a scene caption (Part III), which --checkpoint scenes reads" in err


def test_grammar_prints_the_grammar_and_is_listed_in_help(capsys):
    assert main(["grammar"]) == 0
    out = capsys.readouterr().out
    assert "OBJ     := a|an [dark] [small] NOUN" in out and "two pairs of trousers" in out
    assert "a sandal to the left of a bag" in out and "a small sandal or a dark dress" in out
    assert main(["grammar", "--all"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4930
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "print the scenes grammar" in capsys.readouterr().out


def test_evaluate_prints_the_categories_beside_the_ceiling_and_json_for_shipping(shipped, tmp_path, capsys):
    base = ["evaluate", "--checkpoint", "scenes", "--per-category", "2", "--steps", "1", "--guidance", "2"]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "| category | guidance 2 and 3 | ceiling | fraction of the ceiling |" in out
    for row in ("single object", "counting", "held-out", "position twins", "attribute binding twins"):
        assert f"| {row} | " in out
    assert "| category | kinds | commonest reasons | real scenes |" in out  # why the failures fail
    assert main([*base, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "scenes" and result["stages"] == read_manifest(shipped)["scenes"]["stages"]
    assert result["runs"][0]["guidance"] == [2.0, 3.0] and result["runs"][0]["scores"]["position twins"]["n"] == 1
    (tmp_path / "eval.json").write_text(json.dumps(result))
    folder = tmp_path / "copy"  # what shipping does with it (a copy of the root: the module's stays as it is)
    shutil.copytree(shipped, folder)
    assert ship(folder, "--evaluation", str(tmp_path / "eval.json")) == 0
    assert read_manifest(folder)["scenes"]["evaluation"]["per_category"] == 2


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "--checkpoint", "scenes", "--per-class", "5"], "--per-class applies only to models of single "
                                                                  "garments (Parts I and II; a scenes model is "
                                                                  "graded with --per-category)"),
    (["evaluate", "--checkpoint", "scenes", "--per-category", "1"], "--per-category=1 is out of range: use 2..1000"),
    (["evaluate", "--checkpoint", "scenes_sr"], "evaluate grades scenes drawn from captions"),
    (["demo", "--scenes", "--columns", "3"], "--columns applies only to the demo of a row per class, and demo "
                                             "--scenes draws captions beside their swapped twins"),
    (["demo", "--scenes", "--train"], "--scenes applies only to demo without --train"),
    (["demo", "--checkpoint", "scenes"], "it draws scenes of two garments, not a row per class; add --scenes"),
])
def test_scenes_flags_that_do_not_apply_are_refused_in_one_line(shipped, tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path / "o")] if argv[0] == "demo" else argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_per_category_is_refused_for_a_single_garment_model(tmp_path, capsys):
    from conftest import tiny_model

    from imagen_tutorial.checkpoint import export_model

    path = export_model(tiny_model(), tmp_path / "t2i.pt")
    assert main(["evaluate", "--checkpoint", str(path), "--per-category", "10"]) == 2
    assert "--per-category applies only to scenes models" in capsys.readouterr().err


def test_demo_scenes_draws_twins_labelled_with_the_graders_verdict(shipped, tmp_path, capsys):
    assert main(["demo", "--scenes", "--steps", "2", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "demo" / "scenes.png").stat().st_size > 0
    assert re.search(r"(pass|FAIL)  a bag to the left of a sneaker", out)
    assert re.search(r"the grader passes \d+ of 10 scenes \(\d of 5 twin pairs both right\); real test scenes of "
                     r"the same captions at 8×16: \d+ of 10", out)
