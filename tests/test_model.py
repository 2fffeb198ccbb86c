"""The model's contract: shapes, causality, bits/dim, and sampling (cache, guidance, prefix)."""

import math

import pytest
import torch
from conftest import tiny_model
from torch.testing import assert_close

from imagen_tutorial import ImageTransformer, ModelConfig, Tokenizer
from imagen_tutorial.data import make_caption, quantize


def _captions(model, n=2):
    return model.tokenizer.encode([make_caption(k) for k in range(n)])


def test_design_example_shapes():
    cfg = ModelConfig(image_size=28, levels=16, d_model=32, n_heads=4, n_layers=1, condition="caption")
    model = ImageTransformer(cfg)
    assert model.config is cfg
    images = quantize(torch.randint(0, 256, (2, 28, 28), dtype=torch.uint8), 16)
    cond = Tokenizer().encode([make_caption(9), ""])
    assert model(images, cond).shape == (2, 28 * 28, 16)
    assert model.bits_per_dim(images, cond).shape == (2,)


@pytest.mark.parametrize("condition", ["caption", "lowres", "edges", "none"])
def test_every_condition_scores_and_samples(condition):
    model = tiny_model(condition)
    images = torch.randint(0, 8, (2, 6, 6))
    cond = {"caption": _captions(model), "lowres": torch.rand(2, 1, 3, 3), "edges": torch.rand(2, 1, 6, 6),
            "none": None}[condition]
    assert model(images, cond).shape == (2, 36, 8)
    out = model.generate(cond, batch_size=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 6, 6) and out.dtype == torch.long and 0 <= out.min() and out.max() < 8


def _input_gradients(model, images, cond, t):
    """Gradient of logits[:, t] with respect to each decoder input position's embedding: [T]."""
    captured = {}
    hook = model.decoder.level_emb.register_forward_hook(lambda m, i, o: captured.setdefault("emb", o))
    try:
        logits = model(images, cond)
        captured["emb"].retain_grad()
        logits[:, t].sum().backward()
    finally:
        hook.remove()
    return captured["emb"].grad.abs().sum(dim=(0, 2))


def test_decoder_is_causal_in_raster_order():
    model = tiny_model("caption")
    images, cond = torch.randint(0, 8, (2, 6, 6)), _captions(model)
    for t in range(36):  # includes row ends (5 -> 6, 11 -> 12, ...)
        grad = _input_gradients(model, images, cond, t)
        # input position j carries pixel j-1, so logits[t] may read inputs 0..t (pixels < t) and nothing after
        assert (grad[t + 1 :] == 0).all(), f"logits at {t} depend on pixels >= {t}"
        assert grad[t] > 0, f"logits at {t} ignore pixel {t - 1}"
        model.zero_grad()


def test_text_encoder_is_not_causal():
    model = tiny_model("caption")
    tokens = _captions(model, 1)
    emb = model.encoder.token_emb(tokens).detach().requires_grad_()
    hook = model.encoder.token_emb.register_forward_hook(lambda m, i, o: emb)
    try:
        memory, _ = model.encoder(tokens)
    finally:
        hook.remove()
    weights = torch.randn(memory.size(-1))  # (a plain sum of a LayerNorm output has zero gradient)
    (memory[:, 0] @ weights).sum().backward()  # the first token's output depends on the last token
    assert emb.grad[0, -1].abs().sum() > 0


def test_bits_per_dim_is_cross_entropy_in_bits():
    model = tiny_model("none")
    images = torch.randint(0, 8, (3, 6, 6))
    logits = model(images)
    nats = torch.nn.functional.cross_entropy(logits.reshape(-1, 8), images.flatten(), reduction="none")
    assert_close(model.bits_per_dim(images), nats.view(3, -1).mean(1) / math.log(2))
    assert_close(model.loss(images), nats.mean())
    assert abs(model.bits_per_dim(images).mean().item() - 3.0) < 0.1  # untrained ≈ uniform log2(8)


@pytest.mark.parametrize("options", [{}, {"guidance": 3.0, "top_k": 4}, {"temperature": 0.7}])
def test_cache_gives_same_tokens(options):
    model = tiny_model("caption")
    cond = _captions(model, 3)
    with_cache = model.generate(cond, use_cache=True, generator=torch.Generator().manual_seed(5), **options)
    without = model.generate(cond, use_cache=False, generator=torch.Generator().manual_seed(5), **options)
    assert torch.equal(with_cache, without)


def test_cached_logits_equal_full_forward_logits():
    model = tiny_model("caption")
    images, cond = torch.randint(0, 8, (2, 6, 6)), _captions(model)
    full = model(images, cond)
    memory, mask = model.encode(cond)
    dec = model.decoder
    inputs = dec.shift_right(images.flatten(1))
    cache = dec.new_cache(memory.size(1))
    steps = [dec(inputs[:, t : t + 1], memory, mask, cache, offset=t) for t in range(36)]
    assert_close(torch.cat(steps, dim=1), full)


def test_guidance_one_is_plain_conditional_and_zero_is_unconditional():
    model = tiny_model("caption")
    cond = _captions(model, 2)
    plain = model.generate(cond, generator=torch.Generator().manual_seed(1))
    assert torch.equal(model.generate(cond, guidance=1.0, generator=torch.Generator().manual_seed(1)), plain)
    empty = model.tokenizer.encode(["", ""])
    unconditional = model.generate(empty, generator=torch.Generator().manual_seed(1))
    assert torch.equal(model.generate(cond, guidance=0.0, generator=torch.Generator().manual_seed(1)), unconditional)


@pytest.mark.parametrize("use_cache", [True, False])
def test_prefix_pixels_are_kept(use_cache):
    model = tiny_model("caption")
    prefix = torch.randint(0, 8, (2, 15))
    generator = torch.Generator().manual_seed(0)
    out = model.generate(_captions(model), prefix=prefix, use_cache=use_cache, generator=generator)
    assert torch.equal(out.flatten(1)[:, :15], prefix)


def test_prefix_with_and_without_cache_agree():
    model = tiny_model("lowres")
    cond, prefix = torch.rand(2, 1, 3, 3), torch.randint(0, 8, (2, 10))
    a = model.generate(cond, prefix=prefix, guidance=2.0, generator=torch.Generator().manual_seed(3))
    b = model.generate(cond, prefix=prefix, guidance=2.0, use_cache=False, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_zero_temperature_is_greedy_and_repeatable():
    model = tiny_model("none")
    a = model.generate(batch_size=2, temperature=0)
    assert torch.equal(a, model.generate(batch_size=2, temperature=0))
    assert torch.equal(a[0], a[1])  # no condition, no randomness: the same image


def test_generate_restores_training_mode():
    model = tiny_model("none").train()
    model.generate(batch_size=1)
    assert model.training


def test_flops_formula_counts_linear_layers():
    model = tiny_model("none", n_layers=1)
    d, T, f, levels = 32, 36, 128, 8
    per_layer = T * (4 * d * d + 2 * d * f) + 2 * T * T * d
    assert model.flops_per_image(training=False) == 2 * (per_layer + T * d * levels)
    assert model.flops_per_image() == 3 * model.flops_per_image(training=False)


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.zeros(2, 1, 6, 6, dtype=torch.long), r"shape \[B, 6, 6\]; got \[2, 1, 6, 6\] \(drop the channel axis"),
        (torch.zeros(2, 7, 7, dtype=torch.long), r"shape \[B, 6, 6\]; got \[2, 7, 7\]"),
        (torch.rand(2, 6, 6), r"integer levels \(LongTensor\), got torch.float32; .*quantize\(x, 8\)"),
        (torch.full((2, 6, 6), 200), r"levels must be in \[0, 8\); got values 200..200"),
    ],
)
def test_bad_images_say_what_is_wrong(images, message):
    model = tiny_model("none")
    with pytest.raises(ValueError, match=message):
        model(images)


def test_bad_conditions_say_what_is_wrong():
    images = torch.zeros(2, 6, 6, dtype=torch.long)
    with pytest.raises(ValueError, match="this model is conditioned on 'caption': pass a condition"):
        tiny_model("caption")(images)
    with pytest.raises(ValueError, match="unconditional .* pass cond=None"):
        tiny_model("none")(images, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"float image \[B, 1, 3, 3\] in \[0, 1\]; got \[2, 3, 3\]"):
        tiny_model("lowres")(images, torch.rand(2, 3, 3))
    with pytest.raises(ValueError, match="condition batch 1 differs from image batch 2"):
        tiny_model("lowres")(images, torch.rand(1, 1, 3, 3))
    with pytest.raises(ValueError, match="caption word 'boots'.*did you mean 'boot'"):
        tiny_model("caption").generate(["a boots"])
    with pytest.raises(ValueError, match="needs batch_size"):
        tiny_model("none").generate()


def _pixel_model():
    return tiny_model("lowres", pixel_condition=True)


def test_pixel_condition_is_causal_and_reads_the_pixel_under_each_position():
    model = _pixel_model()
    images, cond = torch.randint(0, 8, (2, 6, 6)), torch.rand(2, 1, 3, 3)
    for t in range(36):
        grad = _input_gradients(model, images, cond, t)
        assert (grad[t + 1 :] == 0).all(), f"logits at {t} depend on pixels >= {t}"
        model.zero_grad()
    # the pixel embedding of position t is the upsampled 3×3 value under pixel t (nearest: 2×2 blocks)
    features = model.pixel_features(cond)
    bins = ModelConfig.PIXEL_BINS
    expected = model.pixel_emb((cond.repeat_interleave(2, 2).repeat_interleave(2, 3).flatten(1) * (bins - 1))
                               .round().long())
    assert_close(features, expected)
    dropped = model.pixel_features(cond, drop=torch.tensor([True, False]))
    assert_close(dropped[0], model.pixel_emb.weight[bins].expand(36, -1))
    assert_close(dropped[1], features[1])


@pytest.mark.parametrize("guidance", [1.0, 2.5])
def test_pixel_condition_cache_gives_same_tokens(guidance):
    model, cond = _pixel_model(), torch.rand(3, 1, 3, 3)
    prefix = torch.randint(0, 8, (3, 7))
    for kwargs in ({}, {"prefix": prefix}):
        a = model.generate(cond, guidance=guidance, generator=torch.Generator().manual_seed(2), **kwargs)
        b = model.generate(cond, guidance=guidance, use_cache=False, generator=torch.Generator().manual_seed(2),
                           **kwargs)
        assert torch.equal(a, b)


def test_pixel_condition_needs_an_image_condition():
    with pytest.raises(ValueError, match="pixel_condition=True needs an image condition .*not 'caption'"):
        ModelConfig(condition="caption", pixel_condition=True)


def test_generate_mixes_guided_logits_with_the_package_formula():
    from imagen_tutorial.model import guided_logits

    cond, uncond = torch.randn(2, 8), torch.randn(2, 8)
    assert_close(guided_logits(cond, uncond, 1.0), cond)
    assert_close(guided_logits(cond, uncond, 0.0), uncond)
    assert_close(guided_logits(cond, uncond, 3.0), uncond + 3 * (cond - uncond))
