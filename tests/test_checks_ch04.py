"""Chapter 04 checks accept a right answer, name each known mistake, and fall back to the reference."""

import math

import pytest
import torch
import torch.nn.functional as F

from imagen_tutorial.checks import ch04_decoder as ch04
from imagen_tutorial.checks import check_bits_per_dim, check_sample_loop, check_shift_right
from imagen_tutorial.decoder import PixelDecoder

REFERENCE = "continuing with the reference implementation"


def my_shift_right(pixels, start_token):
    return torch.cat([torch.full_like(pixels[:, :1], start_token), pixels[:, :-1]], dim=1)


def my_bits_per_dim(logits, targets):
    log_probs = logits.log_softmax(-1).gather(-1, targets[..., None])[..., 0]  # (B, T)
    return -log_probs.mean(1) / math.log(2)


def my_sample_loop(model, cond, generator):
    model.eval()
    B, T = cond.size(0), model.config.seq_len
    memory, mask = model.encode(cond)
    out = torch.zeros(B, T, dtype=torch.long)
    for t in range(T):
        logits = model.decoder(model.decoder.shift_right(out[:, : t + 1]), memory, mask)[:, -1]
        out[:, t] = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
    return out.view(B, model.config.image_size, -1)


def blank(*args):
    raise NotImplementedError("Exercise")


def test_reference_shift_right_is_the_decoders():
    decoder = PixelDecoder(levels=16, image_size=4, d_model=8, n_heads=2, n_layers=1, d_ff=16)
    pixels = torch.randint(0, 16, (2, 16))
    assert torch.equal(ch04.shift_right(pixels, 16), decoder.shift_right(pixels))


def test_reference_bits_per_dim_is_the_models():
    model = ch04._check_model()
    images = torch.randint(0, 8, (2, 5, 5))
    cond = model.tokenizer.encode(["a bag", "a dress"])
    torch.testing.assert_close(ch04.bits_per_dim(model(images, cond), images.flatten(1)),
                               model.bits_per_dim(images, cond))


@pytest.mark.parametrize("check, answer, verdict", [
    (check_shift_right, my_shift_right, "✅ shift_right: matches the reference on 3 cases"),
    (check_bits_per_dim, my_bits_per_dim, "✅ bits_per_dim: matches the reference on 2 cases"),
    (check_sample_loop, my_sample_loop, "✅ sample_loop: every pixel follows the model's distribution given the "
                                        "pixels before it (7,500 pixels of 300 images tested), and with the same "
                                        "seed exactly the package's tokens"),
])
def test_a_correct_answer_is_kept(capsys, check, answer, verdict):
    assert check(answer) is answer
    out = capsys.readouterr().out
    assert out.strip() == verdict


@pytest.mark.parametrize("check, reference", [
    (check_shift_right, ch04.shift_right),
    (check_bits_per_dim, ch04.bits_per_dim),
    (check_sample_loop, ch04.sample_loop),
])
def test_blank_exercise_is_not_attempted(capsys, check, reference):
    assert check(blank) is reference
    assert check(None) is reference
    out = capsys.readouterr().out
    assert out.count("➖") == 2 and out.count(f"not attempted — {REFERENCE}") == 2 and "❌" not in out


def _start(p, s):
    return torch.full_like(p[:, :1], s)


@pytest.mark.parametrize("wrong, message", [
    (lambda p, s: p, "no shift: the input equals the target"),
    (lambda p, s: torch.cat([p[:, 1:], _start(p, s)], 1), "a left shift (position t holds pixel t+1, the future)"),
    (lambda p, s: torch.cat([p[:, :-1], _start(p, s)], 1), "the start token appended at the end"),
    (lambda p, s: torch.roll(p, 1, dims=1), "a roll: the last pixel wraps round"),
])
def test_shift_right_mistakes_are_named(capsys, wrong, message):
    assert check_shift_right(wrong) is ch04.shift_right
    out = capsys.readouterr().out
    assert message in out and REFERENCE in out


def _nats(logits, targets):
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")


@pytest.mark.parametrize("wrong, message", [
    (lambda lg, t: _nats(lg, t).mean(1), "nats, not bits"),
    (lambda lg, t: _nats(lg, t).sum(1) / math.log(2), "summed over the pixels instead of averaged"),
    (lambda lg, t: _nats(lg, t).mean(1) / math.log2(lg.size(-1)), "divided by log2(levels)"),
])
def test_bits_per_dim_mistakes_are_named(capsys, wrong, message):
    assert check_bits_per_dim(wrong) is ch04.bits_per_dim
    out = capsys.readouterr().out
    assert message in out and REFERENCE in out


@pytest.mark.parametrize("wrong, message", [
    (lambda lg, t: _nats(lg, t).mean() / math.log(2), "the result was averaged over the batch too"),
    (lambda lg, t: F.cross_entropy(lg.flatten(0, 1), t.flatten()) / math.log(2), "averaged over the batch too"),
    (lambda lg, t: _nats(lg, t).mean(0) / math.log(2), "averaged over the batch (dim=0) instead of the pixels"),
    (lambda lg, t: _nats(lg, t) / math.log(2), "one value per pixel [B, T]"),
    (lambda lg, t: F.cross_entropy(lg, t, reduction="none").mean(1) / math.log(2), "the class axis second"),
    (lambda lg, t: F.nll_loss(lg.log_softmax(-1), t, reduction="none").mean(1) / math.log(2), "the class axis second"),
    (lambda lg, t: torch.nn.CrossEntropyLoss(reduction="none")(lg, t).mean(1) / math.log(2), "the class axis second"),
    (lambda lg, t: -lg.gather(-1, t[..., None])[..., 0].mean(1) / math.log(2), "the logits used as log-probab"),
    (lambda lg, t: -lg.log_softmax(1).gather(-1, t[..., None])[..., 0].mean(1) / math.log(2),
     "log_softmax over the positions (dim=1)"),
    (lambda lg, t: _nats(lg, t).mean(1) * math.log(2), "multiplied by ln 2 instead of divided"),
    (lambda lg, t: (_nats(lg, t).mean(1) / math.log(2)).double(), "returned torch.float64"),
], ids=["batch-mean", "flattened-mean", "mean-over-batch", "per-pixel", "class-axis", "class-axis-nll",
        "class-axis-module", "raw-logits",
        "softmax-over-positions", "times-ln2", "float64"])
def test_bits_per_dim_shapes_and_slips_are_named(capsys, wrong, message):
    assert check_bits_per_dim(wrong) is ch04.bits_per_dim
    out = capsys.readouterr().out
    assert message in out and REFERENCE in out


def _unshifted(model, cond, generator):
    memory, mask = model.encode(cond)
    out = torch.zeros(cond.size(0), model.config.seq_len, dtype=torch.long)
    for t in range(out.size(1)):
        logits = model.decoder(out[:, : t + 1], memory, mask)[:, -1]
        out[:, t] = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
    return out.view(-1, 5, 5)


def _greedy(model, cond, generator):
    memory, mask = model.encode(cond)
    out = torch.zeros(cond.size(0), model.config.seq_len, dtype=torch.long)
    for t in range(out.size(1)):
        out[:, t] = model.decoder(model.decoder.shift_right(out[:, : t + 1]), memory, mask)[:, -1].argmax(-1)
    return out.view(-1, 5, 5)


def _one_pass(model, cond, generator):
    probs = model(torch.zeros(cond.size(0), 5, 5, dtype=torch.long), cond).softmax(-1)
    return torch.multinomial(probs.view(-1, probs.size(-1)), 1, generator=generator).view(-1, 5, 5)


@pytest.mark.parametrize("wrong, message", [
    (_unshifted, "the decoder read the unshifted pixels"),
    (_greedy, "the most likely level every time (argmax)"),
    (_one_pass, "every pixel drawn from one forward pass over a blank image"),
])
def test_sample_loop_mistakes_are_named(capsys, wrong, message):
    assert check_sample_loop(wrong) is ch04.sample_loop
    out = capsys.readouterr().out
    assert message in out and REFERENCE in out


def test_a_sampler_that_ignores_its_generator_passes_with_a_note(capsys):
    def unseeded(model, cond, generator):
        return my_sample_loop(model, cond, None)  # the generator is not passed on

    assert check_sample_loop(unseeded) is unseeded
    out = capsys.readouterr().out
    assert out.startswith("✅ sample_loop: every pixel follows the model's distribution")
    assert "ℹ️ sample_loop: the generator is not used: the same seed gave different draws" in out


def categorical_sample_loop(model, cond, generator=None):
    B, T = cond.size(0), model.config.seq_len
    memory, mask = model.encode(cond)
    out = torch.zeros(B, T, dtype=torch.long)
    for t in range(T):
        logits = model.decoder(model.decoder.shift_right(out[:, : t + 1]), memory, mask)[:, -1]
        out[:, t] = torch.distributions.Categorical(logits=logits).sample()
    return out.view(B, model.config.image_size, model.config.image_size)


def inverse_cdf_sample_loop(model, cond, generator=None):
    B, T = cond.size(0), model.config.seq_len
    memory, mask = model.encode(cond)
    out = torch.zeros(B, T, dtype=torch.long)
    for t in range(T):
        probs = model.decoder(model.decoder.shift_right(out[:, : t + 1]), memory, mask)[:, -1].softmax(-1)
        u = torch.rand(B, 1, generator=generator)
        out[:, t] = (probs.cumsum(-1) < u).sum(-1).clamp(max=probs.size(-1) - 1)
    return out.view(B, model.config.image_size, model.config.image_size)


def test_a_categorical_sampler_passes(capsys):
    assert check_sample_loop(categorical_sample_loop) is categorical_sample_loop
    out = capsys.readouterr().out
    assert "✅ sample_loop" in out and "the generator is not used" in out and "❌" not in out


def test_a_sampler_that_uses_the_generator_differently_passes_with_a_note(capsys):
    assert check_sample_loop(inverse_cdf_sample_loop) is inverse_cdf_sample_loop
    out = capsys.readouterr().out
    assert "✅ sample_loop" in out and "Right and reproducible" in out and "will print False" in out


def test_a_sampler_that_reads_out_up_to_t_is_told_t_plus_one(capsys):
    def short(model, cond, generator):
        memory, mask = model.encode(cond)
        out = torch.zeros(cond.size(0), model.config.seq_len, dtype=torch.long)
        for t in range(out.size(1)):
            logits = model.decoder(model.decoder.shift_right(out[:, :t]), memory, mask)[:, -1]
            out[:, t] = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
        return out.view(-1, 5, 5)

    assert check_sample_loop(short) is ch04.sample_loop
    assert "feed shift_right(out[:, :t+1])" in capsys.readouterr().out


def test_a_sampler_that_reads_the_first_position_is_named(capsys):
    def first(model, cond, generator):
        memory, mask = model.encode(cond)
        out = torch.zeros(cond.size(0), model.config.seq_len, dtype=torch.long)
        for t in range(out.size(1)):
            logits = model.decoder(model.decoder.shift_right(out[:, : t + 1]), memory, mask)[:, 0]
            out[:, t] = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
        return out.view(-1, 5, 5)

    assert check_sample_loop(first) is ch04.sample_loop
    assert "the first position's logits ([:, 0])" in capsys.readouterr().out


def test_a_sampler_without_softmax_is_told_to_take_it(capsys):
    def raw(model, cond, generator):
        memory, mask = model.encode(cond)
        out = torch.zeros(cond.size(0), model.config.seq_len, dtype=torch.long)
        for t in range(out.size(1)):
            logits = model.decoder(model.decoder.shift_right(out[:, : t + 1]), memory, mask)[:, -1]
            out[:, t] = torch.multinomial(logits, 1, generator=generator).squeeze(1)
        return out.view(-1, 5, 5)

    assert check_sample_loop(raw) is ch04.sample_loop
    assert "apply .softmax(-1) to the logits first" in capsys.readouterr().out


def test_a_flat_canvas_is_told_to_reshape(capsys):
    assert check_sample_loop(lambda m, c, g: my_sample_loop(m, c, g).flatten(1)) is ch04.sample_loop
    assert "reshape the canvas to images, out.view(B, H, W)" in capsys.readouterr().out


def test_the_sampler_check_leaves_the_global_random_state_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    check_sample_loop(categorical_sample_loop)
    assert torch.equal(torch.rand(3), expected)


def test_shift_right_that_writes_into_the_pixels_is_caught(capsys):
    def in_place(pixels, start_token):
        pixels[:, 1:] = pixels[:, :-1].clone()
        pixels[:, 0] = start_token
        return pixels

    assert check_shift_right(in_place) is ch04.shift_right
    assert "it writes into its input `pixels`" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, message", [
    (lambda p, s: F.pad(p[:, :-1], (1, 0)), "position 0 holds 0 instead of start_token"),
    (lambda p, s: torch.cat([p[:, :1] * 0 + s, p[:, 1:]], 1), "the start token overwrites pixel 0"),
    (lambda p, s: torch.cat([_start(p, s), p], 1), "returned [B, T+1]"),
    (lambda p, s: my_shift_right(p, s).float(), "returned torch.float32; decoder inputs are integer levels"),
], ids=["pad-with-0", "overwrite", "too-long", "float"])
def test_more_shift_right_slips_are_named(capsys, wrong, message):
    assert check_shift_right(wrong) is ch04.shift_right
    assert message in capsys.readouterr().out


@pytest.mark.parametrize("answer", [
    lambda p, s: F.pad(p[:, :-1], (1, 0), value=s),
    lambda p, s: torch.roll(p, 1, dims=1).index_fill(1, torch.tensor([0]), s),
    lambda p, s: torch.stack([torch.tensor([s] + row[:-1].tolist()) for row in p]),
], ids=["F.pad", "roll-then-fill", "loop"])
def test_valid_shift_right_alternatives_pass(capsys, answer):
    assert check_shift_right(answer) is answer
    assert "✅ shift_right" in capsys.readouterr().out


@pytest.mark.parametrize("answer", [
    lambda lg, t: F.cross_entropy(lg.transpose(1, 2), t, reduction="none").mean(1) / math.log(2),
    lambda lg, t: -torch.log2(lg.softmax(-1).gather(-1, t[..., None])[..., 0]).mean(1),
    lambda lg, t: torch.stack([F.cross_entropy(lg[b], t[b]) for b in range(lg.size(0))]) / math.log(2),
], ids=["cross-entropy", "log2-of-softmax", "loop-over-images"])
def test_valid_bits_per_dim_alternatives_pass(capsys, answer):
    assert check_bits_per_dim(answer) is answer
    assert "✅ bits_per_dim" in capsys.readouterr().out


def test_a_sampler_returning_levels_on_another_device_is_named_not_a_crash(capsys):
    def on_meta(model, cond, generator=None):
        size = model.config.image_size
        return torch.zeros(cond.size(0), size, size, dtype=torch.long, device="meta")
    assert check_sample_loop(on_meta) is ch04.sample_loop
    assert "returned a tensor on the meta device" in capsys.readouterr().out
