"""Checks for chapter 09 (diffusion from scratch): the forward process `q_sample`, one DDIM update from x_t and
the (thresholded) prediction x̂₀, and classifier-free guidance on the v-prediction followed by dynamic
thresholding.

The references are the package's own pieces (`imagen_tutorial.diffusion`), combined the way `sample_loop` combines
them at every step: guide the prediction, turn it into x̂₀, threshold x̂₀, recompute ε̂ from the thresholded x̂₀,
and jump to the earlier time with the DDIM update. Every case has a batch of at least two images with a different
t per image (one t for the whole batch is caught), the end points of time are in the cases (every sampler starts
at t = 1, where float32 gives α = cos(π/2) = −4.4e-8, not 0; the last DDIM jump lands at s = 0), and the first
image's t comes back in a later image, so that an answer that is right only where t equals the first image's is
told apart from one noise image shared by the batch.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import Tensor

from .. import diffusion
from .core import Exercise, Mistake, compare, end_points, failing_line, ignores, per_image, settle

__all__ = ["check_q_sample", "check_ddim_update", "check_guided_x0", "ddim_update", "guided_x0"]

PERCENTILE = 0.995  # Imagen's dynamic-thresholding percentile (the package clips by default: chapter 09, section 5)


def _per_image(v: Tensor, like: Tensor) -> Tensor:  # (B,) -> (B, 1, 1, 1)
    return v.view(-1, *([1] * (like.dim() - 1)))


def _schedule(t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    alpha, sigma = diffusion.alpha_sigma(t)
    return _per_image(alpha, like), _per_image(sigma, like)


def _broadcast_error(error: BaseException, args: tuple, threshold: bool = False) -> Mistake | None:
    """A value per image of shape [B] that met images [B, C, H, W]: say which one, from the failing line."""
    if "must match the size of tensor" not in str(error):
        return None
    line = failing_line(error)
    schedule = re.search(r"alpha|sigma|cos|sin|α|σ", line) is not None
    if threshold and re.search(r"clamp|quantile|kthvalue|percentile|thresh|\bs\b", line) and not schedule:
        return Mistake("threshold-not-reshaped", "the threshold s has one value per image, shape [B]: reshape it to "
                       "[B, 1, 1, 1] (s.view(-1, 1, 1, 1)) before clamping and dividing, so that each image is "
                       "scaled by its own s")
    if threshold and not schedule:
        return Mistake("per-image-value-not-reshaped", "a value with one entry per image, shape [B] (α(t), σ(t) or "
                       "the threshold s), met the images [B, C, H, W]: reshape it to [B, 1, 1, 1] (.view(-1, 1, 1, "
                       "1))")
    return Mistake("schedule-not-reshaped", "α(t) and σ(t) have one value per image, shape [B]: reshape them to [B, "
                   "1, 1, 1] (alpha.view(-1, 1, 1, 1)) so that each image is scaled by its own level")


# What typically breaks at the end points of time, for the `end_points` probe.
def alpha_at_1(where: str = "every sampler starts at t = 1, and there", level: str = "t") -> str:
    return (f"{where} float32 gives α = cos(π/2) = −4.4e-8, not 0, so a log of α (a log-SNR form) is NaN and a "
            f"division by α blows up — use α = cos(π{level}/2) and σ = sin(π{level}/2) as they are "
            f"(diffusion.alpha_sigma), which need neither")


SIGMA_AT_0 = ("σ(0) = 0 there, so a log of σ or a division by σ blows up — use α and σ as they are, which need "
              "neither")


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
    # instead of failing, so that mistake is seen on a case before the ones where it raises. The end points of
    # time, t = 1 and t = 0, are in the second batch; the first image's t comes back in the third image.
    return level_cases(0, [((4, 4), [0.35, 0.1, 0.35, 0.9]), ((3, 5), [0.5, 1.0, 0.0]), ((2, 6), [0.7, 0.05])])


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
    mistakes = [
        Mistake("variances-not-stds", "α² and σ² instead of α and σ: those are the variances; x_t = α·x₀ + σ·ε, with "
                "α² + σ² = 1", _q_mistake(a_power=2, s_power=2)),
        Mistake("sigma-squared", "σ² instead of σ on the noise (σ² is the noise's variance; x_t = α·x₀ + σ·ε)",
                _q_mistake(s_power=2)),
        Mistake("alpha-squared", "α² instead of α on the image (x_t = α·x₀ + σ·ε)", _q_mistake(a_power=2)),
        Mistake("alpha-sigma-swapped", "α and σ swapped: σ·x₀ + α·ε is mostly image at t = 1 and mostly noise at t = "
                "0 — α = cos(πt/2) goes with the image", _q_mistake(swap=True)),
        Mistake("one-noise-per-batch", "the same noise image for the whole batch (noise[0]): each image needs its "
                "own ε", _q_mistake(one_noise=True)),
        Mistake("one-t-per-batch", "one t for the whole batch (t[0]): each image has its own t",
                _q_mistake(one_t=True)),
        Mistake("broadcast-along-columns", "α(t) and σ(t) of shape [B] broadcast along the image's last axis (its "
                "columns) instead of per image: reshape them to [B, 1, 1, 1] (alpha.view(-1, 1, 1, 1))", _q_columns),
    ]
    probes = [ignores("noise"), end_points({"t": {1.0: alpha_at_1(), 0.0: SIGMA_AT_0}}), per_image("t")]
    ok = compare("q_sample", learner, diffusion.q_sample, _q_cases(), mistakes, on_error=_broadcast_error,
                 probes=probes)
    return settle("q_sample", learner, diffusion.q_sample, ok)


# ---------------------------------------------------------------- exercise 2: the DDIM update
def ddim_update(x_t: Tensor, x0: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """One DDIM step (η = 0) from time t to the earlier time s, given x_t and the (thresholded) prediction x̂₀,
    all images [B, C, H, W], t and s [B]: ε̂ = (x_t − α_t·x̂₀)/σ_t, then x_s = α_s·x̂₀ + σ_s·ε̂."""
    alpha_t, sigma_t = _schedule(t, x_t)
    eps = (x_t - alpha_t * x0) / sigma_t  # the noise that x̂₀ implies
    return diffusion.ddim_step(x0, eps, s)


def _ddim_cases() -> list[tuple]:
    # t = 1 (the sampler's first time) and s = 0 (the image) are in the second batch; the first image's (t, s)
    # comes back in the third image of the first batch.
    g = torch.Generator().manual_seed(1)
    cases = []
    for (b, side), t, s in [((4, 4), [0.7, 0.9, 0.7, 0.3], [0.5, 0.8, 0.5, 0.1]),
                            ((3, 5), [0.6, 1.0, 0.4], [0.5, 0.9, 0.0]), ((2, 6), [0.75, 0.2], [0.55, 0.05])]:
        x_t = torch.randn(b, 1, side, side, generator=g)
        x0 = (torch.rand(b, 1, side, side, generator=g) * 2 - 1)
        cases.append((x_t, x0, torch.tensor(t), torch.tensor(s)))
    return cases


def _ddim_mistake(eps_alpha: str = "t", eps_sigma: str = "t", alpha: str = "s", sigma: str = "s",
                  swap: bool = False) -> Callable:
    """ε̂ = (x_t − α·x̂₀)/σ with α at time `eps_alpha` and σ at `eps_sigma`, then α·x̂₀ + σ·ε̂ with α at `alpha` and σ
    at `sigma` ("t" or "s"), written as a learner writes it, so that a division by σ_s = 0 gives its NaN too."""
    def wrong(x_t, x0, t, s):
        at = {"t": t, "s": s}
        eps = (x_t - _schedule(at[eps_alpha], x_t)[0] * x0) / _schedule(at[eps_sigma], x_t)[1]
        a, sig = _schedule(at[alpha], x_t)[0], _schedule(at[sigma], x_t)[1]
        return a * eps + sig * x0 if swap else a * x0 + sig * eps
    return wrong


def check_ddim_update(learner: Callable | None) -> Callable:
    """Check ddim_update(x_t, x0, t, s) -> x_s, on batches with a different t and s per image, t = 1 and s = 0
    among them."""
    mistakes = [
        Mistake("x0-eps-swapped", "x̂₀ and ε̂ swapped: α_s·ε̂ + σ_s·x̂₀ — the image goes with α_s, the noise with σ_s",
                _ddim_mistake(swap=True)),
        Mistake("alpha-t-for-alpha-s", "α_t where α_s belongs: the new point x_s = α_s·x̂₀ + σ_s·ε̂ sits at the "
                "earlier time s, so both use s", _ddim_mistake(alpha="t")),
        Mistake("same-sigma-both-places", "the same σ dividing ε̂ and multiplying it (σ_s in both places, or σ_t in "
                "both), so it cancels: x_s = α_s·x̂₀ + (x_t − α_t·x̂₀). ε̂ = (x_t − α_t·x̂₀)/σ_t belongs to the "
                "current time t, the update x_s = α_s·x̂₀ + σ_s·ε̂ to the earlier time s",
                [_ddim_mistake(sigma="t"), _ddim_mistake(eps_sigma="s")]),
        Mistake("t-s-exchanged", "t and s exchanged: ε̂ computed at s and the update made at t; ε̂ = (x_t − "
                "α_t·x̂₀)/σ_t comes from the current time t, x_s = α_s·x̂₀ + σ_s·ε̂ goes to the earlier time s",
                _ddim_mistake("s", "s", "t", "t")),
        Mistake("returns-x-t", "x_t itself, so the sampler never moves: ε̂ comes from the current time, ε̂ = (x_t − "
                "α_t·x̂₀)/σ_t, and the update x_s = α_s·x̂₀ + σ_s·ε̂ uses the earlier time s (one of the two used "
                "the other's time)", [lambda x_t, x0, t, s: x_t, _ddim_mistake("s", "s")]),
        Mistake("eps-missing", "ε̂ missing: x_s = α_s·x̂₀ + σ_s·x_t uses x_t where ε̂ = (x_t − α_t·x̂₀)/σ_t belongs",
                lambda x_t, x0, t, s: _schedule(s, x_t)[0] * x0 + _schedule(s, x_t)[1] * x_t),
        Mistake("ddpm-mean", "the DDPM posterior mean, (α_t|s·σ_s²·x_t + α_s·σ²_t|s·x̂₀)/σ_t²: that is the ancestral "
                "sampler's step without its noise; DDIM puts the two guesses back together at s, x_s = α_s·x̂₀ + "
                "σ_s·ε̂ with ε̂ = (x_t − α_t·x̂₀)/σ_t",
                lambda x_t, x0, t, s: diffusion.ddpm_step(x_t, x0, t, s, torch.zeros_like(x_t))),
    ]
    probes = [end_points({"t": {1.0: alpha_at_1()}, "s": {0.0: "the last jump lands on the image, and σ_s = 0 there, "
                          "so a division by σ_s (or a log of it) blows up — x_s = α_s·x̂₀ + σ_s·ε̂ needs neither, "
                          "and gives x̂₀"}}), per_image("t", "s")]
    ok = compare("ddim_update", learner, ddim_update, _ddim_cases(), mistakes, on_error=_broadcast_error,
                 probes=probes)
    return settle("ddim_update", learner, ddim_update, ok)


# ---------------------------------------------------------------- exercise 3: guidance, then thresholding
def guided_x0(cond_pred: Tensor, uncond_pred: Tensor, x_t: Tensor, t: Tensor, w: float) -> Tensor:
    """Classifier-free guidance on a v-prediction and Imagen's dynamic thresholding: ṽ = v_u + w·(v_c − v_u),
    x̂₀ = α_t·x_t − σ_t·ṽ, then dynamic thresholding at the 99.5th percentile. All images [B, C, H, W], t [B]."""
    pred = diffusion.guided_prediction(cond_pred, uncond_pred, w)
    x0, _ = diffusion.to_x0_eps(pred, x_t, t, "v")
    return diffusion.dynamic_threshold(x0, PERCENTILE)


def _guidance_cases() -> list[tuple]:
    # t = 1, where every sampler starts, and t = 0; the first image's t comes back in the third image.
    g = torch.Generator().manual_seed(2)
    b, side = 4, 6
    t = torch.tensor([0.55, 1.0, 0.55, 0.3])
    x_t = torch.randn(b, 1, side, side, generator=g)
    uncond = torch.randn(b, 1, side, side, generator=g) * 0.5
    cond = uncond + torch.randn(b, 1, side, side, generator=g) * 0.4
    quiet = (x_t * 0.2, uncond * 0.2, cond * 0.2)  # a small x̂₀ that the threshold leaves alone at w = 1
    return [(cond, uncond, x_t, t, 3.0), (cond, uncond, x_t, t, 8.0), (cond, uncond, x_t, t, 0.0),
            (quiet[2], quiet[1], quiet[0], torch.tensor([0.8, 0.0, 0.8, 0.95]), 1.0),
            (cond[:3], uncond[:3], x_t[:3], torch.tensor([0.3, 0.95, 0.0]), 5.0)]


def _x0_of(pred, x_t, t):
    return diffusion.to_x0_eps(pred, x_t, t, "v")[0]


def _after_threshold(c, u, x_t, t, w):
    tc = diffusion.dynamic_threshold(_x0_of(c, x_t, t), PERCENTILE)
    tu = diffusion.dynamic_threshold(_x0_of(u, x_t, t), PERCENTILE)
    return tu + w * (tc - tu)


def _threshold(x0: Tensor, magnitude: bool = True, per_image: bool = True, at_least_1: bool = True,
               clip: bool = True, divide: bool = True, interpolation: str = "linear") -> Tensor:
    """Dynamic thresholding with one of its parts changed: the percentile of |x̂₀| (or of x̂₀), per image (or over
    the batch), at least 1, clip to [−s, s], divide by s; `interpolation` is torch.quantile's percentile rule."""
    values = (x0.abs() if magnitude else x0).flatten(1).float()
    if per_image:
        s = torch.quantile(values, PERCENTILE, dim=1, interpolation=interpolation)
    else:
        s = torch.quantile(values.flatten(), PERCENTILE, interpolation=interpolation).expand(x0.size(0))
    s = _per_image(s.clamp(min=1.0) if at_least_1 else s, x0)
    out = x0.clamp(-s, s) if clip else x0
    return out / s if divide else out


def _guided(threshold: Callable[[Tensor], Tensor], pred: Callable = diffusion.guided_prediction) -> Callable:
    """A guided_x0 whose guidance is `pred(c, u, w)` and whose thresholding is `threshold(x̂₀)`."""
    return lambda c, u, x_t, t, w: threshold(_x0_of(pred(c, u, w), x_t, t))


def _as_eps(clamped: bool) -> Callable:
    """v̂ read as ε̂: x̂₀ = (x_t − σ·ṽ)/α, with α clamped at 1e-4 as the package's to_x0_eps does, or as a learner
    writes it (at t = 1 float32's α is −4.4e-8, which flips the sign of the thresholded x̂₀)."""
    def wrong(c, u, x_t, t, w):
        pred = diffusion.guided_prediction(c, u, w)
        if clamped:
            return diffusion.dynamic_threshold(diffusion.to_x0_eps(pred, x_t, t, "eps")[0], PERCENTILE)
        alpha, sigma = _schedule(t, x_t)
        return diffusion.dynamic_threshold((x_t - sigma * pred) / alpha, PERCENTILE)
    return wrong


def check_guided_x0(learner: Callable | None) -> Callable:
    """Check guided_x0(cond_pred, uncond_pred, x_t, t, w) -> the thresholded x̂₀, at w = 0, 1, 3, 5, 8, with
    t = 1 and t = 0 among the times."""
    mistakes = [
        Mistake("guidance-reversed", "the formula reversed, v_c + w·(v_u − v_c): w pushes away from the caption",
                _guided(_threshold, lambda c, u, w: c + w * (u - c))),
        Mistake("no-unconditional-base", "w·v_c without the unconditional base: guidance is v_u + w·(v_c − v_u)",
                _guided(_threshold, lambda c, u, w: w * c)),
        Mistake("guidance-plus-one", "v_c + w·(v_c − v_u): the base is the unconditional prediction (this is "
                "guidance w + 1)", _guided(_threshold, lambda c, u, w: c + w * (c - u))),
        Mistake("guided-after-threshold", "guidance applied to x̂₀ after thresholding: each x̂₀ thresholded first, "
                "then x̂₀_u + w·(x̂₀_c − x̂₀_u), which leaves [−1, 1] again — guide the prediction, then threshold "
                "once", _after_threshold),
        Mistake("no-threshold", "no thresholding: the guided x̂₀ must go through dynamic thresholding "
                "(diffusion.dynamic_threshold)", _guided(lambda x0: x0)),
        Mistake("static-clip", "static clipping to [−1, 1] instead of dynamic thresholding",
                _guided(diffusion.static_threshold)),
        Mistake("batch-threshold", "one threshold for the whole batch (the percentile of every pixel of every "
                "image): s is per image, torch.quantile(x0.abs().flatten(1), 0.995, dim=1), reshaped to [B, 1, 1, 1]",
                _guided(lambda x0: _threshold(x0, per_image=False))),
        Mistake("no-floor-at-1", "s without max(1, ·): an image already inside [−1, 1] gets stretched to fill it; s "
                "= max(1, the percentile) (.clamp(min=1)) leaves such images alone",
                _guided(lambda x0: _threshold(x0, at_least_1=False))),
        Mistake("clip-without-divide", "clipped to [−s, s] but not divided by s: the result leaves [−1, 1]; dynamic "
                "thresholding clips, then divides by s", _guided(lambda x0: _threshold(x0, divide=False))),
        Mistake("divide-without-clip", "divided by s but not clipped: the few pixels beyond the percentile stay "
                "outside [−1, 1]; clip to [−s, s] first (x0.clamp(-s, s)), then divide",
                _guided(lambda x0: _threshold(x0, clip=False))),
        Mistake("percentile-of-signed", "the percentile of x̂₀ itself, not of |x̂₀|: pixels far below −1 are missed; "
                "take x0.abs() first", _guided(lambda x0: _threshold(x0, magnitude=False))),
        Mistake("nearest-rank-percentile", "the percentile by nearest rank (kthvalue, or an index into the sorted "
                "values) instead of torch.quantile's interpolation between the two nearest values: s differs, and a "
                "sampler built on it no longer gives the package's images — use torch.quantile(x0.abs().flatten(1), "
                "0.995, dim=1), as diffusion.dynamic_threshold does",
                [_guided(lambda x0, how=how: _threshold(x0, interpolation=how))
                 for how in ("lower", "higher", "nearest")]),
        Mistake("v-read-as-eps", "the prediction read as ε (x̂₀ = (x_t − σ·ε̂)/α): this model predicts v, so x̂₀ = "
                "α_t·x_t − σ_t·v̂", [_as_eps(clamped=True), _as_eps(clamped=False)]),
        Mistake("v-and-x-t-swapped", "x̂₀ = α_t·v̂ − σ_t·x_t (v and x_t swapped): x̂₀ = α_t·x_t − σ_t·v̂",
                lambda c, u, x_t, t, w: diffusion.dynamic_threshold(
                    _x0_of(x_t, diffusion.guided_prediction(c, u, w), t), PERCENTILE)),
    ]

    def error(err: BaseException, args: tuple) -> Mistake | None:
        if "quantile" in str(err) and "range" in str(err):
            return Mistake("percent-not-fraction", "torch.quantile takes q in [0, 1]: the percentile here is 0.995, "
                           "not 99.5")
        return _broadcast_error(err, args, threshold=True)

    probes = [end_points({"t": {
        1.0: "x̂₀ = (x_t − σ·ε̃)/α (guidance written on ε̂, or a v → ε → x̂₀ round trip) divides by α, and every "
             "sampler starts at t = 1, where float32 gives α = cos(π/2) = −4.4e-8 — guide v̂ and convert once with "
             "x̂₀ = α_t·x_t − σ_t·ṽ, which never divides",
        0.0: "σ(0) = 0 there, so a division by σ (an x̂₀ → ε̂ round trip) blows up — x̂₀ = α_t·x_t − σ_t·ṽ needs "
             "none"}}), per_image("t")]
    ok = compare("guided_x0", learner, guided_x0, _guidance_cases(), mistakes, on_error=error, probes=probes)
    return settle("guided_x0", learner, guided_x0, ok)


EXERCISES = (Exercise("q_sample", "my_q_sample", check_q_sample),
             Exercise("ddim_update", "my_ddim_update", check_ddim_update),
             Exercise("guided_x0", "my_guided_x0", check_guided_x0))
