"""What the text encoder buys: the scenes base stage with a bag of words, a pooled Transformer encoder and
cross-attention over the whole caption, at equal training (Imagen §4.4, in miniature).

    python bench/encoder_ablation.py train [--encoders bow pooled] [--minutes 120]   # in the background; resumable
    python bench/encoder_ablation.py grade [--per-category 200] [--guidance 3]

The cross-attention run is the scenes base stage itself (configs/scenes_base.toml in runs/scenes_base, or
--cross another folder); "pooled" and "bow" train the same config with only `text_encoder` changed, into
runs/ablation/<encoder>: the same steps, seed, data order (scenes are drawn from (seed, step)) and denoiser.
`train` runs each unfinished variant for at most --minutes more (then it saves; run it again to continue).
`grade` grades the EMA weights of every variant per category and on swapped-twin pairs beside the grader's
ceiling at 14×28, prints the twin rates the runs logged along training, draws the same captions and twins from
each model (docs/scenes_ablation.png), and writes bench/results/encoder_ablation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from imagen_tutorial import load_pretrained
from imagen_tutorial.checkpoint import load_checkpoint, load_model
from imagen_tutorial.grader import GRID_TWINS, evaluate_scenes, grade
from imagen_tutorial.viz import plot_scenes, read_log

CONFIG = Path("configs/scenes_base.toml")
ENCODERS = ("bow", "pooled", "cross")


def run_folder(encoder: str, cross: Path) -> Path:
    return cross if encoder == "cross" else Path("runs/ablation") / encoder


def train(encoders: list[str], minutes: float, cross: Path) -> None:
    for encoder in encoders:
        out = run_folder(encoder, cross)
        command = [sys.executable, "-m", "imagen_tutorial", "train", "--config", str(CONFIG), "--out", str(out),
                   "--text-encoder", encoder]
        checkpoint = out / "checkpoint.pt"
        elapsed = 0.0
        if checkpoint.is_file():
            state = load_checkpoint(checkpoint)
            if state["step"] >= state["train_config"]["steps"]:
                print(f"{encoder}: finished ({state['step']} steps in {out})")
                continue
            command.append("--resume")
            elapsed = state["elapsed_s"] / 60
        command += ["--max-minutes", f"{elapsed + minutes:.1f}"]  # this session's share, on top of the run so far
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"})


def grade_all(per_category: int, guidance: float, cross: Path, steps: int) -> None:
    classifier = load_pretrained("slot_classifier")
    results, models = {}, {}
    for encoder in ENCODERS:
        checkpoint = run_folder(encoder, cross) / "checkpoint.pt"
        if not checkpoint.is_file():
            print(f"{encoder}: no run in {checkpoint.parent} yet; train it first")
            continue
        state = load_checkpoint(checkpoint)
        models[encoder] = load_model(checkpoint)
        result = evaluate_scenes(models[encoder], classifier, per_category, guidance=guidance, steps=steps)
        probes = [r for r in read_log(checkpoint.parent / "log.jsonl") if "twins_position" in r]
        results[encoder] = {"step": state["step"], "cpu_minutes": round(state["elapsed_s"] / 60, 1), **result,
                            "along_training": probes}
        print(f"{encoder}: step {state['step']}, {result['seconds_per_scene']:.3f} s per scene", flush=True)
    if not results:
        return
    ceiling = next(iter(results.values()))["ceiling"]
    print(f"\n{per_category} captions per category ({per_category // 2} twin pairs), guidance {guidance:g}, DDIM "
          f"{steps}; ceiling: real test scenes at 14×28")
    print("| category | " + " | ".join(f"{e} (step {r['step']})" for e, r in results.items()) + " | ceiling |")
    print("|---|" + "---|" * (len(results) + 1))
    for name in ceiling:
        print(f"| {name} | " + " | ".join(f"{r['scores'][name]['rate']:.3f}" for r in results.values()) +
              f" | {ceiling[name]['rate']:.3f} |")
    print("\nswapped twins along training (pairs with both right / both swapped, of 20 each):")
    for encoder, r in results.items():
        print(f"  {encoder}: " + ", ".join(f"step {p['step']}: position {p['twins_position']:.2f}/"
                                           f"{p['swapped_position']:.2f}, binding {p['twins_binding']:.2f}/"
                                           f"{p['swapped_binding']:.2f}" for p in r["along_training"]))
    captions = [s.caption for scene in GRID_TWINS for s in (scene, scene.twin())]
    for encoder, model in models.items():
        images = model.generate(captions, steps=steps, guidance=guidance, generator=torch.Generator().manual_seed(0))
        scenes = [s for scene in GRID_TWINS for s in (scene, scene.twin())]
        figure = plot_scenes(images, captions, grade(images, scenes, classifier), ncols=2)
        figure.suptitle(f"text encoder: {encoder}")
        figure.savefig(f"docs/scenes_ablation_{encoder}.png", dpi=100)
    out = Path("bench/results/encoder_ablation.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"per_category": per_category, "guidance": guidance, "steps": steps,
                               "runs": results}, indent=1) + "\n")
    print(f"wrote {out} and docs/scenes_ablation_*.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train the variants (resumable)")
    p.add_argument("--encoders", nargs="+", choices=ENCODERS, default=["bow", "pooled"])
    p.add_argument("--minutes", type=float, default=120.0, help="at most this much more training per variant")
    p.add_argument("--cross", type=Path, default=Path("runs/scenes_base"), help="the cross-attention run's folder")
    p = sub.add_parser("grade", help="grade every variant that has a run")
    p.add_argument("--per-category", type=int, default=200)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--cross", type=Path, default=Path("runs/scenes_base"))
    args = parser.parse_args()
    if args.command == "train":
        train(args.encoders, args.minutes, args.cross)
    else:
        grade_all(args.per_category, args.guidance, args.cross, args.steps)


if __name__ == "__main__":
    main()
