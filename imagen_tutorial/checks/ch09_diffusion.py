"""Checks for chapter 09 (diffusion from scratch): the forward process `q_sample`, one DDIM update from x_t and
the (thresholded) prediction x̂₀, and classifier-free guidance on the v-prediction followed by dynamic
thresholding.

The references are the package's own pieces (`imagen_tutorial.diffusion`), combined the way `sample_loop` combines
them at every step: guide the prediction, turn it into x̂₀, threshold x̂₀, recompute ε̂ from the thresholded x̂₀,
and jump to the earlier time with the DDIM update. Every case has a batch of at least two images with a different
t per image, so that a t that is not broadcast per image, or one noise image shared by the batch, is caught.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .. import diffusion
from .core import compare, settle

__all__ = ["check_q_sample", "check_ddim_update", "check_guided_x0", "ddim_update", "guided_x0"]

PERCENTILE = 0.995  # Imagen's dynamic-thresholding percentile (the package clips by default: chapter 09, section 5)


def _per_image(v: Tensor, like: Tensor) -> Tensor:  # (B,) -> (B, 1, 1, 1)
    return v.view(-1, *([1] * (like.dim() - 1)))


def _schedule(t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    alpha, sigma = diffusion.alpha_sigma(t)
    return _per_image(alpha, like), _per_image(sigma, like)


def _broadcast_error(error: BaseException, args: tuple) -> str | None:
    if "must match the size of tensor" in str(error):
        return ("α(t) and σ(t) have one value per image, shape [B]: reshape them to [B, 1, 1, 1] "
                "(alpha.view(-1, 1, 1, 1)) so that each image is scaled by its own level")
    return None


# ---------------------------------------------------------------- exercise 1: the forward process
def level_cases(seed: int, specs: list[tuple[tuple[int, int], list[float]]]) -> list[tuple]:
    """(images [b, 1, side, side] in [-1, 1], one level per image [b], noise like the images) for each
    ((b, side), levels) of `specs`, drawn from one generator: the cases of the forward-process checks (chapter 09's
    q_sample, chapter 10's noise augmentation)."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for (b, side), levels in specs:
        x = torch.rand(b, 1, side, side, generator=g) * 2 - 1
        cases.append((x, torch.tensor(levels), torch.randn(b, 1, side, side, generator=g)))
    return cases


def _q_cases() -> list[tuple]:
    # First a batch of 4 images of 4×4 pixels: there, α of shape [4] broadcasts silently along the columns
    # instead of failing, so that mistake is seen on a case before the ones where it raises.
    return level_cases(0, [((4, 4), [0.1, 0.35, 0.6, 0.9]), ((3, 5), [0.2, 0.5, 0.8]), ((2, 6), [0.05, 0.7])])


def _q_mistake(a_power: int = 1, s_power: int = 1, swap: bool = False, one_noise: bool = False,
               one_t: bool = False) -> Callable:
    def wrong(x0, t, noise):
        t = t[:1].expand_as(t) if one_t else t
        alpha, sigma = _schedule(t, x0)
        if swap:
            alpha, sigma = sigma, alpha
        eps = noise[:1].expand_as(noise) if one_noise else noise
        return alpha**a_power * x0 + sigma**s_power * eps
    return wrong


def _q_columns(x0, t, noise):
    alpha, sigma = diffusion.alpha_sigma(t)  # (B,) against (B, 1, H, W): lines up with the last axis
    return alpha * x0 + sigma * noise


def check_q_sample(learner: Callable | None) -> Callable:
    """Check q_sample(x0 [B, C, H, W], t [B], noise [B, C, H, W]) -> x_t = α(t)·x0 + σ(t)·noise."""
    mistakes = {
        "α² and σ² instead of α and σ: those are the variances; x_t = α·x₀ + σ·ε, with α² + σ² = 1":
            _q_mistake(a_power=2, s_power=2),
        "σ² instead of σ on the noise (σ² is the noise's variance; x_t = α·x₀ + σ·ε)": _q_mistake(s_power=2),
        "α² instead of α on the image (x_t = α·x₀ + σ·ε)": _q_mistake(a_power=2),
        "α and σ swapped: σ·x₀ + α·ε is mostly image at t = 1 and mostly noise at t = 0 — α = cos(πt/2) goes "
        "with the image": _q_mistake(swap=True),
        "the same noise image for the whole batch (noise[0]): each image needs its own ε": _q_mistake(one_noise=True),
        "one t for the whole batch (t[0]): each image has its own t": _q_mistake(one_t=True),
        "α(t) and σ(t) of shape [B] broadcast along the image's last axis (its columns) instead of per image: "
        "reshape them to [B, 1, 1, 1] (alpha.view(-1, 1, 1, 1))": _q_columns,
    }
    ok = compare("q_sample", learner, diffusion.q_sample, _q_cases(), mistakes, on_error=_broadcast_error)
    return settle("q_sample", learner, diffusion.q_sample, ok)


# ---------------------------------------------------------------- exercise 2: the DDIM update
def ddim_update(x_t: Tensor, x0: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """One DDIM step (η = 0) from time t to the earlier time s, given x_t and the (thresholded) prediction x̂₀,
    all images [B, C, H, W], t and s [B]: ε̂ = (x_t − α_t·x̂₀)/σ_t, then x_s = α_s·x̂₀ + σ_s·ε̂."""
    alpha_t, sigma_t = _schedule(t, x_t)
    eps = (x_t - alpha_t * x0) / sigma_t  # the noise that x̂₀ implies
    return diffusion.ddim_step(x0, eps, s)


def _ddim_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(1)
    cases = []
    for (b, side), t, s in [((4, 4), [0.9, 0.7, 0.5, 0.3], [0.8, 0.55, 0.25, 0.1]),
                            ((3, 5), [1.0, 0.6, 0.4], [0.9, 0.5, 0.1]), ((2, 6), [0.75, 0.2], [0.5, 0.05])]:
        x_t = torch.randn(b, 1, side, side, generator=g)
        x0 = (torch.rand(b, 1, side, side, generator=g) * 2 - 1)
        cases.append((x_t, x0, torch.tensor(t), torch.tensor(s)))
    return cases


def _ddim_mistake(new_alpha: str = "s", new_sigma: str = "s", swap: bool = False) -> Callable:
    def wrong(x_t, x0, t, s):
        times = {"t": t, "s": s}
        alpha_t, sigma_t = _schedule(t, x_t)
        eps = (x_t - alpha_t * x0) / sigma_t
        alpha, _ = _schedule(times[new_alpha], x_t)
        _, sigma = _schedule(times[new_sigma], x_t)
        return alpha * eps + sigma * x0 if swap else alpha * x0 + sigma * eps
    return wrong


def check_ddim_update(learner: Callable | None) -> Callable:
    """Check ddim_update(x_t, x0, t, s) -> x_s, on batches with a different t and s per image."""
    mistakes = {
        "x̂₀ and ε̂ swapped: α_s·ε̂ + σ_s·x̂₀ — the image goes with α_s, the noise with σ_s": _ddim_mistake(swap=True),
        "α_t where α_s belongs: the new point x_s = α_s·x̂₀ + σ_s·ε̂ sits at the earlier time s, so both use s":
            _ddim_mistake(new_alpha="t"),
        "σ_t where σ_s belongs: the new point x_s = α_s·x̂₀ + σ_s·ε̂ sits at the earlier time s, so both use s":
            _ddim_mistake(new_sigma="t"),
        "x_t itself, so the sampler never moves: ε̂ comes from the current time, ε̂ = (x_t − α_t·x̂₀)/σ_t, and "
        "the update x_s = α_s·x̂₀ + σ_s·ε̂ uses the earlier time s (one of the two used the other's time)":
            lambda x_t, x0, t, s: x_t,
        "ε̂ missing: x_s = α_s·x̂₀ + σ_s·x_t uses x_t where ε̂ = (x_t − α_t·x̂₀)/σ_t belongs":
            lambda x_t, x0, t, s: _schedule(s, x_t)[0] * x0 + _schedule(s, x_t)[1] * x_t,
    }
    ok = compare("ddim_update", learner, ddim_update, _ddim_cases(), mistakes, on_error=_broadcast_error)
    return settle("ddim_update", learner, ddim_update, ok)


# ---------------------------------------------------------------- exercise 3: guidance, then thresholding
def guided_x0(cond_pred: Tensor, uncond_pred: Tensor, x_t: Tensor, t: Tensor, w: float) -> Tensor:
    """Classifier-free guidance on a v-prediction and Imagen's dynamic thresholding: ṽ = v_u + w·(v_c − v_u),
    x̂₀ = α_t·x_t − σ_t·ṽ, then dynamic thresholding at the 99.5th percentile. All images [B, C, H, W], t [B]."""
    pred = diffusion.guided_prediction(cond_pred, uncond_pred, w)
    x0, _ = diffusion.to_x0_eps(pred, x_t, t, "v")
    return diffusion.dynamic_threshold(x0, PERCENTILE)


def _guidance_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(2)
    b, side = 4, 6
    t = torch.tensor([0.3, 0.55, 0.8, 0.95])
    x_t = torch.randn(b, 1, side, side, generator=g)
    uncond = torch.randn(b, 1, side, side, generator=g) * 0.5
    cond = uncond + torch.randn(b, 1, side, side, generator=g) * 0.4
    quiet = (x_t * 0.2, uncond * 0.2, cond * 0.2)  # a small x̂₀ that the threshold leaves alone at w = 1
    return [(cond, uncond, x_t, t, 3.0), (cond, uncond, x_t, t, 8.0), (cond, uncond, x_t, t, 0.0),
            (quiet[2], quiet[1], quiet[0], t.flip(0), 1.0), (cond[:3], uncond[:3], x_t[:3], t[1:], 5.0)]


def _x0_of(pred, x_t, t):
    return diffusion.to_x0_eps(pred, x_t, t, "v")[0]


def _after_threshold(c, u, x_t, t, w):
    tc = diffusion.dynamic_threshold(_x0_of(c, x_t, t), PERCENTILE)
    tu = diffusion.dynamic_threshold(_x0_of(u, x_t, t), PERCENTILE)
    return tu + w * (tc - tu)


def check_guided_x0(learner: Callable | None) -> Callable:
    """Check guided_x0(cond_pred, uncond_pred, x_t, t, w) -> the thresholded x̂₀, at w = 0, 1, 3, 5, 8."""
    def thresholded(pred_fn, threshold=lambda x0: diffusion.dynamic_threshold(x0, PERCENTILE)):
        return lambda c, u, x_t, t, w: threshold(_x0_of(pred_fn(c, u, w), x_t, t))
    mistakes = {
        "the formula reversed, v_c + w·(v_u − v_c): w pushes away from the caption":
            thresholded(lambda c, u, w: c + w * (u - c)),
        "w·v_c without the unconditional base: guidance is v_u + w·(v_c − v_u)": thresholded(lambda c, u, w: w * c),
        "v_c + w·(v_c − v_u): the base is the unconditional prediction (this is guidance w + 1)":
            thresholded(lambda c, u, w: c + w * (c - u)),
        "guidance applied to x̂₀ after thresholding: each x̂₀ thresholded first, then x̂₀_u + w·(x̂₀_c − x̂₀_u), "
        "which leaves [−1, 1] again — guide the prediction, then threshold once": _after_threshold,
        "no thresholding: the guided x̂₀ must go through dynamic thresholding (diffusion.dynamic_threshold)":
            thresholded(diffusion.guided_prediction, threshold=lambda x0: x0),
        "static clipping to [−1, 1] instead of dynamic thresholding": thresholded(
            diffusion.guided_prediction, threshold=diffusion.static_threshold),
        "the prediction read as ε (x̂₀ = (x_t − σ·ε̂)/α): this model predicts v, so x̂₀ = α_t·x_t − σ_t·v̂":
            lambda c, u, x_t, t, w: diffusion.dynamic_threshold(diffusion.to_x0_eps(
                diffusion.guided_prediction(c, u, w), x_t, t, "eps")[0], PERCENTILE),
        "x̂₀ = α_t·v̂ − σ_t·x_t (v and x_t swapped): x̂₀ = α_t·x_t − σ_t·v̂": lambda c, u, x_t, t, w:
            diffusion.dynamic_threshold(_x0_of(x_t, diffusion.guided_prediction(c, u, w), t), PERCENTILE),
    }

    def error(err: BaseException, args: tuple) -> str | None:
        if "quantile" in str(err) and "range" in str(err):
            return "torch.quantile takes q in [0, 1]: the percentile here is 0.995, not 99.5"
        return _broadcast_error(err, args)

    ok = compare("guided_x0", learner, guided_x0, _guidance_cases(), mistakes, on_error=error)
    return settle("guided_x0", learner, guided_x0, ok)
