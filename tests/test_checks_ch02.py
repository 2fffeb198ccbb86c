"""Chapter 02 checks accept a right answer, name the known mistakes, and fall back to the reference."""

import pytest
import torch
import torch.nn.functional as F

from imagen_tutorial.blocks import DecoderBlock
from imagen_tutorial.checks import check_decoder_block, check_feed_forward, check_pre_ln_residual
from imagen_tutorial.checks.ch02_blocks import feed_forward, pre_ln_sublayer

FALLBACK = "continuing with the reference implementation"


def my_feed_forward(x, w1, b1, w2, b2):
    return F.gelu(x @ w1.T + b1) @ w2.T + b2


def my_pre_ln_sublayer(x, sublayer, norm):
    return x + sublayer(norm(x))


class MyDecoderBlock(DecoderBlock):
    def forward(self, x, memory=None, memory_mask=None):
        x = x + self.self_attn(self.ln1(x))
        x = x + self.cross_attn(self.ln2(x), memory=memory, mask=memory_mask)
        return x + self.ff(self.ln3(x))


def test_a_correct_feed_forward_is_kept(capsys):
    assert check_feed_forward(my_feed_forward) is my_feed_forward
    assert "✅ feed_forward: matches the reference on 2 cases" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, named", [
    (lambda x, w1, b1, w2, b2: F.relu(x @ w1.T + b1) @ w2.T + b2, "ReLU instead of GELU"),
    (lambda x, w1, b1, w2, b2: F.gelu(x @ w1.T) @ w2.T + b2, "the first bias b1 is missing"),
    (lambda x, w1, b1, w2, b2: F.gelu(x @ w1.T + b1) @ w2.T, "the second bias b2 is missing"),
    (lambda x, w1, b1, w2, b2: F.gelu(x @ w1 + b1) @ w2 + b2, "the weights are used untransposed"),
    (lambda x, w1, b1, w2, b2: F.gelu(x @ w1.T + b1, approximate="tanh") @ w2.T + b2, "tanh approximation"),
    (lambda x, w1, b1, w2, b2: (x @ w1.T + b1) @ w2.T + b2, "the GELU is missing"),
    (lambda x, w1, b1, w2, b2: F.gelu((x @ w1.T + b1) @ w2.T + b2), "the GELU comes after the second Linear"),
    (lambda x, w1, b1, w2, b2: F.gelu(x @ w1.T + b2) @ w2.T + b1, "the biases are swapped"),
])
def test_feed_forward_mistakes_are_named_and_the_reference_is_used(capsys, wrong, named):
    assert check_feed_forward(wrong) is feed_forward
    out = capsys.readouterr().out
    assert named in out and FALLBACK in out


def test_a_correct_pre_ln_sublayer_is_kept(capsys):
    assert check_pre_ln_residual(my_pre_ln_sublayer) is my_pre_ln_sublayer
    assert "✅ pre_ln_sublayer: matches the reference on 2 cases" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, named", [
    (lambda x, f, norm: norm(x + f(x)), "post-LN"),
    (lambda x, f, norm: f(norm(x)), "the residual is missing"),
    (lambda x, f, norm: x + norm(f(x)), "the norm is applied to the sub-layer's output"),
    (lambda x, f, norm: x + f(x), "the norm is missing"),
    (lambda x, f, norm: norm(x) + f(norm(x)), "the residual adds norm(x) instead of x"),
    (lambda x, f, norm: x.add_(f(norm(x))), "it writes into its input `x`"),
])
def test_pre_ln_mistakes_are_named_and_the_reference_is_used(capsys, wrong, named):
    assert check_pre_ln_residual(wrong) is pre_ln_sublayer
    out = capsys.readouterr().out
    assert named in out and FALLBACK in out


def test_a_correct_decoder_block_is_kept(capsys):
    assert check_decoder_block(MyDecoderBlock) is MyDecoderBlock
    assert "✅ DecoderBlock: matches the reference on 2 cases" in capsys.readouterr().out


def test_decoder_block_without_memory_mask_is_named(capsys):
    class Unmasked(DecoderBlock):
        def forward(self, x, memory=None, memory_mask=None):
            return MyDecoderBlock.forward(self, x, memory, None)

    assert check_decoder_block(Unmasked) is DecoderBlock
    assert "the memory_mask is not passed to the cross-attention" in capsys.readouterr().out


def test_post_ln_decoder_block_is_named(capsys):
    class PostLN(DecoderBlock):
        def forward(self, x, memory=None, memory_mask=None):
            x = self.ln1(x + self.self_attn(x))
            x = self.ln2(x + self.cross_attn(x, memory=memory, mask=memory_mask))
            return self.ln3(x + self.ff(x))

    assert check_decoder_block(PostLN) is DecoderBlock
    assert "post-LN" in capsys.readouterr().out


def test_decoder_block_with_other_parameter_names_is_reported(capsys):
    class Renamed(torch.nn.Module):
        def __init__(self, d_model, n_heads, d_ff):
            super().__init__()
            self.proj = torch.nn.Linear(d_model, d_model)

    assert check_decoder_block(Renamed) is DecoderBlock
    assert "could not build it with the package's weights" in capsys.readouterr().out


def test_decoder_check_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    check_decoder_block(MyDecoderBlock)
    assert torch.equal(state, torch.get_rng_state())


def test_blank_exercises_are_not_attempted(capsys):
    def blank(*args):
        raise NotImplementedError("Exercise")

    class BlankBlock(DecoderBlock):
        def forward(self, x, memory=None, memory_mask=None):
            raise NotImplementedError("Exercise 3")

    assert check_feed_forward(blank) is feed_forward
    assert check_pre_ln_residual(blank) is pre_ln_sublayer
    assert check_decoder_block(BlankBlock) is DecoderBlock
    assert check_decoder_block(None) is DecoderBlock
    out = capsys.readouterr().out
    assert out.count("➖") == 4 and out.count(f"not attempted — {FALLBACK}") == 4 and "❌" not in out


def _block(self_attn_first=True, norms=("ln1", "ln2", "ln3"), self_residual=True, mask=lambda m: m):
    class Block(DecoderBlock):
        def forward(self, x, memory=None, memory_mask=None):
            n1, n2, n3 = (getattr(self, n) for n in norms)

            def self_part(x):
                y = self.self_attn(n1(x))
                return x + y if self_residual else y

            def cross_part(x):
                return x + self.cross_attn(n2(x), memory=memory, mask=mask(memory_mask))

            x = cross_part(self_part(x)) if self_attn_first else self_part(cross_part(x))
            return x + self.ff(n3(x))

    return Block


@pytest.mark.parametrize("block, named", [
    (_block(mask=lambda m: None if m is None else ~m), "the memory_mask is inverted"),
    (_block(self_residual=False), "the self-attention's residual is missing"),
    (_block(self_attn_first=False), "the cross-attention comes before the self-attention"),
    (_block(norms=("ln1", "ln1", "ln1")), "ln1 is used for every sub-layer"),
], ids=["inverted-mask", "no-self-residual", "cross-first", "one-norm"])
def test_decoder_block_mistakes_are_named(capsys, block, named):
    assert check_decoder_block(block) is DecoderBlock
    out = capsys.readouterr().out
    assert named in out and FALLBACK in out


@pytest.mark.parametrize("answer", [
    lambda x, w1, b1, w2, b2: F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2),
    lambda x, w1, b1, w2, b2: torch.einsum("...f,df->...d", F.gelu(torch.einsum("...d,fd->...f", x, w1) + b1), w2)
    + b2,
    lambda x, w1, b1, w2, b2: torch.nn.GELU()(x @ w1.T + b1) @ w2.T + b2,
], ids=["F.linear", "einsum", "nn.GELU"])
def test_valid_feed_forward_alternatives_pass(capsys, answer):
    assert check_feed_forward(answer) is answer
    assert "✅ feed_forward" in capsys.readouterr().out


def test_a_decoder_block_that_calls_its_sublayers_in_other_words_passes(capsys):
    class Spelled(DecoderBlock):
        def forward(self, x, memory=None, memory_mask=None):
            h = self.ln1(x)
            x = torch.add(x, self.self_attn(h))
            x = x + self.cross_attn(self.ln2(x), memory, memory_mask)
            return x + self.ff(self.ln3(x))

    assert check_decoder_block(Spelled) is Spelled
    assert "✅ DecoderBlock" in capsys.readouterr().out
