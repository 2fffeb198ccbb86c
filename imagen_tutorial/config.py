"""Configuration dataclasses for the model and the training loop.

`ModelConfig` says what network to build; `TrainConfig` says how to train it. Both validate themselves
on construction, so a typo in a config file fails at once with a message, not deep inside a forward pass.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, ClassVar

CONDITIONS = ("caption", "lowres", "edges", "none", "caption_lowres")
FAMILIES = ("autoregressive", "diffusion")
# What each family can read: the diffusion super-resolution stage reads a caption and a low-res image at once.
FAMILY_CONDITIONS = {"autoregressive": ("caption", "lowres", "edges", "none"),
                     "diffusion": ("caption", "caption_lowres", "none")}
PREDICTIONS = ("eps", "v")


def _fail(message: str) -> None:
    raise ValueError(message)


class _DictMixin:
    """`to_dict` / `from_dict` with an error that names unknown keys (a checkpoint or config file typo)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in values if k not in names]
        if unknown:
            hints = [f"'{k}' (did you mean {difflib.get_close_matches(k, names, 1)}?)" for k in unknown]
            _fail(f"{cls.__name__} has no field(s) {', '.join(hints)}; valid fields: {', '.join(names)}")
        values = dict(values)
        for f in dataclasses.fields(cls):  # JSON turns tuples into lists
            if isinstance(f.default, tuple) and isinstance(values.get(f.name), list):
                values[f.name] = tuple(values[f.name])
        return cls(**values)


@dataclass
class ModelConfig(_DictMixin):
    """The network: image size, intensity levels, widths and depths, and what the encoder reads.

    condition: "caption" (text encoder), "lowres" (image encoder over a `cond_size`×`cond_size` image),
    "edges" (image encoder over a Sobel edge map at full size) or "none" (no encoder, unconditional).
    """

    image_size: int = 28
    levels: int = 16
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 4  # decoder blocks
    condition: str = "caption"
    n_enc_layers: int = 2  # encoder blocks (ignored for condition="none")
    d_ff: int = 0  # feed-forward width; 0 means 4 * d_model
    dropout: float = 0.0
    max_caption_len: int = 12  # words + the <bos> token
    cond_size: int = 7  # side of the low-resolution image for condition="lowres"
    patch_size: int = 1  # side of one encoder patch, in pixels of the condition image
    # lowres/edges only: also add to each decoder input an embedding of the condition image's value at that
    # pixel (the low-res image upsampled; the edge map itself), so every pixel sees its own neighbourhood
    # directly, as SR3 concatenates the upsampled image to its input, instead of finding it by cross-attention
    pixel_condition: bool = False
    # Part II. family "autoregressive" is the ImageTransformer of chapters 00-08; "diffusion" is the denoiser of
    # chapters 09-10 (n_layers = its blocks, patch_size = its patch side, n_enc_layers = the text encoder's
    # blocks, cond_size = the low-res side for condition="caption_lowres"; levels = the grey levels its samples
    # are quantized to when judged, as for the autoregressive model).
    family: str = "autoregressive"
    prediction: str = "v"  # diffusion: what the network predicts, the noise ("eps") or v = α·ε − σ·x₀
    conv_head: bool = False  # diffusion: a 3×3 convolution after un-patchifying (smooths patch seams)

    PIXEL_BINS: ClassVar[int] = 32  # pixel_condition: condition values in [0, 1] are binned this finely

    def __post_init__(self) -> None:
        if not 4 <= self.image_size <= 64:
            _fail(f"image_size={self.image_size} is out of range: use 4..64 (Fashion-MNIST is 28)")
        if not 2 <= self.levels <= 256:
            _fail(f"levels={self.levels} is out of range: use 2..256 (16 for fast runs, 256 for 8-bit bits/dim)")
        if self.family not in FAMILIES:
            _fail(f"family={self.family!r} is unknown: use one of {', '.join(FAMILIES)}")
        allowed = FAMILY_CONDITIONS[self.family]
        if self.condition not in allowed:
            _fail(f"condition={self.condition!r} is unknown: use one of {', '.join(allowed)} "
                  f"(family={self.family!r})")
        if self.prediction not in PREDICTIONS:
            _fail(f"prediction={self.prediction!r} is unknown: use eps or v")
        if self.d_model < 1 or self.n_heads < 1 or self.d_model % self.n_heads:
            _fail(f"d_model={self.d_model} must be a positive multiple of n_heads={self.n_heads}")
        if self.n_layers < 1 or self.n_enc_layers < 0 or self.d_ff < 0 or self.max_caption_len < 2:
            _fail("n_layers must be >= 1, n_enc_layers and d_ff >= 0, max_caption_len >= 2")
        if not 0.0 <= self.dropout < 1.0:
            _fail(f"dropout={self.dropout} must be in [0, 1)")
        side = self.cond_image_size
        if self.condition in ("lowres", "caption_lowres") and not 1 <= self.cond_size < self.image_size:
            _fail(f"cond_size={self.cond_size} must be smaller than image_size={self.image_size} for "
                  f"{self.condition!r}")
        if self.family == "diffusion" and (self.patch_size < 1 or self.image_size % self.patch_size):
            _fail(f"patch_size={self.patch_size} must divide image_size={self.image_size} (the denoiser's patches)")
        if self.condition in ("lowres", "edges") and (self.patch_size < 1 or side % self.patch_size):
            _fail(f"patch_size={self.patch_size} must divide the condition image side {side}")
        if self.pixel_condition and self.condition not in ("lowres", "edges"):
            _fail(f"pixel_condition=True needs an image condition (lowres or edges), not {self.condition!r}")

    @property
    def ff_width(self) -> int:
        return self.d_ff or 4 * self.d_model

    @property
    def cond_image_size(self) -> int:
        """Side of the image the image encoder reads (lowres: cond_size; edges: image_size)."""
        return self.cond_size if self.condition in ("lowres", "caption_lowres") else self.image_size

    @property
    def seq_len(self) -> int:
        return self.image_size * self.image_size


@dataclass
class TrainConfig(_DictMixin):
    """How to train: batch, schedule, regularisation, precision, and how often to log, evaluate and save."""

    batch_size: int = 64  # images per optimizer step, over all processes and accumulation micro-steps
    steps: int = 2000  # optimizer steps; the LR schedule ends here
    max_minutes: float = 0.0  # stop (and save) after this much wall-clock time; 0 = no limit
    schedule: str = "steps"  # steps: cosine ends at `steps`; time: it ends at `max_minutes` (a wall-clock budget)
    lr: float = 2e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    accum_steps: int = 1  # micro-batches per optimizer step
    cond_dropout: float = 0.1  # probability of training on the empty condition (classifier-free guidance)
    crop_padding: int = 0  # random-crop augmentation: pad by this many pixels, crop back
    hflip: float = 0.0  # probability of a horizontal flip (shoes in Fashion-MNIST all point left)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16  (auto: bf16 on CUDA if supported, else fp16; fp32 on CPU)
    compile: bool = False  # torch.compile the model
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    seed: int = 0
    log_every: int = 10
    eval_every: int = 500  # steps between test bits/dim + sample grid; 0 disables
    eval_images: int = 500  # test images used by the periodic evaluation
    ckpt_every: int = 200  # steps between checkpoints; a final one is always written
    ckpt_minutes: float = 0.0  # also checkpoint whenever this much wall-clock time has passed; 0 = off
    train_images: int = 0  # use only the first N training images (0 = all 60,000)
    ema_decay: float = 0.0  # keep an exponential moving average of the weights (0.999 for diffusion); 0 = off
    aug_max: float = 0.5  # diffusion super-resolution: noise augmentation levels drawn from U(0, aug_max)
    progress: bool = True  # tqdm progress bar (TQDM_DISABLE=1 also turns it off)
    extra: dict = field(default_factory=dict)  # free-form notes kept in the checkpoint

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.steps < 1 or self.accum_steps < 1:
            _fail("batch_size, steps and accum_steps must be >= 1")
        if self.batch_size % self.accum_steps:
            _fail(f"batch_size={self.batch_size} must be divisible by accum_steps={self.accum_steps}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            _fail(f"precision={self.precision!r} is unknown: use auto, fp32, bf16 or fp16")
        if not 0.0 <= self.cond_dropout < 1.0 or not 0.0 <= self.hflip <= 1.0:
            _fail("cond_dropout must be in [0, 1) and hflip in [0, 1]")
        if self.lr <= 0 or self.warmup_steps < 0 or self.grad_clip < 0 or self.crop_padding < 0:
            _fail("lr must be > 0; warmup_steps, grad_clip and crop_padding must be >= 0")
        if self.schedule not in ("steps", "time"):
            _fail(f"schedule={self.schedule!r} is unknown: use steps (cosine over `steps`) or time (over max_minutes)")
        if self.schedule == "time" and self.max_minutes <= 0:
            _fail("schedule='time' decays the learning rate over max_minutes: set max_minutes > 0 as well")
        if not 0.0 <= self.ema_decay < 1.0 or not 0.0 <= self.aug_max <= 1.0:
            _fail("ema_decay must be in [0, 1) (0 turns it off) and aug_max in [0, 1]")
        if self.max_minutes < 0 or self.ckpt_minutes < 0:
            _fail("max_minutes and ckpt_minutes must be >= 0 (0 turns them off)")
