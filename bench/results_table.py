"""The README's "Results" table, from the shipped manifest and the reference figures of bench/baselines.py.

    .venv/bin/python bench/baselines.py --json bench/results/baselines.json    # once (about 2 minutes)
    .venv/bin/python bench/superres_baselines.py --json bench/results/superres_baselines.json  # seconds
    .venv/bin/python bench/results_table.py                                     # prints Markdown
    bash bench/part2_evaluate.sh    # Part II: evaluate the diffusion stages and the cascade, sweeps, speed (~40 min)

Every number comes from a file written by a script: test bits/dim and judge figures from `evaluate --json` runs
stored in data/checkpoints/manifest.json (tools/ship_checkpoint.py), the references from baselines.json.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def upsampling_rows() -> None:
    """Nearest and bicubic upsampling on the images `evaluate` judged superres on (bench/superres_baselines.py)."""
    upsampling = ROOT / "bench/results/superres_baselines.json"
    if upsampling.is_file():
        up = json.loads(upsampling.read_text())
        for key, name in (("nearest", "nearest-neighbour 7×7 → 28×28"), ("bicubic", "bicubic 7×7 → 28×28"),
                          ("original_16_levels", "the originals at 16 levels")):
            print(f"| *{name}* | — | — | {up['test_images']} | {up[key]['accuracy']:.3f} | — | "
                  f"{up[key]['psnr_db']:.1f} dB |")


def main() -> None:
    manifest = json.loads((ROOT / "data/checkpoints/manifest.json").read_text())["checkpoints"]
    base = json.loads((ROOT / "bench/results/baselines.json").read_text())
    print("| model or reference | levels | test bits/dim | test images | how |")
    print("|---|---|---|---|---|")
    n = base["test_images"]
    rows = [
        ("uniform", 256, base["uniform"], n, "every intensity equally likely: log2(256)"),
        ("per-position categorical", 256, base["per_position_categorical"], n, "a histogram per pixel position"),
        ("gzip -9", 256, base["gzip_level9"], n, "compressed size of the raw test pixels"),
        ("LZMA (xz -9e)", 256, base["lzma_preset9e"], n, "compressed size of the raw test pixels"),
        ("causal-neighbour counts", 256, base["causal_neighbour_counts"], n,
         "counts of a pixel given 4 seen neighbours, backed off"),
    ]
    for name, entry in manifest.items():
        if entry.get("kind") != "image_model":
            continue
        cfg = entry["config"]
        what = f"{entry['parameters'] / 1e6:.2f}M parameters, condition {cfg['condition']}, {entry['steps']} steps"
        rows.append((f"**{name}**", cfg["levels"], entry["test_bits_per_dim"], entry["test_images"], what))
    for name, levels, bpd, images, how in rows:
        uniform = f" (uniform: {math.log2(levels):.0f})" if levels != 256 else ""
        print(f"| {name} | {levels}{uniform} | {bpd:.3f} | {images:,} | {how} |")
    print()
    print("| model | guidance | temperature | samples | judge accuracy | Fréchet distance | PSNR |")
    print("|---|---|---|---|---|---|---|")
    for name, entry in manifest.items():
        if entry.get("kind") != "image_model":  # Part II's rows are in part()
            continue
        for run in entry.get("evaluation", {}).get("by_guidance", []):
            acc = f"{run['accuracy']:.3f}" if run.get("accuracy") is not None else "—"
            psnr = f"{run['psnr_db']:.1f} dB" if "psnr_db" in run else "—"
            print(f"| {name} | {run['guidance']:g} | {run.get('temperature', 1.0):g} | {run['samples']} | {acc} | "
                  f"{run['frechet_distance']:.2f} | {psnr} |")
        if name == "superres":
            upsampling_rows()
    judge = manifest.get("classifier")
    if judge:
        print(f"\nThe judge: {judge['test_accuracy']:.4f} accuracy on the 10,000 test images "
              f"({judge['test_accuracy_16_levels']:.4f} on them quantized to 16 levels).")
    part2()


def train_cpu_hours(log: Path) -> float:
    """CPU-hours of a shipped run: its last logged elapsed_s; every shipped model trained on one thread."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return max(row.get("elapsed_s", 0) for row in rows) / 3600


def part2() -> None:
    """The two families on one protocol, the cascade's steps sweep and the SR stage's augmentation sweep."""
    manifest = json.loads((ROOT / "data/checkpoints/manifest.json").read_text())["checkpoints"]
    if "cascade" not in manifest:
        return
    folder = ROOT / "data/checkpoints"
    speed_file = ROOT / "bench/results/sampling_families.json"
    speed = {}
    if speed_file.is_file():
        row = [r for r in json.loads(speed_file.read_text())["families"] if r["batch"] == 100]
        speed = row[0] if row else {}
    text2img, cascade = manifest["text2img"], manifest["cascade"]
    hours = {"text2img": train_cpu_hours(folder / text2img["log"]),
             "cascade": sum(train_cpu_hours(folder / manifest[s]["log"]) for s in ("diffusion_base", "diffusion_sr"))}
    print("\n| family | model | guidance | samples | judge accuracy | Fréchet distance | s/image (batch 100) | "
          "parameters | CPU-hours |")
    print("|---|---|---|---|---|---|---|---|---|")
    for run in text2img["evaluation"]["by_guidance"]:
        if run.get("temperature", 1.0) != text2img["evaluation"]["best_temperature"]:
            continue
        sec = f"{speed['text2img_s_per_image']:.3f}" if speed else "—"
        print(f"| autoregressive | text2img (τ = {run['temperature']:g}) | {run['guidance']:g} | {run['samples']} | "
              f"{run['accuracy']:.3f} | {run['frechet_distance']:.2f} | {sec} | {text2img['parameters'] / 1e6:.2f}M | "
              f"{hours['text2img']:.2f} |")
    for run in cascade["evaluation"]["by_guidance"]:  # the speed where the benchmark ran the same setting
        same = speed and [run["guidance"], run["sr_guidance"]] == speed.get("cascade_guidance") \
            and run["steps"] == speed.get("cascade_steps") and run.get("threshold") == "static"
        sec = f"{speed['cascade_s_per_image']:.3f}" if same else "—"
        print(f"| diffusion | cascade (DDIM {run['steps']}+{run['sr_steps']}, SR guidance {run['sr_guidance']:g}, "
              f"aug {run['aug_level']:g}, threshold {run.get('threshold')}) | {run['guidance']:g} | "
              f"{run['samples']} | {run['accuracy']:.3f} | "
              f"{run['frechet_distance']:.2f} | {sec} | {cascade['parameters'] / 1e6:.2f}M | {hours['cascade']:.2f} |")
    base = manifest.get("diffusion_base", {}).get("evaluation")
    if base:
        print("\n| diffusion_base alone (14×14, judged upsampled) | guidance | samples | judge accuracy | "
              "Fréchet distance |")
        print("|---|---|---|---|---|")
        for run in base["by_guidance"]:
            print(f"| DDIM {run['steps']}, {run.get('threshold')} | {run['guidance']:g} | {run['samples']} | "
                  f"{run['accuracy']:.3f} | "
                  f"{run['frechet_distance']:.2f} |")
    sr_eval = manifest.get("diffusion_sr", {}).get("evaluation")
    if sr_eval and sr_eval["by_guidance"] and "sr" in sr_eval["by_guidance"][0]:
        print("\n| diffusion_sr on real 14×14 test inputs | SR guidance | images | judge accuracy | Fréchet distance | "
              "PSNR | sharpness |")
        print("|---|---|---|---|---|---|---|")
        runs = sr_eval["by_guidance"]
        for name, row, guidance in ([(f"DDIM {r['steps']}, aug {r['aug_level']:g}, {r['threshold']}", r["sr"],
                                      f"{r['guidance']:g}") for r in runs]
                                    + [("*bicubic*", runs[0]["bicubic"], "—"), ("*the originals*", runs[0]["original"],
                                                                                 "—")]):
            psnr = f"{row['psnr_db']:.2f} dB" if name != "*the originals*" else "—"
            print(f"| {name} | {guidance} | {runs[0]['images']} | {row['accuracy']:.3f} | "
                  f"{row['frechet_distance']:.2f} | {psnr} | {row['sharpness']:.4f} |")
    sweeps_file = ROOT / "bench/results/cascade_sweeps.json"
    if sweeps_file.is_file():
        sweeps = json.loads(sweeps_file.read_text())
        for path in (sweeps_file, ROOT / "bench/results/cascade_steps_default.json"):
            if not path.is_file():
                continue
            steps = json.loads(path.read_text())
            g = steps["guidance"]
            print(f"\n| DDIM steps per stage (guidance {g[0]:g} and {g[1]:g}) | judge accuracy | Fréchet distance | "
                  f"s/image (batch 100) |")
            print("|---|---|---|---|")
            for row in steps["steps_sweep"]:
                threads = row.get("threads", steps["threads"])
                print(f"| {row['steps']} | {row['accuracy']:.3f} | {row['frechet_distance']:.2f} | "
                      f"{row['seconds_per_image']:.3f} ({threads} thread{'s' if threads > 1 else ''}) |")
        print("\n| aug level | real 14×14 → SR: judge | PSNR | sharpness | base samples → SR: judge | "
              "Fréchet distance | sharpness |")
        print("|---|---|---|---|---|---|---|")
        for row in sweeps["aug_sweep"]:
            real, base_row = row["from_real"]["sr"], row["from_base"]
            print(f"| {row['aug_level']:g} | {real['accuracy']:.3f} | {real['psnr_db']:.2f} dB | "
                  f"{real['sharpness']:.4f} | {base_row['accuracy']:.3f} | {base_row['frechet_distance']:.2f} | "
                  f"{base_row['sharpness']:.4f} |")
        first = sweeps["aug_sweep"][0]["from_real"]
        for key, name in (("bicubic", "*bicubic 14 → 28*"), ("original", "*the originals*")):
            b = first[key]
            extra = sweeps.get("bicubic_from_base", {}) if key == "bicubic" else {}
            tail = (f"{extra['accuracy']:.3f} | {extra['frechet_distance']:.2f} | —" if extra else "— | — | —")
            psnr = f"{b['psnr_db']:.2f} dB" if key != "original" else "—"
            print(f"| {name} | {b['accuracy']:.3f} | {psnr} | {b['sharpness']:.4f} | {tail} |")


if __name__ == "__main__":
    main()
