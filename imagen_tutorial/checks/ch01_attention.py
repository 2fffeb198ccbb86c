"""Checks for chapter 01 (self-attention): the attention formula, the causal mask and splitting into heads."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..attention import attention, causal_mask
from .core import REFERENCE, compare

__all__ = ["check_attention", "check_causal_mask", "check_split_heads"]


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


# ---------------------------------------------------------------- heads
def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """(B, T, C) -> (B, H, T, C/H): head h gets channels h*C/H .. (h+1)*C/H - 1 of every position
    (what `MultiHeadAttention` does to its queries, keys and values)."""
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, H, T, C/H) -> (B, T, C), the inverse of `split_heads`."""
    B, H, T, d = x.shape
    return x.transpose(1, 2).reshape(B, T, H * d)


def _split_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(0)  # T != H and odd sizes, so that no wrong answer matches by luck
    return [(torch.randn(2, 5, 12, generator=g), 4), (torch.randn(3, 6, 12, generator=g), 2),
            (torch.randn(1, 7, 24, generator=g), 3)]


_NOT_SWAPPED = ("heads and time are not swapped: the result is (B, T, H, C/H) instead of (B, H, T, C/H) "
                "(transpose axes 1 and 2 after the view)")


def check_split_heads(learner: Callable | None) -> Callable:
    """Check split_heads(x, n_heads): (B, T, C) -> (B, H, T, C/H)."""
    x, h = _split_cases()[0]
    try:  # a (B, T, H, C/H) answer has the wrong shape, which `compare` would report without naming the mistake
        got = learner(x, h) if learner is not None else None
    except Exception:  # `compare` below reports it
        got = None
    if isinstance(got, Tensor) and torch.equal(got, x.view(2, 5, h, 3)):
        print(f"❌ split_heads: the output looks like {_NOT_SWAPPED} — {REFERENCE}")
        return split_heads
    mistakes = {
        "x.view(B, H, T, C // H) without a transpose (each head gets a mix of positions, not its channels)":
            lambda x, h: x.reshape(x.size(0), h, x.size(1), -1),
        "the channels are split in the wrong order, view(B, T, C // H, H): head h gets every H-th channel "
        "instead of a contiguous block":
            lambda x, h: x.reshape(x.size(0), x.size(1), -1, h).permute(0, 3, 1, 2),
    }
    ok = compare("split_heads", learner, split_heads, _split_cases(), mistakes, atol=0)
    return learner if ok else split_heads
