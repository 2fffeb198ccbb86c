"""Checks for chapter 05 (the training loop): the warm-up + cosine learning-rate factor and gradient clipping."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..config import TrainConfig
from ..train import lr_factor
from .core import Exercise, Mistake, compare, reference_given, settle

__all__ = ["check_lr_factor", "check_clip_grad_norm", "lr_factor_reference", "clip_grad_norm_reference"]


# ---------------------------------------------------------------- exercise 1: the learning-rate schedule
def lr_factor_reference(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """`imagen_tutorial.train.lr_factor` with its TrainConfig spelled out as arguments."""
    cfg = TrainConfig(steps=total_steps, warmup_steps=warmup_steps, min_lr_ratio=min_ratio)
    return lr_factor(step, cfg)


def _cosine(progress: float, min_ratio: float) -> float:
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _no_warmup(step, warmup_steps, total_steps, min_ratio):
    return _cosine(step / total_steps, min_ratio)


def _no_warmup_flat(step, warmup_steps, total_steps, min_ratio):
    return _cosine(max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)), min_ratio)


def _warmup_off_by_one(step, warmup_steps, total_steps, min_ratio):
    if step < warmup_steps:
        return step / warmup_steps
    return lr_factor_reference(step, warmup_steps, total_steps, min_ratio)


def _decays_to_zero(step, warmup_steps, total_steps, min_ratio):
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return _cosine((step - warmup_steps) / max(1, total_steps - warmup_steps), 0.0)


def _cosine_over_total(step, warmup_steps, total_steps, min_ratio):
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return _cosine(step / total_steps, min_ratio)


def _cosine_over_total_shifted(step, warmup_steps, total_steps, min_ratio):
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return _cosine((step - warmup_steps) / total_steps, min_ratio)


def _unclamped(step, warmup_steps, total_steps, min_ratio):
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _over_steps(fn: Callable) -> Callable:
    """factor(step, ...) -> a function of (list of steps, ...) returning a float tensor of factors."""
    return lambda steps, *args: torch.tensor([float(fn(s, *args)) for s in steps], dtype=torch.float64)


def check_lr_factor(learner: Callable | None) -> Callable:
    """Check lr_factor(step, warmup_steps, total_steps, min_ratio) -> float over whole schedules."""
    if reference_given("lr_factor", learner, lr_factor_reference):
        return settle("lr_factor", learner, lr_factor_reference, False)
    steps = [0, 1, 4, 8, 9, 10, 11, 30, 60, 100, 109, 110, 130]
    cases = [(steps, 10, 110, 0.1), ([0, 1, 2, 3, 5, 10, 19, 20], 4, 20, 0.25), ([0, 7, 25, 49, 50], 0, 50, 0.2)]
    mistakes = [
        Mistake("no-warmup-flat", "no warm-up: the factor starts at 1 instead of climbing from 1/warmup_steps",
                _no_warmup_flat),
        Mistake("no-warmup", "no warm-up: the cosine starts at step 0", _no_warmup),
        Mistake("warmup-off-by-one", "the warm-up is off by one: step / warmup_steps starts at 0 (use (step + 1) / "
                "warmup_steps)", _warmup_off_by_one),
        Mistake("decays-to-zero", "the cosine decays to 0 instead of to min_ratio", _decays_to_zero),
        Mistake("cosine-over-total", "the cosine runs over total_steps instead of over the steps after the warm-up",
                _cosine_over_total),
        Mistake("cosine-over-total-shifted", "the cosine divides by total_steps instead of total_steps - warmup_steps",
                _cosine_over_total_shifted),
        Mistake("progress-not-clamped", "the progress is not clamped at 1: after total_steps the cosine climbs back "
                "up (use min(1, progress))", _unclamped),
    ]
    mistakes = [m._replace(forms=_over_steps(m.forms)) for m in mistakes]
    wrapped = None if learner is None else _over_steps(learner)
    ok = compare("lr_factor", wrapped, _over_steps(lr_factor_reference), cases, mistakes, atol=1e-6)
    return settle("lr_factor", learner, lr_factor_reference, ok)


# ---------------------------------------------------------------- exercise 2: gradient clipping
def clip_grad_norm_reference(grads: list[Tensor], max_norm: float) -> list[Tensor]:
    """Clip a list of gradients by their global norm, with torch's `nn.utils.clip_grad_norm_` (the Trainer's)."""
    params = [nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.detach().clone()
    nn.utils.clip_grad_norm_(params, max_norm)
    return [p.grad for p in params]


def _per_tensor(grads, max_norm):
    return [g * min(1.0, max_norm / (g.norm().item() + 1e-6)) for g in grads]


def _clamp_values(grads, max_norm):
    return [g.clamp(-max_norm, max_norm) for g in grads]


def _always_normalise(grads, max_norm):
    total = torch.cat([g.flatten() for g in grads]).norm()
    return [g * max_norm / (total + 1e-6) for g in grads]


def _sum_of_norms(grads, max_norm):
    total = sum(g.norm() for g in grads)
    return [g * min(1.0, max_norm / (float(total) + 1e-6)) for g in grads]


def _flat(fn: Callable) -> Callable:
    """clip(grads, max_norm) -> one flat tensor of every clipped gradient (on copies: the cases stay intact;
    clipping in place, as torch's clip_grad_norm_ does, is fine as long as the gradients are returned)."""

    def run(grads, max_norm):
        clipped = fn([g.clone() for g in grads], max_norm)
        return None if clipped is None else torch.cat([g.flatten() for g in clipped])

    return run


def _clip_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(0)
    big = [torch.randn(4, 3, generator=g) * 3, torch.randn(5, generator=g) * 2, torch.randn(2, 2, generator=g)]
    small = [torch.randn(3, 3, generator=g) * 0.05, torch.randn(4, generator=g) * 0.05]
    mixed = [torch.randn(6, generator=g) * 4, torch.randn(3, 2, generator=g) * 0.1]
    return [(big, 1.0), (small, 1.0), (mixed, 5.0)]


def check_clip_grad_norm(learner: Callable | None) -> Callable:
    """Check clip_grad_norm(grads, max_norm) -> list of gradients scaled by min(1, max_norm / global norm)."""
    if reference_given("clip_grad_norm", learner, clip_grad_norm_reference):
        return settle("clip_grad_norm", learner, clip_grad_norm_reference, False)
    mistakes = [
        Mistake("per-tensor-clip", "each tensor is clipped by its own norm instead of by the global norm of all of "
                "them", _per_tensor),
        Mistake("value-clamp", "the values are clamped to [-max_norm, max_norm] instead of scaling the whole gradient",
                _clamp_values),
        Mistake("always-rescaled", "the gradient is always rescaled to max_norm, even when its norm is already below",
                _always_normalise),
        Mistake("sum-of-norms", "the global norm taken as the sum of the tensors' norms; it is the square root of "
                "the sum of their squared norms (the norm of all gradients as one vector)", _sum_of_norms),
    ]
    mistakes = [m._replace(forms=_flat(m.forms)) for m in mistakes]
    wrapped = None if learner is None else _flat(learner)
    ok = compare("clip_grad_norm", wrapped, _flat(clip_grad_norm_reference), _clip_cases(), mistakes, atol=1e-5)
    return settle("clip_grad_norm", learner, clip_grad_norm_reference, ok)


EXERCISES = (Exercise("lr_factor", "my_lr_factor", check_lr_factor),
             Exercise("clip_grad_norm", "my_clip_grad_norm", check_clip_grad_norm))
