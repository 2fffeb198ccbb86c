"""Written-out attention vs PyTorch's fused scaled_dot_product_attention, forward + backward, causal.

Measures milliseconds per forward+backward of `imagen_tutorial.attention.attention(q, k, v, causal_mask(T))`
(softmax(Q Kᵀ / √d) V as chapter 01 writes it) and of `F.scaled_dot_product_attention(q, k, v, is_causal=True)`
at one 28×28 image's sequence length, the speed-up, and (on CUDA) the peak memory each needs beyond its inputs.
It also checks that both give the same output. Medians over --repeats timed blocks after --warmup calls.

    .venv/bin/python bench/attention.py                      # T=784, batch 8, 4 heads, head dim 32, CPU
    .venv/bin/python bench/attention.py --device cuda --json attention.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

from imagen_tutorial.attention import attention, causal_mask


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, inputs, device: torch.device, warmup: int, repeats: int, iters: int) -> tuple[float, float | None]:
    """Median ms per forward+backward of fn(*inputs), and peak extra CUDA MiB (None on other devices)."""
    def step():
        for x in inputs:
            x.grad = None
        fn(*inputs).sum().backward()

    for _ in range(warmup):
        step()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            step()
        sync(device)
        times.append((time.perf_counter() - start) / iters * 1e3)
    peak = None
    if device.type == "cuda":  # one more step, alone, to read how much memory it needs beyond the inputs
        for x in inputs:
            x.grad = None
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        sync(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return statistics.median(times), peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq", type=int, default=784, help="sequence length T (28×28 pixels)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="timed blocks; the median is reported")
    p.add_argument("--iters", type=int, default=3, help="forward+backward calls per timed block")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", metavar="PATH", help="also write the figures here as JSON")
    args = p.parse_args()
    load = os.getloadavg()[0]  # other work on the machine skews CPU timings

    torch.manual_seed(0)
    device = torch.device(args.device)
    shape = (args.batch, args.heads, args.seq, args.head_dim)
    q, k, v = (torch.randn(shape, device=device, requires_grad=True) for _ in range(3))
    mask = causal_mask(args.seq, device=device)

    def written(q, k, v):
        return attention(q, k, v, mask)[0]

    def fused(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    with torch.no_grad():
        torch.testing.assert_close(fused(q, k, v), written(q, k, v), atol=1e-5, rtol=1e-5)
    results = {name: measure(fn, (q, k, v), device, args.warmup, args.repeats, args.iters)
               for name, fn in (("written-out attention()", written), ("F.scaled_dot_product_attention", fused))}

    (w_ms, w_mem), (f_ms, f_mem) = results.values()
    print(f"causal attention, forward+backward: B={args.batch} H={args.heads} T={args.seq} d={args.head_dim}, "
          f"{device}, {torch.get_num_threads()} threads, load avg at start {load:.2f}; "
          f"median of {args.repeats} blocks × {args.iters} calls")
    print("outputs agree (assert_close, atol=1e-5): True")
    mem_col = device.type == "cuda"
    print(f"{'implementation':<32}{'ms/fwd+bwd':>12}" + (f"{'peak extra MiB':>16}" if mem_col else ""))
    for name, (ms, mem) in results.items():
        print(f"{name:<32}{ms:>12.2f}" + (f"{mem:>16.1f}" if mem_col else ""))
    print(f"speed-up (written / fused): {w_ms / f_ms:.2f}x")
    if args.json:
        meta = vars(args) | {"threads": torch.get_num_threads(), "loadavg_start": load}
        figures = {"config": meta, "outputs_agree": True,
                   "written_ms": w_ms, "fused_ms": f_ms, "speedup": w_ms / f_ms,
                   "written_peak_extra_mib": w_mem, "fused_peak_extra_mib": f_mem}
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
