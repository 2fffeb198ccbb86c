"""Checks for chapter 06 (sampling): one step of self-attention with a key/value cache built by hand, and drawing
a level from logits with temperature and top-k.

The package does both inside `MultiHeadAttention` (with its preallocated `KVCache`) and `ImageTransformer.generate`;
the short references here are the teaching versions. `sample_with_cache` puts `attend_with_cache` into a whole
sampling loop, and tests/test_checks_ch06.py checks that it draws exactly the package's tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attention import MultiHeadAttention, attention
from ..model import ImageTransformer
from .ch01_attention import merge_heads, split_heads
from .core import REFERENCE, compare, reference_given

__all__ = ["attend_with_cache", "check_attend_with_cache", "check_sample_logits", "decoder_step",
           "sample_logits", "sample_with_cache"]


# ---------------------------------------------------------------- exercise 1: attention with a KV cache
def attend_with_cache(attn: MultiHeadAttention, x: Tensor, cache: dict) -> Tensor:
    """One step of causal self-attention with a key/value cache kept in a plain dict.

    x (B, 1, C): the newest position only. cache: empty before the first step; afterwards "k" and "v" hold the
    keys and values (B, H, t, C/H) of the t earlier positions. Appends the new key and value, lets the new query
    attend to all t+1 of them (no mask needed: the newest position may see every earlier one) -> (B, 1, C)."""
    return _cached_step(attn, x, cache, lambda q, k, v: attention(q, k, v)[0])


def _cached_step(attn, x, cache, attend_heads):
    q = split_heads(attn.query(x), attn.n_heads)  # (B, H, 1, C/H)
    k = split_heads(attn.key(x), attn.n_heads)
    v = split_heads(attn.value(x), attn.n_heads)
    if cache:  # earlier positions: append along the time axis (2)
        k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
    cache["k"], cache["v"] = k, v  # (B, H, t+1, C/H)
    return attn.out(merge_heads(attend_heads(q, k, v)))  # (B, 1, C)


def _steps(attend: Callable) -> Callable:
    """attend(attn, x_t, cache) one position at a time -> a function (layer, x (B, T, C)) -> (B, T, C)."""

    def run(layer: MultiHeadAttention, x: Tensor) -> Tensor:
        cache: dict = {}
        with torch.no_grad():
            return torch.cat([attend(layer, x[:, t : t + 1], cache) for t in range(x.size(1))], dim=1)

    return run


def _full_causal(layer: MultiHeadAttention, x: Tensor) -> Tensor:
    with torch.no_grad():
        return layer(x)  # the package's layer, all positions at once with its causal mask


def _causal_flag(attn, x, cache):
    return _cached_step(attn, x, cache, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True))


def _no_scale(attn, x, cache):
    return _cached_step(attn, x, cache, lambda q, k, v: (q @ k.transpose(-2, -1)).softmax(-1) @ v)


def _overwrite(attn, x, cache):
    cache.clear()  # the cache is replaced by the newest key/value instead of growing
    return attend_with_cache(attn, x, cache)


def _attention_cases() -> list[tuple]:
    with torch.random.fork_rng(devices=[]):  # leave the notebook's random state alone
        torch.manual_seed(0)
        layers = [MultiHeadAttention(16, 4, causal=True).eval(), MultiHeadAttention(24, 3, causal=True).eval()]
        for layer in layers:  # larger weights than at initialisation, so that the attention is not flat
            for p in layer.parameters():
                torch.nn.init.normal_(p, std=0.5)
    g = torch.Generator().manual_seed(0)
    return [(layers[0], torch.randn(2, 7, 16, generator=g)), (layers[1], torch.randn(1, 5, 24, generator=g))]


def check_attend_with_cache(learner: Callable | None) -> Callable:
    """Check attend(attn, x (B, 1, C), cache dict) -> (B, 1, C): fed the positions one at a time, it must give what
    the package's causal MultiHeadAttention gives for all positions at once."""
    if reference_given("attend_with_cache", learner, attend_with_cache):
        return attend_with_cache
    mistakes = {
        "is_causal=True with a single query: PyTorch aligns that mask to the top-left, so the new position sees "
        "only the first key. One new query may see every cached key: no mask is needed": _causal_flag,
        "the √d scale is missing (scores are not divided by sqrt(d_head))": _no_scale,
        "the cache is overwritten instead of extended (torch.cat the new key/value after the cached ones, dim=2), "
        "so each position attends only to itself": _overwrite,
    }
    ok = compare("attend_with_cache", _steps(learner) if learner is not None else None, _full_causal,
                 _attention_cases(), {k: _steps(v) for k, v in mistakes.items()})
    return learner if ok else attend_with_cache


# ---------------------------------------------------------------- the cache inside a sampling loop
def decoder_step(model: ImageTransformer, token: Tensor, t: int, memory: Tensor | None, mask: Tensor | None,
                 caches: list[dict], attend: Callable = attend_with_cache) -> Tensor:
    """The decoder for one position t, reading one input token (B,) (the start token or pixel t-1) and keeping
    every self-attention's keys/values in `caches` (one dict per block) -> logits (B, levels) for pixel t."""
    dec, W = model.decoder, model.config.image_size
    pos = torch.tensor([t], device=token.device)
    x = dec.level_emb(token[:, None]) + dec.row_emb(pos // W) + dec.col_emb(pos % W)  # (B, 1, d)
    for block, cache in zip(dec.blocks, caches, strict=True):
        x = x + attend(block.self_attn, block.ln1(x), cache)
        if block.cross_attn is not None:  # the caption's keys/values are recomputed: only S of them
            x = x + block.cross_attn(block.ln2(x), memory=memory, mask=mask)
        x = x + block.ff(block.ln3(x))
    return dec.head(dec.ln(x))[:, 0]


@torch.no_grad()
def sample_with_cache(model: ImageTransformer, cond: Tensor, generator: torch.Generator | None = None,
                      attend: Callable = attend_with_cache, temperature: float = 1.0,
                      top_k: int | None = None) -> Tensor:
    """Draw images (B, H, W) pixel by pixel with a hand-built key/value cache: the same tokens as
    model.generate(cond, temperature, top_k, generator=...) with or without the package's cache."""
    model.eval()
    cond = model.prepare_condition(cond)
    memory, mask = model.encode(cond)
    B, T, size = cond.size(0), model.config.seq_len, model.config.image_size
    caches: list[dict] = [{} for _ in model.decoder.blocks]
    out = torch.zeros(B, T, dtype=torch.long, device=cond.device)
    token = torch.full((B,), model.decoder.start_token, device=cond.device)
    for t in range(T):
        logits = decoder_step(model, token, t, memory, mask, caches, attend)
        out[:, t] = token = sample_logits(logits, temperature, top_k, generator)
    return out.view(B, size, size)


# ---------------------------------------------------------------- exercise 2: temperature and top-k
def sample_logits(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                  generator: torch.Generator | None = None) -> Tensor:
    """logits (B, levels) -> one level per row (B,), as `ImageTransformer.generate` draws them: temperature 0 is
    the most likely level; otherwise divide by the temperature, keep the top_k largest logits (the others -inf)
    and draw once from the softmax with torch.multinomial."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1): the k-th largest logit of each row
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)


def _filtered(logits, top_k, fill=float("-inf"), keep_kth=True):
    if top_k is None or top_k >= logits.size(-1):
        return logits
    kth = logits.topk(top_k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth if keep_kth else logits <= kth, fill)


def _draw(probs, generator):
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


# The mistakes below get temperature 0 right (the check tests it first) and go wrong elsewhere.
def _after_softmax(logits, temperature, top_k, generator):
    if temperature == 0:
        return logits.argmax(-1)
    return _draw(_filtered(logits.float(), top_k).softmax(-1) / temperature, generator)


def _multiplied(logits, temperature, top_k, generator):
    if temperature == 0:
        return logits.argmax(-1)
    return _draw(_filtered(logits.float() * temperature, top_k).softmax(-1), generator)


def _keeps_k_minus_1(logits, temperature, top_k, generator):
    if temperature == 0:
        return logits.argmax(-1)
    return _draw(_filtered(logits.float() / temperature, top_k, keep_kth=False).softmax(-1), generator)


def _zero_fill(logits, temperature, top_k, generator):
    if temperature == 0:
        return logits.argmax(-1)
    return _draw(_filtered(logits.float() / temperature, top_k, fill=0.0).softmax(-1), generator)


def _seeded(fn: Callable | None) -> Callable | None:
    """fn(logits, temperature, top_k, generator) -> fn(logits, temperature, top_k, seed): a fresh generator per
    call, so that the learner and the reference get the same random numbers."""
    if fn is None:
        return None
    return lambda logits, temperature, top_k, seed: fn(logits, temperature, top_k,
                                                       torch.Generator().manual_seed(seed))


def _logits_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 16, generator=g) * 2  # 64 rows of 16 levels: enough draws to tell answers apart
    return [(logits, 0.5, None, 0), (logits, 1.0, 3, 1), (logits, 1.5, 5, 2), (logits[:5], 1.0, None, 3),
            (logits, 0.0, None, 4), (logits, 0.0, 3, 5)]


def check_sample_logits(learner: Callable | None) -> Callable:
    """Check sample_logits(logits (B, levels), temperature, top_k, generator) -> levels (B,): the same draws as the
    reference for the same generator seed, and the argmax at temperature 0."""
    if reference_given("sample_logits", learner, sample_logits):
        return sample_logits
    cases = _logits_cases()
    if learner is not None:  # temperature 0 first: dividing by it gives inf/NaN, which `compare` cannot name
        logits = cases[-2][0]
        try:
            got = learner(logits, 0.0, None, torch.Generator().manual_seed(0))
            problem = None
            if isinstance(got, Tensor) and got.shape == logits.shape[:1] and not torch.equal(got, logits.argmax(-1)):
                problem = "returned levels other than the most likely ones"
        except NotImplementedError:
            problem = None  # `compare` says "not attempted"
        except Exception as error:
            problem = f"raised {type(error).__name__} ({str(error).splitlines()[0][:80]})"
        if problem:
            print(f"❌ sample_logits: at temperature 0 it {problem}: temperature 0 means greedy, return "
                  f"logits.argmax(-1) before dividing by the temperature — {REFERENCE}")
            return sample_logits
    mistakes = {
        "the temperature applied after the softmax (dividing probabilities by τ changes nothing: they are "
        "renormalised); divide the logits": _after_softmax,
        "logits multiplied by the temperature instead of divided (τ < 1 then flattens, τ > 1 sharpens)": _multiplied,
        "k-1 levels kept instead of k (mask logits < the k-th largest, not <=)": _keeps_k_minus_1,
        "the filtered logits set to 0 instead of -inf (exp(0) > 0, so they can still be drawn)": _zero_fill,
    }
    ok = compare("sample_logits", _seeded(learner), _seeded(sample_logits), cases,
                 {k: _seeded(v) for k, v in mistakes.items()}, atol=0)
    return learner if ok else sample_logits
