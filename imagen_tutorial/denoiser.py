"""The diffusion model of Part II: a U-ViT-style denoiser built from the course's own blocks.

A noisy image is cut into patches (the `ImageEncoder` idea); one extra token carries the time t, the pooled
caption (as Imagen adds its pooled text vector to the time embedding) and, for super-resolution, the noise
augmentation level. Non-causal `DecoderBlock`s read the caption by cross-attention, and long skips join each
shallow block to its deep mirror (Bao et al. 2023). The super-resolution stage also reads the low-res image,
upsampled and concatenated to x_t as a second channel, as Imagen and SR3 do. The canvas may be wider than tall
(Part III's two-slot scenes, `config.aspect`), and `config.text_encoder` swaps how the caption is read.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import diffusion
from .blocks import DecoderBlock
from .config import ModelConfig, check_sampling_args
from .encoder import BagOfWords, TextEncoder, drop_captions, mean_pool
from .model import ImageTransformer, batch_of, check_generator
from .text import Tokenizer


def time_features(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal features of t in [0, 1] (scaled by 1000, as for discrete steps): [B] -> [B, dim] (an odd dim
    drops the last cosine)."""
    half = (dim + 1) // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    angles = 1000 * t.float()[:, None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=1)[:, :dim]


def _mlp(d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))


class Denoiser(nn.Module):
    """x_t [B, 1, H, W] and t [B] (+ caption tokens, + the upsampled augmented low-res image and its level)
    -> the prediction [B, 1, H, W] (ε or v, as `config.prediction` says)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig) or config.family != "diffusion":
            raise ValueError(f"Denoiser builds the diffusion family; got {config!r:.80}: pass "
                             f"ModelConfig(family='diffusion', ...) (build_model(config) picks by family)")
        self.config = c = config
        self.tokenizer = Tokenizer(c.vocabulary)
        self.reads_caption = c.condition in ("caption", "caption_lowres")
        self.reads_lowres = c.condition == "caption_lowres"
        self.cross = self.reads_caption and c.text_encoder == "cross"  # the blocks cross-attend to the words
        d, p, in_ch = c.d_model, c.patch_size, 2 if self.reads_lowres else 1
        self.grid = (c.image_shape[0] // p, c.image_shape[1] // p)  # patches down and across
        self.patch_emb = nn.Conv2d(in_ch, d, kernel_size=p, stride=p)  # one Linear per patch
        self.pos_emb = nn.Parameter(torch.randn(self.tokens_per_image, d) * 0.02)  # the time token, the patches
        self.time_mlp = _mlp(d)
        self.aug_mlp = _mlp(d) if self.reads_lowres else None
        self.text_proj = None
        if self.reads_caption:  # bow: a bag of words; pooled and cross: the course's Transformer encoder
            vocab, pad, w = self.tokenizer.vocab_size, self.tokenizer.pad_id, c.text_width
            self.encoder = BagOfWords(vocab, w, pad) if c.text_encoder == "bow" else TextEncoder(
                vocab, c.max_caption_len, w, c.n_heads, c.n_enc_layers, c.text_ff_width, c.dropout, pad)
            if w != d:  # a text encoder of its own width (d_text) is read through a projection to the denoiser's
                self.text_proj = nn.Linear(w, d)
            self.pool = nn.Linear(d, d)

        def block() -> DecoderBlock:
            return DecoderBlock(d, c.n_heads, c.ff_width, c.dropout, cross=self.cross, causal=False)
        half = c.n_layers // 2
        self.in_blocks = nn.ModuleList(block() for _ in range(half))
        self.mid_blocks = nn.ModuleList(block() for _ in range(c.n_layers - 2 * half))
        self.out_blocks = nn.ModuleList(block() for _ in range(half))
        self.skips = nn.ModuleList(nn.Linear(2 * d, d) for _ in range(half))  # long skip: concat, project back
        self.ln = nn.LayerNorm(d)
        self.out_ch = 8 if c.conv_head else 1
        self.head = nn.Linear(d, p * p * self.out_ch)
        # A small convolution at full resolution over the un-patchified features and the input itself.
        self.conv = nn.Sequential(nn.Conv2d(self.out_ch + in_ch, 32, 3, padding=1), nn.SiLU(),
                                  nn.Conv2d(32, 1, 3, padding=1)) if c.conv_head else None
        self.apply(ImageTransformer._init_weights)  # N(0, 0.02) weights, zero biases, as in Part I
        last = self.conv[-1] if self.conv is not None else self.head
        nn.init.zeros_(last.weight)  # predict 0 at initialisation: a calm start for the loss
        nn.init.zeros_(last.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def tokens_per_image(self) -> int:
        """The sequence the blocks read: the time token and one token per patch."""
        return 1 + self.grid[0] * self.grid[1]

    def encode(self, tokens: Tensor | None, drop: Tensor | None = None):
        """Caption tokens [B, S] -> (memory [B, S, d], mask [B, S], pooled [B, d]); rows with drop get the empty
        caption. (None, None, None) for an unconditional model; memory and mask are None unless the blocks
        cross-attend (text_encoder "pooled" and "bow" pass only the pooled vector)."""
        if not self.reads_caption:
            return None, None, None
        memory, mask = self.encoder(drop_captions(tokens, drop, self.tokenizer.pad_id, self.tokenizer.bos_id))
        if self.text_proj is not None:
            memory = self.text_proj(memory)  # (B, S, d_text) -> (B, S, d)
        pooled = mean_pool(memory, mask)  # the mean over real tokens
        return (memory, mask, pooled) if self.cross else (None, None, pooled)

    def denoise(self, x_t: Tensor, t: Tensor, memory=None, mask=None, pooled=None, lowres=None, aug_level=None):
        """The network with the caption already encoded (sampling encodes it once for all steps)."""
        B, d = x_t.size(0), self.config.d_model
        emb = self.time_mlp(time_features(t, d).to(x_t.dtype))  # (B, d)
        if pooled is not None:
            emb = emb + self.pool(pooled)
        inp = x_t
        if self.reads_lowres:
            emb = emb + self.aug_mlp(time_features(aug_level, d).to(x_t.dtype))
            inp = torch.cat([x_t, lowres.to(x_t.dtype)], dim=1)  # (B, 2, H, W)
        patches = self.patch_emb(inp).flatten(2).transpose(1, 2)  # (B, N, d)
        x = torch.cat([emb[:, None], patches], dim=1) + self.pos_emb  # (B, 1 + N, d)
        skips = []
        for blk in self.in_blocks:
            x = blk(x, memory, mask)
            skips.append(x)
        for blk in self.mid_blocks:
            x = blk(x, memory, mask)
        for blk, skip in zip(self.out_blocks, self.skips, strict=True):
            x = blk(skip(torch.cat([x, skips.pop()], dim=-1)), memory, mask)
        p, (rows, cols) = self.config.patch_size, self.grid
        out = self.head(self.ln(x[:, 1:]))  # (B, N, p*p*C)
        out = out.view(B, rows, cols, self.out_ch, p, p).permute(0, 3, 1, 4, 2, 5).reshape(
            B, self.out_ch, rows * p, cols * p)
        return self.conv(torch.cat([out, inp], dim=1)) if self.conv is not None else out

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None, drop: Tensor | None = None,
                lowres: Tensor | None = None, aug_level: Tensor | None = None) -> Tensor:
        memory, mask, pooled = self.encode(cond, drop)
        return self.denoise(x_t, t, memory, mask, pooled, lowres, aug_level)

    def flops_per_image(self, cond_len: int = 0, training: bool = True) -> float:
        """Matmul FLOPs for one image (2 per multiply-add; ×3 for forward + backward), as for ImageTransformer.
        cond_len: caption tokens; the Transformer text encoder reads them (cross and pooled), and the blocks
        cross-attend to them (cross)."""
        c, T = self.config, self.tokens_per_image
        S = cond_len if self.cross else 0  # the words the blocks cross-attend to
        E = cond_len if self.reads_caption and c.text_encoder != "bow" else 0  # the words the Transformer reads
        d, f, w, g = c.d_model, c.ff_width, c.text_width, c.text_ff_width
        layer = T * (4 * d * d + 2 * d * f) + 2 * T * T * d + (S > 0) * (2 * d * d * (T + S) + 2 * T * S * d)
        enc = c.n_enc_layers * (E * (4 * w * w + 2 * w * g) + 2 * E * E * w)
        proj = cond_len * w * d if self.text_proj is not None else 0
        forward = 2 * (c.n_layers * layer + (c.n_layers // 2) * T * 2 * d * d + enc + proj)
        return forward * (3 if training else 1)

    # ------------------------------------------------------------ inputs, the loss and sampling
    @property
    def device(self) -> torch.device:
        return self.pos_emb.device

    def prepare_captions(self, captions, batch: int | None = None) -> Tensor | None:
        """Strings (or tokens [B, S]) -> tokens on the model's device; None for an unconditional model."""
        if not self.reads_caption:
            if captions is not None:
                raise ValueError("this diffusion model is unconditional (condition='none'): pass captions=None")
            return None
        if captions is None:
            raise ValueError(f"this diffusion model reads captions (condition={self.config.condition!r}): pass "
                             f"a list of captions, e.g. ['a photo of an ankle boot']")
        captions = self.tokenizer.tokens(captions, self.config.max_caption_len, pad=True)
        if batch is not None and captions.size(0) != batch:
            raise ValueError(f"{captions.size(0)} captions for {batch} images: give one caption per image")
        return captions.to(self.device)

    def check_image(self, x: Tensor, shape: tuple[int, int], what: str) -> Tensor:
        """A float image batch [B, 1, H, W] in [0, 1] with no NaN, or a ValueError that says what is wrong."""
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1:] != (1, *shape):
            got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{what} must be a float tensor [B, 1, {shape[0]}, {shape[1]}] in [0, 1]; got {got}")
        if not x.is_floating_point():
            raise ValueError(f"{what} must be floats in [0, 1], got {x.dtype}: scale uint8 images by 1/255")
        if not torch.isfinite(x).all():
            raise ValueError(f"{what} contains NaN or infinite values")
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"{what} must be in [0, 1]; got values {float(x.min()):.3g}..{float(x.max()):.3g}")
        return x.to(self.device)

    def lowres_input(self, lowres: Tensor, aug_level: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The SR stage's second channel: the low-res image [B, 1, s, s] in [0, 1], mapped to [-1, 1], upsampled
        (bilinear) to the output size and noise-augmented at `aug_level` [B] by the forward process."""
        up = F.interpolate(2 * lowres - 1, size=self.config.image_shape, mode="bilinear", align_corners=False)
        return diffusion.noise_augment(up, aug_level, generator)

    def loss(self, images: Tensor, cond=None, drop: Tensor | None = None, lowres: Tensor | None = None,
             aug_max: float = 0.5, net: nn.Module | None = None, check: bool = True) -> Tensor:
        """The training loss (a scalar) for float images [B, 1, H, W] in [0, 1]. The SR stage reads `lowres`
        (default: the images area-downsampled to cond_size) noise-augmented at a level drawn from U(0, aug_max).
        `net` is what to call (the Trainer passes its compiled / DDP-wrapped copy of this model, and check=False:
        its batches are already valid, and checking values on a GPU would wait for it at every step)."""
        if check:
            images = self.check_image(images, self.config.image_shape, "images")
            cond = self.prepare_captions(cond, images.size(0))
            if lowres is not None and not self.reads_lowres:
                raise ValueError("this model is not a super-resolution stage: drop lowres")
            lowres = None if lowres is None else self.check_image(lowres, self.config.cond_shape, "lowres")
        x0 = 2 * images - 1
        extra = {"cond": cond, "drop": drop}
        if self.reads_lowres:
            if lowres is None:
                lowres = F.interpolate(images, size=self.config.cond_shape, mode="area")
            aug = torch.rand(images.size(0), device=images.device) * aug_max
            extra.update(lowres=self.lowres_input(lowres, aug), aug_level=aug)
        return diffusion.diffusion_loss(self if net is None else net, x0, self.config.prediction, **extra)

    @torch.no_grad()
    def generate(self, captions=None, lowres: Tensor | None = None, aug_level: float = 0.2, steps: int = 50,
                 guidance: float = 1.0, sampler: str = "ddim",
                 threshold: float | str | None = diffusion.DEFAULT_THRESHOLD,
                 generator: torch.Generator | None = None, batch_size: int | None = None,
                 trajectory: list | None = None) -> Tensor:
        """Sample float images [B, 1, H, W] in [0, 1].

        captions: strings or tokens [B, S] (None for an unconditional model, with `batch_size`); the SR stage
        also reads `lowres` [B, 1, s, s] in [0, 1], noise-augmented at `aug_level` (0 = as given). guidance w:
        ε̃ = ε_u + w·(ε_c − ε_u), w = 1 skips the unconditional pass. sampler "ddim" (deterministic) or "ddpm"
        (ancestral); threshold: "static" (clip x̂₀ to [-1, 1], the default: it measured
        best on this data), a percentile for Imagen's dynamic thresholding (0.995), or None.
        trajectory: a list that receives (x_t, x̂₀) at every step: x̂₀ in [-1, 1], x_t (noisy) unbounded."""
        c = self.config
        check_sampling_args(steps=steps, guidance=guidance, sampler=sampler, threshold=threshold,
                            aug_level=aug_level, batch_size=batch_size)
        check_generator(generator, self.device)
        if trajectory is not None and not isinstance(trajectory, list):
            raise ValueError(f"trajectory must be a list, which receives (x_t, x̂₀) at every step, or None; got "
                             f"{type(trajectory).__name__}: pass trajectory=[]")
        if self.reads_lowres:
            if lowres is None:
                raise ValueError(f"the super-resolution stage needs lowres=[B, 1, {c.cond_shape[0]}, "
                                 f"{c.cond_shape[1]}] images in [0, 1] (e.g. the base model's samples)")
            lowres = self.check_image(lowres, c.cond_shape, "lowres")
        elif lowres is not None:
            raise ValueError("this model is not a super-resolution stage: drop lowres")
        tokens = self.prepare_captions(captions)
        B = batch_of(batch_size, captions=tokens.size(0) if tokens is not None else None,
                     lowres=lowres.size(0) if lowres is not None else None)
        cond_kw = {}
        if self.reads_lowres:
            level = torch.full((B,), float(aug_level), device=self.device)
            cond_kw = {"lowres": self.lowres_input(lowres, level, generator), "aug_level": level}
        was_training = self.training
        self.eval()
        try:
            encoded = self.encode(tokens)
            guided = guidance != 1.0 and self.reads_caption
            if guided:  # conditional and unconditional rows as one batch of 2B
                empty = self.encode(tokens, torch.ones(B, dtype=torch.bool, device=self.device))
                encoded = [None if a is None else torch.cat([a, b]) for a, b in zip(encoded, empty, strict=True)]
                cond_kw = {k: torch.cat([v, v]) for k, v in cond_kw.items()}
            memory, mask, pooled = encoded

            def denoise(x: Tensor, t: Tensor) -> Tensor:
                if not guided:
                    return self.denoise(x, t, memory, mask, pooled, **cond_kw)
                pred = self.denoise(torch.cat([x, x]), torch.cat([t, t]), memory, mask, pooled, **cond_kw)
                return diffusion.guided_prediction(*pred.chunk(2), guidance)

            x = diffusion.sample_loop(denoise, (B, 1, *c.image_shape), c.prediction, steps, sampler,
                                      threshold, generator, self.device, trajectory)
        finally:
            self.train(was_training)
        return (x + 1) / 2

