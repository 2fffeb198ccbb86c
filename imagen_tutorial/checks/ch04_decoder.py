"""Checks for chapter 04 (the autoregressive decoder): shift-by-one, bits per dimension, the slow sampler."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import ModelConfig
from ..model import ImageTransformer
from .core import compare, reference_given

__all__ = ["check_bits_per_dim", "check_sample_loop", "check_shift_right"]


# ---------------------------------------------------------------- exercise 1: shift-by-one
def shift_right(pixels: Tensor, start_token: int) -> Tensor:
    """Pixels [B, T] -> decoder inputs [B, T]: the start token, then pixels 0..T-2 (as PixelDecoder.shift_right)."""
    start = torch.full_like(pixels[:, :1], start_token)
    return torch.cat([start, pixels[:, :-1]], dim=1)


def check_shift_right(learner: Callable | None) -> Callable:
    """Check shift_right(pixels [B, T], start_token) -> [B, T]."""
    g = torch.Generator().manual_seed(0)
    cases = [(torch.randint(0, 16, (2, 7), generator=g), 16), (torch.randint(0, 4, (3, 5), generator=g), 4),
             (torch.randint(0, 8, (1, 1), generator=g), 8)]

    def start(p, s):
        return torch.full_like(p[:, :1], s)

    mistakes = {
        "no shift: the input equals the target, so the model could copy the answer": lambda p, s: p.clone(),
        "a left shift (position t holds pixel t+1, the future) with the start token at the end":
            lambda p, s: torch.cat([p[:, 1:], start(p, s)], 1),
        "pixels 0..T-2 with the start token appended at the end instead of put first":
            lambda p, s: torch.cat([p[:, :-1], start(p, s)], 1),
        "a roll: the last pixel wraps round to position 0 where the start token belongs":
            lambda p, s: torch.roll(p, 1, dims=1),
    }
    ok = compare("shift_right", learner, shift_right, cases, mistakes, atol=0)
    return learner if ok else shift_right


# ---------------------------------------------------------------- exercise 2: bits per dimension
def bits_per_dim(logits: Tensor, targets: Tensor) -> Tensor:
    """logits [B, T, levels], targets LongTensor [B, T] -> bits per pixel [B] (as ImageTransformer.bits_per_dim)."""
    nats = F.cross_entropy(logits.transpose(1, 2).float(), targets, reduction="none")  # (B, T)
    return nats.mean(dim=1) / math.log(2)


def check_bits_per_dim(learner: Callable | None) -> Callable:
    """Check bits_per_dim(logits [B, T, levels], targets [B, T]) -> [B]."""
    g = torch.Generator().manual_seed(0)
    cases = [(torch.randn(3, 10, 16, generator=g) * 2, torch.randint(0, 16, (3, 10), generator=g)),
             (torch.randn(2, 36, 5, generator=g), torch.randint(0, 5, (2, 36), generator=g))]

    def nats(logits, targets):
        return F.cross_entropy(logits.transpose(1, 2).float(), targets, reduction="none")  # (B, T)

    mistakes = {
        "nats, not bits (divide the mean cross-entropy by ln 2)": lambda lg, t: nats(lg, t).mean(1),
        "bits summed over the pixels instead of averaged (per image, not per dimension)":
            lambda lg, t: nats(lg, t).sum(1) / math.log(2),
        "a result divided by log2(levels) (normalised by the uniform baseline) instead of by ln 2":
            lambda lg, t: nats(lg, t).mean(1) / math.log2(lg.size(-1)),
    }
    ok = compare("bits_per_dim", learner, bits_per_dim, cases, mistakes)
    return learner if ok else bits_per_dim


# ---------------------------------------------------------------- exercise 3: the slow sampler
def sample_loop(model: ImageTransformer, cond: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The package's sampler without a cache: model.generate(cond, use_cache=False) -> levels [B, H, W]."""
    return model.generate(cond, use_cache=False, generator=generator)


def _check_model() -> ImageTransformer:
    """A tiny 5×5 model with large random weights, so that its predictions depend strongly on the input
    (an untrained model is so close to uniform that a wrong sampler would often draw the same levels)."""
    with torch.random.fork_rng(devices=[]):  # leave the notebook's random state alone
        torch.manual_seed(0)
        model = ImageTransformer(ModelConfig(image_size=5, levels=8, d_model=32, n_heads=4, n_layers=2,
                                             n_enc_layers=1))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() > 1:
                    p.normal_(0, 0.5 if "emb" in name or "head" in name else 0.2)
    return model.eval()


def _unshifted(model, cond, generator):
    B, T = cond.size(0), model.config.seq_len
    memory, mask = model.encode(cond)
    out = torch.zeros(B, T, dtype=torch.long)
    for t in range(T):
        logits = model.decoder(out[:, : t + 1], memory, mask)[:, -1]  # pixel t itself instead of the start token
        out[:, t] = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
    return out.view(B, model.config.image_size, -1)


def _greedy(model, cond, generator):
    return model.generate(cond, temperature=0, use_cache=False)


def _one_pass(model, cond, generator):
    c = model.config
    blank = torch.zeros(cond.size(0), c.image_size, c.image_size, dtype=torch.long)
    probs = model(blank, cond).softmax(-1)  # (B, T, levels), every pixel predicted from a blank image
    return torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view_as(blank)


def check_sample_loop(learner: Callable | None) -> Callable:
    """Check sample_loop(model, cond, generator) -> levels [B, H, W] against model.generate(cond,
    use_cache=False, generator=...) on a tiny 5×5 model: with the same seed the tokens must be the same."""
    if reference_given("sample_loop", learner, sample_loop):
        return sample_loop
    model = _check_model()
    cond = model.tokenizer.encode(["a photo of a bag", "a dress", ""])

    def seeded(fn):  # each run gets a fresh generator with the same seed
        return None if fn is None else (lambda m, c, seed: fn(m, c, torch.Generator().manual_seed(seed)))

    mistakes = {
        "the decoder read the unshifted pixels (pixel t itself at position t, no start token)": _unshifted,
        "the most likely level every time (argmax), not a draw from the softmax": _greedy,
        "every pixel drawn from one forward pass over a blank image (no pixel saw the ones drawn before it)":
            _one_pass,
    }
    ok = compare("sample_loop", seeded(learner), seeded(sample_loop), [(model, cond[:2], 0), (model, cond[2:], 1)],
                 {k: seeded(v) for k, v in mistakes.items()}, atol=0)
    return learner if ok else sample_loop
