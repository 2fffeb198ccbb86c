"""The README's "Results" table, from the shipped manifest and the reference figures of bench/baselines.py.

    .venv/bin/python bench/baselines.py --json bench/results/baselines.json    # once (about 2 minutes)
    .venv/bin/python bench/superres_baselines.py --json bench/results/superres_baselines.json  # seconds
    .venv/bin/python bench/results_table.py                                     # prints Markdown

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


if __name__ == "__main__":
    main()
