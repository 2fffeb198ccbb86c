"""Imagen in miniature: a cascade of two text-conditioned diffusion models, 14×14 then 28×28.

The base model draws a small image from the caption; the super-resolution stage reads that image (upsampled,
noise-augmented at `aug_level`, concatenated to its own noisy input) and the caption again, and draws the
full-size image. Imagen does the same with 64 → 256 → 1024 (chapter 10).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from . import diffusion
from .config import check_sampling_args
from .denoiser import Denoiser

# The cascade's guidance (base, SR) unless told otherwise: the best Fréchet distance measured, with near-best judge
# accuracy (README "Results", 500 samples: 106.6 and 0.956 at (1.5, 3); 148.7 and 0.916 at (1.5, 1); 162.6 and
# 0.960 at (3, 3)). Guiding the SR stage too, as Imagen does, doubles its cost per step.
DEFAULT_GUIDANCE = (1.5, 3.0)
# The noise the SR stage lays on the base's image unless told otherwise (Imagen: 0.1–0.3 for its 64 → 256 stage).
# A cascade's manifest entry can name its own: the scenes cascade keeps more of its base stage's drawings without it
# (bench/scenes_sr_settings.py).
DEFAULT_AUG_LEVEL = 0.2


def _pair(value, name: str) -> tuple:
    """One value for both stages, or a (base, sr) pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be one value or a (base, sr) pair; got {len(value)} values")
        return tuple(value)
    return value, value


class Cascade(nn.Module):
    """A caption → image base model followed by a super-resolution model: 14×14 → 28×28 for single garments,
    14×28 → 28×56 for Part III's scenes. `guidance` and `aug_level` are what `generate` uses unless told
    otherwise."""

    def __init__(self, base: Denoiser, sr: Denoiser, guidance=DEFAULT_GUIDANCE,
                 aug_level: float = DEFAULT_AUG_LEVEL) -> None:
        super().__init__()
        for stage, model, condition in (("base", base, "caption"), ("sr", sr, "caption_lowres")):
            if not isinstance(model, Denoiser):
                raise ValueError(f"the cascade's {stage} stage must be a diffusion model (Denoiser), not "
                                 f"{type(model).__name__}: pick a diffusion checkpoint, such as the shipped "
                                 f"'diffusion_{stage}'")
            if model.config.condition != condition:
                raise ValueError(f"the cascade's {stage} stage must read condition={condition!r}; this model reads "
                                 f"{model.config.condition!r}")
        if sr.config.cond_shape != base.config.image_shape or sr.config.vocabulary != base.config.vocabulary:
            raise ValueError(f"the SR stage reads {'×'.join(map(str, sr.config.cond_shape))} images of "
                             f"{sr.config.vocabulary!r} captions but the base draws "
                             f"{'×'.join(map(str, base.config.image_shape))} images of {base.config.vocabulary!r} "
                             f"captions: pick matching stages")
        self.base, self.sr, self.guidance = base, sr, _pair(guidance, "guidance")
        self.aug_level = check_sampling_args(aug_level=aug_level)["aug_level"]
        self.config = sr.config  # the output's size and the levels it is judged at

    @classmethod
    def from_checkpoints(cls, base: str | Path, sr: str | Path, device: str | torch.device = "cpu") -> Cascade:
        """Build a cascade from two checkpoint files (an autoregressive checkpoint is refused, with why)."""
        from .checkpoint import load_model

        return cls(load_model(base, device, family="diffusion"), load_model(sr, device, family="diffusion"))

    def num_params(self) -> int:
        return self.base.num_params() + self.sr.num_params()

    @torch.no_grad()
    def generate(self, captions: str | Sequence[str], guidance=None, steps=(50, 50), aug_level: float | None = None,
                 sampler="ddim", threshold=diffusion.DEFAULT_THRESHOLD, generator: torch.Generator | None = None,
                 return_lowres: bool = False, trajectory: list | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """Captions -> float images [B, 1, H, W] in [0, 1] (and the base stage's [B, 1, H/2, W/2] with
        return_lowres). guidance, steps, sampler and threshold take one value for both stages or a (base, sr)
        pair (guidance=None: the cascade's own, `self.guidance`); aug_level is the SR stage's noise augmentation
        level (None: the cascade's own, `self.aug_level`). trajectory: a list that
        receives (x_t, x̂₀) at every step of the base stage, then of the SR stage."""
        guidance, steps = _pair(self.guidance if guidance is None else guidance, "guidance"), _pair(steps, "steps")
        aug_level = self.aug_level if aug_level is None else aug_level
        sampler, threshold = _pair(sampler, "sampler"), _pair(threshold, "threshold")
        for stage in (0, 1):  # both stages' arguments before the base stage spends its time sampling
            check_sampling_args(steps=steps[stage], guidance=guidance[stage], sampler=sampler[stage],
                                threshold=threshold[stage], **({"aug_level": aug_level} if stage else {}))
        low = self.base.generate(captions, steps=steps[0], guidance=guidance[0], sampler=sampler[0],
                                 threshold=threshold[0], generator=generator, trajectory=trajectory)
        high = self.sr.generate(captions, lowres=low, aug_level=aug_level, steps=steps[1], guidance=guidance[1],
                                sampler=sampler[1], threshold=threshold[1], generator=generator,
                                trajectory=trajectory)
        return (high, low) if return_lowres else high
