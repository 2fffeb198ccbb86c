"""Checks for chapter 04 (the autoregressive decoder): shift-by-one, bits per dimension, and the slow sampler, which
is random and so is checked by the distribution of its draws (every pixel against the model's softmax given the
pixels that sampler drew before it), not by the reference's exact tokens."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import ModelConfig
from ..model import ImageTransformer
from .core import (
    Exercise,
    Mistake,
    compare,
    crashed,
    draws_match,
    fail,
    fixed_rng,
    generator_use,
    is_stub,
    looks_like,
    not_attempted,
    note,
    one_thread,
    pytorch_hint,
    reference_given,
    settle,
    unusable,
    verdict,
)

__all__ = ["check_bits_per_dim", "check_sample_loop", "check_shift_right"]


# ---------------------------------------------------------------- exercise 1: shift-by-one
def shift_right(pixels: Tensor, start_token: int) -> Tensor:
    """Pixels [B, T] -> decoder inputs [B, T]: the start token, then pixels 0..T-2 (as PixelDecoder.shift_right)."""
    start = torch.full_like(pixels[:, :1], start_token)
    return torch.cat([start, pixels[:, :-1]], dim=1)


def _shift_symptom(got: tuple, expected: tuple, args: tuple) -> Mistake | None:
    out, (pixels, _) = got[0], args
    if not isinstance(out, Tensor):
        return None
    B, T = pixels.shape
    if tuple(out.shape) == (B, T + 1):
        return Mistake("shift-keeps-last-pixel", f"returned [B, T+1] = {list(out.shape)}: the last pixel must drop "
                       "off (pixels[:, :-1]); nothing comes after it to predict")
    if out.shape == pixels.shape and out.dtype != torch.long:
        return Mistake("inputs-not-long", f"returned {out.dtype}; decoder inputs are integer levels for the "
                       "embedding: keep a LongTensor (torch.full_like(pixels[:, :1], start_token) has the pixels' "
                       "dtype)")
    return None


def check_shift_right(learner: Callable | None) -> Callable:
    """Check shift_right(pixels [B, T], start_token) -> [B, T], on copies of the pixels (writing into them fails)."""
    g = torch.Generator().manual_seed(0)
    cases = [(torch.randint(0, 16, (2, 7), generator=g), 16), (torch.randint(0, 4, (3, 5), generator=g), 4),
             (torch.randint(0, 8, (1, 1), generator=g), 8)]

    def start(p, s):
        return torch.full_like(p[:, :1], s)

    def overwrite(p, s):
        out = p.clone()
        out[:, 0] = s
        return out

    mistakes = [
        Mistake("no-shift", "no shift: the input equals the target, so the model could copy the answer",
                lambda p, s: p.clone()),
        Mistake("left-shift", "a left shift (position t holds pixel t+1, the future) with the start token at the end",
                lambda p, s: torch.cat([p[:, 1:], start(p, s)], 1)),
        Mistake("start-token-at-end", "pixels 0..T-2 with the start token appended at the end instead of put first",
                lambda p, s: torch.cat([p[:, :-1], start(p, s)], 1)),
        Mistake("roll", "a roll: the last pixel wraps round to position 0 where the start token belongs",
                lambda p, s: torch.roll(p, 1, dims=1)),
        Mistake("start-is-zero", "position 0 holds 0 instead of start_token (F.pad pads with 0 unless you pass "
                "value=start_token)", lambda p, s: torch.cat([torch.zeros_like(p[:, :1]), p[:, :-1]], 1)),
        Mistake("start-overwrites-pixel-0", "the start token overwrites pixel 0 instead of the pixels moving one "
                "place to the right", overwrite),
    ]
    ok = compare("shift_right", learner, shift_right, cases, mistakes, atol=0, dtype=True, diagnose=_shift_symptom)
    return settle("shift_right", learner, shift_right, ok)


# ---------------------------------------------------------------- exercise 2: bits per dimension
def bits_per_dim(logits: Tensor, targets: Tensor) -> Tensor:
    """logits [B, T, levels], targets LongTensor [B, T] -> bits per pixel [B] (as ImageTransformer.bits_per_dim)."""
    nats = F.cross_entropy(logits.transpose(1, 2).float(), targets, reduction="none")  # (B, T)
    return nats.mean(dim=1) / math.log(2)


def _bits_symptom(got: tuple, expected: tuple, args: tuple) -> Mistake | None:
    out = got[0]
    if not isinstance(out, Tensor):
        return None
    B, T = args[1].shape
    if out.dim() == 0 or out.numel() == 1:
        return Mistake("averaged-over-batch", "one number for the whole batch: the result was averaged over the "
                       "batch too; average over the pixels only (.mean(dim=1)), one value per image [B]")
    if tuple(out.shape) == (T,):
        return Mistake("averaged-over-batch-axis", "one value per pixel position [T]: it was averaged over the batch "
                       "(dim=0) instead of the pixels (dim=1)")
    if tuple(out.shape) == (B, T):
        return Mistake("not-averaged-over-pixels", "one value per pixel [B, T]: average over the pixels "
                       "(.mean(dim=1)) to get one value per image [B]")
    if out.shape == expected[0].shape and out.dtype != expected[0].dtype:
        return Mistake("wrong-dtype", f"returned {out.dtype}; keep the logits' float32 (later cells compare with "
                       "model.bits_per_dim)")
    return None


def check_bits_per_dim(learner: Callable | None) -> Callable:
    """Check bits_per_dim(logits [B, T, levels], targets [B, T]) -> [B]."""
    g = torch.Generator().manual_seed(0)
    cases = [(torch.randn(3, 10, 16, generator=g) * 2, torch.randint(0, 16, (3, 10), generator=g)),
             (torch.randn(2, 36, 5, generator=g), torch.randint(0, 5, (2, 36), generator=g))]

    def nats(logits, targets):
        return F.cross_entropy(logits.transpose(1, 2).float(), targets, reduction="none")  # (B, T)

    def picked(values, targets):
        return values.gather(-1, targets[..., None])[..., 0]

    mistakes = [
        Mistake("nats-not-bits", "nats, not bits (divide the mean cross-entropy by ln 2)",
                lambda lg, t: nats(lg, t).mean(1)),
        Mistake("summed-not-averaged", "bits summed over the pixels instead of averaged (per image, not per "
                "dimension)", lambda lg, t: nats(lg, t).sum(1) / math.log(2)),
        Mistake("divided-by-log2-levels", "a result divided by log2(levels) (normalised by the uniform baseline) "
                "instead of by ln 2", lambda lg, t: nats(lg, t).mean(1) / math.log2(lg.size(-1))),
        Mistake("times-ln2", "nats multiplied by ln 2 instead of divided by it",
                lambda lg, t: nats(lg, t).mean(1) * math.log(2)),
        Mistake("logits-as-log-probs", "the logits used as log-probabilities: take log_softmax(-1) first (logits are "
                "not normalised)", lambda lg, t: -picked(lg, t).mean(1) / math.log(2)),
        Mistake("log-softmax-over-positions", "log_softmax over the positions (dim=1) instead of the levels (dim=-1)",
                lambda lg, t: -picked(lg.log_softmax(1), t).mean(1) / math.log(2)),
    ]
    ok = compare("bits_per_dim", learner, bits_per_dim, cases, mistakes, dtype=True, diagnose=_bits_symptom)
    return settle("bits_per_dim", learner, bits_per_dim, ok)


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


# What each wrong sampler draws pixel t from, given the pixels x [B, T] it drew: (model, cond, x) -> [B, T, levels].
# The check tests the learner's images against the right conditionals and, if they fail, against these.
@torch.no_grad()
def _right(model, cond, x):
    return model(x.view(-1, model.config.image_size, model.config.image_size), cond).softmax(-1)


@torch.no_grad()
def _unshifted(model, cond, x):
    memory, mask = model.encode(cond)
    steps = []
    for t in range(x.size(1)):  # the canvas at step t: pixels 0..t-1, then the placeholder 0 at t, no start token
        inputs = torch.cat([x[:, :t], torch.zeros_like(x[:, :1])], dim=1)
        steps.append(model.decoder(inputs, memory, mask)[:, -1])
    return torch.stack(steps, 1).softmax(-1)


def _greedy(model, cond, x):
    probs = _right(model, cond, x)
    return F.one_hot(probs.argmax(-1), probs.size(-1)).to(probs.dtype)


@torch.no_grad()
def _one_pass(model, cond, x):
    blank = torch.zeros_like(x).view(-1, model.config.image_size, model.config.image_size)
    return model(blank, cond).softmax(-1)  # every pixel predicted from a blank image


def _first_position(model, cond, x):
    probs = _right(model, cond, x)
    return probs[:, :1].expand_as(probs)  # the logits of position 0 ([:, 0]) at every step


_SAMPLER_MISTAKES = [
    Mistake("unshifted-input", "the decoder read the unshifted pixels (pixel t itself at position t, no start token)",
            _unshifted),
    Mistake("argmax-not-sampled", "the most likely level every time (argmax), not a draw from the softmax", _greedy),
    Mistake("one-pass-from-blank", "every pixel drawn from one forward pass over a blank image (no pixel saw the "
            "ones drawn before it)", _one_pass),
    Mistake("first-position-logits", "every pixel drawn from the first position's logits ([:, 0]); the prediction "
            "for pixel t is the last position's, [:, -1]", _first_position),
]


def _sampler_error(error: BaseException) -> Mistake | None:
    text = str(error)
    if "0 elements" in text or "size 0" in text or "out of bounds" in text:
        return Mistake("empty-decoder-input", "at step t = 0 the decoder got no input: feed shift_right(out[:, "
                       ":t+1]), the t+1 positions 0..t (the shift drops the last), not out[:, :t]")
    return pytorch_hint(error)


def _sample_problem(out, B: int, size: int, levels: int) -> Mistake | None:
    if not isinstance(out, Tensor):
        return Mistake("not-a-tensor", f"returned {type(out).__name__}, expected levels [B, H, W]")
    if tuple(out.shape) == (B, size * size):
        return Mistake("canvas-not-reshaped", f"returned [B, T] = {list(out.shape)}: reshape the canvas to images, "
                       "out.view(B, H, W)")
    if tuple(out.shape) != (B, size, size):
        return Mistake("wrong-shape", f"returned {list(out.shape)} for {B} captions, expected [B, H, W] = "
                       f"{[B, size, size]}")
    if unusable(out):
        return unusable(out)
    if out.is_floating_point():
        return Mistake("levels-not-long", f"returned {out.dtype}; levels are integers (a LongTensor, as "
                       "torch.multinomial gives)")
    if out.numel() and (out.min() < 0 or out.max() >= levels):
        return Mistake("levels-out-of-range", f"levels {int(out.min())}..{int(out.max())} fall outside 0..{levels - 1}")
    return None


_IMAGES_PER_CAPTION = 100


def check_sample_loop(learner: Callable | None) -> Callable:
    """Check sample_loop(model, cond, generator) -> levels [B, H, W] on a tiny 5×5 model, by its distribution:
    over 300 images, every pixel must follow the model's softmax given the pixels the sampler drew before it
    (any correct way of drawing passes, torch.distributions.Categorical included). Separately, a note says
    whether the generator reproduces the images and whether they are the package's tokens for the same seed."""
    name = "sample_loop"
    if reference_given(name, learner, sample_loop):
        return settle(name, learner, sample_loop, False)
    if learner is None:
        not_attempted(name)
        return settle(name, learner, sample_loop, False)
    model = _check_model()
    c = model.config
    cond = model.tokenizer.encode(["a photo of a bag", "a dress", ""])
    many = cond.repeat(_IMAGES_PER_CAPTION, 1)
    with fixed_rng(1000), torch.no_grad(), one_thread():  # not the generator's seed (0)
        try:
            out = learner(model, many, torch.Generator().manual_seed(0))
        except Exception as error:
            if is_stub(error):
                not_attempted(name)
            else:
                crashed(name, error, _sampler_error(error))
            return settle(name, learner, sample_loop, False)
        problem = _sample_problem(out, many.size(0), c.image_size, c.levels)
        if problem:
            fail(name, problem)
            return settle(name, learner, sample_loop, False)
        x = out.reshape(many.size(0), -1).long()
        groups = [f"pixel {t}" for t in range(x.size(1))]
        ok, worst = draws_match(x.T, _right(model, many, x).transpose(0, 1), groups=groups)
        if not ok:
            for mistake in _SAMPLER_MISTAKES:
                if draws_match(x.T, mistake.forms(model, many, x).transpose(0, 1))[0]:
                    looks_like(name, mistake, "the samples")
                    return settle(name, learner, sample_loop, False)
            fail(name, f"the pixels do not follow the model's distribution given the pixels drawn before them: "
                       f"{worst}. Draw pixel t from softmax(decoder(shift_right(out[:, :t+1]), …)[:, -1])")
            return settle(name, learner, sample_loop, False)
        same_tokens = torch.equal(out, sample_loop(model, many, torch.Generator().manual_seed(0)))
    verdict(name, True, f"every pixel follows the model's distribution given the pixels before it "
                        f"({x.numel():,} pixels of {x.size(0)} images tested)"
                        + (", and with the same seed exactly the package's tokens" if same_tokens else ""))
    if not same_tokens:
        _generator_note(name, lambda g: learner(model, cond, g), "model.generate(cond, use_cache=False, ...)")
    return settle(name, learner, sample_loop, True)


def _generator_note(name: str, draw: Callable, package: str) -> None:
    """A passing sampler that does not draw the package's tokens: say whether its generator reproduces them."""
    with torch.no_grad(), one_thread():
        use = generator_use(draw)
    later = "the later cells that compare your tokens with the package's will print False"
    if use == "ignored":
        note(name, "the generator is not used: the same seed gave different draws (torch.distributions.Categorical, "
                   "and torch.multinomial without generator=, draw from torch's global random state). Right, but "
                   f"not reproducible: pass generator=generator to torch.multinomial; until then {later}")
    else:
        note(name, f"with the same seed it draws other tokens than {package} (it uses the random numbers in another "
                   f"order, e.g. not one torch.multinomial(probs, 1, generator=generator) call per step). Right and "
                   f"reproducible, but {later}")


EXERCISES = (Exercise("shift_right", "my_shift_right", check_shift_right),
             Exercise("bits_per_dim", "my_bits_per_dim", check_bits_per_dim),
             Exercise("sample_loop", "my_sample_loop", check_sample_loop))
