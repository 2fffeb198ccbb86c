"""Chapter 06's checks: the hand-built KV cache draws the package's tokens, and the checks keep right answers,
name the common mistakes and fall back to the reference."""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model

from imagen_tutorial.checks import (
    attend_with_cache,
    check_attend_with_cache,
    check_sample_logits,
    sample_logits,
    sample_with_cache,
)
from imagen_tutorial.checks.ch06_sampling import (
    _after_softmax,
    _causal_flag,
    _keeps_k_minus_1,
    _multiplied,
    _no_scale,
    _overwrite,
    _zero_fill,
)

REFERENCE = "continuing with the reference implementation"


def my_attend(attn, x, cache):  # written the other common way: SDPA without a mask, a None-initialised cache
    B, T, C = x.shape
    H = attn.n_heads
    q, k, v = (proj(x).view(B, T, H, C // H).transpose(1, 2) for proj in (attn.query, attn.key, attn.value))
    cache["k"] = k if cache.get("k") is None else torch.cat([cache["k"], k], dim=2)
    cache["v"] = v if cache.get("v") is None else torch.cat([cache["v"], v], dim=2)
    y = F.scaled_dot_product_attention(q, cache["k"], cache["v"])
    return attn.out(y.transpose(1, 2).reshape(B, T, C))


def my_sample_logits(logits, temperature, top_k, generator):  # top-k by scatter instead of a threshold
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        values, index = logits.topk(min(top_k, logits.size(-1)), dim=-1)
        logits = torch.full_like(logits, float("-inf")).scatter(-1, index, values)
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)[:, 0]


@pytest.mark.parametrize("options", [{}, {"temperature": 0.7, "top_k": 3}, {"temperature": 0}])
def test_hand_built_cache_draws_the_package_tokens(options):
    model = tiny_model()
    cond = model.tokenizer.encode(["a photo of a bag", "a dress", ""])

    def seed():
        return torch.Generator().manual_seed(3)

    by_hand = sample_with_cache(model, cond, seed(), **options)
    assert by_hand.shape == (3, 6, 6)
    assert torch.equal(by_hand, model.generate(cond, use_cache=True, generator=seed(), **options))
    assert torch.equal(by_hand, model.generate(cond, use_cache=False, generator=seed(), **options))


def test_hand_built_cache_works_for_an_image_condition_too():
    model = tiny_model("lowres")
    cond = torch.rand(2, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    by_hand = sample_with_cache(model, cond, torch.Generator().manual_seed(1))
    assert torch.equal(by_hand, model.generate(cond, generator=torch.Generator().manual_seed(1)))


def test_the_cache_holds_every_position_once():
    model = tiny_model()
    layer, cache = model.decoder.blocks[0].self_attn, {}
    for _ in range(5):
        attend_with_cache(layer, torch.randn(2, 1, 32), cache)
    assert cache["k"].shape == cache["v"].shape == (2, 4, 5, 8)  # (B, H, t, C/H)


def test_a_correct_cache_step_is_kept(capsys):
    assert check_attend_with_cache(my_attend) is my_attend
    assert "✅ attend_with_cache: matches the reference on 2 cases" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, words", [
    (_causal_flag, "is_causal=True with a single query"),
    (_no_scale, "the √d scale is missing"),
    (_overwrite, "the cache is overwritten instead of extended"),
])
def test_cache_mistakes_are_named(capsys, wrong, words):
    assert check_attend_with_cache(wrong) is attend_with_cache
    out = capsys.readouterr().out
    assert words in out and REFERENCE in out


def test_a_correct_sample_logits_is_kept(capsys):
    assert check_sample_logits(my_sample_logits) is my_sample_logits
    assert "✅ sample_logits: matches the reference on 6 cases" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, words", [
    (_after_softmax, "the temperature applied after the softmax"),
    (_multiplied, "multiplied by the temperature instead of divided"),
    (_keeps_k_minus_1, "k-1 levels kept instead of k"),
    (_zero_fill, "set to 0 instead of -inf"),
])
def test_sample_logits_mistakes_are_named(capsys, wrong, words):
    assert check_sample_logits(wrong) is sample_logits
    out = capsys.readouterr().out
    assert words in out and REFERENCE in out


def test_temperature_zero_must_be_greedy(capsys):
    def no_greedy(logits, temperature, top_k, generator):  # divides by 0: inf/NaN probabilities
        return torch.multinomial((logits / temperature).softmax(-1), 1, generator=generator)[:, 0]

    assert check_sample_logits(no_greedy) is sample_logits
    out = capsys.readouterr().out
    assert "at temperature 0 it raised RuntimeError" in out and "temperature 0 means greedy" in out


def test_reference_sample_logits_at_temperature_zero_is_the_argmax():
    logits = torch.randn(4, 16)
    assert torch.equal(sample_logits(logits, 0.0, 3), logits.argmax(-1))


def test_top_k_one_draws_the_argmax():
    logits = torch.randn(8, 16)
    assert torch.equal(sample_logits(logits, 1.0, 1, torch.Generator().manual_seed(0)), logits.argmax(-1))


def test_blank_exercises_are_not_attempted(capsys):
    def blank(*args):
        raise NotImplementedError("Exercise 1: my_attend_with_cache")

    assert check_attend_with_cache(blank) is attend_with_cache
    assert check_sample_logits(blank) is sample_logits
    assert check_sample_logits(None) is sample_logits
    assert capsys.readouterr().out.count(f"not attempted — {REFERENCE}") == 3


def test_rerunning_a_check_on_the_reference_does_not_give_a_false_pass(capsys):
    assert check_attend_with_cache(attend_with_cache) is attend_with_cache
    assert check_sample_logits(sample_logits) is sample_logits
    out = capsys.readouterr().out
    assert out.count("this is the reference implementation, not yours") == 2 and "✅" not in out
