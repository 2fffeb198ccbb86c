"""Checks for chapter 03 (the encoder): token + position embeddings, patchify, and a ResNet image encoder."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .core import (
    Exercise,
    Mistake,
    compare,
    crashed,
    fail,
    is_stub,
    not_attempted,
    reference_given,
    settle,
    unusable,
    verdict,
)

__all__ = ["check_embed", "check_patchify", "check_resnet_encoder"]


# ---------------------------------------------------------------- exercise 1: embeddings
def embed(tokens: Tensor, token_table: Tensor, pos_table: Tensor) -> Tensor:
    """Reference: ids [B, S], tables [V, d] and [max_len, d] -> token vector + position vector [B, S, d]."""
    return token_table[tokens] + pos_table[: tokens.size(1)]


def _embed_cases() -> list[tuple]:
    # V <= max_len so that the "positions indexed by token id" mistake runs (and can be named) instead of failing.
    g = torch.Generator().manual_seed(0)
    token_table, pos_table = torch.randn(10, 8, generator=g), torch.randn(12, 8, generator=g)
    return [(torch.randint(0, 10, (2, 5), generator=g), token_table, pos_table),
            (torch.randint(0, 10, (3, 12), generator=g), token_table, pos_table),
            (torch.randint(0, 10, (1, 1), generator=g), token_table, pos_table)]


def _embed_error(error: BaseException, args: tuple) -> Mistake | None:
    """The usual broadcasting errors, said in the exercise's words."""
    tokens, _, pos_table = args
    text = str(error)
    if "must match the size" not in text:
        return None
    if f"({pos_table.size(0)})" in text:
        return Mistake("whole-position-table", f"the position table has max_len={pos_table.size(0)} rows but the "
                       f"captions have S={tokens.size(1)} tokens: add only its first S rows, pos_table[:S]")
    if f"({tokens.size(0)})" in text:
        return Mistake("positions-along-batch", "tokens.size(0) is the batch size B; the positions run along "
                       "tokens.size(1), so take pos_table[:tokens.size(1)]")
    return None


def _embed_symptom(got: tuple, expected: tuple, args: tuple) -> Mistake | None:
    out, d = got[0], args[1].size(1)
    if isinstance(out, Tensor) and out.shape[:-1] == expected[0].shape[:-1] and out.size(-1) == 2 * d:
        return Mistake("concatenated-not-added", f"returned [..., {2 * d}]: the token and position vectors are "
                       f"concatenated; add them ([..., {d}])")
    return None


def check_embed(learner: Callable | None) -> Callable:
    """Check my_embed(tokens, token_table, pos_table) -> [B, S, d]."""
    mistakes = [
        Mistake("no-positions", "the token vectors alone (the position vectors are missing)",
                lambda t, tok, pos: tok[t]),
        Mistake("positions-by-token-id", "positions looked up by token id (pos_table[tokens]) instead of by position",
                lambda t, tok, pos: tok[t] + pos[t]),
        Mistake("last-positions", "the last S position vectors (pos_table[-S:]) instead of the first S",
                lambda t, tok, pos: tok[t] + pos[-t.size(1):]),
        Mistake("positions-from-1", "positions counted from 1 (pos_table[1:S+1]); the first token is position 0, "
                "pos_table[:S]", lambda t, tok, pos: tok[t] + pos[1 : t.size(1) + 1]),
    ]
    ok = compare("embed", learner, embed, _embed_cases(), mistakes, dtype=True, on_error=_embed_error,
                 diagnose=_embed_symptom)
    return settle("embed", learner, embed, ok)


# ---------------------------------------------------------------- exercise 2: patchify
def patchify(images: Tensor, p: int) -> Tensor:
    """Reference: float [B, 1, H, W] -> [B, (H/p)·(W/p), p·p], patches in raster order, each flattened row-major.
    The same ordering as F.unfold(images, p, stride=p).transpose(1, 2), i.e. what a stride-p convolution sees."""
    B, C, H, W = images.shape
    grid = images.reshape(B, C, H // p, p, W // p, p)  # (B, C, rows of patches, y in patch, columns, x in patch)
    return grid.permute(0, 2, 4, 1, 3, 5).reshape(B, (H // p) * (W // p), C * p * p)


def _patchify_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(2, 1, 4, 4, generator=g), 2), (torch.rand(1, 1, 6, 4, generator=g), 2),
            (torch.rand(2, 1, 6, 6, generator=g), 3), (torch.rand(1, 1, 14, 14, generator=g), 2)]


def _patches_column_major(images: Tensor, p: int) -> Tensor:
    B, C, H, W = images.shape
    grid = images.reshape(B, C, H // p, p, W // p, p)
    return grid.permute(0, 4, 2, 1, 3, 5).reshape(B, (H // p) * (W // p), C * p * p)


def _pixels_column_major(images: Tensor, p: int) -> Tensor:
    B, C, H, W = images.shape
    grid = images.reshape(B, C, H // p, p, W // p, p)
    return grid.permute(0, 2, 4, 1, 5, 3).reshape(B, (H // p) * (W // p), C * p * p)


def check_patchify(learner: Callable | None) -> Callable:
    """Check my_patchify(images, p): float [B, 1, H, W] -> [B, (H/p)·(W/p), p·p]."""
    mistakes = [
        Mistake("patches-column-major", "patches in column-major order (the grid of patches is transposed: go along "
                "a row first)", _patches_column_major),
        Mistake("patch-pixels-column-major", "pixels flattened column by column inside each patch (flatten each "
                "patch row by row)", _pixels_column_major),
        Mistake("reshape-without-permute", "a plain reshape without a permute (each 'patch' is a run of pixels from "
                "one image row)", lambda x, p: x.reshape(x.size(0), -1, p * p)),
        Mistake("unfold-not-transposed", "F.unfold's output as it comes, (B, p·p, patches): transpose(1, 2) to put "
                "the patches first", lambda x, p: F.unfold(x, p, stride=p)),
    ]
    ok = compare("patchify", learner, patchify, _patchify_cases(), mistakes, atol=0, dtype=True)
    return settle("patchify", learner, patchify, ok)


# ---------------------------------------------------------------- exercise 3: a ResNet as image encoder
class ReferenceResNetEncoder(nn.Module):
    """Reference: torchvision's resnet18 (random weights) on 1-channel images -> memory [B, h·w, d_model].

    conv1 becomes a 3×3 stride-1 convolution on 1 channel and the max-pool goes, so a 28×28 image keeps a
    4×4 feature map (the ImageNet stem would shrink it to 1×1); avgpool and fc are dropped."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        from torchvision.models import resnet18

        resnet = resnet18(weights=None)  # weights=None: random initialisation, nothing is downloaded
        resnet.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
        resnet.maxpool = nn.Identity()
        self.body = nn.Sequential(*list(resnet.children())[:-2])  # everything up to layer4
        self.proj = nn.Linear(512, d_model)

    def forward(self, images: Tensor) -> Tensor:  # (B, 1, H, W) -> (B, h·w, d_model)
        features = self.body(images)  # (B, 512, h, w)
        return self.proj(features.flatten(2).transpose(1, 2))


def _resnet_problem(learner: type, d_model: int = 32) -> Mistake | list[int]:
    """Build and run the learner's encoder; return a problem or the output's shape. Errors the learner's code
    raises propagate (the caller tells a blank exercise from a crash)."""
    try:
        model = learner(d_model)
    except Exception as error:
        error.building = True  # type: ignore[attr-defined]
        raise
    if not isinstance(model, nn.Module) or "_modules" not in vars(model):
        return Mistake("no-super-init", "__init__ did not build an nn.Module (does it start with "
                       "super().__init__()?)")
    seen: dict = {"pooled": False, "features": None, "linear_input": None}

    def hook(module, inputs, output):
        if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
            seen["pooled"] = True
        if isinstance(output, Tensor) and output.dim() == 4 and output.size(1) == 512:
            seen["features"] = output.detach()
        if isinstance(module, nn.Linear) and inputs and inputs[0].dim() == 3:
            seen["linear_input"] = inputs[0].detach()

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    images = torch.rand(2, 1, 14, 14)
    try:
        out = model(images)
    except RuntimeError as error:
        if "channels" in str(error) and not is_stub(error):
            return Mistake("rgb-conv1", "the first convolution does not take 1 channel (ImageNet's conv1 expects 3, "
                           "RGB): replace conv1 by nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)")
        raise
    finally:
        for handle in handles:
            handle.remove()
    out = out[0] if isinstance(out, tuple) else out
    if seen["pooled"]:
        return Mistake("average-pool-kept", "the average pool is still there, so the whole image becomes one vector: "
                       "drop avgpool and fc (keep the children up to layer4) and make each position of the "
                       "[B, 512, h, w] map a token")
    if not isinstance(out, Tensor) or out.dim() != 3 or out.size(0) != 2 or out.size(2) != d_model:
        shape = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
        return Mistake("wrong-shape", f"returned {shape} for 2 images, expected a memory [2, S, {d_model}]")
    if unusable(out):
        return unusable(out)
    features, linear_input = seen["features"], seen["linear_input"]
    if features is not None:
        h, w = features.shape[-2:]
        if out.size(1) != h * w:
            return Mistake("tokens-not-positions", f"the memory has {out.size(1)} tokens but the final feature map "
                           f"has {h}×{w} positions: make each position one token (features.flatten(2).transpose(1, 2))")
        tokens_unmoved = features.reshape(2, h * w, 512)  # the reshape that forgets to move channels last
        if h * w > 1 and linear_input is not None and linear_input.shape == tokens_unmoved.shape \
                and torch.equal(linear_input, tokens_unmoved):
            return Mistake("reshape-without-transpose", "the feature map [B, 512, h, w] was reshaped to "
                           "[B, h·w, 512] without moving the channels last, which mixes positions and channels: use "
                           "features.flatten(2).transpose(1, 2)")
    if not torch.isfinite(out).all():
        return Mistake("not-finite", "the memory holds NaN or inf values")
    conv1 = next((m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels == 1), None)
    if conv1 is None:
        return Mistake("no-1-channel-conv", "no convolution takes 1 channel: replace conv1 by nn.Conv2d(1, 64, …) "
                       "for grayscale images")
    frozen = Mistake("no-gradient", "gradients do not reach conv1 (frozen with requires_grad=False, "
                     "torch.no_grad() or .detach()?)")
    if not conv1.weight.requires_grad or not out.requires_grad:
        return frozen
    (grad,) = torch.autograd.grad(out.float().pow(2).mean(), conv1.weight, allow_unused=True)
    if grad is None or not grad.abs().sum() > 0:
        return frozen
    return list(out.shape)


def check_resnet_encoder(learner: type | None) -> type:
    """Check a ResNetEncoder class: ResNetEncoder(d_model)(images [B, 1, H, W]) -> memory [B, S, d_model] with S
    the positions of ResNet's final feature map, finite values, and gradients that reach the 1-channel conv1.
    The weights are random, so this checks shapes and plumbing, not values."""
    name = "ResNetEncoder"
    if reference_given(name, learner, ReferenceResNetEncoder):
        return settle(name, learner, ReferenceResNetEncoder, False)
    if learner is None:
        not_attempted(name)
        return settle(name, learner, ReferenceResNetEncoder, False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            result = _resnet_problem(learner)
        except Exception as error:  # anything the learner's code does that the checks above did not foresee
            if is_stub(error):
                not_attempted(name)
            else:
                crashed(name, error, where=" while building it" if getattr(error, "building", False) else "")
            return settle(name, learner, ReferenceResNetEncoder, False)
    if isinstance(result, list):
        note = "" if result[1] > 1 else (" (only 1 token: the ImageNet stem shrinks a small image to 1×1; a 3×3 "
                                         "stride-1 conv1 without the max-pool keeps more positions)")
        verdict(name, True, f"memory {result} from 2 images 14×14, finite, gradients reach the 1-channel conv1{note}")
        return learner
    fail(name, result)
    return settle(name, learner, ReferenceResNetEncoder, False)


EXERCISES = (Exercise("embed", "my_embed", check_embed), Exercise("patchify", "my_patchify", check_patchify),
             Exercise("ResNetEncoder", "ResNetEncoder", check_resnet_encoder))
