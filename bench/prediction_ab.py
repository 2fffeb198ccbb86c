"""ε-prediction (Imagen) against v-prediction, at equal training, on a small 14×14 caption → image model.

Both runs use the same config, seed, data order and number of steps; only `prediction` differs. Each is then
judged on the text2img protocol (samples per class, 16 levels, DDIM, guidance 3): judge accuracy and Fréchet
distance. It also prints how much an error in the predicted noise is magnified in x̂₀ = (x_t − σ·ε̂)/α at a few
t (σ/α), the reason ε-prediction struggles near t = 1 and v-prediction (x̂₀ = α·x_t − σ·v̂) does not.

    .venv/bin/python bench/prediction_ab.py                       # ~2 × 6 min of training on 1 thread, quiet machine
    .venv/bin/python bench/prediction_ab.py --steps 100 --per-class 5   # a dry run
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from imagen_tutorial import load_pretrained
from imagen_tutorial.config import ModelConfig, TrainConfig
from imagen_tutorial.diffusion import alpha_sigma
from imagen_tutorial.metrics import evaluate_diffusion_generation, reference_features
from imagen_tutorial.train import Trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--per-class", type=int, default=30)
    p.add_argument("--sampling-steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    for t in (0.5, 0.9, 0.98):
        alpha, sigma = alpha_sigma(torch.tensor(t))
        print(f"t = {t}: an error in ε̂ is multiplied by σ/α = {float(sigma / alpha):.1f} in x̂₀")
    judge = load_pretrained("classifier")
    reference = reference_features(judge, levels=16)
    rows = {}
    for prediction in ("eps", "v"):
        model_cfg = ModelConfig(family="diffusion", image_size=14, condition="caption", prediction=prediction,
                                d_model=64, n_heads=4, n_layers=5, n_enc_layers=1, patch_size=2)
        train_cfg = TrainConfig(batch_size=64, steps=args.steps, lr=1e-3, min_lr_ratio=0.05, warmup_steps=100,
                                weight_decay=0.03, betas=(0.9, 0.99), ema_decay=0.995, eval_every=0,
                                ckpt_every=args.steps, log_every=50, device="cpu", progress=False, seed=0)
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            trainer = Trainer(model_cfg, train_cfg, Path(out))
            summary = trainer.run()
            minutes = (time.perf_counter() - start) / 60
        model = trainer.ema.eval()
        judged = evaluate_diffusion_generation(model, judge, args.per_class, reference=reference,
                                               steps=args.sampling_steps, guidance=args.guidance)
        rows[prediction] = {"train_loss": summary["train_loss"], "train_minutes": minutes, **judged}
        print(f"{prediction:>3}: {args.steps} steps in {minutes:.1f} min, judge {judged['accuracy']:.3f}, "
              f"Fréchet distance {judged['frechet_distance']:.2f} ({judged['samples']} samples, "
              f"DDIM {args.sampling_steps}, guidance {args.guidance:g})")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
