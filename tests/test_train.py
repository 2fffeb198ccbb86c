"""The training loop: schedule, decay groups, accumulation, exact resume, NaN guard, DDP."""

import itertools
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config, tiny_model
from torch.testing import assert_close

from imagen_tutorial import TrainConfig, load_checkpoint
from imagen_tutorial import train as train_module
from imagen_tutorial.train import Trainer, TrainingDiverged, TrainingInterrupted, lr_factor, make_optimizer
from imagen_tutorial.viz import read_log

ROOT = Path(__file__).resolve().parent.parent


def _train_config(**overrides):
    values = dict(batch_size=16, steps=6, warmup_steps=2, log_every=2, eval_every=0, ckpt_every=100,
                  progress=False, cond_dropout=0.5, hflip=0.5, crop_padding=1, seed=3)
    return TrainConfig(**{**values, **overrides})


def test_lr_warms_up_then_follows_a_cosine_to_the_floor():
    cfg = TrainConfig(steps=110, warmup_steps=10, min_lr_ratio=0.1)
    factors = [lr_factor(s, cfg) for s in range(111)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[60] == pytest.approx(0.55)  # halfway through the cosine
    assert factors[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[9:-1], factors[10:], strict=True))


def test_time_schedule_rejects_a_run_without_a_budget():
    with pytest.raises(ValueError, match="schedule='time' decays the learning rate over max_minutes"):
        TrainConfig(schedule="time")
    with pytest.raises(ValueError, match="schedule='epochs' is unknown: use one of steps, time"):
        TrainConfig(schedule="epochs")


def test_time_schedule_ends_at_the_floor_when_the_clock_runs_out(tmp_path, train_slice, monkeypatch):
    clock = itertools.count(0.0, 3.0)  # a fake clock: every reading is 3 s later than the last
    monkeypatch.setattr(train_module.time, "perf_counter", lambda: next(clock))
    cfg = _train_config(steps=10_000, warmup_steps=2, log_every=1, max_minutes=1.0, schedule="time",
                        ckpt_every=10_000, ckpt_minutes=0.25)
    trainer = Trainer(tiny_config(), cfg, tmp_path, data=train_slice)
    saves = []
    monkeypatch.setattr(trainer, "save", lambda: saves.append(trainer.step))
    trainer.run()
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert 2 < trainer.step < 100  # stopped by the clock, far before `steps`
    assert lrs[-1] == pytest.approx(cfg.lr * cfg.min_lr_ratio)  # the cosine finished with the budget
    assert all(a >= b for a, b in zip(lrs[1:-1], lrs[2:], strict=True)) and lrs[1] > 0.5 * cfg.lr
    assert len(saves) >= 4 and saves[-1] == trainer.step  # every quarter of a minute, and at the end


def test_weight_decay_skips_biases_norms_and_embeddings():
    model = tiny_model("lowres")
    decay, no_decay = make_optimizer(model, TrainConfig(), torch.device("cpu")).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(n.endswith("weight") for n in decayed)
    tables = ("level_emb", "row_emb", "col_emb", "pos_emb", "null_memory", ".ln")
    assert not any(t in n for t in tables for n in decayed)
    assert "decoder.head.weight" in decayed and "encoder.patch_emb.weight" in decayed
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_accumulation_gives_the_same_gradient_as_one_big_batch(train_slice):
    grads = []
    for accum in (1, 4):
        cfg = _train_config(accum_steps=accum, hflip=0.0, crop_padding=0, grad_clip=0.0)
        trainer = Trainer(tiny_config("none"), cfg, "unused", data=train_slice)
        trainer.train_step()  # the gradients stay on the parameters after the step
        grads.append(torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None]))
    assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-4)


def test_resume_continues_exactly(tmp_path, train_slice):
    straight = Trainer(tiny_config(dropout=0.1), _train_config(), tmp_path / "a", data=train_slice)
    straight.run()
    first = Trainer(tiny_config(dropout=0.1), _train_config(), tmp_path / "b", data=train_slice)
    for _ in range(2):
        first.train_step()
    first.save()
    resumed = Trainer(tiny_config(dropout=0.1), _train_config(), tmp_path / "b", resume=True, data=train_slice)
    assert resumed.step == 2
    resumed.run()
    a, b = load_checkpoint(tmp_path / "a" / "checkpoint.pt"), load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert a["step"] == b["step"] == 6
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert_close(a["optimizer"], b["optimizer"], rtol=0, atol=0)


def test_keep_every_keeps_the_ema_weights_at_those_steps(tmp_path, train_slice):
    cfg = _train_config(keep_every=3, ema_decay=0.9)
    trainer = Trainer(tiny_config(), cfg, tmp_path, data=train_slice)
    trainer.run()
    kept = sorted(p.name for p in tmp_path.glob("weights_step*.pt"))
    assert kept == ["weights_step000003.pt", "weights_step000006.pt"]
    last = load_checkpoint(tmp_path / "weights_step000006.pt")
    assert last["steps"] == 6 and "optimizer" not in last
    for name, tensor in trainer.ema.state_dict().items():  # the EMA, not the raw weights, stored in fp16
        assert_close(last["model"][name].float(), tensor.half().float(), rtol=0, atol=0)


def test_stop_at_ends_the_run_early_on_the_same_schedule(tmp_path, train_slice):
    straight = Trainer(tiny_config(), _train_config(), tmp_path / "a", data=train_slice)
    straight.run()
    stopped = Trainer(tiny_config(), _train_config(stop_at=3), tmp_path / "b", data=train_slice)
    stopped.run()
    assert stopped.step == 3 and load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 3
    assert stopped.optimizer.param_groups[0]["lr"] == pytest.approx(2e-3 * lr_factor(3, _train_config()))
    Trainer(tiny_config(), _train_config(), tmp_path / "b", resume=True, data=train_slice).run()  # on to steps
    a, b = load_checkpoint(tmp_path / "a" / "checkpoint.pt"), load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    for name, tensor in a["model"].items():  # stopping at 3 and resuming is the straight 6-step run
        assert torch.equal(tensor, b["model"][name]), name


def test_stop_at_must_lie_within_the_schedule_and_ahead_of_a_resumed_run(tmp_path, train_slice):
    with pytest.raises(ValueError, match="stop_at=7 is past steps=6, where the schedule ends"):
        _train_config(stop_at=7)
    Trainer(tiny_config(), _train_config(stop_at=3), tmp_path, data=train_slice).run()
    with pytest.raises(ValueError, match="already at step 3 and stop_at=3: nothing is left to train. Raise --stop-at"):
        Trainer(tiny_config(), _train_config(stop_at=3), tmp_path, resume=True, data=train_slice)


def test_resume_with_another_model_config_names_the_fields(tmp_path, train_slice):
    trainer = Trainer(tiny_config(), _train_config(), tmp_path, data=train_slice)
    trainer.save()
    with pytest.raises(ValueError, match="d_model=32 in checkpoint .* but 64 here"):
        Trainer(tiny_config(d_model=64), _train_config(), tmp_path, resume=True, data=train_slice)


def test_fresh_run_refuses_to_overwrite_a_checkpoint(tmp_path, train_slice):
    Trainer(tiny_config(), _train_config(), tmp_path, data=train_slice).save()
    with pytest.raises(FileExistsError, match="already holds a checkpoint.pt; continue it with resume=True"):
        Trainer(tiny_config(), _train_config(), tmp_path, data=train_slice)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, train_slice):
    trainer = Trainer(tiny_config(), _train_config(steps=10, ckpt_every=1), tmp_path, data=train_slice)
    trainer.train_step()
    trainer.save()
    good = (tmp_path / "checkpoint.pt").read_bytes()
    with torch.no_grad():
        trainer.model.decoder.head.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match=r"the loss became nan by step 2; .*checkpoint\.pt is the last good"):
        trainer.run()
    assert (tmp_path / "checkpoint.pt").read_bytes() == good


def test_run_logs_throughput_and_evaluates(tmp_path, train_slice):
    cfg = _train_config(steps=2, eval_every=2, eval_images=8)
    summary = Trainer(tiny_config(), cfg, tmp_path, data=train_slice).run()
    assert summary["step"] == 2 and math.isfinite(summary["test_bpd"]) and summary["img_per_s"] > 0
    assert (tmp_path / "samples_000002.png").exists()
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(lines) == 2 and '"tokens_per_s"' in lines[0] and '"test_bpd"' in lines[1]


def test_two_processes_with_gloo_train_and_agree(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    initial = tiny_model(seed=3).state_dict()
    assert any(not torch.equal(rank0[k], initial[k]) for k in rank0)  # they trained...
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name  # ...and agree
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3


DIFFUSION_RUN = ('[model]\nfamily = "diffusion"\nimage_size = 14\npatch_size = 7\nd_model = 32\nn_layers = 3\n'
                 'n_enc_layers = 1\ndropout = 0.1\n[train]\nsteps = 6\nbatch_size = 8\ntrain_images = 64\n'
                 'log_every = 1\neval_every = 0\nckpt_every = 100\nema_decay = 0.9\nhflip = 0.5\ncrop_padding = 1\n'
                 'progress = false\n')


def _same_run(a: Path, b: Path) -> None:
    """Two run folders hold the same final state (weights, EMA, optimizer, data position) and logged losses."""
    first, second = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    assert first["step"] == second["step"] and first["batches"] == second["batches"]
    for part in ("model", "ema"):
        for name, tensor in first[part].items():
            assert torch.equal(tensor, second[part][name]), (part, name)
    assert_close(first["optimizer"], second["optimizer"], rtol=0, atol=0)
    losses = [[(r["step"], r["train_loss"]) for r in read_log(run / "log.jsonl") if "train_loss" in r]
              for run in (a, b)]
    assert losses[0] == losses[1] and len(losses[0]) == first["step"]


@pytest.fixture
def one_thread():
    """Train on one thread, as a subprocess with OMP_NUM_THREADS=1 does, so that float sums agree bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_two_ctrl_c_inside_a_step_keep_the_step_before_and_resume_exactly(tmp_path, one_thread):
    from imagen_tutorial.__main__ import main

    config = tmp_path / "run.toml"
    config.write_text(DIFFUSION_RUN)
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "straight")]) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    stopped = subprocess.run([sys.executable, str(ROOT / "tests" / "sigint_worker.py"), str(config),
                              str(tmp_path / "stopped")], env=env, capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert "stopped at step 2; the checkpoint at step 2 is kept" in stopped.stderr
    assert load_checkpoint(tmp_path / "stopped" / "checkpoint.pt")["batches"] == {"epoch": 0, "pos": 16}  # 2 × 8
    assert main(["train", "--out", str(tmp_path / "stopped"), "--resume"]) == 0
    _same_run(tmp_path / "straight", tmp_path / "stopped")


def test_a_second_ctrl_c_during_the_update_lets_the_step_finish(tmp_path, train_slice, monkeypatch):
    model_cfg = tiny_config("none", dropout=0.1)
    Trainer(model_cfg, _train_config(log_every=1), tmp_path / "straight", data=train_slice).run()
    trainer = Trainer(model_cfg, _train_config(log_every=1), tmp_path / "stopped", data=train_slice)
    update = trainer.scaler.update

    def step_inside_the_update():
        if trainer.step == 2:  # the optimizer has stepped; the scaler, the schedule and the step count have not
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        update()

    monkeypatch.setattr(trainer.scaler, "update", step_inside_the_update)
    with pytest.raises(TrainingInterrupted, match="stopped at step 3; the checkpoint at step 3 is kept"):
        trainer.run()
    monkeypatch.undo()
    Trainer(model_cfg, _train_config(log_every=1), tmp_path / "stopped", resume=True, data=train_slice).run()
    first, second = (load_checkpoint(tmp_path / run / "checkpoint.pt") for run in ("straight", "stopped"))
    assert first["batches"] == second["batches"] and first["step"] == second["step"] == 6
    for name, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][name]), name
