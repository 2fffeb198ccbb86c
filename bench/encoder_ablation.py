"""What the text encoder buys (Imagen §4.4, in miniature): the scenes base stage reading its caption as a bag of
words, as a pooled Transformer encoding, or by cross-attention over the whole sequence, compared at the same step S
of one schedule, with the same seed, data order and denoiser.

    python bench/encoder_ablation.py --until 6000 --dry-run     # the plan, its CPU-hours, the base run's twin probes
    python bench/encoder_ablation.py --until 6000 [--minutes 120]   # train (resumable), then grade all three

The cross-attention model is the scenes base run itself (configs/scenes_base.toml, trained in --cross), which keeps
its EMA weights every 1,000 steps (weights_step<N>.pt). "bow" and "pooled" train the same config with only
text_encoder changed (bench/configs/encoder_ablation/<encoder>.json) into runs/encoder_ablation/<encoder>, and stop
at S (TrainConfig.stop_at: the cosine still ends at the base's 12,000 steps, so every step up to S, learning rate
included, is the one the base run took). Run it again to continue: each run resumes from its checkpoint (--minutes
bounds this call's training per run). Once all three have weights at S, each is graded per category and on
swapped-twin pairs beside the grader's ceiling (real test scenes at 14×28), the twin rates each run logged along
training are printed, the same captions and twins are drawn from the three models (bench/results/
encoder_ablation.png), and bench/results/encoder_ablation.json is written with every run's config, log (copied to
bench/results/encoder_ablation/) and step.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from sweeps import (
    BASE_CONFIG,
    Run,
    canvas,
    check_same_training,
    check_sweep_arguments,
    copy_log,
    estimate_hours,
    grade,
    parameters,
    print_history,
    print_plan,
    print_scores,
    read_config,
    run_main,
    sampling_flops,
    standard_error,
    sweep_parser,
    train_runs,
    training_hours,
    twin_history,
    write_results,
)

from imagen_tutorial import load_pretrained
from imagen_tutorial.checkpoint import check_config, load_checkpoint, load_model
from imagen_tutorial.config import check_value
from imagen_tutorial.grader import GRID_TWINS
from imagen_tutorial.grader import grade as grade_images
from imagen_tutorial.train import kept_weights_file
from imagen_tutorial.viz import plot_scenes, read_log

ENCODERS = ("bow", "pooled")  # trained here; "cross" is the base run
SWEEP = "encoder_ablation"


def ablation_runs(until: int) -> list[Run]:
    """bow and pooled: the base config with only text_encoder changed, stopped at `until`."""
    model, train = read_config(BASE_CONFIG)
    return [Run(encoder, dataclasses.replace(model, text_encoder=encoder), train, Path("runs") / SWEEP / encoder,
                Path("bench/configs") / SWEEP / f"{encoder}.json", until=until) for encoder in ENCODERS]


def check_cross(cross: Path, runs: list[Run]) -> str:
    """The base run must be the runs' own config but for text_encoder, trained alike; returns where it stands."""
    checkpoint = cross / "checkpoint.pt"
    if not checkpoint.is_file():
        return f"no checkpoint in {cross} yet (give the base run's folder with --cross)"
    state = load_checkpoint(checkpoint)
    model = dataclasses.replace(runs[0].model, text_encoder="cross")
    check_config(state["model_config"], model, f"the base run {checkpoint}")
    check_same_training(state["train_config"], runs[0].train, f"the base run ({checkpoint}) and {runs[0].config}",
                        runs[0].until)
    return f"at step {state['step']} ({state['elapsed_s'] / 3600:.2f} CPU-h)"


def elapsed_at(log: Path, step: int) -> float | None:
    """The training seconds a run's log reports at `step` (its last row at or before it)."""
    rows = [r for r in read_log(log) if "elapsed_s" in r and r["step"] <= step] if log.is_file() else []
    return rows[-1]["elapsed_s"] if rows else None


def print_targets(scores: dict[str, dict]) -> None:
    """The issue's targets, each with its sampling noise: bag of words right as often as swapped on twins;
    cross-attention at least 0.3 above pooled on position and binding twins."""
    for kind in ("position twins", "attribute binding twins"):
        if "bow" in scores:
            s = scores["bow"][kind]
            right, swapped = s["rate"], s["swapped"]
            noise = ((right + swapped - (right - swapped) ** 2) / s["n"]) ** 0.5  # one multinomial sample of pairs
            print(f"bow, {kind}: pairs right {right:.3f}, swapped {swapped:.3f}: difference {right - swapped:+.3f} ± "
                  f"{2 * noise:.3f} (two standard errors; a bag of words cannot tell them apart)")
        if "cross" in scores and "pooled" in scores:
            a, b = scores["cross"][kind], scores["pooled"][kind]
            noise = (standard_error(a["rate"], a["n"]) ** 2 + standard_error(b["rate"], b["n"]) ** 2) ** 0.5
            print(f"cross − pooled, {kind}: {a['rate'] - b['rate']:+.3f} ± {2 * noise:.3f} (target: ≥ 0.3)")


def save_grid(models: dict, classifier, steps: int, guidance: float, path: Path) -> None:
    """GRID_TWINS (five captions, each followed by its swapped twin) drawn from every model with one seed and graded:
    a row per caption, a column per model (each verdict cut to its first reason, so that it fits its panel)."""
    scenes = [s for pair in GRID_TWINS for s in (pair, pair.twin())]
    captions = [s.caption for s in scenes]
    drawn = {name: model.generate(captions, steps=steps, guidance=guidance, generator=torch.Generator().manual_seed(0))
             for name, model in models.items()}
    verdicts = {name: [dataclasses.replace(v, reason="swapped" if v.swapped else v.reason.split("; ")[0])
                       for v in grade_images(images, scenes, classifier)] for name, images in drawn.items()}
    order = [(name, i) for i in range(len(scenes)) for name in models]
    figure = plot_scenes(torch.stack([drawn[n][i] for n, i in order]), [f"{n}: {captions[i]}" for n, i in order],
                         [verdicts[n][i] for n, i in order], ncols=len(models))
    figure.suptitle(f"each caption, then its swapped twin (DDIM {steps}, guidance {guidance:g}, seed 0)", y=1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80, bbox_inches="tight")
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = sweep_parser(__doc__, sampling_steps=50)
    parser.add_argument("--until", type=int, default=6000, help="the step S the three are compared at (a multiple of "
                                                                "the base run's keep_every)")
    parser.add_argument("--cross", type=Path, default=Path("runs/scenes_base"), help="the base run's folder")
    args = parser.parse_args(argv)
    check_sweep_arguments(args)
    _, base = read_config(BASE_CONFIG)
    until = check_value("--until", args.until, int, low=1, high=base.steps)
    if base.keep_every == 0 or until % base.keep_every:
        raise ValueError(f"--until={until} must be a multiple of keep_every={base.keep_every} in {BASE_CONFIG}: the "
                         f"base run keeps its weights only at those steps")
    runs = ablation_runs(until)
    cross_status = check_cross(args.cross, runs)

    images = 8 * args.per_category  # six categories and two twin lists
    grading = sum(sampling_flops(dataclasses.replace(runs[0].model, text_encoder=e), images, args.steps,
                                 args.guidance) for e in ("bow", "pooled", "cross"))
    hours = estimate_hours(runs, grading)
    print(f"{SWEEP}: bag of words and pooled trained to step {until} of the base's {base.steps}-step schedule, "
          f"compared with the cross-attention base run at step {until}\n")
    print_plan(runs, [("cross", f"{parameters(dataclasses.replace(runs[0].model, text_encoder='cross'))['total']:,} "
                                f"parameters: the base run in {args.cross}, {cross_status}; its weights at step "
                                f"{until}: {kept_weights_file(args.cross, until)}")])
    others = ", ".join(f"S = {s}: {sum(training_hours(r, s) for r in runs):.1f} CPU-h"
                       for s in range(2 * base.keep_every, base.steps + 1, 2 * base.keep_every))
    print(f"\nestimated CPU-hours on one thread: training {hours['train']:.1f} ({hours['left']:.1f} left), grading "
          f"three models at {args.per_category} captions per category (DDIM {args.steps}, guidance {args.guidance:g}) "
          f"{hours['grade']:.1f}; total {hours['left'] + hours['grade']:.1f}.\nother S (training bow and pooled): "
          f"{others}.")
    print("\nthe base run's twin probes (20 pairs each; pick S where the cross model has learned order):")
    print_history({"cross": twin_history(args.cross / "log.jsonl")})
    if args.dry_run:
        return
    if not args.grade_only:
        train_runs(runs, args.minutes)
    folders = {**{r.name: r.folder for r in runs}, "cross": args.cross}   # bow, pooled, cross: the columns
    missing = [f"{name} ({kept_weights_file(folder, until)})" for name, folder in folders.items()
               if not kept_weights_file(folder, until).is_file()]
    if missing:
        print(f"\nnot graded yet: no weights at step {until} for {', '.join(missing)}; run this again when they exist")
        return
    grade_all(args, runs, folders, until)


def grade_all(args: argparse.Namespace, runs: list[Run], folders: dict[str, Path], until: int) -> None:
    """Grade the three at step `until`, print the tables, draw the grid, write the results and copy the logs."""
    classifier = load_pretrained("slot_classifier")
    settings = dict(per_category=args.per_category, seed=args.seed, steps=args.steps, guidance=args.guidance)
    results = {name: grade(name, kept_weights_file(folder, until), classifier,
                           Path("runs") / SWEEP / "grades" / f"{name}_step{until:06d}.json", **settings)
               for name, folder in folders.items()}
    ceiling = results["cross"]["ceiling"]
    print(f"\ntext encoders at step {until}: {args.per_category} captions per category ({args.per_category // 2} twin "
          f"pairs of each kind), DDIM {args.steps}, guidance {args.guidance:g}, seed {args.seed}; ± one standard "
          f"error; ceiling: real test scenes at {canvas(runs[0].model)}")
    print_scores({name: r["scores"] for name, r in results.items()}, ceiling)
    print()
    print_targets({name: r["scores"] for name, r in results.items()})
    histories = {name: twin_history(folder / "log.jsonl", until) for name, folder in folders.items()}
    print("\nswapped twins along training (the runs' periodic twin probes, 20 pairs each: right / swapped):")
    print_history(histories)
    save_grid({name: load_model(kept_weights_file(folder, until)) for name, folder in folders.items()}, classifier,
              args.steps, args.guidance, Path(f"bench/results/{SWEEP}.png"))
    configs = {"cross": str(BASE_CONFIG), **{r.name: str(r.config) for r in runs}}
    model = {r.name: r.model for r in runs} | {"cross": dataclasses.replace(runs[0].model, text_encoder="cross")}
    out = {"until": until, **settings, "ceiling": ceiling, "runs": {}}
    for name, folder in folders.items():
        log = copy_log(folder / "log.jsonl", Path("bench/results") / SWEEP / f"{name}.log.jsonl")
        elapsed = elapsed_at(folder / "log.jsonl", until)
        out["runs"][name] = {"config": configs[name], "folder": str(folder), "log": log,
                             "weights": str(kept_weights_file(folder, until)), "parameters": parameters(model[name]),
                             # the training hours its log reports at S (one thread; more where the machine was loaded)
                             "training_hours": None if elapsed is None else round(elapsed / 3600, 2),
                             "scores": results[name]["scores"], "seconds_per_scene": results[name]["seconds_per_scene"],
                             "along_training": histories[name]}
    write_results(Path(f"bench/results/{SWEEP}.json"), out)


if __name__ == "__main__":
    run_main(main)
