"""Checks for chapter 00 (setup and data): quantization, the low-resolution condition and Sobel edges.

Besides comparing values, these checks look at one output first for mistakes `compare` cannot name by value:
levels returned as floats, a uint8 product that overflows, a missing channel axis, arithmetic on uint8 images.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..data import lowres, quantize, sobel_edges, to_float
from .core import REFERENCE, compare

__all__ = ["check_lowres", "check_quantize", "check_sobel_edges"]


def _images(n: int, seed: int, high: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (n, 28, 28), generator=g).to(torch.uint8)


def _first_output(learner: Callable, args: tuple):
    """The learner's output on one case, or the exception it raised (NotImplementedError is left to compare)."""
    try:
        return learner(*args)
    except NotImplementedError as error:  # a blank exercise, unless it is torch refusing an op on uint8
        return error if "not implemented for 'Byte'" in str(error) else None
    except Exception as error:  # compare runs it again and reports it
        return error


def _fail(reference: Callable, message: str) -> Callable:
    """Print a ❌ verdict in compare's words and hand back the reference."""
    print(f"❌ {reference.__name__}: {message} — {REFERENCE}")
    return reference


def _uint8_arithmetic(out) -> bool:
    """True if the learner raised torch's complaint about doing float work on uint8 ('Byte') images."""
    return isinstance(out, Exception) and "Byte" in str(out)


# ---------------------------------------------------------------- Exercise 1: quantize
def _quantize_cases() -> list[tuple]:
    every_intensity = torch.arange(256).to(torch.uint8).view(1, 16, 16)
    return [(every_intensity, 2), (every_intensity, 4), (every_intensity, 16), (every_intensity, 256),
            (_images(2, seed=0), 16)]


def check_quantize(learner: Callable | None) -> Callable:
    """Check quantize(x, levels): uint8 images [...] -> LongTensor levels (x * levels) // 256, same shape."""
    cases = _quantize_cases()
    out = _first_output(learner, cases[1]) if learner is not None else None
    if isinstance(out, Exception) and "ZeroDivisionError" in str(out):
        return _fail(quantize, "x * levels // 256 was computed in uint8, where 256 is 0 (ZeroDivisionError) "
                                 "and x * levels wraps around past 255; convert first: x.long() * levels")
    if isinstance(out, torch.Tensor) and out.shape == cases[1][0].shape and out.dtype != torch.long:
        return _fail(quantize, f"returned {out.dtype}; levels are integer class labels for the softmax: "
                                 "return a LongTensor (torch.long), e.g. x.long() * levels // 256")
    mistakes = {
        "x * levels computed in uint8 (it wraps around past 255): convert with x.long() first":
            lambda x, levels: (x * levels).long() // 256,
        "round(x / 255 * (levels - 1)) (nearest of evenly spaced values) instead of the floor bins "
        "(x * levels) // 256": lambda x, levels: (x.float() / 255 * (levels - 1)).round().long(),
    }
    ok = compare("quantize", learner, quantize, cases, mistakes, atol=0)
    return learner if ok else quantize


# ---------------------------------------------------------------- Exercise 2: lowres
def _lowres_cases() -> list[tuple]:
    return [(_images(3, seed=1), 7), (_images(3, seed=2), 14), (_images(2, seed=3), 4)]


def _subsample(x: torch.Tensor, size: int, offset: int) -> torch.Tensor:
    k = x.shape[-1] // size
    return to_float(x)[..., offset * (k // 2) :: k, offset * (k // 2) :: k]


def check_lowres(learner: Callable | None) -> Callable:
    """Check lowres(images, size): uint8 [B, 28, 28] -> float [B, 1, size, size] in [0, 1], block means."""
    cases = _lowres_cases()
    out = _first_output(learner, cases[0]) if learner is not None else None
    if _uint8_arithmetic(out):
        return _fail(lowres, f"{type(out).__name__} from arithmetic on the uint8 images ({out}); "
                               "convert them first: images.float() / 255")
    images, size = cases[0]
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (images.shape[0], size, size):
        return _fail(lowres, f"returned {tuple(out.shape)}: the channel axis is missing; image encoders "
                               f"read [B, 1, size, size], add it with .unsqueeze(1)")
    mistakes = {
        "the intensities are not scaled by 1/255 (values in [0, 255], expected [0, 1])":
            lambda x, size: lowres(x, size) * 255,
        "every k-th pixel (subsampling) instead of the mean of each k×k block": lambda x, s: _subsample(x, s, 0),
        "the centre pixel of each k×k block (subsampling) instead of the block's mean":
            lambda x, s: _subsample(x, s, 1),
    }
    ok = compare("lowres", learner, lowres, cases, mistakes)
    return learner if ok else lowres


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


def check_sobel_edges(learner: Callable | None) -> Callable:
    """Check sobel_edges(images): uint8 [B, H, W] -> float [B, 1, H, W], gradient magnitude, each image max 1."""
    cases = _sobel_cases()
    out = _first_output(learner, cases[0]) if learner is not None else None
    if _uint8_arithmetic(out):
        return _fail(sobel_edges, f"{type(out).__name__} from arithmetic on the uint8 images ({out}); "
                                    "convert them first: images.float() / 255")
    images = cases[0][0]
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (images.shape[0], 1, 26, 26):
        return _fail(sobel_edges, "returned (B, 1, 26, 26): the convolution needs padding=1 to keep 28×28")
    mistakes = {
        "only the x derivative (vertical edges only; the y kernel is gx.T)":
            lambda x: _per_image_max(_sobel_parts(x)[0].abs()),
        "|gx| + |gy| instead of the magnitude sqrt(gx² + gy²)":
            lambda x: _per_image_max(sum(g.abs() for g in _sobel_parts(x))),
        "the magnitude divided by the whole batch's maximum instead of each image's own maximum":
            lambda x: _magnitude(x) / _magnitude(x).max(),
        "the magnitude is not scaled (each image's maximum should be 1)": _magnitude,
    }
    ok = compare("sobel_edges", learner, sobel_edges, cases, mistakes)
    return learner if ok else sobel_edges
