"""Copy trained runs into data/checkpoints/ as shipped checkpoints and record them in manifest.json.

    python tools/ship_checkpoint.py text2img --run runs/text2img [--limit N]
    python -m imagen_tutorial evaluate --checkpoint data/checkpoints/text2img.pt --guidance 1 --guidance 3 \
        --json > text2img_eval.json
    python tools/ship_checkpoint.py text2img --evaluation text2img_eval.json
    python tools/ship_checkpoint.py classifier --judge runs/judge/classifier.pt
    python tools/ship_checkpoint.py slot_classifier --judge runs/slot_classifier.pt
    python tools/ship_checkpoint.py scenes --stage scenes_base runs/scenes_base --stage scenes_sr runs/scenes_sr \
        [--evaluation bench/results/scenes_scenes.json] [--default-guidance BASE SR]

--run exports the weights (a diffusion run's EMA) as fp16 (loading restores fp32), measures the exported weights
on the first --limit test images (default 1,000: a quick first figure; a scenes model on --limit test scenes drawn
from seed 0): test bits/dim, or a diffusion model's test loss at fixed noise; copies the run's log.jsonl next to it
(chapter 05 plots it) and writes the manifest entry: file, sha256, config, training config, steps, training
minutes, the test figure, how it was trained. --evaluation then takes the figures of an `evaluate --json` run on
the shipped file (all 10,000 test images; judge accuracy and Fréchet distance at each guidance) into the entry,
after checking that the file is still the one the manifest names, and records the guidance with the best judge
accuracy as "best_guidance".

A cascade ships in one command: --stage twice, its base stage then its SR stage, each NAME RUN shipped as --run
ships it, after checking that the two chain (the SR stage reads the base's images and the same caption grammar).
--stage once replaces one stage of a shipped cascade and keeps the other (e.g. an SR stage fine-tuned from the
shipped one with --init-from: its entry then says so, and its log follows the shipped stage's log).
The cascade's entry (kind "cascade") names both stages with their sha256 and holds its `default_guidance` and
`default_aug_level` (what load_pretrained's cascade samples with): --default-guidance BASE SR and
--default-aug-level LEVEL; else, with --evaluation, the settings of the run with the best mean fraction of the
grader's ceiling; else the entry's own; else the cascade defaults (guidance 3 and 3 for scenes: what training's
twin probe and sample grids use; aug level 0.2). --evaluation takes a scenes cascade's figures from
bench/scenes_evaluate.py or `python -m imagen_tutorial evaluate --checkpoint scenes --json`, which record the
sha256 of the stages they measured: an evaluation of other files is refused. Without --stage, --evaluation and
--default-guidance update the shipped cascade's entry.

Names starting with "scenes" are Part III's scenes models (vocabulary 'scenes'), every other name a single-garment
model: a run of the other kind is refused. Nothing shipped is replaced by something worse: a file over 16 MB, a
model whose test figure is worse than the shipped one's (the same measure on the same test images) and an
evaluation of fewer captions than the one it would replace are refused before anything is written (--replace
ships them anyway). --to ships into another folder (e.g. a test root that IMAGEN_TUTORIAL_CHECKPOINTS points at).
Every refusal is one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch

from imagen_tutorial.cascade import DEFAULT_AUG_LEVEL, DEFAULT_GUIDANCE, Cascade
from imagen_tutorial.checkpoint import CheckpointError, export_model, file_sha256, load_checkpoint, model_from_state
from imagen_tutorial.config import TrainConfig, check_sampling_args
from imagen_tutorial.data import load_fashion_mnist
from imagen_tutorial.metrics import dataset_bits_per_dim, diffusion_test_loss, load_judge
from imagen_tutorial.pretrained import CHECKPOINT_DIR, load_pretrained
from imagen_tutorial.scenes import test_scenes

MAX_BYTES = 16 * 2**20
LOWER_IS_BETTER = ("test_bits_per_dim", "test_loss")
# A shipped model's test figure compares with another's only if these config fields agree (the same loss on the
# same kind of images).
MEASURED_ALIKE = ("family", "condition", "prediction", "levels", "image_size", "aspect", "cond_size", "vocabulary")
# A scenes cascade's guidance until an evaluation picks one: what training's twin probe and sample grids use for the
# base stage (grader.twin_probe), and the cascade's SR default.
SCENES_GUIDANCE = (3.0, DEFAULT_GUIDANCE[1])


class ShipError(Exception):
    """A refusal, printed as one line (exit code 2); nothing has been written."""


def read_entries(folder: Path) -> dict[str, dict]:
    path = folder / "manifest.json"
    return json.loads(path.read_text())["checkpoints"] if path.is_file() else {}


def write_entries(entries: dict[str, dict], folder: Path = CHECKPOINT_DIR) -> None:
    """Add or replace `entries` in folder/manifest.json at once (atomically)."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text()) if path.is_file() else {"checkpoints": {}}
    manifest["checkpoints"] = dict(sorted({**manifest["checkpoints"], **entries}.items()))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(path)


# ---------------------------------------------------------------- a trained model
def check_vocabulary(name: str, vocabulary: str, source: str) -> None:
    """A name starting with "scenes" ships a scenes model; any other name a single-garment one."""
    if name.startswith("scenes") and vocabulary != "scenes":
        raise ShipError(f"{source} is not a scenes model (its vocabulary is {vocabulary!r}: single-garment "
                        f"captions), but {name!r} names one of Part III's scenes models: give a run of "
                        f"configs/scenes_base.toml or configs/scenes_sr.toml, or ship it under another name")
    if not name.startswith("scenes") and vocabulary == "scenes":
        raise ShipError(f"{source} is a scenes model (vocabulary 'scenes'), but {name!r} names a single-garment "
                        f"model: ship it under a name starting with 'scenes'")


def test_figure(model, limit: int) -> dict:
    """What a shipped model is measured by: test bits/dim (autoregressive) or the denoising loss at fixed noise
    (diffusion, as training logs it), on the first `limit` test images, or `limit` test scenes from seed 0."""
    if model.config.vocabulary == "scenes":
        images, captions = test_scenes(limit)
    else:
        images, captions = load_fashion_mnist("test")
        images, captions = images[:limit], captions[:limit]
    if model.config.family == "diffusion":
        figure = {"test_loss": round(diffusion_test_loss(model, images, captions), 5)}
    else:
        figure = {"test_bits_per_dim": round(dataset_bits_per_dim(model, images, captions).mean().item(), 4)}
    return {**figure, "test_images": len(images)}


def refuse_worse(name: str, old: dict | None, new: dict) -> None:
    """Refuse to replace the shipped `old` entry by `new` if its test figure is worse, measured alike."""
    if not old or any(old.get("config", {}).get(k) != new["config"].get(k) for k in MEASURED_ALIKE):
        return
    for key in LOWER_IS_BETTER:
        if key in old and key in new and old.get("test_images") == new["test_images"] and new[key] > old[key]:
            raise ShipError(f"the shipped {name} has {key} {old[key]} after {old.get('steps', '?')} steps; this run "
                            f"has {new[key]} after {new['steps']} steps (the same {new['test_images']} test images): "
                            f"shipping it would replace a better model. Train it further, or give --replace")


def load_run(name: str, run: Path) -> tuple[dict, object]:
    """A run's checkpoint and the model it samples with (the EMA if any), refused if not of the kind `name` is."""
    state = load_checkpoint(run / "checkpoint.pt")
    model = model_from_state(state, f"run {run}").eval()
    check_vocabulary(name, model.config.vocabulary, f"run {run}")
    return state, model


def stage_model(name: str, run: Path, state: dict, model, limit: int, folder: Path, how: str | None = None,
                replace: bool = False) -> tuple[dict, Path]:
    """Export a run's model (`load_run`) as fp16 into a temporary file in `folder` and measure that file: (the
    manifest entry, the temporary file). Nothing shipped is touched: a file over 16 MB or a worse model is refused
    (`install` puts the file in place)."""
    train_cfg = state["train_config"]
    timed = train_cfg.get("schedule") == "time"
    planned = f"{train_cfg.get('max_minutes')} min" if timed else f"{train_cfg['steps']} steps"
    if (state["elapsed_s"] < 60 * train_cfg["max_minutes"]) if timed else state["step"] < train_cfg["steps"]:
        print(f"note: {run} stopped at step {state['step']} ({state['elapsed_s'] / 60:.0f} min) of its {planned}",
              file=sys.stderr)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.pt.{os.getpid()}.tmp"
    export_model(model, tmp, half=True, steps=state["step"])
    try:
        size = tmp.stat().st_size
        if size > MAX_BYTES:
            raise ShipError(f"{name}.pt would be {size / 2**20:.1f} MB, over the 16 MB limit for shipped files: "
                            f"nothing was replaced; ship a smaller model (d_model, n_layers)")
        shipped = model_from_state(load_checkpoint(tmp)).eval()  # measure what learners will load (fp16 weights)
        diffusion = shipped.config.family == "diffusion"
        minutes = state["elapsed_s"] / 60
        if how is None:
            images = state["step"] * train_cfg["batch_size"]
            began, flags = fine_tuned(name, train_cfg, read_entries(folder).get(name))
            how = (f"{began}{state['step']} steps of batch {train_cfg['batch_size']} ({images:,} images) in "
                   f"{minutes:.0f} min on a 2-core CPU, one thread, "
                   f"{'fp32, EMA weights' if diffusion else 'bf16 autocast'}, sharing the cores with "
                   f"the other course runs: OMP_NUM_THREADS=1 python -m imagen_tutorial train --config "
                   f"configs/{name}.toml {flags + ' ' if flags else ''}--out runs/{name}")
        entry = {"file": f"{name}.pt", "sha256": file_sha256(tmp),
                 "kind": "diffusion_model" if diffusion else "image_model", "size_bytes": size,
                 "parameters": shipped.num_params(), "config": shipped.config.to_dict(), "train_config": train_cfg,
                 "steps": state["step"], **test_figure(shipped, limit), "train_minutes": round(minutes, 1),
                 "trained": how, "log": f"{name}_log.jsonl"}
        if not replace:
            refuse_worse(name, read_entries(folder).get(name), entry)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return entry, tmp


def fine_tuned(name: str, train_cfg: dict, old: dict | None) -> tuple[str, str]:
    """How a run fine-tuned from the shipped `name` itself began, and the flags its command added to the config
    ("", "" for any other run): the shipped stage's steps and the recipe keys the run changed."""
    if not old or train_cfg.get("init_from") != name:
        return "", ""
    before = {**TrainConfig().to_dict(), **old.get("train_config", {})}  # a field newer than the shipped stage
    before = json.loads(json.dumps(before))                                 # ran at its default
    changed = {key: value for key, value in train_cfg.items()
               if key != "extra" and before[key] != json.loads(json.dumps(value))}  # extra: notes
    changed = dict(sorted(changed.items(), key=lambda item: item[0] != "init_from"))  # --init-from first

    def flag(key: str, value) -> str:  # as the command line takes it: --and-in-order, --betas 0.9 0.95
        name = key.replace("_", "-")
        if isinstance(value, bool):
            return f"--{'' if value else 'no-'}{name}"
        return f"--{name} " + (" ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))

    flags = " ".join(flag(key, value) for key, value in changed.items())
    return f"fine-tuned from the shipped {name} ({old.get('steps')} steps in {old.get('train_minutes')} min): ", flags


def install(name: str, tmp: Path, run: Path, folder: Path, init_from: str = "") -> None:
    """Put a staged file in place (atomically) and copy its run's log beside it (after the shipped stage's log,
    with a line saying where it begins, if the run was fine-tuned from that shipped stage: `init_from` == name)."""
    log, shipped_log = (run / "log.jsonl").read_text(), folder / f"{name}_log.jsonl"
    if init_from == name and shipped_log.is_file():
        marker = {"fine_tuned_from": name, "steps_before": read_entries(folder).get(name, {}).get("steps")}
        log = shipped_log.read_text() + json.dumps(marker) + "\n" + log
    tmp.replace(folder / f"{name}.pt")
    shipped_log.write_text(log)


def ship_model(name: str, run: Path, limit: int, how: str | None = None, folder: Path = CHECKPOINT_DIR,
               replace: bool = False) -> dict:
    state, model = load_run(name, run)
    entry, tmp = stage_model(name, run, state, model, limit, folder, how, replace)
    install(name, tmp, run, folder, state["train_config"].get("init_from", ""))
    return entry


# ---------------------------------------------------------------- a cascade
def ship_cascade(name: str, stages: list[tuple[str, Path]], limit: int, folder: Path = CHECKPOINT_DIR,
                 replace: bool = False) -> dict[str, dict]:
    """Both stages of a cascade from their runs (or one, the other kept as shipped), checked to chain before
    either is installed: {stage: entry}."""
    if len(stages) not in (1, 2) or name in dict(stages):
        raise ShipError(f"a cascade has two stages with names of their own: --stage BASE_NAME RUN --stage SR_NAME "
                        f"RUN (e.g. --stage {name}_base runs/{name}_base --stage {name}_sr runs/{name}_sr)")
    kept: dict[str, dict] = {}
    if len(stages) == 1:  # one stage replaced: the other stays the shipped one
        kept = shipped_stages(name, folder)
        if stages[0][0] not in kept:
            raise ShipError(f"the shipped {name} has the stages {' and '.join(kept)}: name one of them with --stage "
                            f"to replace it, or give --stage twice to ship a new cascade")
        new = dict(stages)
        stages = [(stage, new.get(stage)) for stage in kept]
    loaded = [load_run(stage, run) if run is not None else (None, load_pretrained(stage, root=folder))
              for stage, run in stages]  # checked before export
    check_vocabulary(name, loaded[0][1].config.vocabulary,
                     f"run {stages[0][1]}" if stages[0][1] else f"the shipped {stages[0][0]}")
    try:
        Cascade(loaded[0][1], loaded[1][1])
    except ValueError as error:
        raise ShipError(f"the stages of {name!r} do not chain: {error}") from None
    staged: dict[str, tuple[dict, Path]] = {}
    try:
        for (stage, run), (state, model) in zip(stages, loaded, strict=True):
            if run is not None:
                staged[stage] = stage_model(stage, run, state, model, limit, folder, replace=replace)
    except BaseException:
        for _, tmp in staged.values():
            tmp.unlink(missing_ok=True)
        raise
    for (stage, run), (state, _) in zip(stages, loaded, strict=True):
        if run is not None:
            install(stage, staged[stage][1], run, folder, state["train_config"].get("init_from", ""))
    return {stage: staged[stage][0] if run is not None else kept[stage] for stage, run in stages}


def cascade_stages(stages: dict[str, dict]) -> dict:
    """What a cascade's entry says of its stages (name -> their entries): its kind, each stage's sha256 by name,
    and the parameters of both."""
    return {"kind": "cascade", "stages": {s: e["sha256"] for s, e in stages.items()},
            "parameters": sum(e["parameters"] for e in stages.values())}


def cascade_entry(name: str, stages: dict[str, dict], old: dict | None, evaluations: list[dict],
                  default_guidance: list[float] | None, replace: bool = False,
                  default_aug_level: float | None = None) -> dict:
    """The cascade's manifest entry: its stages (name -> sha256), parameters, default guidance and aug level, and
    figures."""
    old = old or {}
    entry = {**old, **cascade_stages(stages)}
    if evaluations:
        evaluation = scenes_evaluation(evaluations, entry["stages"])
        kept = old.get("evaluation", {})
        if old.get("stages") == entry["stages"] and kept.get("per_category", 0) > evaluation["per_category"] \
                and not replace:
            raise ShipError(f"the {name} entry holds an evaluation of {kept['per_category']} captions per category; "
                            f"this one has {evaluation['per_category']}: it would replace better figures. Give "
                            f"--replace to ship it anyway")
        entry["evaluation"] = evaluation
    elif old.get("stages") != entry["stages"] and "evaluation" in old:
        del entry["evaluation"]
        print(f"note: the {name} entry's evaluation measured the stages now replaced, so it is dropped: evaluate "
              f"again (python bench/scenes_evaluate.py --checkpoint {name}) and merge it with --evaluation",
              file=sys.stderr)
    scenes = all(e["config"]["vocabulary"] == "scenes" for e in stages.values())
    fallback = old.get("default_guidance", SCENES_GUIDANCE if scenes else DEFAULT_GUIDANCE)
    best = entry.get("evaluation", {}).get("best_guidance") if evaluations else None
    entry["default_guidance"] = list(default_guidance or best or fallback)
    best_aug = entry.get("evaluation", {}).get("best_aug_level") if evaluations else None
    for aug in (default_aug_level, best_aug, old.get("default_aug_level"), DEFAULT_AUG_LEVEL):
        if aug is not None:
            entry["default_aug_level"] = aug
            break
    return entry


def scenes_evaluation(evaluations: list[dict], stages: dict[str, str]) -> dict:
    """A scenes cascade's figures from bench/scenes_evaluate.py or `evaluate --checkpoint scenes --json` runs (one
    --per-category), refused unless they measured exactly the files of `stages` (name -> sha256): per category
    and twin pairs at each guidance, the ceiling, seconds per scene, and the guidance with the best mean fraction
    of the ceiling."""
    runs = []
    for evaluation in evaluations:
        if "runs" not in evaluation:
            raise ShipError(f"the evaluation of {evaluation.get('checkpoint')!r} is not a scenes evaluation: give the "
                            f"JSON of bench/scenes_evaluate.py or `evaluate --checkpoint scenes --json`")
        if sorted(evaluation.get("stages", {}).values()) != sorted(stages.values()):
            raise ShipError(f"the evaluation of {evaluation['checkpoint']!r} measured other files than the stages "
                            f"shipped ({', '.join(stages)}): evaluate the shipped cascade again "
                            f"(python bench/scenes_evaluate.py --checkpoint NAME)")
        runs += evaluation["runs"]
    sizes = {run["per_category"] for run in runs}
    if len(sizes) > 1:
        raise ShipError(f"the evaluations have {sorted(sizes)} captions per category: merge runs of one size")
    ceiling = {k: round(v["rate"], 4) for k, v in runs[0]["ceiling"].items()}
    keep = ("guidance", "steps", "aug_level", "sampler", "threshold")
    by_guidance = [{**{k: run[k] for k in keep if k in run}, "seconds_per_scene": round(run["seconds_per_scene"], 3),
                    "scores": {k: round(v["rate"], 4) for k, v in run["scores"].items()},
                    "swapped": {k: round(v["swapped"], 4) for k, v in run["scores"].items()}} for run in runs]

    def fraction(run: dict) -> float:  # mean fraction of the ceiling over the categories and twin pairs
        return sum(rate / max(ceiling[k], 1e-9) for k, rate in run["scores"].items()) / len(run["scores"])

    best = max(by_guidance, key=lambda run: (fraction(run), -run["guidance"][0]))
    return {"per_category": sizes.pop(), "ceiling": ceiling, "by_guidance": by_guidance,
            "best_guidance": best["guidance"], "best_aug_level": best.get("aug_level", DEFAULT_AUG_LEVEL),
            "best_fraction_of_ceiling": round(fraction(best), 4)}


# ---------------------------------------------------------------- figures of a shipped model
DIFFUSION_KEYS = ("guidance", "sr_guidance", "steps", "sr_steps", "aug_level", "sampler", "threshold", "samples",
                  "images", "accuracy", "frechet_distance", "seconds_per_image", "sr", "bicubic", "original")


def shipped_entry(name: str, folder: Path) -> dict:
    entries = read_entries(folder)
    if name not in entries:
        raise ShipError(f"{folder / 'manifest.json'} has no entry {name!r}: ship it first")
    return entries[name]


def shipped_stages(name: str, folder: Path) -> dict[str, dict]:
    """The entries of a shipped cascade's stages, after checking that their files are still the ones shipped."""
    manifest = read_entries(folder)
    if manifest.get(name, {}).get("kind") != "cascade":
        raise ShipError(f"{folder / 'manifest.json'} has no cascade called {name!r}: ship it with --stage first")
    for stage, digest in manifest[name]["stages"].items():
        if stage not in manifest or file_sha256(folder / manifest[stage]["file"]) != digest:
            raise ShipError(f"the shipped {stage} changed since {name} was shipped; ship the cascade again")
    return {stage: manifest[stage] for stage in manifest[name]["stages"]}


def merge_diffusion_evaluation(name: str, evaluations: list[dict], folder: Path = CHECKPOINT_DIR) -> dict:
    """The figures of `evaluate --json` runs of a shipped diffusion stage, or of the cascade (whose entry names its
    two stages and their sha256, so the figures stay tied to the files they were measured on)."""
    manifest = read_entries(folder)
    if name == "cascade":
        entry = {**manifest[name], **cascade_stages(shipped_stages(name, folder))}
    else:
        entry = shipped_entry(name, folder)
        target = folder / entry["file"]
        for evaluation in evaluations:  # the file's path, or its shipped name (`evaluate --checkpoint diffusion_sr`)
            named = evaluation["checkpoint"] == name and not Path(name).exists()
            if not named and Path(evaluation["checkpoint"]).resolve() != target.resolve() \
                    or file_sha256(target) != entry["sha256"]:
                raise ShipError(f"the evaluation is of {evaluation['checkpoint']}, not of the shipped {target}")
    runs = [run for e in evaluations for run in (e.get("by_guidance") or [e])]
    runs = [{k: run[k] for k in DIFFUSION_KEYS if k in run} for run in runs]
    summary: dict = {"by_guidance": runs}
    judged = [run for run in runs if run.get("accuracy") is not None]
    if judged:
        best = max(judged, key=lambda run: (run["accuracy"], -run["guidance"]))
        summary.update(best_guidance=best["guidance"], best_accuracy=best["accuracy"])
    entry["evaluation"] = summary
    return entry


def merge_evaluation(name: str, evaluations: list[dict], folder: Path = CHECKPOINT_DIR) -> dict:
    """Take the figures of one or more `evaluate --json` runs of the shipped file (say, a guidance sweep at two
    temperatures) into its manifest entry; the bits/dim comes from the first."""
    if name == "cascade" or evaluations[0].get("family") == "diffusion":
        return merge_diffusion_evaluation(name, evaluations, folder)
    entry = shipped_entry(name, folder)
    target = folder / entry["file"]
    for evaluation in evaluations:
        if Path(evaluation["checkpoint"]).resolve() != target.resolve() or file_sha256(target) != entry["sha256"]:
            raise ShipError(f"the evaluation is of {evaluation['checkpoint']}, not of the shipped {target} "
                            f"(or the file changed since it was shipped)")
    first = evaluations[0]
    entry["test_bits_per_dim"] = round(first["bits_per_dim"], 4)
    entry["test_images"] = first["images"]
    runs = [run for e in evaluations for run in (e.get("by_guidance") or ([e] if "guidance" in e else []))]
    runs.sort(key=lambda run: (-run.get("temperature", 1.0), run["guidance"]))  # τ = 1 first, then by guidance
    keep = ("guidance", "temperature", "samples", "accuracy", "frechet_distance", "psnr_db")
    summary = {"by_guidance": [{k: run[k] for k in keep if k in run} for run in runs]}
    if runs and runs[0].get("accuracy") is not None:
        best = max(runs, key=lambda run: (run["accuracy"], -run["guidance"], run.get("temperature", 1.0)))
        summary["best_guidance"] = best["guidance"]
        summary["best_temperature"] = best.get("temperature", 1.0)
        summary["judge_accuracy_on_test_images"] = first["judge_accuracy_on_test_images"]
    entry["evaluation"] = summary
    return entry


def ship_judge(name: str, path: Path, folder: Path = CHECKPOINT_DIR) -> dict:
    """The judge ("classifier") or the scenes grader's slot classifier ("slot_classifier"), with the test figures
    tools/train_judge.py recorded in it."""
    state = load_checkpoint(path)
    load_judge(path)  # refuses anything but a judge
    target = folder / f"{name}.pt"
    if path.resolve() != target.resolve():
        shutil.copyfile(path, target)
    report = state.get("report", {})
    slots = " --slots" if name == "slot_classifier" else ""
    figures = {"test_accuracy": report.get("test_accuracy")}  # the slot classifier's: by variant
    if not slots:
        figures["test_accuracy_16_levels"] = report.get("test_accuracy_16_levels")
    return {"file": target.name, "sha256": file_sha256(target), "kind": "judge", "size_bytes": target.stat().st_size,
            "parameters": report.get("parameters"), "config": state["judge_config"], **figures,
            "test_images": 10000, "trained": f"{report.get('epochs')} epochs of batch {report.get('batch_size')} "
            f"on the training split in {report.get('train_minutes')} min on a 2-core CPU: python "
            f"tools/train_judge.py{slots}"}


# ---------------------------------------------------------------- the command
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--run", type=Path, help="training folder holding checkpoint.pt and log.jsonl")
    what.add_argument("--stage", nargs=2, action="append", metavar=("STAGE", "RUN"),
                      help="a cascade's stage and its training folder; twice: the base stage, then the SR stage; "
                           "once: that stage of the shipped cascade replaced, the other kept")
    what.add_argument("--judge", type=Path, help="a classifier written by tools/train_judge.py")
    parser.add_argument("--limit", type=int, default=1000,
                        help="with --run or --stage: test images (scenes) for the shipped file's test figure")
    parser.add_argument("--to", type=Path, default=CHECKPOINT_DIR,
                        help="folder for the .pt files, their logs and manifest.json (default data/checkpoints)")
    parser.add_argument("--how", help="with --run: how it was trained, for the manifest (default: the CPU recipe)")
    parser.add_argument("--evaluation", type=Path, action="append",
                        help="JSON from `evaluate --json` of the shipped file (a scenes cascade: from "
                             "bench/scenes_evaluate.py); repeat to merge several runs")
    parser.add_argument("--default-guidance", type=float, nargs=2, metavar=("BASE", "SR"),
                        help="a cascade's guidance when none is asked for (default: its evaluation's best)")
    parser.add_argument("--default-aug-level", type=float, metavar="LEVEL",
                        help="a cascade's SR noise augmentation when none is asked for (default: its evaluation's "
                             "best)")
    parser.add_argument("--replace", action="store_true",
                        help="ship even if the shipped model (or evaluation) it replaces measured better")
    return parser


def read_evaluation(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ShipError(f"{path} is not the JSON an evaluation writes ({error})") from None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    try:
        evaluations = [read_evaluation(path) for path in args.evaluation or []]
        if args.limit < 1:
            raise ShipError(f"--limit={args.limit}: give at least 1 test image")
        if args.how and not args.run:
            raise ShipError("--how applies to --run: a cascade's stages record their own config's recipe")
        for flag in ("default_guidance", "default_aug_level"):
            if getattr(args, flag) is not None and (args.run or args.judge):
                raise ShipError(f"--{flag.replace('_', '-')} applies to a cascade (--stage twice, or a shipped "
                                f"cascade's name)")
        if args.default_aug_level is not None:
            check_sampling_args(aug_level=args.default_aug_level)
        if (args.run or args.judge) and read_entries(args.to).get(args.name, {}).get("kind") == "cascade":
            raise ShipError(f"{args.name!r} is a shipped cascade, not one model: ship it with --stage twice (its base "
                            f"stage, then its SR stage)")
        if args.judge:
            entries = {args.name: ship_judge(args.name, args.judge, args.to)}
        elif args.run:
            entries = {args.name: ship_model(args.name, args.run, args.limit, args.how, args.to, args.replace)}
        elif args.stage or args.default_guidance or args.default_aug_level is not None \
                or any("runs" in e for e in evaluations):  # a cascade
            old = read_entries(args.to).get(args.name)
            stages = ship_cascade(args.name, [(s, Path(r)) for s, r in args.stage], args.limit, args.to,
                                  args.replace) if args.stage else shipped_stages(args.name, args.to)
            entries = {**(stages if args.stage else {}),
                       args.name: cascade_entry(args.name, stages, old, evaluations, args.default_guidance,
                                                args.replace, args.default_aug_level)}
        elif evaluations:
            entries = {args.name: merge_evaluation(args.name, evaluations, args.to)}
        else:
            parser.error("give --run (an image model), --stage twice (a cascade), --evaluation (its figures) or "
                         "--judge (a classifier)")
        write_entries(entries, args.to)
    except (ShipError, CheckpointError, ValueError, OSError) as error:
        message = f"{error.filename}: {error.strerror}" if isinstance(error, OSError) and error.strerror else error
        print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
        return 2
    print(json.dumps(entries[args.name], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
