"""Checks for chapter 06 (sampling): one step of self-attention with a key/value cache built by hand, and drawing
a level from logits with temperature and top-k.

The package does both inside `MultiHeadAttention` (with its preallocated `KVCache`) and `ImageTransformer.generate`;
the short references here are the teaching versions. `sample_with_cache` puts `attend_with_cache` into a whole
sampling loop, and tests/test_checks_ch06.py checks that it draws exactly the package's tokens. The cache step is
checked by value; `sample_logits` is random, so it is checked by the distribution of its draws (`core.draws_match`),
with a separate note on whether the generator reproduces them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attention import MultiHeadAttention, attention
from ..model import ImageTransformer
from .ch01_attention import merge_heads, split_heads
from .core import (
    Exercise,
    Mistake,
    compare,
    crashed,
    draws_match,
    error_text,
    fail,
    fixed_rng,
    generator_use,
    is_stub,
    looks_like,
    not_attempted,
    note,
    one_thread,
    pytorch_hint,
    reference_given,
    settle,
    unusable,
    verdict,
)

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
    """attend(attn, x_t, cache) one position at a time -> a function (layer, x (B, T, C)) -> (B, T, C). The last
    cache it built stays in `run.cache`, so that an error can be explained by what the cache holds."""

    def run(layer: MultiHeadAttention, x: Tensor) -> Tensor:
        run.cache = cache = {}
        with torch.no_grad():
            return torch.cat([attend(layer, x[:, t : t + 1], cache) for t in range(x.size(1))], dim=1)

    run.cache = {}
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


def _no_out(attn, x, cache):
    return _cached_step(_NoOut(attn), x, cache, lambda q, k, v: attention(q, k, v)[0])


class _NoOut:
    """The layer's maps without its output projection."""

    def __init__(self, attn: MultiHeadAttention) -> None:
        self.query, self.key, self.value, self.n_heads = attn.query, attn.key, attn.value, attn.n_heads

    @staticmethod
    def out(y: Tensor) -> Tensor:
        return y


def _one_head(attn, x, cache):
    q, k, v = attn.query(x), attn.key(x), attn.value(x)  # (B, 1, C): no split into heads
    if cache:
        k, v = torch.cat([cache["k"], k], dim=1), torch.cat([cache["v"], v], dim=1)
    cache["k"], cache["v"] = k, v
    return attn.out(attention(q, k, v)[0])


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
    name = "attend_with_cache"
    if reference_given(name, learner, attend_with_cache):
        return settle(name, learner, attend_with_cache, False)
    mistakes = [
        Mistake("is-causal-single-query", "is_causal=True with a single query: PyTorch aligns that mask to the "
                "top-left, so the new position sees only the first key. One new query may see every cached key: no "
                "mask is needed", _causal_flag),
        Mistake("no-sqrt-d-scale", "the √d scale is missing (scores are not divided by sqrt(d_head))", _no_scale),
        Mistake("cache-overwritten", "the cache is overwritten instead of extended (torch.cat the new key/value "
                "after the cached ones, dim=2), so each position attends only to itself", _overwrite),
        Mistake("no-out-projection", "attn.out is not applied: after merging the heads, the output projection "
                "attn.out maps them back", _no_out),
        Mistake("heads-not-split", "the heads are not split: one attention over all C channels; split the query, key "
                "and value into attn.n_heads heads of C/H channels", _one_head),
    ]
    steps = None if learner is None else _steps(learner)

    def cache_error(error: BaseException, args: tuple) -> Mistake | None:
        k = steps.cache.get("k") if steps is not None else None
        layer = args[0]
        if isinstance(k, Tensor) and k.dim() == 4 and k.size(1) != layer.n_heads:
            return Mistake("cache-on-heads-axis", f"the cached keys are {tuple(k.shape)}: they were appended along "
                           "axis 1 (the heads); time is axis 2, torch.cat([cache['k'], k], dim=2)")
        return None

    ok = compare(name, steps, _full_causal, _attention_cases(), [m._replace(forms=_steps(m.forms)) for m in mistakes],
                 on_error=cache_error, arg_names=("attn", "x"))
    return settle(name, learner, attend_with_cache, ok)


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


# ---------------------------------------------------------------- checking a sampler by its distribution
_LEVELS, _ROWS, _DRAWS = 16, 4, 4000  # 4 rows of logits, each drawn 4,000 times per setting
_SETTINGS = [(0.5, None), (1.0, 3), (1.5, 5), (1.0, None), (0.7, 16)]  # (temperature, top_k)


def _rows() -> Tensor:
    return torch.randn(_ROWS, _LEVELS, generator=torch.Generator().manual_seed(0)) * 2


def _table(rows: Tensor, temperature: float, top_k: int | None, *, scale: str = "divide", fill: float = -math.inf,
           keep_kth: bool = True) -> Tensor:
    """The distribution over levels (ROWS, levels) that a sampler with these choices draws from."""
    logits = {"divide": rows / temperature, "ignore": rows, "multiply": rows * temperature}[scale]
    if top_k is not None and top_k < logits.size(-1):
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth if keep_kth else logits <= kth, fill)
    return logits.softmax(-1)


def _ranks(rows: Tensor, temperature: float, top_k: int | None) -> Tensor | None:
    """Drawing a position among the top k (0..k-1) and returning it as if it were the level."""
    if top_k is None or top_k >= rows.size(-1):
        return None  # no top-k in this setting: says nothing about the mistake
    values = (rows / temperature).topk(top_k, dim=-1).values
    return torch.cat([values.softmax(-1), torch.zeros(rows.size(0), rows.size(1) - top_k)], dim=1)


_DRAW_MISTAKES = [
    Mistake("temperature-ignored", "the temperature has no effect: the draws follow softmax(logits) whatever τ is. "
            "Divide the logits by τ before the softmax (dividing the probabilities after it changes nothing: they "
            "are renormalised)", lambda r, t, k: _table(r, t, k, scale="ignore")),
    Mistake("temperature-multiplies", "logits multiplied by the temperature instead of divided (τ < 1 then flattens, "
            "τ > 1 sharpens)", lambda r, t, k: _table(r, t, k, scale="multiply")),
    Mistake("top-k-minus-1", "k-1 levels kept instead of k (mask logits < the k-th largest, not <=)",
            lambda r, t, k: _table(r, t, k, keep_kth=False)),
    Mistake("filtered-to-zero", "the filtered logits set to 0 instead of -inf (exp(0) > 0, so they can still be "
            "drawn)", lambda r, t, k: _table(r, t, k, fill=0.0)),
    Mistake("rank-not-level", "a position among the top k (0..k-1) returned instead of its level: map it back with "
            "topk's indices, or mask the other logits with -inf and keep all levels", _ranks),
]


def _logits_error(error: BaseException, args: tuple) -> Mistake | None:
    if "must match the size" in str(error):
        return Mistake("kth-value-axis-dropped", "keep the k-th value's axis: logits.topk(k, dim=-1).values[:, -1:] "
                       "is (B, 1) and broadcasts against (B, levels); values[:, -1] is (B,) and does not")
    return pytorch_hint(error)


def _levels_problem(out, rows: int) -> Mistake | None:
    if not isinstance(out, Tensor):
        return Mistake("not-a-tensor", f"returned {type(out).__name__}, expected levels (B,)")
    if tuple(out.shape) == (rows, 1):
        return Mistake("extra-axis", "returned (B, 1): drop the last axis (.squeeze(1) or [:, 0]) -> (B,)")
    if tuple(out.shape) == (rows, _LEVELS):
        return Mistake("distribution-not-draw", "returned (B, levels): that is a distribution, not a draw; draw one "
                       "level per row (B,)")
    if tuple(out.shape) != (rows,):
        return Mistake("wrong-shape", f"returned {tuple(out.shape)}, expected levels ({rows},)")
    if unusable(out):
        return unusable(out)
    if out.is_floating_point():
        return Mistake("levels-not-long", f"returned {out.dtype}; levels are integers (a LongTensor, as argmax and "
                       "torch.multinomial give)")
    if out.numel() and (out.min() < 0 or out.max() >= _LEVELS):
        return Mistake("levels-out-of-range", f"levels {int(out.min())}..{int(out.max())} fall outside "
                       f"0..{_LEVELS - 1}")
    return None


def _greedy_problem(learner: Callable) -> Mistake | None:
    """Temperature 0 first: dividing by it gives inf/NaN, which the distribution test could not name. What the
    learner's code raises propagates."""
    logits = torch.randn(64, _LEVELS, generator=torch.Generator().manual_seed(1)) * 2
    with fixed_rng(1000):
        got = learner(logits.clone(), 0.0, None, torch.Generator().manual_seed(0))
    problem = _levels_problem(got, 64)
    if problem:
        return problem
    if not torch.equal(got, logits.argmax(-1)):
        return Mistake("greedy-not-argmax", f"at temperature 0 it returned levels other than the most likely ones: "
                       f"{_GREEDY}")
    return None


_GREEDY = "temperature 0 means greedy, return logits.argmax(-1) before dividing by the temperature"


def check_sample_logits(learner: Callable | None) -> Callable:
    """Check sample_logits(logits (B, levels), temperature, top_k, generator) -> levels (B,): the argmax at
    temperature 0, and otherwise draws that follow softmax(top-k(logits / τ)) — 4 rows of logits drawn 4,000 times
    in each of 5 settings, tested by their frequencies (a correct sampler fails with probability < 1e-7, however it
    draws: torch.multinomial, torch.distributions.Categorical, a loop over rows, …). A separate note says whether
    the generator reproduces the draws and whether they equal the package's for the same seed."""
    name = "sample_logits"
    if reference_given(name, learner, sample_logits):
        return settle(name, learner, sample_logits, False)
    if learner is None:
        not_attempted(name)
        return settle(name, learner, sample_logits, False)
    with one_thread():
        ok = _check_draws(name, learner)
    return settle(name, learner, sample_logits, ok)


def _check_draws(name: str, learner: Callable) -> bool:
    try:
        problem = _greedy_problem(learner)
    except Exception as error:
        if is_stub(error):
            return not_attempted(name)
        return verdict(name, False, f"at temperature 0 it raised {error_text(error)[:120]}: {_GREEDY}",
                       mistake=Mistake("greedy-not-argmax", _GREEDY), status="crashed")
    if problem:
        return fail(name, problem)
    rows = _rows()
    logits = rows.repeat_interleave(_DRAWS, dim=0)  # (ROWS * DRAWS, levels): row r drawn DRAWS times
    draws, same_as_package = [], True
    for seed, (temperature, top_k) in enumerate(_SETTINGS):
        copy = logits.clone()
        try:
            with fixed_rng(1000 + seed):  # not the generator's seed: a learner that ignores it must differ
                out = learner(copy, temperature, top_k, torch.Generator().manual_seed(seed))
        except Exception as error:
            if is_stub(error):
                return not_attempted(name)
            return crashed(name, error, _logits_error(error, (logits,)),
                           where=f" (temperature {temperature}, top_k {top_k})")
        if not torch.equal(copy, logits):
            return fail(name, Mistake("writes-into-input", "it writes into its input `logits` (the caller's tensor "
                                      "changes): divide and mask into a new tensor (logits / temperature, "
                                      "masked_fill) instead of /= or masked_fill_"))
        problem = _levels_problem(out, logits.size(0))
        if problem:
            return fail(name, problem)
        draws.append(out.view(_ROWS, _DRAWS))
        reference = sample_logits(logits, temperature, top_k, torch.Generator().manual_seed(seed))
        same_as_package &= torch.equal(out, reference)
    labels = [f"row {r} at τ = {t}, top_k = {k}" for t, k in _SETTINGS for r in range(_ROWS)]

    def consistent(table: Callable) -> tuple[bool, str]:
        tables = [table(rows, t, k) for t, k in _SETTINGS]
        keep = [i for i, p in enumerate(tables) if p is not None]
        if not keep:
            return False, ""
        x = torch.cat([draws[i] for i in keep])
        probs = torch.cat([tables[i][:, None].expand(-1, _DRAWS, -1) for i in keep])
        return draws_match(x, probs, groups=[labels[i * _ROWS + r] for i in keep for r in range(_ROWS)])

    right, worst = consistent(_table)
    if not right:
        for mistake in _DRAW_MISTAKES:
            if consistent(mistake.forms)[0]:
                return looks_like(name, mistake, "the draws")
        return fail(name, f"the draws do not follow softmax(top-k(logits / τ)): {worst}")
    verdict(name, True, f"greedy at temperature 0, and the draws follow softmax(top-k(logits / τ)) "
                        f"({len(_SETTINGS) * _ROWS * _DRAWS:,} draws in {len(_SETTINGS)} settings)"
                        + (", with the same seed exactly the package's" if same_as_package else ""))
    if not same_as_package:
        _generator_note(name, lambda g: learner(logits[:: _DRAWS // 8].clone(), 1.0, None, g))
    return True


def _generator_note(name: str, draw: Callable) -> None:
    use = generator_use(draw)
    if use == "ignored":
        note(name, "the generator is not used: the same seed gave different draws (torch.distributions.Categorical, "
                   "and torch.multinomial without generator=, draw from torch's global random state). Right, but "
                   "not reproducible: draw with torch.multinomial(probs, 1, generator=generator)")
    else:
        note(name, "with the same seed it draws other levels than the package (it uses the random numbers in "
                   "another order than one torch.multinomial(probs, 1, generator=generator) call). Right and "
                   "reproducible; only draws made the package's way are identical token for token")


EXERCISES = (Exercise("attend_with_cache", "my_attend_with_cache", check_attend_with_cache),
             Exercise("sample_logits", "my_sample_logits", check_sample_logits))
