"""Reference bits/dim on the official Fashion-MNIST test set (8-bit pixels, 10,000 images × 784 pixels), so that
a model's number can be read against things that are not neural networks.

- uniform: every intensity equally likely, log2(256) = 8 bits/dim;
- per-position categorical: a separate histogram of the 256 intensities at each of the 784 positions, counted on
  the training set (add-1/2 smoothing); pixels are independent given their position;
- gzip (level 9) and LZMA (preset 9 extreme) of the raw test pixels (header-free 784-byte rows), in bits per pixel;
- causal-neighbour counts: the probability of a pixel given already-seen neighbours (left, up, up-left, up-right,
  each coarsened to 16 bins) counted on the training set, backed off to (left, up) and then to the overall
  histogram by hierarchical Dirichlet smoothing: p(v | c) = (n(c, v) + beta * p_backoff(v)) / (n(c) + beta).
  beta is chosen on the last 5,000 training images held out from the counts, then the counts are redone on all
  60,000 training images. This is the simplest thing an autoregressive model must beat.

    .venv/bin/python bench/baselines.py [--json bench/results/baselines.json]     # ~2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import math

import torch

from imagen_tutorial.data import load_fashion_mnist

LOG2 = math.log(2)


def per_position(train: torch.Tensor, test: torch.Tensor, alpha: float = 0.5) -> float:
    x, y = train.flatten(1).long(), test.flatten(1).long()
    positions = torch.arange(x.shape[1])
    counts = torch.zeros(x.shape[1], 256, dtype=torch.float64)
    counts.index_put_((positions.expand_as(x).flatten(), x.flatten()), torch.ones(x.numel(), dtype=torch.float64),
                      accumulate=True)
    probs = (counts + alpha) / (counts.sum(1, keepdim=True) + 256 * alpha)
    return -(probs[positions.expand_as(y), y].log2()).mean().item()


def compressed(test: torch.Tensor, compress) -> float:
    raw = test.contiguous().numpy().tobytes()
    return 8 * len(compress(raw)) / len(raw)


def _contexts(images: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(values, fine context id, coarse context id), each [N*784], for uint8 images [N, 28, 28]."""
    x = images.long()
    pad = torch.nn.functional.pad(x, (1, 1, 1, 0))  # a zero row above and zero columns either side
    h, w = x.shape[1:]
    left, up = pad[:, 1:, :w], pad[:, :h, 1 : w + 1]
    up_left, up_right = pad[:, :h, :w], pad[:, :h, 2:]
    q = [n * bins // 256 for n in (left, up, up_left, up_right)]
    coarse = q[0] * bins + q[1]
    fine = ((coarse * bins) + q[2]) * bins + q[3]
    return x.flatten(), fine.flatten(), coarse.flatten()


def _counts(ids: torch.Tensor, values: torch.Tensor, n_ctx: int) -> torch.Tensor:
    return torch.bincount(ids * 256 + values, minlength=n_ctx * 256).view(n_ctx, 256).double()


def neighbour_counts_bpd(train: torch.Tensor, test: torch.Tensor, beta_fine: float, beta_coarse: float,
                         bins: int = 16) -> float:
    v, fine, coarse = _contexts(train, bins)
    n_fine, n_coarse = _counts(fine, v, bins**4), _counts(coarse, v, bins**2)
    overall = (torch.bincount(v, minlength=256).double() + 0.5) / (len(v) + 128)
    tv, tf, tc = _contexts(test, bins)
    p_coarse = (n_coarse[tc, tv] + beta_coarse * overall[tv]) / (n_coarse.sum(1)[tc] + beta_coarse)
    p = (n_fine[tf, tv] + beta_fine * p_coarse) / (n_fine.sum(1)[tf] + beta_fine)
    return -(p.log2()).mean().item()


def neighbour_counts(train: torch.Tensor, test: torch.Tensor, bins: int = 16) -> tuple[float, dict]:
    fit, held_out = train[:-5000], train[-5000:]
    grid = [(bf, bc) for bf in (16, 64, 256, 1024) for bc in (64, 256, 1024, 4096, 16384, 65536)]
    scores = {g: neighbour_counts_bpd(fit, held_out, *g, bins=bins) for g in grid}
    beta_fine, beta_coarse = min(scores, key=scores.get)
    settings = {"beta_fine": beta_fine, "beta_coarse": beta_coarse, "bins": bins,
                "held_out_bpd": scores[(beta_fine, beta_coarse)]}
    return neighbour_counts_bpd(train, test, beta_fine, beta_coarse, bins), settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    train, _ = load_fashion_mnist("train")
    test, _ = load_fashion_mnist("test")
    neighbours, chosen = neighbour_counts(train, test)
    results = {
        "uniform": 8.0,
        "per_position_categorical": per_position(train, test),
        "gzip_level9": compressed(test, lambda b: gzip.compress(b, compresslevel=9)),
        "lzma_preset9e": compressed(test, lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME)),
        "causal_neighbour_counts": neighbours,
        "causal_neighbour_counts_settings": chosen,
        "test_images": len(test),
    }
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:>{width}}: {value:.3f}" if isinstance(value, float) else f"{key:>{width}}: {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
