"""Bad input, class by class: each gets a clear error that says what was wrong and what to do, and nothing saved
is lost. (Config fields: test_config.py; checkpoint files: test_checkpoint.py; data files: test_data.py.)"""

import re
import signal
from pathlib import Path

import pytest
import torch
from conftest import tiny_config, tiny_model

import imagen_tutorial.__main__ as cli
from imagen_tutorial import (
    CheckpointError,
    ImageTransformer,
    ModelConfig,
    Tokenizer,
    TrainConfig,
    load_checkpoint,
    save_checkpoint,
)
from imagen_tutorial.__main__ import main
from imagen_tutorial.checkpoint import export_model
from imagen_tutorial.data import make_caption, quantize
from imagen_tutorial.train import Trainer, TrainingDiverged, TrainingInterrupted, lr_factor, pick_device
from imagen_tutorial.viz import read_log

# ---------------------------------------------------------------- model inputs


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32])
def test_levels_of_any_integer_dtype_are_read_as_levels(dtype):
    model = tiny_model("caption")
    images = torch.randint(0, 8, (2, 6, 6))
    captions = ["a bag", "a dress"]
    assert torch.equal(model(images.to(dtype), captions), model(images, captions))
    assert torch.equal(model.bits_per_dim(images.to(dtype), captions), model.bits_per_dim(images, captions))
    assert torch.equal(model.loss(images.to(dtype), captions), model.loss(images, captions))


def test_complex_levels_are_refused():
    with pytest.raises(ValueError, match="images must be integer levels"):
        tiny_model("none")(torch.zeros(1, 6, 6, dtype=torch.complex64))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_nan_or_inf_condition_image_is_refused(bad):
    model = tiny_model("lowres")
    cond = torch.rand(2, 1, 3, 3)
    cond[1, 0, 1, 1] = bad
    with pytest.raises(ValueError, match="the lowres condition holds NaN or inf values"):
        model(torch.randint(0, 8, (2, 6, 6)), cond)
    with pytest.raises(ValueError, match="the lowres condition holds NaN or inf values"):
        model.generate(cond)


@pytest.mark.parametrize("prefix", [torch.zeros(6, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long), [0, 1]])
def test_a_prefix_of_the_wrong_rank_is_refused(prefix):
    with pytest.raises(ValueError, match=r"prefix must be a LongTensor \[B, n\] of levels"):
        tiny_model("none").generate(prefix=prefix)


def test_a_prefix_of_another_integer_dtype_is_kept():
    prefix = torch.randint(0, 8, (2, 10))
    out = tiny_model("none").generate(prefix=prefix.to(torch.uint8), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.flatten(1)[:, :10], prefix)


# ---------------------------------------------------------------- captions


@pytest.mark.parametrize(
    "caption, message",
    [
        ("一只靴子", r"caption word '一只靴子' .*is not in the vocabulary; the model reads English captions only"),
        ("a photo of a café", "caption word 'café' .*is not in the vocabulary"),
        ("!!!", r"caption '!!!' has no words; use '' for the empty \(unconditional\) caption"),
        ("a photo of a bag " * 3, "caption 'a photo of a bag .*' has 15 words but this model reads at most 11"),
    ],
)
def test_a_caption_the_model_cannot_read_is_refused_not_drawn_unconditionally(caption, message):
    model = tiny_model("caption")
    with pytest.raises(ValueError, match=message):
        model.generate([caption])
    with pytest.raises(ValueError, match=message):
        model.bits_per_dim(torch.zeros(1, 6, 6, dtype=torch.long), [caption])


def test_caption_tokens_longer_than_the_model_reads_name_the_length():
    tokens = torch.ones(1, 14, dtype=torch.long)
    with pytest.raises(ValueError, match=r"caption tokens \[B, S=14\] are longer than this model reads: at most 12"):
        tiny_model("caption").generate(tokens)


def test_captions_must_be_strings():
    with pytest.raises(ValueError, match="captions must be strings; got int 3"):
        tiny_model("caption").generate(["a bag", 3])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: quantize(torch.zeros(2, 4, 4, dtype=torch.uint8), 16.5), "levels=16.5 is not a whole number"),
        (lambda: quantize([[0, 255]], 16), r"quantize reads a tensor of uint8 intensities .*; got list"),
        (lambda: quantize(torch.full((1, 2, 2), float("nan")), 16), "float images hold NaN or inf values"),
        (lambda: make_caption(3.7), "label=3.7 is not a whole number: use an integer"),
        (lambda: make_caption(10), "label=10 is not a Fashion-MNIST class: use 0..9 \\(t-shirt"),
        (lambda: Tokenizer().encode(None), "captions must be a string or a list of strings; got NoneType"),
        (lambda: Tokenizer().encode([]), "no captions given"),
        (lambda: ModelConfig(d_model=10**6, n_heads=4), "ModelConfig.d_model=1000000 is out of range: use 1..4096"),
    ],
)
def test_data_helpers_and_configs_refuse_nonsense_instead_of_computing_it(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_generator_that_is_not_one_is_refused_and_token_lists_decode():
    with pytest.raises(ValueError, match=r"generator must be a torch.Generator on the model's device \(cpu\)"):
        tiny_model("caption").generate(["a bag"], generator=5)
    assert Tokenizer().decode([1, 2]) == ["a"]
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 25\); got 0..99"):
        Tokenizer().decode([0, 99])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_loading_onto_an_absent_gpu_is_not_called_a_damaged_file(tmp_path):
    path = export_model(tiny_model(), tmp_path / "m.pt")
    with pytest.raises(ValueError, match="cannot load .* onto cuda: PyTorch sees no CUDA GPU"):
        load_checkpoint(path, map_location="cuda")


# ---------------------------------------------------------------- sampling arguments


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": -1.0}, r"temperature=-1.0 is out of range: use a number >= 0 \(0 picks the most likely"),
        ({"temperature": float("nan")}, "temperature=nan is not a finite number"),
        ({"top_k": 0}, r"top_k=0 is out of range: use 1\.\.256 \(None keeps every level\)"),
        ({"top_k": 2.5}, "top_k=2.5 is not a whole number"),
        ({"guidance": -2.0}, r"guidance=-2.0 is out of range: use a number in \[0, 100\] \(1 is plain"),
        ({"guidance": "3"}, "guidance='3' is a string, not a number"),
        ({"batch_size": 0}, r"batch_size=0 is out of range: use 1\.\.10000"),
    ],
)
def test_sampling_arguments_are_range_checked(kwargs, message):
    cond = None if "batch_size" in kwargs else ["a bag"]
    with pytest.raises(ValueError, match=message):
        tiny_model("caption" if cond else "none").generate(cond, **kwargs)


# ---------------------------------------------------------------- training: nothing saved is ever lost


def _trainer(tmp_path, train_slice, resume=False, **overrides):
    values = dict(batch_size=16, steps=6, warmup_steps=2, log_every=100, eval_every=0, ckpt_every=100,
                  progress=False, seed=3)
    return Trainer(tiny_config(), TrainConfig(**{**values, **overrides}), tmp_path, resume=resume, data=train_slice)


def _patch_step(monkeypatch, trainer, at: int, action):
    """Run `action(loss)` right after optimizer step `at`; it returns the loss train_step reports."""
    original = trainer.train_step

    def step():
        loss, norm = original()
        return (action(loss) if trainer.step == at else loss), norm

    monkeypatch.setattr(trainer, "train_step", step)


def _nan_weights(trainer):
    def action(loss):
        with torch.no_grad():
            trainer.model.decoder.head.weight.fill_(float("nan"))
        return loss
    return action


@pytest.mark.parametrize("what", ["loss", "weights"])
def test_a_time_triggered_save_never_writes_a_nan_state(tmp_path, train_slice, monkeypatch, what):
    trainer = _trainer(tmp_path, train_slice, ckpt_minutes=1e-7)  # a save is due after every step
    nan_loss = lambda loss: loss * float("nan")  # noqa: E731
    _patch_step(monkeypatch, trainer, 3, nan_loss if what == "loss" else _nan_weights(trainer))
    expected = "the loss became nan" if what == "loss" else "the weights became NaN or inf"
    with pytest.raises(TrainingDiverged, match=rf"{expected}.* by step 3; training stopped without saving, so "
                                               rf".*checkpoint\.pt is the last good state \(step 2\)"):
        trainer.run()
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_ctrl_c_saves_the_step_and_says_how_to_continue(tmp_path, train_slice, monkeypatch):
    trainer = _trainer(tmp_path, train_slice)

    def interrupt(loss):
        raise KeyboardInterrupt  # as if Ctrl-C landed just after step 3

    _patch_step(monkeypatch, trainer, 3, interrupt)
    with pytest.raises(TrainingInterrupted, match=r"stopped at step 3; the checkpoint at step 3 is kept in "
                                                  r".*checkpoint\.pt; continue with --resume"):
        trainer.run()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3
    assert _trainer(tmp_path, train_slice, resume=True).run()["step"] == 6


def test_a_real_sigint_stops_after_the_step_it_lands_in(tmp_path, train_slice, monkeypatch):
    before = signal.getsignal(signal.SIGINT)
    trainer = _trainer(tmp_path, train_slice)
    _patch_step(monkeypatch, trainer, 2, lambda loss: signal.raise_signal(signal.SIGINT) or loss)
    with pytest.raises(TrainingInterrupted, match="stopped at step 2; the checkpoint at step 2 is kept"):
        trainer.run()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back


def test_ctrl_c_after_the_loss_became_nan_keeps_the_last_good_checkpoint(tmp_path, train_slice, monkeypatch):
    trainer = _trainer(tmp_path, train_slice, ckpt_every=2, log_every=100)
    original = trainer.train_step

    def step():
        loss, norm = original()
        if trainer.step == 3:
            trainer._unsaved_losses.append(loss * float("nan"))  # step 3's loss was NaN...
            raise KeyboardInterrupt  # ...and then Ctrl-C
        return loss, norm

    monkeypatch.setattr(trainer, "train_step", step)
    with pytest.raises(TrainingInterrupted, match=r"stopped at step 3, where the loss became nan, so it was not "
                                                  r"saved; the checkpoint at step 2 is kept"):
        trainer.run()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2


def test_resume_applies_a_lower_lr_and_records_it(tmp_path, train_slice, capsys):
    trainer = _trainer(tmp_path, train_slice, lr=2e-3)
    for _ in range(3):
        trainer.train_step()
    trainer.save()
    resumed = _trainer(tmp_path, train_slice, resume=True, lr=5e-4, steps=8)
    assert "resuming" in capsys.readouterr().out
    expected = 5e-4 * lr_factor(3, resumed.cfg)  # the new schedule at the resumed step
    assert [g["lr"] for g in resumed.optimizer.param_groups] == pytest.approx([expected, expected])
    resumed.run()
    lrs = [row["lr"] for row in read_log(tmp_path / "log.jsonl") if "lr" in row]
    assert lrs[-1] == pytest.approx(5e-4 * lr_factor(8, resumed.cfg))
    saved = load_checkpoint(tmp_path / "checkpoint.pt")["train_config"]
    assert saved["lr"] == 5e-4 and saved["extra"]["resumed"] == [{"step": 3, "lr": [2e-3, 5e-4], "steps": [6, 8]}]


def test_resume_refuses_fields_that_fix_the_data_order(tmp_path, train_slice):
    _trainer(tmp_path, train_slice).save()
    with pytest.raises(ValueError, match=r"cannot continue with another batch_size, accum_steps, seed, train_images, "
                                         r"data, scene_forms, and_in_order \(batch_size=16 in the checkpoint but 32 "
                                         r"here\).*into a new --out"):
        _trainer(tmp_path, train_slice, resume=True, batch_size=32)


def test_resume_with_nothing_left_to_train_says_so(tmp_path, train_slice):
    trainer = _trainer(tmp_path, train_slice, steps=2)
    trainer.run()
    with pytest.raises(ValueError, match="is already at step 2 and steps=2: nothing is left to train. Raise --steps"):
        _trainer(tmp_path, train_slice, resume=True, steps=2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_a_device_this_machine_lacks_is_refused():
    with pytest.raises(ValueError, match=r"device='cuda', but PyTorch sees no CUDA GPU.*use --device cpu"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="device='gpu' is not a device: use auto, cpu, cuda, cuda:N or mps"):
        pick_device("gpu")


# ---------------------------------------------------------------- the command line: one line, exit code 2


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return str(export_model(tiny_model("caption"), tmp_path_factory.mktemp("ckpt") / "tiny.pt"))


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "--top-k", "0"], r"--top-k=0 is out of range: use 1\.\.256"),
        (["sample", "--temperature", "-1"], r"--temperature=-1.0 is out of range: use a number >= 0"),
        (["sample", "--guidance", "-3"], r"--guidance=-3.0 is out of range: use a number in \[0, 100\]"),
        (["sample", "--n", "0"], r"--n=0 is out of range: use 1\.\.500"),
        (["sample", "--device", "gpu"], "device='gpu' is not a device: use auto, cpu, cuda, cuda:N or mps"),
        (["sample", "--out", "grid.xyz"], r"cannot write an image to grid.xyz: its extension '.xyz' is not one "
                                          r"Pillow writes; use one of .png, .gif"),
        (["sample", "--out", "grid"], "cannot write an image to grid: it has no extension"),
        (["sample", "--gif", "steps.jpg"], "cannot write an animation to steps.jpg: .* use one of .png, .gif, .webp"),
        (["sample", "--caption", "一只靴子"], "caption word '一只靴子' .*English captions only"),
        (["evaluate", "--batch-size", "0"], r"--batch-size=0 is out of range: use 1\.\.10000"),
        (["evaluate", "--limit", "0"], "--limit=0 is out of range"),
        (["evaluate", "--guidance", "1", "--guidance", "-1"], "--guidance=-1.0 is out of range"),
    ],
)
def test_bad_sampling_flags_get_one_line_and_exit_code_2(argv, message, tiny_checkpoint, capsys):
    assert main([argv[0], "--checkpoint", tiny_checkpoint, *argv[1:]]) == 2
    assert re.search(message, _one_error_line(capsys))


@pytest.mark.parametrize(
    "content, message",
    [
        ("I am a text file", r"is not a checkpoint file \(it starts with b'I am a text "),
        (b"\x93\x00\xff" * 50, r"is not a checkpoint file \(it starts with b'\\x93"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_from_the_command_line(tmp_path, capsys, content, message):
    path = tmp_path / "notes.pt"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    assert main(["sample", "--checkpoint", str(path)]) == 2
    assert re.search(message, _one_error_line(capsys))


@pytest.mark.parametrize(
    "config, argv, message",
    [
        ('[train]\nprogress = "false"\n', [], "TrainConfig.progress='false' is not true or false: write true or false "
                                             "without quotes"),
        ('[model]\nlevels = "16"\n', [], "ModelConfig.levels='16' is a string, not an integer"),
        ("[model\nlevels = 3", [], r"config file .*bad.toml is not valid TOML: .*\(at line 1, column 7\)"),
        ('model = 5\n', [], "section 'model' must be a table of field = value, got int 5"),
        ("", ["--log-every", "0"], r"TrainConfig.log_every=0 is out of range: use 1\.\.1000000000"),
        ("", ["--eval-images", "0"], "TrainConfig.eval_images=0 is out of range: use 1..10000"),
        ("", ["--min-lr-ratio", "-0.1"], r"TrainConfig.min_lr_ratio=-0.1 is out of range: use a number in \[0, 1\]"),
        ("", ["--weight-decay", "-1"], "TrainConfig.weight_decay=-1.0 is out of range: use a number >= 0"),
        ("", ["--train-images", "-5"], "TrainConfig.train_images=-5 is out of range"),
        ("", ["--device", "tpu"], "TrainConfig.device='tpu' is not a device"),
    ],
)
def test_bad_config_values_from_files_and_flags_get_one_line(tmp_path, capsys, config, argv, message):
    path = tmp_path / "bad.toml"
    path.write_text(config)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run"), *argv]) == 2
    assert re.search(message, _one_error_line(capsys))
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_ctrl_c_in_training_from_the_command_line_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    config = tmp_path / "tiny.toml"
    config.write_text('[model]\nimage_size = 6\nlevels = 8\nd_model = 32\nn_layers = 1\nn_enc_layers = 1\n'
                      '[train]\nsteps = 50\nbatch_size = 8\neval_every = 0\nprogress = false\ntrain_images = 64\n')
    original = Trainer.train_step

    def step(self):
        if self.step == 2:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", step)
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out)]) == 130
    assert re.search(r"stopped at step 2; the checkpoint at step 2 is kept in .*checkpoint\.pt; continue with "
                     r"--resume", _one_error_line(capsys))
    monkeypatch.undo()
    # --resume alone continues the checkpoint's own configs; a new --lr is applied and said
    assert main(["train", "--out", str(out), "--resume", "--lr", "1e-4", "--steps", "4"]) == 0
    assert "with lr 0.002 -> 0.0001, steps 50 -> 4" in capsys.readouterr().out
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 4


def test_demo_train_never_deletes_what_is_in_its_folder(tmp_path, capsys, monkeypatch):
    mine = tmp_path / "run" / "notes.txt"  # a folder the old demo deleted
    mine.parent.mkdir()
    mine.write_text("my notes")

    def quick_train(model_cfg, train_cfg, out):  # the folder logic, without a minute of training
        assert not Path(out).exists()
        torch.manual_seed(0)
        export_model(ImageTransformer(model_cfg), Path(out) / "checkpoint.pt")
        return {"step": train_cfg.steps, "train_bpd": 4.0}

    monkeypatch.setattr(cli, "train", quick_train)
    blank = lambda self, captions, **kwargs: torch.zeros(len(captions), 14, 14, dtype=torch.long)  # noqa: E731
    monkeypatch.setattr(ImageTransformer, "generate", blank)  # nor the sampling
    argv = ["demo", "--train", "--train-steps", "2", "--columns", "1", "--out", str(tmp_path)]
    assert main(argv) == 0 and main(argv) == 0
    assert mine.read_text() == "my notes"
    runs = sorted(tmp_path.glob("run-*"))
    assert len(runs) == 2 and all((r / "checkpoint.pt").is_file() for r in runs)
    assert (tmp_path / "samples.png").is_file()


def test_nan_weights_are_never_evaluated_or_sampled(tmp_path, train_slice, monkeypatch):
    trainer = _trainer(tmp_path, train_slice, eval_every=3, eval_images=8)
    _patch_step(monkeypatch, trainer, 3, _nan_weights(trainer))  # the loss of step 3 was still finite
    with pytest.raises(TrainingDiverged, match="the weights became NaN or inf .* by step 3; .*no checkpoint was "
                                               "written .*then train again"):
        trainer.run()
    assert not (tmp_path / "checkpoint.pt").exists() and not list(tmp_path.glob("samples_*.png"))


def test_demo_refuses_an_output_folder_it_cannot_write_before_drawing(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["demo", "--out", str(blocker / "demo")]) == 2
    assert "is a file, not a folder" in _one_error_line(capsys)


def test_resuming_from_a_weights_only_checkpoint_says_it_cannot(tmp_path, train_slice):
    torch.manual_seed(3)
    export_model(ImageTransformer(tiny_config()), tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"holds weights only, not a training state \(optimizer, .* missing\)"):
        _trainer(tmp_path, train_slice, resume=True)


# ---------------------------------------------------------------- Part II surfaces: one flag means one thing


@pytest.fixture(scope="module")
def diffusion_checkpoints(tmp_path_factory):
    from test_diffusion import tiny_denoiser

    folder = tmp_path_factory.mktemp("diffusion")
    return {name: str(export_model(tiny_denoiser(condition, image_size=14, patch_size=7), folder / f"{name}.pt"))
            for name, condition in (("base", "caption"), ("unconditional", "none"))}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "AR", "--sampler", "ddpm"], "--sampler applies only to diffusion models, and .*tiny.pt is an "
                                                "autoregressive model, conditioned on 'caption': drop it"),
        (["sample", "AR", "--threshold", "0.5"], "--threshold applies only to diffusion models"),
        (["sample", "AR", "--sr-guidance", "7"], r"--sr-guidance applies only to the SR stage of a cascade"),
        (["evaluate", "base", "--temperature", "0.5"], "--temperature applies only to autoregressive models, and "
                                                        ".*base.pt is a diffusion model"),
        (["evaluate", "base", "--split", "train"], "--split applies only to autoregressive models"),
        (["evaluate", "base", "--limit", "5"], "--limit applies only to autoregressive models"),
        (["evaluate", "base", "--batch-size", "10"], "--batch-size applies only to autoregressive models"),
        (["evaluate", "AR", "--per-class", "0", "--guidance", "2"],
         r"--guidance applies only to evaluations that draw samples, and this one draws none \(--per-class 0"),
        (["sample", "unconditional", "--caption", "a bag"], "--caption applies only to models that draw from the "
                                                            "captions you give, and .* is a diffusion model, "
                                                            "unconditional"),
        (["sample", "unconditional", "--guidance", "2"], "--guidance applies only to conditional models"),
        (["sample", "base", "--out", "same.png", "--gif", "same.png"], "--out and --gif both name .*same.png: give "
                                                                      "the GIF a name of its own"),
        (["demo", "base", "--temperature", "0.9"], "--temperature applies only to autoregressive models"),
        (["demo", None, "--train-steps", "5"], "--train-steps applies only to demo --train, and --train is not given"),
    ],
)
def test_a_flag_that_does_not_apply_to_the_model_is_refused_with_the_reason(argv, message, tiny_checkpoint,
                                                                           diffusion_checkpoints, tmp_path, capsys):
    command, model, *flags = argv
    where = ["--out", str(tmp_path / ("demo" if command == "demo" else "x.png"))] if command != "evaluate" else []
    flags = [str(tmp_path / f) if f == "same.png" else f for f in flags]
    chosen = ["--checkpoint", {"AR": tiny_checkpoint, **diffusion_checkpoints}[model]] if model else []
    assert main([command, *chosen, *where, *flags]) == 2
    assert re.search(message, _one_error_line(capsys))


def test_a_log_holds_one_history_across_new_runs_and_resumes(tmp_path, train_slice, monkeypatch):
    diverging = _trainer(tmp_path, train_slice, log_every=1)
    _patch_step(monkeypatch, diverging, 3, lambda loss: loss * float("nan"))  # diverges before its first save
    with pytest.raises(TrainingDiverged):
        diverging.run()
    monkeypatch.undo()
    crashing = _trainer(tmp_path, train_slice, log_every=1, ckpt_every=4)  # a new run in the same folder...

    def crash(loss):
        raise RuntimeError("the machine went down")
    _patch_step(monkeypatch, crashing, 6, crash)  # ...logs steps 1-5, saves step 4, and dies in step 6
    with pytest.raises(RuntimeError):
        crashing.run()
    monkeypatch.undo()
    _trainer(tmp_path, train_slice, resume=True, log_every=1).run()  # logs steps 5 and 6 (again)
    assert [row["step"] for row in read_log(tmp_path / "log.jsonl")] == [1, 2, 3, 4, 5, 6]
    written = read_log(tmp_path / "log.jsonl", all_runs=True)  # every row is kept, with the markers
    assert [(r["step"], r["run"]) for r in written if "run" in r] == [(0, "new"), (4, "resumed")]
    assert [r["step"] for r in written if "run" not in r] == [1, 2, 1, 2, 3, 4, 5, 5, 6]


def test_problems_are_refused_before_the_work_starts(tmp_path, train_slice, capsys):
    (tmp_path / "run" / "checkpoint.pt").mkdir(parents=True)  # a folder where the checkpoint must go
    with pytest.raises(ValueError, match=r"cannot write the run's files into .*run: .*checkpoint.pt is a folder, "
                                         r"where the file checkpoint.pt goes"):
        _trainer(tmp_path / "run", train_slice)
    (tmp_path / "a-file").write_text("not a folder")
    assert main(["train", "--out", str(tmp_path / "a-file" / "run"), "--steps", "1"]) == 2
    assert "a-file is a file, not a folder" in _one_error_line(capsys)
    assert main(["sample", "--checkpoint", "cascade", "--aug-level", "2", "--out", str(tmp_path / "x.png")]) == 2
    assert "--aug-level=2.0 is out of range: use a number in [0, 1]" in _one_error_line(capsys)
    assert main(["sample", "--checkpoint", "cascade", "--threshold", "99.5", "--out", str(tmp_path / "x.png")]) == 2
    assert "--threshold=99.5 is out of range" in _one_error_line(capsys)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "--checkpoint", "diffusion_bse"], "checkpoint diffusion_bse does not exist; did you mean "
                                                      "'diffusion_base' or 'diffusion_sr'\\? The shipped checkpoints "
                                                      "are bpd256, cascade"),
        (["evaluate", "--checkpoint", "base", "--per-class", "0"], r"--per-class=0 is out of range: use 1\.\.1000 \(a "
                                                                   r"diffusion model has no bits/dim here"),
        (["evaluate", "--checkpoint", "base", "--per-class", "-1"], r"--per-class=-1 is out of range: use 0\.\.1000 "
                                                                    r"\(0 skips sampling: an autoregressive model's "
                                                                    r"bits/dim alone; a diffusion model needs >= 1\)"),
        (["sample", "--steps", "2", "--out"], r"argument --out: expected one argument \(see `python -m "
                                              r"imagen_tutorial sample --help`\)"),
        (["evaluate", "--checkpoint", "base", "--sampler", "euler"], r"argument --sampler: invalid choice: 'euler'"),
    ],
)
def test_command_line_errors_give_command_line_advice_in_one_line(argv, message, diffusion_checkpoints, capsys):
    argv = [diffusion_checkpoints.get(a, a) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    assert code == 2
    assert re.search(message, _one_error_line(capsys))


def test_ctrl_c_in_demo_train_says_what_demo_can_do_next(tmp_path, capsys, monkeypatch):
    def stopped(model_cfg, train_cfg, out):
        export_model(ImageTransformer(model_cfg), Path(out) / "checkpoint.pt")
        raise TrainingInterrupted("stopped at step 3; ... continue with --resume (Trainer(..., resume=True))")

    monkeypatch.setattr(cli, "train", stopped)
    assert main(["demo", "--train", "--out", str(tmp_path)]) == 130
    assert re.search(r"demo --train stopped; its checkpoint is kept in (.*)checkpoint.pt: draw from it with `python "
                     r"-m imagen_tutorial demo --checkpoint \1checkpoint.pt`, or train it further with `python -m "
                     r"imagen_tutorial train --out .* --resume`", _one_error_line(capsys))


def test_a_checkpoint_with_nan_weights_is_not_resumed_as_a_good_state(tmp_path, train_slice):
    trainer = _trainer(tmp_path, train_slice)
    trainer.train_step()
    with torch.no_grad():
        trainer.model.decoder.head.weight.fill_(float("nan"))
    save_checkpoint(trainer.state_dict(), tmp_path / "checkpoint.pt")  # as a version before the NaN checks saved
    with pytest.raises(CheckpointError, match=r"holds NaN or inf weights \(decoder.head.weight\), so training "
                                              r"cannot resume from it: use an earlier checkpoint"):
        _trainer(tmp_path, train_slice, resume=True)


def test_demo_draws_from_a_diffusion_model_too(diffusion_checkpoints, tmp_path, capsys):
    argv = ["demo", "--checkpoint", diffusion_checkpoints["base"], "--columns", "1", "--steps", "2", "--out",
            str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Drawing 10 images (1 per class, DDIM 2 steps per stage, guidance 3)" in out and "judge" in out
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "generation.gif").is_file()
