"""Command line: `python -m imagen_tutorial {train,sample,evaluate,demo} --help`.

Every model and training field is also a flag (`--d-model 256`, `--levels 256`, `--max-minutes 7`); a JSON or
TOML file given with `--config` holds {"model": {...}, "train": {...}} and flags override it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

from .cascade import DEFAULT_GUIDANCE, Cascade
from .checkpoint import CheckpointError, load_checkpoint, load_model
from .config import ModelConfig, Spec, TrainConfig, check_value
from .data import load_fashion_mnist, make_caption, quantize, resize, to_float
from .metrics import (
    classify_accuracy,
    conditions_from_test_set,
    dataset_bits_per_dim,
    evaluate_generation,
    judge_input,
    reference_features,
)
from .model import ImageTransformer, check_sampling
from .pretrained import load_pretrained, read_manifest
from .train import TrainingDiverged, TrainingInterrupted, pick_device, train
from .viz import check_image_path, save_denoising_gif, save_generation_gif, save_grid


def _add_config_flags(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        elif isinstance(f.default, tuple):
            group.add_argument(flag, dest=f.name, type=float, nargs=len(f.default), default=None,
                               help=f"default {' '.join(map(str, f.default))}")
        elif isinstance(f.default, (int, float, str)):
            group.add_argument(flag, dest=f.name, type=type(f.default), default=None, help=f"default {f.default}")


def _read_config_file(path: Path) -> dict:
    """{"model": {...}, "train": {...}} from a TOML (.toml) or JSON file, with errors that name the file."""
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    if not path.is_file():
        raise ValueError(f"config file {path} is not a file")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"config file {path} is not a text file: use a TOML (.toml) or JSON (.json) file") from None
    import tomllib  # Python >= 3.11

    try:
        loaded = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        kind = "TOML" if path.suffix == ".toml" else "JSON (files not ending in .toml are read as JSON)"
        raise ValueError(f"config file {path} is not valid {kind}: {error}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"config file {path} holds a {type(loaded).__name__}; it needs 'model' and 'train' sections")
    unknown = set(loaded) - {"model", "train"}
    if unknown:
        raise ValueError(f"config file {path} has sections {sorted(unknown)}; use only 'model' and 'train'")
    for key, section in loaded.items():
        if not isinstance(section, dict):
            raise ValueError(f"config file {path}: section {key!r} must be a table of field = value, got "
                             f"{type(section).__name__} {section!r:.60}")
    return loaded


def _configs(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    """The checkpoint's own configs when resuming, then the config file, then the flags: each overrides the last."""
    values: dict = {"model": {}, "train": {}}
    checkpoint = Path(args.out) / "checkpoint.pt"
    if args.resume and checkpoint.is_file():  # so `--resume --lr 3e-4` changes only the lr
        state = load_checkpoint(checkpoint)
        for key, cls in (("model", ModelConfig), ("train", TrainConfig)):  # fields of this version only
            saved, names = state.get(f"{key}_config", {}), {f.name for f in dataclasses.fields(cls)}
            values[key] = {k: v for k, v in saved.items() if k in names}
    if args.config:
        for key, section in _read_config_file(Path(args.config)).items():
            values[key].update(section)
    for key, cls in (("model", ModelConfig), ("train", TrainConfig)):
        for f in dataclasses.fields(cls):
            if getattr(args, f.name, None) is not None:
                values[key][f.name] = getattr(args, f.name)
    return ModelConfig.from_dict(values["model"]), TrainConfig.from_dict(values["train"])


def cmd_train(args: argparse.Namespace) -> None:
    model_cfg, train_cfg = _configs(args)
    summary = train(model_cfg, train_cfg, args.out, resume=args.resume)
    print(json.dumps(summary))


def _conditions(model, captions: list[str], n: int):
    """What to sample from: captions for a caption model, test-image conditions for an image model."""
    c = model.config
    if c.condition == "caption":
        captions = captions or [make_caption(k) for k in range(10)]
        return [cap for cap in captions for _ in range(n)], len(captions) * n
    if captions:
        raise ValueError(f"this model is conditioned on {c.condition!r}, not captions: drop --caption")
    if c.condition == "none":
        return None, n
    return conditions_from_test_set(c, n)[0], n


def load_any(spec: str, device: str | torch.device = "cpu", sr: str | None = None):
    """A model from a checkpoint file, or a shipped one by name ("text2img", "diffusion_base", "cascade", ...);
    with `sr`, a Cascade of the base `spec` and the SR checkpoint `sr`."""

    if sr is not None:
        base = load_any(spec, device)
        stage = load_any(sr, device)
        return Cascade(base, stage)
    if not Path(spec).exists() and (spec == "cascade" or spec in read_manifest()):
        return load_pretrained(spec, device)
    return load_model(spec, device)


def _threshold(text: str):
    """--threshold: a percentile such as 0.995 (dynamic thresholding), 'static' or 'none'."""
    if text in ("static", "none"):
        return None if text == "none" else text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentile (e.g. 0.995), 'static' or 'none'") from None


def _float_image_grid(images: torch.Tensor, path, nrow: int, levels: int = 16) -> Path:
    """Save float images [B, 1, H, W] in [0, 1] as a grid of `levels` grey levels (as they are judged)."""
    return save_grid(quantize(images[:, 0].clamp(0, 1).cpu(), levels), levels, path, nrow=nrow,
                     scale=8 if images.shape[-1] <= 14 else 4)


def sample_diffusion(args: argparse.Namespace, model) -> None:
    """`sample` for a diffusion base model, an SR stage (on test images) or the cascade."""

    captions = args.caption or [make_caption(k) for k in range(10)]
    captions = [cap for cap in captions for _ in range(args.n)]
    generator = torch.Generator().manual_seed(args.seed)
    trajectory = [] if args.gif else None
    sampling = {"sampler": args.sampler, "threshold": args.threshold, "generator": generator,
                "trajectory": trajectory}
    guidance = 3.0 if args.guidance is None else args.guidance
    sr_guidance = DEFAULT_GUIDANCE[1] if args.sr_guidance is None else args.sr_guidance
    if isinstance(model, Cascade):
        guidance = DEFAULT_GUIDANCE[0] if args.guidance is None else args.guidance
        images = model.generate(captions, guidance=(guidance, sr_guidance), aug_level=args.aug_level,
                                steps=(args.steps, args.sr_steps or args.steps), **sampling)
    elif model.reads_lowres:  # an SR stage alone: upsample test images, downsampled to its input size
        if args.caption:
            raise ValueError("an SR stage alone upsamples test images (with their captions): drop --caption, or "
                             "sample the whole cascade with --checkpoint cascade")
        test, labels = load_fashion_mnist("test")
        lowres = torch.nn.functional.interpolate(to_float(test[: args.n]), size=model.config.cond_size, mode="area")
        captions = [make_caption(int(k)) for k in labels[: args.n]]
        images = model.generate(captions, lowres=lowres, aug_level=args.aug_level, steps=args.steps,
                                guidance=sr_guidance, **sampling)
    else:
        images = model.generate(captions if model.reads_caption else None, steps=args.steps, guidance=guidance,
                                batch_size=None if model.reads_caption else args.n, **sampling)
    nrow = args.n if args.caption or len(images) > 10 else min(len(images), 10)
    print(f"wrote {_float_image_grid(images, args.out, nrow)}")
    if args.gif:
        print(f"wrote {save_denoising_gif(trajectory, args.gif, nrow=nrow)}")


# The numeric flags of sample, evaluate and demo, checked as config fields are (flags a command lacks are skipped).
FLAG_SPECS = {
    "n": Spec(int, 1),
    "columns": Spec(int, 1),
    "batch_size": Spec(int, 1),
    "limit": Spec(int, 1, optional=True, note="leave it out to use the whole split"),
    "per_class": Spec(int, 0, optional=True, note="0 skips sampling"),
    "temperature": Spec(float, 0, optional=True, note="0 picks the most likely level; 1 is the model's distribution"),
    "top_k": Spec(int, 1, optional=True, note="leave it out to keep every level"),
    "guidance": Spec(float, 0, 100, optional=True, note="1 is plain conditional sampling, 0 unconditional"),
    "sr_guidance": Spec(float, 0, 100, optional=True),
    "steps": Spec(int, 1, optional=True),
    "sr_steps": Spec(int, 1, optional=True),
    "steps_diffusion": Spec(int, 1),
    "minutes": Spec(float, 0, low_open=True),
    "seed": Spec(int, 0),
}


def _check_flags(args: argparse.Namespace) -> None:
    """Refuse bad flags before any model is loaded or any pixel drawn; output paths included."""
    for name, spec in FLAG_SPECS.items():
        if not hasattr(args, name):
            continue
        value = getattr(args, name)
        for item in value if isinstance(value, list) else [value]:  # evaluate's --guidance repeats
            spec.check("--" + name.replace("_", "-"), item)
    if getattr(args, "device", None) is not None:
        pick_device(args.device)
    if args.command == "sample":
        check_image_path(args.out)
        if args.gif:
            check_image_path(args.gif, animated=True)
    if args.command == "demo":  # it writes these at the end, after minutes of sampling
        check_image_path(Path(args.out) / "samples.png")
        check_image_path(Path(args.out) / "generation.gif", animated=True)


def cmd_sample(args: argparse.Namespace) -> None:
    _check_flags(args)
    device = pick_device(args.device)
    model = load_any(args.checkpoint, device, args.sr_checkpoint)
    if not isinstance(model, ImageTransformer):
        return sample_diffusion(args, model)
    cond, count = _conditions(model, args.caption, args.n)
    if isinstance(cond, torch.Tensor):
        cond = cond.to(device)
    generator = torch.Generator(device).manual_seed(args.seed)
    guidance = 1.0 if args.guidance is None else args.guidance
    images = model.generate(cond, temperature=args.temperature, top_k=args.top_k, guidance=guidance,
                            use_cache=not args.no_cache, generator=generator, batch_size=count, progress=True)
    nrow = args.n if model.config.condition == "caption" and args.n > 1 else min(count, 10)
    print(f"wrote {save_grid(images, model.config.levels, args.out, nrow=nrow)}")
    if args.gif:
        print(f"wrote {save_generation_gif(images, model.config.levels, args.gif, nrow=nrow)}")


def evaluate_checkpoint(path: str | Path, split: str = "test", limit: int | None = None,
                        batch_size: int = 250, device: str = "cpu", per_class: int | None = None,
                        guidance: list[float] | tuple[float, ...] = (1.0,), seed: int = 0,
                        progress: bool = False, temperature: float = 1.0,
                        model: ImageTransformer | None = None) -> dict:
    """Bits/dim of a checkpoint on the first `limit` images of an official split (all if None) and, for
    conditional models, the judge's verdict on `per_class` samples per class (default 50; 0 skips) at each
    guidance scale (sampling at `temperature`): conditional accuracy and Fréchet distance to the test set.
    Unconditional models are sampled only when `per_class` is given (Fréchet distance only). `model`: the
    checkpoint already loaded (it is moved to `device`), so the file is read once."""
    limit = check_value("limit", limit, int, low=1, optional=True)
    per_class = check_value("per_class", per_class, int, low=0, optional=True)
    batch_size = check_value("batch_size", batch_size, int, low=1)
    for g in guidance:
        check_sampling(temperature, guidance=g)
    device = pick_device(str(device))
    model = model.to(device) if model is not None else load_model(path, device)
    images, labels = load_fashion_mnist(split)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    bpd = dataset_bits_per_dim(model, images, labels, batch_size)
    c = model.config
    result = {"checkpoint": str(path), "split": split, "images": len(images), "bits_per_dim": bpd.mean().item(),
              "levels": c.levels, "uniform_bits_per_dim": math.log2(c.levels), "condition": c.condition,
              "parameters": model.num_params()}
    if per_class is None:
        per_class = 0 if c.condition == "none" else 50
    if per_class:
        judge = load_pretrained("classifier", device)
        reference = reference_features(judge, levels=c.levels)
        runs = [evaluate_generation(model, judge, per_class, g, seed, reference, progress, temperature)
                for g in guidance]
        result.update(runs[0])
        if len(runs) > 1:
            result["by_guidance"] = runs
        test, test_labels = load_fashion_mnist("test")
        result["judge_accuracy_on_test_images"] = classify_accuracy(
            judge, judge_input(quantize(resize(test, c.image_size), c.levels), c.levels), test_labels)
    return result


def evaluate_diffusion(model, label: str, per_class: int = 50, guidance=(3.0,), sr_guidance: float = 1.0,
                       steps: int = 50, sr_steps: int | None = None, aug_level: float = 0.2, sampler: str = "ddim",
                       threshold="static", seed: int = 0, progress: bool = False) -> dict:
    """The text2img protocol for a diffusion base model or the cascade (`per_class` samples per class, judged at
    16 levels: accuracy, Fréchet distance, seconds per image) at each base guidance; for an SR stage alone, its
    upsampling of the first 10*per_class real test images (judge, PSNR, sharpness; bicubic and the originals).
    model: a Denoiser or a Cascade (`load_any`); label: what the result names as its checkpoint."""
    from .metrics import evaluate_diffusion_generation, evaluate_super_resolution

    if per_class < 1:
        raise ValueError(f"--per-class must be >= 1 for a diffusion model, got {per_class}")
    judge = load_pretrained("classifier")
    reference = reference_features(judge, levels=16)
    common = {"sampler": sampler, "threshold": threshold}
    runs = []
    for g in guidance:
        if isinstance(model, Cascade):
            run = evaluate_diffusion_generation(model, judge, per_class, seed, reference, progress=progress,
                                                guidance=(g, sr_guidance), steps=(steps, sr_steps or steps),
                                                aug_level=aug_level, **common)
            run.update(guidance=g, sr_guidance=sr_guidance, steps=steps, sr_steps=sr_steps or steps)
        elif model.reads_lowres:
            run = evaluate_super_resolution(model, judge, 10 * per_class, seed, aug_level=aug_level, steps=steps,
                                            guidance=g, **common)
        else:
            run = evaluate_diffusion_generation(model, judge, per_class, seed, reference, progress=progress,
                                                guidance=g, steps=steps, **common)
        runs.append(run)
    kind = "cascade" if isinstance(model, Cascade) else "diffusion_sr" if model.reads_lowres else "diffusion_base"
    result = {"checkpoint": label, "kind": kind, "family": "diffusion",
              "images": 10 * per_class, "levels": 16, "parameters": model.num_params(), **runs[0]}
    if len(runs) > 1:
        result["by_guidance"] = runs
    return result


def cmd_evaluate(args: argparse.Namespace) -> None:
    _check_flags(args)
    model = load_any(args.checkpoint, "cpu", args.sr_checkpoint)  # read once, whatever the family
    if not isinstance(model, ImageTransformer):
        label = args.checkpoint if args.sr_checkpoint is None else f"{args.checkpoint} + {args.sr_checkpoint}"
        per_class = 50 if args.per_class is None else args.per_class
        default = [DEFAULT_GUIDANCE[0]] if isinstance(model, Cascade) else [3.0]
        sr_guidance = DEFAULT_GUIDANCE[1] if args.sr_guidance is None else args.sr_guidance
        result = evaluate_diffusion(model, label, per_class, args.guidance or default,
                                    sr_guidance, args.steps, args.sr_steps, args.aug_level, args.sampler,
                                    args.threshold, args.seed, progress=not args.json)
        print(json.dumps(result) if args.json else "\n".join(f"{k:>30}: {v}" for k, v in result.items()))
        return
    result = evaluate_checkpoint(args.checkpoint, args.split, args.limit, args.batch_size, args.device,
                                 args.per_class, args.guidance or [1.0], args.seed, progress=not args.json,
                                 temperature=args.temperature, model=model)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>30}: {value}")


def cmd_demo(args: argparse.Namespace) -> None:
    _check_flags(args)
    if args.train:
        return demo_train(args)
    out = Path(args.out)
    source = args.checkpoint or "the shipped text2img checkpoint"
    model = load_model(args.checkpoint) if args.checkpoint else load_pretrained("text2img")
    if model.config.condition != "caption":
        raise ValueError(f"the demo draws from captions; {source} reads {model.config.condition!r}")
    judge = load_pretrained("classifier")
    best_guidance, best_temperature = recommended_sampling(args.checkpoint)
    guidance = args.guidance if args.guidance is not None else best_guidance
    temperature = args.temperature if args.temperature is not None else best_temperature
    labels = torch.arange(10).repeat_interleave(args.columns)  # a row per class
    captions = [make_caption(int(k)) for k in labels]
    print(f"Drawing {len(captions)} images ({args.columns} per class, guidance {guidance:g}, "
          f"temperature {temperature:g}) with {source} "
          f"({model.num_params():,} parameters, {model.config.image_size}×{model.config.image_size}, "
          f"{model.config.levels} grey levels) on the CPU")
    generator = torch.Generator().manual_seed(args.seed)
    images = model.generate(captions, guidance=guidance, temperature=temperature, generator=generator, progress=True)
    accuracy = classify_accuracy(judge, judge_input(images, model.config.levels), labels)
    print(f"wrote {save_grid(images, model.config.levels, out / 'samples.png', nrow=args.columns)} "
          f"(a row per class: {', '.join(captions[:: args.columns][:3])}, ...)")
    print(f"wrote {save_generation_gif(images, model.config.levels, out / 'generation.gif', nrow=args.columns)}")
    print(f"the judge classifier assigns {accuracy:.0%} of these images to the class their caption names")
    if args.cascade:
        demo_cascade(args, captions, labels, judge, out)


def demo_cascade(args: argparse.Namespace, captions: list[str], labels: torch.Tensor, judge, out: Path) -> None:
    """The same captions drawn by the diffusion cascade (Part II), judged the same way (16 levels)."""
    import time

    cascade = load_pretrained("cascade")
    print(f"Drawing the same {len(captions)} captions with the diffusion cascade ({cascade.num_params():,} "
          f"parameters: 14×14 base + 14→28 super-resolution, DDIM {args.steps_diffusion} steps per stage, "
          f"guidance {DEFAULT_GUIDANCE[0]:g} and {DEFAULT_GUIDANCE[1]:g})")
    start = time.perf_counter()
    images = cascade.generate(captions, steps=args.steps_diffusion,
                              generator=torch.Generator().manual_seed(args.seed))
    seconds = time.perf_counter() - start
    levels = quantize(images[:, 0].clamp(0, 1), 16)
    accuracy = classify_accuracy(judge, judge_input(levels, 16), labels)
    print(f"wrote {save_grid(levels, 16, out / 'samples_cascade.png', nrow=args.columns)} in {seconds:.0f} s")
    print(f"the judge assigns {accuracy:.0%} of the cascade's images to the class their caption names")


def recommended_sampling(path: str | None) -> tuple[float, float]:
    """(guidance, temperature) the manifest recommends for the shipped text2img model: those of its evaluation
    with the best judge accuracy; (2, 1) before it is evaluated and for other checkpoints."""
    if path is None:
        evaluation = read_manifest()["text2img"].get("evaluation", {})
        return float(evaluation.get("best_guidance", 2.0)), float(evaluation.get("best_temperature", 1.0))
    return 2.0, 1.0


def demo_train(args: argparse.Namespace) -> None:
    out = Path(args.out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run = out / f"run-{stamp}"
    for n in range(2, 1000):  # a fresh folder each time: never delete or overwrite what is already in `out`
        if not run.exists():
            break
        run = out / f"run-{stamp}-{n}"
    # 14×14 so that two CPU cores learn recognisable shapes in about a minute (28×28 costs ~4× more per step).
    model_cfg = ModelConfig(image_size=14, levels=16, d_model=64, n_heads=4, n_layers=2, n_enc_layers=1)
    train_cfg = TrainConfig(batch_size=32, steps=args.steps, max_minutes=args.minutes, lr=3e-3, warmup_steps=20,
                            eval_every=0, log_every=10, ckpt_every=args.steps, seed=args.seed)
    print(f"Training a tiny caption-to-image model (14×14 pixels, 16 levels) for {args.steps} steps on "
          f"{'the GPU' if torch.cuda.is_available() else 'the CPU'} (stops after {args.minutes} min at most)")
    print(f"checkpoint and log go to {run}")
    summary = train(model_cfg, train_cfg, run)
    print(f"train bits/dim after {summary['step']} steps: {summary['train_bpd']:.3f} (knowing nothing: 4.000)")
    model = load_model(run / "checkpoint.pt")
    captions = [make_caption(k) for k in range(10) for _ in range(args.columns)]  # a row per class
    generator = torch.Generator().manual_seed(args.seed)
    guidance = args.guidance if args.guidance is not None else 2.0
    images = model.generate(captions, generator=generator, guidance=guidance, progress=True)
    scale = 8  # 14×14 drawn at the size of a 28×28 image at scale 4
    grid = save_grid(images, model.config.levels, out / "samples.png", nrow=args.columns, scale=scale)
    print(f"wrote {grid} (a row per class: {', '.join(captions[:: args.columns][:3])}, ...)")
    gif = save_generation_gif(images, model.config.levels, out / "generation.gif", nrow=args.columns, scale=scale)
    print(f"wrote {gif}")


def cmd_grade(args: argparse.Namespace) -> None:
    from .grading import grade_class  # Jupyter's kernel machinery is needed only here

    results = grade_class(args.paths, args.out, jobs=args.jobs, timeout=args.timeout, chapter=args.chapter)
    graded = [r for r in results if r.verdicts]
    print(f"graded {len(graded)} of {len(results)} submission(s); wrote {Path(args.out) / 'grades.csv'}, "
          f"{Path(args.out) / 'feedback'}/, {Path(args.out) / 'summary.md'} and {Path(args.out) / 'summary.png'}")


def _add_diffusion_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("diffusion models and the cascade (--checkpoint cascade, diffusion_base, a file)")
    group.add_argument("--sr-checkpoint", help="with a diffusion base --checkpoint: the SR stage, making a cascade")
    group.add_argument("--steps", type=int, default=50, help="sampler steps (the base stage's, in a cascade)")
    group.add_argument("--sr-steps", type=int, default=None, help="the SR stage's steps (default: --steps)")
    group.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim")
    group.add_argument("--sr-guidance", type=float, default=None,
                       help=f"the SR stage's guidance (default {DEFAULT_GUIDANCE[1]:g})")
    group.add_argument("--aug-level", type=float, default=0.2,
                       help="noise conditioning augmentation of the SR stage's low-res input (0 = none)")
    group.add_argument("--threshold", type=_threshold, default="static",
                       help="'static' (clip x̂₀ to [-1, 1]; the default, best on this data), a dynamic "
                            "thresholding percentile (Imagen's: 0.995) or 'none'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m imagen_tutorial", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (flags or --config file)")
    p.add_argument("--config", help="JSON or TOML file with 'model' and 'train' sections")
    p.add_argument("--out", default="runs/default", help="folder for checkpoint.pt, log.jsonl, sample grids")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt exactly")
    _add_config_flags(p, ModelConfig, "model")
    _add_config_flags(p, TrainConfig, "training")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw images from a checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--caption", action="append", default=[], help="repeatable; default: one per class")
    p.add_argument("--n", type=int, default=1, help="images per caption (or in all, for other conditions)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (1 = none; default 1, or 3 for a diffusion base stage)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cache", action="store_true", help="recompute every step (slow; for comparison)")
    p.add_argument("--out", default="samples.png")
    p.add_argument("--gif", help="also write the generation-order GIF (diffusion: the denoising trajectory) here")
    p.add_argument("--device", default="cpu")
    _add_diffusion_flags(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("evaluate", help="test bits/dim of a checkpoint, and the judge's verdict on its samples")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--split", choices=["test", "train"], default="test")
    p.add_argument("--limit", type=int, default=None, help="first N images of the split (file order)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--per-class", type=int, default=None,
                   help="samples per class judged by the classifier (default 50 for conditional models; 0 skips)")
    p.add_argument("--guidance", type=float, action="append", default=[],
                   help="classifier-free guidance for those samples; repeat to sweep (default 1)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature for those samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_diffusion_flags(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="draw a row of images per class with the shipped text2img model "
                                     "(or, with --train, train a tiny one first)")
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--columns", type=int, default=8, help="images per class")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default: the shipped model's tuned value)")
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature (default: the shipped model's tuned value)")
    p.add_argument("--checkpoint", help="draw from this caption checkpoint instead of the shipped one")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cascade", action="store_true",
                   help="also draw the same captions with the diffusion cascade (Part II) and judge them alike")
    p.add_argument("--steps-diffusion", type=int, default=25, help="with --cascade: DDIM steps per stage")
    p.add_argument("--train", action="store_true",
                   help="train a 14×14 model from scratch for about a minute and draw from it instead")
    p.add_argument("--steps", type=int, default=450, help="with --train: optimizer steps")
    p.add_argument("--minutes", type=float, default=2.0, help="with --train: stop training after this long")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("grade", help="run every student's notebook in a fresh kernel and grade its exercises with "
                                     "the course's checks (TEACHING.md, 'Grading a class')")
    p.add_argument("paths", nargs="+", metavar="PATH", help="notebooks, or folders searched for *.ipynb")
    p.add_argument("--out", required=True, help="a new (or empty) folder for grades.csv, feedback/, summary.md")
    p.add_argument("--jobs", type=int, default=None, help="notebooks at once (default: cores, 2 GB of memory each)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per notebook (default: 5× the chapter's run time + 2 min; a cell or a check gets "
                        "a third of it)")
    p.add_argument("--chapter", default=None, help="grade only this chapter (00..10); others are listed, not graded")
    p.set_defaults(func=cmd_grade)
    return parser


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename and error.strerror:  # e.g. PermissionError from the OS
        return f"{error.filename}: {error.strerror}"
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every error a person can cause (a bad flag, config, checkpoint or path; divergence;
    Ctrl-C) prints one line on stderr: exit code 2, or 130 for Ctrl-C. Argparse's own errors also exit 2."""
    args = build_parser().parse_args(argv)
    out_of_memory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    try:
        args.func(args)
    except KeyboardInterrupt as error:  # TrainingInterrupted says what was kept; a bare Ctrl-C outside training
        message = str(error) if isinstance(error, TrainingInterrupted) else "interrupted (Ctrl-C) before it finished"
        print(f"error: {message}", file=sys.stderr)
        return 130
    except out_of_memory:
        print("error: out of GPU memory: lower --batch-size (or raise --accum-steps to keep the batch), or use a "
              "smaller model", file=sys.stderr)
        return 2
    except (ValueError, OSError, CheckpointError, TrainingDiverged) as error:  # OSError: missing, unwritable paths
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
