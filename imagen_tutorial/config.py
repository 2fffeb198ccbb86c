"""Configuration dataclasses for the model and the training loop.

`ModelConfig` says what network to build; `TrainConfig` says how to train it. Both validate themselves
on construction, so a typo in a config file fails at once with a message, not deep inside a forward pass.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, ClassVar

CONDITIONS = ("caption", "lowres", "edges", "none", "caption_lowres")
FAMILIES = ("autoregressive", "diffusion")
# What each family can read: the diffusion super-resolution stage reads a caption and a low-res image at once.
FAMILY_CONDITIONS = {"autoregressive": ("caption", "lowres", "edges", "none"),
                     "diffusion": ("caption", "caption_lowres", "none")}
PREDICTIONS = ("eps", "v")
VOCABULARIES = ("classes", "scenes")
TEXT_ENCODERS = ("cross", "pooled", "bow")

# Upper bounds on counts, so that a typo (`--steps 1000000000`) is refused at once instead of running for hours or
# failing deep inside torch. `--help` and every error message show them.
MAX_SAMPLING_STEPS = 1000  # per sampler stage: DDPM's discrete schedule has 1000
MAX_IMAGES = 10_000  # images in one generate call (the test split's size)
MAX_TRAINING_STEPS = 1_000_000_000  # so that 10**9, "never" for log_every or ckpt_every, stays valid
MAX_SEED = 2**32 - 1


def _fail(message: str) -> None:
    raise ValueError(message)


def _number(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _allowed(kind: type | str, low: float | None, high: float | None, low_open: bool, high_open: bool,
             choices: tuple | None) -> str:
    """What a value may be, in words: "use 2..256", "use a number in [0, 1)", "use one of steps, time"."""
    if choices is not None:
        return f"use one of {', '.join(map(str, choices))}"
    if kind is bool:
        return "use true or false"
    if kind is str:
        return "use a string"
    if kind == "device":
        return "use auto, cpu, cuda, cuda:N or mps"
    what = "an integer" if kind is int else "a number"
    if low is not None and high is not None:
        if kind is int and not low_open and not high_open:
            return f"use {low}..{high}"
        return f"use {what} in {'(' if low_open else '['}{_number(low)}, {_number(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"use {what} {'>' if low_open else '>='} {_number(low)}"
    if high is not None:
        return f"use {what} {'<' if high_open else '<='} {_number(high)}"
    return f"use {what}"


def check_value(name: str, value: Any, kind: type | str, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False, choices: tuple | None = None,
                length: int | None = None, item: Spec | None = None, optional: bool = False, note: str = "") -> Any:
    """Check one value, a config field or any other argument, and return it in its canonical type.

    kind: bool (a real bool: not 1, not the string "false"), int (not a bool, not 2.5; 16.0 becomes 16), float
    (an int is fine; nan and inf are not), str, tuple (`length` items, each checked by `item`; a JSON list is
    fine), dict, or "device" (auto or a string torch.device reads). low/high bound numbers (inclusive unless
    low_open/high_open), choices lists the allowed values, optional lets None through. A bad value raises
    ValueError naming `name`, the value given and what is allowed (plus `note`), e.g.
    "TrainConfig.min_lr_ratio=-0.1 is out of range: use a number in [0, 1]"."""
    if value is None and optional:
        return None
    allowed = _allowed(kind, low, high, low_open, high_open, choices)
    extra = f" ({note})" if note else ""

    def fail(problem: str, hint: str = allowed) -> None:
        _fail(f"{name}={value!r} {problem}: {hint}{extra}")

    if kind is bool:
        if not isinstance(value, bool):
            flag = "--" + name.rsplit(".", 1)[-1].replace("_", "-")
            fail("is not true or false", f"write true or false{' without quotes' if isinstance(value, str) else ''}"
                                         f" (on the command line: {flag} or --no-{flag[2:]})")
        return value
    if kind is int or kind is float:
        what = "an integer" if kind is int else "a number"
        if isinstance(value, str):
            fail(f"is a string, not {what}", f"write it without quotes; {allowed}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            fail(f"is not {what}")
        if not math.isfinite(value):
            fail("is not a finite number")
        if kind is int:
            if value != int(value):
                fail("is not a whole number")
            value = int(value)
        else:
            value = float(value)
        if (low is not None and (value <= low if low_open else value < low)) or (
                high is not None and (value >= high if high_open else value > high)):
            fail("is out of range")
        if choices is not None and value not in choices:
            fail("is unknown")
        return value
    if kind is str or kind == "device":
        if not isinstance(value, str):
            fail("is not a string", allowed)
        if choices is not None and value not in choices:
            fail("is unknown")
        if kind == "device" and value != "auto":
            import torch  # only for device strings: keeps the config module light

            try:
                device = torch.device(value)
            except (RuntimeError, ValueError):
                fail("is not a device")
            if device.type not in ("cpu", "cuda", "mps"):
                fail("is not a device this course trains on")
        return value
    if kind is tuple:
        if not isinstance(value, (tuple, list)) or (length is not None and len(value) != length):
            fail(f"is not a list of {length} values" if length else "is not a list",
                 f"use a list of {length or 'some'} values")
        if item is not None:
            value = tuple(item.check(f"{name}[{i}]", v) for i, v in enumerate(value))
        return tuple(value)
    if kind is dict:
        if not isinstance(value, dict):
            fail("is not a table", "write a dict (a JSON object or a TOML table)")
        return value
    raise TypeError(f"check_value: unknown kind {kind!r}")


@dataclass(frozen=True)
class Spec:
    """What one config field accepts (the keywords of `check_value`)."""

    kind: type | str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    length: int | None = None
    item: Spec | None = None
    note: str = ""
    optional: bool = False

    def allowed(self) -> str:
        """What the field accepts, in words ("1..1000", "a number in [0, 1]"), as `--help` shows it."""
        if self.kind is tuple and self.item is not None:
            return f"{self.length or 'some'} values, each {self.item.allowed()}"
        words = _allowed(self.kind, self.low, self.high, self.low_open, self.high_open, self.choices)
        return words.removeprefix("use ")

    def check(self, name: str, value: Any) -> Any:
        return check_value(name, value, self.kind, low=self.low, high=self.high, low_open=self.low_open,
                           high_open=self.high_open, choices=self.choices, length=self.length, item=self.item,
                           optional=self.optional, note=self.note)


class _DictMixin:
    """`to_dict` / `from_dict` with an error that names unknown keys (a checkpoint or config file typo), and
    the one check every field goes through, whether it came from Python, a config file, a flag or a checkpoint."""

    SPECS: ClassVar[dict[str, Spec]] = {}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        if not isinstance(values, dict):
            _fail(f"{cls.__name__} values must be a table of field = value, got {type(values).__name__} "
                  f"{values!r:.80}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in values if k not in names]
        if unknown:
            hints = [f"'{k}' (did you mean {difflib.get_close_matches(str(k), names, 1)}?)" for k in unknown]
            _fail(f"{cls.__name__} has no field(s) {', '.join(hints)}; valid fields: {', '.join(names)}")
        return cls(**values)

    def _check_fields(self) -> None:
        """Check each field against its spec, in declaration order, and store it in its canonical type."""
        cls = type(self).__name__
        for f in dataclasses.fields(self):
            if f.name not in self.SPECS:
                raise TypeError(f"{cls}.{f.name} has no entry in {cls}.SPECS: give it a Spec (type and range)")
            setattr(self, f.name, self.SPECS[f.name].check(f"{cls}.{f.name}", getattr(self, f.name)))


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
    # Part III. aspect: the canvas is aspect × image_size wide (2: the two-slot scenes; cond_size scales alike);
    # vocabulary: the caption grammar the tokenizer reads ("classes": one garment; "scenes": two-garment scenes);
    # text_encoder: how the denoiser reads a caption, "cross" (a Transformer's sequence, by cross-attention, plus its
    # pooled vector), "pooled" (only that pooled vector) or "bow" (a bag of words: the mean word embedding).
    aspect: int = 1
    vocabulary: str = "classes"
    text_encoder: str = "cross"
    # d_text: the diffusion text encoder's width (feed-forward 4 × d_text); 0 = d_model. Another width is projected to
    # d_model, as Imagen projects T5's outputs to its U-Net's width: the text encoder scales apart from the denoiser.
    d_text: int = 0

    PIXEL_BINS: ClassVar[int] = 32  # pixel_condition: condition values in [0, 1] are binned this finely
    SPECS: ClassVar[dict[str, Spec]] = {
        "image_size": Spec(int, 4, 64, note="Fashion-MNIST is 28"),
        "levels": Spec(int, 2, 256, note="16 for fast runs, 256 for 8-bit bits/dim"),
        "d_model": Spec(int, 1, 4096, note="the course's models use 64 to 256"),
        "n_heads": Spec(int, 1, 64),
        "n_layers": Spec(int, 1, 64),
        "condition": Spec(str, choices=CONDITIONS, note="caption_lowres only with family='diffusion'"),
        "n_enc_layers": Spec(int, 0, 64),
        "d_ff": Spec(int, 0, 16384, note="0 means 4 * d_model"),
        "dropout": Spec(float, 0, 1, high_open=True),
        "max_caption_len": Spec(int, 2, 64, note="the words of a caption + its <bos> token"),
        "cond_size": Spec(int, 1, 64),
        "patch_size": Spec(int, 1, 64),
        "pixel_condition": Spec(bool),
        "family": Spec(str, choices=FAMILIES),
        "prediction": Spec(str, choices=PREDICTIONS),
        "conv_head": Spec(bool),
        "aspect": Spec(int, 1, 4, note="2 for the two-slot scenes; diffusion only"),
        "vocabulary": Spec(str, choices=VOCABULARIES, note="scenes for the two-garment captions of Part III"),
        "text_encoder": Spec(str, choices=TEXT_ENCODERS, note="cross is Imagen's; pooled and bow are ablations"),
        "d_text": Spec(int, 0, 4096, note="0 = d_model; diffusion models that read captions"),
    }

    def __post_init__(self) -> None:
        self._check_fields()  # each field's type and range; then the checks that read several fields
        allowed = FAMILY_CONDITIONS[self.family]
        if self.condition not in allowed:
            _fail(f"condition={self.condition!r} is unknown for family={self.family!r}: use one of "
                  f"{', '.join(allowed)}")
        if self.d_model % self.n_heads:
            _fail(f"d_model={self.d_model} must be a positive multiple of n_heads={self.n_heads}")
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
        if self.aspect != 1 and self.family != "diffusion":
            _fail(f"aspect={self.aspect} needs family='diffusion': the autoregressive model draws square images")
        if self.text_encoder != "cross" and (self.family != "diffusion" or self.condition == "none"):
            _fail(f"text_encoder={self.text_encoder!r} is for a caption-reading diffusion model; this one is "
                  f"family={self.family!r}, condition={self.condition!r}: use text_encoder='cross'")
        if self.d_text and (self.family != "diffusion" or self.condition not in ("caption", "caption_lowres")):
            _fail(f"d_text={self.d_text} sets the text encoder's width of a caption-reading diffusion model; this one "
                  f"is family={self.family!r}, condition={self.condition!r}: use d_text=0")
        if self.d_text % self.n_heads:
            _fail(f"d_text={self.d_text} must be a multiple of n_heads={self.n_heads} (the text encoder's heads)")

    @property
    def ff_width(self) -> int:
        return self.d_ff or 4 * self.d_model

    @property
    def text_width(self) -> int:
        """The width of the diffusion text encoder (d_text, or d_model when d_text is 0)."""
        return self.d_text or self.d_model

    @property
    def text_ff_width(self) -> int:
        """The text encoder's feed-forward width: the denoiser's, or 4 × d_text for a text encoder of its own width."""
        return 4 * self.d_text if self.d_text else self.ff_width

    @property
    def cond_image_size(self) -> int:
        """Side of the image the image encoder reads (lowres: cond_size; edges: image_size)."""
        return self.cond_size if self.condition in ("lowres", "caption_lowres") else self.image_size

    @property
    def image_shape(self) -> tuple[int, int]:
        """(height, width) of the images the model draws."""
        return self.image_size, self.aspect * self.image_size

    @property
    def cond_shape(self) -> tuple[int, int]:
        """(height, width) of the low-res image a super-resolution stage reads."""
        return self.cond_size, self.aspect * self.cond_size

    @property
    def seq_len(self) -> int:
        return self.image_size * self.image_size


@dataclass
class TrainConfig(_DictMixin):
    """How to train: batch, schedule, regularisation, precision, and how often to log, evaluate and save."""

    batch_size: int = 64  # images per optimizer step, over all processes and accumulation micro-steps
    steps: int = 2000  # optimizer steps; the LR schedule ends here
    stop_at: int = 0  # stop (and save) at this step, the schedule unchanged: a run to compare at step S; 0 = at steps
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
    keep_every: int = 0  # also keep the sampling weights (the EMA if on) every this many steps, for comparisons
    train_images: int = 0  # use only the first N training images (0 = all 60,000)
    ema_decay: float = 0.0  # keep an exponential moving average of the weights (0.999 for diffusion); 0 = off
    aug_max: float = 0.5  # diffusion super-resolution: noise augmentation levels drawn from U(0, aug_max)
    init_from: str = ""  # start from these weights (a checkpoint file or a shipped name): fine-tuning; "" = random
    data: str = "fashion-mnist"  # what to train on: single garments, or the two-garment scenes of Part III
    # data='scenes': how often training draws each form of the grammar, in captions.FORMS order (alone, on the
    # left, on the right, and, left of, right of, two): relations most, since word order is the hardest to learn
    scene_forms: tuple[float, ...] = (1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 1.0)
    # data='scenes': draw "A and B" with A on the left, in the order of mention, instead of either way round (the
    # caption allows both; evaluation and the grader still do)
    and_in_order: bool = False
    progress: bool = True  # tqdm progress bar (TQDM_DISABLE=1 also turns it off)
    extra: dict = field(default_factory=dict)  # free-form notes kept in the checkpoint

    SPECS: ClassVar[dict[str, Spec]] = {
        "batch_size": Spec(int, 1, 60_000, note="the training split has 60,000 images"),
        "steps": Spec(int, 1, MAX_TRAINING_STEPS),
        "stop_at": Spec(int, 0, MAX_TRAINING_STEPS, note="0 = at steps; a later --resume with a larger stop_at (or "
                                                          "0) continues the same schedule"),
        "max_minutes": Spec(float, 0, note="0 = no limit"),
        "schedule": Spec(str, choices=("steps", "time"), note="steps: the cosine ends at `steps`; time: at "
                                                              "max_minutes"),
        "lr": Spec(float, 0, low_open=True),
        "min_lr_ratio": Spec(float, 0, 1),
        "warmup_steps": Spec(int, 0, MAX_TRAINING_STEPS),
        "weight_decay": Spec(float, 0),
        "betas": Spec(tuple, length=2, item=Spec(float, 0, 1, high_open=True), note="e.g. [0.9, 0.95]"),
        "grad_clip": Spec(float, 0, note="0 turns clipping off"),
        "accum_steps": Spec(int, 1, 1024),
        "cond_dropout": Spec(float, 0, 1, high_open=True),
        "crop_padding": Spec(int, 0, 16, note="a few pixels; 0 turns the random crop off"),
        "hflip": Spec(float, 0, 1),
        "precision": Spec(str, choices=("auto", "fp32", "bf16", "fp16")),
        "compile": Spec(bool),
        "device": Spec("device"),
        "seed": Spec(int, 0, MAX_SEED),
        "log_every": Spec(int, 1, MAX_TRAINING_STEPS),
        "eval_every": Spec(int, 0, MAX_TRAINING_STEPS, note="0 turns the periodic evaluation off"),
        "eval_images": Spec(int, 1, 10_000, note="the test split has 10,000 images; eval_every=0 turns evaluation off"),
        "ckpt_every": Spec(int, 1, MAX_TRAINING_STEPS, note="a final checkpoint is always written as well"),
        "ckpt_minutes": Spec(float, 0, note="0 = off"),
        "keep_every": Spec(int, 0, MAX_TRAINING_STEPS, note="OUT/weights_step<N>.pt, fp16; 0 = off"),
        "train_images": Spec(int, 0, 60_000, note="0 = all 60,000"),
        "ema_decay": Spec(float, 0, 1, high_open=True, note="0 turns it off; 0.999 for diffusion"),
        "aug_max": Spec(float, 0, 1),
        "init_from": Spec(str, note="a checkpoint file or a shipped name such as 'diffusion_sr'; '' starts from "
                                    "random weights"),
        "data": Spec(str, choices=("fashion-mnist", "scenes"), note="scenes needs a model with vocabulary="
                                                                      "'scenes' and aspect=2"),
        "scene_forms": Spec(tuple, length=7, item=Spec(float, 0),
                            note="weights of alone, on the left, on the right, and, left of, right of, two"),
        "and_in_order": Spec(bool, note="data='scenes' only"),
        "progress": Spec(bool),
        "extra": Spec(dict),
    }

    def __post_init__(self) -> None:
        self._check_fields()  # each field's type and range; then the checks that read several fields
        if self.batch_size % self.accum_steps:
            _fail(f"batch_size={self.batch_size} must be divisible by accum_steps={self.accum_steps}")
        if self.stop_at > self.steps:
            _fail(f"stop_at={self.stop_at} is past steps={self.steps}, where the schedule ends: use stop_at <= steps "
                  f"(0 trains to steps)")
        if not sum(self.scene_forms):
            _fail("scene_forms are all 0: give at least one form of the scenes grammar a weight above 0")
        if self.schedule == "time" and self.max_minutes <= 0:
            _fail("schedule='time' decays the learning rate over max_minutes: set max_minutes > 0 as well")


# What the samplers of both families accept, checked by `check_sampling_args` for the Python API and, under their
# flag names, by the command line: one table, so a range or a note is written once.
SAMPLING_SPECS: dict[str, Spec] = {
    "temperature": Spec(float, 0, note="0 picks the most likely level; 1 draws from the model's distribution"),
    "top_k": Spec(int, 1, 256, optional=True, note="None keeps every level"),
    "guidance": Spec(float, 0, 100, note="1 is plain conditional sampling, 0 unconditional; 2 to 5 is typical"),
    "steps": Spec(int, 1, MAX_SAMPLING_STEPS, note="50 DDIM steps is a good default; 25 is nearly as good"),
    "sampler": Spec(str, choices=("ddim", "ddpm"), note="ddim is deterministic, ddpm ancestral"),
    "threshold": Spec(float, 0, 1, low_open=True, optional=True,
                      note="a percentile for dynamic thresholding, Imagen's is 0.995; or 'static' or None"),
    "aug_level": Spec(float, 0, 1, note="0 = the low-res image as given"),
    "batch_size": Spec(int, 1, MAX_IMAGES, optional=True, note="images drawn in one call"),
}


def check_sampling_args(**values: Any) -> dict[str, Any]:
    """Check sampling arguments by name against SAMPLING_SPECS and return them in their canonical types, e.g.
    check_sampling_args(steps=50, guidance=3) -> {"steps": 50, "guidance": 3.0}. threshold also takes "static"."""
    return {name: value if name == "threshold" and value == "static" else SAMPLING_SPECS[name].check(name, value)
            for name, value in values.items()}
