"""How far can the scenes grader be trusted? Its detectors and slot classifier on real test garments, and its
ceiling: the grader on real test scenes drawn for the evaluation captions, at 28×56 and at the base stage's 14×28.

    python bench/scenes_grader.py [--per-category 500] [--garments 2000] [--json bench/results/scenes_grader.json]

Prints, per variant of a garment (full, small, dark, dark small; at 28 and through 14×14), how often each detector
reads it right and how often the slot classifier names its class; then the ceiling per category and on swapped
twins. Every score of a scenes model in README and chapter 11 is printed beside this ceiling.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from imagen_tutorial import load_pretrained
from imagen_tutorial.grader import ceiling, detect, evaluation_set, garment_variants
from imagen_tutorial.metrics import judge_logits


def detector_rates(classifier, n: int) -> dict:
    rows = {}
    for name, dark, small, x, labels in garment_variants(n):
        empty, is_dark, is_small = detect(x[:, 0])
        rows[name] = {"not empty": (~empty).float().mean().item(),
                      "dark right": (is_dark == dark).float().mean().item(),
                      "small right": (is_small == small).float().mean().item(),
                      "class right": (judge_logits(classifier, x).argmax(1) == labels).float().mean().item()}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-category", type=int, default=500)
    parser.add_argument("--garments", type=int, default=2000, help="test garments for the detector rates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("bench/results/scenes_grader.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    classifier = load_pretrained("slot_classifier")
    rows = detector_rates(classifier, args.garments)
    print(f"detectors and slot classifier on {args.garments} real test garments per variant")
    print("| variant | not empty | dark right | small right | class right |\n|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['not empty']:.3f} | {r['dark right']:.3f} | {r['small right']:.3f} | "
              f"{r['class right']:.3f} |")
    sets = evaluation_set(args.per_category, args.seed)
    ceilings = {size: ceiling(sets, classifier, size, args.seed) for size in (28, 14)}
    print(f"\nceiling: the grader on real test scenes ({args.per_category} captions per category, "
          f"{args.per_category // 2} twin pairs), seed {args.seed}")
    print("| category | at 28×56 | at 14×28 |\n|---|---|---|")
    for name in sets:
        print(f"| {name} | {ceilings[28][name]['rate']:.3f} | {ceilings[14][name]['rate']:.3f} |")
    result = {"garments": args.garments, "per_category": args.per_category, "seed": args.seed, "detectors": rows,
              "ceiling_28": ceilings[28], "ceiling_14": ceilings[14],
              "seconds": round(time.perf_counter() - start, 1)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.json} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
