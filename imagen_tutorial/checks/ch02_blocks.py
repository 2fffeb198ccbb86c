"""Checks for chapter 02 (feed-forward and blocks): the feed-forward layer, the pre-LN residual sub-layer and
the decoder block's forward."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..blocks import DecoderBlock
from .core import Exercise, Mistake, compare, error_text, fail, is_stub, not_attempted, reference_given, settle

__all__ = ["check_feed_forward", "check_pre_ln_residual", "check_decoder_block"]


def feed_forward(x, w1, b1, w2, b2):
    """Reference: Linear(w1, b1) -> GELU -> Linear(w2, b2), with nn.Linear's layout (weight [out, in])."""
    return F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2)


def pre_ln_sublayer(x, sublayer, norm):
    """Reference: the pre-LayerNorm residual sub-layer x + sublayer(norm(x))."""
    return x + sublayer(norm(x))


def _feed_forward_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(0)

    def weights(d, d_ff):
        return (torch.randn(d_ff, d, generator=g), torch.randn(d_ff, generator=g),
                torch.randn(d, d_ff, generator=g), torch.randn(d, generator=g))

    # square weights first, so that weights used untransposed give a wrong value rather than a shape error
    return [(torch.randn(2, 5, 6, generator=g), *weights(6, 6)),
            (torch.randn(2, 5, 4, generator=g), *weights(4, 16))]


def _feed_forward_error(error: BaseException, args: tuple) -> Mistake | None:
    if "cannot be multiplied" in str(error):
        return Mistake("weights-untransposed", "nn.Linear stores its weight as [out, in], so x @ w1 needs w1 "
                       "transposed: use F.linear(x, w1, b1), which computes x @ w1.T + b1")
    return None


def check_feed_forward(learner: Callable | None) -> Callable:
    """Check feed_forward(x, w1, b1, w2, b2): x [..., d], w1 [d_ff, d], b1 [d_ff], w2 [d, d_ff], b2 [d]."""
    mistakes = [
        Mistake("relu-not-gelu", "ReLU instead of GELU",
                lambda x, w1, b1, w2, b2: F.linear(F.relu(F.linear(x, w1, b1)), w2, b2)),
        Mistake("tanh-gelu", "GELU's tanh approximation (the package's nn.GELU is the exact one: F.gelu(h))",
                lambda x, w1, b1, w2, b2: F.linear(F.gelu(F.linear(x, w1, b1), approximate="tanh"), w2, b2)),
        Mistake("no-b1", "the first bias b1 is missing",
                lambda x, w1, b1, w2, b2: F.linear(F.gelu(F.linear(x, w1)), w2, b2)),
        Mistake("no-b2", "the second bias b2 is missing",
                lambda x, w1, b1, w2, b2: F.linear(F.gelu(F.linear(x, w1, b1)), w2)),
        Mistake("weights-untransposed", "the weights are used untransposed (x @ w1 instead of x @ w1.T; F.linear "
                "transposes for you)", lambda x, w1, b1, w2, b2: F.gelu(x @ w1 + b1) @ w2 + b2),
        Mistake("no-gelu", "the GELU is missing: two Linear maps in a row are just one Linear map",
                lambda x, w1, b1, w2, b2: F.linear(F.linear(x, w1, b1), w2, b2)),
        Mistake("gelu-after-second", "the GELU comes after the second Linear instead of between the two",
                lambda x, w1, b1, w2, b2: F.gelu(F.linear(F.linear(x, w1, b1), w2, b2))),
        Mistake("biases-swapped", "the biases are swapped (b1 belongs to the first Linear, b2 to the second)",
                lambda x, w1, b1, w2, b2: F.linear(F.gelu(F.linear(x, w1, b2)), w2, b1)),
    ]
    ok = compare("feed_forward", learner, feed_forward, _feed_forward_cases(), mistakes, atol=1e-4, dtype=True,
                 on_error=_feed_forward_error)
    return settle("feed_forward", learner, feed_forward, ok)


def _pre_ln_cases() -> list[tuple]:
    """Sub-layers and norms as plain closures over seeded tensors (no global RNG is touched)."""
    g = torch.Generator().manual_seed(0)
    cases = []
    for d in (8, 6):
        w1, w2 = torch.randn(4 * d, d, generator=g) / d**0.5, torch.randn(d, 4 * d, generator=g) / d**0.5
        gamma, beta = 1 + 0.5 * torch.randn(d, generator=g), 0.5 * torch.randn(d, generator=g)
        x = 3 * torch.randn(2, 5, d, generator=g) + 1  # far from normalised, so a missing norm shows

        def sublayer(h, w1=w1, w2=w2):
            return F.linear(F.gelu(F.linear(h, w1)), w2)

        def norm(h, gamma=gamma, beta=beta):
            return F.layer_norm(h, gamma.shape, gamma, beta)

        cases.append((x, sublayer, norm))
    return cases


def check_pre_ln_residual(learner: Callable | None) -> Callable:
    """Check pre_ln_sublayer(x, sublayer, norm) = x + sublayer(norm(x)) for x [B, T, C]."""
    mistakes = [
        Mistake("post-ln", "post-LN: norm(x + sublayer(x)) — normalise the sub-layer's input, not the sum",
                lambda x, f, norm: norm(x + f(x))),
        Mistake("no-residual", "the residual is missing: sublayer(norm(x)) — add x back",
                lambda x, f, norm: f(norm(x))),
        Mistake("norm-on-output", "the norm is applied to the sub-layer's output: x + norm(sublayer(x))",
                lambda x, f, norm: x + norm(f(x))),
        Mistake("no-norm", "the norm is missing: x + sublayer(x)", lambda x, f, norm: x + f(x)),
        Mistake("residual-adds-norm", "the residual adds norm(x) instead of x: norm(x) + sublayer(norm(x)); add the "
                "un-normalised input", lambda x, f, norm: norm(x) + f(norm(x))),
    ]
    ok = compare("pre_ln_sublayer", learner, pre_ln_sublayer, _pre_ln_cases(), mistakes, dtype=True)
    return settle("pre_ln_sublayer", learner, pre_ln_sublayer, ok)


def _decoder_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(0)
    x, memory = torch.randn(2, 6, 16, generator=g), torch.randn(2, 4, 16, generator=g)
    memory_mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    return [(x, memory, memory_mask), (x, memory, None)]


def _decoder_mistakes(block: DecoderBlock) -> list[Mistake]:
    b = block

    def post_ln(x, memory, mask):
        x = b.ln1(x + b.self_attn(x))
        x = b.ln2(x + b.cross_attn(x, memory=memory, mask=mask))
        return b.ln3(x + b.ff(x))

    def no_mask(x, memory, mask):
        return b(x, memory, None)

    def memory_normed(x, memory, mask):  # the cross-attention's memory passed through ln2 as well
        x = x + b.self_attn(b.ln1(x))
        x = x + b.cross_attn(b.ln2(x), memory=b.ln2(memory), mask=mask)
        return x + b.ff(b.ln3(x))

    def no_cross_residual(x, memory, mask):
        x = x + b.self_attn(b.ln1(x))
        x = b.cross_attn(b.ln2(x), memory=memory, mask=mask)
        return x + b.ff(b.ln3(x))

    def no_cross(x, memory, mask):
        x = x + b.self_attn(b.ln1(x))
        return x + b.ff(b.ln3(x))

    def no_self_residual(x, memory, mask):
        x = b.self_attn(b.ln1(x))
        x = x + b.cross_attn(b.ln2(x), memory=memory, mask=mask)
        return x + b.ff(b.ln3(x))

    def cross_first(x, memory, mask):
        x = x + b.cross_attn(b.ln2(x), memory=memory, mask=mask)
        x = x + b.self_attn(b.ln1(x))
        return x + b.ff(b.ln3(x))

    def one_norm(x, memory, mask):
        x = x + b.self_attn(b.ln1(x))
        x = x + b.cross_attn(b.ln1(x), memory=memory, mask=mask)
        return x + b.ff(b.ln1(x))

    def inverted_mask(x, memory, mask):
        return b(x, memory, None if mask is None else ~mask)

    return [
        Mistake("post-ln", "post-LN (norm after the residual sum) — normalise each sub-layer's input instead",
                post_ln),
        Mistake("memory-mask-inverted", "the memory_mask is inverted: True marks the real caption tokens, so pass it "
                "as it is (not ~memory_mask)", inverted_mask),
        Mistake("no-self-residual", "the self-attention's residual is missing (x = self_attn(...) instead of x = x + "
                "self_attn(...))", no_self_residual),
        Mistake("cross-first", "the cross-attention comes before the self-attention: self-attention, "
                "cross-attention, feed-forward", cross_first),
        Mistake("one-norm", "ln1 is used for every sub-layer: each has its own LayerNorm (ln1, ln2, ln3)", one_norm),
        Mistake("no-memory-mask", "the memory_mask is not passed to the cross-attention (padded memory rows are "
                "attended)", no_mask),
        Mistake("memory-normed", "the memory is normalised by ln2 too — only the queries' side (x) is normalised",
                memory_normed),
        Mistake("no-cross-residual", "the cross-attention's residual is missing (x = cross_attn(...) instead of x = "
                "x + cross_attn(...))", no_cross_residual),
        Mistake("no-cross-attention", "the cross-attention is missing", no_cross),
    ]


def check_decoder_block(learner_cls: type | None) -> type:
    """Check a DecoderBlock-like class: built as learner_cls(16, 2, 64) with the package's attribute names
    (ln1, self_attn, ln2, cross_attn, ln3, ff), given the package block's weights, its
    forward(x [B,T,C], memory [B,S,C], memory_mask [B,S]) must match `DecoderBlock`."""
    name = "DecoderBlock"
    if reference_given(name, learner_cls, DecoderBlock):
        return settle(name, learner_cls, DecoderBlock, False)
    if learner_cls is None:
        not_attempted(name)
        return settle(name, None, DecoderBlock, False)
    with torch.random.fork_rng(devices=[]):  # building modules draws random weights; keep the notebook's RNG
        torch.manual_seed(0)
        reference = DecoderBlock(16, 2, 64)
        with torch.no_grad():  # LayerNorms that differ from each other, so that using one for another shows
            for module in reference.modules():
                if isinstance(module, torch.nn.LayerNorm):
                    module.weight.normal_(1.0, 0.3)
                    module.bias.normal_(0.0, 0.3)
        try:
            learner = learner_cls(16, 2, 64)
            learner.load_state_dict(reference.state_dict())
        except Exception as error:
            if is_stub(error):
                not_attempted(name)
            else:
                fail(name, f"could not build it with the package's weights ({error_text(error)})", status="crashed")
            return settle(name, None, DecoderBlock, False)
    reference.eval()
    learner.eval()
    with torch.no_grad():
        ok = compare(name, learner, reference, _decoder_cases(), _decoder_mistakes(reference), dtype=True,
                     arg_names=("x", "memory", "memory_mask"))
    return settle(name, learner_cls, DecoderBlock, ok)


EXERCISES = (Exercise("feed_forward", "my_feed_forward", check_feed_forward),
             Exercise("pre_ln_sublayer", "my_pre_ln_sublayer", check_pre_ln_residual),
             Exercise("DecoderBlock", "MyDecoderBlock", check_decoder_block))
