"""The cascade's sampling-steps sweep and the SR stage's noise-augmentation sweep (README "Results").

Steps: the whole cascade (text → 14×14 → 28×28) with the same number of DDIM steps in both stages, 50 samples
per class, judged at 16 levels: judge accuracy, Fréchet distance and seconds per image.
Augmentation: the SR stage at each `aug` level, reading (a) real 14×14 test images (judge accuracy, PSNR and
sharpness against the originals) and (b) the base model's own 14×14 samples (the cascade: judge accuracy and
Fréchet distance) — the train/test mismatch noise conditioning augmentation is there to fix.

    .venv/bin/python bench/cascade_sweeps.py --json bench/results/cascade_sweeps.json      # ~30 min on 2 cores
    .venv/bin/python bench/cascade_sweeps.py --base runs/diffusion_base/checkpoint.pt \\
        --sr runs/diffusion_sr/checkpoint.pt --per-class 10 --steps 25 --aug 0 0.3          # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from imagen_tutorial import load_pretrained
from imagen_tutorial.cascade import DEFAULT_GUIDANCE, Cascade
from imagen_tutorial.diffusion import DEFAULT_THRESHOLD
from imagen_tutorial.metrics import (
    captions_per_class,
    diffusion_samples,
    evaluate_diffusion_generation,
    evaluate_super_resolution,
    judge_float_images,
    reference_features,
    sharpness,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", help="base checkpoint (default: the shipped diffusion_base)")
    p.add_argument("--sr", help="SR checkpoint (default: the shipped diffusion_sr)")
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--steps", type=int, nargs="*", default=[10, 25, 50, 100])
    p.add_argument("--aug", type=float, nargs="*", default=[0.0, 0.1, 0.3, 0.5])
    p.add_argument("--guidance", type=float, nargs=2, default=None, metavar=("BASE", "SR"),
                   help="default: the cascade's, cascade.DEFAULT_GUIDANCE (1.5 3)")
    p.add_argument("--threshold", default=DEFAULT_THRESHOLD,
                   help="'static' (the default), a dynamic-thresholding percentile such as 0.995, or 'none'")
    p.add_argument("--aug-steps", type=int, default=50, help="DDIM steps in the augmentation sweep")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    if args.threshold not in ("static", "none"):
        args.threshold = float(args.threshold)
    threshold = None if args.threshold == "none" else args.threshold
    if args.base or args.sr:
        cascade = Cascade.from_checkpoints(args.base or "", args.sr or "")
    else:
        cascade = load_pretrained("cascade")
    judge = load_pretrained("classifier")
    reference = reference_features(judge, levels=16)
    guidance = tuple(args.guidance) if args.guidance else DEFAULT_GUIDANCE
    result = {"guidance": guidance, "threshold": threshold, "per_class": args.per_class,
              "threads": torch.get_num_threads(),
              "load_average": os.getloadavg()[0], "steps_sweep": [], "aug_sweep": []}
    print(f"guidance {guidance}, threshold {threshold}, {10 * args.per_class} samples per setting, "
          f"{torch.get_num_threads()} threads")
    for steps in args.steps:
        row = evaluate_diffusion_generation(cascade, judge, args.per_class, reference=reference, steps=steps,
                                            guidance=guidance, threshold=threshold)
        result["steps_sweep"].append(row)
        print(f"steps {steps:4d}: judge {row['accuracy']:.3f}  FD {row['frechet_distance']:7.2f}  "
              f"{row['seconds_per_image']:.3f} s/image")
    captions, labels = captions_per_class(args.per_class)
    base_samples = None
    if args.aug:  # the base model's samples, which the SR stage reads in the cascade
        base_samples, _ = diffusion_samples(cascade.base, captions, steps=args.aug_steps, guidance=guidance[0],
                                            threshold=threshold)
    for aug in args.aug:
        real = evaluate_super_resolution(cascade.sr, judge, n=10 * args.per_class, aug_level=aug,
                                         steps=args.aug_steps, guidance=guidance[1], threshold=threshold)
        high, _ = diffusion_samples(cascade.sr, captions, lowres=base_samples, aug_level=aug, steps=args.aug_steps,
                                    guidance=guidance[1], threshold=threshold)
        from_base = {**judge_float_images(judge, high, labels, 16, reference),
                     "sharpness": sharpness(high).mean().item()}
        result["aug_sweep"].append({"aug_level": aug, "from_real": real, "from_base": from_base})
        print(f"aug {aug:.1f}: real 14×14 → judge {real['sr']['accuracy']:.3f}, PSNR {real['sr']['psnr_db']:.2f} dB, "
              f"sharpness {real['sr']['sharpness']:.4f} | base samples → judge {from_base['accuracy']:.3f}, "
              f"FD {from_base['frechet_distance']:.2f}, sharpness {from_base['sharpness']:.4f}")
    first = result["aug_sweep"][0]["from_real"] if result["aug_sweep"] else None
    if first:
        for key in ("bicubic", "original"):
            print(f"{key:>8}: judge {first[key]['accuracy']:.3f}, PSNR {first[key]['psnr_db']:.2f} dB, "
                  f"sharpness {first[key]['sharpness']:.4f}")
        bicubic_base = F.interpolate(base_samples, size=28, mode="bicubic", align_corners=False).clamp(0, 1)
        result["bicubic_from_base"] = judge_float_images(judge, bicubic_base, labels, 16, reference)
        print(f"bicubic of the base samples: judge {result['bicubic_from_base']['accuracy']:.3f}, "
              f"FD {result['bicubic_from_base']['frechet_distance']:.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
