"""Command line: `python -m imagen_tutorial {train,sample,evaluate,demo} --help`; `grade` grades a class's
notebooks and `grammar` prints the captions the scenes cascade (Part III) reads.

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

from .captions import (
    GRAMMAR,
    HELD_OUT_ATTRIBUTES,
    HELD_OUT_PAIRS,
    Garment,
    Scene,
    closest_scene_caption,
    parse_scene,
    scene_captions,
)
from .cascade import DEFAULT_AUG_LEVEL, DEFAULT_GUIDANCE, Cascade
from .checkpoint import CheckpointError, file_sha256, load_checkpoint, load_model
from .config import MAX_IMAGES, MAX_SEED, SAMPLING_SPECS, ModelConfig, Spec, TrainConfig, check_value
from .data import load_fashion_mnist, make_caption, quantize, resize, to_float
from .denoiser import Denoiser
from .grader import GRID_TWINS, evaluate_scenes, grade, real_scenes
from .metrics import (
    classify_accuracy,
    conditions_from_test_set,
    dataset_bits_per_dim,
    evaluate_generation,
    judge_input,
    reference_features,
)
from .model import ImageTransformer, check_sampling
from .pretrained import load_pretrained, read_manifest, unknown_name
from .scenes import test_scenes
from .text import Tokenizer
from .train import TrainingDiverged, TrainingInterrupted, pick_device, train
from .viz import check_image_path, plot_scenes, save_denoising_gif, save_generation_gif, save_grid


def _add_config_flags(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        flag, allowed = "--" + f.name.replace("_", "-"), cls.SPECS[f.name].allowed()
        if isinstance(f.default, bool):
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        elif isinstance(f.default, tuple):
            group.add_argument(flag, dest=f.name, type=float, nargs=len(f.default), default=None,
                               help=f"default {' '.join(map(str, f.default))}; {allowed}")
        elif isinstance(f.default, (int, float, str)):
            group.add_argument(flag, dest=f.name, type=type(f.default), default=None,
                               help=f"default {f.default}; {allowed}")


def read_config_file(path: Path) -> dict:
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
        for key, section in read_config_file(Path(args.config)).items():
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


def load_any(spec: str, device: str | torch.device = "cpu", sr: str | None = None):
    """A model from a checkpoint file, or a shipped one by name ("text2img", "diffusion_base", "cascade", ...);
    with `sr`, a Cascade of the base `spec` and the SR checkpoint `sr`."""
    if sr is not None:
        if spec == "cascade" and not Path(spec).exists():
            raise ValueError("--checkpoint cascade already holds an SR stage: drop --sr-checkpoint, or give "
                             "--checkpoint diffusion_base (or a base checkpoint file) with it")
        return Cascade(load_any(spec, device), load_any(sr, device))
    if not Path(spec).exists():
        if spec in read_manifest():
            model = load_pretrained(spec, device)
            if not isinstance(model, (ImageTransformer, Denoiser, Cascade)):
                raise ValueError(f"{spec!r} is the judge classifier, not an image model: pick one of "
                                 f"{', '.join(n for n in sorted(read_manifest()) if n != 'classifier')}")
            return model
        raise FileNotFoundError(f"checkpoint {spec} does not exist; {unknown_name(spec)}. Give one of those, or a "
                                f"checkpoint file (a training run writes OUT/checkpoint.pt)")
    return load_model(spec, device)


def _threshold(text: str):
    """--threshold: a percentile such as 0.995 (dynamic thresholding), 'static' or 'none'."""
    if text in ("static", "none"):
        return None if text == "none" else text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentile (e.g. 0.995), 'static' or 'none'") from None


# ---------------------------------------------------------------- what each flag accepts, and where it applies
MAX_SAMPLE_IMAGES = 500  # `sample` draws in one batch: an autoregressive 28×28 model's guided cache is ~3 GB at 500


def _optional(spec: Spec) -> Spec:
    return dataclasses.replace(spec, optional=True)


# The numeric flags of sample, evaluate and demo, checked as config fields are, before any model is loaded (flags a
# command lacks are skipped). The sampling ones are config.SAMPLING_SPECS, which the Python API checks.
FLAG_SPECS = {
    "n": Spec(int, 1, MAX_SAMPLE_IMAGES, note="images per caption, or in all for other conditions"),
    "columns": Spec(int, 1, 100, note="images per class"),
    "batch_size": Spec(int, 1, MAX_IMAGES, note="test images scored at once"),
    "limit": Spec(int, 1, 60_000, optional=True, note="leave it out to use the whole split"),
    "per_class": Spec(int, 0, 1000, optional=True,
                      note="0 skips sampling: an autoregressive model's bits/dim alone; a diffusion model needs >= 1"),
    "per_category": Spec(int, 2, 1000, optional=True,
                         note="captions per grader category, and half as many swapped-twin pairs"),
    "temperature": _optional(SAMPLING_SPECS["temperature"]),
    "top_k": SAMPLING_SPECS["top_k"],
    "guidance": _optional(SAMPLING_SPECS["guidance"]),
    "sr_guidance": _optional(SAMPLING_SPECS["guidance"]),
    "steps": SAMPLING_SPECS["steps"],
    "sr_steps": _optional(SAMPLING_SPECS["steps"]),
    "threshold": SAMPLING_SPECS["threshold"],
    "aug_level": _optional(SAMPLING_SPECS["aug_level"]),
    "train_steps": Spec(int, 1, 100_000),
    "minutes": Spec(float, 0, 24 * 60, low_open=True),
    "seed": Spec(int, 0, MAX_SEED),
    "jobs": Spec(int, 1, 64, optional=True, note="notebooks graded at once; leave it out for one per core"),
    "timeout": Spec(float, 10, 24 * 3600, optional=True, note="seconds per notebook"),
}

# Where a flag applies: the tags a model (or a run of the command) must have. A flag typed for a model without
# them is refused with the reason, never ignored; flags not listed apply to every model.
TAGS = {  # tag: (what a flag needing it is for, why it is missing, or None: the model says why)
    "autoregressive": ("autoregressive models", None),
    "diffusion": ("diffusion models", None),
    "captions": ("models that draw from the captions you give", None),
    "conditional": ("conditional models (guidance mixes conditional and unconditional predictions)", None),
    "sr_stage": ("a super-resolution stage, alone or in a cascade", None),
    "cascade": ("the SR stage of a cascade (--checkpoint cascade, or --sr-checkpoint)", None),
    "samples": ("evaluations that draw samples", "this one draws none (--per-class 0, an unconditional model's "
                                                 "default)"),
    "train": ("demo --train", "--train is not given"),
    "draw": ("demo without --train", "--train trains its own model"),
    "diffusion_draw": ("demos that draw with a diffusion model (a diffusion --checkpoint, or --cascade)",
                       "this demo draws with the autoregressive model only"),
    "scenes": ("scenes models (Part III: --checkpoint scenes, or a checkpoint of configs/scenes_*.toml)", None),
    "classes": ("models of single garments (Parts I and II; a scenes model is graded with --per-category)", None),
    "rows": ("the demo of a row per class", "demo --scenes draws captions beside their swapped twins"),
}
_SAMPLING_FLAGS = {"caption": ("captions",), "guidance": ("conditional",), "temperature": ("autoregressive",),
                   "top_k": ("autoregressive",), "no_cache": ("autoregressive",), "steps": ("diffusion",),
                   "sampler": ("diffusion",), "threshold": ("diffusion",), "aug_level": ("sr_stage",),
                   "sr_steps": ("cascade",), "sr_guidance": ("cascade",)}
APPLIES = {
    "sample": _SAMPLING_FLAGS,
    "evaluate": {**_SAMPLING_FLAGS, "guidance": ("conditional", "samples"),
                 "temperature": ("autoregressive", "samples"), "split": ("autoregressive",),
                 "limit": ("autoregressive",), "batch_size": ("autoregressive",), "per_class": ("classes",),
                 "per_category": ("scenes",)},
    "demo": {"temperature": ("autoregressive",), "steps": ("diffusion_draw",), "cascade": ("autoregressive",),
             "checkpoint": ("draw",), "train_steps": ("train",), "minutes": ("train",), "scenes": ("draw", "scenes"),
             "columns": ("rows",)},
}


def model_tags(model) -> set[str]:
    """What the model in hand is, in the words of TAGS."""
    grammar = {"scenes" if model.config.vocabulary == "scenes" else "classes"}
    if isinstance(model, Cascade):
        return {"diffusion", "cascade", "sr_stage", "captions", "conditional"} | grammar
    c = model.config
    tags = {c.family} | grammar | ({"conditional"} if c.condition != "none" else set())
    if isinstance(model, Denoiser) and model.reads_lowres:
        return tags | {"sr_stage"}  # alone, it upsamples test images with their own captions
    return tags | ({"captions"} if c.condition == "caption" else set())


def describe(model, label: str) -> str:
    """`label` and what kind of model it is, for messages."""
    scenes = model.config.vocabulary == "scenes"
    of = " of two-garment scenes (Part III)" if scenes else ""
    if isinstance(model, Cascade):
        return f"{label} is a diffusion cascade{of}"
    c = model.config
    if isinstance(model, Denoiser) and model.reads_lowres:
        return (f"{label} is a diffusion super-resolution stage{of} alone, whose steps and guidance are --steps and "
                f"--guidance; it upsamples test {'scenes' if scenes else 'images'} with their own captions "
                f"(--checkpoint {'scenes' if scenes else 'cascade'} draws from yours)")
    reads = "unconditional" if c.condition == "none" else f"conditioned on {c.condition!r}"
    return f"{label} is {'a diffusion' if c.family == 'diffusion' else 'an autoregressive'} model{of}, {reads}"


def refuse_flags_that_do_not_apply(args: argparse.Namespace, tags: set[str], about: str) -> None:
    """The one check of every command: a flag typed (not a default) whose tags the model or the run lacks is
    refused, saying what it is for and why it does not apply here (`about`: the model, from `describe`)."""
    for dest, needs in APPLIES.get(args.command, {}).items():
        missing = [tag for tag in needs if tag not in tags]
        if dest in getattr(args, "given", ()) and missing:
            words, why = TAGS[missing[0]]
            raise ValueError(f"--{dest.replace('_', '-')} applies only to {words}, and {why or about}: drop it")


def stage_guidance(model, guidance: float | None = None, sr_guidance: float | None = None):
    """The one guidance rule of every command: --guidance guides the model in hand (an SR stage alone too; in a
    cascade, its base stage), --sr-guidance the SR stage of a cascade. A float, or (base, sr) for a cascade; what
    is not given takes its default: the cascade's own (Cascade.guidance), 3 for a diffusion base,
    DEFAULT_GUIDANCE[1] for an SR stage alone, 1 (plain conditional) for an autoregressive model."""
    if isinstance(model, Cascade):  # its own default: cascade.DEFAULT_GUIDANCE, or what its manifest entry says
        return (model.guidance[0] if guidance is None else guidance,
                model.guidance[1] if sr_guidance is None else sr_guidance)
    if sr_guidance is not None:
        raise ValueError("sr_guidance guides the SR stage of a cascade; this is a single model: use guidance")
    if guidance is not None:
        return guidance
    if isinstance(model, Denoiser):
        return DEFAULT_GUIDANCE[1] if model.reads_lowres else 3.0
    return 1.0


def stage_aug_level(model, aug_level: float | None = None) -> float:
    """--aug-level's rule: the noise laid on the low-res image an SR stage reads, given, or else the cascade's own
    (Cascade.aug_level, what its manifest entry says) or DEFAULT_AUG_LEVEL for an SR stage alone."""
    if aug_level is not None:
        return SAMPLING_SPECS["aug_level"].check("aug_level", aug_level)
    return model.aug_level if isinstance(model, Cascade) else DEFAULT_AUG_LEVEL


def _check_flags(args: argparse.Namespace) -> None:
    """Refuse bad flags before any model is loaded or any pixel drawn; output paths included."""
    for name, spec in FLAG_SPECS.items():
        if not hasattr(args, name) or (name == "threshold" and args.threshold == "static"):
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
            if Path(args.gif).absolute() == Path(args.out).absolute():
                raise ValueError(f"--out and --gif both name {args.out}: give the GIF a name of its own")
    if args.command == "demo":  # it writes these at the end, after minutes of sampling
        for name in ("samples.png", "generation.gif", "samples_cascade.png", "scenes.png"):
            check_image_path(Path(args.out) / name, animated=name.endswith(".gif"))


def _load(args: argparse.Namespace, device: str | torch.device = "cpu"):
    """The model a command names, after its flags are checked against it: (model, label, tags)."""
    label = args.checkpoint if args.sr_checkpoint is None else f"{args.checkpoint} + {args.sr_checkpoint}"
    model = load_any(args.checkpoint, device, args.sr_checkpoint)
    tags = model_tags(model)
    if args.command == "evaluate":  # an autoregressive model draws samples unless --per-class 0 (or unconditional)
        unconditional = isinstance(model, ImageTransformer) and model.config.condition == "none"
        if "diffusion" in tags or (args.per_class if args.per_class is not None else not unconditional):
            tags.add("samples")
    refuse_flags_that_do_not_apply(args, tags, describe(model, label))
    return model, label, tags


# ---------------------------------------------------------------- sample
def _float_image_grid(images: torch.Tensor, path, nrow: int, levels: int = 16) -> Path:
    """Save float images [B, 1, H, W] in [0, 1] as a grid of `levels` grey levels (as they are judged)."""
    return save_grid(quantize(images[:, 0].clamp(0, 1).cpu(), levels), levels, path, nrow=nrow,
                     scale=8 if images.shape[-1] <= 14 else 4)


def twin_captions() -> list[str]:
    """The captions of a scenes run's sample grids: five, each followed by its swapped twin."""
    return [s.caption for pair in GRID_TWINS for s in (pair, pair.twin())]


def default_captions(model) -> list[str]:
    """What `sample` draws without --caption: a caption per class, or a scenes model's `twin_captions`."""
    return twin_captions() if model.config.vocabulary == "scenes" else [make_caption(k) for k in range(10)]


def check_captions(model, label: str, captions: list[str]) -> None:
    """Every caption against the grammar `model` reads, before any sampling: a caption of the other grammar is
    refused naming the checkpoints that read it; one outside the scenes grammar with its closest valid caption."""
    scenes = model.config.vocabulary == "scenes"
    grammar = "(`python -m imagen_tutorial grammar` prints the grammar)"
    for caption in captions:
        try:
            Tokenizer(model.config.vocabulary).encode([caption])
            continue
        except ValueError as error:
            problem = error
        try:
            Tokenizer("classes" if scenes else "scenes").encode([caption])
        except ValueError:
            if not scenes:
                raise problem from None  # an unknown word, with the words it resembles
            raise ValueError(f"caption {caption!r} is not in the scenes grammar; the closest valid caption is "
                             f"{closest_scene_caption(caption)!r} {grammar}") from None
        if scenes:
            raise ValueError(f"caption {caption!r} is a single-garment caption (Parts I and II), which text2img, "
                             f"diffusion_base and cascade read; {label} draws scenes of two garments: the closest "
                             f"scene caption is {closest_scene_caption(caption)!r} {grammar}")
        raise ValueError(f"caption {caption!r} is a scene caption (Part III), which --checkpoint scenes reads; {label} "
                         f"draws single garments from captions such as {make_caption(8)!r}")


def sample_diffusion(args: argparse.Namespace, model, device: torch.device) -> None:
    """`sample` for a diffusion base model, an SR stage (on test images or scenes) or a cascade."""
    captions = args.caption or default_captions(model)
    captions = [cap for cap in captions for _ in range(args.n)]
    trajectory = [] if args.gif else None
    sampling = {"sampler": args.sampler, "threshold": args.threshold, "trajectory": trajectory,
                "generator": torch.Generator(device).manual_seed(args.seed),
                "guidance": stage_guidance(model, args.guidance, args.sr_guidance)}
    if isinstance(model, Cascade):
        images = model.generate(captions, aug_level=stage_aug_level(model, args.aug_level),
                                steps=(args.steps, args.sr_steps or args.steps),
                                **sampling)
    elif model.reads_lowres:  # an SR stage alone: upsample test images (or scenes), downsampled to its input size
        if model.config.vocabulary == "scenes":
            test, captions = test_scenes(args.n, args.seed)
        else:
            test, labels = load_fashion_mnist("test")
            test, captions = test[: args.n], [make_caption(int(k)) for k in labels[: args.n]]
        lowres = torch.nn.functional.interpolate(to_float(test), size=model.config.cond_shape, mode="area")
        images = model.generate(captions, lowres=lowres, aug_level=stage_aug_level(model, args.aug_level),
                                steps=args.steps, **sampling)
    else:
        images = model.generate(captions if model.reads_caption else None, steps=args.steps,
                                batch_size=None if model.reads_caption else args.n, **sampling)
    twins = not args.caption and captions[:: args.n] == twin_captions()
    nrow = 2 * args.n if twins else args.n if args.caption or len(images) > 10 else min(len(images), 10)
    print(f"wrote {_float_image_grid(images, args.out, nrow)}")
    if twins:
        print("each row: a caption, then its swapped twin: " + "; ".join(
            f"{a!r} | {b!r}" for a, b in zip(captions[:: 2 * args.n], captions[args.n :: 2 * args.n], strict=True)))
    if args.gif:
        print(f"wrote {save_denoising_gif(trajectory, args.gif, nrow=nrow)}")


def cmd_sample(args: argparse.Namespace) -> None:
    _check_flags(args)
    device = pick_device(args.device)
    model, label, tags = _load(args, device)
    count = args.n * len(args.caption or default_captions(model)) if "captions" in tags else args.n
    check_value("--n × captions", count, int, low=1, high=MAX_SAMPLE_IMAGES,
                note=f"the images of one sample command, drawn in one batch: {args.n} per caption here")
    check_captions(model, label, args.caption)
    if not isinstance(model, ImageTransformer):
        return sample_diffusion(args, model, device)
    c = model.config
    if c.condition == "caption":
        cond = [cap for cap in args.caption or default_captions(model) for _ in range(args.n)]
    else:
        cond = None if c.condition == "none" else conditions_from_test_set(c, count)[0].to(device)
    generator = torch.Generator(device).manual_seed(args.seed)
    images = model.generate(cond, temperature=args.temperature, top_k=args.top_k,
                            guidance=stage_guidance(model, args.guidance), use_cache=not args.no_cache,
                            generator=generator, batch_size=count, progress=True)
    nrow = args.n if c.condition == "caption" and args.n > 1 else min(count, 10)
    print(f"wrote {save_grid(images, c.levels, args.out, nrow=nrow)}")
    if args.gif:
        print(f"wrote {save_generation_gif(images, c.levels, args.gif, nrow=nrow)}")


# ---------------------------------------------------------------- evaluate
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
    limit, per_class, batch_size = (FLAG_SPECS[k].check(k, v) for k, v in
                                    (("limit", limit), ("per_class", per_class), ("batch_size", batch_size)))
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


# --per-class for a diffusion model, which is judged on its samples alone (FLAG_SPECS' 0 skips sampling)
DIFFUSION_PER_CLASS = Spec(int, 1, 1000, note="a diffusion model has no bits/dim here: it is judged on its samples")


def evaluate_diffusion(model, label: str, per_class: int = 50, guidance: list | None = None, steps: int = 50,
                       sr_steps: int | None = None, aug_level: float | None = None, sampler: str = "ddim",
                       threshold="static", seed: int = 0, progress: bool = False) -> dict:
    """The text2img protocol for a diffusion base model or the cascade (`per_class` samples per class, judged at
    16 levels: accuracy, Fréchet distance, seconds per image) at each guidance; for an SR stage alone, its
    upsampling of the first 10*per_class real test images (judge, PSNR, sharpness; bicubic and the originals).
    model: a Denoiser or a Cascade (`load_any`); label: what the result names as its checkpoint; guidance: the
    runs, each as `stage_guidance` gives it (a float, or (base, sr) for a cascade; default: its defaults)."""
    from .metrics import evaluate_diffusion_generation, evaluate_super_resolution

    per_class = DIFFUSION_PER_CLASS.check("per_class", per_class)
    judge = load_pretrained("classifier")
    reference = reference_features(judge, levels=16)
    common = {"sampler": sampler, "threshold": threshold}
    aug_level = stage_aug_level(model, aug_level) if isinstance(model, Cascade) or model.reads_lowres else aug_level
    runs = []
    for g in guidance or [stage_guidance(model)]:
        if isinstance(model, Cascade):
            run = evaluate_diffusion_generation(model, judge, per_class, seed, reference, progress=progress,
                                                guidance=g, steps=(steps, sr_steps or steps),
                                                aug_level=aug_level, **common)
            run.update(guidance=g[0], sr_guidance=g[1], steps=steps, sr_steps=sr_steps or steps)
        elif model.reads_lowres:
            run = evaluate_super_resolution(model, judge, 10 * per_class, seed, reference=reference,
                                            aug_level=aug_level, steps=steps, guidance=g, **common)
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


def _both(value) -> str:
    """A stage's setting, or a cascade's (base, sr) pair, for people: "3" or "3 and 8"."""
    return " and ".join(f"{v:g}" for v in value) if isinstance(value, (tuple, list)) else f"{value:g}"


def evaluate_scenes_model(model, label: str, per_category: int = 100, guidance: list | None = None,
                          steps: int = 50, sr_steps: int | None = None, aug_level: float | None = None,
                          sampler: str = "ddim",
                          threshold="static", seed: int = 0, log=None) -> dict:
    """A scenes model (a base stage or the cascade) graded on `per_category` captions of each grader category and
    per_category // 2 swapped-twin pairs, beside the grader's ceiling on real scenes of the same captions
    (grader.evaluate_scenes), at each guidance (as `stage_guidance` gives it; default the model's own):
    {"checkpoint", "kind": "scenes", "per_category", "seed", "image_shape", "parameters", "runs"}, what
    bench/scenes_evaluate.py writes and tools/ship_checkpoint.py merges. log: called with a line per guidance."""
    if isinstance(model, Denoiser) and model.reads_lowres:
        raise ValueError(f"{describe(model, label)}: evaluate grades scenes drawn from captions, so give a scenes base "
                         f"stage or the cascade (--checkpoint scenes, or a base with --sr-checkpoint {label})")
    classifier = load_pretrained("slot_classifier")
    cascade = isinstance(model, Cascade)
    aug_level = stage_aug_level(model, aug_level) if cascade else aug_level
    runs = []
    for g in guidance or [stage_guidance(model)]:
        sampling = {"guidance": g, "steps": (steps, sr_steps or steps) if cascade else steps, "sampler": sampler,
                    "threshold": threshold, **({"aug_level": aug_level} if cascade else {})}
        runs.append(evaluate_scenes(model, classifier, per_category, seed, **sampling))
        if log is not None:
            log(f"guidance {_both(g)}: {runs[-1]['seconds_per_scene']:.3f} s per scene")
    return {"checkpoint": label, "kind": "scenes", "per_category": per_category, "seed": seed,
            "image_shape": list(model.config.image_shape), "parameters": model.num_params(), "runs": runs}


def scenes_table(result: dict) -> str:
    """`evaluate_scenes_model`'s result as a table: a row per category and twin pairs, a column per guidance, then
    the ceiling and the best fraction of it; then the seconds per scene."""
    runs, (h, w) = result["runs"], result["image_shape"]
    ceiling = runs[0]["ceiling"]
    lines = [f"{result['checkpoint']}: {result['per_category']} captions per category ({result['per_category'] // 2} "
             f"twin pairs), DDIM {_both(runs[0]['steps'])} steps, seed {result['seed']}; the ceiling is the grader on "
             f"real test scenes of the same captions at {h}×{w}",
             "| category | " + " | ".join(f"guidance {_both(r['guidance'])}" for r in runs) +
             " | ceiling | fraction of the ceiling |", "|---|" + "---|" * (len(runs) + 2)]
    for name, real in ceiling.items():
        rates = [r["scores"][name]["rate"] for r in runs]
        lines.append(f"| {name} | " + " | ".join(f"{rate:.3f}" for rate in rates) +
                     f" | {real['rate']:.3f} | {max(rates) / max(real['rate'], 1e-9):.2f} |")
    lines.append("seconds per scene: " + ", ".join(f"{r['seconds_per_scene']:.3f} (guidance {_both(r['guidance'])})"
                                                   for r in runs))
    why = [(name, runs[0]["scores"][name]["failures"], real["failures"]) for name, real in ceiling.items()
           if "failures" in runs[0]["scores"][name]]  # none in a result written before reasons were counted
    if why:
        lines += ["", f"why the scenes that fail at guidance {_both(runs[0]['guidance'])} fail (one reason per wrong "
                      f"slot, as the grader gives them), and why real scenes fail",
                  "| category | kinds | commonest reasons | real scenes |", "|---|---|---|---|"]
        lines += [f"| {name} | {_counts(model['kinds'].items())} | {_counts(model['top'])} | "
                  f"{_counts(real['kinds'].items())} |" for name, model, real in why]
    return "\n".join(lines)


def _counts(items) -> str:
    return ", ".join(f"{what} {count}" for what, count in items) or "none"


def file_digests(checkpoint: str, sr: str | None = None) -> dict[str, str]:
    """The sha256 of the files a --checkpoint (and --sr-checkpoint) names, by shipped name or path: what an
    evaluation measured, so that tools/ship_checkpoint.py ties its figures to those files."""
    out = {}
    for spec in (checkpoint, sr):
        if spec is not None and Path(spec).exists():
            out[spec] = file_sha256(spec)
        elif spec is not None:
            entry = read_manifest()[spec]
            out.update(entry["stages"] if entry.get("kind") == "cascade" else {spec: entry["sha256"]})
    return out


def cmd_evaluate(args: argparse.Namespace) -> None:
    _check_flags(args)
    device = pick_device(args.device)
    model, label, tags = _load(args, device)  # read once, whatever the family
    if "scenes" in tags:
        guidance = [stage_guidance(model, g, args.sr_guidance) for g in args.guidance or [None]]
        result = evaluate_scenes_model(model, label, args.per_category or 100, guidance, args.steps, args.sr_steps,
                                       args.aug_level, args.sampler, args.threshold, args.seed,
                                       log=None if args.json else lambda line: print(line, flush=True))
        result["stages"] = file_digests(args.checkpoint, args.sr_checkpoint)
        print(json.dumps(result) if args.json else scenes_table(result))
        return
    if not isinstance(model, ImageTransformer):
        guidance = [stage_guidance(model, g, args.sr_guidance) for g in args.guidance or [None]]
        per_class = DIFFUSION_PER_CLASS.check("--per-class", 50 if args.per_class is None else args.per_class)
        result = evaluate_diffusion(model, label, per_class, guidance,
                                    args.steps, args.sr_steps, args.aug_level, args.sampler, args.threshold,
                                    args.seed, progress=not args.json)
    else:
        result = evaluate_checkpoint(args.checkpoint, args.split, args.limit, args.batch_size, device,
                                     args.per_class, args.guidance or [stage_guidance(model)], args.seed,
                                     progress=not args.json, temperature=args.temperature, model=model)
    print(json.dumps(result) if args.json else "\n".join(f"{k:>30}: {v}" for k, v in result.items()))


# ---------------------------------------------------------------- demo
def demo_draw(model, captions: list[str], labels: torch.Tensor, judge, grid: Path, gif: Path | None, nrow: int,
              seed: int, **sampling) -> float:
    """Draw `captions` with a caption model of either family, write the grid (and the generation-order or
    denoising GIF), and return the judge's accuracy (diffusion samples judged at 16 levels, as in evaluate)."""
    generator = torch.Generator().manual_seed(seed)
    if isinstance(model, ImageTransformer):
        images, levels = model.generate(captions, generator=generator, progress=True, **sampling), model.config.levels
    else:
        trajectory = [] if gif else None
        x = model.generate(captions, generator=generator, trajectory=trajectory, **sampling)
        images, levels = quantize(x[:, 0].clamp(0, 1), 16), 16
    scale = 8 if images.shape[-1] <= 14 else 4  # 14×14 drawn at the size of a 28×28 image at scale 4
    print(f"wrote {save_grid(images, levels, grid, nrow=nrow, scale=scale)} "
          f"(a row per class: {', '.join(captions[::nrow][:3])}, ...)")
    if gif is not None and isinstance(model, ImageTransformer):
        print(f"wrote {save_generation_gif(images, levels, gif, nrow=nrow, scale=scale)}")
    elif gif is not None:
        print(f"wrote {save_denoising_gif(trajectory, gif, nrow=nrow)}")
    return classify_accuracy(judge, judge_input(images, levels), labels)


def _demo_sampling(args: argparse.Namespace, model, label: str) -> tuple[dict, str]:
    """The sampling arguments of the demo's model, and how to say them."""
    if isinstance(model, ImageTransformer):
        best_guidance, best_temperature = recommended_sampling(None if label == "text2img" else label)
        guidance = best_guidance if args.guidance is None else args.guidance
        temperature = best_temperature if args.temperature is None else args.temperature
        return {"guidance": guidance, "temperature": temperature}, f"guidance {guidance:g}, temperature {temperature:g}"
    guidance = stage_guidance(model, args.guidance)
    said = f"DDIM {args.steps} steps per stage, guidance {_both(guidance)}"
    return {"guidance": guidance, "steps": args.steps}, said + (
        f", SR aug level {model.aug_level:g}" if isinstance(model, Cascade) else "")


def cmd_demo(args: argparse.Namespace) -> None:
    _check_flags(args)
    if args.train:
        tags = {"autoregressive", "captions", "conditional", "train", "rows"} | (
            {"diffusion_draw"} if args.cascade else set())
        refuse_flags_that_do_not_apply(args, tags, "demo --train trains an autoregressive caption model")
        return demo_train(args)
    label = args.checkpoint or ("scenes" if args.scenes else "text2img")
    model = load_any(label)
    tags = model_tags(model) | {"draw"} | (set() if args.scenes else {"rows"})
    if args.cascade or "diffusion" in tags:
        tags.add("diffusion_draw")
    refuse_flags_that_do_not_apply(args, tags, describe(model, label))
    if "captions" not in tags:
        raise ValueError(f"the demo draws from captions, and {describe(model, label)}: give a caption model "
                         f"(text2img, diffusion_base, cascade, scenes or a caption checkpoint)")
    if args.scenes:
        return demo_scenes(args, model, label)
    if "scenes" in tags:
        raise ValueError(f"{describe(model, label)}: it draws scenes of two garments, not a row per class; add "
                         f"--scenes")
    out = Path(args.out)
    labels = torch.arange(10).repeat_interleave(args.columns)  # a row per class
    captions = [make_caption(int(k)) for k in labels]
    sampling, said = _demo_sampling(args, model, label)
    c = model.config
    print(f"Drawing {len(captions)} images ({args.columns} per class, {said}) with {label} "
          f"({model.num_params():,} parameters, {c.image_size}×{c.image_size}"
          f"{f', {c.levels} grey levels' if isinstance(model, ImageTransformer) else ''}) on the CPU")
    judge = load_pretrained("classifier")
    accuracy = demo_draw(model, captions, labels, judge, out / "samples.png", out / "generation.gif", args.columns,
                         args.seed, **sampling)
    print(f"the judge classifier assigns {accuracy:.0%} of these images to the class their caption names")
    if args.cascade:
        demo_cascade(args, captions, labels, judge, out)


def demo_cascade(args: argparse.Namespace, captions: list[str], labels: torch.Tensor, judge, out: Path) -> None:
    """The same captions drawn by the diffusion cascade (Part II), judged the same way (16 levels)."""
    cascade = load_pretrained("cascade")
    print(f"Drawing the same {len(captions)} captions with the diffusion cascade ({cascade.num_params():,} "
          f"parameters: 14×14 base + 14→28 super-resolution, DDIM {args.steps} steps per stage, "
          f"guidance {DEFAULT_GUIDANCE[0]:g} and {DEFAULT_GUIDANCE[1]:g})")
    start = time.perf_counter()
    accuracy = demo_draw(cascade, captions, labels, judge, out / "samples_cascade.png", None, args.columns,
                         args.seed, steps=args.steps)
    print(f"the judge assigns {accuracy:.0%} of the cascade's images to the class their caption names "
          f"({time.perf_counter() - start:.0f} s)")


def demo_scenes(args: argparse.Namespace, model, label: str) -> None:
    """Five captions, each beside its swapped twin, drawn by a scenes model and read by the grader: OUT/scenes.png
    titles each scene with its caption and the verdict; the grader's score on real scenes of the same captions is
    printed beside the model's."""
    import matplotlib.pyplot as plt

    scenes = [parse_scene(caption) for caption in twin_captions()]
    sampling, said = _demo_sampling(args, model, label)
    h, w = model.config.image_shape
    print(f"Drawing {len(scenes)} scenes, each caption beside its swapped twin ({said}), with {label} "
          f"({model.num_params():,} parameters, {h}×{w}) on the CPU")
    images = model.generate([s.caption for s in scenes], generator=torch.Generator().manual_seed(args.seed),
                            **sampling)
    classifier = load_pretrained("slot_classifier")
    verdicts = grade(images, scenes, classifier)
    figure = plot_scenes(images, [s.caption for s in scenes], verdicts, ncols=2)
    path = Path(args.out) / "scenes.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    for scene, verdict in zip(scenes, verdicts, strict=True):
        print(f"  {'pass' if verdict.passed else 'FAIL'}  {scene.caption}"
              f"{'' if verdict.passed else ': ' + verdict.reason}")
    print(f"wrote {path} (each row: a caption, then its swapped twin)")
    real = grade(real_scenes(scenes, args.seed, h), scenes, classifier)
    pairs = sum(a.passed and b.passed for a, b in zip(verdicts[::2], verdicts[1::2], strict=True))
    print(f"the grader passes {sum(v.passed for v in verdicts)} of {len(scenes)} scenes ({pairs} of "
          f"{len(scenes) // 2} twin pairs both right); real test scenes of the same captions at {h}×{w}: "
          f"{sum(v.passed for v in real)} of {len(scenes)} (the grader's ceiling)")


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
    train_cfg = TrainConfig(batch_size=32, steps=args.train_steps, max_minutes=args.minutes, lr=3e-3,
                            warmup_steps=20, eval_every=0, log_every=10, ckpt_every=args.train_steps, seed=args.seed)
    print(f"Training a tiny caption-to-image model (14×14 pixels, 16 levels) for {args.train_steps} steps on "
          f"{'the GPU' if torch.cuda.is_available() else 'the CPU'} (stops after {args.minutes} min at most)")
    print(f"checkpoint and log go to {run}")
    try:
        summary = train(model_cfg, train_cfg, run)
    except TrainingInterrupted:  # its advice (--resume) is the train command's; say what works from here
        kept = run / "checkpoint.pt"
        raise TrainingInterrupted(
            f"demo --train stopped; its checkpoint is kept in {kept}: draw from it with `python -m imagen_tutorial "
            f"demo --checkpoint {kept}`, or train it further with `python -m imagen_tutorial train --out {run} "
            f"--resume`" if kept.is_file() else "demo --train stopped before its first checkpoint; nothing is "
            "kept: run it again") from None
    print(f"train bits/dim after {summary['step']} steps: {summary['train_bpd']:.3f} (knowing nothing: 4.000)")
    model = load_model(run / "checkpoint.pt")
    labels = torch.arange(10).repeat_interleave(args.columns)  # a row per class
    captions = [make_caption(int(k)) for k in labels]
    judge = load_pretrained("classifier")
    guidance = 2.0 if args.guidance is None else args.guidance
    temperature = 1.0 if args.temperature is None else args.temperature
    accuracy = demo_draw(model, captions, labels, judge, out / "samples.png", out / "generation.gif", args.columns,
                         args.seed, guidance=guidance, temperature=temperature)
    print(f"the judge classifier assigns {accuracy:.0%} of these images to the class their caption names")
    if args.cascade:
        demo_cascade(args, captions, labels, judge, out)


# ---------------------------------------------------------------- the parser
class _Parser(argparse.ArgumentParser):
    """argparse with its errors in one line and a pointer to --help, instead of the whole usage block first."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def cmd_grade(args: argparse.Namespace) -> None:
    from .grading import grade_class  # Jupyter's kernel machinery is needed only here

    _check_flags(args)
    results = grade_class(args.paths, args.out, jobs=args.jobs, timeout=args.timeout, chapter=args.chapter)
    graded = [r for r in results if r.verdicts]
    print(f"graded {len(graded)} of {len(results)} submission(s); wrote {Path(args.out) / 'grades.csv'}, "
          f"{Path(args.out) / 'feedback'}/, {Path(args.out) / 'summary.md'} and {Path(args.out) / 'summary.png'}")


GRAMMAR_EXAMPLES = ("a dark bag", "a small sneaker on the left", "an ankle boot on the right",
                    "a dark coat and a small shirt", "a bag to the left of a sneaker",
                    "a t-shirt to the right of a dark ankle boot", "two pairs of trousers")


def cmd_grammar(args: argparse.Namespace) -> None:
    """The scenes grammar: its rules, an example of each form and the combinations held out of training; with
    --all, every caption instead, one per line."""
    if args.all:
        print("\n".join(scene_captions()))
        return
    print(f"The captions --checkpoint scenes reads (Part III; {len(scene_captions()):,} in all, `grammar --all` "
          f"lists them):\n\n{GRAMMAR}\n\nOne of each form:")
    for caption in GRAMMAR_EXAMPLES:
        print(f"  {parse_scene(caption).form:<13} {caption}")
    pairs = [Scene("left of", (Garment(a), Garment(b))) for a, b in HELD_OUT_PAIRS]
    attributes = [Garment(k, dark=a == "dark", small=a == "small").phrase for a, k in HELD_OUT_ATTRIBUTES]
    print(f"\nNever drawn for training (the grader's held-out category): {', '.join(p.caption for p in pairs[:-1])} "
          f"and {pairs[-1].caption} (also said the other way: {Scene('right of', pairs[0].garments[::-1]).caption!r}), "
          f"and {' or '.join(attributes)} in any caption.")


def _add_diffusion_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("diffusion models and the cascades (--checkpoint cascade, scenes, diffusion_base, "
                                 "a file)")
    group.add_argument("--sr-checkpoint", help="with a diffusion base --checkpoint: the SR stage, making a cascade")
    group.add_argument("--steps", type=int, default=50, help="sampler steps (the base stage's, in a cascade)")
    group.add_argument("--sr-steps", type=int, default=None, help="the cascade's SR stage's steps (default: --steps)")
    group.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim")
    group.add_argument("--sr-guidance", type=float, default=None,
                       help=f"the cascade's SR stage's guidance (default: the cascade's own, {DEFAULT_GUIDANCE[1]:g} "
                            f"for Part II's); an SR stage alone takes --guidance")
    group.add_argument("--aug-level", type=float, default=None,
                       help=f"noise conditioning augmentation of the SR stage's low-res input (0 = none; default: "
                            f"the cascade's own, {DEFAULT_AUG_LEVEL:g} for Part II's and an SR stage alone)")
    group.add_argument("--threshold", type=_threshold, default="static",
                       help="'static' (clip x̂₀ to [-1, 1]; the default, best on this data), a dynamic "
                            "thresholding percentile (Imagen's: 0.995) or 'none'")


GUIDANCE_HELP = (f"classifier-free guidance (1 = none) of the model in hand: an SR stage alone too, the base stage "
                 f"of a cascade; default 1 (autoregressive), 3 (a diffusion base or SR stage alone), a cascade's "
                 f"own for its base ({DEFAULT_GUIDANCE[0]:g} for Part II's; scenes: its manifest entry's)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m imagen_tutorial", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (flags or --config file)")
    p.add_argument("--config", help="JSON or TOML file with 'model' and 'train' sections")
    p.add_argument("--out", default="runs/default", help="folder for checkpoint.pt, log.jsonl, sample grids")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt exactly")
    _add_config_flags(p, ModelConfig, "model")
    _add_config_flags(p, TrainConfig, "training")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw images from a checkpoint (scenes: two-garment captions, see grammar)")
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint file or a shipped name (text2img, cascade, scenes, ...)")
    p.add_argument("--caption", action="append", default=[],
                   help="repeatable; default: one per class (scenes: five captions, each beside its swapped twin). "
                        "The scenes cascade reads the captions `python -m imagen_tutorial grammar` prints")
    p.add_argument("--n", type=int, default=1, help="images per caption (or in all, for other conditions)")
    p.add_argument("--guidance", type=float, default=None, help=GUIDANCE_HELP)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cache", action="store_true", help="recompute every step (slow; for comparison)")
    p.add_argument("--out", default="samples.png")
    p.add_argument("--gif", help="also write the generation-order GIF (diffusion: the denoising trajectory) here")
    p.add_argument("--device", default="cpu")
    _add_diffusion_flags(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("evaluate", help="test bits/dim of a checkpoint, and the judge's verdict on its samples "
                                         "(scenes: the grader per category, beside its ceiling on real scenes)")
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint file or a shipped name (text2img, cascade, scenes, ...)")
    p.add_argument("--split", choices=["test", "train"], default="test")
    p.add_argument("--limit", type=int, default=None, help="first N images of the split (file order)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--per-class", type=int, default=None,
                   help="samples per class judged by the classifier (default 50 for conditional models; 0 skips)")
    p.add_argument("--per-category", type=int, default=None,
                   help="a scenes model: captions graded per category (default 100; bench/scenes_evaluate.py's: 500)")
    p.add_argument("--guidance", type=float, action="append", default=[],
                   help=GUIDANCE_HELP + "; repeat to sweep")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature for those samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object (scenes: what "
                                                        "tools/ship_checkpoint.py --evaluation merges)")
    _add_diffusion_flags(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="draw a row of images per class with the shipped text2img model "
                                     "(or, with --train, train a tiny one first; --scenes: scene captions beside "
                                     "their swapped twins, graded)")
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--columns", type=int, default=8, help="images per class")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default: the shipped model's tuned value)")
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature of an autoregressive model (default: the shipped model's tuned value)")
    p.add_argument("--checkpoint", help="draw from this caption model instead (a file, or text2img, diffusion_base, "
                                        "cascade; with --scenes, a scenes model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cascade", action="store_true",
                   help="also draw the same captions with the diffusion cascade (Part II) and judge them alike")
    p.add_argument("--scenes", action="store_true",
                   help="Part III: five scene captions, each beside its swapped twin, drawn by the scenes cascade "
                        "and labelled with the grader's verdict (OUT/scenes.png)")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps per stage of a diffusion model (and --cascade)")
    p.add_argument("--train", action="store_true",
                   help="train a 14×14 model from scratch for about a minute and draw from it instead")
    p.add_argument("--train-steps", type=int, default=450, help="with --train: optimizer steps")
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
    p.add_argument("--chapter", default=None, help="grade only this chapter (00..11); others are listed, not graded")
    p.set_defaults(func=cmd_grade)

    p = sub.add_parser("grammar", help="print the scenes grammar: the captions the scenes cascade reads (Part III)")
    p.add_argument("--all", action="store_true", help="every caption of the grammar, one per line")
    p.set_defaults(func=cmd_grammar)
    for command in _subparsers(parser)[1:]:  # every documented maximum in --help (train's: _add_config_flags)
        for action in command._actions:
            if action.dest in FLAG_SPECS and action.option_strings:
                action.help = f"{action.help + '; ' if action.help else ''}{FLAG_SPECS[action.dest].allowed()}"
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    return [p for a in parser._actions if isinstance(a, argparse._SubParsersAction) for p in a.choices.values()]


def given_flags(argv: list[str]) -> set[str]:
    """The flags typed on the command line, by dest (their defaults do not count): argv parsed again with every
    default suppressed, so abbreviations and --flag=value are read as argparse reads them."""
    parser = build_parser()
    for command in _subparsers(parser):
        for action in command._actions:
            action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"command", "func"}


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename and error.strerror:  # e.g. PermissionError from the OS
        return f"{error.filename}: {error.strerror}"
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every error a person can cause (a bad flag, config, checkpoint or path; divergence;
    Ctrl-C) prints one line on stderr: exit code 2, or 130 for Ctrl-C. Argparse's own errors also exit 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.given = given_flags(argv)
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
