"""Chapter 10's checks: noise conditioning augmentation and the cascade's hand-off keep right answers (written in
other valid ways too) and name each typical mistake."""

import math

import pytest
import torch
import torch.nn.functional as F

from imagen_tutorial.checks import check_hand_off, check_noise_augment, hand_off, noise_augment

REFERENCE = "continuing with the reference implementation"


def _cos_sin(aug):
    return torch.cos(math.pi * aug / 2).view(-1, 1, 1, 1), torch.sin(math.pi * aug / 2).view(-1, 1, 1, 1)


# ---------------------------------------------------------------- noise conditioning augmentation
def my_noise_augment(low, aug, noise):
    alpha, sigma = _cos_sin(aug)
    return alpha * low + sigma * noise, aug


def my_noise_augment_einsum(low, aug, noise):  # another correct way: the level as a clone, einsum per image
    return (torch.einsum("b,bchw->bchw", torch.cos(math.pi * aug / 2), low)
            + torch.einsum("b,bchw->bchw", torch.sin(math.pi * aug / 2), noise)), aug.clone()


@pytest.mark.parametrize("right", [my_noise_augment, my_noise_augment_einsum], ids=["view", "einsum"])
def test_a_correct_noise_augment_is_kept(capsys, right):
    assert check_noise_augment(right) is right
    assert "✅ noise_augment: matches the reference on 3 cases" in capsys.readouterr().out


def _aug_wrong(mix, level=lambda a: a):
    def wrong(low, aug, noise):
        return mix(low, aug.view(-1, 1, 1, 1), noise), level(aug)
    return wrong


def _cosine(power=1, swap=False):
    def mix(low, aug, noise):
        alpha, sigma = torch.cos(math.pi * aug / 2), torch.sin(math.pi * aug / 2)
        alpha, sigma = (sigma, alpha) if swap else (alpha, sigma)
        return alpha**power * low + sigma**power * noise
    return mix


@pytest.mark.parametrize("wrong, words", [
    (_aug_wrong(_cosine(), torch.zeros_like), "the model is told level 0"),
    (_aug_wrong(lambda low, a, n: low), "no augmentation at all"),
    (_aug_wrong(lambda low, a, n: low + a * n), "low + aug·noise: a different noise process"),
    (_aug_wrong(lambda low, a, n: (1 - a) * low + a * n), "a straight-line mix, a different noise process"),
    (_aug_wrong(_cosine(power=2)), "α² and σ² instead of α and σ"),
    (_aug_wrong(_cosine(swap=True)), "α and σ swapped"),
    (_aug_wrong(_cosine(), lambda a: 1 - a), "the level as 1 − aug"),
    (lambda low, aug, noise: (torch.cos(math.pi * aug / 2) * low + torch.sin(math.pi * aug / 2) * noise, aug),
     "broadcast along the image's last axis"),
    (lambda low, aug, noise: (low.mul_(_cos_sin(aug)[0]).add_(_cos_sin(aug)[1] * noise), aug),
     "it writes into its input `low`"),
], ids=["level-0", "none", "additive", "linear", "squared", "swapped", "one-minus", "columns", "in-place"])
def test_noise_augment_mistakes_are_named(capsys, wrong, words):
    assert check_noise_augment(wrong) is noise_augment
    out = capsys.readouterr().out
    assert words in out and REFERENCE in out


def _log_snr_form(low, aug, noise):  # α = √sigmoid(λ) with λ = log(α²/σ²) by hand: NaN at aug = 1 in float32
    log_snr = 2 * (torch.cos(math.pi * aug / 2).log() - torch.sin(math.pi * aug / 2).log())
    alpha, sigma = torch.sigmoid(log_snr).sqrt(), torch.sigmoid(-log_snr).sqrt()
    return alpha.view(-1, 1, 1, 1) * low + sigma.view(-1, 1, 1, 1) * noise, aug


@pytest.mark.parametrize("wrong, words", [
    (_aug_wrong(_cosine(), lambda a: a.double()), "returned float64 as level"),
    (lambda low, aug, noise: (my_noise_augment(low.double(), aug.double(), noise.double())[0], aug),
     "returned float64 as image; the rest of the notebook works in float32 — cast back with `.float()`"),
    (lambda low, aug, noise: my_noise_augment(low, aug, torch.randn_like(low)), "it ignores `noise`"),
    (lambda low, aug, noise: (my_noise_augment(low, aug[:1].expand_as(aug), noise)[0], aug),
     "one level for the whole batch (aug[0], or .item())"),
    (lambda low, aug, noise: (my_noise_augment(low, aug, noise)[0] * 0 + _cos_sin(aug[:1])[0] * low
                              + _cos_sin(aug)[1] * noise, aug), "one value of `aug` for the whole batch"),
    (lambda low, aug, noise: (_cos_sin(aug)[0] * low + _cos_sin(aug)[1] ** 2 * noise, aug), "σ² instead of σ"),
    (lambda low, aug, noise: (_cos_sin(aug)[0] ** 2 * low + _cos_sin(aug)[1] * noise, aug), "α² instead of α"),
    (lambda low, aug, noise: my_noise_augment(low, aug, noise[:1].expand_as(noise)),
     "the same noise image for the whole batch"),
    (_log_snr_form, "wrong only for the images at aug = 1 (NaN or inf there): at level 1 float32 gives α"),
    (lambda low, aug, noise: (my_noise_augment(low, aug, noise)[0].to("meta"), aug),
     "returned a tensor as image on the meta device"),
], ids=["level-float64", "image-float64", "own-noise", "one-level", "alpha-of-first-level", "sigma-squared",
        "alpha-squared", "one-noise", "log-snr-nan-at-1", "meta-device"])
def test_noise_augment_slips_are_named(capsys, wrong, words):
    assert check_noise_augment(wrong) is noise_augment
    out = capsys.readouterr().out
    assert words in out and REFERENCE in out


def test_noise_augment_in_float64_cast_back_passes(capsys):
    def float64_inside(low, aug, noise):
        image, level = my_noise_augment(low.double(), aug.double(), noise.double())
        return image.float(), level.float()
    assert check_noise_augment(float64_inside) is float64_inside
    assert "✅" in capsys.readouterr().out


def test_noise_augment_that_returns_only_the_image_is_told_what_is_missing(capsys):
    assert check_noise_augment(lambda low, aug, noise: my_noise_augment(low, aug, noise)[0]) is noise_augment
    out = capsys.readouterr().out
    assert "❌ noise_augment" in out and REFERENCE in out


def test_noise_augment_left_blank_is_not_attempted(capsys):
    def blank(low, aug, noise):
        raise NotImplementedError
    assert check_noise_augment(blank) is noise_augment
    assert "➖" in capsys.readouterr().out


# ---------------------------------------------------------------- the hand-off
def my_hand_off(trajectory):
    x_t, x0 = trajectory[-1]
    return F.interpolate(x0, size=(28, 28), mode="bilinear")


def my_hand_off_mapped(trajectory):  # another correct way: through [0, 1] and back (bilinear is affine-safe)
    images01 = (trajectory[-1][1] + 1) / 2
    return 2 * F.interpolate(images01, scale_factor=2, mode="bilinear", align_corners=False) - 1


@pytest.mark.parametrize("right", [my_hand_off, my_hand_off_mapped], ids=["direct", "via-01"])
def test_a_correct_hand_off_is_kept(capsys, right):
    assert check_hand_off(right) is right
    assert "✅ hand_off: matches the reference on 3 cases" in capsys.readouterr().out


def _up(x, **kw):
    return F.interpolate(x, size=28, **{"mode": "bilinear", "align_corners": False, **kw})


@pytest.mark.parametrize("wrong, words", [
    (lambda tr: _up(tr[-1][0]), "the last step's x_t"),
    (lambda tr: _up(tr[0][1]), "the first step's x̂₀"),
    (lambda tr: _up((tr[-1][1] + 1) / 2), "moved to [0, 1]"),
    (lambda tr: _up(2 * tr[-1][1] - 1), "mapped from [0, 1] to [-1, 1] again"),
    (lambda tr: F.interpolate(tr[-1][1], size=28, mode="nearest"), "nearest-neighbour upsampling"),
    (lambda tr: _up(tr[-1][1], mode="bicubic"), "bicubic upsampling"),
    (lambda tr: _up(tr[-1][1], align_corners=True), "align_corners=True"),
], ids=["last-x_t", "first-x0", "to-01", "mapped-twice", "nearest", "bicubic", "align-corners"])
def test_hand_off_mistakes_are_named(capsys, wrong, words):
    assert check_hand_off(wrong) is hand_off
    out = capsys.readouterr().out
    assert words in out and REFERENCE in out


def _drops_the_earlier_steps(trajectory):
    sample = trajectory[-1][1]
    for i in range(len(trajectory) - 1):
        trajectory[i] = None  # "free the memory"
    return _up(sample)


@pytest.mark.parametrize("wrong, words", [
    (lambda tr: _up(tr[-2][1]), "the second-to-last step's x̂₀ (trajectory[-2])"),
    (lambda tr: _up(tr[-2][0]), "the second-to-last step's x_t (trajectory[-2][0])"),
    (lambda tr: _up(tr[-1][1].double()), "returned float64"),
    (_drops_the_earlier_steps, "it writes into its input `trajectory` (an entry replaced, added or removed"),
    (lambda tr: _up(tr.pop()[1]), "it writes into its input `trajectory`"),
], ids=["second-to-last-x0", "second-to-last-x_t", "float64", "entries-set-to-none", "pop"])
def test_hand_off_slips_are_named(capsys, wrong, words):
    assert check_hand_off(wrong) is hand_off
    out = capsys.readouterr().out
    assert words in out and REFERENCE in out


def test_a_hand_off_that_forgets_to_upsample_is_told_the_shape(capsys):
    assert check_hand_off(lambda tr: tr[-1][1]) is hand_off
    out = capsys.readouterr().out
    assert "❌ hand_off" in out and "28" in out


def test_a_hand_off_that_writes_into_the_trajectory_is_caught(capsys):
    def in_place(trajectory):
        return _up(trajectory[-1][1].clamp_(-1, 0.5))
    assert check_hand_off(in_place) is hand_off
    assert "writes into its input `trajectory`" in capsys.readouterr().out
