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
from imagen_tutorial.checks.ch06_sampling import _causal_flag, _no_out, _no_scale, _one_head, _overwrite

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
    (_no_out, "attn.out is not applied"),
    (_one_head, "the heads are not split"),
])
def test_cache_mistakes_are_named(capsys, wrong, words):
    assert check_attend_with_cache(wrong) is attend_with_cache
    out = capsys.readouterr().out
    assert words in out and REFERENCE in out


def test_a_correct_sample_logits_is_kept(capsys):
    assert check_sample_logits(my_sample_logits) is my_sample_logits
    assert capsys.readouterr().out.strip() == (
        "✅ sample_logits: greedy at temperature 0, and the draws follow softmax(top-k(logits / τ)) (80,000 draws in "
        "5 settings), with the same seed exactly the package's")


def _filtered(logits, top_k, fill=float("-inf"), keep_kth=True):
    if top_k is None or top_k >= logits.size(-1):
        return logits
    kth = logits.topk(top_k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth if keep_kth else logits <= kth, fill)


def _sampler(transform):
    """A sampler that gets temperature 0 right and draws from softmax(transform(logits, temperature, top_k))."""
    def sample(logits, temperature, top_k, generator):
        if temperature == 0:
            return logits.argmax(-1)
        return torch.multinomial(transform(logits, temperature, top_k), 1, generator=generator).squeeze(1)
    return sample


_after_softmax = _sampler(lambda lg, t, k: _filtered(lg, k).softmax(-1) / t)
_multiplied = _sampler(lambda lg, t, k: _filtered(lg * t, k).softmax(-1))
_keeps_k_minus_1 = _sampler(lambda lg, t, k: _filtered(lg / t, k, keep_kth=False).softmax(-1))
_zero_fill = _sampler(lambda lg, t, k: _filtered(lg / t, k, fill=0.0).softmax(-1))
_ignores_temperature = _sampler(lambda lg, t, k: _filtered(lg, k).softmax(-1))


def _ranks(logits, temperature, top_k, generator):
    if temperature == 0:
        return logits.argmax(-1)
    if top_k is not None and top_k < logits.size(-1):
        values = (logits / temperature).topk(top_k, dim=-1).values
        return torch.multinomial(values.softmax(-1), 1, generator=generator).squeeze(1)  # a rank, not a level
    return torch.multinomial((logits / temperature).softmax(-1), 1, generator=generator).squeeze(1)


@pytest.mark.parametrize("wrong, words", [
    (_after_softmax, "the temperature has no effect"),
    (_ignores_temperature, "the temperature has no effect"),
    (_multiplied, "multiplied by the temperature instead of divided"),
    (_keeps_k_minus_1, "k-1 levels kept instead of k"),
    (_zero_fill, "set to 0 instead of -inf"),
    (_ranks, "a position among the top k (0..k-1) returned instead of its level"),
], ids=["after-softmax", "ignored", "multiplied", "k-minus-1", "zero-fill", "ranks"])
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
    out = capsys.readouterr().out
    assert out.count("➖") == 3 and out.count(f"not attempted — {REFERENCE}") == 3 and "❌" not in out


def test_rerunning_a_check_on_the_reference_does_not_give_a_false_pass(capsys):
    assert check_attend_with_cache(attend_with_cache) is attend_with_cache
    assert check_sample_logits(sample_logits) is sample_logits
    out = capsys.readouterr().out
    assert out.count("this is the reference implementation, not yours") == 2 and "✅" not in out


def categorical_sample_logits(logits, temperature, top_k, generator):
    if temperature == 0:
        return logits.argmax(-1)
    return torch.distributions.Categorical(logits=_filtered(logits / temperature, top_k)).sample()


def looped_sample_logits(logits, temperature, top_k, generator):
    if temperature == 0:
        return logits.argmax(-1)
    rows = []
    for row in logits:  # one row at a time, top-k by sorting
        row = row / temperature
        if top_k is not None and top_k < row.numel():
            row = torch.where(row >= row.sort(descending=True).values[top_k - 1], row, torch.tensor(-1e9))
        rows.append(torch.multinomial(row.softmax(-1), 1, generator=generator))
    return torch.cat(rows)


def gumbel_sample_logits(logits, temperature, top_k, generator):
    if temperature == 0:
        return logits.argmax(-1)
    noise = -torch.log(-torch.log(torch.rand(logits.shape, generator=generator)))
    return (_filtered(logits / temperature, top_k) + noise).argmax(-1)


def test_a_categorical_sampler_passes_with_a_note_about_the_generator(capsys):
    assert check_sample_logits(categorical_sample_logits) is categorical_sample_logits
    out = capsys.readouterr().out
    assert out.startswith("✅ sample_logits: greedy at temperature 0, and the draws follow")
    assert "ℹ️ sample_logits: the generator is not used" in out and "❌" not in out


def test_a_loop_over_rows_passes(capsys):
    assert check_sample_logits(looped_sample_logits) is looped_sample_logits
    assert "✅ sample_logits" in capsys.readouterr().out


def test_a_gumbel_max_sampler_passes_and_is_reproducible(capsys):
    assert check_sample_logits(gumbel_sample_logits) is gumbel_sample_logits
    out = capsys.readouterr().out
    assert "✅ sample_logits" in out and "Right and reproducible" in out


def test_a_sampler_without_the_generator_passes_with_a_note(capsys):
    def unseeded(logits, temperature, top_k, generator):
        return my_sample_logits(logits, temperature, top_k, None)

    assert check_sample_logits(unseeded) is unseeded
    assert "the generator is not used: the same seed gave different draws" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, words", [
    (lambda lg, t, k, g: my_sample_logits(lg, t, k, g)[:, None], "returned (B, 1): drop the last axis"),
    (lambda lg, t, k, g: lg.argmax(-1) if t == 0 else (lg / t).softmax(-1), "that is a distribution, not a draw"),
    (lambda lg, t, k, g: lg.argmax(-1) if t == 0 else my_sample_logits(lg.div_(t), 1.0, k, g),
     "it writes into its input `logits`"),
], ids=["kept-axis", "probabilities", "in-place"])
def test_sample_logits_shapes_and_in_place_are_named(capsys, wrong, words):
    assert check_sample_logits(wrong) is sample_logits
    assert words in capsys.readouterr().out


def test_a_kth_value_without_its_axis_is_told_to_keep_it(capsys):
    def flat_kth(logits, temperature, top_k, generator):
        if temperature == 0:
            return logits.argmax(-1)
        logits = logits / temperature
        if top_k is not None and top_k < logits.size(-1):
            logits = logits.masked_fill(logits < logits.topk(top_k, dim=-1).values[:, -1], float("-inf"))
        return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)

    assert check_sample_logits(flat_kth) is sample_logits
    assert "values[:, -1:] is (B, 1)" in capsys.readouterr().out


def test_the_sampling_check_leaves_the_global_random_state_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    check_sample_logits(categorical_sample_logits)
    assert torch.equal(torch.rand(3), expected)


def test_a_cache_appended_along_the_heads_is_told_the_time_axis(capsys):
    def heads_axis(attn, x, cache):
        B, _, C = x.shape
        H = attn.n_heads
        q, k, v = (p(x).view(B, 1, H, C // H).transpose(1, 2) for p in (attn.query, attn.key, attn.value))
        if cache:
            k, v = torch.cat([cache["k"], k], dim=1), torch.cat([cache["v"], v], dim=1)
        cache["k"], cache["v"] = k, v
        y = F.scaled_dot_product_attention(q, k, v)
        return attn.out(y.transpose(1, 2).reshape(B, 1, C))

    assert check_attend_with_cache(heads_axis) is attend_with_cache
    assert "appended along axis 1 (the heads); time is axis 2" in capsys.readouterr().out


def test_a_cache_step_with_its_own_attention_and_keys_first_passes(capsys):
    def keys_first(attn, x, cache):
        B, _, C = x.shape
        H = attn.n_heads
        q, k, v = (p(x).view(B, 1, H, C // H).permute(0, 2, 1, 3) for p in (attn.query, attn.key, attn.value))
        cache["k"] = torch.cat([k, cache["k"]], 2) if "k" in cache else k  # the order of keys does not matter
        cache["v"] = torch.cat([v, cache["v"]], 2) if "v" in cache else v
        w = torch.einsum("bhqd,bhkd->bhqk", q, cache["k"]).div(q.size(-1) ** 0.5).softmax(-1)
        return attn.out(torch.einsum("bhqk,bhkd->bhqd", w, cache["v"]).permute(0, 2, 1, 3).reshape(B, 1, C))

    assert check_attend_with_cache(keys_first) is keys_first
    assert "✅ attend_with_cache" in capsys.readouterr().out


def test_chapter_06_samples_with_the_learners_latest_cache_step():
    """sample_with_cache must look my_attend_with_cache up when it runs: a default argument would keep the function
    that was current when its cell ran (the reference, after a ❌), even after the learner fixed Exercise 1."""
    import json
    from pathlib import Path
    from types import SimpleNamespace

    cells = json.loads((Path(__file__).parents[1] / "chapters" / "06_sampling.ipynb").read_text())["cells"]
    source = next("".join(c["source"]) for c in cells if "def sample_with_cache" in "".join(c["source"]))
    namespace = {"torch": torch, "decoder_step": None}
    exec(source, namespace)  # noqa: S102 - the chapter's own cell
    namespace["my_attend_with_cache"] = "latest"
    calls = []
    namespace["decoder_step"] = lambda *args: calls.append(args[-1]) or torch.zeros(1, 4)
    model = SimpleNamespace(encode=lambda cond: (None, None), config=SimpleNamespace(image_size=1),
                            decoder=SimpleNamespace(blocks=[None], start_token=4))
    namespace["sample_with_cache"](model, torch.zeros(1, 2, dtype=torch.long))  # one pixel: one step
    assert calls == ["latest"]


def test_levels_on_another_device_are_named_not_a_crash(capsys):
    def on_meta(logits, temperature=1.0, top_k=None, generator=None):
        return torch.zeros(logits.size(0), dtype=torch.long, device="meta")
    assert check_sample_logits(on_meta) is sample_logits
    assert "returned a tensor on the meta device" in capsys.readouterr().out
