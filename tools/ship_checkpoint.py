"""Copy a trained run into data/checkpoints/ as a shipped checkpoint and record it in manifest.json.

    python tools/ship_checkpoint.py text2img --run runs/text2img [--limit N]
    python -m imagen_tutorial evaluate --checkpoint data/checkpoints/text2img.pt --guidance 1 --guidance 3 \
        --json > text2img_eval.json
    python tools/ship_checkpoint.py text2img --evaluation text2img_eval.json
    python tools/ship_checkpoint.py classifier --judge runs/judge/classifier.pt
    python tools/ship_checkpoint.py slot_classifier --judge runs/slot_classifier.pt

--run exports the weights as fp16 (loading restores fp32; the file stays well under 16 MB), measures test
bits/dim of the exported weights on the first --limit test images (default 1,000: a quick first figure), copies
the run's log.jsonl next to it (chapter 05 plots it) and writes the manifest entry: file, sha256, config,
training config, steps, test bits/dim, how it was trained. --evaluation then takes the figures of an `evaluate
--json` run on the shipped file (all 10,000 test images; judge accuracy and Fréchet distance at each guidance)
into the entry, after checking that the file is still the one the manifest names, and records the guidance with
the best judge accuracy as "best_guidance".
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from imagen_tutorial.checkpoint import export_model, file_sha256, load_checkpoint, model_from_state
from imagen_tutorial.data import load_fashion_mnist
from imagen_tutorial.metrics import dataset_bits_per_dim, diffusion_test_loss, load_judge
from imagen_tutorial.pretrained import CHECKPOINT_DIR, read_manifest

MAX_BYTES = 16 * 2**20


def write_entry(name: str, entry: dict, folder: Path = CHECKPOINT_DIR) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text()) if path.is_file() else {"checkpoints": {}}
    manifest["checkpoints"][name] = entry
    manifest["checkpoints"] = dict(sorted(manifest["checkpoints"].items()))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(path)


def ship_model(name: str, run: Path, limit: int, how: str | None = None, folder: Path = CHECKPOINT_DIR) -> dict:
    state = load_checkpoint(run / "checkpoint.pt")
    model = model_from_state(state, f"run {run}").eval()
    train_cfg = state["train_config"]
    if state["step"] < train_cfg["steps"]:
        print(f"note: {run} stopped at step {state['step']} of {train_cfg['steps']}", file=sys.stderr)
    target = folder / f"{name}.pt"
    export_model(model, target, half=True, steps=state["step"])
    size = target.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{target} is {size / 2**20:.1f} MB, over the 16 MB limit for shipped files")
    shipped = model_from_state(load_checkpoint(target)).eval()  # measure what learners will load (fp16 weights)
    images, labels = load_fashion_mnist("test")
    images, labels = images[:limit], labels[:limit]
    diffusion = shipped.config.family == "diffusion"
    if diffusion:  # no likelihood: the denoising loss at fixed noise on the test images, as training logs it
        figure = {"test_loss": round(diffusion_test_loss(shipped, images, labels), 5)}
    else:
        figure = {"test_bits_per_dim": round(dataset_bits_per_dim(shipped, images, labels).mean().item(), 4)}
    log = folder / f"{name}_log.jsonl"
    shutil.copyfile(run / "log.jsonl", log)
    minutes = state["elapsed_s"] / 60
    if how is None:
        how = (f"{state['step']} steps of batch {train_cfg['batch_size']} ({state['step'] * train_cfg['batch_size']:,} "
               f"images) in {minutes:.0f} min on a 2-core CPU, one thread, "
               f"{'fp32, EMA weights' if diffusion else 'bf16 autocast'}, sharing the cores with "
               f"the other course runs: OMP_NUM_THREADS=1 python -m imagen_tutorial train --config "
               f"configs/{name}.toml --out runs/{name}")
    entry = {"file": target.name, "sha256": file_sha256(target),
             "kind": "diffusion_model" if diffusion else "image_model", "size_bytes": size,
             "parameters": shipped.num_params(), "config": shipped.config.to_dict(), "train_config": train_cfg,
             "steps": state["step"], **figure, "test_images": len(images), "train_minutes": round(minutes, 1),
             "trained": how, "log": log.name}
    return entry


DIFFUSION_KEYS = ("guidance", "sr_guidance", "steps", "sr_steps", "aug_level", "sampler", "threshold", "samples",
                  "images", "accuracy", "frechet_distance", "seconds_per_image", "sr", "bicubic", "original")


def merge_diffusion_evaluation(name: str, evaluations: list[dict]) -> dict:
    """The figures of `evaluate --json` runs of a shipped diffusion stage, or of the cascade (whose entry names its
    two stages and their sha256, so the figures stay tied to the files they were measured on)."""
    manifest = read_manifest()
    if name == "cascade":
        stages = {stage: manifest[stage]["sha256"] for stage in ("diffusion_base", "diffusion_sr")}
        for stage in stages:
            if file_sha256(CHECKPOINT_DIR / manifest[stage]["file"]) != stages[stage]:
                raise SystemExit(f"the shipped {stage} changed since it was shipped; re-ship it first")
        entry = {"kind": "cascade", "stages": stages,
                 "parameters": manifest["diffusion_base"]["parameters"] + manifest["diffusion_sr"]["parameters"]}
    else:
        entry = manifest[name]
        target = CHECKPOINT_DIR / entry["file"]
        for evaluation in evaluations:  # the file's path, or its shipped name (`evaluate --checkpoint diffusion_sr`)
            named = evaluation["checkpoint"] == name and not Path(name).exists()
            if not named and Path(evaluation["checkpoint"]).resolve() != target.resolve() \
                    or file_sha256(target) != entry["sha256"]:
                raise SystemExit(f"the evaluation is of {evaluation['checkpoint']}, not of the shipped {target}")
    runs = [run for e in evaluations for run in (e.get("by_guidance") or [e])]
    runs = [{k: run[k] for k in DIFFUSION_KEYS if k in run} for run in runs]
    summary: dict = {"by_guidance": runs}
    judged = [run for run in runs if run.get("accuracy") is not None]
    if judged:
        best = max(judged, key=lambda run: (run["accuracy"], -run["guidance"]))
        summary.update(best_guidance=best["guidance"], best_accuracy=best["accuracy"])
    entry["evaluation"] = summary
    return entry


def merge_evaluation(name: str, evaluations: list[dict]) -> dict:
    """Take the figures of one or more `evaluate --json` runs of the shipped file (say, a guidance sweep at two
    temperatures) into its manifest entry; the bits/dim comes from the first."""
    if name == "cascade" or evaluations[0].get("family") == "diffusion":
        return merge_diffusion_evaluation(name, evaluations)
    entry = read_manifest()[name]
    target = CHECKPOINT_DIR / entry["file"]
    for evaluation in evaluations:
        if Path(evaluation["checkpoint"]).resolve() != target.resolve() or file_sha256(target) != entry["sha256"]:
            raise SystemExit(f"the evaluation is of {evaluation['checkpoint']}, not of the shipped {target} "
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


def ship_judge(name: str, path: Path) -> dict:
    """The judge ("classifier") or the scenes grader's slot classifier ("slot_classifier"), with the test figures
    tools/train_judge.py recorded in it."""
    state = load_checkpoint(path)
    load_judge(path)  # refuses anything but a judge
    target = CHECKPOINT_DIR / f"{name}.pt"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--run", type=Path, help="training folder holding checkpoint.pt and log.jsonl")
    parser.add_argument("--judge", type=Path, help="a classifier written by tools/train_judge.py")
    parser.add_argument("--limit", type=int, default=1000, help="with --run: test images for the first bits/dim")
    parser.add_argument("--to", type=Path, default=CHECKPOINT_DIR,
                        help="with --run: folder for the .pt, its log and manifest.json (default data/checkpoints)")
    parser.add_argument("--how", help="with --run: how it was trained, for the manifest (default: the CPU recipe)")
    parser.add_argument("--evaluation", type=Path, action="append",
                        help="JSON from `evaluate --json` of the shipped file; repeat to merge several runs")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.judge:
        entry = ship_judge(args.name, args.judge)
    elif args.run:
        entry = ship_model(args.name, args.run, args.limit, args.how, args.to)
    elif args.evaluation:
        entry = merge_evaluation(args.name, [json.loads(path.read_text()) for path in args.evaluation])
    else:
        parser.error("give --run (an image model), --evaluation (its figures) or --judge (the classifier)")
    write_entry(args.name, entry, args.to if args.run else CHECKPOINT_DIR)
    print(json.dumps(entry, indent=1))


if __name__ == "__main__":
    main()
