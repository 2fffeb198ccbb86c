"""How a scenes run learns to read: every weights file it kept along training graded per category and on swapped
twins, beside the grader's ceiling, with the twin probes it logged.

    python bench/scenes_progress.py [--run runs/scenes_base] [--per-category 100] [--guidance 3] [--steps 25]
    python bench/scenes_progress.py --every 2000     # only the kept steps that are multiples of 2,000: a quicker curve

A run keeps its sampling weights every `keep_every` steps (OUT/weights_step<N>.pt; configs/scenes_base.toml keeps
them every 1,000). Each file is graded once with grader.evaluate_scenes (the same captions for every step, from
--seed); the grades are kept in RUN/grades/ with the file's sha256 and the settings, so a later call grades only the
files that are new. Prints a table (a row per kept step, a column per category, the ceiling last) and the twin
probes of log.jsonl, and writes bench/results/scenes_progress_<run>.json, a plot of each category's rate against the
step (.png) and a copy of the run's log. The loss falls smoothly; this is where one sees *when* the model learns
which garment, where it goes and which one is dark.
"""

from __future__ import annotations

from pathlib import Path

from sweeps import (
    check_grading_arguments,
    copy_log,
    grade,
    grading_parser,
    print_history,
    run_main,
    twin_history,
    write_results,
)

from imagen_tutorial.config import check_value
from imagen_tutorial.pretrained import load_pretrained
from imagen_tutorial.train import kept_weights


def print_progress(grades: dict[int, dict]) -> None:
    """A markdown table: a row per step, a column per category and twin list (twin lists: pairs with both right),
    the ceiling as the last row."""
    ceiling = next(iter(grades.values()))["ceiling"]
    print("| step | " + " | ".join(ceiling) + " |\n|---|" + "---|" * len(ceiling))
    for step, result in grades.items():
        print(f"| {step:,} | " + " | ".join(f"{result['scores'][n]['rate']:.3f}" for n in ceiling) + " |")
    print("| ceiling | " + " | ".join(f"{c['rate']:.3f}" for c in ceiling.values()) + " |")


def plot_progress(grades: dict[int, dict], title: str, path: Path) -> None:
    """Each category's rate against the training step, its ceiling as a dotted line in the same colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ceiling = next(iter(grades.values()))["ceiling"]
    steps = list(grades)
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    for name in ceiling:
        line, = ax.plot(steps, [grades[s]["scores"][name]["rate"] for s in steps], marker="o", label=name)
        ax.axhline(ceiling[name]["rate"], color=line.get_color(), linestyle=":", linewidth=1)
    ax.set(xlabel="training step", ylabel="rate (dotted: the ceiling on real scenes)", ylim=(0, 1), title=title)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # off the lines
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = grading_parser(__doc__, sampling_steps=25, per_category=100)
    parser.add_argument("--run", type=Path, default=Path("runs/scenes_base"), help="a scenes run's --out folder")
    parser.add_argument("--every", type=int, default=0, help="grade only the kept steps that are multiples of this "
                                                             "(0: every kept step)")
    args = parser.parse_args(argv)
    check_grading_arguments(args)
    check_value("--every", args.every, int, low=0)
    kept = kept_weights(args.run)
    if not kept:
        raise ValueError(f"{args.run} holds no kept weights (weights_step<N>.pt): train it with keep_every > 0, "
                         f"as configs/scenes_base.toml does, or give --run the folder of such a run")
    if args.every:
        kept = {step: path for step, path in kept.items() if step % args.every == 0}
        if not kept:
            raise ValueError(f"none of the steps {args.run} kept is a multiple of --every {args.every}: give a "
                             f"divisor of its keep_every, or 0 to grade every kept step")
    classifier = load_pretrained("slot_classifier")
    settings = dict(per_category=args.per_category, seed=args.seed, steps=args.steps, guidance=args.guidance)
    grades = {step: grade(f"step {step}", path, classifier, args.run / "grades" / f"{path.stem}.json", **settings)
              for step, path in kept.items()}
    name = args.run.name
    print(f"\n{name}: {args.per_category} captions per category at each kept step (DDIM {args.steps}, guidance "
          f"{args.guidance:g}, seed {args.seed}); twin lists: pairs with both right\n")
    print_progress(grades)
    print(f"\n{name}: the twin probes it logged while training (20 pairs of each kind)\n")
    print_history({name: twin_history(args.run / "log.jsonl")})
    results = Path("bench/results")
    plot_progress(grades, f"{name}: what it has learned, step by step", results / f"scenes_progress_{name}.png")
    write_results(results / f"scenes_progress_{name}.json",
                  {"run": str(args.run), **settings, "log": copy_log(args.run / "log.jsonl",
                                                                     results / f"scenes_progress_{name}.log.jsonl"),
                   "steps": {str(step): {"weights": str(kept[step]), "scores": g["scores"], "ceiling": g["ceiling"]}
                             for step, g in grades.items()}})


if __name__ == "__main__":
    run_main(main)
