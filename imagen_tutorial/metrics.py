"""How good is a model? Bits per dimension over a dataset, and a judge for what it draws.

Bits/dim is the average number of bits the model needs to encode one pixel (its negative log-likelihood in
base 2): log2(levels) for a model that knows nothing, lower is better, and comparable with published numbers
only at 256 levels on the official test set.

Bits/dim says nothing about whether samples look right, so generated images are also shown to a small
classifier (the "judge"): conditional accuracy is the fraction it assigns to the class the caption asked for,
and the Fréchet distance compares the spread of its features on generated and on real test images (FID's
recipe with a Fashion-MNIST network in place of Inception; numbers are comparable only within this course).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import ModelConfig
from .data import all_captions, augment, build_condition, dequantize, load_fashion_mnist, quantize, resize, to_float
from .model import ImageTransformer


@torch.no_grad()
def dataset_bits_per_dim(model: ImageTransformer, images: Tensor, labels: Tensor, batch_size: int = 250) -> Tensor:
    """Bits/dim of each image: uint8 images [N, 28, 28] and labels [N] -> float [N] (on the CPU).
    Conditions are the canonical ones (`data.build_condition`): caption `make_caption(label)`, etc."""
    c = model.config
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = resize(images[start : start + batch_size], c.image_size)
        cond = build_condition(c.condition, batch, labels[start : start + batch_size], c.cond_size)
        cond = cond.to(device) if cond is not None else None
        out.append(model.bits_per_dim(quantize(batch, c.levels).to(device), cond).cpu())
    model.train(was_training)
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------- the judge
# A small CNN trained on Fashion-MNIST's training set. It plays the part the Inception network plays for FID
# and "Inception score" on ImageNet-sized models: its predictions tell whether a generated image shows the class
# its caption asked for, and its penultimate features are what the Fréchet distance compares.

JUDGE_FORMAT = "imagen-tutorial-judge/1"


class Judge(nn.Module):
    """Float images [B, 1, 28, 28] in [0, 1] -> logits [B, 10]; `features` gives the [B, 256] vectors of the
    last hidden layer, which the Fréchet distance compares (as FID uses Inception's pooled features)."""

    def __init__(self, width: int = 32, hidden: int = 256):
        super().__init__()
        self.width, self.hidden = width, hidden

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        w = width
        self.body = nn.Sequential(
            *block(1, w), nn.MaxPool2d(2),  # 28 -> 14
            *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),  # 14 -> 7
            *block(2 * w, 4 * w),
            nn.Flatten(), nn.Linear(4 * w * 7 * 7, hidden), nn.ReLU(),  # where things are matters: no pooling here
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(hidden, 10))

    def check_images(self, x: Tensor) -> None:
        if not torch.is_floating_point(x) or x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(
                f"the judge reads float images [B, 1, 28, 28] in [0, 1]; got {tuple(x.shape)} {x.dtype}. Convert "
                f"model output with metrics.judge_input(levels_tensor, levels) (it also resizes to 28×28).")

    def features(self, x: Tensor) -> Tensor:
        self.check_images(x)
        return self.body(x * 2 - 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def judge_input(images: Tensor, levels: int | None = None) -> Tensor:
    """What the judge reads, from model levels [B, H, W] (pass `levels`) or uint8 images [B, H, W]:
    float [B, 1, 28, 28] in [0, 1], resized (area or bilinear) when H != 28."""
    if images.dim() != 3:
        raise ValueError(f"expected images [B, H, W], got shape {tuple(images.shape)}")
    x = dequantize(images, levels).unsqueeze(1) if levels is not None else to_float(images)
    if x.shape[-1] != 28:
        x = F.interpolate(x, size=(28, 28), mode="bilinear" if x.shape[-1] < 28 else "area", align_corners=False
                          if x.shape[-1] < 28 else None)
    return x


def save_judge(judge: Judge, path: str | Path, **info) -> Path:
    weights = {k: v.detach().cpu() for k, v in judge.state_dict().items()}
    return save_checkpoint({"kind": "judge", "judge_format": JUDGE_FORMAT, "model": weights,
                            "judge_config": {"width": judge.width, "hidden": judge.hidden}, **info}, path)


def load_judge(path: str | Path, device: str | torch.device = "cpu") -> Judge:
    """The judge from a file written by `save_judge` (sha256-checked like every checkpoint), in eval mode."""
    state = load_checkpoint(path)
    if state.get("kind") != "judge":
        raise CheckpointError(f"{path} is an image-model checkpoint, not the judge classifier; "
                              f"use imagen_tutorial.load_model for it")
    return judge_from_state(state).to(device).eval()


def judge_from_state(state: dict) -> Judge:
    judge = Judge(**state["judge_config"])
    judge.load_state_dict({k: v.float() for k, v in state["model"].items()})
    return judge


def train_judge(epochs: int = 8, batch_size: int = 128, lr: float = 2e-3, width: int = 32, seed: int = 0,
                data_dir: str | Path | None = None, log=print) -> tuple[Judge, dict]:
    """Train the judge on the official training split: AdamW, one-cycle LR, random crops (padding 2) and, for
    a quarter of the images, quantization to 4-32 levels so that it reads the coarse images our models draw as well
    as the originals. Returns the judge (eval mode) and {"test_accuracy", "test_accuracy_16_levels", ...}."""
    torch.manual_seed(seed)
    images, labels = load_fashion_mnist("train", data_dir)
    judge = Judge(width)
    steps = epochs * (len(images) // batch_size)
    opt = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    step = 0
    for epoch in range(epochs):
        judge.train()
        order = torch.randperm(len(images))
        total = correct = 0
        for start in range(0, len(images) - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            x = augment(images[idx], crop_padding=2, hflip=0.0)
            coarse = torch.rand(len(x)) < 0.25
            levels = 2 ** torch.randint(2, 6, (1,)).item()
            x = torch.where(coarse[:, None, None], (dequantize(quantize(x, levels), levels) * 255).round().to(
                torch.uint8), x)
            logits = judge(to_float(x))
            loss = F.cross_entropy(logits, labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            total += len(idx)
            correct += (logits.argmax(1) == labels[idx]).sum().item()
        log(f"epoch {epoch + 1}/{epochs}: train accuracy {correct / total:.4f}")
    judge.eval()
    test_x, test_y = load_fashion_mnist("test", data_dir)
    report = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "width": width, "seed": seed,
              "parameters": sum(p.numel() for p in judge.parameters()),
              "test_accuracy": classify_accuracy(judge, to_float(test_x), test_y),
              "test_accuracy_16_levels": classify_accuracy(judge, judge_input(quantize(test_x, 16), 16), test_y)}
    log(f"test accuracy {report['test_accuracy']:.4f} (images at 16 levels: {report['test_accuracy_16_levels']:.4f})")
    return judge, report


@torch.no_grad()
def judge_logits(judge: Judge, images: Tensor, batch_size: int = 500) -> Tensor:
    device = next(judge.parameters()).device
    return torch.cat([judge(images[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)])


@torch.no_grad()
def judge_features(judge: Judge, images: Tensor, batch_size: int = 500) -> Tensor:
    """Penultimate features [N, D] of float images [N, 1, 28, 28]."""
    device = next(judge.parameters()).device
    return torch.cat([judge.features(images[i : i + batch_size].to(device)).cpu()
                      for i in range(0, len(images), batch_size)])


def classify_accuracy(judge: Judge, images: Tensor, labels: Tensor) -> float:
    """Fraction of float images [N, 1, 28, 28] the judge assigns to `labels` [N]."""
    return (judge_logits(judge, images).argmax(1) == labels.cpu()).float().mean().item()


def conditional_accuracy(judge: Judge, images: Tensor, labels: Tensor, levels: int | None = None) -> float:
    """Fraction of generated images the judge assigns to the class their caption asked for.
    images: model levels [N, H, W] (pass `levels`), uint8 [N, H, W], or judge-ready floats [N, 1, 28, 28]."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    x = images if images.dim() == 4 else judge_input(images, levels)
    return classify_accuracy(judge, x, labels)


def _sqrt_psd(m: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition (eigenvalues clamped at 0:
    rounding makes tiny ones slightly negative, which would give NaN)."""
    values, vectors = torch.linalg.eigh((m + m.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature vectors [N, D] and [M, D]:
    |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)), the formula behind FID.

    tr((S_a S_b)^(1/2)) is computed as tr((A S_b A)^(1/2)) with A = S_a^(1/2): A S_b A is symmetric PSD and
    has the same eigenvalues as S_a S_b, so two `eigh` calls in float64 replace the general (and unstable)
    matrix square root of a non-symmetric product."""
    if features_a.dim() != 2 or features_b.dim() != 2 or features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"expected features [N, D] and [M, D], got {tuple(features_a.shape)} and "
                         f"{tuple(features_b.shape)}")
    if min(len(features_a), len(features_b)) < 2:
        raise ValueError("each set needs at least 2 feature vectors to estimate a covariance")
    a, b = features_a.double(), features_b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_a = _sqrt_psd(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    value = (mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return max(value.item(), 0.0)


@torch.no_grad()
def generate_in_chunks(model: ImageTransformer, cond, n: int, guidance: float = 1.0, temperature: float = 1.0,
                       seed: int = 0, chunk: int = 200, progress: bool = False) -> Tensor:
    """n images from `cond` (a list of captions, a condition tensor [n, ...], or None), `chunk` at a time so that
    the key/value caches stay small (1,000 images at once would need ~3 GB of cache at 28×28). -> levels [n, H, W]"""
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    out = []
    for start in range(0, n, chunk):
        part = None if cond is None else cond[start : start + chunk]
        if isinstance(part, Tensor):
            part = part.to(device)
        out.append(model.generate(part, temperature=temperature, guidance=guidance, generator=generator,
                                  batch_size=min(chunk, n - start), progress=progress).cpu())
    return torch.cat(out)


def generate_per_class(model: ImageTransformer, per_class: int, guidance: float = 1.0, temperature: float = 1.0,
                       seed: int = 0, progress: bool = False) -> tuple[Tensor, Tensor]:
    """`per_class` images for each of the 10 classes from a caption model, captions cycling through the
    training templates and names: (levels [10*per_class, H, W], labels [10*per_class])."""
    if model.config.condition != "caption":
        raise ValueError(f"generate_per_class needs a caption model; this one reads {model.config.condition!r}")
    labels = torch.arange(10).repeat_interleave(per_class)
    captions = [all_captions(int(k))[i % len(all_captions(int(k)))] for i, k in enumerate(labels)]
    images = generate_in_chunks(model, captions, len(captions), guidance, temperature, seed, progress=progress)
    return images, labels


def reference_features(judge: Judge, limit: int | None = None, data_dir: str | Path | None = None,
                       levels: int | None = None) -> Tensor:
    """Judge features of the official test images (the first `limit`), optionally quantized to `levels` first
    so that the comparison with generated images is not about quantization."""
    images, _ = load_fashion_mnist("test", data_dir)
    images = images[:limit] if limit else images
    x = judge_input(quantize(images, levels), levels) if levels else to_float(images)
    return judge_features(judge, x)


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB between float images in [0, 1] (per image: [B, ...] -> [B])."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp(min=1e-10))


def generate_for_evaluation(model: ImageTransformer, per_class: int, guidance: float = 1.0, seed: int = 0,
                            progress: bool = False, temperature: float = 1.0
                            ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Samples to judge, whatever the model reads: (levels [N, H, W], labels [N] or None, targets uint8 [N, H, W]
    or None). Caption models draw `per_class` images per class; image-conditioned models (lowres, edges) redraw the
    first 10*per_class test images from their conditions (targets: those originals); unconditional ones draw
    10*per_class images (no labels)."""
    c = model.config
    if c.condition == "caption":
        images, labels = generate_per_class(model, per_class, guidance, temperature, seed=seed, progress=progress)
        return images, labels, None
    n = 10 * per_class
    if c.condition == "none":
        return generate_in_chunks(model, None, n, temperature=temperature, seed=seed, progress=progress), None, None
    cond, labels, test = conditions_from_test_set(c, n)
    return generate_in_chunks(model, cond, n, guidance, temperature, seed=seed, progress=progress), labels, test


def conditions_from_test_set(config: ModelConfig, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """The conditions an image-conditioned model (lowres, edges) reads for the first `n` official test images:
    (condition, labels [n], the originals uint8 [n, H, W] at the model's image size)."""
    if config.condition not in ("lowres", "edges"):
        raise ValueError(f"conditions_from_test_set is for image conditions (lowres, edges), not {config.condition!r}")
    test, labels = load_fashion_mnist("test")
    test, labels = resize(test[:n], config.image_size), labels[:n]
    return build_condition(config.condition, test, labels, config.cond_size), labels, test


def evaluate_generation(model: ImageTransformer, judge: Judge, per_class: int = 100, guidance: float = 1.0,
                        seed: int = 0, reference: Tensor | None = None, progress: bool = False,
                        temperature: float = 1.0) -> dict:
    """Draw samples (see `generate_for_evaluation`) and judge them: {"guidance", "samples", "accuracy" (None for
    unconditional models), "frechet_distance", and for image conditions "psnr_db" against the originals}.
    `reference`: judge features of real images (default: the 10,000 test images quantized to the model's levels,
    so the distance is not about quantization)."""
    c = model.config
    images, labels, targets = generate_for_evaluation(model, per_class, guidance, seed, progress, temperature)
    x = judge_input(images, c.levels)
    if reference is None:
        reference = reference_features(judge, levels=c.levels)
    result = {"guidance": guidance, "temperature": temperature, "samples": len(images),
              "accuracy": conditional_accuracy(judge, x, labels) if labels is not None else None,
              "frechet_distance": frechet_distance(judge_features(judge, x), reference)}
    if targets is not None:
        result["psnr_db"] = psnr(dequantize(images, c.levels), to_float(targets)[:, 0]).mean().item()
    return result


# ---------------------------------------------------------------- Part II: diffusion models and the cascade
def captions_per_class(per_class: int) -> tuple[list[str], Tensor]:
    """`per_class` captions for each class, cycling through the training templates and names (the protocol of
    `generate_per_class`): (captions, labels [10*per_class])."""
    labels = torch.arange(10).repeat_interleave(per_class)
    return [all_captions(int(k))[i % len(all_captions(int(k)))] for i, k in enumerate(labels)], labels


def judge_float_images(judge: Judge, images: Tensor, labels: Tensor | None, levels: int = 16,
                       reference: Tensor | None = None) -> dict:
    """Judge float images [N, 1, H, W] in [0, 1] after quantizing them to `levels` (as the autoregressive model's
    samples are): {"accuracy", "frechet_distance"} against `reference` (default: the test set at `levels`)."""
    x = judge_input(quantize(images[:, 0].clamp(0, 1).cpu(), levels), levels)
    if reference is None:
        reference = reference_features(judge, levels=levels)
    return {"accuracy": conditional_accuracy(judge, x, labels) if labels is not None else None,
            "frechet_distance": frechet_distance(judge_features(judge, x), reference)}


def sharpness(images: Tensor) -> Tensor:
    """Mean image-gradient energy of float images [B, 1, H, W]: the mean squared difference between neighbouring
    pixels, across and down ([B]). Blurry upsampling lowers it; noise raises it."""
    dx = images[..., :, 1:] - images[..., :, :-1]
    dy = images[..., 1:, :] - images[..., :-1, :]
    return dx.pow(2).flatten(1).mean(1) + dy.pow(2).flatten(1).mean(1)


@torch.no_grad()
def diffusion_samples(model, captions: list[str], seed: int = 0, chunk: int = 100, lowres: Tensor | None = None,
                      progress: bool = False, **sampling) -> tuple[Tensor, float]:
    """Float images [N, 1, H, W] from a Denoiser or a Cascade for `captions`, `chunk` at a time with one seeded
    generator, and the seconds per image that took. `lowres` [N, 1, s, s]: the SR stage's inputs."""
    import time

    generator = torch.Generator(next(model.parameters()).device).manual_seed(seed)  # where the model samples
    out, start = [], time.perf_counter()
    starts = range(0, len(captions), chunk)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="sampling", unit="batch")
    for i in starts:
        part = {"lowres": lowres[i : i + chunk]} if lowres is not None else {}
        out.append(model.generate(captions[i : i + chunk], generator=generator, **part, **sampling).cpu())
    return torch.cat(out), (time.perf_counter() - start) / len(captions)


def evaluate_diffusion_generation(model, judge: Judge, per_class: int = 50, seed: int = 0,
                                  reference: Tensor | None = None, levels: int = 16, progress: bool = False,
                                  **sampling) -> dict:
    """The text2img protocol for a diffusion base model or the cascade: `per_class` samples per class from the
    training captions, quantized to `levels`, judged: accuracy, Fréchet distance, seconds per image."""
    captions, labels = captions_per_class(per_class)
    images, seconds = diffusion_samples(model, captions, seed, progress=progress, **sampling)
    return {**sampling, "samples": len(images), "seconds_per_image": seconds,
            **judge_float_images(judge, images, labels, levels, reference)}


def evaluate_super_resolution(sr, judge: Judge, n: int = 500, seed: int = 0, levels: int = 16,
                              lowres: Tensor | None = None, reference: Tensor | None = None, **sampling) -> dict:
    """The SR stage on the first `n` official test images: area-downsampled to its input size (or `lowres`
    given, e.g. the base model's samples), upsampled by the model, judged at `levels` against the labels, with
    PSNR and sharpness against the originals. Bicubic and the originals are measured on the same images.
    `reference`: the test set's judge features at `levels` (computed once here if not given)."""
    if reference is None:
        reference = reference_features(judge, levels=levels)
    test, labels = load_fashion_mnist("test")
    test, labels = to_float(test[:n]), labels[:n]
    if lowres is None:
        lowres = F.interpolate(test, size=sr.config.cond_size, mode="area")
    captions = [all_captions(int(k))[0] for k in labels]
    images, seconds = diffusion_samples(sr, captions, seed, lowres=lowres, **sampling)
    bicubic = F.interpolate(lowres, size=sr.config.image_size, mode="bicubic", align_corners=False).clamp(0, 1)

    def row(x: Tensor) -> dict:
        judged = judge_float_images(judge, x, labels, levels, reference)
        return {"accuracy": judged["accuracy"], "frechet_distance": judged["frechet_distance"],
                "psnr_db": psnr(x, test).mean().item(), "sharpness": sharpness(x).mean().item()}
    return {**sampling, "images": n, "seconds_per_image": seconds, "sr": row(images), "bicubic": row(bicubic),
            "original": row(test)}


@torch.no_grad()
def diffusion_test_loss(model, images: Tensor, labels: Tensor | list[str], seed: int = 0, aug_max: float = 0.5,
                        batch_size: int = 250) -> float:
    """A diffusion model's mean training loss on uint8 test images [N, H, W] with their canonical captions (from
    `labels` [N]; or the N captions themselves, as for scenes), at noise and t drawn from `seed` (the global RNG is
    left as it was): the figure training logs as test_loss."""
    device = next(model.parameters()).device
    x = to_float(resize(images, model.config.image_shape))
    if isinstance(labels, Tensor):
        labels = [all_captions(int(k))[0] for k in labels]
    total = torch.zeros((), device=device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(x), batch_size):
            part = slice(start, start + batch_size)
            captions = labels[part] if model.reads_caption else None
            total += model.loss(x[part].to(device), model.prepare_captions(captions), aug_max=aug_max) * len(x[part])
    return (total / len(x)).item()
