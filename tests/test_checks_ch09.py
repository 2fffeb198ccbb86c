"""Chapter 09's checks: q_sample, the DDIM update and guidance-then-thresholding keep right answers (written in
other valid ways too) and name each typical mistake."""

import math

import numpy as np
import pytest
import torch

from imagen_tutorial import diffusion
from imagen_tutorial.checks import check_ddim_update, check_guided_x0, check_q_sample, core, ddim_update, guided_x0

REFERENCE = "continuing with the reference implementation"


def _cos_sin(t, like):
    shape = (-1,) + (1,) * (like.dim() - 1)
    return torch.cos(math.pi * t / 2).view(shape), torch.sin(math.pi * t / 2).view(shape)


# ---------------------------------------------------------------- q_sample
def my_q_sample(x0, t, noise):
    alpha, sigma = _cos_sin(t, x0)
    return alpha * x0 + sigma * noise


def _q_wrong(a_power=1, s_power=1, swap=False, one_noise=False, one_t=False):
    def wrong(x0, t, noise):
        t = torch.full_like(t, t[0].item()) if one_t else t
        alpha, sigma = _cos_sin(t, x0)
        alpha, sigma = (sigma, alpha) if swap else (alpha, sigma)
        eps = noise[0] if one_noise else noise  # one noise image, broadcast over the batch
        return alpha**a_power * x0 + sigma**s_power * eps
    return wrong


def test_a_correct_q_sample_is_kept(capsys):
    assert check_q_sample(my_q_sample) is my_q_sample
    assert "✅ q_sample: matches the reference on 3 cases" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, words", [
    (_q_wrong(a_power=2, s_power=2), "α² and σ² instead of α and σ"),
    (_q_wrong(s_power=2), "σ² instead of σ on the noise"),
    (_q_wrong(a_power=2), "α² instead of α on the image"),
    (_q_wrong(swap=True), "α and σ swapped"),
    (_q_wrong(one_noise=True), "the same noise image for the whole batch"),
    (_q_wrong(one_t=True), "one t for the whole batch"),
    (lambda x0, t, noise: torch.cos(math.pi * t / 2) * x0 + torch.sin(math.pi * t / 2) * noise,
     "broadcast along the image's last axis"),
    (lambda x0, t, noise: x0.mul_(torch.cos(math.pi * t / 2).view(-1, 1, 1, 1)).add_(
        torch.sin(math.pi * t / 2).view(-1, 1, 1, 1) * noise), "it writes into its input `x0`"),
], ids=["both-squared", "sigma-squared", "alpha-squared", "swapped", "one-noise", "one-t", "columns", "in-place"])
def test_q_sample_mistakes_are_named(capsys, wrong, words):
    assert check_q_sample(wrong) is diffusion.q_sample
    out = capsys.readouterr().out
    assert words in out and REFERENCE in out


def _own_log_snr(t):  # log(α²/σ²) by hand, in float32: NaN at t = 1, where cos(π/2) is −4.4e-8
    return 2 * (torch.cos(math.pi * t / 2).log() - torch.sin(math.pi * t / 2).log())


def _from_log_snr(log_snr):  # α = √sigmoid(λ), σ = √sigmoid(−λ), each [B, 1, 1, 1]
    return torch.sigmoid(log_snr).sqrt().view(-1, 1, 1, 1), torch.sigmoid(-log_snr).sqrt().view(-1, 1, 1, 1)


@pytest.mark.parametrize("wrong, words", [
    (lambda x0, t, noise: my_q_sample(x0.double(), t.double(), noise.double()),
     "returned float64; the rest of the notebook works in float32 — cast back with `.float()`"),
    (lambda x0, t, noise: _from_log_snr(_own_log_snr(t))[0] * x0 + _from_log_snr(_own_log_snr(t))[1] * noise,
     "wrong only for the images at t = 1 (NaN or inf there): every sampler starts at t = 1"),
    (lambda x0, t, noise: my_q_sample(x0, t, torch.randn_like(x0)), "it ignores `noise`"),
    (lambda x0, t, noise: _cos_sin(t[:1], x0)[0] * x0 + _cos_sin(t, x0)[1] * noise,
     "one value of `t` for the whole batch: the first image is right"),
    (lambda x0, t, noise: my_q_sample(x0, t.mean().expand_as(t), noise), "one `t` for the whole batch, their mean"),
    (lambda x0, t, noise: math.cos(math.pi * t.item() / 2) * x0 + math.sin(math.pi * t.item() / 2) * noise,
     "`.item()`, float() and int() take a tensor of one number"),
    (lambda x0, t, noise: my_q_sample(x0, t, noise).to("meta"), "returned a tensor on the meta device"),
], ids=["float64", "log-snr-nan-at-1", "own-noise", "alpha-of-first-t", "mean-t", "item", "meta-device"])
def test_q_sample_probes_name_the_symptom(capsys, wrong, words):
    assert check_q_sample(wrong) is diffusion.q_sample
    out = capsys.readouterr().out
    assert words in out and REFERENCE in out


def test_the_package_q_sample_handed_in_as_the_answer_is_not_blamed_on_a_rebinding(capsys, monkeypatch):
    monkeypatch.setattr(core, "_fallbacks", {})
    assert check_q_sample(diffusion.q_sample) is diffusion.q_sample
    out = capsys.readouterr().out
    assert "the package's own `diffusion.q_sample`" in out and "rebound" not in out and "✅" not in out


def test_a_t_of_shape_b_that_fails_to_broadcast_gets_the_reshape_hint(capsys):
    def crashes(x0, t, noise):  # never lines up: (B,) against (B, 1, H, W) with W != B
        alpha, sigma = torch.cos(math.pi * t / 2), torch.sin(math.pi * t / 2)
        return alpha * x0[:, :, :, :3] + sigma * noise[:, :, :, :3]

    check_q_sample(crashes)
    out = capsys.readouterr().out
    assert "raised RuntimeError" in out and "view(-1, 1, 1, 1)" in out


@pytest.mark.parametrize("answer", [
    lambda x0, t, noise: torch.einsum("b,bchw->bchw", torch.cos(math.pi * t / 2), x0)
    + torch.einsum("b,bchw->bchw", torch.sin(math.pi * t / 2), noise),
    lambda x0, t, noise: torch.stack([math.cos(math.pi * ti / 2) * x + math.sin(math.pi * ti / 2) * n
                                      for x, ti, n in zip(x0, t.tolist(), noise, strict=True)]),
    lambda x0, t, noise: diffusion.alpha_sigma(t)[0][:, None, None, None] * x0
    + diffusion.alpha_sigma(t)[1][:, None, None, None] * noise,
    lambda x0, t, noise: my_q_sample(x0.double(), t.double(), noise.double()).float(),
    lambda x0, t, noise: _from_log_snr(diffusion.log_snr(t))[0] * x0 + _from_log_snr(diffusion.log_snr(t))[1] * noise,
    lambda x0, t, noise: torch.lerp(_cos_sin(t, x0)[1] * noise, x0, _cos_sin(t, x0)[0])
    + _cos_sin(t, x0)[0] * _cos_sin(t, x0)[1] * noise,  # α·x0 + (1 − α)·σε + ασε
], ids=["einsum", "loop-over-batch", "package-schedule", "float64-inside", "package-log-snr", "lerp"])
def test_q_sample_valid_alternatives_pass(capsys, answer):
    assert check_q_sample(answer) is answer
    assert "✅" in capsys.readouterr().out


# ---------------------------------------------------------------- the DDIM update
def my_ddim_update(x_t, x0, t, s):
    alpha_t, sigma_t = _cos_sin(t, x_t)
    alpha_s, sigma_s = _cos_sin(s, x_t)
    eps = (x_t - alpha_t * x0) / sigma_t
    return alpha_s * x0 + sigma_s * eps


def _ddim_wrong(alpha_time="s", sigma_time="s", eps_time="t", swap=False, eps_sigma_time=None):
    def wrong(x_t, x0, t, s):
        times = {"t": t, "s": s}
        alpha_e, sigma_e = _cos_sin(times[eps_time], x_t)
        sigma_e = _cos_sin(times[eps_sigma_time], x_t)[1] if eps_sigma_time else sigma_e
        eps = (x_t - alpha_e * x0) / sigma_e
        alpha, sigma = _cos_sin(times[alpha_time], x_t)[0], _cos_sin(times[sigma_time], x_t)[1]
        return alpha * eps + sigma * x0 if swap else alpha * x0 + sigma * eps
    return wrong


def test_a_correct_ddim_update_is_kept(capsys):
    assert check_ddim_update(my_ddim_update) is my_ddim_update
    assert "✅ ddim_update: matches the reference on 3 cases" in capsys.readouterr().out


def test_ddim_update_lands_on_x0_at_s_0_and_stays_at_x_t_for_s_t():
    x_t, x0, t = torch.randn(2, 1, 4, 4), torch.rand(2, 1, 4, 4), torch.tensor([0.6, 0.9])
    assert torch.allclose(ddim_update(x_t, x0, t, torch.zeros(2)), x0, atol=1e-6)
    assert torch.allclose(ddim_update(x_t, x0, t, t), x_t, atol=1e-5)


@pytest.mark.parametrize("wrong, words", [
    (_ddim_wrong(swap=True), "x̂₀ and ε̂ swapped"),
    (_ddim_wrong(alpha_time="t"), "α_t where α_s belongs"),
    (_ddim_wrong(sigma_time="t"), "the same σ dividing ε̂ and multiplying it"),
    (_ddim_wrong(eps_sigma_time="s"), "the same σ dividing ε̂ and multiplying it"),
    (_ddim_wrong(eps_time="s", alpha_time="t", sigma_time="t"), "t and s exchanged"),
    (lambda x_t, x0, t, s: my_ddim_update(x_t, x0, s, t), "t and s exchanged"),
    (lambda x_t, x0, t, s: diffusion.ddpm_step(x_t, x0, t, s, torch.zeros_like(x_t)), "the DDPM posterior mean"),
    (_ddim_wrong(alpha_time="t", sigma_time="t"), "the sampler never moves"),
    (_ddim_wrong(eps_time="s"), "the sampler never moves"),
    (lambda x_t, x0, t, s: _cos_sin(s, x_t)[0] * x0 + _cos_sin(s, x_t)[1] * x_t, "ε̂ missing"),
    (lambda x_t, x0, t, s: _cos_sin(s, x_t)[0] * x0 + _cos_sin(s, x_t)[1] * x_t.sub_(  # ε̂ built inside x_t
        _cos_sin(t, x_t)[0] * x0).div_(_cos_sin(t, x_t)[1]), "it writes into its input `x_t`"),
], ids=["swapped", "alpha-t", "sigma-t-in-both", "sigma-s-in-both", "t-s-exchanged", "t-s-arguments-exchanged",
        "ddpm-mean", "both-t", "eps-at-s", "x_t-for-eps", "in-place"])
def test_ddim_update_mistakes_are_named(capsys, wrong, words):
    assert check_ddim_update(wrong) is ddim_update
    out = capsys.readouterr().out
    assert words in out and REFERENCE in out


@pytest.mark.parametrize("wrong, words", [
    (lambda x_t, x0, t, s: my_ddim_update(x_t.double(), x0.double(), t.double(), s.double()), "returned float64"),
    (lambda x_t, x0, t, s: my_ddim_update(x_t, x0, t[:1].expand_as(t), s),
     "one `t` for the whole batch, the first image's, t[0]"),
    (lambda x_t, x0, t, s: my_ddim_update(x_t, x0, t, s[:1].expand_as(s)),
     "one `s` for the whole batch, the first image's, s[0]"),
    (lambda x_t, x0, t, s: _from_log_snr(_own_log_snr(s))[0] * x0 + _from_log_snr(_own_log_snr(s))[1]
     * (x_t - _from_log_snr(_own_log_snr(t))[0] * x0) / _from_log_snr(_own_log_snr(t))[1],
     "wrong only for the images at t = 1 (NaN or inf there)"),
    (lambda x_t, x0, t, s: _cos_sin(s, x_t)[1] / _cos_sin(t, x_t)[1] * (x_t + (
        _cos_sin(s, x_t)[0] * _cos_sin(t, x_t)[1] / _cos_sin(s, x_t)[1] - _cos_sin(t, x_t)[0]) * x0),
     "wrong only for the images at s = 0 (NaN or inf there): the last jump lands on the image"),
], ids=["float64", "one-t", "one-s", "log-snr-nan-at-1", "divides-by-sigma-s"])
def test_ddim_update_probes_name_the_symptom(capsys, wrong, words):
    assert check_ddim_update(wrong) is ddim_update
    out = capsys.readouterr().out
    assert words in out and REFERENCE in out


@pytest.mark.parametrize("answer", [
    lambda x_t, x0, t, s: diffusion.ddim_step(x0, (x_t - _cos_sin(t, x_t)[0] * x0) / _cos_sin(t, x_t)[1], s),
    lambda x_t, x0, t, s: my_ddim_update(x_t.double(), x0.double(), t.double(), s.double()).float(),
    lambda x_t, x0, t, s: torch.where(_cos_sin(s, x_t)[1] > 0, my_ddim_update(x_t, x0, t, s), x0),
    lambda x_t, x0, t, s: torch.lerp(x0 * _cos_sin(s, x_t)[0], (x_t - _cos_sin(t, x_t)[0] * x0) / _cos_sin(t, x_t)[1],
                                     _cos_sin(s, x_t)[1]) + _cos_sin(s, x_t)[1] * x0 * _cos_sin(s, x_t)[0],
    lambda x_t, x0, t, s: torch.stack([  # a loop over the images, with Python floats
        math.cos(math.pi * si / 2) * x + math.sin(math.pi * si / 2) * (xt - math.cos(math.pi * ti / 2) * x)
        / math.sin(math.pi * ti / 2) for xt, x, ti, si in zip(x_t, x0, t.tolist(), s.tolist(), strict=True)]),
], ids=["package-pieces", "float64-inside", "where", "lerp", "loop-over-batch"])
def test_ddim_update_valid_alternatives_pass(capsys, answer):
    assert check_ddim_update(answer) is answer
    assert "✅" in capsys.readouterr().out


# ---------------------------------------------------------------- guidance, then thresholding
def my_guided_x0(cond_pred, uncond_pred, x_t, t, w):
    v = uncond_pred + w * (cond_pred - uncond_pred)
    alpha, sigma = _cos_sin(t, x_t)
    x0 = alpha * x_t - sigma * v
    s = torch.quantile(x0.abs().flatten(1), 0.995, dim=1).clamp(min=1).view(-1, 1, 1, 1)
    return x0.clamp(-s, s) / s


def _x0(v, x_t, t):
    alpha, sigma = _cos_sin(t, x_t)
    return alpha * x_t - sigma * v


def _thr(x0):
    return diffusion.dynamic_threshold(x0, 0.995)


def test_a_correct_guided_x0_is_kept(capsys):
    assert check_guided_x0(my_guided_x0) is my_guided_x0
    assert "✅ guided_x0: matches the reference on 5 cases" in capsys.readouterr().out


def test_guided_x0_at_w_1_is_the_thresholded_conditional_prediction():
    c, u, x_t, t = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4), torch.tensor([.3, .8])
    assert torch.allclose(guided_x0(c, u, x_t, t, 1.0), _thr(_x0(c, x_t, t)), atol=1e-6)
    assert guided_x0(c, u, x_t, t, 8.0).abs().max() <= 1 + 1e-6


@pytest.mark.parametrize("wrong, words", [
    (lambda c, u, x_t, t, w: _thr(_x0(c + w * (u - c), x_t, t)), "the formula reversed"),
    (lambda c, u, x_t, t, w: _thr(_x0(w * c, x_t, t)), "w·v_c without the unconditional base"),
    (lambda c, u, x_t, t, w: _thr(_x0(c + w * (c - u), x_t, t)), "this is guidance w + 1"),
    (lambda c, u, x_t, t, w: _thr(_x0(u, x_t, t)) + w * (_thr(_x0(c, x_t, t)) - _thr(_x0(u, x_t, t))),
     "guidance applied to x̂₀ after thresholding"),
    (lambda c, u, x_t, t, w: _x0(u + w * (c - u), x_t, t), "no thresholding"),
    (lambda c, u, x_t, t, w: _x0(u + w * (c - u), x_t, t).clamp(-1, 1), "static clipping"),
    (lambda c, u, x_t, t, w: _thr((x_t - _cos_sin(t, x_t)[1] * (u + w * (c - u))) / _cos_sin(t, x_t)[0]),
     "the prediction read as ε"),
    (lambda c, u, x_t, t, w: _thr(_cos_sin(t, x_t)[0] * (u + w * (c - u)) - _cos_sin(t, x_t)[1] * x_t),
     "v and x_t swapped"),
    (lambda c, u, x_t, t, w: diffusion.dynamic_threshold(_x0(u + w * (c - u), x_t, t), 99.5),
     "the percentile here is 0.995"),
], ids=["reversed", "w-cond", "w-plus-1", "after-threshold", "no-threshold", "static", "as-eps", "v-x_t-swapped",
        "percent"])
def test_guidance_mistakes_are_named(capsys, wrong, words):
    assert check_guided_x0(wrong) is guided_x0
    out = capsys.readouterr().out
    assert words in out and REFERENCE in out


def _thr_by(x0, s, clip=True, divide=True):  # dynamic thresholding by hand with a given s of shape [B]
    s = s.reshape(-1, 1, 1, 1)
    out = x0.clamp(-s, s) if clip else x0
    return out / s if divide else out


def _q(x0):  # the 99.5th percentile of |x̂₀| per image
    return torch.quantile(x0.abs().flatten(1), 0.995, dim=1)


def _kth(x0, k):
    return x0.abs().flatten(1).kthvalue(k(x0[0].numel()), dim=1).values.clamp(min=1)


def _np_threshold(x0):  # per-image percentiles collected in a numpy array: float64
    s = np.array([max(1.0, np.percentile(np.abs(x.numpy()), 99.5)) for x in x0])
    return _thr_by(x0, torch.from_numpy(s))


def _guided_on_eps(c, u, x_t, t, w):  # exact for t < 1; at t = 1 it divides by α ≈ 0
    alpha, sigma = _cos_sin(t, x_t)
    eps_c, eps_u = sigma * x_t + alpha * c, sigma * x_t + alpha * u
    return _thr((x_t - sigma * (eps_u + w * (eps_c - eps_u))) / alpha)


def _v(c, u, w):
    return u + w * (c - u)


@pytest.mark.parametrize("wrong, words", [
    (lambda c, u, x_t, t, w: _np_threshold(_x0(_v(c, u, w), x_t, t)), "returned float64"),
    (_guided_on_eps, "wrong only for the images at t = 1: x̂₀ = (x_t − σ·ε̃)/α (guidance written on ε̂"),
    (lambda c, u, x_t, t, w: (lambda x0: _thr_by(x0, _kth(x0, lambda n: math.ceil(0.995 * n))))(
        _x0(_v(c, u, w), x_t, t)), "the percentile by nearest rank"),
    (lambda c, u, x_t, t, w: (lambda x0: _thr_by(x0, _kth(x0, lambda n: int(0.995 * n))))(
        _x0(_v(c, u, w), x_t, t)), "the percentile by nearest rank"),
    (lambda c, u, x_t, t, w: (lambda x0: _thr_by(x0, x0.abs().flatten(1).sort(1).values[:, int(0.995 * (
        x0[0].numel() - 1))].clamp(min=1)))(_x0(_v(c, u, w), x_t, t)), "the percentile by nearest rank"),
    (lambda c, u, x_t, t, w: (lambda x0: _thr_by(x0, torch.quantile(x0.abs(), 0.995).clamp(min=1).expand(len(t))))(
        _x0(_v(c, u, w), x_t, t)), "one threshold for the whole batch"),
    (lambda c, u, x_t, t, w: (lambda x0: _thr_by(x0, _q(x0)))(_x0(_v(c, u, w), x_t, t)), "s without max(1, ·)"),
    (lambda c, u, x_t, t, w: (lambda x0: _thr_by(x0, _q(x0).clamp(min=1), divide=False))(_x0(_v(c, u, w), x_t, t)),
     "clipped to [−s, s] but not divided by s"),
    (lambda c, u, x_t, t, w: (lambda x0: _thr_by(x0, _q(x0).clamp(min=1), clip=False))(_x0(_v(c, u, w), x_t, t)),
     "divided by s but not clipped"),
    (lambda c, u, x_t, t, w: (lambda x0: _thr_by(x0, torch.quantile(x0.flatten(1), 0.995, dim=1).clamp(min=1)))(
        _x0(_v(c, u, w), x_t, t)), "the percentile of x̂₀ itself, not of |x̂₀|"),
    (lambda c, u, x_t, t, w: _thr(_x0(_v(c, u, w), x_t, t[:1].expand_as(t))),
     "one `t` for the whole batch, the first image's, t[0]"),
    (lambda c, u, x_t, t, w: (lambda x0, s: x0.clamp(-s, s) / s)(_x0(_v(c, u, w), x_t, t),
                                                                 _q(_x0(_v(c, u, w), x_t, t)).clamp(min=1)),
     "the threshold s has one value per image, shape [B]: reshape it to [B, 1, 1, 1] (s.view(-1, 1, 1, 1))"),
    (lambda c, u, x_t, t, w: _thr(torch.cos(math.pi * t / 2) * x_t - torch.sin(math.pi * t / 2) * _v(c, u, w)),
     "α(t) and σ(t) have one value per image, shape [B]"),
], ids=["numpy-float64", "guided-on-eps", "kthvalue-ceil", "kthvalue-floor", "sorted-index", "one-threshold",
        "no-max-1", "clip-only", "divide-only", "no-abs", "one-t", "s-not-reshaped", "alpha-not-reshaped"])
def test_guidance_thresholding_slips_are_named(capsys, wrong, words):
    assert check_guided_x0(wrong) is guided_x0
    out = capsys.readouterr().out
    assert words in out and REFERENCE in out


@pytest.mark.parametrize("answer", [
    lambda c, u, x_t, t, w: _thr(_x0(u, x_t, t) + w * (_x0(c, x_t, t) - _x0(u, x_t, t))),  # on x̂₀, before
    lambda c, u, x_t, t, w: _thr(_x0(torch.lerp(u, c, w), x_t, t)),
    lambda c, u, x_t, t, w: _thr(diffusion.to_x0_eps((1 - w) * u + w * c, x_t, t, "v")[0]),
    lambda c, u, x_t, t, w: (lambda x0: (lambda s: torch.where(s > 1, x0.clamp(-s, s) / s, x0))(
        _q(x0).view(-1, 1, 1, 1)))(_x0(_v(c, u, w), x_t, t)),
    lambda c, u, x_t, t, w: _thr(_x0(_v(c, u, w).double(), x_t.double(), t.double())).float(),
    lambda c, u, x_t, t, w: torch.cat([_thr(_x0(_v(c[i:i + 1], u[i:i + 1], w), x_t[i:i + 1], t[i:i + 1]))
                                       for i in range(len(t))]),
    lambda c, u, x_t, t, w: _thr(torch.einsum("b,bchw->bchw", torch.cos(math.pi * t / 2), x_t)
                                 - torch.einsum("b,bchw->bchw", torch.sin(math.pi * t / 2), _v(c, u, w))),
    lambda c, u, x_t, t, w: (lambda x0: _thr_by(x0, torch.from_numpy(np.maximum(1.0, np.percentile(
        x0.abs().flatten(1).numpy(), 99.5, axis=1))).float()))(_x0(_v(c, u, w), x_t, t)),
], ids=["on-x0-before-thresholding", "lerp", "package-conversion", "where", "float64-inside", "loop-over-batch",
        "einsum", "numpy-percentile-cast-back"])
def test_guidance_valid_alternatives_pass(capsys, answer):
    assert check_guided_x0(answer) is answer
    assert "✅" in capsys.readouterr().out


# ---------------------------------------------------------------- not attempted
def test_blank_exercises_are_not_attempted(capsys):
    def blank(*args):
        raise NotImplementedError("Exercise 1: write my_q_sample")

    assert check_q_sample(blank) is diffusion.q_sample
    assert check_ddim_update(blank) is ddim_update
    assert check_guided_x0(blank) is guided_x0
    out = capsys.readouterr().out
    assert out.count("➖") == 3 and "❌" not in out
