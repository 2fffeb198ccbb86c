"""Chapter 08's checks: guidance on logits and dynamic thresholding keep right answers and name mistakes."""

import pytest
import torch

from imagen_tutorial.checks import check_dynamic_threshold, check_guided_logits, dynamic_threshold, guided_logits
from imagen_tutorial.checks.ch08_imagen import _batch_percentile, _no_divide, _no_floor

REFERENCE = "continuing with the reference implementation"


def my_guided(cond, uncond, g):
    return g * cond + (1 - g) * uncond  # the same line, written the other common way


def my_threshold(x0, p):
    flat = x0.abs().reshape(x0.size(0), -1)
    s = torch.quantile(flat, p / 100, dim=1).clamp(min=1).reshape(-1, *[1] * (x0.dim() - 1))
    return x0.clamp(-s, s) / s


def test_a_correct_guidance_is_kept(capsys):
    assert check_guided_logits(my_guided) is my_guided
    assert "✅ guided_logits: matches the reference on 4 cases" in capsys.readouterr().out


def test_guidance_one_is_the_conditional_and_zero_the_unconditional():
    c, u = torch.randn(2, 5), torch.randn(2, 5)
    assert torch.allclose(guided_logits(c, u, 1.0), c) and torch.allclose(guided_logits(c, u, 0.0), u)


@pytest.mark.parametrize("wrong, words", [
    (lambda c, u, g: c + g * (u - c), "the formula reversed"),
    (lambda c, u, g: u.softmax(-1) + g * (c.softmax(-1) - u.softmax(-1)), "the mix of probabilities"),
    (lambda c, u, g: g * c, "without the unconditional base"),
    (lambda c, u, g: u + g * c, "the difference is missing"),
    (lambda c, u, g: c + g * (c - u), "the base is the unconditional logits"),
])
def test_guidance_mistakes_are_named(capsys, wrong, words):
    assert check_guided_logits(wrong) is guided_logits
    out = capsys.readouterr().out
    assert words in out and REFERENCE in out


def test_a_correct_threshold_is_kept(capsys):
    assert check_dynamic_threshold(my_threshold) is my_threshold
    assert "✅ dynamic_threshold: matches the reference on 3 cases" in capsys.readouterr().out


def test_threshold_leaves_a_quiet_sample_alone_and_tames_a_loud_one():
    quiet, loud = torch.linspace(-0.5, 0.5, 100), torch.linspace(-3, 3, 100)
    out = dynamic_threshold(torch.stack([quiet, loud]), 100.0)
    assert torch.allclose(out[0], quiet) and torch.allclose(out[1], loud / 3)


def _signed(x0, p):
    s = torch.quantile(x0.flatten(1), p / 100, dim=1).clamp(min=1.0).view(-1, *([1] * (x0.dim() - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


@pytest.mark.parametrize("wrong, words", [
    (lambda x0, p: x0.clamp(-1, 1), "static clipping"),
    (_batch_percentile, "over the whole batch"),
    (_no_floor, "without the floor"),
    (_no_divide, "without dividing by s"),
    (lambda x0, p: _signed(x0, p), "the percentile of x0 instead of |x0|"),
    (lambda x0, p: x0.clamp_(-1, 1), "it writes into its input `x0`"),
    (lambda x0, p: torch.quantile(x0.abs().flatten(1), p, dim=1), "pass percentile / 100"),
])
def test_threshold_mistakes_are_named(capsys, wrong, words):
    assert check_dynamic_threshold(wrong) is dynamic_threshold
    out = capsys.readouterr().out
    assert words in out and REFERENCE in out


def test_blank_exercises_are_not_attempted(capsys):
    def blank(*args):
        raise NotImplementedError("Exercise 1: my_guided_logits")

    assert check_guided_logits(blank) is guided_logits
    assert check_dynamic_threshold(blank) is dynamic_threshold
    assert capsys.readouterr().out.count("➖") == 2


@pytest.mark.parametrize("check, answer", [
    (check_guided_logits, lambda c, u, g: torch.lerp(u, c, g)),
    (check_guided_logits, lambda c, u, g: (1 - g) * u + g * c),
    (check_dynamic_threshold, lambda x0, p: torch.stack([
        x.clamp(-s, s) / s for x, s in ((x, max(1.0, torch.quantile(x.abs().flatten(), p / 100).item()))
                                        for x in x0)])),
], ids=["lerp", "weighted-sum", "loop-over-samples"])
def test_valid_alternatives_pass(capsys, check, answer):
    assert check(answer) is answer
    assert "✅" in capsys.readouterr().out
