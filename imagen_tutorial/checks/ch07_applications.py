"""Checks for chapter 07 (applications): the inpainting prefix, the bicubic baseline and PSNR.

Each check compares values on fixed seeded inputs and names the common wrong answers; where `compare` could only
say "wrong shape" or "wrong dtype" (floats where levels are needed, a channel axis left in, one number for the
whole batch) a diagnosis says what to change.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import lowres, quantize
from ..metrics import psnr
from .core import Exercise, Mistake, compare, settle

__all__ = ["bicubic_upsample", "check_bicubic_upsample", "check_inpainting_prefix", "check_psnr",
           "inpainting_prefix"]


def _images(n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 28, 28), generator=g).to(torch.uint8)


def _blocky(n: int, seed: int, cells: int) -> Tensor:
    """Black-and-white blocks, cells×cells of them: sharp edges at every scale, where bicubic overshoots."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 2, (n, cells, cells), generator=g) * 255
    k = 28 // cells
    return blocks.repeat_interleave(k, 1).repeat_interleave(k, 2).to(torch.uint8)


# ---------------------------------------------------------------- exercise 1: the inpainting prefix
def inpainting_prefix(images: Tensor, rows: int, levels: int) -> Tensor:
    """The known pixels of an image whose top `rows` rows are kept: uint8 [B, H, W] -> levels [B, rows*W],
    in raster order (what `model.generate(cond, prefix=...)` keeps as given)."""
    return quantize(images[:, :rows], levels).flatten(1)


def _prefix_symptom(got: tuple, expected: tuple, args: tuple) -> Mistake | None:
    out, (images, rows, _) = got[0], args
    if not isinstance(out, Tensor):
        return None
    B, W = images.shape[0], images.shape[-1]
    if out.is_floating_point() or out.dtype == torch.bool:
        return Mistake("prefix-not-levels", f"returned {out.dtype}; the prefix holds levels, integers the model "
                       "embeds: quantize(...) gives a LongTensor")
    if tuple(out.shape) == (B, W * W):
        return Mistake("whole-image", "returned the whole image [B, 784]; the prefix holds only the known pixels, "
                       "the first rows*28 in raster order: [B, rows*28]")
    if tuple(out.shape) == (B, rows, W):
        return Mistake("rows-not-flattened", "returned [B, rows, 28]: flatten the kept rows into one sequence per "
                       "image with .flatten(1) -> [B, rows*28]")
    if tuple(out.shape) == (B * rows * W,):
        return Mistake("batch-flattened", "the batch axis was flattened too: use .flatten(1) (not .flatten()) so "
                       "each image keeps its own prefix [B, rows*28]")
    return None


def check_inpainting_prefix(learner: Callable | None) -> Callable:
    """Check inpainting_prefix(images uint8 [B, 28, 28], rows, levels) -> LongTensor [B, rows*28]."""
    name, reference = "inpainting_prefix", inpainting_prefix
    cases = [(_images(3, seed=0), 14, 16), (_images(2, seed=1), 5, 8), (_images(2, seed=2), 21, 4)]
    mistakes = [
        Mistake("not-quantized", "raw intensities 0..255 instead of levels: quantize the kept rows first",
                lambda x, r, lv: x[:, :r].long().flatten(1)),
        Mistake("bottom-rows", "the bottom rows (the part to fill in) instead of the top rows the model keeps",
                lambda x, r, lv: quantize(x[:, -r:], lv).flatten(1)),
        Mistake("columns-not-rows", "the first columns instead of the first rows (images[:, :, :rows]); raster order "
                "runs along each row", lambda x, r, lv: quantize(x[:, :, :r], lv).flatten(1)),
        Mistake("column-order", "the pixels in column order (the image transposed); raster order reads row after row",
                lambda x, r, lv: quantize(x.transpose(1, 2), lv).flatten(1)[:, : r * x.shape[-1]]),
    ]
    ok = compare(name, learner, reference, cases, mistakes, atol=0, dtype=True, diagnose=_prefix_symptom)
    return settle(name, learner, reference, ok)


# ---------------------------------------------------------------- exercise 2: the bicubic baseline
def bicubic_upsample(low: Tensor, size: int, levels: int) -> Tensor:
    """The no-learning baseline for super-resolution: bicubic interpolation of float [B, 1, s, s] in [0, 1] to
    size×size, clamped to [0, 1] (bicubic overshoots near edges), quantized -> levels [B, size, size]."""
    up = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    return quantize(up.clamp(0, 1)[:, 0], levels)


def _upsample(low: Tensor, size: int, levels: int, mode: str, align_corners: bool | None = None) -> Tensor:
    up = F.interpolate(low, size=(size, size), mode=mode, align_corners=align_corners)
    return quantize(up.clamp(0, 1)[:, 0], levels)


def _bicubic_error(error: BaseException, args: tuple) -> Mistake | None:
    if isinstance(error, ValueError) and "[0, 1]" in str(error):
        return Mistake("no-clamp-before-quantize", "quantize refused values outside [0, 1]: bicubic interpolation "
                       "overshoots near sharp edges, so clamp the upsampled image to [0, 1] first (.clamp(0, 1))")
    return None


def _bicubic_symptom(got: tuple, expected: tuple, args: tuple) -> Mistake | None:
    out, (low, size, levels) = got[0], args
    if not isinstance(out, Tensor):
        return None
    if tuple(out.shape) == (low.shape[0], 1, size, size):
        return Mistake("extra-channel-axis", "returned [B, 1, size, size]: model levels have no channel axis, drop "
                       "it with [:, 0] or .squeeze(1) -> [B, size, size]")
    if out.is_floating_point():
        return Mistake("intensities-not-levels", f"returned {out.dtype} intensities; quantize them to levels "
                       "(quantize(x, levels) -> LongTensor) to compare with the model")
    if out.numel() and (out.min() < 0 or out.max() >= levels):
        return Mistake("no-clamp", f"levels {int(out.min())}..{int(out.max())} fall outside 0..{levels - 1}: no "
                       "clamp? bicubic interpolation overshoots [0, 1] near sharp edges, so clamp(0, 1) before "
                       "quantizing")
    return None


def check_bicubic_upsample(learner: Callable | None) -> Callable:
    """Check bicubic_upsample(low float [B, 1, s, s], size, levels) -> LongTensor [B, size, size]."""
    name, reference = "bicubic_upsample", bicubic_upsample
    cases = [(lowres(_blocky(3, seed=3, cells=7), 7), 28, 16), (lowres(_blocky(2, seed=4, cells=14), 14), 28, 16),
             (lowres(_images(2, seed=5), 7), 28, 4)]
    mistakes = [
        Mistake("bilinear-not-bicubic", "bilinear interpolation instead of bicubic (mode='bicubic')",
                lambda x, s, lv: _upsample(x, s, lv, "bilinear", False)),
        Mistake("nearest-not-bicubic", "nearest-neighbour upsampling (each low-res pixel copied into a block) "
                "instead of bicubic", lambda x, s, lv: _upsample(x, s, lv, "nearest")),
        Mistake("align-corners", "align_corners=True: keep the default False, which treats each low-res pixel as the "
                "centre of a block (the way lowres averaged the blocks)",
                lambda x, s, lv: _upsample(x, s, lv, "bicubic", True)),
    ]
    ok = compare(name, learner, reference, cases, mistakes, atol=0, dtype=True, on_error=_bicubic_error,
                 diagnose=_bicubic_symptom)
    return settle(name, learner, reference, ok)


# ---------------------------------------------------------------- exercise 3: PSNR
def _psnr_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(6)
    a = torch.rand(4, 1, 28, 28, generator=g)
    noise = torch.randn(4, 1, 28, 28, generator=g) * torch.tensor([0.02, 0.05, 0.1, 0.3]).view(4, 1, 1, 1)
    b = (a + noise).clamp(0, 1)
    c = torch.rand(3, 28, 28, generator=g)
    return [(a, b), (c, (c + 0.1).clamp(0, 1)), (b, a)]


def _mse(a: Tensor, b: Tensor) -> Tensor:
    return (a.float() - b.float()).pow(2).flatten(1).mean(1)


def _psnr_symptom(got: tuple, expected: tuple, args: tuple) -> Mistake | None:
    out = got[0]
    if isinstance(out, Tensor) and out.numel() == 1 and expected[0].numel() > 1:
        return Mistake("one-number-per-batch", "returned one number for the whole batch; average the squared error "
                       "over each image's own pixels (.flatten(1).mean(1)) to get one PSNR per image, [B]")
    return None


def check_psnr(learner: Callable | None) -> Callable:
    """Check psnr(a, b): float images [B, ...] in [0, 1] -> PSNR of each image in dB, [B]."""
    name, reference = "psnr", psnr
    mistakes = [
        Mistake("peak-255", "the peak is 255, but these images are in [0, 1] (the peak is 1)",
                lambda a, b: 10 * torch.log10(255**2 / _mse(a, b))),
        Mistake("rmse-inside-10log10", "the root of the MSE inside 10·log10 (half the dB): PSNR = 10·log10(1 / MSE) "
                "= 20·log10(1 / RMSE)", lambda a, b: 10 * torch.log10(1 / _mse(a, b).sqrt())),
        Mistake("20log10-of-mse", "20·log10(1 / MSE) (twice the dB): with the MSE the factor is 10; 20 goes with the "
                "RMSE", lambda a, b: 20 * torch.log10(1 / _mse(a, b))),
        Mistake("natural-log", "the natural log instead of log10 (decibels are 10·log10)",
                lambda a, b: 10 * torch.log(1 / _mse(a, b))),
        Mistake("sign-flipped", "the sign is flipped: 10·log10(MSE) is negative; PSNR is 10·log10(1 / MSE)",
                lambda a, b: 10 * torch.log10(_mse(a, b))),
        Mistake("mae-not-mse", "the mean absolute error instead of the mean squared error inside the log",
                lambda a, b: 10 * torch.log10(1 / (a.float() - b.float()).abs().flatten(1).mean(1))),
    ]
    ok = compare(name, learner, reference, _psnr_cases(), mistakes, atol=1e-3, diagnose=_psnr_symptom)
    return settle(name, learner, reference, ok)


EXERCISES = (Exercise("inpainting_prefix", "my_inpainting_prefix", check_inpainting_prefix),
             Exercise("bicubic_upsample", "my_bicubic_upsample", check_bicubic_upsample),
             Exercise("psnr", "my_psnr", check_psnr))
