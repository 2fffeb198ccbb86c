"""Chapter 05 checks accept a right answer, name each known mistake, and fall back to the reference."""

import math

import pytest
import torch

from imagen_tutorial.checks import check_clip_grad_norm, check_lr_factor
from imagen_tutorial.checks.ch05_training import clip_grad_norm_reference, lr_factor_reference


def my_lr_factor(step, warmup_steps, total_steps, min_ratio):
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def cosine(progress, floor):
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def test_lr_factor_correct_answer_is_kept(capsys):
    assert check_lr_factor(my_lr_factor) is my_lr_factor
    assert "✅ lr_factor: matches the reference on 3 cases" in capsys.readouterr().out


LR_MISTAKES = {
    "the factor starts at 1": lambda s, w, t, m: cosine(max(0.0, (s - w) / max(1, t - w)), m),
    "the cosine starts at step 0": lambda s, w, t, m: cosine(s / t, m),
    "the warm-up is off by one": lambda s, w, t, m: s / w if s < w else my_lr_factor(s, w, t, m),
    "decays to 0 instead of to min_ratio": lambda s, w, t, m: (s + 1) / w if s < w else cosine((s - w) / (t - w), 0),
    "runs over total_steps instead of over the steps after the warm-up":
        lambda s, w, t, m: (s + 1) / w if s < w else cosine(s / t, m),
    "divides by total_steps instead of": lambda s, w, t, m: (s + 1) / w if s < w else cosine((s - w) / t, m),
    "the progress is not clamped at 1": lambda s, w, t, m: (s + 1) / w if s < w else
        m + (1 - m) * 0.5 * (1 + math.cos(math.pi * (s - w) / max(1, t - w))),
}


@pytest.mark.parametrize("message", list(LR_MISTAKES))
def test_lr_factor_mistakes_are_named(capsys, message):
    assert check_lr_factor(LR_MISTAKES[message]) is lr_factor_reference
    out = capsys.readouterr().out
    assert message in out and "continuing with the reference implementation" in out


def test_lr_factor_blank_and_reference(capsys):
    def blank(step, warmup_steps, total_steps, min_ratio):
        raise NotImplementedError("Exercise 1: write lr_factor")

    assert check_lr_factor(blank) is lr_factor_reference
    assert "➖ lr_factor: not attempted" in capsys.readouterr().out
    assert check_lr_factor(lr_factor_reference) is lr_factor_reference
    assert "this is the reference implementation" in capsys.readouterr().out


def my_clip_grad_norm(grads, max_norm):
    total = torch.cat([g.flatten() for g in grads]).norm()
    scale = min(1.0, max_norm / (total.item() + 1e-6))
    return [g * scale for g in grads]


def test_clip_correct_answer_is_kept_and_in_place_is_fine(capsys):
    assert check_clip_grad_norm(my_clip_grad_norm) is my_clip_grad_norm

    def in_place(grads, max_norm):
        total = torch.stack([g.norm() for g in grads]).norm()
        for g in grads:
            g.mul_(torch.clamp(max_norm / total, max=1.0))
        return grads

    assert check_clip_grad_norm(in_place) is in_place
    assert capsys.readouterr().out.count("✅ clip_grad_norm: matches the reference on 3 cases") == 2


CLIP_MISTAKES = {
    "each tensor is clipped by its own norm": lambda gs, m: [g * min(1.0, m / g.norm().item()) for g in gs],
    "the values are clamped": lambda gs, m: [g.clamp(-m, m) for g in gs],
    "always rescaled to max_norm": lambda gs, m: [g * m / torch.cat([h.flatten() for h in gs]).norm() for g in gs],
    "the global norm taken as the sum of the tensors' norms":
        lambda gs, m: [g * min(1.0, m / sum(h.norm().item() for h in gs)) for g in gs],
}


@pytest.mark.parametrize("message", list(CLIP_MISTAKES))
def test_clip_mistakes_are_named(capsys, message):
    assert check_clip_grad_norm(CLIP_MISTAKES[message]) is clip_grad_norm_reference
    out = capsys.readouterr().out
    assert message in out and "continuing with the reference implementation" in out


def test_clip_blank_and_reference(capsys):
    def blank(grads, max_norm):
        raise NotImplementedError("Exercise 2: write clip_grad_norm")

    assert check_clip_grad_norm(blank) is clip_grad_norm_reference
    assert "➖ clip_grad_norm: not attempted" in capsys.readouterr().out
    assert check_clip_grad_norm(clip_grad_norm_reference) is clip_grad_norm_reference
    assert "this is the reference implementation" in capsys.readouterr().out


def test_lr_factor_written_with_a_lambda_schedule_passes(capsys):
    def scheduled(step, warmup_steps, total_steps, min_ratio):
        warm = (step + 1) / warmup_steps if warmup_steps else 1.0
        done = min(max(step - warmup_steps, 0), total_steps - warmup_steps) / (total_steps - warmup_steps)
        decay = min_ratio + (1 - min_ratio) * (math.cos(math.pi * done) + 1) / 2
        return min(warm, 1.0) * decay if step < warmup_steps else decay

    assert check_lr_factor(scheduled) is scheduled
    assert "✅ lr_factor" in capsys.readouterr().out


def test_clip_with_torchs_own_function_passes(capsys):
    def with_torch(grads, max_norm):
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return [p.grad for p in params]

    assert check_clip_grad_norm(with_torch) is with_torch
    assert "✅ clip_grad_norm" in capsys.readouterr().out


def test_clip_in_place_without_a_return_is_told_to_return(capsys):
    def no_return(grads, max_norm):
        my_clip_grad_norm(grads, max_norm)

    assert check_clip_grad_norm(no_return) is clip_grad_norm_reference
    assert "returned None (is a `return` missing?)" in capsys.readouterr().out
