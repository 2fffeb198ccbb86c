"""Grade a scenes model per category and on swapped twins, beside the grader's ceiling, at several guidance weights.

    python bench/scenes_evaluate.py [--checkpoint scenes] [--guidance 1 3 5] [--per-category 500] [--steps 50]
    python bench/scenes_evaluate.py --checkpoint runs/scenes_base/checkpoint.pt --per-category 100   # a base stage

--checkpoint is a shipped name (scenes: the cascade; scenes_base) or a checkpoint file; a cascade takes --guidance
for its base stage and --sr-guidance for its SR stage. Prints one table (rows: categories and twin pairs; columns:
each guidance, then the ceiling: the same grader on real test scenes drawn for the same captions, at the model's
resolution) and the seconds per scene, and writes the figures to --json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from imagen_tutorial import load_pretrained
from imagen_tutorial.__main__ import load_any
from imagen_tutorial.cascade import Cascade
from imagen_tutorial.grader import evaluate_scenes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="scenes")
    parser.add_argument("--guidance", type=float, nargs="+", default=None,
                        help="base-stage guidance weights (default: the model's own; 3 for a lone stage)")
    parser.add_argument("--sr-guidance", type=float, default=None, help="a cascade's SR guidance (default its own)")
    parser.add_argument("--per-category", type=int, default=500)
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps per stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="default bench/results/scenes_<checkpoint>.json")
    args = parser.parse_args()
    model = load_any(args.checkpoint)
    if model.config.vocabulary != "scenes":
        parser.error(f"{args.checkpoint} is not a scenes model (its vocabulary is {model.config.vocabulary!r})")
    cascade = isinstance(model, Cascade)
    if args.sr_guidance is not None and not cascade:
        parser.error("--sr-guidance applies to a cascade only")
    weights = args.guidance or [model.guidance[0] if cascade else 3.0]
    classifier = load_pretrained("slot_classifier")
    torch.manual_seed(args.seed)
    runs, start = [], time.perf_counter()
    for w in weights:
        sampling = {"guidance": (w, model.guidance[1] if args.sr_guidance is None else args.sr_guidance)
                    if cascade else w, "steps": (args.steps, args.steps) if cascade else args.steps}
        runs.append(evaluate_scenes(model, classifier, args.per_category, args.seed, **sampling))
        print(f"guidance {sampling['guidance']}: {runs[-1]['seconds_per_scene']:.3f} s per scene", flush=True)
    names, ceiling = list(runs[0]["scores"]), runs[0]["ceiling"]
    print(f"\n{args.checkpoint}: {args.per_category} captions per category ({args.per_category // 2} twin pairs), "
          f"DDIM {args.steps} steps, seed {args.seed}")
    print("| category | " + " | ".join(f"guidance {r['guidance']}" for r in runs) + " | ceiling | fraction of "
          "the ceiling |\n|---|" + "---|" * (len(runs) + 2))
    for name in names:
        best = max(r["scores"][name]["rate"] for r in runs)
        print(f"| {name} | " + " | ".join(f"{r['scores'][name]['rate']:.3f}" for r in runs) +
              f" | {ceiling[name]['rate']:.3f} | {best / max(ceiling[name]['rate'], 1e-9):.2f} |")
    out = args.json or Path(f"bench/results/scenes_{Path(args.checkpoint).stem}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"checkpoint": args.checkpoint, "steps": args.steps, "runs": runs,
                               "threads": torch.get_num_threads(),
                               "seconds": round(time.perf_counter() - start, 1)}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
