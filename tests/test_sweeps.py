"""The Part III sweeps (bench/encoder_ablation.py, bench/encoder_scaling.py): equal-compute plans, the committed run
configs, dry runs, and each script end to end on tiny configs in a temporary folder."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from imagen_tutorial.captions import CATEGORIES
from imagen_tutorial.checkpoint import load_checkpoint
from imagen_tutorial.train import Trainer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import encoder_ablation  # noqa: E402
import encoder_scaling  # noqa: E402
import sweeps  # noqa: E402

# A scenes base small enough to train, probe and grade in seconds: a 4x8 canvas, the shipped recipe otherwise.
TINY_BASE = """
[model]
family = "diffusion"
image_size = 4
aspect = 2
vocabulary = "scenes"
condition = "caption"
d_model = 32
n_heads = 4
n_layers = 2
n_enc_layers = 1
max_caption_len = 17
patch_size = 2

[train]
data = "scenes"
batch_size = 8
steps = 4
lr = 1e-3
warmup_steps = 1
ema_decay = 0.9
eval_every = 2
eval_images = 8
ckpt_every = 2
keep_every = 2
log_every = 1
progress = false
device = "cpu"
seed = 0
"""


@pytest.fixture
def tiny_repo(tmp_path, monkeypatch):
    """A folder laid out like the repository (configs/scenes_base.toml, tiny), the working directory of the test;
    one thread, as the sweeps run (on a loaded machine, two threads make these tiny models several times slower)."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "scenes_base.toml").write_text(TINY_BASE)
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path
    torch.set_num_threads(threads)


@pytest.fixture
def quick_evaluations(monkeypatch):
    """The Trainer's periodic evaluation (a test loss, a sample grid and 80 scenes of twin probe; tests/test_train.py
    and tests/test_scenes.py cover them) stubbed by fixed figures, so that a sweep's runs log their rows in a blink."""
    figures = {"twins_position": 0.5, "swapped_position": 0.25, "twins_binding": 0.5, "swapped_binding": 0.0}

    def evaluate(trainer):
        trainer.eval_figures = figures
        return 0.1

    monkeypatch.setattr(Trainer, "evaluate", evaluate)


@pytest.fixture
def tiny_sizes(monkeypatch):
    """Three tiny sizes of each part, so that the scaling sweep's runs train in a blink."""
    monkeypatch.setattr(encoder_scaling, "TEXT_ENCODERS", ((8, 1), (16, 1), (32, 2)))
    monkeypatch.setattr(encoder_scaling, "DENOISERS", ((16, 1), (32, 2), (48, 2)))
    monkeypatch.setattr(encoder_scaling, "REFERENCE", ((16, 1), (32, 2)))


def test_scaling_runs_spend_equal_compute_and_scale_one_part_at_a_time(tiny_repo):
    model, train = sweeps.read_config("configs/scenes_base.toml")
    budget = 1200 * sweeps.flops_per_step(model, train.batch_size)
    planned = encoder_scaling.scaling_runs(1200)
    assert len(planned) == 9 and {r.train.seed for r, _ in planned} == {0, 1}
    seeds = Counter(r.name.rsplit("_", 1)[0] for r, _ in planned)  # two seeds at the ends, one at the reference
    assert seeds.pop("text64x2_denoiser64x6") == 1 and set(seeds.values()) == {2}
    for run, lines in planned:  # each run's steps spend the budget, to within one step
        assert abs(run.end * run.flops_per_step() - budget) <= run.flops_per_step() / 2
        reference = encoder_scaling.REFERENCE
        assert ((run.model.d_model, run.model.n_layers) == reference[1]) == ("text encoder" in lines)
        assert ((run.model.d_text, run.model.n_enc_layers) == reference[0]) == ("denoiser" in lines)
    steps = {r.name.rsplit("_", 1)[0]: r.end for r, _ in planned}
    assert steps["text32x1_denoiser64x6"] > steps["text64x2_denoiser64x6"] > steps["text128x4_denoiser64x6"]
    assert steps["text64x2_denoiser48x4"] > steps["text64x2_denoiser64x6"] > steps["text64x2_denoiser96x8"]


def test_the_committed_run_configs_are_the_plans(monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = [r for r, _ in encoder_scaling.scaling_runs(1200)] + encoder_ablation.ablation_runs(6000)
    for run in runs:
        assert run.config.read_text() == run.config_text(), f"{run.config}: rerun the script's plan and commit it"
    bow = sweeps.read_config(ROOT / "bench/configs/encoder_ablation/bow.json")
    base = sweeps.read_config(ROOT / "configs/scenes_base.toml")
    assert bow[0].text_encoder == "bow" and bow[1] == base[1]  # the base run's training, only the encoder changed


def record_batches(trainer: Trainer) -> list:
    """The (images, caption tokens, dropped) batches the trainer draws from now on."""
    batches, draw = [], trainer.next_batch

    def next_batch():
        batches.append(draw())
        return batches[-1]

    trainer.next_batch = next_batch
    return batches


def test_every_text_encoder_trains_on_the_same_scenes_times_and_noise(tiny_repo):
    model, train = sweeps.read_config("configs/scenes_base.toml")
    seen = {}
    for encoder in ("cross", "pooled", "bow"):
        trainer = Trainer(dataclasses.replace(model, text_encoder=encoder), train, encoder)
        batches = record_batches(trainer)
        for _ in range(2):
            trainer.train_step()
        seen[encoder] = batches, torch.get_rng_state()  # the RNG that draws t and the noise, after two steps
    for encoder in ("pooled", "bow"):
        for (a, b) in zip(seen["cross"][0], seen[encoder][0], strict=True):
            for x, y in zip(a, b, strict=True):  # images, caption tokens, dropped captions
                assert torch.equal(x, y), encoder
        assert torch.equal(seen["cross"][1], seen[encoder][1]), encoder


def test_a_changed_config_file_is_refused_not_overwritten(tiny_repo):
    run = encoder_ablation.ablation_runs(2)[0]
    run.config.parent.mkdir(parents=True)
    run.config.write_text("{}")
    with pytest.raises(ValueError, match="differs from this sweep's plan for run 'bow'"):
        sweeps.write_config(run)
    assert run.config.read_text() == "{}"


def test_runs_trained_differently_are_not_compared():
    a = sweeps.read_config(ROOT / "configs/scenes_base.toml")[1]
    b = {**a.to_dict(), "lr": 3e-4, "seed": 1}
    with pytest.raises(ValueError, match="are not trained alike \\(seed: 0 / 1; lr: 0.001 / 0.0003\\)"):
        sweeps.check_same_training(a, b, "the runs")


def test_a_run_resumed_with_another_learning_rate_is_not_compared():
    base = sweeps.read_config(ROOT / "configs/scenes_base.toml")[1]
    resumed = {**base.to_dict(), "extra": {"resumed": [{"step": 1500, "lr": [1e-3, 5e-4], "max_minutes": [0, 60]}]}}
    with pytest.raises(ValueError, match="resumed with other values \\(lr changed at step 1500\\)"):
        sweeps.check_same_training(resumed, base, "the runs", until=2000)
    sweeps.check_same_training(resumed, base, "the runs", until=1000)  # compared before the change: alike


@pytest.mark.parametrize("script", [encoder_ablation, encoder_scaling])
def test_dry_run_prints_the_plan_and_its_cpu_hours_and_trains_nothing(script, tiny_repo, capsys):
    script.main(["--dry-run"] + (["--until", "2"] if script is encoder_ablation else []))
    out = capsys.readouterr().out
    assert "| run | text encoder | denoiser |" in out and "estimated CPU-hours on one thread:" in out
    assert "not started" in out and not (tiny_repo / "runs").exists()


def test_ablation_refuses_a_step_the_base_run_keeps_no_weights_at(tiny_repo):
    with pytest.raises(ValueError, match="--until=3 must be a multiple of keep_every=2"):
        encoder_ablation.main(["--until", "3", "--dry-run"])


def test_the_ablation_trains_to_the_step_grades_all_three_and_writes_traceable_results(tiny_repo, quick_evaluations,
                                                                                     capsys):
    model, train = sweeps.read_config("configs/scenes_base.toml")
    Trainer(model, train, "runs/scenes_base").run()  # the "shipped" cross-attention run, to its end
    encoder_ablation.main(["--until", "2", "--per-category", "2", "--steps", "2"])
    out = capsys.readouterr().out
    for name in ("bow", "pooled"):  # stopped at 2 of the base's 4-step schedule
        state = load_checkpoint(f"runs/encoder_ablation/{name}/checkpoint.pt")
        assert state["step"] == 2 and state["train_config"]["steps"] == 4
    results = json.loads(Path("bench/results/encoder_ablation.json").read_text())
    assert set(results["runs"]) == {"cross", "bow", "pooled"} and results["until"] == 2
    for name, run in results["runs"].items():
        assert Path(run["config"]).is_file() and Path(run["log"]).is_file() and run["weights"].endswith("002.pt")
        assert run["along_training"][0]["step"] == 2 and "position twins" in run["scores"], name
    assert Path("bench/results/encoder_ablation.png").is_file()
    assert "| position twins (pairs) |" in out and "cross − pooled, position twins:" in out


def test_the_scaling_sweep_trains_grades_and_plots_every_run(tiny_repo, tiny_sizes, quick_evaluations, monkeypatch,
                                                             capsys):
    names = [*CATEGORIES, "position twins", "attribute binding twins"]  # the ablation's test grades for real
    scores = {name: {"rate": 0.5, "n": 2, "swapped": 0.0} for name in names}
    monkeypatch.setattr(sweeps, "evaluate_scenes", lambda *a, **k: {"scores": scores, "ceiling": scores})
    encoder_scaling.main(["--budget", "1", "--per-category", "2", "--steps", "2"])
    out = capsys.readouterr().out
    results = json.loads(Path("bench/results/encoder_scaling.json").read_text())
    assert len(results["runs"]) == 9 and all(Path(r["log"]).is_file() for r in results["runs"])
    lines = {(s["line"], s["size"]) for s in results["summary"]}
    assert lines == {("text encoder", f) for f in ("8x1", "16x1", "32x2")} | {("denoiser", f) for f in
                                                                               ("16x1", "32x2", "48x2")}
    assert [s["seeds"] for s in results["summary"]] == [2, 1, 2] * 2  # each line, smallest size first
    assert Path("bench/results/encoder_scaling.png").is_file() and "per size, the mean of the seeds" in out


def test_grading_is_kept_and_read_back_for_the_same_weights_and_settings(tiny_repo, monkeypatch):
    model, train = sweeps.read_config("configs/scenes_base.toml")
    trainer = Trainer(model, train, "run")
    trainer.save()
    calls = []
    monkeypatch.setattr(sweeps, "evaluate_scenes", lambda *a, **k: calls.append(1) or {"scores": {}, "ceiling": {}})
    settings = dict(per_category=2, seed=0, steps=2, guidance=3.0)
    for _ in range(2):
        sweeps.grade("run", Path("run/checkpoint.pt"), None, Path("grades/run.json"), **settings)
    sweeps.grade("run", Path("run/checkpoint.pt"), None, Path("grades/run.json"), **{**settings, "steps": 3})
    assert len(calls) == 2


def test_progress_grades_every_kept_step_once_and_writes_a_table_plot_and_json(tiny_repo, quick_evaluations,
                                                                              monkeypatch, capsys):
    import scenes_progress

    model, train = sweeps.read_config("configs/scenes_base.toml")
    Trainer(model, train, "runs/scenes_base").run()  # keeps its weights at steps 2 and 4
    names = [*CATEGORIES, "position twins", "attribute binding twins"]
    calls = []

    def evaluate(model, classifier, per_category, seed, **sampling):
        calls.append(per_category)
        rate = 0.25 * len(calls)  # the later step reads better
        return {"scores": {n: {"rate": rate, "n": 2, "swapped": 0.0} for n in names},
                "ceiling": {n: {"rate": 0.9, "n": 2, "swapped": 0.0} for n in names}}

    monkeypatch.setattr(sweeps, "evaluate_scenes", evaluate)
    for _ in range(2):  # the second call reads every grade back
        scenes_progress.main(["--per-category", "2", "--steps", "2"])
    assert calls == [2, 2]
    out = capsys.readouterr().out
    assert "| 2 | 0.250 |" in out and "| 4 | 0.500 |" in out and "| ceiling | 0.900 |" in out
    results = json.loads(Path("bench/results/scenes_progress_scenes_base.json").read_text())
    assert list(results["steps"]) == ["2", "4"] and results["steps"]["4"]["scores"]["position"]["rate"] == 0.5
    assert Path("bench/results/scenes_progress_scenes_base.png").is_file() and Path(results["log"]).is_file()
    scenes_progress.main(["--per-category", "2", "--steps", "2", "--every", "4"])  # the grade of step 4, read back
    assert calls == [2, 2] and list(json.loads(Path("bench/results/scenes_progress_scenes_base.json").read_text())
                                    ["steps"]) == ["4"]
    with pytest.raises(ValueError, match="none of the steps runs/scenes_base kept is a multiple of --every 3"):
        scenes_progress.main(["--per-category", "2", "--steps", "2", "--every", "3"])
    with pytest.raises(ValueError, match="--every=-1"):
        scenes_progress.main(["--every", "-1"])


def test_progress_of_a_run_without_kept_weights_says_how_to_get_them(tiny_repo):
    import scenes_progress

    with pytest.raises(ValueError, match="holds no kept weights .* train it with keep_every > 0"):
        scenes_progress.main(["--run", "runs/nothing"])
