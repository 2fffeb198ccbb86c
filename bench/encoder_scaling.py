"""Imagen's scaling question in miniature (Saharia et al. 2022, §4.4 and Fig. 4: "scaling the text encoder size [is]
significantly more impactful than the U-Net size"): grow the text encoder with the denoiser fixed, and the denoiser
with the text encoder fixed, every run at the same training compute, and grade each per category and on swapped twins.

    python bench/encoder_scaling.py --dry-run          # the plan: runs, parameters, steps, FLOPs, CPU-hours
    python bench/encoder_scaling.py [--minutes 60]     # train (resumable: run it again to continue), then grade

Every run is the scenes base's recipe (configs/scenes_base.toml: data, batch 64, optimizer, warm-up then cosine,
EMA, guidance dropout) on a smaller model, the reference being a 64-wide, 6-block denoiser that reads a 64-wide,
2-layer Transformer text encoder by cross-attention. The text-encoder line changes the encoder's width (d_text,
projected to the denoiser's width where they differ) and depth; the denoiser line its width and blocks. Each run
trains for the steps that spend --budget (in steps of the scenes base: the FLOPs of that many of its steps), so a
larger model trains for fewer steps; two seeds at each line's smallest and largest size give the noise (the
reference, the middle of both lines, trains one seed, which saves a run's CPU-hour). Its config is
bench/configs/encoder_scaling/<run>.json, its folder runs/encoder_scaling/<run>. When every run is done, each is
graded (its checkpoint's EMA) and the script prints a table per run and per size, writes
bench/results/encoder_scaling.json (with every run's config and a copy of its log in bench/results/encoder_scaling/)
and plots alignment against the scaled part's parameters, one line per scaled part (bench/results/
encoder_scaling.png), in the shape of Imagen's Fig. 4.

Our text encoder is trained with the denoiser, from scratch, on the captions alone; Imagen's T5 was pretrained on a
large text corpus and frozen. So here a larger text encoder must also learn its language from the same images, at
the same compute, which is the denoiser's compute too.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

from sweeps import (
    BASE_CONFIG,
    Run,
    canvas,
    check_sweep_arguments,
    copy_log,
    estimate_hours,
    flops_per_step,
    grade,
    parameters,
    print_history,
    print_plan,
    read_config,
    run_main,
    sampling_flops,
    steps_for_budget,
    sweep_parser,
    train_runs,
    twin_history,
    write_results,
)

from imagen_tutorial import load_pretrained
from imagen_tutorial.captions import CATEGORIES
from imagen_tutorial.config import check_value

SWEEP = "encoder_scaling"
TEXT_ENCODERS = ((32, 1), (64, 2), (128, 4))  # (d_text, layers), smallest to largest; the middle is the reference's
DENOISERS = ((48, 4), (64, 6), (96, 8))  # (d_model, blocks)
REFERENCE = (TEXT_ENCODERS[1], DENOISERS[1])
SEEDS = (0, 1)  # at every size but the reference, which trains SEEDS[0] only
LINES = {"text encoder": "text encoder", "denoiser": "denoiser"}  # line -> the part whose parameters are its x
METRICS = {"overall": "mean of the six categories", "position twins": "position twin pairs",
           "attribute binding twins": "binding twin pairs"}


def run_name(text: tuple[int, int], denoiser: tuple[int, int], seed: int) -> str:
    return f"text{text[0]}x{text[1]}_denoiser{denoiser[0]}x{denoiser[1]}_seed{seed}"


def sizes() -> list[tuple[tuple[int, int], tuple[int, int], list[str]]]:
    """Every (text encoder, denoiser) size the sweep trains, with the lines it lies on (the reference: both)."""
    pairs = [(text, REFERENCE[1]) for text in TEXT_ENCODERS] + [(REFERENCE[0], den) for den in DENOISERS
                                                                 if den != REFERENCE[1]]
    return [(text, den, [line for line, on in (("text encoder", den == REFERENCE[1]),
                                               ("denoiser", text == REFERENCE[0])) if on]) for text, den in pairs]


def scaling_runs(budget_steps: float) -> list[tuple[Run, list[str]]]:
    """Every run at equal training compute: the FLOPs of `budget_steps` steps of the scenes base each."""
    model, train = read_config(BASE_CONFIG)
    budget = budget_steps * flops_per_step(model, train.batch_size)
    runs = []
    for (d_text, layers), (d_model, blocks), lines in sizes():
        m = dataclasses.replace(model, d_model=d_model, n_layers=blocks, d_text=d_text, n_enc_layers=layers)
        steps = steps_for_budget(m, train.batch_size, budget)
        t = dataclasses.replace(train, steps=steps, warmup_steps=min(train.warmup_steps, steps // 10), keep_every=0,
                                eval_every=max(1, steps // 4))  # a twin probe at each quarter of the run
        for seed in SEEDS if len(lines) == 1 else SEEDS[:1]:  # the reference lies on both lines
            name = run_name((d_text, layers), (d_model, blocks), seed)
            runs.append((Run(name, m, dataclasses.replace(t, seed=seed), Path("runs") / SWEEP / name,
                             Path("bench/configs") / SWEEP / f"{name}.json"), lines))
    return runs


def overall(scores: dict) -> float:
    return statistics.mean(scores[c]["rate"] for c in CATEGORIES)


def summarise(rows: list[dict]) -> list[dict]:
    """Per line and size (smallest first): the mean of its seeds and their spread (half the range) per metric."""
    out = []
    for line, part in LINES.items():
        on = [r for r in rows if line in r["lines"]]
        for params in sorted({r["parameters"][part] for r in on}):
            seeds = [r for r in on if r["parameters"][part] == params]
            entry = {"line": line, "size": seeds[0]["size"][line], "parameters": params, "steps": seeds[0]["steps"],
                     "seeds": len(seeds)}
            for metric in METRICS:
                values = [r["metrics"][metric] for r in seeds]
                entry[metric] = {"mean": statistics.mean(values), "spread": (max(values) - min(values)) / 2,
                                 "values": values}
            out.append(entry)
    return out


def plot(summary: list[dict], ceiling: dict, path: Path) -> None:
    """Alignment against the scaled part's parameters, one line per scaled part (Imagen's Fig. 4, in miniature)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6), squeeze=False)
    limits = {"overall": overall({c: ceiling[c] for c in CATEGORIES}), **{m: ceiling[m]["rate"] for m in METRICS
                                                                          if m != "overall"}}
    for ax, (metric, label) in zip(axes[0], METRICS.items(), strict=True):
        for line, marker in zip(LINES, "os", strict=True):
            rows = [r for r in summary if r["line"] == line]
            x = [r["parameters"] for r in rows]
            ax.errorbar(x, [r[metric]["mean"] for r in rows], yerr=[r[metric]["spread"] for r in rows],
                        marker=marker, capsize=3, label=f"scaling the {line}")
            for r in rows:
                ax.scatter([r["parameters"]] * len(r[metric]["values"]), r[metric]["values"], s=8, color="grey")
        ax.axhline(limits[metric], color="black", linestyle="--", linewidth=0.8, label="ceiling (real scenes)")
        ax.set_xscale("log")
        ax.set_xlabel("parameters of the scaled part")
        ax.set_ylabel(label)
        ax.set_ylim(0, 1)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("text encoder or denoiser? equal training compute per run (mean of the seeds; bars: half their range)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = sweep_parser(__doc__, sampling_steps=25)
    parser.add_argument("--budget", type=float, default=1200, help="training compute per run, in steps of the scenes "
                                                                   "base (configs/scenes_base.toml)")
    args = parser.parse_args(argv)
    check_sweep_arguments(args)
    check_value("--budget", args.budget, float, low=0, low_open=True)
    planned = scaling_runs(args.budget)
    runs = [run for run, _ in planned]
    grading = sum(sampling_flops(r.model, 8 * args.per_category, args.steps, args.guidance) for r in runs)
    hours = estimate_hours(runs, grading)
    print(f"{SWEEP}: {len(runs)} runs, each the training FLOPs of {args.budget:g} steps of the scenes base; text "
          f"encoder sizes (width x layers) {TEXT_ENCODERS} with the denoiser at {REFERENCE[1]}, denoiser sizes "
          f"(width x blocks) {DENOISERS} with the text encoder at {REFERENCE[0]}; seeds {SEEDS}\n")
    print_plan(runs)
    print(f"\nestimated CPU-hours on one thread: training {hours['train']:.1f} with its twin probes "
          f"({hours['left']:.1f} left), grading at {args.per_category} captions per category (DDIM {args.steps}, "
          f"guidance {args.guidance:g}) {hours['grade']:.1f}; total {hours['left'] + hours['grade']:.1f}")
    if args.dry_run:
        return
    if not args.grade_only:
        train_runs(runs, args.minutes)
    waiting = [r.name for r in runs if r.progress()[0] < r.end]
    if waiting:
        print(f"\nnot graded yet: {', '.join(waiting)} {'is' if len(waiting) == 1 else 'are'} not finished; run this "
              f"again to continue")
        return
    grade_all(args, planned)


def run_row(run: Run, lines: list[str], scores: dict) -> dict:
    """What the results keep of one graded run: where it came from (config, folder, log copy) and its scores."""
    m = run.model
    log = copy_log(run.folder / "log.jsonl", Path("bench/results") / SWEEP / f"{run.name}.log.jsonl")
    metrics = {"overall": overall(scores), **{k: scores[k]["rate"] for k in METRICS if k != "overall"}}
    return {"run": run.name, "lines": lines, "seed": run.train.seed, "steps": run.end,
            "size": {"text encoder": f"{m.d_text}x{m.n_enc_layers}", "denoiser": f"{m.d_model}x{m.n_layers}"},
            "parameters": parameters(m), "config": str(run.config), "folder": str(run.folder), "log": log,
            "training_hours": round(run.progress()[1] / 3600, 2), "scores": scores, "metrics": metrics,
            "along_training": twin_history(run.folder / "log.jsonl")}


def grade_all(args: argparse.Namespace, planned: list[tuple[Run, list[str]]]) -> None:
    classifier = load_pretrained("slot_classifier")
    settings = dict(per_category=args.per_category, seed=args.seed, steps=args.steps, guidance=args.guidance)
    rows, ceiling = [], None
    for run, lines in planned:
        result = grade(run.name, run.folder / "checkpoint.pt", classifier,
                       Path("runs") / SWEEP / "grades" / f"{run.name}.json", **settings)
        rows.append(run_row(run, lines, result["scores"]))
        ceiling = result["ceiling"]
    print(f"\n{args.per_category} captions per category ({args.per_category // 2} twin pairs of each kind), DDIM "
          f"{args.steps}, guidance {args.guidance:g}; ceiling: real test scenes at {canvas(planned[0][0].model)}")
    names = [*CATEGORIES, "position twins", "attribute binding twins"]
    print("| run | text enc. params | denoiser params | steps | " + " | ".join(names) + " | overall |\n|---|"
          + "---|" * (len(names) + 4))
    for r in rows:
        p = r["parameters"]
        print(f"| {r['run']} | {p['text encoder']:,} | {p['denoiser']:,} | {r['steps']:,} | "
              + " | ".join(f"{r['scores'][n]['rate']:.3f}" for n in names) + f" | {r['metrics']['overall']:.3f} |")
    print("| ceiling | | | | " + " | ".join(f"{ceiling[n]['rate']:.3f}" for n in names)
          + f" | {overall(ceiling):.3f} |")
    summary = summarise(rows)
    print("\nper size, the mean of the seeds ± half their range:")
    print("| scaled part | size | its parameters | steps | " + " | ".join(METRICS.values()) + " |\n|---|---|---|---|"
          + "---|" * len(METRICS))
    for s in summary:
        print(f"| {s['line']} | {s['size']} | {s['parameters']:,} | {s['steps']:,} | "
              + " | ".join(f"{s[m]['mean']:.3f} ± {s[m]['spread']:.3f}" for m in METRICS) + " |")
    print("\ntwin pairs along training (right / swapped), seed 0:")
    print_history({r["run"]: r["along_training"] for r in rows if r["seed"] == 0})
    plot(summary, ceiling, Path(f"bench/results/{SWEEP}.png"))
    write_results(Path(f"bench/results/{SWEEP}.json"), {"budget": args.budget, **settings, "ceiling": ceiling,
                                                        "runs": rows, "summary": summary})


if __name__ == "__main__":
    run_main(main)
