"""What the Part III sweeps share (bench/encoder_ablation.py, bench/encoder_scaling.py).

A run is a config file that `python -m imagen_tutorial train --config` reads (bench/configs/<sweep>/<run>.json, made
by the sweep's plan and committed) and a folder it trains into (runs/<sweep>/<run>). Before anything trains, a plan
prints each run's parameters, FLOPs, steps and estimated CPU-hours; `train_runs` continues every unfinished run from
its checkpoint (the Trainer's exact resume), for at most some minutes per call, so a sweep runs in sessions; `grade`
grades a run's weights per category and on swapped-twin pairs (grader.evaluate_scenes, beside the ceiling) and keeps
the result beside the run, so an interrupted grading is not done twice; the twin-probe rows each run logged along
training (log.jsonl) say when order was learned.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from imagen_tutorial.__main__ import read_config_file
from imagen_tutorial.checkpoint import CheckpointError, build_model, file_sha256, load_checkpoint, load_model
from imagen_tutorial.config import SAMPLING_SPECS, ModelConfig, TrainConfig, check_value
from imagen_tutorial.grader import evaluate_scenes
from imagen_tutorial.train import FIXED_ON_RESUME, SCHEDULE_FIELDS, Trainer
from imagen_tutorial.viz import read_log

BASE_CONFIG = Path("configs/scenes_base.toml")
# One step of the scenes base (configs/scenes_base.toml: batch 64, 1.40 GFLOPs per training image) on one thread of
# the 2-core machine with the other thread busy: its log.jsonl shows 41-45 img/s. A step also costs time its FLOPs do
# not count (drawing the scenes, the optimizer, many small kernels), which weighs on small models: five sizes from
# 0.5M to 3M parameters, timed together, fit 0.1 s a step + FLOPs at the rate left (their estimates within 15%).
SECONDS_PER_BASE_STEP = 1.5
SECONDS_PER_STEP = 0.1  # the part of every step that does not scale with its FLOPs
# The training fields two runs must share to be "equal training": the data order and everything the update uses.
SAME_TRAINING = tuple(f for f in (*FIXED_ON_RESUME, *SCHEDULE_FIELDS, "grad_clip", "cond_dropout", "ema_decay",
                                  "precision", "aug_max", "init_from") if f != "max_minutes")
TWIN_PROBE_IMAGES, TWIN_PROBE_STEPS = 80, 25  # grader.twin_probe: 20 pairs of each kind, DDIM 25, guidance 3


def read_config(path: str | Path) -> tuple[ModelConfig, TrainConfig]:
    """The (model, train) configs of a TOML or JSON config file, as `python -m imagen_tutorial train` reads it."""
    values = read_config_file(Path(path))
    return ModelConfig.from_dict(values["model"]), TrainConfig.from_dict(values["train"])


@functools.cache
def _network(config: str) -> dict:
    """What plans need of a network (built once per config, given as its JSON): FLOPs per image and parameters."""
    model = ModelConfig.from_dict(json.loads(config))
    net = build_model(model)
    text = sum(p.numel() for p in net.encoder.parameters()) if net.reads_caption else 0
    total = sum(p.numel() for p in net.parameters())
    return {"train": net.flops_per_image(model.max_caption_len), "total": total, "text encoder": text,
            "sample": net.flops_per_image(model.max_caption_len, training=False), "denoiser": total - text}


def network(model: ModelConfig) -> dict:
    return _network(json.dumps(model.to_dict(), sort_keys=True))


def flops_per_step(model: ModelConfig, batch_size: int) -> float:
    """Training FLOPs of one optimizer step (the Trainer's count: captions padded to max_caption_len)."""
    return network(model)["train"] * batch_size


def sampling_flops(model: ModelConfig, images: int, steps: int, guidance: float) -> float:
    """FLOPs to draw `images` scenes with `steps` DDIM steps (guidance ≠ 1 runs the network twice per step)."""
    return network(model)["sample"] * images * steps * (2 if guidance != 1 else 1)


def flops_per_second() -> float:
    """The rate plans assume: the shipped scenes base's FLOPs per step over the part of SECONDS_PER_BASE_STEP they
    take (read from this repository's config, wherever the sweep runs)."""
    model, train = read_config(Path(__file__).resolve().parent.parent / BASE_CONFIG)
    return flops_per_step(model, train.batch_size) / (SECONDS_PER_BASE_STEP - SECONDS_PER_STEP)


def steps_for_budget(model: ModelConfig, batch_size: int, budget: float) -> int:
    """The steps that spend `budget` training FLOPs: equal compute for models of any size."""
    return max(1, round(budget / flops_per_step(model, batch_size)))


def parameters(model: ModelConfig) -> dict[str, int]:
    """{"text encoder", "denoiser", "total"}: the text encoder's weights (its projection to the denoiser's width
    counts as the denoiser's) and the rest."""
    return {k: network(model)[k] for k in ("text encoder", "denoiser", "total")}


@dataclass
class Run:
    """One training run of a sweep: its configs, the folder it trains into and the file it trains from."""

    name: str
    model: ModelConfig
    train: TrainConfig
    folder: Path
    config: Path
    until: int = 0  # stop here (TrainConfig.stop_at, given when training: one config file serves any step)

    @property
    def end(self) -> int:
        return self.until or self.train.stop_at or self.train.steps

    def flops_per_step(self) -> float:
        return flops_per_step(self.model, self.train.batch_size)

    def config_text(self) -> str:
        return json.dumps({"model": self.model.to_dict(), "train": self.train.to_dict()}, indent=1) + "\n"

    def command(self) -> str:
        """The command line that trains this run (what train_runs does in-process)."""
        stop = f" --stop-at {self.end}" if self.end != self.train.steps else ""
        return (f"OMP_NUM_THREADS=1 python -m imagen_tutorial train --config {self.config} --out {self.folder}{stop}"
                f" [--resume]")

    def progress(self) -> tuple[int, float]:
        """(step, training seconds) of the run's checkpoint; (0, 0) before it starts."""
        checkpoint = self.folder / "checkpoint.pt"
        if not checkpoint.is_file():
            return 0, 0.0
        state = load_checkpoint(checkpoint)
        return state["step"], state["elapsed_s"]


def write_config(run: Run) -> None:
    """Write the run's config file, or check that the one there is the same (a run is traced to its file)."""
    text = run.config_text()
    if run.config.is_file() and run.config.read_text() != text:
        raise ValueError(f"{run.config} differs from this sweep's plan for run {run.name!r}: the run in {run.folder} "
                         f"may have been made from it. Restore it (git checkout {run.config}), or move it and that "
                         f"folder away to start the run over")
    run.config.parent.mkdir(parents=True, exist_ok=True)
    run.config.write_text(text)


def check_same_training(a: TrainConfig | dict, b: TrainConfig | dict, what: str, until: int | None = None) -> None:
    """Refuse two runs whose training differs in a field of SAME_TRAINING, naming the fields; also where `a` (a
    checkpoint's train_config) was resumed with another value of one before step `until`."""
    a, b = (x.to_dict() if isinstance(x, TrainConfig) else {**TrainConfig().to_dict(), **x} for x in (a, b))
    resumed = a["extra"].get("resumed", []) if isinstance(a["extra"], dict) else []
    changed = [f"{k} changed at step {r['step']}" for r in resumed for k in r if k in SAME_TRAINING
               and (until is None or r["step"] < until)]
    if changed:
        raise ValueError(f"{what} are not trained alike: the first was resumed with other values ({'; '.join(changed)})"
                         f", so its steps differ from a run of its final config")

    def value(v):  # a tuple comes back from some files as a list
        return list(v) if isinstance(v, tuple) else v

    diffs = [f"{k}: {a[k]!r} / {b[k]!r}" for k in SAME_TRAINING if value(a[k]) != value(b[k])]
    if diffs:
        raise ValueError(f"{what} are not trained alike ({'; '.join(diffs)}): a comparison at equal training needs "
                         f"the same {', '.join(SAME_TRAINING)}")


def training_hours(run: Run, steps: int | None = None, probes: bool = True) -> float:
    """Estimated CPU-hours on one thread to train `run` (to its end, or `steps`), with its periodic twin probes."""
    steps = run.end if steps is None else steps
    evals = steps // run.train.eval_every + 1 if run.train.eval_every and probes else 0
    flops = run.flops_per_step() * steps + sampling_flops(run.model, TWIN_PROBE_IMAGES, TWIN_PROBE_STEPS, 3.0) * evals
    return (steps * SECONDS_PER_STEP + flops / flops_per_second()) / 3600


def estimate_hours(runs: list[Run], grading_flops: float = 0.0) -> dict[str, float]:
    """Estimated CPU-hours on one thread: {"train", "left", "grade"} for `runs` ("left": from each run's checkpoint
    on) and for sampling `grading_flops`."""
    train = [training_hours(run) for run in runs]
    left = [hours * (1 - run.progress()[0] / run.end) for hours, run in zip(train, runs, strict=True)]
    return {"train": sum(train), "left": sum(left), "grade": grading_flops / flops_per_second() / 3600}


def print_plan(runs: list[Run], extra: list[tuple[str, str]] = ()) -> None:
    """One row per run: its parameters, FLOPs per step, steps, PFLOPs, estimated CPU-hours and where it stands."""
    rate = flops_per_second()
    print("| run | text encoder | denoiser | total params | GFLOPs/step | steps | PFLOPs | est. CPU-h | status |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        p, per_step = parameters(run.model), run.flops_per_step()
        step, elapsed = run.progress()
        status = ("not started" if step == 0 else f"done ({elapsed / 3600:.2f} CPU-h)" if step >= run.end
                  else f"at step {step} ({elapsed / 3600:.2f} CPU-h)")
        print(f"| {run.name} | {p['text encoder']:,} | {p['denoiser']:,} | {p['total']:,} | {per_step / 1e9:.1f} | "
              f"{run.end:,}{'' if run.end == run.train.steps else f' of {run.train.steps:,}'} | "
              f"{per_step * run.end / 1e15:.2f} | {training_hours(run):.2f} | {status} |")
    for name, text in extra:
        print(f"| {name} | {text} |")
    print(f"\nCPU-hours (training with its twin probes) are estimated as {SECONDS_PER_STEP} s a step + FLOPs at "
          f"{rate / 1e9:.0f} GFLOP/s, the scenes base's rate on one thread ({SECONDS_PER_BASE_STEP} s per step of "
          f"batch 64); each run trains into runs/<sweep>/<run> from bench/configs/<sweep>/<run>.json, e.g.\n"
          f"  {runs[0].command()}")


def train_runs(runs: list[Run], minutes: float = 0.0) -> None:
    """Train every unfinished run to its end (resuming from its checkpoint), for at most `minutes` more each
    (0 = no limit)."""
    for run in runs:
        write_config(run)
        step, elapsed = run.progress()
        if step >= run.end:
            continue
        train = dataclasses.replace(run.train, stop_at=run.until) if run.until else run.train
        if minutes:  # max_minutes counts the run's whole training time: this call's share on top of what it had
            train = dataclasses.replace(train, max_minutes=round(elapsed / 60 + minutes, 2))
        print(f"{run.name}: {'resuming at step ' + str(step) if step else 'starting'}, to step {run.end}"
              f"{f' or for {minutes:g} minutes' if minutes else ''} ({run.folder})", flush=True)
        Trainer(run.model, train, run.folder, resume=step > 0).run()


def grade(name: str, weights: Path, classifier, cache: Path, per_category: int, seed: int, steps: int,
          guidance: float) -> dict:
    """evaluate_scenes for the model in `weights` (a checkpoint's EMA, or kept weights), kept in `cache`
    (a JSON file) with the weights' sha256 and the settings, so a second call with the same ones reads it back."""
    settings = {"weights": str(weights), "sha256": file_sha256(weights), "per_category": per_category, "seed": seed,
                "steps": steps, "guidance": guidance}
    if cache.is_file():
        kept = json.loads(cache.read_text())
        if kept.get("settings") == settings:
            return kept["result"]
    start = time.perf_counter()
    model = load_model(weights)
    result = evaluate_scenes(model, classifier, per_category, seed, steps=steps, guidance=guidance)
    result["grading_seconds"] = round(time.perf_counter() - start, 1)
    print(f"{name}: graded {weights} in {result['grading_seconds']:.0f} s", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"settings": settings, "result": result}, indent=1) + "\n")
    return result


def twin_history(log: Path, until: int | None = None) -> list[dict]:
    """The twin-probe rows a scenes run logged along training (step, twins_/swapped_ position and binding)."""
    if not log.is_file():
        return []
    keys = ("step", "twins_position", "swapped_position", "twins_binding", "swapped_binding")
    return [{k: r[k] for k in keys} for r in read_log(log)
            if "twins_position" in r and (until is None or r["step"] <= until)]


def canvas(model: ModelConfig) -> str:
    """The canvas a model draws, e.g. "14×28" (the ceiling's real scenes are graded at it too)."""
    return "×".join(map(str, model.image_shape))


def standard_error(rate: float, n: int) -> float:
    return math.sqrt(rate * (1 - rate) / n) if n else float("nan")


def cell(score: dict, twins: bool = False) -> str:
    """A rate with its binomial standard error; twin pairs also show the rate of pairs drawn swapped."""
    text = f"{score['rate']:.3f} ± {standard_error(score['rate'], score['n']):.3f}"
    return f"{text} (swapped {score['swapped']:.3f})" if twins else text


def print_scores(columns: dict[str, dict], ceiling: dict[str, dict]) -> None:
    """A markdown table: one row per category or twin list, one column per model, the ceiling last. Twin rows
    show the pairs with both right and, in brackets, the pairs with both swapped (bag of words: as often)."""
    print("| category | " + " | ".join(columns) + " | ceiling |\n|---|" + "---|" * (len(columns) + 1))
    for name in ceiling:
        twins = name.endswith("twins")
        print(f"| {name}{' (pairs)' if twins else ''} | " + " | ".join(cell(c[name], twins) for c in columns.values())
              + f" | {ceiling[name]['rate']:.3f} |")


def print_history(histories: dict[str, list[dict]]) -> None:
    """Twin pairs right / swapped along training, a row per logged step, a column per run."""
    steps = sorted({row["step"] for rows in histories.values() for row in rows})
    if not steps:
        print("(no twin-probe rows logged yet)")
        return
    print("| step | " + " | ".join(f"{n}: position right / swapped, binding right / swapped" for n in histories)
          + " |\n|---|" + "---|" * len(histories))
    for step in steps:
        cells = []
        for rows in histories.values():
            row = next((r for r in rows if r["step"] == step), None)
            cells.append("" if row is None else f"{row['twins_position']:.2f} / {row['swapped_position']:.2f}, "
                                                f"{row['twins_binding']:.2f} / {row['swapped_binding']:.2f}")
        print(f"| {step} | " + " | ".join(cells) + " |")


def copy_log(log: Path, dest: Path) -> str | None:
    """Copy a run's log.jsonl next to the results (runs/ is not committed); returns the copy's path."""
    if not log.is_file():
        return None
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(log, dest)
    return str(dest)


def write_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**results, "command": " ".join(["python", *sys.argv]),
                                "threads": torch.get_num_threads()}, indent=1) + "\n")
    print(f"wrote {path}")


def grading_parser(doc: str, sampling_steps: int, per_category: int = 200) -> argparse.ArgumentParser:
    """The flags of every script that grades scenes models with `grade`: the grading settings."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-category", type=int, default=per_category, help="captions per category (half as "
                                                                              "many twin pairs of each kind)")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--steps", type=int, default=sampling_steps, help="DDIM steps")
    parser.add_argument("--seed", type=int, default=0, help="the evaluation captions' and samples' seed")
    return parser


def sweep_parser(doc: str, sampling_steps: int) -> argparse.ArgumentParser:
    """The flags every sweep takes: the plan only, a time limit per call, grading only, and the grading settings."""
    parser = grading_parser(doc, sampling_steps)
    parser.add_argument("--dry-run", action="store_true", help="print the plan only: train and grade nothing")
    parser.add_argument("--minutes", type=float, default=0.0, help="train each run at most this much more in this "
                                                                   "call (0 = to its end)")
    parser.add_argument("--grade-only", action="store_true", help="train nothing; grade when every run is done")
    return parser


def check_grading_arguments(args: argparse.Namespace) -> None:
    check_value("--per-category", args.per_category, int, low=2, high=5000)
    for name in ("guidance", "steps"):
        SAMPLING_SPECS[name].check(f"--{name}", getattr(args, name))


def check_sweep_arguments(args: argparse.Namespace) -> None:
    check_value("--minutes", args.minutes, float, low=0)
    check_grading_arguments(args)


def run_main(main) -> None:
    """Run a sweep's main: a person's mistake (a bad flag value, a missing run, a config that changed) is one line
    on stderr and exit code 2; Ctrl-C says what was kept (the Trainer saves the step) and exits 130."""
    try:
        main()
    except KeyboardInterrupt as error:
        print(f"error: {error or 'interrupted'}; run the same command again to continue", file=sys.stderr)
        sys.exit(130)
    except (ValueError, OSError, CheckpointError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(2)
