"""Exercise checks accept a right answer, name a known mistake, and fall back to the reference."""

import math

import pytest
import torch

from imagen_tutorial import MultiHeadAttention, attention, checks
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
    assert "✅ attention: matches the reference on 3 cases" in capsys.readouterr().out


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
    assert out.count("➖") == 2 and out.count("not attempted — continuing with the reference implementation") == 2


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
    assert "➖ split_heads: not attempted — continuing with the reference implementation" in capsys.readouterr().out


def test_rerunning_a_check_on_the_reference_does_not_give_a_false_pass(capsys):
    assert check_attention(attention) is attention  # e.g. the check cell re-run after an earlier ❌
    out = capsys.readouterr().out
    assert "this is the reference implementation, not yours" in out and "✅" not in out


# ---------------------------------------------------------------- every returned element, and the mask's dtype
def _scores(q, k):
    return q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))


@pytest.mark.parametrize(("wrong", "message"), [
    (lambda q, k, v, mask=None: (my_attention(q, k, v, mask)[0], my_attention(q, k, v, mask)[1] * 0 +
                                 (_scores(q, k) if mask is None else _scores(q, k).masked_fill(~mask, -math.inf))),
     "the scores returned as the weights"),
    (lambda q, k, v, mask=None: my_attention(q, k, v, mask)[::-1], "(weights, output) in the wrong order"),
    (lambda q, k, v, mask=None: my_attention(q / math.sqrt(q.size(-1)), k, v, mask), "divided by d instead of"),
    (lambda q, k, v, mask=None: my_attention(q * math.sqrt(q.size(-1) / q.size(-2)), k, v, mask),
     "number of queries (query.size(-2))"),
    (lambda q, k, v, mask=None: my_attention(q * math.sqrt(q.size(-1) / k.size(-2)), k, v, mask),
     "number of keys (key.size(-2))"),
], ids=["scores-as-weights", "swapped", "divided-by-d", "sqrt-T", "sqrt-S"])
def test_attention_output_mistakes_are_named(capsys, wrong, message):
    assert check_attention(wrong) is attention
    out = capsys.readouterr().out
    assert message in out and "continuing with the reference implementation" in out


def test_an_inverted_attention_mask_is_named(capsys):
    def inverted(q, k, v, mask=None):
        scores = _scores(q, k)
        weights = (scores if mask is None else scores.masked_fill(mask, float("-inf"))).softmax(-1)
        return weights @ v, weights

    assert check_attention(inverted) is attention
    assert "the mask is inverted: masked_fill(mask, -inf) blocks the keys" in capsys.readouterr().out


def test_a_mask_that_multiplies_the_scores_is_named(capsys):
    def multiplied(q, k, v, mask=None):
        weights = (_scores(q, k) if mask is None else _scores(q, k) * mask).softmax(-1)
        return weights @ v, weights

    assert check_attention(multiplied) is attention
    assert "the mask multiplies the scores" in capsys.readouterr().out


def test_a_scale_after_the_softmax_is_named(capsys):
    def late_scale(q, k, v, mask=None):
        scores = q @ k.transpose(-2, -1)
        scores = scores if mask is None else scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(-1) / math.sqrt(q.size(-1))
        return weights @ v, weights

    assert check_attention(late_scale) is attention
    assert "the √d scale applied after the softmax" in capsys.readouterr().out


def test_key_dot_T_says_to_swap_the_last_two_axes(capsys):
    def dot_t(q, k, v, mask=None):
        weights = (q @ k.T / math.sqrt(q.size(-1))).softmax(-1)
        return weights @ v, weights

    assert check_attention(dot_t) is attention
    out = capsys.readouterr().out
    assert "raised" in out and ".transpose(-2, -1)" in out


def einsum_attention(q, k, v, mask=None):
    scores = torch.einsum("...td,...sd->...ts", q, k) / q.size(-1) ** 0.5
    if mask is not None:
        scores = torch.where(mask, scores, torch.tensor(float("-inf")))
    weights = torch.softmax(scores, dim=-1)
    return torch.einsum("...ts,...sd->...td", weights, v), weights


def large_negative_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(k.size(-1))
    if mask is not None:
        scores = scores.masked_fill(mask == 0, -1e9)  # a large negative number instead of -inf
    weights = scores.softmax(-1)
    return weights @ v, weights


def looped_attention(q, k, v, mask=None):
    outputs, weights = [], []
    for b in range(q.size(0)):  # one batch element at a time, the heads as a batch axis
        o, w = my_attention(q[b], k[b], v[b], None if mask is None else mask.expand(*q.shape[:-2], -1, -1)[b]
                            if mask.dim() > 2 else mask)
        outputs.append(o)
        weights.append(w)
    return torch.stack(outputs), torch.stack(weights)


@pytest.mark.parametrize("answer", [einsum_attention, large_negative_attention, looped_attention],
                         ids=["einsum-and-where", "masked-fill-minus-1e9", "loop-over-batch"])
def test_valid_attention_alternatives_pass(capsys, answer):
    assert check_attention(answer) is answer
    assert "✅ attention: matches the reference on 3 cases" in capsys.readouterr().out


def test_a_float_causal_mask_is_refused_with_the_reason(capsys):
    assert check_causal_mask(lambda t: torch.tril(torch.ones(t, t))) is causal_mask
    out = capsys.readouterr().out
    assert "the right pattern, but as torch.float32 0/1 values; a mask must be bool" in out
    assert "`~mask` and masked_fill need bool" in out


def test_a_true_means_blocked_mask_is_called_inverted_not_missing_its_diagonal(capsys):
    assert check_causal_mask(lambda t: torch.ones(t, t, dtype=torch.bool).triu(1)) is causal_mask
    out = capsys.readouterr().out
    assert "the mask is inverted: True marks the blocked keys" in out and "diagonal" not in out


def test_an_all_true_mask_is_named(capsys):
    assert check_causal_mask(lambda t: torch.ones(t, t, dtype=torch.bool)) is causal_mask
    assert "all True: nothing is masked" in capsys.readouterr().out


@pytest.mark.parametrize("answer", [
    lambda t: torch.ones(t, t).tril().bool(),
    lambda t: torch.arange(t)[:, None] >= torch.arange(t)[None, :],
    lambda t: ~torch.ones(t, t, dtype=torch.bool).triu(1),
], ids=["tril-then-bool", "comparison", "not-triu"])
def test_valid_causal_mask_alternatives_pass(capsys, answer):
    assert check_causal_mask(answer) is answer
    assert "✅ causal_mask: matches the reference on 3 cases" in capsys.readouterr().out


@pytest.mark.parametrize("answer", [
    lambda x, h: x.reshape(x.size(0), x.size(1), h, -1).permute(0, 2, 1, 3),
    lambda x, h: torch.stack(x.chunk(h, dim=-1), dim=1),
    lambda x, h: torch.stack([x[..., i * (x.size(-1) // h):(i + 1) * (x.size(-1) // h)] for i in range(h)], 1),
], ids=["reshape-permute", "chunk-stack", "loop-over-heads"])
def test_valid_split_heads_alternatives_pass(capsys, answer):
    assert check_split_heads(answer) is answer
    assert "✅ split_heads: matches the reference on 3 cases" in capsys.readouterr().out


def test_split_heads_with_time_and_channels_swapped_is_named(capsys):
    assert check_split_heads(lambda x, h: my_split_heads(x, h).transpose(2, 3)) is split_heads
    assert "time and channels swapped" in capsys.readouterr().out


def test_later_cells_can_say_whose_attention_ran(capsys):
    assert checks.whose(check_attention(my_attention)) == "your my_attention"
    ran = check_attention(lambda q, k, v, mask=None: my_attention(q * 2, k, v, mask))
    assert checks.whose(ran) == "the reference attention (yours did not pass its check)"
    ran = check_causal_mask(None)
    assert checks.whose(ran) == "the reference causal_mask (yours is not attempted yet)"


def test_weights_that_do_not_sum_to_one_are_named_as_such(capsys):
    def shrunk_weights(q, k, v, mask=None):  # no known mistake, but the rows visibly do not sum to 1
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        scores = scores if mask is None else scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(-1) * 0.9
        return weights @ v, weights

    assert check_attention(shrunk_weights) is attention
    assert "the weights' rows do not sum to 1" in capsys.readouterr().out
