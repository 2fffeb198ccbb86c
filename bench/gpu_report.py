"""GPU performance report: training throughput and MFU, attention kernels, sampling speed, peak memory.

One script, run once on a CUDA machine with the package on PYTHONPATH (no install needed):

    PYTHONPATH=. python3 bench/gpu_report.py --out "$OUT"                 # on the GPU (~8 minutes)
    python bench/gpu_report.py --device cpu --quick --out /tmp/report     # dry run on a CPU (~1 minute)

It writes gpu_report.json and gpu_report.md (one table per section) under --out, re-writing both after every
section, so a run cut short still leaves what it measured. MFU = img/s × training FLOPs per image
(`ImageTransformer.flops_per_image`, derived in chapter 05) / the GPU's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from imagen_tutorial import ImageTransformer, ModelConfig, TrainConfig
from imagen_tutorial.attention import attention, causal_mask
from imagen_tutorial.data import load_fashion_mnist, make_caption
from imagen_tutorial.train import PEAK_BF16_FLOPS, Trainer

SIZES = {  # decoder width and depth; 28×28, 256 levels, caption condition with a 2-block text encoder
    "2M": dict(d_model=128, n_heads=4, n_layers=8),
    "8M": dict(d_model=256, n_heads=8, n_layers=6),
    "30M": dict(d_model=512, n_heads=8, n_layers=6),
}


def config(size: str, quick: bool) -> ModelConfig:
    return ModelConfig(image_size=14 if quick else 28, levels=256, condition="caption", n_enc_layers=2, **SIZES[size])


class Timer:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, fn, repeats: int) -> float:
        """Median seconds of fn() over `repeats` runs (after the caller's warm-up)."""
        times = []
        for _ in range(repeats):
            self.sync()
            start = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def bench_training(args, device, timer, data, peak) -> list[dict]:
    rows = []
    for size in args.sizes:
        for compiled in (False, True):
            reset_memory(device)
            cfg = TrainConfig(batch_size=args.batch, steps=10**6, warmup_steps=10, eval_every=0, log_every=10**9,
                              ckpt_every=10**9, progress=False, device=str(device), compile=compiled,
                              precision="bf16" if device.type == "cuda" else "fp32")
            with tempfile.TemporaryDirectory() as tmp:
                trainer = Trainer(config(size, args.quick), cfg, tmp, data=data)
                start = time.perf_counter()
                for _ in range(args.warmup):  # the first steps include torch.compile's compilation
                    trainer.train_step()
                timer.sync()
                warmup_s = time.perf_counter() - start
                seconds = timer(lambda t=trainer: [t.train_step() for _ in range(args.steps)], repeats=3) / args.steps
            model = trainer.model
            img_s = args.batch / seconds
            flops = model.flops_per_image(trainer.caption_table.size(-1))
            rows.append({"size": size, "params_M": round(model.num_params() / 1e6, 2), "compile": compiled,
                         "batch": args.batch, "ms_per_step": round(seconds * 1e3, 2), "img_per_s": round(img_s, 1),
                         "tokens_per_s": round(img_s * model.config.seq_len), "warmup_s": round(warmup_s, 1),
                         "tflops": round(img_s * flops / 1e12, 2),
                         "mfu": round(img_s * flops / peak, 4) if peak else None,
                         "peak_mem_GiB": peak_memory_gib(device)})
            print(rows[-1], flush=True)
            del trainer, model
    return rows


def sdpa_backend(q, k, v) -> str:
    """Which kernel SDPA ran, read off the profiler's kernel names."""
    if q.device.type != "cuda":
        return "cpu (math or flash-cpu)"
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        F.scaled_dot_product_attention(q, k, v, is_causal=True)
        torch.cuda.synchronize()
    names = " ".join(e.key.lower() for e in prof.key_averages())
    for marker, backend in (("flash", "flash"), ("cudnn", "cudnn"), ("fmha", "efficient"), ("efficient", "efficient")):
        if marker in names:
            return backend
    return "math"


def bench_attention(args, device, timer) -> list[dict]:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    T = 196 if args.quick else 784
    shape = (args.attn_batch, 8, T, 32)
    q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    mask = causal_mask(T, device=device)
    rows = []
    for name, fn in (("written-out", lambda: attention(q, k, v, mask)[0]),
                     ("sdpa", lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))):
        def step(fn=fn):
            fn().float().sum().backward()
        step()
        reset_memory(device)
        seconds = timer(step, repeats=10)
        rows.append({"kernel": name, "T": T, "shape": list(shape), "dtype": str(dtype).replace("torch.", ""),
                     "ms_fwd_bwd": round(seconds * 1e3, 3), "peak_mem_GiB": peak_memory_gib(device)})
    rows[1]["backend"] = sdpa_backend(q.detach(), k.detach(), v.detach())
    rows[1]["speedup"] = round(rows[0]["ms_fwd_bwd"] / rows[1]["ms_fwd_bwd"], 2)
    print(rows, flush=True)
    return rows


def bench_sampling(args, device, timer) -> dict:
    torch.manual_seed(0)
    model = ImageTransformer(config("8M", args.quick)).to(device).eval()
    tokens = model.tokenizer.encode([make_caption(i % 10) for i in range(max(args.sample_batches))]).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu",
                                                                                                        enabled=False)
    rows = []
    for batch in args.sample_batches:
        for cache in (True, False):
            if not cache and batch > args.nocache_max_batch:
                continue
            reset_memory(device)

            def run(batch=batch, cache=cache):
                with autocast:
                    model.generate(tokens[:batch], use_cache=cache, generator=torch.Generator(device).manual_seed(0))
            repeats = 3 if cache else 1
            seconds = timer(run, repeats=repeats)
            rows.append({"batch": batch, "cache": cache, "seconds": round(seconds, 3),
                         "img_per_s": round(batch / seconds, 2), "repeats": repeats,
                         "peak_mem_GiB": peak_memory_gib(device)})
            print(rows[-1], flush=True)
    speedups = {}
    for batch in args.sample_batches:
        pair = {r["cache"]: r["seconds"] for r in rows if r["batch"] == batch}
        if len(pair) == 2:
            speedups[str(batch)] = round(pair[False] / pair[True], 1)
    # Token identity in fp32 (bf16 kernels of different shapes round differently).
    cond = tokens[: args.identity_batch]
    same = torch.equal(model.generate(cond, use_cache=True, generator=torch.Generator(device).manual_seed(1)),
                       model.generate(cond, use_cache=False, generator=torch.Generator(device).manual_seed(1)))
    return {"rows": rows, "speedup_cache_vs_nocache": speedups, "tokens_identical_fp32": same,
            "identity_batch": args.identity_batch}


def markdown(report: dict) -> str:
    lines = [f"# GPU report — {report['device']}", "",
             f"PyTorch {report['torch']}, {report['date']}, peak {report['peak_tflops']} TFLOP/s (dense bf16) for MFU.",
             ""]
    for title, rows in (("Training (bf16 autocast)", report.get("training")), ("Attention, forward + backward",
                        report.get("attention")), ("Sampling", (report.get("sampling") or {}).get("rows"))):
        if not rows:
            continue
        keys = list(dict.fromkeys(k for row in rows for k in row))
        lines += [f"## {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(str(row.get(k, "")) for k in keys) + " |" for row in rows]
        lines.append("")
    if report.get("sampling"):
        s = report["sampling"]
        lines.append(f"KV-cache speed-up: {s['speedup_cache_vs_nocache']}; tokens identical with and without the "
                     f"cache (fp32, batch {s['identity_batch']}): {s['tokens_identical_fp32']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/gpu_report")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="14×14 images, smallest size, tiny batches")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--attn-batch", type=int, default=16)
    parser.add_argument("--sample-batches", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--nocache-max-batch", type=int, default=256)
    parser.add_argument("--identity-batch", type=int, default=16)
    parser.add_argument("--sections", nargs="+", default=["training", "attention", "sampling"])
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.batch, args.warmup, args.steps = ["2M"], 8, 2, 2
        args.attn_batch, args.sample_batches, args.identity_batch = 2, [1, 4], 2
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None) if device.type == "cuda" else None
    report = {"device": name, "torch": torch.__version__, "date": datetime.date.today().isoformat(),
              "peak_tflops": peak / 1e12 if peak else None, "args": vars(args)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def write() -> None:
        (out / "gpu_report.json").write_text(json.dumps(report, indent=1))
        (out / "gpu_report.md").write_text(markdown(report))

    timer = Timer(device)
    images, labels = load_fashion_mnist("train")
    data = images[: 256 * args.batch], labels[: 256 * args.batch]
    sections = {"training": lambda: bench_training(args, device, timer, data, peak),
                "attention": lambda: bench_attention(args, device, timer),
                "sampling": lambda: bench_sampling(args, device, timer)}
    for section in args.sections:
        start = time.perf_counter()
        try:
            report[section] = sections[section]()
        except Exception as error:  # keep what the other sections measured
            report[section + "_error"] = f"{type(error).__name__}: {error}"
            print(f"{section} failed: {report[section + '_error']}", flush=True)
        report[section + "_seconds"] = round(time.perf_counter() - start, 1)
        write()
    print(markdown(report))


if __name__ == "__main__":
    main()
