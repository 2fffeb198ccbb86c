"""`python -m imagen_tutorial grade` on a pretend class against running the same notebooks one after another.

Builds tools/class_fixtures.py's twenty submissions (chapters 01, 04 and 09: solved, wrong, blank, a printed
"✅" and a redefined check, an endless loop, `os._exit`, a cell that raises, a cell that deletes its working
folder's files, broken JSON, a teacher copy, a student twice, an empty folder), then times

1. `grade` with --jobs kernels at once (it writes grades.csv, feedback/, summary.md, summary.png), and
2. the notebooks `grade` found gradable run one after another with nbclient, as a teacher's "Restart and Run All"
   would (errors allowed, the same per-cell and per-notebook time limits as `grade`, a dead kernel ends that
   notebook),

and prints both wall times, the machine's load, and the summary `grade` wrote.

    OMP_NUM_THREADS=1 .venv/bin/python bench/grade_class.py --jobs 2
    OMP_NUM_THREADS=1 .venv/bin/python bench/grade_class.py --jobs 2 --small   # exercise cells only (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from class_fixtures import make_class  # noqa: E402

from imagen_tutorial.grading import default_limits, find_submissions, grade_class, kernel_env  # noqa: E402


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def one_after_another(paths: list[Path], jobs: int) -> float:
    """Run each notebook top to bottom in its own kernel and temporary folder, one at a time; seconds in all."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    env = kernel_env(1)
    start = time.monotonic()
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        chapter = find_submissions([path])[0].chapter
        limits = default_limits(chapter)
        began = time.monotonic()

        def timeout(cell, limits=limits, began=began) -> int:  # grade's limits: per cell, and per notebook
            return max(1, int(min(limits.cell, limits.notebook - (time.monotonic() - began))))

        with tempfile.TemporaryDirectory() as folder:
            client = NotebookClient(notebook, timeout_func=timeout, allow_errors=True, interrupt_on_timeout=True,
                                    kernel_name="python3", resources={"metadata": {"path": folder}})
            try:
                client.execute(env=env)
                how = "ran"
            except DeadKernelError:
                how = "kernel died"
            except Exception as error:  # anything else that stops nbclient's run of that notebook
                how = type(error).__name__
            print(f"  {path.name}: {how} in {time.monotonic() - began:.0f} s", flush=True)
    return time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--small", action="store_true", help="each chapter's exercise cells only")
    parser.add_argument("--skip-sequential", action="store_true", help="time `grade` only")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="imagen-class-") as folder:
        folder = Path(folder)
        made = make_class(folder / "submissions", args.small)
        print(f"{len(made)} notebooks and an empty folder; load average {load()} on {os.cpu_count()} cores")
        start = time.monotonic()
        results = grade_class([folder / "submissions"], folder / "graded", jobs=args.jobs)
        graded_seconds = time.monotonic() - start
        print(f"grade --jobs {args.jobs}: {graded_seconds:.0f} s for {sum(bool(r.verdicts) for r in results)} "
              f"notebooks run (load average now {load()})")
        for r in results:
            if r.verdicts:
                print(f"  {r.submission.path.name}: {r.seconds:.0f} s, {r.passed}/{len(r.verdicts)} passed")
        figures = {"grade_seconds": round(graded_seconds, 1), "jobs": args.jobs, "small": args.small,
                   "notebooks": len(made), "graded": sum(bool(r.verdicts) for r in results)}
        if not args.skip_sequential:
            runnable = [r.submission.path for r in results if r.verdicts]
            sequential = one_after_another(runnable, args.jobs)
            print(f"one after another: {sequential:.0f} s for the same {len(runnable)} notebooks "
                  f"(load average now {load()})")
            figures["sequential_seconds"] = round(sequential, 1)
        print("\n" + (folder / "graded" / "summary.md").read_text())
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
