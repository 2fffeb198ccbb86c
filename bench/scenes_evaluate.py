"""Grade a scenes model per category and on swapped twins, beside the grader's ceiling, at several guidance weights.

    python bench/scenes_evaluate.py [--checkpoint scenes] [--guidance 1 3 5] [--per-category 500] [--steps 50]
    python bench/scenes_evaluate.py --checkpoint runs/scenes_base/checkpoint.pt --per-category 100   # a base stage

--checkpoint is a shipped name (scenes: the cascade; scenes_base) or a checkpoint file; a cascade takes --guidance
for its base stage, --sr-guidance and --aug-level for its SR stage (default: the cascade's own). Prints one table
(rows: categories and twin pairs; columns: each guidance, then the ceiling: the same grader on real test scenes
drawn for the same captions, at the model's resolution) and the seconds per scene, and writes the figures to
--json, with the sha256 of the files measured: tools/ship_checkpoint.py merges them into the cascade's manifest
entry (`--evaluation`). The same evaluation, one guidance per --guidance flag, is
`python -m imagen_tutorial evaluate --checkpoint scenes [--json]`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from imagen_tutorial.__main__ import (
    evaluate_scenes_model,
    file_digests,
    load_any,
    scenes_table,
    stage_aug_level,
    stage_guidance,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="scenes")
    parser.add_argument("--guidance", type=float, nargs="+", default=None,
                        help="base-stage guidance weights (default: the model's own; 3 for a lone stage)")
    parser.add_argument("--sr-guidance", type=float, default=None, help="a cascade's SR guidance (default its own)")
    parser.add_argument("--aug-level", type=float, default=None,
                        help="a cascade's noise on the low-res scene its SR stage reads (default its own)")
    parser.add_argument("--per-category", type=int, default=500)
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps per stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="default bench/results/scenes_<checkpoint>.json")
    args = parser.parse_args()
    model = load_any(args.checkpoint)
    if model.config.vocabulary != "scenes":
        parser.error(f"{args.checkpoint} is not a scenes model (its vocabulary is {model.config.vocabulary!r})")
    try:
        guidance = [stage_guidance(model, g, args.sr_guidance) for g in args.guidance or [None]]
        aug_level = stage_aug_level(model, args.aug_level)
    except ValueError as error:
        parser.error(str(error))
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    result = evaluate_scenes_model(model, args.checkpoint, args.per_category, guidance, args.steps, seed=args.seed,
                                   aug_level=aug_level,
                                   log=lambda line: print(line, flush=True))
    print("\n" + scenes_table(result))
    out = args.json or Path(f"bench/results/scenes_{Path(args.checkpoint).stem}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**result, "stages": file_digests(args.checkpoint), "threads": torch.get_num_threads(),
                               "seconds": round(time.perf_counter() - start, 1)}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
