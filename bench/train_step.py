"""Training throughput: the package's `Trainer.train_step()` vs a bare minimal loop, same model and batch.

The package step adds what chapter 05 builds (caption sampling and condition dropout, gradient clipping, an LR
schedule, decay groups, the GradScaler/autocast hooks); the bare loop is only
`loss = model.loss(images, cond); loss.backward(); opt.step(); opt.zero_grad()` with plain AdamW, batches
sliced from the same in-memory Fashion-MNIST and captions tokenized in advance. After --warmup steps of each,
timing blocks of --steps steps alternate package/bare (--blocks of each, to cancel drift); each block ends with
one loss.item(). Reports the median images/s of each and the ratio package/bare (target: >= 0.95).

    .venv/bin/python bench/train_step.py                          # d_model 64, 2+1 layers, batch 32, CPU
    .venv/bin/python bench/train_step.py --device cuda --d-model 128 --layers 4 --batch 64 --json train.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch

from imagen_tutorial.config import ModelConfig, TrainConfig
from imagen_tutorial.data import load_fashion_mnist, make_caption, quantize
from imagen_tutorial.model import ImageTransformer
from imagen_tutorial.train import Trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2, help="decoder blocks")
    p.add_argument("--enc-layers", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of each loop")
    p.add_argument("--blocks", type=int, default=5, help="timed blocks of each loop, interleaved")
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per timed block")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", metavar="PATH", help="also write the figures here as JSON")
    args = p.parse_args()
    load = os.getloadavg()[0]  # other work on the machine skews CPU timings

    device = torch.device(args.device)
    model_cfg = ModelConfig(levels=16, d_model=args.d_model, n_heads=4, n_layers=args.layers,
                            n_enc_layers=args.enc_layers)
    images, labels = load_fashion_mnist("train")
    tmp = tempfile.TemporaryDirectory()
    trainer = Trainer(model_cfg, TrainConfig(batch_size=args.batch, steps=10**6, log_every=10**9, eval_every=0,
                                             ckpt_every=10**9, progress=False, device=args.device),
                      out_dir=tmp.name, data=(images, labels))
    trainer.model.train()

    torch.manual_seed(0)  # Trainer seeds with TrainConfig.seed=0 too: the same initial weights
    model = ImageTransformer(model_cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    levels = quantize(images, model_cfg.levels)
    captions = model.tokenizer.encode([make_caption(int(c)) for c in range(10)])[labels]  # [N, S]
    order = torch.randperm(len(images))
    cursor = 0

    def package_step():
        return trainer.train_step()[0]

    def bare_step():
        nonlocal cursor
        idx = order[cursor : cursor + args.batch]
        cursor = (cursor + args.batch) % (len(order) - args.batch)
        loss = model.loss(levels[idx].to(device), captions[idx].to(device))
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss.detach()

    def block(step, n):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(n):
            loss = step()
        loss.item()  # one sync per block, as the package's logging does
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return args.batch * n / (time.perf_counter() - start)

    loops = {"package Trainer.train_step": package_step, "bare loss/backward/step": bare_step}
    for step in loops.values():
        block(step, args.warmup)
    rates = {name: [] for name in loops}
    for _ in range(args.blocks):
        for name, step in loops.items():
            rates[name].append(block(step, args.steps))
    tmp.cleanup()

    med = {name: statistics.median(r) for name, r in rates.items()}
    ratio = med["package Trainer.train_step"] / med["bare loss/backward/step"]
    print(f"train step: d_model={args.d_model}, {args.layers}+{args.enc_layers} layers, batch {args.batch}, "
          f"{device}, {torch.get_num_threads()} threads, load avg at start {load:.2f}; "
          f"median of {args.blocks} interleaved blocks × {args.steps} steps after {args.warmup} warm-up")
    print(f"{'loop':<30}{'img/s':>9}{'min':>9}{'max':>9}")
    for name, r in rates.items():
        print(f"{name:<30}{med[name]:>9.1f}{min(r):>9.1f}{max(r):>9.1f}")
    best = max(rates["package Trainer.train_step"]) / max(rates["bare loss/backward/step"])
    print(f"ratio package/bare: {ratio:.3f} (target >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'}); "
          f"ratio of best blocks {best:.3f}")
    if args.json:
        meta = vars(args) | {"threads": torch.get_num_threads(), "loadavg_start": load}
        with open(args.json, "w") as f:
            json.dump({"config": meta, "img_per_s": med, "blocks_img_per_s": rates, "ratio": ratio,
                       "ratio_best": best}, f, indent=2)


if __name__ == "__main__":
    main()
