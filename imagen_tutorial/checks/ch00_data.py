"""Checks for chapter 00 (setup and data): quantization, the low-resolution condition and Sobel edges.

Besides the mistakes named by value, the checks name what `compare` would only call a wrong dtype, shape or error:
levels returned as floats, a uint8 product that overflows, a missing channel axis, arithmetic on uint8 images.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..data import lowres, quantize, sobel_edges, to_float
from .core import Exercise, Mistake, compare, settle

__all__ = ["check_lowres", "check_quantize", "check_sobel_edges"]


def _images(n: int, seed: int, high: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (n, 28, 28), generator=g).to(torch.uint8)


def _uint8_hint(error: BaseException, args: tuple) -> Mistake | None:
    """torch refuses float work (pooling, convolution, division into floats) on uint8 ('Byte') images."""
    if "Byte" in str(error):
        return Mistake("uint8-arithmetic", "that is arithmetic on the uint8 images; convert them first: "
                       "images.float() / 255")
    return None


# ---------------------------------------------------------------- Exercise 1: quantize
def _quantize_cases() -> list[tuple]:
    every_intensity = torch.arange(256).to(torch.uint8).view(1, 16, 16)
    return [(every_intensity, 2), (every_intensity, 4), (every_intensity, 16), (every_intensity, 256),
            (_images(2, seed=0), 16)]


def _quantize_error(error: BaseException, args: tuple) -> Mistake | None:
    if "ZeroDivisionError" in f"{type(error).__name__} {error}":
        return Mistake("uint8-overflow", "x * levels // 256 was computed in uint8, where 256 is 0 "
                       "(ZeroDivisionError) and x * levels wraps around past 255; convert first: x.long() * levels")
    return None


def _quantize_symptom(got: tuple, expected: tuple, args: tuple) -> Mistake | None:
    out, levels = got[0], args[1]
    if isinstance(out, torch.Tensor) and out.shape == expected[0].shape and out.dtype != torch.long:
        return Mistake("levels-not-long", f"returned {out.dtype}; levels are integer class labels for the softmax: "
                       f"return a LongTensor (torch.long), e.g. x.long() * levels // 256")
    if isinstance(out, torch.Tensor) and out.numel() and (out.min() < 0 or out.max() >= levels):
        return Mistake("levels-out-of-range", f"levels {int(out.min())}..{int(out.max())} fall outside "
                       f"0..{levels - 1}")
    return None


def check_quantize(learner: Callable | None) -> Callable:
    """Check quantize(x, levels): uint8 images [...] -> LongTensor levels (x * levels) // 256, same shape."""
    mistakes = [
        Mistake("uint8-overflow", "x * levels computed in uint8 (it wraps around past 255): convert with x.long() "
                "first", lambda x, levels: (x * levels).long() // 256),
        Mistake("round-instead-of-floor", "round(x / 255 * (levels - 1)) (nearest of evenly spaced values) instead "
                "of the floor bins (x * levels) // 256",
                lambda x, levels: (x.float() / 255 * (levels - 1)).round().long()),
        Mistake("divide-by-255", "x / 255 * levels: a white pixel (255) becomes level `levels`, one past the last; "
                "the bins are 256 / levels intensities wide: (x.long() * levels) // 256",
                lambda x, levels: (x.float() / 255 * levels).long()),
    ]
    ok = compare("quantize", learner, quantize, _quantize_cases(), mistakes, atol=0, dtype=True,
                 on_error=_quantize_error, diagnose=_quantize_symptom)
    return settle("quantize", learner, quantize, ok)


# ---------------------------------------------------------------- Exercise 2: lowres
def _lowres_cases() -> list[tuple]:
    return [(_images(3, seed=1), 7), (_images(3, seed=2), 14), (_images(2, seed=3), 4)]


def _subsample(x: torch.Tensor, size: int, offset: int) -> torch.Tensor:
    k = x.shape[-1] // size
    return to_float(x)[..., offset * (k // 2) :: k, offset * (k // 2) :: k]


def _lowres_symptom(got: tuple, expected: tuple, args: tuple) -> Mistake | None:
    images, size = args
    out = got[0]
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (images.shape[0], size, size):
        return Mistake("no-channel-axis", f"returned {tuple(out.shape)}: the channel axis is missing; image "
                       f"encoders read [B, 1, size, size], add it with .unsqueeze(1)")
    return None


def check_lowres(learner: Callable | None) -> Callable:
    """Check lowres(images, size): uint8 [B, 28, 28] -> float [B, 1, size, size] in [0, 1], block means."""
    mistakes = [
        Mistake("not-scaled-to-1", "the intensities are not scaled by 1/255 (values in [0, 255], expected [0, 1])",
                lambda x, size: lowres(x, size) * 255),
        Mistake("divide-by-256", "intensities divided by 256 instead of 255 (white becomes 0.996, not 1)",
                lambda x, size: lowres(x, size) * 255 / 256),
        Mistake("subsample-corner", "every k-th pixel (subsampling) instead of the mean of each k×k block",
                lambda x, s: _subsample(x, s, 0)),
        Mistake("subsample-centre", "the centre pixel of each k×k block (subsampling) instead of the block's mean",
                lambda x, s: _subsample(x, s, 1)),
        Mistake("bilinear-not-area", "bilinear interpolation, which reads a few pixels between blocks instead of "
                "averaging each k×k block: use F.avg_pool2d(x, k) or F.interpolate(..., mode='area')",
                lambda x, s: F.interpolate(to_float(x), size=(s, s), mode="bilinear", align_corners=False)),
    ]
    ok = compare("lowres", learner, lowres, _lowres_cases(), mistakes, dtype=True, on_error=_uint8_hint,
                 diagnose=_lowres_symptom)
    return settle("lowres", learner, lowres, ok)


# ---------------------------------------------------------------- Exercise 3 (optional): sobel_edges
def _sobel_cases() -> list[tuple]:
    square = torch.zeros(1, 28, 28, dtype=torch.uint8)
    square[:, 8:20, 10:18] = 200
    faint = _images(1, seed=4, high=60)  # a low-contrast image: its own maximum is far below the batch's
    return [(torch.cat([_images(2, seed=5), faint, square]),), (square,)]


def _sobel_parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    grad = F.conv2d(to_float(x), torch.stack([gx, gx.T])[:, None], padding=1)
    return grad[:, :1], grad[:, 1:]


def _magnitude(x: torch.Tensor) -> torch.Tensor:
    gx, gy = _sobel_parts(x)
    return (gx**2 + gy**2).sqrt()


def _per_image_max(m: torch.Tensor) -> torch.Tensor:
    return m / m.amax(dim=(2, 3), keepdim=True).clamp_min(1e-8)


def _sobel_symptom(got: tuple, expected: tuple, args: tuple) -> Mistake | None:
    out, images = got[0], args[0]
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (images.shape[0], 1, 26, 26):
        return Mistake("no-padding", "returned (B, 1, 26, 26): the convolution needs padding=1 to keep 28×28")
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (images.shape[0], 28, 28):
        return Mistake("no-channel-axis", "returned (B, 28, 28): the channel axis is missing; edge maps are "
                       "[B, 1, H, W] (.unsqueeze(1))")
    return None


def _replicate_border(x: torch.Tensor) -> torch.Tensor:
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    grad = F.conv2d(F.pad(to_float(x), (1, 1, 1, 1), mode="replicate"), torch.stack([gx, gx.T])[:, None])
    return _per_image_max(grad.pow(2).sum(1, keepdim=True).sqrt())


def check_sobel_edges(learner: Callable | None) -> Callable:
    """Check sobel_edges(images): uint8 [B, H, W] -> float [B, 1, H, W], gradient magnitude, each image max 1."""
    mistakes = [
        Mistake("x-derivative-only", "only the x derivative (vertical edges only; the y kernel is gx.T)",
                lambda x: _per_image_max(_sobel_parts(x)[0].abs())),
        Mistake("abs-sum-not-magnitude", "|gx| + |gy| instead of the magnitude sqrt(gx² + gy²)",
                lambda x: _per_image_max(sum(g.abs() for g in _sobel_parts(x)))),
        Mistake("squared-magnitude", "the squared magnitude gx² + gy² (take its square root)",
                lambda x: _per_image_max(sum(g**2 for g in _sobel_parts(x)))),
        Mistake("batch-max", "the magnitude divided by the whole batch's maximum instead of each image's own maximum",
                lambda x: _magnitude(x) / _magnitude(x).max()),
        Mistake("not-normalised", "the magnitude is not scaled (each image's maximum should be 1)", _magnitude),
        Mistake("replicate-padding", "the border padded by repeating the edge pixels; conv2d(..., padding=1) pads "
                "with zeros, as the reference does", _replicate_border),
    ]
    ok = compare("sobel_edges", learner, sobel_edges, _sobel_cases(), mistakes, dtype=True, on_error=_uint8_hint,
                 diagnose=_sobel_symptom)
    return settle("sobel_edges", learner, sobel_edges, ok)


EXERCISES = (Exercise("quantize", "my_quantize", check_quantize), Exercise("lowres", "my_lowres", check_lowres),
             Exercise("sobel_edges", "my_sobel_edges", check_sobel_edges))
