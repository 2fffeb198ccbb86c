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


@pytest.mark.parametrize("check, answer, name", [
    (check_shift_right, my_shift_right, "shift_right"),
    (check_bits_per_dim, my_bits_per_dim, "bits_per_dim"),
    (check_sample_loop, my_sample_loop, "sample_loop"),
])
def test_a_correct_answer_is_kept(capsys, check, answer, name):
    assert check(answer) is answer
    assert f"✅ {name}: matches the reference on" in capsys.readouterr().out


@pytest.mark.parametrize("check, reference", [
    (check_shift_right, ch04.shift_right),
    (check_bits_per_dim, ch04.bits_per_dim),
    (check_sample_loop, ch04.sample_loop),
])
def test_blank_exercise_is_not_attempted(capsys, check, reference):
    assert check(blank) is reference
    assert check(None) is reference
    assert capsys.readouterr().out.count(f"not attempted — {REFERENCE}") == 2


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


def test_a_batch_mean_is_a_shape_error(capsys):
    check_bits_per_dim(lambda lg, t: _nats(lg, t).mean() / math.log(2))
    assert "returned (), expected shape (3,)" in capsys.readouterr().out


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


def test_a_sampler_with_another_seed_differs(capsys):
    def reseeded(model, cond, generator):
        return my_sample_loop(model, cond, torch.Generator().manual_seed(123))

    assert check_sample_loop(reseeded) is ch04.sample_loop
    assert "values differ from the reference" in capsys.readouterr().out
