"""Exercise checks accept a right answer, name a known mistake, and fall back to the reference."""

import math

import pytest
import torch

from imagen_tutorial import MultiHeadAttention, attention
from imagen_tutorial.attention import causal_mask
from imagen_tutorial.checks import check_attention, check_causal_mask, check_split_heads
from imagen_tutorial.checks.ch01_attention import merge_heads, split_heads


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


def test_softmax_over_the_wrong_axis_is_named(capsys):
    def wrong_axis(q, k, v, mask=None):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        scores = scores if mask is None else scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(-2).nan_to_num()
        return weights @ v, weights

    assert check_attention(wrong_axis) is attention
    assert "the softmax runs over the queries (dim=-2)" in capsys.readouterr().out


def test_a_correct_causal_mask_is_kept(capsys):
    def my_causal_mask(t):
        return torch.tril(torch.ones(t, t, dtype=torch.bool))

    assert check_causal_mask(my_causal_mask) is my_causal_mask
    assert "✅ causal_mask: matches the reference on 3 cases" in capsys.readouterr().out


def my_split_heads(x, n_heads):
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)


def test_split_heads_reference_is_what_multi_head_attention_does():
    torch.manual_seed(0)
    layer, x = MultiHeadAttention(12, 3), torch.randn(2, 5, 12)
    assert torch.equal(split_heads(x, 3), layer._heads(x))
    assert torch.equal(merge_heads(split_heads(x, 3)), x)


def test_a_correct_split_heads_is_kept(capsys):
    assert check_split_heads(my_split_heads) is my_split_heads
    assert "✅ split_heads: matches the reference on 3 cases" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda x, h: x.view(x.size(0), h, x.size(1), x.size(2) // h), "without a transpose"),
        (lambda x, h: x.view(x.size(0), x.size(1), h, x.size(2) // h), "heads and time are not swapped"),
        (lambda x, h: x.view(x.size(0), x.size(1), x.size(2) // h, h).permute(0, 3, 1, 2),
         "the channels are split in the wrong order"),
    ],
    ids=["view-without-transpose", "no-transpose-of-heads-and-time", "channels-in-wrong-order"],
)
def test_split_heads_mistakes_are_named_and_the_reference_is_used(capsys, wrong, message):
    assert check_split_heads(wrong) is split_heads
    out = capsys.readouterr().out
    assert message in out and "continuing with the reference implementation" in out


def test_split_heads_with_a_wrong_shape_says_which_shape(capsys):
    def wrong_axes(x, n_heads):  # (B, T, C/H, H): a shape mistake
        return my_split_heads(x, n_heads).permute(0, 2, 3, 1)

    assert check_split_heads(wrong_axes) is split_heads
    assert "returned (2, 5, 3, 4), expected shape (2, 4, 5, 3)" in capsys.readouterr().out


def test_blank_split_heads_is_not_attempted(capsys):
    def blank(x, n_heads):
        raise NotImplementedError("Exercise 3")

    assert check_split_heads(blank) is split_heads
    assert "❌ split_heads: not attempted — continuing with the reference implementation" in capsys.readouterr().out


def test_rerunning_a_check_on_the_reference_does_not_give_a_false_pass(capsys):
    assert check_attention(attention) is attention  # e.g. the check cell re-run after an earlier ❌
    out = capsys.readouterr().out
    assert "this is the reference implementation, not yours" in out and "✅" not in out
