"""The whole model: an encoder for the condition and a pixel decoder, with loss, bits/dim and sampling.

`ImageTransformer(config)` builds the encoder that `config.condition` asks for (text, image or none) and a
`PixelDecoder`. `forward` scores every pixel at once (teacher forcing); `generate` draws pixels one at a time
with temperature, top-k, classifier-free guidance and an optional prefix (inpainting by completion).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig, check_sampling_args
from .decoder import PixelDecoder
from .encoder import ImageEncoder, TextEncoder, drop_captions
from .text import Tokenizer

Condition = Tensor | str | list[str] | None


def check_sampling(temperature: float = 1.0, top_k: int | None = None, guidance: float = 1.0,
                   batch_size: int | None = None) -> tuple[float, int | None, float]:
    """Refuse sampling arguments that would draw noise or fail deep inside torch; (temperature, top_k, guidance)
    back as float, int or None, float. The ranges are config.SAMPLING_SPECS, which the command line checks too."""
    checked = check_sampling_args(temperature=temperature, top_k=top_k, guidance=guidance, batch_size=batch_size)
    return checked["temperature"], checked["top_k"], checked["guidance"]


def check_generator(generator, device: torch.device) -> None:
    """A sampler's `generator`: None or a torch.Generator on the model's device, or a ValueError saying what to pass."""
    if generator is not None and (not isinstance(generator, torch.Generator) or
                                  generator.device.type != device.type):
        got = f"one on {generator.device}" if isinstance(generator, torch.Generator) else \
            f"{type(generator).__name__} {generator!r:.40}"
        raise ValueError(f"generator must be a torch.Generator on the model's device ({device}), e.g. "
                         f"torch.Generator({str(device)!r}).manual_seed(0), or None; got {got}")


def batch_of(batch_size: int | None, **sizes: int | None) -> int:
    """The one batch size of a generate call: `batch_size` and the batch of each input given (captions=3,
    lowres=3, prefix=3; None for those not given) must agree. Refuses a disagreement, naming the sizes, and a
    batch beyond config.MAX_IMAGES."""
    given = {name: size for name, size in {**sizes, "batch_size": batch_size}.items() if size is not None}
    if not given:
        raise ValueError("an unconditional model needs batch_size to know how many images to draw")
    if len(set(given.values())) > 1:
        raise ValueError(f"the batch sizes disagree ({', '.join(f'{k}: {v}' for k, v in given.items())}): give one "
                         f"row of each input per image; batch_size only says how many images an unconditional model "
                         f"draws")
    return check_sampling_args(batch_size=next(iter(given.values())))["batch_size"]


def guided_logits(cond_logits: Tensor, uncond_logits: Tensor, guidance: float) -> Tensor:
    """Classifier-free guidance on logits [..., K]: uncond + g·(cond − uncond). g = 1 gives the conditional
    logits, g = 0 the unconditional ones, g > 1 pushes further towards the condition (chapters 06 and 08)."""
    return uncond_logits + guidance * (cond_logits - uncond_logits)


class ImageTransformer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig) or config.family != "autoregressive":
            raise ValueError(f"ImageTransformer builds the autoregressive family; got {config!r:.80}: pass "
                             f"ModelConfig(family='autoregressive', ...) (build_model(config) picks by family)")
        self.config = c = config
        self.tokenizer = Tokenizer()
        if c.condition == "caption":
            self.encoder = TextEncoder(self.tokenizer.vocab_size, c.max_caption_len, c.d_model, c.n_heads,
                                       c.n_enc_layers, c.ff_width, c.dropout, self.tokenizer.pad_id)
        elif c.condition in ("lowres", "edges"):
            self.encoder = ImageEncoder(c.cond_image_size, c.patch_size, c.d_model, c.n_heads,
                                        c.n_enc_layers, c.ff_width, c.dropout)
            # What the decoder reads when the condition is dropped (classifier-free guidance).
            self.null_memory = nn.Parameter(torch.zeros(1, 1, c.d_model))
            if c.pixel_condition:  # one embedding per binned condition value, and one for "dropped"
                self.pixel_emb = nn.Embedding(ModelConfig.PIXEL_BINS + 1, c.d_model)
        else:
            self.encoder = None
        self.decoder = PixelDecoder(c.levels, c.image_size, c.d_model, c.n_heads, c.n_layers, c.ff_width,
                                    c.dropout, cross=self.encoder is not None)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding, nn.Conv2d)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------ input checks
    def check_images(self, images: Tensor, values: bool = True) -> Tensor:
        """Raise ValueError unless images is an integer tensor [B, H, W] of levels (values: also check the range);
        return it as a LongTensor (uint8 or int32 levels are fine)."""
        c = self.config
        if not isinstance(images, Tensor) or images.dim() != 3 or images.shape[1:] != (c.image_size,) * 2:
            shape = list(images.shape) if isinstance(images, Tensor) else type(images).__name__
            hint = " (drop the channel axis with images.squeeze(1))" if isinstance(images, Tensor) and \
                images.dim() == 4 and images.size(1) == 1 else ""
            raise ValueError(f"images must have shape [B, {c.image_size}, {c.image_size}]; got {shape}{hint}")
        if images.is_floating_point() or images.is_complex() or images.dtype == torch.bool:
            raise ValueError(f"images must be integer levels (LongTensor), got {images.dtype}; turn uint8 or "
                             f"[0, 1] float images into levels with imagen_tutorial.data.quantize(x, {c.levels})")
        images = images.long()  # a no-op for int64; uint8, int16 and int32 levels become int64
        if values and images.numel() and (images.min() < 0 or images.max() >= c.levels):
            raise ValueError(f"image levels must be in [0, {c.levels}); got values {int(images.min())}.."
                             f"{int(images.max())}: quantize uint8 images with quantize(x, {c.levels})")
        return images

    def prepare_condition(self, cond: Condition, batch: int | None = None, values: bool = True) -> Tensor | None:
        """Check `cond` for this model's condition kind; captions given as strings are tokenized.
        values=False skips the checks that read tensor values (they cost a GPU sync in the training loop)."""
        c = self.config
        if c.condition == "none":
            if cond is not None:
                raise ValueError("this model is unconditional (condition='none'): pass cond=None")
            return None
        if cond is None:
            raise ValueError(f"this model is conditioned on {c.condition!r}: pass a condition")
        if c.condition == "caption":
            cond = self.tokenizer.tokens(cond, c.max_caption_len, values=values)
        else:
            s = c.cond_image_size
            if not isinstance(cond, Tensor) or cond.dim() != 4 or cond.shape[1:] != (1, s, s):
                shape = list(cond.shape) if isinstance(cond, Tensor) else type(cond).__name__
                raise ValueError(f"the {c.condition} condition must be a float image [B, 1, {s}, {s}] in [0, 1]; "
                                 f"got {shape} (build it with imagen_tutorial.data.image_condition)")
            if not cond.is_floating_point() or values and (cond.min() < 0 or cond.max() > 1):
                if values and cond.is_floating_point() and not torch.isfinite(cond).all():
                    raise ValueError(f"the {c.condition} condition holds NaN or inf values: build it from real "
                                     f"images with imagen_tutorial.data.image_condition")
                raise ValueError(f"the {c.condition} condition must be floats in [0, 1]; scale uint8 images by 1/255")
            if values and not torch.isfinite(cond).all():
                raise ValueError(f"the {c.condition} condition holds NaN or inf values: build it from real images "
                                 f"with imagen_tutorial.data.image_condition")
        if batch is not None and cond.size(0) != batch:
            raise ValueError(f"condition batch {cond.size(0)} differs from image batch {batch}")
        return cond.to(self.decoder.head.weight.device)  # a no-op when it is already there

    # ------------------------------------------------------------ scoring
    def encode(self, cond: Tensor | None, drop: Tensor | None = None) -> tuple[Tensor | None, Tensor | None]:
        """Condition -> (memory [B, S, d], mask [B, S] or None). Rows where `drop` is True get the empty
        condition instead (the empty caption, or a learned null memory for images)."""
        if self.encoder is None:
            return None, None
        if self.config.condition == "caption":
            return self.encoder(drop_captions(cond, drop, self.tokenizer.pad_id, self.tokenizer.bos_id))
        memory, mask = self.encoder(cond)
        if drop is not None:
            memory = torch.where(drop[:, None, None], self.null_memory.to(memory.dtype).expand_as(memory), memory)
        return memory, mask

    def pixel_features(self, cond: Tensor | None, drop: Tensor | None = None) -> Tensor | None:
        """With `pixel_condition`: the condition image's value at every output pixel (the low-res image
        upsampled, nearest; the edge map as it is), binned and embedded: [B, H*W, d]. Rows where `drop` is
        True get the "dropped" embedding. None for models without a pixel condition."""
        if not self.config.pixel_condition or cond is None:
            return None
        bins = ModelConfig.PIXEL_BINS
        up = F.interpolate(cond.float(), size=self.config.image_size, mode="nearest").flatten(1)  # (B, T)
        index = (up.clamp(0, 1) * (bins - 1)).round().long()
        if drop is not None:
            index = torch.where(drop[:, None], torch.full_like(index, bins), index)
        return self.pixel_emb(index)

    def forward(self, images: Tensor, cond: Condition = None, drop: Tensor | None = None,
                check: bool = True) -> Tensor:
        """images LongTensor [B, H, W] of levels -> logits [B, H*W, levels]; logits[:, t] sees pixels < t.
        drop: bool [B], rows trained on the empty condition. check=False skips value-range checks."""
        images = self.check_images(images, values=check)
        cond = self.prepare_condition(cond, images.size(0), values=check)
        memory, mask = self.encode(cond, drop)
        pixels = images.flatten(1)  # (B, T) in raster order
        return self.decoder(self.decoder.shift_right(pixels), memory, mask, extra=self.pixel_features(cond, drop))

    def loss(self, images: Tensor, cond: Condition = None, drop: Tensor | None = None) -> Tensor:
        """Mean cross-entropy per pixel, in nats (a scalar)."""
        logits = self(images, cond, drop)
        return F.cross_entropy(logits.flatten(0, 1).float(), images.flatten().long())

    @torch.no_grad()
    def bits_per_dim(self, images: Tensor, cond: Condition = None) -> Tensor:
        """Negative log-likelihood of each image in bits per pixel: float [B]."""
        logits = self(images, cond)  # (B, T, levels)
        nats = F.cross_entropy(logits.transpose(1, 2).float(), images.flatten(1).long(), reduction="none")  # (B, T)
        return nats.mean(dim=1) / math.log(2)

    def flops_per_image(self, cond_len: int = 0, training: bool = True) -> float:
        """Matmul FLOPs to score one image: 2 per multiply-add in every Linear layer and in the attention
        scores (Q·Kᵀ and weights·V, the full square as in PaLM's MFU); ×3 for forward + backward."""
        c, T, S = self.config, self.config.seq_len, cond_len
        d, f, cross = c.d_model, c.ff_width, self.encoder is not None
        layer = T * (4 * d * d + 2 * d * f) + 2 * T * T * d  # self-attn projections + FFN, scores + sums
        layer += cross * (2 * d * d * (T + S) + 2 * T * S * d)  # cross-attn: q/out per pixel, k/v per token
        enc_layer = S * (4 * d * d + 2 * d * f) + 2 * S * S * d
        forward = 2 * (c.n_layers * layer + T * d * c.levels + cross * c.n_enc_layers * enc_layer)
        return forward * (3 if training else 1)

    # ------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate(self, cond: Condition = None, temperature: float = 1.0, top_k: int | None = None,
                 guidance: float = 1.0, prefix: Tensor | None = None, use_cache: bool = True,
                 generator: torch.Generator | None = None, batch_size: int | None = None,
                 progress: bool = False) -> Tensor:
        """Sample images LongTensor [B, H, W] pixel by pixel in raster order.

        cond: caption tokens [B, S] (or strings), a condition image, or None with `batch_size` for
        condition="none". guidance g mixes logits as uncond + g·(cond − uncond); g=1 is plain conditional
        sampling and skips the unconditional pass. prefix [B, n]: the first n pixels, kept as given.
        temperature 0 picks the most likely level. Arguments out of range raise ValueError (check_sampling)."""
        temperature, top_k, guidance = check_sampling(temperature, top_k, guidance, batch_size)
        was_training = self.training
        self.eval()
        try:
            return self._generate(cond, temperature, top_k, guidance, prefix, use_cache, generator,
                                  batch_size, progress)
        finally:
            self.train(was_training)

    def _generate(self, cond, temperature, top_k, guidance, prefix, use_cache, generator, batch_size, progress):
        c, device = self.config, self.decoder.head.weight.device
        check_generator(generator, device)
        cond = self.prepare_condition(cond)
        if prefix is not None and (not isinstance(prefix, Tensor) or prefix.dim() != 2):
            got = list(prefix.shape) if isinstance(prefix, Tensor) else type(prefix).__name__
            raise ValueError(f"prefix must be a LongTensor [B, n] of levels, the first n pixels of each image in "
                             f"raster order; got {got} (flatten images with .flatten(1)[:, :n])")
        B = batch_of(batch_size, cond=cond.size(0) if cond is not None else None,
                     prefix=prefix.size(0) if prefix is not None else None)
        memory, mask = self.encode(cond)
        extra = self.pixel_features(cond)  # (B, T, d) or None
        guided = guidance != 1.0 and memory is not None
        if guided:  # run conditional and unconditional rows as one batch of 2B
            dropped = torch.ones(B, dtype=torch.bool, device=device)
            memory_u, mask_u = self.encode(cond, drop=dropped)
            memory = torch.cat([memory, memory_u])
            mask = torch.cat([mask, mask_u]) if mask is not None else None
            if extra is not None:
                extra = torch.cat([extra, self.pixel_features(cond, dropped)])

        def extra_at(start: int, stop: int) -> Tensor | None:  # the pixel condition of positions start..stop-1
            return extra[:, start:stop] if extra is not None else None
        T = c.seq_len
        out = torch.zeros(B, T, dtype=torch.long, device=device)
        n = 0
        if prefix is not None:
            n = prefix.size(1)
            if prefix.size(0) != B or not 0 <= n < T:
                raise ValueError(f"prefix must be a LongTensor [B={B}, n] with n < {T}; got {list(prefix.shape)}")
            prefix = self.check_images(F.pad(prefix, (0, T - n)).view(B, c.image_size, c.image_size))
            out[:, :n] = prefix.flatten(1)[:, :n].to(device)

        def twice(x: Tensor) -> Tensor:
            return torch.cat([x, x]) if guided else x

        def sample(logits: Tensor) -> Tensor:  # (B or 2B, levels) -> (B,)
            logits = logits.float()
            if guided:
                logits = guided_logits(*logits.chunk(2), guidance)  # (conditional rows, unconditional rows)
            if temperature == 0:
                return logits.argmax(-1)
            logits = logits / temperature
            if top_k is not None and top_k < logits.size(-1):
                kth = logits.topk(top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)

        steps = range(n, T)
        if progress:
            from tqdm import tqdm  # plain text bar: no ipywidgets needed in notebooks

            steps = tqdm(steps, desc="sampling", unit="px")
        dec = self.decoder
        cache = dec.new_cache(memory.size(1) if memory is not None else 0) if use_cache else None
        if use_cache:  # read the start token and the prefix in one pass
            logits = dec(twice(dec.shift_right(out[:, : n + 1])), memory, mask, cache, extra=extra_at(0, n + 1))[:, -1]
        for t in steps:
            if not use_cache:  # re-read everything so far: O(t) work per step, O(T²) per image
                logits = dec(twice(dec.shift_right(out[:, : t + 1])), memory, mask, extra=extra_at(0, t + 1))[:, -1]
            out[:, t] = sample(logits)
            if use_cache and t + 1 < T:  # feed only the new pixel; earlier keys/values are cached
                logits = dec(twice(out[:, t : t + 1]), memory, mask, cache, offset=t + 1,
                             extra=extra_at(t + 1, t + 2))[:, -1]
        return out.view(B, c.image_size, c.image_size)
