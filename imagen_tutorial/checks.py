"""Exercise checks for the notebooks: run a learner's function beside the reference and say what differs.

Every `check_*` returns the function the notebook should go on with: the learner's if it is right, otherwise the
reference, so a notebook still runs top to bottom with an exercise left blank or wrong. Where a wrong answer
matches a known mistake (a missing √d scale, a mask applied after the softmax, …) the message names it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .attention import attention, causal_mask

REFERENCE = "continuing with the reference implementation"


def compare(name: str, learner: Callable | None, reference: Callable, cases: list[tuple],
            mistakes: dict[str, Callable] | None = None, atol: float = 1e-5) -> bool:
    """Run learner(*args) and reference(*args) on each case (tuples of arguments), print a verdict, and
    return True if the learner matches. Outputs may be tensors or tuples whose first element is compared."""

    def first(x):
        return x[0] if isinstance(x, tuple) else x

    def verdict(ok: bool, message: str) -> bool:
        print(f"{'✅' if ok else '❌'} {name}: {message}" + ("" if ok else f" — {REFERENCE}"))
        return ok

    if learner is None:
        return verdict(False, "not attempted")
    for args in cases:
        expected = first(reference(*args))
        try:
            got = first(learner(*args))
        except NotImplementedError:
            return verdict(False, "not attempted")
        except Exception as error:  # a learner's bug: report it, keep the notebook going
            return verdict(False, f"raised {type(error).__name__}: {error}")
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            return verdict(False, f"returned {shape}, expected shape {tuple(expected.shape)}")
        got, expected = got.float(), expected.float()
        if not torch.allclose(got, expected, atol=atol, rtol=1e-4):
            for mistake, wrong in (mistakes or {}).items():
                if torch.allclose(got, first(wrong(*args)).float(), atol=atol, rtol=1e-4):
                    return verdict(False, f"the output looks like {mistake}")
            worst = (got - expected).abs().max().item()
            return verdict(False, f"values differ from the reference (max difference {worst:.3g})")
    return verdict(True, f"matches the reference on {len(cases)} cases")


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
