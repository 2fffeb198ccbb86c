"""Checks for chapter 01 (self-attention): the attention formula, the causal mask and splitting into heads."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..attention import attention, causal_mask
from .core import Exercise, Mistake, compare, settle

__all__ = ["check_attention", "check_causal_mask", "check_split_heads"]


def _attention_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) * 3 for _ in range(3))
    # cross-attention sizes too: T = 4 queries, S = 6 keys, d = 8, so no size stands in for another
    cq, ck, cv = (torch.randn(2, 2, n, 8, generator=g) * 3 for n in (4, 6, 6))
    keep = torch.tensor([[True] * 6, [True, True, True, False, False, False]])[:, None, None, :]  # (B, 1, 1, S)
    return [(q, k, v, None), (q, k, v, causal_mask(5)), (cq, ck, cv, keep)]


def _scores(q, k, scale):
    return q @ k.transpose(-2, -1) / scale


def _masked(scores, mask, fill=float("-inf")):
    return scores if mask is None else scores.masked_fill(~mask, fill)


def _no_scale(q, k, v, mask=None):
    return attention(q * math.sqrt(q.size(-1)), k, v, mask)


def _scale_by(size: Callable) -> Callable:
    def wrong(q, k, v, mask=None):
        weights = _masked(_scores(q, k, math.sqrt(size(q, k))), mask).softmax(-1)
        return weights @ v, weights
    return wrong


def _mask_after_softmax(q, k, v, mask=None):
    weights = _scores(q, k, math.sqrt(q.size(-1))).softmax(-1)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)
    return weights @ v, weights


def _softmax_wrong_axis(q, k, v, mask=None):
    weights = _masked(_scores(q, k, math.sqrt(q.size(-1))), mask).softmax(-2).nan_to_num()
    return weights @ v, weights


def _scores_as_weights(q, k, v, mask=None):
    scores = _masked(_scores(q, k, math.sqrt(q.size(-1))), mask)
    return scores.softmax(-1) @ v, scores


def _swapped(q, k, v, mask=None):
    output, weights = attention(q, k, v, mask)
    return weights, output


def _inverted_mask(q, k, v, mask=None):
    scores = _scores(q, k, math.sqrt(q.size(-1)))
    weights = (scores if mask is None else scores.masked_fill(mask, float("-inf"))).softmax(-1)
    return weights @ v, weights


def _mask_multiplies(q, k, v, mask=None):
    scores = _scores(q, k, math.sqrt(q.size(-1)))
    weights = (scores if mask is None else scores * mask).softmax(-1)
    return weights @ v, weights


def _scale_after_softmax(q, k, v, mask=None):
    weights = _masked(_scores(q, k, 1.0), mask).softmax(-1) / math.sqrt(q.size(-1))
    return weights @ v, weights


def _attention_symptom(got: tuple, expected: tuple, args: tuple) -> Mistake | None:
    """Name what is wrong with the weights when no known mistake reproduces the output."""
    if len(got) != 2 or not all(isinstance(t, Tensor) for t in got) or got[1].shape != expected[1].shape:
        return None
    sums = got[1].double().sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        return Mistake("weights-rows-not-summing-to-1", "the weights' rows do not sum to 1: the softmax must be the "
                       "last step on the scores, over the keys (dim=-1), after scaling and masking")
    return None


def check_attention(learner: Callable | None) -> Callable:
    """Check attention(query, key, value, mask) -> (output, weights): without a mask, with a causal mask, and as
    cross-attention (T != S) with a padding mask. Both returned tensors are compared."""
    mistakes = [
        Mistake("no-sqrt-d-scale", "the √d scale is missing (scores are not divided by sqrt(d))", _no_scale),
        Mistake("scale-by-d", "scores divided by d instead of by sqrt(d)", _scale_by(lambda q, k: q.size(-1) ** 2)),
        Mistake("scale-by-queries", "scores divided by the square root of the number of queries (query.size(-2)); d "
                "is the feature size, query.size(-1)", _scale_by(lambda q, k: q.size(-2))),
        Mistake("scale-by-keys", "scores divided by the square root of the number of keys (key.size(-2)); d is the "
                "feature size, query.size(-1)", _scale_by(lambda q, k: k.size(-2))),
        Mistake("mask-after-softmax", "the mask is applied after the softmax (rows no longer sum to 1)",
                _mask_after_softmax),
        Mistake("softmax-over-queries", "the softmax runs over the queries (dim=-2) instead of the keys (dim=-1)",
                _softmax_wrong_axis),
        Mistake("scores-as-weights", "the scores returned as the weights: return the softmax's output (the weights "
                "that multiply the values), not the masked scores, which hold -inf", _scores_as_weights),
        Mistake("outputs-swapped", "(weights, output) in the wrong order: return (output, weights)", _swapped),
        Mistake("mask-inverted", "the mask is inverted: masked_fill(mask, -inf) blocks the keys a query may see; "
                "with True = may attend, fill where the mask is False, masked_fill(~mask, float('-inf'))",
                _inverted_mask),
        Mistake("mask-multiplies", "the mask multiplies the scores: a score of 0 still gets weight e^0 > 0; set "
                "forbidden scores to -inf with masked_fill(~mask, float('-inf'))", _mask_multiplies),
        Mistake("scale-after-softmax", "the √d scale applied after the softmax (the weights no longer sum to 1); "
                "divide the scores", _scale_after_softmax),
    ]
    ok = compare("attention", learner, attention, _attention_cases(), mistakes, outputs=("output", "weights"),
                 dtype=True, diagnose=_attention_symptom)
    return settle("attention", learner, attention, ok)


def _mask_symptom(got: tuple, expected: tuple, args: tuple) -> Mistake | None:
    mask = got[0]
    if isinstance(mask, Tensor) and mask.shape == expected[0].shape and mask.dtype != torch.bool:
        if torch.equal(mask.double(), expected[0].double()):
            return Mistake("float-mask", f"the right pattern, but as {mask.dtype} 0/1 values; a mask must be bool "
                           "(True = may attend): `~mask` and masked_fill need bool, so build it with "
                           "dtype=torch.bool (or add .bool())")
        return Mistake("mask-not-bool", f"returned {mask.dtype}; a mask is bool, True where query i may attend to "
                       "key j <= i")
    return None


def check_causal_mask(learner: Callable | None) -> Callable:
    """Check causal_mask(T) -> bool [T, T], True where query i may look at key j <= i. The first case is T = 4,
    where every named mistake differs from the others (at T = 1 several coincide)."""
    mistakes = [
        Mistake("mask-transposed", "the mask is transposed (queries see the future, not the past)",
                lambda t: causal_mask(t).T),
        Mistake("diagonal-excluded", "the diagonal is excluded (a position must see itself)",
                lambda t: causal_mask(t).tril(-1)),
        Mistake("mask-inverted", "the mask is inverted: True marks the blocked keys (torch.nn.MultiheadAttention's "
                "convention); here True means may attend, so keep the lower triangle, torch.tril",
                lambda t: ~causal_mask(t)),
        Mistake("all-true", "all True: nothing is masked, so every position sees the future",
                lambda t: torch.ones(t, t, dtype=torch.bool)),
    ]
    ok = compare("causal_mask", learner, causal_mask, [(4,), (7,), (1,)], mistakes, atol=0, dtype=True,
                 diagnose=_mask_symptom)
    return settle("causal_mask", learner, causal_mask, ok)


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


def check_split_heads(learner: Callable | None) -> Callable:
    """Check split_heads(x, n_heads): (B, T, C) -> (B, H, T, C/H)."""
    def view(x, h, *shape):
        return x.reshape(x.size(0), *shape)

    mistakes = [
        Mistake("heads-time-not-swapped", "heads and time are not swapped: the result is (B, T, H, C/H) instead of "
                "(B, H, T, C/H) (transpose axes 1 and 2 after the view)",
                lambda x, h: view(x, h, x.size(1), h, x.size(2) // h)),
        Mistake("view-without-transpose", "x.view(B, H, T, C // H) without a transpose (each head gets a mix of "
                "positions, not its channels)", lambda x, h: view(x, h, h, x.size(1), x.size(2) // h)),
        Mistake("channels-interleaved", "the channels are split in the wrong order, view(B, T, C // H, H): head h "
                "gets every H-th channel instead of a contiguous block",
                lambda x, h: view(x, h, x.size(1), x.size(2) // h, h).permute(0, 3, 1, 2)),
        Mistake("time-channels-swapped", "time and channels swapped: the result is (B, H, C/H, T); after the view, "
                "transpose axes 1 and 2 only",
                lambda x, h: view(x, h, x.size(1), h, x.size(2) // h).permute(0, 2, 3, 1)),
    ]
    ok = compare("split_heads", learner, split_heads, _split_cases(), mistakes, atol=0, dtype=True)
    return settle("split_heads", learner, split_heads, ok)


EXERCISES = (Exercise("attention", "my_attention", check_attention),
             Exercise("causal_mask", "my_causal_mask", check_causal_mask),
             Exercise("split_heads", "my_split_heads", check_split_heads))
