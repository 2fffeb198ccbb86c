"""Where the scenes cascade loses what its base stage drew, and which settings of its SR stage keep it.

    python bench/scenes_sr_settings.py [--per-category 100] [--guidance 3] [--sr 3,0.2 1,0.2 1,0.1 0,0.2]
    python bench/scenes_sr_settings.py --sr 1,0 --real 1,0 --sr-stage runs/scenes_sr_ft/weights_step003000.pt

The base stage draws every caption of `grader.evaluation_set` once, at 14×28 (kept in runs/scenes_sr_settings/ with
the settings and the files' sha256, so later calls and parallel processes reuse it). The grader then reads those
same drawings three ways: at 14×28 (beside the 14×28 ceiling), bilinearly upsampled to 28×56 (no SR stage), and
through the SR stage at each --sr setting, "GUIDANCE,AUG_LEVEL" (guidance 1 reads the caption without the
unconditional pass, 0 ignores it; aug_level is the noise laid on the low-res input, 0 = as given). Each row's grades
are kept beside the drawings, so settings can be split across processes (one thread each) and a last call with every
setting prints the table and writes bench/results/scenes_sr_settings.json. Rows share the base drawings, so their
differences are the SR stage's alone.

--real GUIDANCE,AUG_LEVEL adds rows for real test scenes (the ceiling's) area-downsampled to 14×28 and drawn back to
28×56 by the SR stage: the SR stage's own ceiling, what it makes of a perfect base stage. --sr-stage grades another
SR stage (a shipped name or a checkpoint file, e.g. a run's kept weights) on the same base drawings; its rows are
kept apart by the file's sha256 and written to bench/results/scenes_sr_settings_<stem>.json (or --json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from imagen_tutorial.__main__ import FLAG_SPECS, file_digests, load_any
from imagen_tutorial.cascade import Cascade
from imagen_tutorial.config import check_sampling_args
from imagen_tutorial.grader import ceiling, evaluation_set, grade, real_scenes, score
from imagen_tutorial.metrics import diffusion_samples
from imagen_tutorial.pretrained import load_pretrained

CACHE = Path("runs/scenes_sr_settings")


def sr_setting(text: str) -> tuple[float, float]:
    """"GUIDANCE,AUG_LEVEL" -> (guidance, aug_level), checked by the sampling specs."""
    try:
        guidance, aug_level = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not GUIDANCE,AUG_LEVEL (e.g. 1,0.1)") from None
    try:
        checked = check_sampling_args(guidance=guidance, aug_level=aug_level)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return checked["guidance"], checked["aug_level"]


def grade_sets(images: dict[str, torch.Tensor], sets: dict, classifier) -> dict[str, float]:
    """Each evaluation list's drawings graded: name -> rate (twin lists: pairs with both right)."""
    return {name: score(grade(images[name], scenes, classifier), twins=name.endswith("twins"))["rate"]
            for name, scenes in sets.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-category", type=int, default=100)
    parser.add_argument("--guidance", type=float, default=3.0, help="the base stage's guidance")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps per stage")
    parser.add_argument("--sr", type=sr_setting, nargs="*", default=[(3.0, 0.2), (1.0, 0.2), (1.0, 0.1), (0.0, 0.2)],
                        help="SR settings GUIDANCE,AUG_LEVEL (the cascade's first default was 3,0.2; it ships at 1,0)")
    parser.add_argument("--real", type=sr_setting, nargs="*", default=[],
                        help="SR settings at which the SR stage also draws real test scenes given at 14x28")
    parser.add_argument("--sr-stage", default="scenes_sr", help="the SR stage: a shipped name or a checkpoint file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None,
                        help="where the table's figures go (default bench/results/scenes_sr_settings[_<stage>].json)")
    args = parser.parse_args()
    try:
        check_sampling_args(guidance=args.guidance, steps=args.steps)
        FLAG_SPECS["per_category"].check("--per-category", args.per_category)
    except ValueError as error:
        parser.error(str(error))
    base, classifier = load_pretrained("scenes_base"), load_pretrained("slot_classifier")
    try:
        sr = load_any(args.sr_stage)
        Cascade(base, sr)  # the SR stage must chain with the shipped base: its condition, canvas and grammar
    except (FileNotFoundError, ValueError) as error:
        parser.error(f"--sr-stage {args.sr_stage}: {error}")
    base_digest = file_digests("scenes_base")
    digests = {**base_digest, **file_digests(args.sr_stage)}
    sets = evaluation_set(args.per_category, args.seed)
    key = f"n{args.per_category}_seed{args.seed}_g{args.guidance:g}_steps{args.steps}"
    folder = CACHE / key
    folder.mkdir(parents=True, exist_ok=True)

    def draw(model, lowres: dict | None = None, **sampling) -> tuple[dict, float]:
        """Every evaluation list drawn by one stage (the SR stage reads `lowres`, the base's drawings by list):
        drawings by list, and the seconds per scene."""
        start, out = time.perf_counter(), {}
        for name, scenes in sets.items():
            out[name], _ = diffusion_samples(model, [s.caption for s in scenes], args.seed, steps=args.steps,
                                             **({"lowres": lowres[name]} if lowres else {}), **sampling)
            print(f"{name} drawn ({time.perf_counter() - start:.0f} s)", flush=True)
        return out, (time.perf_counter() - start) / sum(len(s) for s in sets.values())

    base_file = folder / "base.pt"
    cached = torch.load(base_file) if base_file.exists() else {}
    if cached.get("stages") == base_digest:
        low = cached["images"]
    else:
        low, _ = draw(base, guidance=args.guidance)
        torch.save({"stages": base_digest, "images": low}, base_file)

    def row(name: str, drawings) -> dict:
        """A row's grades, from its cache or graded now (drawings() -> drawings by evaluation list, seconds per
        scene)."""
        through_sr = not name.startswith("base")  # a base row depends on the base stage alone
        stages = digests if through_sr else base_digest
        sr_tag = "_" + digests[args.sr_stage][:12] if through_sr and args.sr_stage != "scenes_sr" else ""
        path = folder / f"{name.replace(' ', '_').replace(',', '_')}{sr_tag}.json"
        if path.exists() and json.loads(path.read_text())["stages"] == stages:
            return json.loads(path.read_text())
        images, seconds = drawings()
        result = {"row": name, "rates": grade_sets(images, sets, classifier), "seconds_per_scene": seconds,
                  "stages": stages}
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"{name}: graded", flush=True)
        return result

    def upsampled():
        return {name: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False).clamp(0, 1)
                for name, x in low.items()}, 0.0

    rows = [row("base at 14x28", lambda: (low, 0.0)), row("base upsampled bilinearly to 28x56", upsampled)]
    rows += [row(f"SR guidance {g:g}, aug_level {a:g}", lambda g=g, a=a: draw(sr, low, guidance=g, aug_level=a))
             for g, a in args.sr]
    if args.real:
        real = {name: real_scenes(scenes, args.seed, 14) for name, scenes in sets.items()}
        rows += [row(f"real scenes at 14x28 through SR guidance {g:g}, aug_level {a:g}",
                     lambda g=g, a=a: draw(sr, real, guidance=g, aug_level=a)) for g, a in args.real]
    ceilings = {f"ceiling at {size}": {name: graded["rate"]
                                       for name, graded in ceiling(sets, classifier, size, args.seed).items()}
                for size in (14, 28)}

    names = list(sets)
    print(f"\nscenes cascade (SR stage {args.sr_stage}), {args.per_category} captions per category "
          f"({args.per_category // 2} twin pairs), base guidance {args.guidance:g}, DDIM {args.steps} steps per "
          f"stage, seed {args.seed}: the same base drawings graded at 14x28, upsampled, and through the SR stage")
    print("| drawings | " + " | ".join(names) + " | s per scene (SR) |\n|---|" + "---|" * (len(names) + 1))
    for r in rows:
        print(f"| {r['row']} | " + " | ".join(f"{r['rates'][n]:.3f}" for n in names) +
              f" | {r['seconds_per_scene']:.3f} |")
    for label, rates in ceilings.items():
        print(f"| {label} (real scenes) | " + " | ".join(f"{rates[n]:.3f}" for n in names) + " | |")
    stem = "" if args.sr_stage == "scenes_sr" else "_" + Path(args.sr_stage).stem
    out = args.json or Path(f"bench/results/scenes_sr_settings{stem}.json")
    out.write_text(json.dumps({"per_category": args.per_category, "seed": args.seed, "guidance": args.guidance,
                               "steps": args.steps, "sr_stage": args.sr_stage, "stages": digests, "rows": [
                                   {k: v for k, v in r.items() if k != "stages"} for r in rows],
                               "ceilings": ceilings, "threads": torch.get_num_threads()}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
