"""The training loop: one `Trainer` that runs the same on a laptop CPU, one GPU, or several under torchrun.

Each piece answers a problem chapter 05 measures: AdamW with decay only on weight matrices, warm-up then
cosine LR, gradient clipping, accumulation, mixed precision (bf16, or fp16 with a GradScaler) on CUDA,
optional torch.compile, periodic test bits/dim and samples, a JSONL log with throughput and MFU, atomic
checkpoints that resume exactly, a NaN guard, and DistributedDataParallel when WORLD_SIZE > 1.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import math
import os
import re
import signal
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .checkpoint import (
    CheckpointError,
    build_model,
    check_config,
    check_finite_weights,
    export_model,
    load_checkpoint,
    model_from_state,
    save_checkpoint,
)
from .config import ModelConfig, TrainConfig, check_value
from .data import (
    NOUN_PHRASES,
    all_captions,
    augment,
    image_condition,
    load_fashion_mnist,
    quantize,
    resize,
    to_float,
)
from .grader import GRID_TWINS, twin_probe
from .metrics import dataset_bits_per_dim, diffusion_test_loss
from .scenes import Wardrobe, test_scenes
from .viz import check_writable_folder, save_grid

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}  # dense


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training; the message says which step the kept checkpoint holds and how to continue."""


# On resume these fix which images each step reads, so the resumed run could not be the same run.
FIXED_ON_RESUME = ("batch_size", "accum_steps", "seed", "train_images", "data", "scene_forms", "and_in_order")
# On resume these are applied to the optimizer and the LR schedule from the resumed step on.
SCHEDULE_FIELDS = ("lr", "min_lr_ratio", "warmup_steps", "steps", "weight_decay", "betas", "schedule", "max_minutes")


def kept_weights_file(out: str | Path, step: int) -> Path:
    """Where a run in `out` keeps its sampling weights at `step` (TrainConfig.keep_every): OUT/weights_step<N>.pt."""
    return Path(out) / f"weights_step{step:06d}.pt"


def kept_weights(out: str | Path) -> dict[int, Path]:
    """Every weights file a run in `out` kept along training, by step, in order."""
    found = {int(m.group(1)): p for p in Path(out).glob("weights_step*.pt")
             if (m := re.fullmatch(r"weights_step(\d+)\.pt", p.name))}
    return dict(sorted(found.items()))


def pick_device(name: str = "auto") -> torch.device:
    """auto: cuda, then mps, then cpu. Any other name is parsed and refused if this machine lacks that device."""
    check_value("device", name, "device")
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={name!r}, but PyTorch sees no CUDA GPU on this machine "
                             f"(torch.cuda.is_available() is False): use --device cpu, or auto")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device={name!r}, but this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                             f"numbered from 0: use cuda:0 .. cuda:{torch.cuda.device_count() - 1}, or auto")
        if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device={name!r}, but this machine has no Apple GPU (MPS): use --device cpu, or auto")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def lr_factor(step: int, cfg: TrainConfig, progress: float | None = None) -> float:
    """Linear warm-up to 1, then cosine decay to cfg.min_lr_ratio at cfg.steps.

    `progress` (0..1) replaces the step-based position on the cosine: a run with schedule="time" passes the
    fraction of its wall-clock budget spent, so a run stopped by the clock still ends at the low learning rate.
    """
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if progress is None:
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, max(0.0, progress))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _grad_scaler(device: torch.device, enabled: bool):
    """torch.amp.GradScaler (PyTorch >= 2.3), or the older CUDA-only class on the GPU machines' older PyTorch."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(device.type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled and device.type == "cuda")


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model, parameter by parameter (buffers are copied)."""
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach().to(e.dtype), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA's decay after `step` optimizer steps: min(decay, (1 + step)/(10 + step)), so the average does not
    drag the random initial weights along for thousands of steps."""
    return min(decay, (1 + step) / (10 + step))


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay only on Linear/Conv weight matrices, never on biases, norms or embeddings."""
    decay = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) in decay], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0}]
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, **fused)


class BatchStream:
    """Shuffled indices, one permutation per epoch from (seed, epoch), so the position is a resumable state.
    With several processes each takes every world-th index, as DistributedSampler does."""

    def __init__(self, n: int, batch: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if n < batch * world:
            raise ValueError(f"{n} training images are fewer than one batch of {batch * world}")
        self.n, self.batch, self.seed, self.rank, self.world = n, batch, seed, rank, world
        self.epoch, self.pos, self._perm = 0, 0, None

    def next(self) -> torch.Tensor:
        span = self.batch * self.world
        if self.pos + span > self.n:  # drop the last partial batch, start a new epoch
            self.epoch, self.pos, self._perm = self.epoch + 1, 0, None
        if self._perm is None:
            self._perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        idx = self._perm[self.pos + self.rank : self.pos + span : self.world]
        self.pos += span
        return idx

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos, self._perm = state["epoch"], state["pos"], None


class SceneStream:
    """Two-garment scenes (Part III), a batch per call, drawn from a generator seeded by (seed, count, rank): the
    position is one count, so a resumed run draws exactly the scenes the straight run would have drawn. `forms`
    and `and_in_order`: how often each form of the grammar is drawn, and how "A and B" is laid out (TrainConfig's
    scene_forms and and_in_order)."""

    def __init__(self, wardrobe, batch: int, seed: int, rank: int = 0, forms: tuple[float, ...] | None = None,
                 and_in_order: bool = False) -> None:
        self.wardrobe, self.batch, self.seed, self.rank, self.count = wardrobe, batch, seed, rank, 0
        self.forms, self.and_in_order = forms, and_in_order

    def next(self) -> tuple[torch.Tensor, list[str]]:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.count) * 1024 + self.rank)
        self.count += 1
        return self.wardrobe.batch(self.batch, generator, forms=self.forms, and_in_order=self.and_in_order)

    def state_dict(self) -> dict:
        return {"count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.count = state["count"]


def check_data(model_cfg: ModelConfig, cfg: TrainConfig) -> None:
    """The training data must be what the model reads: scenes for a scenes model (vocabulary 'scenes', a two-slot
    canvas, diffusion), single garments for every other; no flips or crops of scenes (a flip swaps left and right)."""
    scenes_model = model_cfg.vocabulary == "scenes"
    if (cfg.data == "scenes") != scenes_model:
        raise ValueError(f"data={cfg.data!r} but the model's vocabulary is {model_cfg.vocabulary!r}: train a model "
                         f"with vocabulary='scenes' (and aspect=2) on data='scenes', any other on 'fashion-mnist'")
    if scenes_model and (model_cfg.family != "diffusion" or model_cfg.aspect != 2 or model_cfg.condition == "none"):
        raise ValueError(f"data='scenes' trains a caption-reading diffusion model on a two-slot canvas: set family="
                         f"'diffusion', aspect=2 and condition 'caption' or 'caption_lowres' (got "
                         f"{model_cfg.family!r}, aspect={model_cfg.aspect}, {model_cfg.condition!r})")
    for name in ("scene_forms", "and_in_order"):  # how scenes are drawn: their defaults for any other data
        if not scenes_model and getattr(cfg, name) != getattr(TrainConfig, name):
            raise ValueError(f"{name} sets how the scenes of Part III are drawn and does not apply to data="
                             f"'fashion-mnist' (single garments): drop it")
    if scenes_model and (cfg.hflip or cfg.crop_padding):
        raise ValueError("hflip and crop_padding do not apply to scenes: a flip would swap left and right. Set both "
                         "to 0")


class Trainer:
    """Build everything from two configs and an output folder; `run()` trains, `train_step()` does one step."""

    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, out_dir: str | Path, resume: bool = False,
                 data: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        self.model_cfg, self.cfg, self.out = model_cfg, cfg, Path(out_dir)
        # the folder's problems now, not at the first save after minutes of training
        check_writable_folder(self.out, files=("checkpoint.pt", "log.jsonl"), target=f"the run's files into {self.out}")
        if not resume and (self.out / "checkpoint.pt").exists():
            raise FileExistsError(f"{self.out} already holds a checkpoint.pt; continue it with resume=True "
                                  f"(--resume) or train into another folder (--out), so nothing saved is lost")
        if resume and not (self.out / "checkpoint.pt").is_file():
            raise FileNotFoundError(f"nothing to resume: {self.out} holds no checkpoint.pt; start a new run there "
                                    f"without resume (--resume), or give the folder of the run to continue (--out)")
        self.resumed, self.start_step = resume, 0  # the step this run starts from (see log())
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = pick_device(cfg.device)
        if self.world > 1:
            if self.device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if cfg.batch_size % (self.world * cfg.accum_steps):
            raise ValueError(f"batch_size={cfg.batch_size} must divide by processes × accum_steps = "
                             f"{self.world} × {cfg.accum_steps}")
        self.micro_batch = cfg.batch_size // (self.world * cfg.accum_steps)

        check_data(model_cfg, cfg)
        torch.manual_seed(cfg.seed)  # the same initial weights on every process
        self.model = build_model(model_cfg).to(self.device)
        if cfg.init_from and not resume:  # fine-tuning: the weights of another run, then this run's schedule
            self._init_from(cfg.init_from)
        self.diffusion = model_cfg.family == "diffusion"
        # the exponential moving average of the weights, what diffusion models sample with (saved in checkpoints)
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if cfg.ema_decay else None
        self.optimizer = make_optimizer(self.model, cfg, self.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, functools.partial(lr_factor, cfg=cfg))
        self.dtype = self._autocast_dtype()
        self.scaler = _grad_scaler(self.device, enabled=self.dtype == torch.float16)
        self.net: nn.Module = torch.compile(self.model) if cfg.compile else self.model
        if self.world > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        images, labels = data if data is not None else load_fashion_mnist("train")
        if cfg.train_images:
            images, labels = images[: cfg.train_images], labels[: cfg.train_images]
        self.test = None  # loaded on first evaluation
        self.scenes = cfg.data == "scenes"
        if self.scenes:  # each step draws new scenes from the garments; each caption is tokenized as drawn
            self.batches = SceneStream(Wardrobe(images, labels), self.micro_batch, cfg.seed, self.rank,
                                       cfg.scene_forms, cfg.and_in_order)
        else:
            self.images, self.labels = resize(images, model_cfg.image_size), labels
            self.batches = BatchStream(len(self.images), self.micro_batch, cfg.seed, self.rank, self.world)
        # single garments: every caption of every class, tokenized once: [10, V, S]
        if model_cfg.condition in ("caption", "caption_lowres") and not self.scenes:
            captions = [all_captions(c) for c in range(len(NOUN_PHRASES))]
            n = max(len(c) for c in captions)
            table = self.model.tokenizer.encode([caps[i % len(caps)] for caps in captions for i in range(n)])
            self.caption_table = table.view(len(captions), n, -1)
            self.caption_counts = torch.tensor([len(c) for c in captions])
        self.step, self.elapsed, self.eval_figures = 0, 0.0, {}
        torch.manual_seed(cfg.seed + 1 + self.rank)  # per-process randomness for dropout and augmentation
        if resume:
            self.load(self.out / "checkpoint.pt")

    def _init_from(self, spec: str) -> None:
        """Load the weights (a diffusion checkpoint's EMA where it has one) of a checkpoint file or a shipped
        checkpoint's name into the new model; its model config must be this run's."""
        from .pretrained import read_manifest, shipped_state

        if Path(spec).is_file():
            state, source = load_checkpoint(spec), f"checkpoint {spec}"
        elif spec in read_manifest():
            state, source = shipped_state(spec), f"shipped checkpoint {spec!r}"
        else:
            raise FileNotFoundError(f"init_from={spec!r} is neither a checkpoint file nor a shipped checkpoint's "
                                    f"name: give a path to a .pt file or a name such as 'diffusion_sr'")
        if "model_config" not in state:
            raise CheckpointError(f"init_from: {source} is not an image model's checkpoint")
        check_config(state["model_config"], self.model_cfg, f"init_from: {source}")
        self.model.load_state_dict(model_from_state(state, f"init_from: {source}").state_dict())

    def _autocast_dtype(self) -> torch.dtype | None:
        p = self.cfg.precision
        if p == "fp32" or (p == "auto" and self.device.type != "cuda"):
            return None
        if p == "fp16" or (p == "auto" and not torch.cuda.is_bf16_supported()):
            if self.device.type != "cuda":
                raise ValueError("precision='fp16' needs a CUDA device; use fp32 or bf16 on the CPU")
            return torch.float16
        return torch.bfloat16

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    # ------------------------------------------------------------ one step
    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(images, condition, drop [b]) for one micro-batch, on the device: images are levels [b, H, W] for the
        autoregressive family and floats [b, 1, H, W] in [0, 1] for diffusion (whose SR stage makes its
        low-res input from them)."""
        condition, cond, drop = self.model_cfg.condition, None, None
        if self.scenes:  # this step's scenes and their captions
            raw, captions = self.batches.next()
            raw = resize(raw, self.model_cfg.image_shape)
            cond = self.model.tokenizer.encode(captions, max_len=self.model_cfg.max_caption_len)
        else:
            idx = self.batches.next()
            raw, labels = self.images[idx], self.labels[idx]
            if self.cfg.crop_padding or self.cfg.hflip:
                raw = augment(raw, self.cfg.crop_padding, self.cfg.hflip)
            if condition in ("caption", "caption_lowres"):  # diffusion SR: the low-res image comes from the target
                choice = (torch.rand(len(idx)) * self.caption_counts[labels]).long()
                cond = self.caption_table[labels, choice]
            elif condition != "none":
                cond = image_condition(raw, condition, self.model_cfg.cond_size)
        if condition != "none":
            drop = (torch.rand(len(raw)) < self.cfg.cond_dropout).to(self.device)
            cond = cond.to(self.device, non_blocking=True)
        if self.diffusion:
            return to_float(raw).to(self.device, non_blocking=True), cond, drop
        return quantize(raw, self.model_cfg.levels).to(self.device, non_blocking=True), cond, drop

    def batch_loss(self, images: torch.Tensor, cond: torch.Tensor | None, drop: torch.Tensor | None) -> torch.Tensor:
        """The family's training loss on one micro-batch, through self.net (compiled / DDP-wrapped)."""
        if self.diffusion:
            return self.model.loss(images, cond, drop, aug_max=self.cfg.aug_max, net=self.net, check=False)
        logits = self.net(images, cond, drop, check=False)
        return F.cross_entropy(logits.flatten(0, 1).float(), images.flatten())

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step over cfg.accum_steps micro-batches; returns (mean loss in nats, grad norm).
        All or nothing for a checkpoint: until the update, `_step_start` keeps the data position and RNG state the
        step began with (a Ctrl-C then rolls back to them); the update itself is never cut short by a Ctrl-C."""
        self._step_start = self._position()
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for micro in range(self.cfg.accum_steps):
            images, cond, drop = self.next_batch()
            last = micro == self.cfg.accum_steps - 1
            sync = self.net.no_sync() if self.world > 1 and not last else contextlib.nullcontext()
            with sync, self.autocast():
                loss = self.batch_loss(images, cond, drop)
            self.scaler.scale(loss / self.cfg.accum_steps).backward()
            total += loss.detach() / self.cfg.accum_steps
        self.scaler.unscale_(self.optimizer)
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip or float("inf"))
        with self._uninterrupted():
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.step += 1
            if self.ema is not None:
                ema_update(self.ema, self.model, ema_decay_at(self.step, self.cfg.ema_decay))
            self._step_start = None
        return total, norm

    _step_start: tuple | None = None  # (data position, RNG states) of a step not yet applied
    _deferring = _deferred = False  # a Ctrl-C during the update waits for its end (_uninterrupted)

    def _position(self) -> tuple:
        """What drawing a batch changes: the data position and the RNG states (for _step_start)."""
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return self.batches.state_dict(), torch.get_rng_state(), cuda

    @contextlib.contextmanager
    def _uninterrupted(self):
        """Run the block whole: a Ctrl-C that would stop training at once inside it is raised at its end."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self._deferred:
            raise KeyboardInterrupt

    # ------------------------------------------------------------ evaluation, checkpoints, logging
    def evaluate(self) -> float:
        """Test bits/dim (diffusion: the test loss, with the EMA weights) on the first cfg.eval_images official
        test images (scenes: cfg.eval_images test scenes drawn from the seed); writes a sample grid."""
        if self.test is None and self.scenes:
            self.test = test_scenes(self.cfg.eval_images, self.cfg.seed)
        elif self.test is None:
            images, labels = load_fashion_mnist("test")
            self.test = images[: self.cfg.eval_images], labels[: self.cfg.eval_images]
        if self.diffusion:
            return self.evaluate_diffusion()
        bpd = dataset_bits_per_dim(self.model, *self.test).mean().item()
        c = self.model_cfg
        n = 10
        cond = None
        if c.condition == "caption":
            cond = [all_captions(k)[0] for k in range(n)]
        elif c.condition != "none":
            cond = image_condition(resize(self.test[0][:n], c.image_size), c.condition, c.cond_size).to(self.device)
        generator = torch.Generator(self.device).manual_seed(self.cfg.seed)  # leaves the training RNG alone
        samples = self.model.generate(cond, generator=generator, batch_size=n)
        save_grid(samples, c.levels, self.out / f"samples_{self.step:06d}.png")
        return bpd

    @torch.no_grad()
    def evaluate_diffusion(self) -> float:
        """The test loss at fixed noise (seeded; the training RNG is left alone) and a grid of 10 samples, one per
        class (DDIM, 25 steps, guidance 3), both with the EMA weights when there are any. A scenes base stage also
        grades swapped twins (grader.twin_probe: the loss does not show whether order is learned) into
        self.eval_figures, which the log row of the evaluation carries."""
        model, c = self.ema or self.model, self.model_cfg
        images = to_float(resize(self.test[0], c.image_shape))
        was_training = model.training
        model.eval()
        loss = diffusion_test_loss(model, self.test[0], self.test[1], self.cfg.seed, self.cfg.aug_max)
        generator = torch.Generator(self.device).manual_seed(self.cfg.seed)
        captions = [all_captions(k)[0] for k in range(10)] if model.reads_caption else None
        if self.scenes:  # five captions, each beside its swapped twin
            captions = [s.caption for pair in GRID_TWINS for s in (pair, pair.twin())]
        lowres = None
        if model.reads_lowres:  # the first 10 test images, downsampled, with their captions
            captions = self.test[1][:10] if self.scenes else [all_captions(int(k))[0] for k in self.test[1][:10]]
            lowres = torch.nn.functional.interpolate(images[:10], size=c.cond_shape, mode="area")
        samples = model.generate(captions, lowres=lowres, steps=25, guidance=3.0 if captions else 1.0,
                                 generator=generator, batch_size=10)
        nrow = 2 if self.scenes else 10
        save_grid(quantize(samples[:, 0].cpu(), c.levels), c.levels, self.out / f"samples_{self.step:06d}.png", nrow)
        if self.scenes and not model.reads_lowres:
            self.eval_figures = twin_probe(model, seed=self.cfg.seed)
        model.train(was_training)
        return loss

    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "step": self.step, "elapsed_s": self.elapsed, "batches": self.batches.state_dict(),
                "model_config": self.model_cfg.to_dict(), "train_config": self.cfg.to_dict(), "rng": rng,
                **({"ema": self.ema.state_dict()} if self.ema is not None else {})}

    saved_step: int | None = None  # the step OUT/checkpoint.pt holds (None: nothing saved or loaded yet)
    _unsaved_losses: list | tuple = ()  # the losses of the steps since then (run() keeps them)

    def save(self) -> None:
        """Write OUT/checkpoint.pt atomically, and only a good state: if a loss since the last save or any weight
        is NaN or inf, raise TrainingDiverged without writing, so the last good checkpoint is kept."""
        problem = self._bad_state()
        if problem:
            raise self._diverged(problem)
        if self.rank == 0:
            save_checkpoint(self.state_dict(), self.out / "checkpoint.pt")
        if self.world > 1:
            dist.barrier()
        self.saved_step, self._unsaved_losses = self.step, []

    def keep_weights(self) -> Path:
        """Write the weights that sample (the EMA if on), fp16 and without the optimizer, to
        OUT/weights_step<N>.pt: the same run at several steps, for comparisons along training. load_model reads
        them."""
        path = kept_weights_file(self.out, self.step)
        if self.rank == 0:
            export_model(self.ema or self.model, path, half=True, steps=self.step)
        return path

    def _bad_state(self) -> str | None:
        """What is wrong with the current state (a NaN or inf loss since the last save, or weight), or None."""
        losses = self._unsaved_losses
        mean = torch.stack(losses).float().mean() if losses else torch.zeros((), device=self.device)
        weights = torch.stack([p.detach().isfinite().all() for p in self.model.parameters()]).all()
        good = torch.stack([mean.isfinite(), weights]).float().to(self.device)
        if self.world > 1:  # every process must take the same decision, or the barrier waits forever
            dist.all_reduce(good, op=dist.ReduceOp.MIN)
        loss_ok, weights_ok = good.tolist()
        if not loss_ok:
            return f"the loss became {mean.item()}"
        return None if weights_ok else "the weights became NaN or inf (the loss was still finite)"

    def _diverged(self, problem: str) -> TrainingDiverged:
        kept = self.out / "checkpoint.pt"
        if self.saved_step is None:
            where, then = "no checkpoint was written (there was no good state to keep yet)", "train again"
        else:
            where, then = f"{kept} is the last good state (step {self.saved_step})", "resume with --resume"
        return TrainingDiverged(
            f"{problem} by step {self.step}; training stopped without saving, so {where}. Lower lr (now "
            f"{self.cfg.lr}; a new --lr is applied on resume), keep grad_clip on, or use precision='fp32', "
            f"then {then}.")

    def load(self, path: Path) -> None:
        """Restore everything from a checkpoint of the same model config (else an error naming the fields)."""
        state = load_checkpoint(path, map_location=str(self.device))
        check_config(state["model_config"], self.model_cfg, f"checkpoint {path}")
        missing = [k for k in ("optimizer", "scheduler", "scaler", "batches", "step", "elapsed_s", "rng")
                   if k not in state]
        if missing:  # export_model and the shipped checkpoints keep the weights only
            raise CheckpointError(f"checkpoint {path} holds weights only, not a training state ({', '.join(missing)} "
                                  f"missing), so training cannot resume from it: train into a new --out")
        check_finite_weights(state["model"], f"checkpoint {path}", "training cannot resume from it")
        self.model.load_state_dict(state["model"])
        if self.ema is not None:  # a run that starts averaging on resume begins from the current weights
            self.ema.load_state_dict(state.get("ema", state["model"]))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.batches.load_state_dict(state["batches"])
        self.step, self.elapsed = state["step"], state["elapsed_s"]
        self.start_step = self.step
        if self.world == 1:  # exact continuation; other processes re-seed from (seed, rank, step)
            torch.set_rng_state(state["rng"]["torch"].cpu())
            if "cuda" in state["rng"] and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)
        else:
            torch.manual_seed(self.cfg.seed + 1 + self.rank + 1000 * self.step)
        self._resume_with(state, path)

    def _resume_with(self, state: dict, path: Path) -> None:
        """Continue the checkpoint's run under this run's config. Schedule fields that changed (SCHEDULE_FIELDS)
        are applied to the optimizer and the LR schedule from this step on, and said in one line and in the log;
        fields that fix the training data's order (FIXED_ON_RESUME) cannot change. The saved config stays the
        one that ran: it keeps each change, with its step, in extra["resumed"]."""
        self.saved_step = self.step
        if "train_config" not in state:  # written by export_model: weights only
            return
        saved, now = {**TrainConfig().to_dict(), **state["train_config"]}, self.cfg.to_dict()

        def same(a, b) -> bool:  # a tuple comes back from some files as a list
            return (list(a) if isinstance(a, tuple) else a) == (list(b) if isinstance(b, tuple) else b)

        fixed = [f"{k}={saved[k]!r} in the checkpoint but {now[k]!r} here" for k in FIXED_ON_RESUME
                 if not same(saved[k], now[k])]
        if fixed:
            raise ValueError(
                f"checkpoint {path} cannot continue with another {', '.join(FIXED_ON_RESUME)} ({'; '.join(fixed)}): "
                f"they fix which images each step reads. Resume with the checkpoint's values (drop those flags), "
                f"or train into a new --out.")
        if not same(saved["init_from"], now["init_from"]):
            raise ValueError(
                f"init_from={now['init_from']!r} cannot apply to a resumed run: it picks a new run's first weights, "
                f"and checkpoint {path} continues its own run (which started from "
                f"{repr(saved['init_from']) if saved['init_from'] else 'random weights'}). Drop --init-from to "
                f"resume, or start a new run with it in another --out.")
        if self.step >= self.cfg.steps:
            raise ValueError(f"checkpoint {path} is already at step {self.step} and steps={self.cfg.steps}: nothing "
                             f"is left to train. Raise --steps to continue (the cosine then ends at the new steps).")
        if self.step >= self.cfg.stop_at > 0:
            raise ValueError(f"checkpoint {path} is already at step {self.step} and stop_at={self.cfg.stop_at}: "
                             f"nothing is left to train. Raise --stop-at (up to steps={self.cfg.steps}; 0 = to the "
                             f"end) to continue the same schedule.")
        changed = {k: [saved[k], now[k]] for k in SCHEDULE_FIELDS if not same(saved[k], now[k])}
        history = list(saved["extra"].get("resumed", [])) if isinstance(saved["extra"], dict) else []
        if changed:
            for group in self.optimizer.param_groups:
                group["initial_lr"], group["betas"] = self.cfg.lr, self.cfg.betas
            self.optimizer.param_groups[0]["weight_decay"] = self.cfg.weight_decay  # the decay group comes first
            # the schedule at this step with the new values: lr = lr · lr_factor(step, new config)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, functools.partial(lr_factor, cfg=self.cfg), last_epoch=self.step - 1)
            history.append({"step": self.step, **changed})
            if self.rank == 0:
                print(f"resuming {path} at step {self.step} with "
                      f"{', '.join(f'{k} {a} -> {b}' for k, (a, b) in changed.items())} "
                      f"(the run so far used the old values)")
            self.log({"step": self.step, "resumed_with": changed})
        if history:
            self.cfg = dataclasses.replace(self.cfg, extra={**self.cfg.extra, "resumed": history})

    _log_started = False

    def log(self, row: dict) -> None:
        """Append a row to OUT/log.jsonl. If the file already held rows (another run's, or the steps after the
        checkpoint this run resumes), this run's first row is a marker, {"step": s, "run": "new" | "resumed"}, so
        that viz.read_log gives one run's history and the old rows are kept, not mixed in."""
        if self.rank != 0:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "log.jsonl"
        with open(path, "a") as f:
            if not self._log_started and f.tell() > 0:
                kind = "resumed" if self.resumed else "new"
                f.write(json.dumps({"step": self.start_step, "run": kind, "time": time.strftime("%Y-%m-%d %H:%M:%S")})
                        + "\n")
                if kind == "new":
                    print(f"note: {path} holds an earlier run's rows; this run's follow a marker row, and read_log "
                          f"reads only this run's")
            self._log_started = True
            f.write(json.dumps(row) + "\n")

    def peak_flops(self) -> float | None:
        if self.device.type != "cuda":
            return None
        if "IMAGEN_PEAK_FLOPS" in os.environ:
            return float(os.environ["IMAGEN_PEAK_FLOPS"])
        name = torch.cuda.get_device_name(self.device)
        return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)

    # ------------------------------------------------------------ the loop
    def _time_schedule_lr(self) -> None:
        """With schedule="time", set the next step's learning rate from the fraction of max_minutes spent."""
        if self.cfg.schedule != "time":
            return
        factor = lr_factor(self.step, self.cfg, progress=self.elapsed / (60 * self.cfg.max_minutes))
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor

    def run(self) -> dict:
        """Train until cfg.steps (or cfg.stop_at, or cfg.max_minutes); returns a summary of the last logged figures.

        Ctrl-C (SIGINT) stops after the current step: that step is saved if it is good, and TrainingInterrupted
        says which step the kept checkpoint holds and how to continue. A second Ctrl-C stops at once and keeps the
        last whole step: a step it cuts short is undone (train_step), so the checkpoint still resumes exactly."""
        self._unsaved_losses, self._stop_requested, self._deferred, self._bar = [], False, False, None
        handler = threading.current_thread() is threading.main_thread()  # signals reach only the main thread
        previous = signal.signal(signal.SIGINT, self._on_sigint) if handler else None
        try:
            return self._run()
        except KeyboardInterrupt:
            raise self._interrupted() from None
        finally:
            if handler:
                signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)

    def _on_sigint(self, signum, frame) -> None:
        if self._stop_requested:  # the second Ctrl-C: stop now (an atomic save in progress keeps the old file)
            if self._deferring:  # ...but let the optimizer update finish first (milliseconds)
                self._deferred = True
                return
            raise KeyboardInterrupt
        self._stop_requested = True
        if self.rank == 0:
            print("\nCtrl-C: stopping after this step (press it again to stop at once)", flush=True)

    def _interrupted(self) -> TrainingInterrupted:
        """Save the current step if it is good (and not saved yet); say what is kept and how to continue."""
        if self._bar is not None:
            self._bar.close()
        kept = self.out / "checkpoint.pt"
        problem = None
        if self._step_start is not None:  # stopped inside a step, before its update: undo what it drew
            (batches, rng, cuda), self._step_start = self._step_start, None
            self.batches.load_state_dict(batches)
            torch.set_rng_state(rng)
            if cuda is not None:
                torch.cuda.set_rng_state(cuda, self.device)
        if self.step and self.step != self.saved_step:
            try:
                self.save()
            except TrainingDiverged:
                problem = self._bad_state()
        if self.saved_step is None:
            return TrainingInterrupted(f"stopped at step {self.step} before any checkpoint was written"
                                       f"{f' ({problem})' if problem else ''}; nothing is kept: train again")
        bad = f", where {problem}, so it was not saved" if problem else ""
        return TrainingInterrupted(f"stopped at step {self.step}{bad}; the checkpoint at step {self.saved_step} is "
                                   f"kept in {kept}; continue with --resume (Trainer(..., resume=True))")

    def _run(self) -> dict:
        from tqdm import tqdm  # plain text bar: no ipywidgets needed in notebooks

        cfg = self.cfg
        self.model.train()
        cond_len = self.caption_table.size(-1) if hasattr(self, "caption_table") else (
            self.model_cfg.max_caption_len if self.scenes else  # scene captions are padded to max_caption_len
            (self.model_cfg.cond_image_size // self.model_cfg.patch_size) ** 2
            if self.model_cfg.condition != "none" else 0)
        flops = self.model.flops_per_image(cond_len)  # training FLOPs per image (chapter 05 derives it)
        peak = self.peak_flops()
        quiet = not cfg.progress or self.rank != 0 or os.environ.get("TQDM_DISABLE", "") not in ("", "0")
        end = cfg.stop_at or cfg.steps  # stop_at ends the run early; the schedule still runs to cfg.steps
        bar = self._bar = tqdm(total=end, initial=self.step, disable=quiet,
                   desc="training", unit="step", dynamic_ncols=True)
        summary: dict = {"step": self.step}
        losses: list[torch.Tensor] = []
        start, mark, mark_step = time.perf_counter(), time.perf_counter(), self.step
        elapsed0 = self.elapsed
        saved_at = self.elapsed  # for ckpt_minutes
        self._time_schedule_lr()
        while self.step < end:
            loss, norm = self.train_step()
            losses.append(loss)
            self._unsaved_losses.append(loss)  # save() checks them
            self.elapsed = elapsed0 + time.perf_counter() - start
            out_of_time = bool(cfg.max_minutes) and self.elapsed >= 60 * cfg.max_minutes
            save_due = bool(cfg.ckpt_minutes) and self.elapsed - saved_at >= 60 * cfg.ckpt_minutes
            if self.world > 1:  # every process decides alike (a Ctrl-C may reach them a step apart)
                flags = torch.tensor([float(out_of_time), float(save_due), self.elapsed, float(self._stop_requested)],
                                     device=self.device, dtype=torch.float64)
                dist.all_reduce(flags, op=dist.ReduceOp.MAX)
                out_of_time, save_due = bool(flags[0].item()), bool(flags[1].item())
                self.elapsed = flags[2].item()  # one clock for all, so schedule="time" gives every rank one lr
                self._stop_requested = bool(flags[3].item())
            self._time_schedule_lr()
            done = self.step >= end or out_of_time
            if self.step % cfg.log_every == 0 or done or self.step % cfg.ckpt_every == 0:
                mean = torch.stack(losses).mean().item()  # one device sync per log interval
                if not math.isfinite(mean):
                    bar.close()
                    raise self._diverged(f"the loss became {mean}")
                now = time.perf_counter()
                img_s = (self.step - mark_step) * cfg.batch_size / max(now - mark, 1e-9)
                lr = self.optimizer.param_groups[0]["lr"]  # the next step's (set by the scheduler or the clock)
                figure = {"train_loss": mean} if self.diffusion else {"train_bpd": mean / math.log(2)}
                summary = {"step": self.step, **figure, "lr": lr,
                           "grad_norm": float(norm), "img_per_s": img_s,
                           "tokens_per_s": img_s * getattr(self.model, "tokens_per_image", self.model_cfg.seq_len),
                           "mfu": img_s * flops / (self.world * peak) if peak else None,  # per GPU
                           "elapsed_s": round(self.elapsed, 2)}
                if self.device.type == "cuda":
                    summary["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3)
                self.log(summary)
                bar.set_postfix(loss=f"{next(iter(figure.values())):.3f}", img_s=f"{img_s:.0f}")
                losses, mark, mark_step = [], now, self.step
            evaluate = bool(cfg.eval_every) and (self.step % cfg.eval_every == 0 or done)
            problem = self._bad_state() if evaluate else None  # every process; never sample from NaN weights
            if problem:
                bar.close()
                raise self._diverged(problem)
            if evaluate and self.rank == 0:
                key = "test_loss" if self.diffusion else "test_bpd"
                summary[key] = self.evaluate()
                self.log({"step": self.step, key: summary[key], **self.eval_figures})
                mark, mark_step = time.perf_counter(), self.step  # evaluation time is not training throughput
            if self.step % cfg.ckpt_every == 0 or done or save_due:
                self.save()
                saved_at = self.elapsed
            if cfg.keep_every and self.step % cfg.keep_every == 0:
                self.keep_weights()
            bar.update(1)
            if self._stop_requested:  # Ctrl-C during this step: run() saves it and says how to continue
                raise KeyboardInterrupt
            if out_of_time:
                bar.write(f"stopped after {cfg.max_minutes} minutes at step {self.step} (checkpoint saved)")
                break
        bar.close()
        return summary


def train(model_cfg: ModelConfig, cfg: TrainConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """Train a model; checkpoint, log and sample grids go to out_dir. Returns the last logged figures."""
    trainer = Trainer(model_cfg, cfg, out_dir, resume=resume)
    try:
        return trainer.run()
    finally:
        if trainer.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
