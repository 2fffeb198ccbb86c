"""Exercise checks accept a right answer, name a known mistake, and fall back to the reference."""

import math

from imagen_tutorial import attention
from imagen_tutorial.attention import causal_mask
from imagen_tutorial.checks import check_attention, check_causal_mask


def my_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(k.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(-1)
    return weights @ v, weights


def test_a_correct_answer_is_kept(capsys):
    assert check_attention(my_attention) is my_attention
    assert "✅ attention: matches the reference on 2 cases" in capsys.readouterr().out


def test_missing_scale_is_named_and_the_reference_is_used(capsys):
    def unscaled(q, k, v, mask=None):
        return my_attention(q * math.sqrt(q.size(-1)), k, v, mask)

    assert check_attention(unscaled) is attention
    out = capsys.readouterr().out
    assert "the √d scale is missing" in out and "continuing with the reference implementation" in out


def test_mask_after_softmax_is_named(capsys):
    def late_mask(q, k, v, mask=None):
        weights = (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).softmax(-1)
        weights = weights if mask is None else weights.masked_fill(~mask, 0)
        return weights @ v, weights

    check_attention(late_mask)
    assert "the mask is applied after the softmax" in capsys.readouterr().out


def test_blank_exercise_is_not_attempted(capsys):
    def blank(q, k, v, mask=None):
        raise NotImplementedError("Exercise 1")

    assert check_attention(blank) is attention
    assert check_causal_mask(None) is causal_mask
    out = capsys.readouterr().out
    assert out.count("not attempted — continuing with the reference implementation") == 2


def test_causal_mask_mistakes(capsys):
    check_causal_mask(lambda t: causal_mask(t).T)
    check_causal_mask(lambda t: causal_mask(t).tril(-1))
    out = capsys.readouterr().out
    assert "transposed" in out and "diagonal is excluded" in out
