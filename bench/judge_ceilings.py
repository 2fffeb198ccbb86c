"""What the judge gives real test images in the forms the diffusion stages produce: the ceiling for each stage.

The base stage draws 14×14 images, judged quantized to 16 levels and upsampled bilinearly to 28×28 (what
`judge_input` does), so its ceiling is real 14×14 images treated the same way; the cascade's is the 28×28 originals
at 16 levels; bicubic 14 → 28 is what upsampling without learning gives.

    .venv/bin/python bench/judge_ceilings.py [--json bench/results/judge_ceilings.json]    # ~30 s
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch.nn.functional as F

from imagen_tutorial import load_pretrained
from imagen_tutorial.data import load_fashion_mnist, quantize, resize, to_float
from imagen_tutorial.metrics import classify_accuracy, judge_float_images, judge_input, reference_features


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    judge = load_pretrained("classifier")
    images, labels = load_fashion_mnist("test")
    reference = reference_features(judge, levels=16)
    small = resize(images, 14)
    bicubic = F.interpolate(to_float(small), size=28, mode="bicubic", align_corners=False).clamp(0, 1)
    rows = {
        "real_14x14_16_levels": classify_accuracy(judge, judge_input(quantize(small, 16), 16), labels),
        "real_28x28_16_levels": classify_accuracy(judge, judge_input(quantize(images, 16), 16), labels),
        "bicubic_14_to_28_16_levels": judge_float_images(judge, bicubic, labels, 16, reference)["accuracy"],
    }
    for name, value in rows.items():
        print(f"{name:>28}: judge accuracy {value:.4f} on {len(labels):,} test images")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
