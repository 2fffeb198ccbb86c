"""Train the judge classifier and write data/checkpoints/classifier.pt (run from the repository root).

    python tools/train_judge.py [--epochs 8] [--out data/checkpoints/classifier.pt]

Then record its sha256 in data/checkpoints/manifest.json with `python tools/update_manifest.py`.
"""

import argparse
import json
import time

import torch

from imagen_tutorial.metrics import save_judge, train_judge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="data/checkpoints/classifier.pt")
    args = parser.parse_args()
    start = time.time()
    judge, report = train_judge(epochs=args.epochs, width=args.width, seed=args.seed)
    report["train_minutes"] = round((time.time() - start) / 60, 1)
    report["threads"] = torch.get_num_threads()
    print(f"wrote {save_judge(judge, args.out, report=report)}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
