"""Checks for chapter 10 (the cascade): noise conditioning augmentation of the super-resolution stage's low-res
input, and the hand-off from the base stage's sampler to the SR stage.

The references are the package's own pieces, as `Denoiser.generate` and `Cascade.generate` use them: the base
stage's sample is its last x̂₀ (in [-1, 1]); the SR stage upsamples it bilinearly to 28×28 and corrupts it by the
same forward process as training, x_t = α(aug)·z + σ(aug)·ε, at a level `aug` that it is also told. Every case has
a batch of at least two images with a different level per image (one level for the whole batch is caught), the
levels 0 and 1 are among them, and the first image's level comes back in a later image.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import diffusion
from .ch09_diffusion import SIGMA_AT_0, _per_image, _q_columns, _q_mistake, alpha_at_1, level_cases
from .core import Exercise, Mistake, compare, end_points, ignores, per_image, settle

__all__ = ["check_noise_augment", "check_hand_off", "noise_augment", "hand_off"]

SIZE = 28  # the SR stage's output side


# ---------------------------------------------------------------- exercise 1: noise conditioning augmentation
def noise_augment(low: Tensor, aug: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
    """The SR stage's noise-augmented low-res input and the level it is told: low [B, 1, H, W] in [-1, 1] (already
    upsampled), aug [B] in [0, 1], noise [B, 1, H, W] -> (α(aug)·low + σ(aug)·noise, aug)."""
    return diffusion.q_sample(low, aug, noise), aug


def _augment_cases() -> list[tuple]:
    # The first batch is 4 images of 4×4 pixels, where a level of shape [4] broadcasts silently along the columns;
    # its first image's level comes back in its third. The end points, 0 (as given) and 1 (pure noise), are in.
    return level_cases(10, [((4, 4), [0.2, 0.0, 0.2, 0.5]), ((3, 6), [0.45, 1.0, 0.05]), ((2, 8), [0.35, 0.15])])


def _augment_mistake(mix: Callable[[Tensor, Tensor, Tensor], Tensor], level: Callable[[Tensor], Tensor] = lambda a: a):
    """A wrong noise_augment: `mix(low, aug [B], noise)` for the image, `level(aug)` for the level told."""
    def wrong(low, aug, noise):
        return mix(low, aug, noise), level(aug)
    return wrong


def _columns(low, aug, noise):  # α(aug), σ(aug) of shape [B] against [B, 1, H, W]: along the columns
    return _q_columns(low, aug, noise), aug


def check_noise_augment(learner: Callable | None) -> Callable:
    """Check noise_augment(low [B, 1, H, W] in [-1, 1], aug [B], noise [B, 1, H, W]) -> (augmented low, level)."""
    mistakes = [
        Mistake("level-told-0", "augmentation at the right levels, but the model is told level 0: it then takes the "
                "noise for detail of the image and copies it into the output; return aug itself as the level",
                _augment_mistake(_q_mistake(), lambda a: torch.zeros_like(a))),
        Mistake("no-augmentation", "no augmentation at all (low returned as it is) while the model is told aug: "
                "apply the forward process, α(aug)·low + σ(aug)·noise", _augment_mistake(lambda low, a, n: low)),
        Mistake("additive-noise", "low + aug·noise: a different noise process from training's (it adds noise without "
                "shrinking the image, so the model sees inputs it never saw); use the forward process, α(aug)·low + "
                "σ(aug)·noise", _augment_mistake(lambda low, a, n: low + _per_image(a, low) * n)),
        Mistake("linear-mix", "(1 − aug)·low + aug·noise: a straight-line mix, a different noise process from "
                "training's cosine schedule; use α(aug) = cos(π·aug/2), σ(aug) = sin(π·aug/2) (diffusion.alpha_sigma)",
                _augment_mistake(lambda low, a, n: (1 - _per_image(a, low)) * low + _per_image(a, low) * n)),
        Mistake("variances-not-stds", "α² and σ² instead of α and σ: those are the variances; the forward process is "
                "α(aug)·low + σ(aug)·noise", _augment_mistake(_q_mistake(a_power=2, s_power=2))),
        Mistake("sigma-squared", "σ² instead of σ on the noise (σ² is the noise's variance): the forward process is "
                "α(aug)·low + σ(aug)·noise", _augment_mistake(_q_mistake(s_power=2))),
        Mistake("alpha-squared", "α² instead of α on the image: the forward process is α(aug)·low + σ(aug)·noise",
                _augment_mistake(_q_mistake(a_power=2))),
        Mistake("one-noise-per-batch", "the same noise image for the whole batch (noise[0]): each image gets its own "
                "ε", _augment_mistake(_q_mistake(one_noise=True))),
        Mistake("one-level-per-batch", "one level for the whole batch (aug[0], or .item()): each image is augmented "
                "at its own level, shape [B]; reshape it to [B, 1, 1, 1] (.view(-1, 1, 1, 1))",
                _augment_mistake(_q_mistake(one_t=True))),
        Mistake("alpha-sigma-swapped", "α and σ swapped: σ(aug)·low + α(aug)·noise is almost pure noise at small "
                "levels — α goes with the image", _augment_mistake(_q_mistake(swap=True))),
        Mistake("level-as-1-minus-aug", "the level as 1 − aug: the model is told the level itself, the t of the "
                "forward process (0 = clean)", _augment_mistake(_q_mistake(), lambda a: 1 - a)),
        Mistake("broadcast-along-columns", "α(aug) and σ(aug) of shape [B] broadcast along the image's last axis "
                "(its columns) instead of per image: reshape them to [B, 1, 1, 1] (alpha.view(-1, 1, 1, 1))",
                _columns),
    ]

    def on_error(error: BaseException, args: tuple) -> Mistake | None:
        if "must match the size of tensor" in str(error):
            return Mistake("schedule-not-reshaped", "α(aug) and σ(aug) have one value per image, shape [B]: reshape "
                           "them to [B, 1, 1, 1]")
        return None

    ends = {"aug": {1.0: alpha_at_1("at level 1", "·aug"), 0.0: SIGMA_AT_0}}
    probes = [ignores("noise"), end_points(ends), per_image("aug")]
    ok = compare("noise_augment", learner, noise_augment, _augment_cases(), mistakes, outputs=("image", "level"),
                 on_error=on_error, probes=probes)
    return settle("noise_augment", learner, noise_augment, ok)


# ---------------------------------------------------------------- exercise 2: the hand-off
def hand_off(trajectory: list[tuple[Tensor, Tensor]]) -> Tensor:
    """The SR stage's low-res input from the base stage's sampling trajectory, a list of (x_t, x̂₀) per step (x_t
    the noisy image, x̂₀ the thresholded guess in [-1, 1]): the sample is the last step's x̂₀, upsampled bilinearly
    to 28×28 and kept in [-1, 1]."""
    sample = trajectory[-1][1]
    return F.interpolate(sample, size=SIZE, mode="bilinear", align_corners=False)


def _hand_off_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(11)
    cases = []
    for b, steps in [(2, 3), (3, 4), (4, 2)]:  # (x_t, x̂₀) pairs as a sampler leaves them: x̂₀ within [-1, 1]
        trajectory = [(torch.randn(b, 1, 14, 14, generator=g), torch.rand(b, 1, 14, 14, generator=g) * 2 - 1)
                      for _ in range(steps)]
        cases.append((trajectory,))
    return cases


def _up(x: Tensor, mode: str = "bilinear", align_corners: bool | None = False) -> Tensor:
    return F.interpolate(x, size=SIZE, mode=mode, align_corners=None if mode == "nearest" else align_corners)


def check_hand_off(learner: Callable | None) -> Callable:
    """Check hand_off(trajectory) -> the SR stage's low-res input [B, 1, 28, 28] in [-1, 1]."""
    mistakes = [
        Mistake("last-x-t", "the wrong tensor upsampled: the last step's x_t, the noisy image that step started "
                "from; the sample is that step's x̂₀, trajectory[-1][1]", lambda tr: _up(tr[-1][0])),
        Mistake("first-x0", "the wrong tensor upsampled: the first step's x̂₀, the model's guess from pure noise; "
                "the sample is the last step's, trajectory[-1][1]", lambda tr: _up(tr[0][1])),
        Mistake("second-to-last-x0", "the wrong tensor upsampled: the second-to-last step's x̂₀ (trajectory[-2]); "
                "the last pair is trajectory[-1], and its x̂₀, trajectory[-1][1], is the sample",
                lambda tr: _up(tr[-2][1])),
        Mistake("second-to-last-x-t", "the wrong tensor upsampled: the second-to-last step's x_t "
                "(trajectory[-2][0]); the sample is the last step's x̂₀, trajectory[-1][1]",
                lambda tr: _up(tr[-2][0])),
        Mistake("moved-to-0-1", "the sample moved to [0, 1] ((x + 1) / 2): that is the range generate() returns to "
                "you, but the SR network reads its low-res channel in [-1, 1], as in training",
                lambda tr: _up((tr[-1][1] + 1) / 2)),
        Mistake("mapped-twice", "the sample mapped from [0, 1] to [-1, 1] again (2x − 1): the trajectory's x̂₀ is "
                "already in [-1, 1]", lambda tr: _up(2 * tr[-1][1] - 1)),
        Mistake("nearest-upsampling", "nearest-neighbour upsampling: the SR stage was trained on bilinear upsampling "
                "(mode='bilinear', align_corners=False), and blocky inputs are not what it learned to sharpen",
                lambda tr: _up(tr[-1][1], "nearest")),
        Mistake("bicubic-upsampling", "bicubic upsampling: the SR stage was trained on bilinear (mode='bilinear', "
                "align_corners=False)", lambda tr: _up(tr[-1][1], "bicubic")),
        Mistake("align-corners", "align_corners=True: the SR stage was trained with align_corners=False, which puts "
                "the pixel centres elsewhere", lambda tr: _up(tr[-1][1], align_corners=True)),
    ]

    def on_error(error: BaseException, args: tuple) -> Mistake | None:
        if "tuple" in str(error) or "list" in str(error):
            return Mistake("trajectory-pairs", "trajectory is a list of (x_t, x̂₀) pairs: trajectory[-1] is the last "
                           "pair, trajectory[-1][1] its x̂₀")
        return None

    ok = compare("hand_off", learner, hand_off, _hand_off_cases(), mistakes, on_error=on_error,
                 arg_names=("trajectory",))
    return settle("hand_off", learner, hand_off, ok)


EXERCISES = (Exercise("noise_augment", "my_noise_augment", check_noise_augment),
             Exercise("hand_off", "my_hand_off", check_hand_off))
