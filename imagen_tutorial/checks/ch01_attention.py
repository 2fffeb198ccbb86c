"""Checks for chapter 01 (self-attention): the attention formula and the causal mask."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..attention import attention, causal_mask
from .core import compare

__all__ = ["check_attention", "check_causal_mask"]


def _attention_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) * 3 for _ in range(3))
    return [(q, k, v, None), (q, k, v, causal_mask(5))]


def _no_scale(q, k, v, mask=None):
    return attention(q * math.sqrt(q.size(-1)), k, v, mask)


def _mask_after_softmax(q, k, v, mask=None):
    weights = (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).softmax(-1)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)
    return weights @ v, weights


def _softmax_wrong_axis(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(-2).nan_to_num()
    return weights @ v, weights


def check_attention(learner: Callable | None) -> Callable:
    """Check attention(query, key, value, mask) -> (output, weights) with and without a causal mask."""
    mistakes = {
        "the √d scale is missing (scores are not divided by sqrt(d))": _no_scale,
        "the mask is applied after the softmax (rows no longer sum to 1)": _mask_after_softmax,
        "the softmax runs over the queries (dim=-2) instead of the keys (dim=-1)": _softmax_wrong_axis,
    }
    ok = compare("attention", learner, attention, _attention_cases(), mistakes)
    return learner if ok else attention


def check_causal_mask(learner: Callable | None) -> Callable:
    """Check causal_mask(T) -> bool [T, T], True where query i may look at key j <= i."""
    mistakes = {
        "the mask is transposed (queries see the future, not the past)": lambda t: causal_mask(t).T,
        "the diagonal is excluded (a position must see itself)": lambda t: causal_mask(t).tril(-1),
    }
    ok = compare("causal_mask", learner, causal_mask, [(1,), (4,), (7,)], mistakes, atol=0)
    return learner if ok else causal_mask
