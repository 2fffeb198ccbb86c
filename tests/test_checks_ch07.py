"""Chapter 07 checks accept a right answer, name the known mistakes, and fall back to the reference."""

import pytest
import torch
import torch.nn.functional as F

from imagen_tutorial.checks import (
    bicubic_upsample,
    check_bicubic_upsample,
    check_inpainting_prefix,
    check_psnr,
    inpainting_prefix,
)
from imagen_tutorial.data import mask_below, quantize
from imagen_tutorial.metrics import psnr

REFERENCE = "continuing with the reference implementation"


def my_inpainting_prefix(images, rows, levels):
    q = quantize(images, levels)             # (B, H, W)
    return q[:, :rows, :].reshape(len(q), -1)


def my_bicubic_upsample(low, size, levels):
    up = F.interpolate(low, scale_factor=size // low.shape[-1], mode="bicubic")
    return quantize(up.clamp(0, 1).squeeze(1), levels)


def my_psnr(a, b):
    mse = ((a - b) ** 2).mean(dim=tuple(range(1, a.dim())))
    return 10 * torch.log10(1 / mse)


def blank(*args):
    raise NotImplementedError("Exercise 1: write my_fn")


@pytest.mark.parametrize("check, mine, name, cases", [
    (check_inpainting_prefix, my_inpainting_prefix, "inpainting_prefix", 3),
    (check_bicubic_upsample, my_bicubic_upsample, "bicubic_upsample", 3),
    (check_psnr, my_psnr, "psnr", 3),
])
def test_correct_answer_is_kept(capsys, check, mine, name, cases):
    assert check(mine) is mine
    assert capsys.readouterr().out.strip() == f"✅ {name}: matches the reference on {cases} cases"


@pytest.mark.parametrize("check, reference, name", [
    (check_inpainting_prefix, inpainting_prefix, "inpainting_prefix"),
    (check_bicubic_upsample, bicubic_upsample, "bicubic_upsample"),
    (check_psnr, psnr, "psnr"),
])
def test_blank_is_not_attempted_and_reference_is_noticed(capsys, check, reference, name):
    assert check(blank) is reference
    assert check(None) is reference
    assert capsys.readouterr().out.count(f"➖ {name}: not attempted — {REFERENCE}") == 2
    assert check(reference) is reference
    assert "this is the reference implementation" in capsys.readouterr().out


def _verdict(capsys, check, wrong, reference, name, message):
    assert check(wrong) is reference
    out = capsys.readouterr().out
    assert out.startswith(f"❌ {name}: ") and message in out and REFERENCE in out, out


@pytest.mark.parametrize("wrong, message", [
    (lambda x, r, lv: x[:, :r].long().flatten(1), "raw intensities 0..255 instead of levels"),
    (lambda x, r, lv: quantize(x, lv)[:, x.shape[1] - r:].flatten(1), "the bottom rows"),
    (lambda x, r, lv: quantize(x, lv)[:, :, :r].flatten(1), "the first columns instead of the first rows"),
    (lambda x, r, lv: quantize(x, lv).mT.flatten(1)[:, : r * 28], "column order"),
    (lambda x, r, lv: quantize(x[:, :r], lv).flatten(1).float(), "returned torch.float32"),
    (lambda x, r, lv: quantize(mask_below(x, r), lv).flatten(1), "returned the whole image [B, 784]"),
    (lambda x, r, lv: quantize(x[:, :r], lv), "returned [B, rows, 28]"),
    (lambda x, r, lv: quantize(x[:, :r], lv).flatten(), "the batch axis was flattened too"),
    (lambda x, r, lv: quantize(x[:, : r + 1], lv).flatten(1), "returned (3, 420), expected shape (3, 392)"),
])
def test_inpainting_prefix_mistakes_are_named(capsys, wrong, message):
    _verdict(capsys, check_inpainting_prefix, wrong, inpainting_prefix, "inpainting_prefix", message)


def _up(low, size, mode, **kw):
    return F.interpolate(low, size=(size, size), mode=mode, **kw)


@pytest.mark.parametrize("wrong, message", [
    (lambda x, s, lv: quantize(_up(x, s, "bilinear").clamp(0, 1)[:, 0], lv), "bilinear interpolation"),
    (lambda x, s, lv: quantize(_up(x, s, "nearest")[:, 0], lv), "nearest-neighbour upsampling"),
    (lambda x, s, lv: quantize(_up(x, s, "bicubic", align_corners=True).clamp(0, 1)[:, 0], lv), "align_corners=True"),
    (lambda x, s, lv: (_up(x, s, "bicubic")[:, 0] * lv).floor().long(), "fall outside 0..15: no clamp?"),
    (lambda x, s, lv: quantize(_up(x, s, "bicubic")[:, 0], lv), "quantize refused values outside [0, 1]"),
    (lambda x, s, lv: quantize(_up(x, s, "bicubic").clamp(0, 1), lv), "returned [B, 1, size, size]"),
    (lambda x, s, lv: _up(x, s, "bicubic").clamp(0, 1)[:, 0], "returned torch.float32 intensities"),
])
def test_bicubic_mistakes_are_named(capsys, wrong, message):
    _verdict(capsys, check_bicubic_upsample, wrong, bicubic_upsample, "bicubic_upsample", message)


def _mse(a, b):
    return ((a - b) ** 2).flatten(1).mean(1)


@pytest.mark.parametrize("wrong, message", [
    (lambda a, b: 10 * torch.log10(1 / ((a - b) ** 2).mean()), "one number for the whole batch"),
    (lambda a, b: 20 * torch.log10(255 / _mse(a, b).sqrt()), "the peak is 255"),
    (lambda a, b: 20 * torch.log10(1 / _mse(a, b).sqrt().sqrt()), "the root of the MSE"),
    (lambda a, b: 20 * torch.log10(1 / _mse(a, b)), "20·log10(1 / MSE)"),
    (lambda a, b: 10 * torch.log10(1 / (a - b).abs().flatten(1).mean(1)), "the mean absolute error"),
    (lambda a, b: 10 * torch.log10(1 / ((a - b) ** 2).flatten(1).mean(1)) + 1, "values differ from the reference"),
    (lambda a, b: 10 * torch.log(1 / _mse(a, b)), "the natural log"),
    (lambda a, b: 10 * torch.log10(_mse(a, b)), "the sign is flipped"),
])
def test_psnr_mistakes_are_named(capsys, wrong, message):
    _verdict(capsys, check_psnr, wrong, psnr, "psnr", message)



def test_another_way_of_writing_psnr_is_right(capsys):
    def via_rmse(a, b):
        return 20 * torch.log10(1 / _mse(a, b).sqrt())

    assert check_psnr(via_rmse) is via_rmse
    assert "✅ psnr" in capsys.readouterr().out


def test_an_inpainting_prefix_that_writes_into_the_images_is_caught(capsys):
    def in_place(images, rows, levels):
        images[:, rows:] = 0  # blanks the caller's images
        return quantize(images[:, :rows], levels).flatten(1)

    assert check_inpainting_prefix(in_place) is inpainting_prefix
    assert "it writes into its input `images`" in capsys.readouterr().out


@pytest.mark.parametrize("check, answer", [
    (check_inpainting_prefix, lambda x, r, lv: quantize(x, lv).flatten(1)[:, : r * x.shape[-1]]),
    (check_bicubic_upsample, lambda low, s, lv: quantize(F.interpolate(low, size=s, mode="bicubic")
                                                         .clamp(0, 1).squeeze(1), lv)),
    (check_psnr, lambda a, b: -10 * torch.log10(F.mse_loss(a, b, reduction="none").flatten(1).mean(1))),
], ids=["prefix-of-the-flat-image", "bicubic-with-size", "mse-loss"])
def test_valid_alternatives_pass(capsys, check, answer):
    assert check(answer) is answer
    assert "✅" in capsys.readouterr().out
