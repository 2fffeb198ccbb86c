"""Checks for chapter 08 (from here to Imagen): classifier-free guidance on logits (the reference is the
package's `imagen_tutorial.model.guided_logits`, which `generate` uses) and Imagen's dynamic thresholding (our
model has no diffusion sampler, so its short reference is written here)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..model import guided_logits
from .core import Exercise, Mistake, compare, settle

__all__ = ["check_guided_logits", "check_dynamic_threshold", "guided_logits", "dynamic_threshold"]


# ---------------------------------------------------------------- classifier-free guidance
def _guidance_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(3, 16, generator=g) * 2, torch.randn(3, 16, generator=g) * 2
    return [(cond, uncond, 3.0), (cond, uncond, 1.0), (cond, uncond, 0.0), (cond, uncond, 7.0)]


def check_guided_logits(learner: Callable | None) -> Callable:
    """Check guided_logits(cond_logits, uncond_logits, guidance) -> logits of the same shape."""
    mistakes = [
        Mistake("guidance-reversed", "the formula reversed, cond + g·(uncond − cond) (g pushes away from the "
                "condition)", lambda c, u, g: c + g * (u - c)),
        Mistake("probability-mix", "the mix of probabilities, softmax(u) + g·(softmax(c) − softmax(u)): guidance "
                "mixes logits, not probabilities (with g > 1 a probability mix can go negative)",
                lambda c, u, g: u.softmax(-1) + g * (c.softmax(-1) - u.softmax(-1))),
        Mistake("no-unconditional-base", "g·cond without the unconditional base (that is only a temperature of 1/g)",
                lambda c, u, g: g * c),
        Mistake("no-difference", "uncond + g·cond: the difference is missing; guidance moves along cond − uncond",
                lambda c, u, g: u + g * c),
        Mistake("guidance-plus-one", "cond + g·(cond − uncond): the base is the unconditional logits (this is "
                "guidance g + 1)", lambda c, u, g: c + g * (c - u)),
    ]
    ok = compare("guided_logits", learner, guided_logits, _guidance_cases(), mistakes, dtype=True)
    return settle("guided_logits", learner, guided_logits, ok)


# ---------------------------------------------------------------- dynamic thresholding
def dynamic_threshold(x0: Tensor, percentile: float) -> Tensor:
    """Imagen's dynamic thresholding of a predicted clean image x0 [B, ...] (floats, nominal range [-1, 1]):
    per sample s = the `percentile`-th percentile (0–100) of |x0|, s = max(s, 1), x0 <- clip(x0, -s, s) / s."""
    s = torch.quantile(x0.abs().flatten(1).float(), percentile / 100, dim=1)  # (B,)
    s = s.clamp(min=1.0).view(-1, *([1] * (x0.dim() - 1)))  # (B, 1, 1, ...)
    return torch.maximum(torch.minimum(x0, s), -s) / s


def _threshold_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([3.0, 0.5, 1.5, 8.0]).view(4, 1, 1, 1)  # two loud samples, one quiet, one mild
    x = torch.randn(4, 1, 6, 6, generator=g) * scales
    return [(x, 99.5), (x, 90.0), (x[:, 0] * 0.9, 75.0)]


def _batch_percentile(x0, p):
    s = torch.quantile(x0.abs().flatten().float(), p / 100).clamp(min=1.0)
    return x0.clamp(-s, s) / s


def _no_floor(x0, p):
    s = torch.quantile(x0.abs().flatten(1).float(), p / 100, dim=1).view(-1, *([1] * (x0.dim() - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


def _no_divide(x0, p):
    s = torch.quantile(x0.abs().flatten(1).float(), p / 100, dim=1).clamp(min=1.0)
    s = s.view(-1, *([1] * (x0.dim() - 1)))
    return torch.maximum(torch.minimum(x0, s), -s)


def _signed(x0, p):
    s = torch.quantile(x0.flatten(1).float(), p / 100, dim=1).clamp(min=1.0)
    s = s.view(-1, *([1] * (x0.dim() - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


def _threshold_error(error: BaseException, args: tuple) -> Mistake | None:
    if "quantile" in str(error) and "range" in str(error):
        return Mistake("percent-not-fraction", "torch.quantile takes q in [0, 1]: pass percentile / 100")
    return None


def check_dynamic_threshold(learner: Callable | None) -> Callable:
    """Check dynamic_threshold(x0, percentile) on batches whose samples have very different scales."""
    mistakes = [
        Mistake("static-clip", "static clipping to [−1, 1] (no threshold s at all)", lambda x0, p: x0.clamp(-1, 1)),
        Mistake("batch-percentile", "one percentile over the whole batch instead of one per sample (use flatten(1) "
                "and dim=1)", _batch_percentile),
        Mistake("no-floor-at-1", "s without the floor max(s, 1): a quiet sample (all |x0| < 1) gets stretched up to "
                "±1", _no_floor),
        Mistake("clip-without-divide", "clipping to [−s, s] without dividing by s (the result leaves [−1, 1])",
                _no_divide),
        Mistake("percentile-of-signed", "the percentile of x0 instead of |x0| (the negative side is ignored)",
                _signed),
    ]
    ok = compare("dynamic_threshold", learner, dynamic_threshold, _threshold_cases(), mistakes, dtype=True,
                 on_error=_threshold_error)
    return settle("dynamic_threshold", learner, dynamic_threshold, ok)


EXERCISES = (Exercise("guided_logits", "my_guided_logits", check_guided_logits),
             Exercise("dynamic_threshold", "my_dynamic_threshold", check_dynamic_threshold))
