"""Upsampling baselines for the super-resolution rows of the README: the judge and PSNR on the same images.

    .venv/bin/python bench/superres_baselines.py --json bench/results/superres_baselines.json

`evaluate` judges `superres` on the first 10·per_class official test images (500 by default), redrawn from their
7×7 area-downsampled copies. This script scores what needs no learning on exactly those images: nearest-neighbour
and bicubic upsampling of the 7×7 input (quantized to 16 levels, like the model's output), and the originals at 16
levels (the best any 16-level output can do). A few seconds on a CPU.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from imagen_tutorial import load_pretrained
from imagen_tutorial.data import dequantize, load_fashion_mnist, lowres, quantize
from imagen_tutorial.metrics import conditional_accuracy, psnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500, help="first N test images (evaluate's 10 × per-class)")
    parser.add_argument("--levels", type=int, default=16)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    images, labels = load_fashion_mnist("test")
    images, labels = images[: args.images], labels[: args.images]
    low, truth = lowres(images, 7), images.float() / 255
    judge = load_pretrained("classifier")
    outputs = {
        "nearest": quantize(F.interpolate(low, size=28, mode="nearest")[:, 0], args.levels),
        "bicubic": quantize(F.interpolate(low, size=28, mode="bicubic", align_corners=False).clamp(0, 1)[:, 0],
                            args.levels),
        "original_16_levels": quantize(images, args.levels),
    }
    result = {"test_images": len(images), "levels": args.levels, "cond_size": 7}
    for name, levels in outputs.items():
        result[name] = {"psnr_db": psnr(dequantize(levels, args.levels), truth).mean().item(),
                        "accuracy": conditional_accuracy(judge, levels, labels, args.levels)}
        print(f"{name:>18}: PSNR {result[name]['psnr_db']:.2f} dB, judge accuracy {result[name]['accuracy']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
