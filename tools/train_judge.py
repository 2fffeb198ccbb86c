"""Train the judge classifier and write data/checkpoints/classifier.pt (run from the repository root).

    python tools/train_judge.py [--epochs 8] [--out data/checkpoints/classifier.pt]
    python tools/train_judge.py --slots --out data/checkpoints/slot_classifier.pt   # Part III's grader

Then record its sha256 in data/checkpoints/manifest.json with `python tools/update_manifest.py`.
"""

import argparse
import json
import time

import torch

from imagen_tutorial.grader import train_slot_classifier
from imagen_tutorial.metrics import save_judge, train_judge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slots", action="store_true",
                        help="the scenes grader's slot classifier: trained on full-size, small and dark garments")
    parser.add_argument("--out", default=None, help="default data/checkpoints/classifier.pt (slot_classifier.pt)")
    args = parser.parse_args()
    if args.slots and args.width != 32:
        parser.error("--width applies to the judge only; the slot classifier is the judge's network at width 32")
    args.out = args.out or f"data/checkpoints/{'slot_' if args.slots else ''}classifier.pt"
    start = time.time()
    if args.slots:
        judge, report = train_slot_classifier(epochs=args.epochs, seed=args.seed)
    else:
        judge, report = train_judge(epochs=args.epochs, width=args.width, seed=args.seed)
    report["train_minutes"] = round((time.time() - start) / 60, 1)
    report["threads"] = torch.get_num_threads()
    print(f"wrote {save_judge(judge, args.out, report=report)}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
