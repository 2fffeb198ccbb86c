"""Sampling speed of ImageTransformer.generate with and without the key/value cache.

For a caption-conditioned 28×28 model (untrained weights: only speed is measured) this times
`generate(cond, use_cache=False)`, which re-reads every earlier pixel at each step (O(T²) per image), and
`generate(cond, use_cache=True)`, which feeds one new pixel per step (O(T)), at each batch size. It reports
seconds per batch, images/s, pixels/s and the speed-up, and checks that both paths draw identical tokens from
the same seeded generator. The no-cache path is slow, so it runs --nocache-repeats times (default 1, warmed up by
one full-length decoder pass); the cached path is warmed up and timed --repeats times (median).

    .venv/bin/python bench/sampling.py                 # 28×28, batch 1 and 16, CPU (~4 min on 2 cores,
                                                       # 3.5 of them the single no-cache run at batch 16)
    .venv/bin/python bench/sampling.py --quick         # 14×14 dry run
    .venv/bin/python bench/sampling.py --device cuda --json sampling.json
    .venv/bin/python bench/sampling.py --families --batches 100   # only the shipped cascades and text2img

--families also times the two families' shipped models at each batch size, as learners use them: text2img
(autoregressive, 784 pixel steps with the cache, its tuned guidance and temperature) and the diffusion cascade
(14×14 base + 14→28 SR, DDIM, --diffusion-steps per stage, guidance cascade.DEFAULT_GUIDANCE): images/s of
each, side by side. Once Part III's scenes cascade is shipped (`load_pretrained("scenes")`: 14×28 base + 14×28 →
28×56 SR) it is timed the same way, on scene captions drawn from the training mix at its own default guidance, so
its seconds per scene stand beside the 28×28 cascade's seconds per image.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time

import torch

from imagen_tutorial.cascade import DEFAULT_GUIDANCE
from imagen_tutorial.config import ModelConfig
from imagen_tutorial.data import make_caption
from imagen_tutorial.model import ImageTransformer


def timed(fn, device: torch.device, repeats: int) -> tuple[float, torch.Tensor]:
    """Median seconds of fn() over `repeats` runs, and the last result."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--repeats", type=int, default=3, help="timed runs of the cached path (median)")
    p.add_argument("--nocache-repeats", type=int, default=1, help="timed runs of the slow no-cache path")
    p.add_argument("--quick", action="store_true", help="14×14 images instead of 28×28, for a fast dry run")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", metavar="PATH", help="also write the figures here as JSON")
    p.add_argument("--families", action="store_true",
                   help="time the shipped text2img and the diffusion cascade instead of the cache comparison")
    p.add_argument("--diffusion-steps", type=int, default=50, help="with --families: DDIM steps per stage")
    args = p.parse_args()
    if args.families:
        return compare_families(args)
    load = os.getloadavg()[0]  # other work on the machine skews CPU timings

    torch.manual_seed(0)
    device = torch.device(args.device)
    cfg = ModelConfig(image_size=14 if args.quick else 28, levels=16, d_model=128, n_heads=4, n_layers=4,
                      condition="caption")
    model = ImageTransformer(cfg).to(device).eval()
    T = cfg.seq_len

    def run(cond, use_cache):
        return model.generate(cond, use_cache=use_cache, generator=torch.Generator(device).manual_seed(0))

    rows = []
    for B in args.batches:
        cond = model.tokenizer.encode([make_caption(i % 10) for i in range(B)]).to(device)
        with torch.no_grad():  # warm-up: one cached run, one full-length decoder pass
            run(cond, True)
            model.decoder(torch.zeros(B, T, dtype=torch.long, device=device), *model.encode(cond))
        s_cache, tok_cache = timed(functools.partial(run, cond, True), device, args.repeats)
        s_full, tok_full = timed(functools.partial(run, cond, False), device, args.nocache_repeats)
        rows.append({"batch": B, "nocache_s": s_full, "cache_s": s_cache, "speedup": s_full / s_cache,
                     "nocache_img_s": B / s_full, "cache_img_s": B / s_cache,
                     "nocache_px_s": B * T / s_full, "cache_px_s": B * T / s_cache,
                     "tokens_identical": bool(torch.equal(tok_cache, tok_full))})

    print(f"generate(): {cfg.image_size}×{cfg.image_size} caption model, d_model={cfg.d_model}, "
          f"{cfg.n_layers} layers, {model.num_params():,} params, {device}, {torch.get_num_threads()} threads, "
          f"load avg at start {load:.2f}")
    print(f"cache: median of {args.repeats} runs after warm-up; no cache: {args.nocache_repeats} run(s) "
          f"(slow, O(T²); {'median' if args.nocache_repeats > 1 else 'single measurement'})")
    header = ("batch", "path", "s/batch", "images/s", "pixels/s", "speed-up")
    print(f"{header[0]:>5}  {header[1]:<9}{header[2]:>10}{header[3]:>11}{header[4]:>12}{header[5]:>10}")
    for r in rows:
        for path, key in (("no cache", "nocache"), ("cache", "cache")):
            speed = f"{r['speedup']:.1f}x" if key == "cache" else ""
            print(f"{r['batch']:>5}  {path:<9}{r[key + '_s']:>10.3f}{r[key + '_img_s']:>11.2f}"
                  f"{r[key + '_px_s']:>12,.0f}{speed:>10}")
    for r in rows:
        print(f"batch {r['batch']}: tokens identical: {r['tokens_identical']}")
    target = [r for r in rows if r["batch"] == 16]
    if target:
        ok = target[0]["speedup"] >= 10
        print(f"target: cache speed-up >= 10x at batch 16: {target[0]['speedup']:.1f}x -> "
              f"{'met' if ok else 'NOT met'}")
    if args.json:
        meta = vars(args) | {"model": cfg.to_dict(), "threads": torch.get_num_threads(), "loadavg_start": load}
        with open(args.json, "w") as f:
            json.dump({"config": meta, "rows": rows}, f, indent=2)


def compare_families(args: argparse.Namespace) -> None:
    """Images/s of the shipped autoregressive text2img and the diffusion cascade at the same batch sizes."""
    from imagen_tutorial import load_pretrained
    from imagen_tutorial.__main__ import recommended_sampling
    from imagen_tutorial.pretrained import read_manifest
    from imagen_tutorial.scenes import draw_scene

    device = torch.device(args.device)
    load = os.getloadavg()[0]
    text2img, cascade = load_pretrained("text2img", device), load_pretrained("cascade", device)
    scenes = load_pretrained("scenes", device) if "stages" in read_manifest().get("scenes", {}) else None
    guidance, temperature = recommended_sampling(None)
    steps = args.diffusion_steps
    rows = []
    for B in args.batches:
        captions = [make_caption(i % 10) for i in range(B)]

        def autoregressive(captions=captions):
            return text2img.generate(captions, guidance=guidance, temperature=temperature,
                                     generator=torch.Generator(device).manual_seed(0))

        def diffusion(captions=captions):
            return cascade.generate(captions, guidance=DEFAULT_GUIDANCE, steps=(steps, steps),
                                    generator=torch.Generator(device).manual_seed(0))
        cascade.generate(captions[:2], steps=(2, 2))  # warm-up
        s_ar, _ = timed(autoregressive, device, 1)
        s_diff, _ = timed(diffusion, device, 1)
        rows.append({"batch": B, "text2img_s": s_ar, "cascade_s": s_diff, "text2img_img_s": B / s_ar,
                     "cascade_img_s": B / s_diff, "text2img_s_per_image": s_ar / B, "cascade_s_per_image": s_diff / B,
                     "cascade_guidance": list(DEFAULT_GUIDANCE), "cascade_steps": steps})
        if scenes is not None:
            draws = torch.Generator().manual_seed(0)
            scene_captions = [draw_scene(draws).caption for _ in range(B)]

            def two_garments(captions=scene_captions):
                return scenes.generate(captions, steps=(steps, steps), generator=torch.Generator(device).manual_seed(0))
            scenes.generate(scene_captions[:2], steps=(2, 2))  # warm-up
            s_scenes, _ = timed(two_garments, device, 1)
            rows[-1].update({"scenes_s": s_scenes, "scenes_scene_s": B / s_scenes, "scenes_s_per_scene": s_scenes / B,
                             "scenes_guidance": list(scenes.guidance), "scenes_aug_level": scenes.aug_level})
    about_scenes = "; the scenes cascade is not shipped yet"
    if scenes is not None:
        about_scenes = (f" and the scenes cascade ({scenes.num_params():,} params, 28×56, DDIM {steps}+{steps} steps, "
                        f"guidance {scenes.guidance[0]:g} and {scenes.guidance[1]:g}, aug level {scenes.aug_level:g})")
    print(f"shipped models, {device}, {torch.get_num_threads()} threads, load avg at start {load:.2f}: text2img "
          f"({text2img.num_params():,} params, guidance {guidance:g}, temperature {temperature:g}) vs the cascade "
          f"({cascade.num_params():,} params, DDIM {steps}+{steps} steps, guidance {DEFAULT_GUIDANCE[0]:g} and "
          f"{DEFAULT_GUIDANCE[1]:g})" + about_scenes)
    print(f"{'batch':>5}  {'text2img img/s':>15}{'s/image':>9}  {'cascade img/s':>14}{'s/image':>9}"
          + (f"  {'scenes scenes/s':>16}{'s/scene':>9}" if scenes else ""))
    for r in rows:
        print(f"{r['batch']:>5}  {r['text2img_img_s']:>15.2f}{r['text2img_s_per_image']:>9.3f}  "
              f"{r['cascade_img_s']:>14.2f}{r['cascade_s_per_image']:>9.3f}"
              + (f"  {r['scenes_scene_s']:>16.2f}{r['scenes_s_per_scene']:>9.3f}" if scenes else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args) | {"threads": torch.get_num_threads(), "loadavg_start": load},
                       "families": rows}, f, indent=2)


if __name__ == "__main__":
    main()
