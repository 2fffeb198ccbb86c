"""Part II: the schedule, the forward process, the loss, the samplers (with an oracle), guidance, thresholding,
noise augmentation, the EMA, resume, the cascade, and clear errors for bad input."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import tiny_model
from torch.testing import assert_close

from imagen_tutorial import diffusion
from imagen_tutorial.cascade import Cascade
from imagen_tutorial.checkpoint import CheckpointError, load_model, save_checkpoint
from imagen_tutorial.config import ModelConfig, TrainConfig
from imagen_tutorial.denoiser import Denoiser
from imagen_tutorial.train import Trainer, ema_decay_at, ema_update


def tiny_denoiser(condition: str = "caption", seed: int = 0, **overrides) -> Denoiser:
    """A 4×4 base (or 8×8 SR stage reading 4×4) with a random output layer, so its predictions are not 0."""
    values = dict(family="diffusion", image_size=4, condition=condition, d_model=32, n_heads=4, n_layers=3,
                  n_enc_layers=1, patch_size=2)
    if condition == "caption_lowres":
        values.update(image_size=8, cond_size=4, conv_head=True)
    torch.manual_seed(seed)
    model = Denoiser(ModelConfig(**{**values, **overrides})).eval()
    last = model.conv[-1] if model.conv is not None else model.head
    torch.nn.init.normal_(last.weight, std=0.3)
    return model


def oracle(x0: torch.Tensor, prediction: str):
    """A denoiser that knows x₀: it returns the exact ε or v for any x_t and t."""
    def denoise(x_t, t):
        alpha, sigma = (v.view(-1, 1, 1, 1) for v in diffusion.alpha_sigma(t))
        eps = (x_t - alpha * x0) / sigma
        return eps if prediction == "eps" else alpha * eps - sigma * x0
    return denoise


# ---------------------------------------------------------------- schedule and forward process
def test_schedule_keeps_variance_and_runs_from_image_to_noise():
    t = torch.linspace(0, 1, 101)
    alpha, sigma = diffusion.alpha_sigma(t)
    assert_close(alpha**2 + sigma**2, torch.ones_like(t))
    assert alpha[0] == 1 and sigma[0] == 0 and alpha[-1].abs() < 1e-6 and sigma[-1] == 1
    assert (alpha.diff() < 0).all() and (sigma.diff() > 0).all()
    snr = diffusion.log_snr(t[1:-1])
    assert (snr.diff() < 0).all() and abs(diffusion.log_snr(torch.tensor(0.5)).item()) < 1e-5


def test_log_snr_is_infinite_not_nan_at_the_end_points():
    assert diffusion.log_snr(torch.tensor([0.0, 1.0])).tolist() == [float("inf"), float("-inf")]


def test_q_sample_has_mean_alpha_x0_and_std_sigma():
    torch.manual_seed(0)
    x0 = torch.full((20000, 1, 1, 1), 0.6)
    t = torch.full((20000,), 0.3)
    xt = diffusion.q_sample(x0, t, torch.randn_like(x0))
    alpha, sigma = diffusion.alpha_sigma(torch.tensor(0.3))
    assert abs(xt.mean().item() - 0.6 * alpha.item()) < 0.02
    assert abs(xt.std().item() - sigma.item()) < 0.02


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_target_and_its_inverse_recover_x0_and_the_noise(prediction):
    torch.manual_seed(0)
    x0, noise, t = torch.rand(5, 1, 4, 4) * 2 - 1, torch.randn(5, 1, 4, 4), torch.rand(5) * 0.9
    xt = diffusion.q_sample(x0, t, noise)
    x0_hat, eps_hat = diffusion.to_x0_eps(diffusion.target(x0, noise, t, prediction), xt, t, prediction)
    assert_close(x0_hat, x0, atol=1e-5, rtol=1e-5)
    assert_close(eps_hat, noise, atol=1e-5, rtol=1e-5)
    alpha, sigma = (v.view(-1, 1, 1, 1) for v in diffusion.alpha_sigma(t))
    if prediction == "v":
        assert_close(diffusion.target(x0, noise, t, "v"), alpha * noise - sigma * x0)


def test_the_loss_is_zero_for_a_network_that_predicts_the_target():
    torch.manual_seed(0)
    x0 = torch.rand(6, 1, 4, 4) * 2 - 1
    loss = diffusion.diffusion_loss(lambda x_t, t: oracle(x0, "v")(x_t, t), x0, "v")
    assert loss.item() < 1e-8


def test_the_loss_runs_through_the_net_it_is_given_even_one_that_is_falsy():
    # torch.compile's wrapper raises on bool(); a container of no modules is False: `net or self` fails on both
    model = tiny_denoiser()

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.calls = model, 0

        def __len__(self):
            return 0

        def forward(self, *args, **kwargs):
            self.calls += 1
            return self.inner(*args, **kwargs)

    net, images = Wrapper(), torch.rand(2, 1, 4, 4)
    torch.manual_seed(0)
    through = model.loss(images, ["a photo of a bag"] * 2, net=net)
    torch.manual_seed(0)
    assert net.calls == 1 and torch.equal(through, model.loss(images, ["a photo of a bag"] * 2))


# ---------------------------------------------------------------- samplers
@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("steps", [1, 7, 50])
def test_a_sampler_driven_by_an_oracle_returns_x0(sampler, prediction, steps):
    if prediction == "eps" and steps == 1:
        pytest.skip("from ε at t = 1 (α = 0) x̂₀ = (x_t − σε̂)/α is undefined: one step cannot recover x₀")
    torch.manual_seed(0)
    x0 = torch.rand(3, 1, 4, 4) * 1.8 - 0.9
    out = diffusion.sample_loop(oracle(x0, prediction), x0.shape, prediction, steps, sampler, threshold=None,
                                generator=torch.Generator().manual_seed(1))
    assert_close(out, x0, atol=2e-4, rtol=0)


def test_ddim_is_deterministic_and_ddpm_draws_fresh_noise():
    model = tiny_denoiser()
    run = {s: [model.generate(["a shirt"], steps=5, sampler=s, generator=torch.Generator().manual_seed(k))
               for k in (0, 0)] for s in ("ddim", "ddpm")}
    assert torch.equal(*run["ddim"]) and torch.equal(*run["ddpm"])  # the seed fixes everything
    x = torch.zeros(1, 1, 4, 4)
    a = diffusion.ddpm_step(x, x, torch.tensor([0.5]), torch.tensor([0.4]), torch.ones_like(x))
    assert (a != 0).all()  # the ancestral step adds noise; DDIM's step with ε̂ = 0 would stay at 0


def test_ddpm_step_matches_the_posterior_formula_of_discrete_ddpm():
    # one step t -> s with ᾱ_t, ᾱ_s: mean = (√ᾱ_s β / (1-ᾱ_t)) x0 + (√α (1-ᾱ_s)/(1-ᾱ_t)) x_t, var = β(1-ᾱ_s)/(1-ᾱ_t)
    t, s = torch.tensor([0.6]), torch.tensor([0.5])
    abar_t, abar_s = diffusion.alpha_sigma(t)[0] ** 2, diffusion.alpha_sigma(s)[0] ** 2
    a, beta = abar_t / abar_s, 1 - abar_t / abar_s
    x_t, x0 = torch.tensor([[[[0.3]]]]), torch.tensor([[[[-0.2]]]])
    mean = abar_s.sqrt() * beta / (1 - abar_t) * x0 + a.sqrt() * (1 - abar_s) / (1 - abar_t) * x_t
    std = (beta * (1 - abar_s) / (1 - abar_t)).sqrt()
    assert_close(diffusion.ddpm_step(x_t, x0, t, s, torch.zeros_like(x_t)), mean)
    assert_close(diffusion.ddpm_step(x_t, x0, t, s, torch.ones_like(x_t)) - mean, std.view(1, 1, 1, 1))


# ---------------------------------------------------------------- guidance and thresholding
def test_guidance_one_is_plain_conditional_sampling():
    model = tiny_denoiser()
    tokens = model.prepare_captions(["a photo of a shirt", "a bag"])
    got = model.generate(tokens, steps=6, guidance=1.0, generator=torch.Generator().manual_seed(3))
    plain = diffusion.sample_loop(lambda x, t: model(x, t, tokens), (2, 1, 4, 4), "v", 6,
                                  generator=torch.Generator().manual_seed(3))
    assert_close(got, (plain + 1) / 2)


def test_guidance_zero_is_sampling_with_the_empty_caption():
    model = tiny_denoiser()
    a = model.generate(["a photo of a shirt", "a bag"], steps=6, guidance=0.0,
                       generator=torch.Generator().manual_seed(3))
    b = model.generate(["", ""], steps=6, guidance=1.0, generator=torch.Generator().manual_seed(3))
    assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_guidance_formula_and_that_it_changes_samples():
    c, u = torch.tensor([2.0]), torch.tensor([1.0])
    assert diffusion.guided_prediction(c, u, 3.0).item() == 4.0  # 1 + 3·(2 − 1)
    model = tiny_denoiser()
    a = model.generate(["a bag"], steps=4, guidance=1.0, generator=torch.Generator().manual_seed(0))
    b = model.generate(["a bag"], steps=4, guidance=5.0, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(a, b)


def test_dynamic_thresholding_leaves_in_range_samples_alone_and_works_per_sample():
    torch.manual_seed(0)
    inside = torch.rand(1, 1, 10, 10) * 1.8 - 0.9
    outside = torch.randn(1, 1, 10, 10) * 3
    out = diffusion.dynamic_threshold(torch.cat([inside, outside]), 0.995)
    assert torch.equal(out[0], inside[0])  # s = max(1, quantile) = 1: untouched
    s = torch.quantile(outside.abs().flatten(), 0.995)
    assert_close(out[1], outside[0].clamp(-s, s) / s)
    assert out[1].abs().max() <= 1 and out[1].abs().max() > 0.99
    assert torch.equal(diffusion.static_threshold(outside), outside.clamp(-1, 1))


def test_noise_augmentation_at_level_zero_returns_the_input():
    x = torch.rand(3, 1, 4, 4) * 2 - 1
    assert torch.equal(diffusion.noise_augment(x, 0.0), x)
    noisy = diffusion.noise_augment(x, 0.5, torch.Generator().manual_seed(0))
    assert not torch.equal(noisy, x)


# ---------------------------------------------------------------- the EMA and the training loop
def test_ema_update_is_a_weighted_average():
    torch.manual_seed(0)
    ema, model = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.clone() for p in ema.parameters()]
    ema_update(ema, model, 0.9)
    for e, b, p in zip(ema.parameters(), before, model.parameters(), strict=True):
        assert_close(e, 0.9 * b + 0.1 * p)
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1) and ema_decay_at(10**6, 0.999) == 0.999


def _sr_train_config(**overrides) -> TrainConfig:
    values = dict(batch_size=8, steps=6, warmup_steps=2, ema_decay=0.9, eval_every=3, eval_images=10,
                  ckpt_every=100, log_every=2, progress=False)
    return TrainConfig(**{**values, **overrides})


def test_diffusion_resume_continues_exactly(tmp_path, train_slice):
    config = tiny_denoiser("caption_lowres", image_size=28, cond_size=14, patch_size=7, dropout=0.1).config
    Trainer(config, _sr_train_config(), tmp_path / "a", data=train_slice).run()
    first = Trainer(config, _sr_train_config(), tmp_path / "b", data=train_slice)
    first.train_step(), first.train_step(), first.save()
    Trainer(config, _sr_train_config(), tmp_path / "b", resume=True, data=train_slice).run()
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in "ab")
    assert a["step"] == b["step"] == 6
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), (key, name)
    assert (tmp_path / "a" / "samples_000006.png").exists()


def test_a_checkpoint_with_an_ema_loads_the_ema_weights(tmp_path, train_slice):
    config = tiny_denoiser(image_size=14, patch_size=7).config
    trainer = Trainer(config, _sr_train_config(steps=3, eval_every=0), tmp_path, data=train_slice)
    trainer.run()
    model = load_model(tmp_path / "checkpoint.pt")
    for name, tensor in trainer.ema.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor)
    assert not torch.equal(model.state_dict()["head.weight"], trainer.model.state_dict()["head.weight"])


def test_init_from_starts_a_new_run_from_the_weights_of_another(tmp_path, train_slice):
    config = tiny_denoiser(image_size=14, patch_size=7).config
    first = Trainer(config, _sr_train_config(steps=3, eval_every=0), tmp_path / "a", data=train_slice)
    first.run()
    tuned = Trainer(config, _sr_train_config(steps=3, eval_every=0, init_from=str(tmp_path / "a" / "checkpoint.pt")),
                    tmp_path / "b", data=train_slice)
    assert tuned.step == 0  # a new run (its own optimizer and schedule) that starts from the EMA weights
    for name, tensor in first.ema.state_dict().items():
        assert torch.equal(tuned.model.state_dict()[name], tensor)
        assert torch.equal(tuned.ema.state_dict()[name], tensor)


def test_init_from_refuses_a_missing_file_and_another_models_weights(tmp_path, train_slice):
    with pytest.raises(FileNotFoundError, match="neither a checkpoint file nor a shipped"):
        Trainer(tiny_denoiser().config, _sr_train_config(init_from=str(tmp_path / "nope.pt")), tmp_path / "a",
                data=train_slice)
    with pytest.raises(CheckpointError, match="another model config"):  # the shipped 14×14 base is not a 28×28 SR
        Trainer(tiny_denoiser("caption_lowres").config, _sr_train_config(init_from="diffusion_base"),
                tmp_path / "b", data=train_slice)


# ---------------------------------------------------------------- the cascade
def test_cascade_gives_28x28_style_images_in_range_and_the_low_res_stage_on_request():
    cascade = Cascade(tiny_denoiser(), tiny_denoiser("caption_lowres"))
    high, low = cascade.generate(["a bag", "a photo of a sneaker"], steps=(3, 2), guidance=(2.0, 1.0),
                                 generator=torch.Generator().manual_seed(0), return_lowres=True)
    assert high.shape == (2, 1, 8, 8) and low.shape == (2, 1, 4, 4)
    assert high.min() >= 0 and high.max() <= 1 and low.min() >= 0 and low.max() <= 1


def test_the_sr_stage_reads_its_low_res_input():
    sr = tiny_denoiser("caption_lowres")
    lowres = torch.rand(2, 1, 4, 4)
    a = sr.generate(["a bag"] * 2, lowres=lowres, steps=3, generator=torch.Generator().manual_seed(0))
    b = sr.generate(["a bag"] * 2, lowres=1 - lowres, steps=3, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(a, b)


# ---------------------------------------------------------------- bad input
LOWRES = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kwargs, message", [
    ({"lowres": torch.rand(2, 1, 5, 5)}, r"lowres must be a float tensor \[B, 1, 4, 4\] in \[0, 1\]; got \[2, 1, 5"),
    ({"lowres": torch.rand(2, 1, 4, 4) * 255}, r"lowres must be in \[0, 1\]"),
    ({"lowres": torch.full((2, 1, 4, 4), float("nan"))}, "lowres contains NaN"),
    ({"lowres": torch.zeros(2, 1, 4, 4, dtype=torch.uint8)}, "lowres must be floats in"),
    ({"lowres": LOWRES, "steps": 0}, r"steps=0 is out of range: use 1\.\.1000"),
    ({"lowres": LOWRES, "sampler": "euler"}, "sampler='euler' is unknown"),
    ({"lowres": LOWRES, "guidance": -1.0}, r"guidance=-1.0 is out of range: use a number in \[0, 1"),
    ({"lowres": LOWRES, "aug_level": 2.0}, r"aug_level=2.0 is out of range: use a number in"),
    ({"lowres": LOWRES, "threshold": 99.5}, r"threshold=99.5 is out of range: use a number in \(0,"),
    ({}, "the super-resolution stage needs lowres"),
])
def test_bad_sampling_input_says_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_denoiser("caption_lowres").generate(["a bag", "a shirt"], **kwargs)


def test_unknown_caption_word_is_named():
    with pytest.raises(ValueError, match="caption word 'sneeker' .* did you mean 'sneaker'"):
        tiny_denoiser().generate(["a photo of a sneeker"], steps=2)


@pytest.mark.parametrize("tokens, message", [
    (torch.rand(2, 5), r"caption tokens must be a LongTensor \[B, S\]; got torch.float32 \[2, 5\]"),
    (torch.ones(2, 40, dtype=torch.long), r"caption tokens \[B, S=40\] are longer than this model reads"),
    (torch.full((2, 3), 999), "caption tokens are outside the vocabulary"),
    (42, r"caption tokens must be a LongTensor \[B, S\]; got int: pass captions as strings"),
])
def test_both_families_refuse_bad_caption_tokens_with_the_same_words(tokens, message):
    for model in (tiny_denoiser(), tiny_model(condition="caption")):  # one check: Tokenizer.tokens
        with pytest.raises(ValueError, match=message):
            model.generate(tokens, steps=2) if isinstance(model, Denoiser) else model.prepare_condition(tokens)


def test_an_autoregressive_model_is_refused_by_the_cascade(tmp_path):
    with pytest.raises(ValueError, match="base stage must be a diffusion model .*not ImageTransformer"):
        Cascade(tiny_model(), tiny_denoiser("caption_lowres"))
    with pytest.raises(ValueError, match="sr stage must read condition='caption_lowres'"):
        Cascade(tiny_denoiser(), tiny_denoiser())
    ar = tiny_model()
    path = save_checkpoint({"model": ar.state_dict(), "model_config": ar.config.to_dict()}, tmp_path / "ar.pt")
    with pytest.raises(CheckpointError, match="holds an autoregressive model, not a diffusion one"):
        Cascade.from_checkpoints(path, path)


def test_a_diffusion_checkpoint_is_refused_where_an_autoregressive_one_is_asked_for(tmp_path):
    model = tiny_denoiser()
    path = save_checkpoint({"model": model.state_dict(), "model_config": model.config.to_dict()}, tmp_path / "d.pt")
    assert isinstance(load_model(path), Denoiser)
    with pytest.raises(CheckpointError, match="holds a diffusion model, not an autoregressive one"):
        load_model(path, family="autoregressive")


def test_diffusion_config_is_validated():
    with pytest.raises(ValueError, match="condition='edges' is unknown.*caption, caption_lowres, none"):
        ModelConfig(family="diffusion", condition="edges")
    with pytest.raises(ValueError, match="patch_size=3 must divide image_size=14"):
        ModelConfig(family="diffusion", image_size=14, patch_size=3)
    with pytest.raises(ValueError, match="prediction='x0' is unknown"):
        ModelConfig(family="diffusion", prediction="x0")
    assert math.isclose(TrainConfig(ema_decay=0.999).ema_decay, 0.999)


# ---------------------------------------------------------------- every entry point refuses wrong types
X0 = torch.rand(2, 1, 4, 4) * 2 - 1


@pytest.mark.parametrize("call, message", [
    (lambda: tiny_denoiser().generate(["a bag"], generator="seed", steps=2),
     r"generator must be a torch.Generator on the model's device \(cpu\), e.g. .*; got str 'seed'"),
    (lambda: tiny_denoiser().generate(["a bag"], generator=0, steps=2), "generator must be a torch.Generator.*got int"),
    (lambda: tiny_denoiser().generate(["a bag"], trajectory="x", steps=2),
     r"trajectory must be a list, .* got str: pass trajectory=\[\]"),
    (lambda: tiny_denoiser().generate(["a bag"], batch_size=3, steps=2),
     r"the batch sizes disagree \(captions: 1, batch_size: 3\)"),
    (lambda: tiny_denoiser("caption_lowres").generate(["a bag"], lowres=LOWRES[:1].numpy(), steps=2),
     r"lowres must be a float tensor \[B, 1, 4, 4\] in \[0, 1\]; got ndarray"),
    (lambda: tiny_denoiser("caption_lowres").generate(["a bag"], lowres=LOWRES[:1].tolist(), steps=2),
     r"lowres must be a float tensor \[B, 1, 4, 4\] in \[0, 1\]; got list"),
    (lambda: diffusion.q_sample(X0, torch.full((2,), 2.0), torch.randn_like(X0)),
     r"t must hold times in \[0, 1\] \(0 is the image, 1 pure noise\); got 2"),
    (lambda: diffusion.q_sample(X0, torch.tensor([0.5, float("nan")]), torch.randn_like(X0)), "got nan"),
    (lambda: diffusion.q_sample(X0, torch.tensor([0.5, -0.1]), torch.randn_like(X0)), "got -0.1"),
    (lambda: diffusion.q_sample(X0, torch.full((2, 1), 0.5), torch.randn_like(X0)),
     r"t must be a float tensor \[B=2\], one time in \[0, 1\] per image, .*; got torch.float32 \[2, 1\]"),
    (lambda: diffusion.q_sample(X0, 0.5, torch.randn_like(X0)), r"t must be a float tensor \[B=2\].*got float 0.5"),
    (lambda: diffusion.q_sample(X0, torch.full((2,), 0.5), torch.randn(2, 1, 4)),
     r"noise must be a float tensor shaped like x0 \[2, 1, 4, 4\], e.g. torch.randn_like\(x0\); got torch.float32"),
    (lambda: tiny_denoiser().loss(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), ["a bag", "a dress"]),
     "images must be floats in .*got torch.uint8: scale uint8 images by 1/255"),
    (lambda: tiny_denoiser().loss(torch.rand(2, 1, 4, 4), None), "this diffusion model reads captions"),
    (lambda: Denoiser(ModelConfig()), r"Denoiser builds the diffusion family; got ModelConfig\(.*: pass "
                                      r"ModelConfig\(family='diffusion', ...\)"),
    (lambda: tiny_model().__class__(tiny_denoiser().config), "ImageTransformer builds the autoregressive family"),
])
def test_every_diffusion_entry_point_refuses_wrong_types_saying_what_to_pass(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_cascade_refuses_its_sr_stages_arguments_before_the_base_stage_samples(monkeypatch):
    cascade = Cascade(tiny_denoiser(), tiny_denoiser("caption_lowres"))
    monkeypatch.setattr(cascade.base, "generate", lambda *a, **k: pytest.fail("the base stage sampled"))
    for kwargs, message in (({"aug_level": 2.0}, "aug_level=2.0 is out of range"),
                            ({"threshold": (0.995, 3.0)}, "threshold=3.0 is out of range"),
                            ({"steps": (2, 10**14)}, r"steps=100000000000000 is out of range: use 1\.\.1000")):
        with pytest.raises(ValueError, match=message):
            cascade.generate(["a bag"], **kwargs)


def test_an_odd_d_model_trains_and_samples_instead_of_crashing():
    model = tiny_denoiser(d_model=33, n_heads=1)
    loss = model.loss(torch.rand(2, 1, 4, 4), ["a bag", "a dress"])
    assert loss.isfinite() and model.generate(["a bag"], steps=2).shape == (1, 1, 4, 4)


def test_a_resumed_run_refuses_another_init_from(tmp_path, train_slice):
    cfg = TrainConfig(batch_size=8, steps=4, eval_every=0, progress=False)
    Trainer(tiny_denoiser().config, cfg, tmp_path, data=train_slice).save()
    with pytest.raises(ValueError, match=r"init_from='diffusion_sr' cannot apply to a resumed run: .*started from "
                                         r"random weights\). Drop --init-from to resume"):
        Trainer(tiny_denoiser().config, dataclasses.replace(cfg, init_from="diffusion_sr"), tmp_path, resume=True,
                data=train_slice)
