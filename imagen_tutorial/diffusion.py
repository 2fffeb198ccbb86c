"""Diffusion in continuous time: the cosine schedule, the forward process, the loss and two samplers.

An image x₀ in [-1, 1] is blurred into noise by x_t = α(t)·x₀ + σ(t)·ε with α = cos(πt/2), σ = sin(πt/2), so
α² + σ² = 1, x₀ at t = 0 and pure noise at t = 1. A network learns to undo one step at a time; the samplers
(ancestral DDPM and deterministic DDIM) walk from t = 1 back to 0 with classifier-free guidance on the
prediction and Imagen's dynamic thresholding of x̂₀ (chapter 09).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .config import SAMPLING_SPECS

Denoise = Callable[[Tensor, Tensor], Tensor]  # (x_t [B, C, H, W], t [B]) -> the network's prediction


# ---------------------------------------------------------------- the schedule
def alpha_sigma(t: Tensor) -> tuple[Tensor, Tensor]:
    """The cosine schedule: α(t) = cos(πt/2), σ(t) = sin(πt/2) for t in [0, 1] (α² + σ² = 1)."""
    t = torch.as_tensor(t, dtype=torch.float32)
    return torch.cos(0.5 * math.pi * t), torch.sin(0.5 * math.pi * t)


def log_snr(t: Tensor) -> Tensor:
    """log(α²/σ²): +∞ at t = 0 (clean), −∞ at t = 1 (noise), 0 at t = 0.5. (In float32 cos(π/2) is −4.4e-8, not
    0: α is clamped at 0 so that t = 1, where every sampler starts, gives −∞ rather than NaN.)"""
    alpha, sigma = alpha_sigma(t)
    return 2 * (alpha.clamp(min=0).log() - sigma.log())


def _expand(v: Tensor, like: Tensor) -> Tensor:  # (B,) -> (B, 1, 1, 1)
    return v.to(like.device, like.dtype).view(-1, *([1] * (like.dim() - 1)))


def q_sample(x0: Tensor, t: Tensor, noise: Tensor, check: bool = True) -> Tensor:
    """The forward process: x_t = α(t)·x₀ + σ(t)·ε, for x₀ and ε [B, C, H, W] and t [B] in [0, 1].
    check=False skips checking the inputs (the loss and the samplers, whose t and ε are their own)."""
    if check:
        check_forward_inputs(x0, t, noise)
    alpha, sigma = alpha_sigma(t)
    return _expand(alpha, x0) * x0 + _expand(sigma, x0) * noise


def check_forward_inputs(x0: Tensor, t: Tensor, noise: Tensor, name: str = "t") -> None:
    """Refuse what q_sample cannot noise: x₀ and ε float tensors of one shape [B, ...], t a float tensor [B] of
    finite times in [0, 1] (t = 2 would give −x₀: α = cos(π) = −1)."""
    if not isinstance(x0, Tensor) or not x0.is_floating_point() or x0.dim() < 1:
        got = f"{x0.dtype} {list(x0.shape)}" if isinstance(x0, Tensor) else type(x0).__name__
        raise ValueError(f"x0 must be a float tensor [B, C, H, W] in [-1, 1]; got {got}")
    if not isinstance(noise, Tensor) or not noise.is_floating_point() or noise.shape != x0.shape:
        got = f"{noise.dtype} {list(noise.shape)}" if isinstance(noise, Tensor) else type(noise).__name__
        raise ValueError(f"noise must be a float tensor shaped like x0 {list(x0.shape)}, e.g. torch.randn_like(x0); "
                         f"got {got}")
    B = x0.size(0)
    if not isinstance(t, Tensor) or not t.is_floating_point() or t.shape != (B,):
        got = f"{t.dtype} {list(t.shape)}" if isinstance(t, Tensor) else f"{type(t).__name__} {t!r:.20}"
        raise ValueError(f"{name} must be a float tensor [B={B}], one time in [0, 1] per image, e.g. "
                         f"torch.full(({B},), 0.5); got {got}")
    if t.numel() and not (torch.isfinite(t).all() and t.min() >= 0 and t.max() <= 1):
        bad = t[~(torch.isfinite(t) & (t >= 0) & (t <= 1))]
        raise ValueError(f"{name} must hold times in [0, 1] (0 is the image, 1 pure noise); got {bad[0].item():g}")


def noise_augment(lowres: Tensor, level: Tensor | float, generator: torch.Generator | None = None) -> Tensor:
    """Noise conditioning augmentation (Imagen §2.4, "robust cascaded diffusion models"): corrupt a low-res image
    [B, C, h, w] in [-1, 1] by the same forward process at `level` (a float or [B]); level 0 returns the input."""
    if not isinstance(level, Tensor):  # a tensor of levels comes from the loss or generate, which checked them
        level = SAMPLING_SPECS["aug_level"].check("level", level)
    level = torch.as_tensor(level, dtype=torch.float32, device=lowres.device).expand(lowres.size(0))
    noise = torch.randn(lowres.shape, generator=generator, device=lowres.device)
    return q_sample(lowres, level, noise, check=False)


# ---------------------------------------------------------------- what the network predicts
def target(x0: Tensor, noise: Tensor, t: Tensor, prediction: str) -> Tensor:
    """The regression target: the noise ε, or v = α·ε − σ·x₀ (Salimans & Ho 2022)."""
    if prediction == "eps":
        return noise
    alpha, sigma = alpha_sigma(t)
    return _expand(alpha, x0) * noise - _expand(sigma, x0) * x0


def to_x0_eps(pred: Tensor, x_t: Tensor, t: Tensor, prediction: str) -> tuple[Tensor, Tensor]:
    """The network's prediction -> (x̂₀, ε̂). From v: x̂₀ = α·x_t − σ·v̂, ε̂ = σ·x_t + α·v̂ (exact for all t).
    From ε: x̂₀ = (x_t − σ·ε̂)/α, which blows up as α → 0 at t = 1 (one reason to predict v)."""
    alpha, sigma = (_expand(v, x_t) for v in alpha_sigma(t))
    if prediction == "v":
        return alpha * x_t - sigma * pred, sigma * x_t + alpha * pred
    return (x_t - sigma * pred) / alpha.clamp(min=1e-4), pred


def diffusion_loss(net: Callable[..., Tensor], x0: Tensor, prediction: str, **cond) -> Tensor:
    """Draw t ~ U(0, 1) and ε ~ N(0, I) per image, noise x₀, and regress the network's output on the target:
    the mean squared error (a scalar). `cond` goes to `net(x_t, t, **cond)` unchanged."""
    t = torch.rand(x0.size(0), device=x0.device)
    noise = torch.randn_like(x0)
    pred = net(q_sample(x0, t, noise, check=False), t, **cond)
    return (pred.float() - target(x0, noise, t, prediction)).pow(2).mean()


# ---------------------------------------------------------------- guidance and thresholding
def guided_prediction(cond_pred: Tensor, uncond_pred: Tensor, guidance: float) -> Tensor:
    """Classifier-free guidance on the prediction: ε̃ = ε_u + w·(ε_c − ε_u); w = 1 is plain conditional.
    (On v it is the same thing: for a fixed x_t, ε is an affine function of v.)"""
    return uncond_pred + guidance * (cond_pred - uncond_pred)


def dynamic_threshold(x0: Tensor, percentile: float = 0.995) -> Tensor:
    """Imagen's dynamic thresholding: per sample, s = max(1, the `percentile` quantile of |x̂₀|); clip x̂₀ to
    [−s, s] and divide by s. Samples already in [−1, 1] are left untouched."""
    s = torch.quantile(x0.abs().flatten(1).float(), percentile, dim=1).clamp(min=1.0)
    s = _expand(s, x0)
    return x0.clamp(-s, s) / s


def static_threshold(x0: Tensor) -> Tensor:
    """Static clipping of x̂₀ to [−1, 1] (saturates at high guidance; compare with dynamic_threshold)."""
    return x0.clamp(-1.0, 1.0)


def apply_threshold(x0: Tensor, threshold: float | str | None) -> Tensor:
    """threshold: a percentile in (0, 1) for dynamic thresholding, "static" for clipping, None for nothing."""
    if threshold is None:
        return x0
    if threshold == "static":
        return static_threshold(x0)
    return dynamic_threshold(x0, float(threshold))


# ---------------------------------------------------------------- samplers
def ddim_step(x0: Tensor, eps: Tensor, s: Tensor) -> Tensor:
    """DDIM (η = 0): x_s = α_s·x̂₀ + σ_s·ε̂, the deterministic jump to the earlier time s."""
    alpha_s, sigma_s = (_expand(v, x0) for v in alpha_sigma(s))
    return alpha_s * x0 + sigma_s * eps


def ddpm_step(x_t: Tensor, x0: Tensor, t: Tensor, s: Tensor, noise: Tensor) -> Tensor:
    """Ancestral step: a draw from the true posterior q(x_s | x_t, x₀ = x̂₀) for s < t, with
    α_{t|s} = α_t/α_s, σ²_{t|s} = σ_t² − α²_{t|s}·σ_s², mean = (α_{t|s}σ_s²·x_t + α_s σ²_{t|s}·x̂₀)/σ_t² and
    variance σ²_{t|s}·σ_s²/σ_t²."""
    (alpha_t, sigma_t), (alpha_s, sigma_s) = alpha_sigma(t), alpha_sigma(s)
    alpha_ts = alpha_t / alpha_s
    var_ts = sigma_t**2 - alpha_ts**2 * sigma_s**2
    mean = (_expand(alpha_ts * sigma_s**2, x_t) * x_t + _expand(alpha_s * var_ts, x_t) * x0) / _expand(sigma_t**2, x_t)
    std = (var_ts * sigma_s**2 / sigma_t**2).clamp(min=0).sqrt()
    return mean + _expand(std, x_t) * noise


# What the samplers do to x̂₀ unless told otherwise: clip it to [-1, 1]. Imagen's dynamic thresholding (a
# percentile, 0.995) is there to pass instead; on Fashion-MNIST, whose images are mostly pure black, it rescales
# the background to grey, and it measured worse (README "Results": cascade judge 0.882 vs 0.916 at w = 1.5,
# 0.816 vs 0.940 at w = 3; chapter 09, section 5, shows why).
DEFAULT_THRESHOLD = "static"


def time_grid(steps: int) -> Tensor:
    """steps + 1 times from 1 (noise) down to 0 (the image), evenly spaced."""
    return torch.linspace(1.0, 0.0, steps + 1)


@torch.no_grad()
def sample_loop(denoise: Denoise, shape: tuple[int, ...], prediction: str, steps: int = 50, sampler: str = "ddim",
                threshold: float | str | None = DEFAULT_THRESHOLD, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu", trajectory: list | None = None) -> Tensor:
    """Start from x₁ ~ N(0, I) of `shape` and take `steps` sampler steps to t = 0; returns x̂₀ in [−1, 1].
    `denoise(x_t, t)` returns the (already guided) prediction. Each step turns it into x̂₀, thresholds x̂₀,
    recomputes ε̂ = (x_t − α_t·x̂₀)/σ_t from the thresholded x̂₀, and moves to the next time.
    trajectory: a list that receives (x_t, x̂₀) at every step (for the denoising GIF)."""
    x = torch.randn(shape, generator=generator, device=device)
    times = time_grid(steps).to(device)
    for t_now, t_next in zip(times[:-1], times[1:], strict=True):
        t, s = t_now.expand(shape[0]), t_next.expand(shape[0])
        x0, eps = to_x0_eps(denoise(x, t), x, t, prediction)
        x0 = apply_threshold(x0, threshold)
        alpha_t, sigma_t = (_expand(v, x) for v in alpha_sigma(t))
        eps = (x - alpha_t * x0) / sigma_t  # σ_t > 0 for every t > 0 on the grid
        if trajectory is not None:
            trajectory.append((x.cpu(), x0.cpu()))
        if float(t_next) == 0.0:
            x = x0  # the last step lands on the prediction itself
        elif sampler == "ddim":
            x = ddim_step(x0, eps, s)
        else:
            x = ddpm_step(x, x0, t, s, torch.randn(shape, generator=generator, device=device))
    return x.clamp(-1.0, 1.0)
