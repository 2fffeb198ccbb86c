"""Grade a class: `python -m imagen_tutorial grade PATH... --out DIR` runs every student's notebook in a fresh
kernel in a temporary folder, calls each exercise's check on the student's own function, and writes what a
teacher needs: grades.csv, one feedback file per student, summary.md and summary.png.

The grade never comes from what a notebook printed. Before the notebook's own check cell of an exercise runs,
the grader calls that exercise's check itself, from a copy of `imagen_tutorial.checks` imported before any
student code ran (so a check redefined or patched by the notebook changes nothing), on the function the student's
name is bound to, and reads the `Verdict` the check records. A cell that runs too long is interrupted, a kernel
that dies is restarted (the notebook goes on without the cell that killed it), and one bad submission never
stops the class's grading. What a determined student could still do, and how to run untrusted notebooks safely,
is in TEACHING.md ("Grading a class").
"""

from __future__ import annotations

import ast
import csv
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from .checks import CHAPTERS, STATUSES, Exercise, Verdict
from .config import check_value

ROOT = Path(__file__).resolve().parents[1]
TEACHING = ROOT / "TEACHING.md"
MARKS = {"passed": "✅", "failed": "❌", "not attempted": "➖", "missing": "❔", "crashed": "💥", "timed out": "⏱"}
MAX_RESTARTS = 2  # a notebook whose kernel dies more often is graded on what it reached
INTERRUPT_GRACE = 10.0  # seconds an interrupted cell gets to stop before its kernel is restarted
STUCK = "it did not stop when interrupted"
_STOP = threading.Event()  # set on Ctrl-C: every kernel stops
CHECK_SECONDS = 120.0  # the grader's call of one check (they take seconds; an endless loop in the function never ends)


class GradingError(ValueError):
    """Bad input to `grade` as a whole (no notebooks, an output folder in use): one line for the teacher."""


# ---------------------------------------------------------------- what was handed in
@dataclass
class Submission:
    """One notebook file (or an empty folder) handed in. `problem` says why it is not graded."""

    path: Path
    student: str
    chapter: str | None = None
    cells: list[str] = field(default_factory=list)  # every cell's source; "" for markdown and raw cells
    code: list[int] = field(default_factory=list)  # indices of the code cells
    problem: str | None = None
    note: str = ""

    @property
    def key(self) -> str:
        return f"{self.student}_{self.chapter or 'unknown'}"


def find_submissions(paths: list[str | Path], chapter: str | None = None) -> list[Submission]:
    """Every notebook under `paths` (files, or folders searched recursively; hidden folders such as
    .ipynb_checkpoints skipped), read and given a student and a chapter. A given folder with no notebook in it, and
    a folder right below it with none (a student who handed in nothing), are submissions with a problem. Of two
    notebooks of the same student and chapter, the one modified last is graded and the other gets a problem."""
    found: list[Submission] = []
    for given in map(Path, paths):
        if not given.exists():
            raise GradingError(f"{given} does not exist: give notebooks or folders of notebooks")
        if given.is_file():
            found.append(_read(given, given.parent))
            continue
        notebooks = sorted(p for p in given.rglob("*.ipynb") if not _hidden(p.relative_to(given)))
        found += [_read(p, given) for p in notebooks]
        folders = [p for p in sorted(given.iterdir()) if p.is_dir() and not _hidden(Path(p.name))]
        for folder in [given] if not notebooks else folders:
            if not any(n.is_relative_to(folder) for n in notebooks):
                name = _student_name(Path(f"{folder.resolve().name}.ipynb"), folder)
                found.append(Submission(folder, name, problem="an empty folder: no notebook handed in"))
    if chapter is not None:
        for sub in found:
            if sub.problem is None and sub.chapter != chapter:
                sub.problem = f"chapter {sub.chapter}, not chapter {chapter} (--chapter): not graded"
    _mark_duplicates(found)
    return found


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _read(path: Path, root: Path) -> Submission:
    sub = Submission(path, _student_name(path, root))
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        cells = notebook["cells"]
        sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells]
        kinds = [c["cell_type"] for c in cells]
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        sub.problem = f"not a notebook: the file is not valid JSON ({error}); ask the student for a fresh copy"
        sub.chapter = _chapter_from_name(path)
        return sub
    except (KeyError, TypeError):
        sub.problem = "not a notebook: valid JSON, but not a Jupyter notebook's cells"
        return sub
    sub.cells = [s if k == "code" else "" for s, k in zip(sources, kinds, strict=True)]
    sub.code = [i for i, k in enumerate(kinds) if k == "code"]
    meta = notebook.get("metadata", {}).get("imagen_tutorial", {})
    by_content = _chapter_from_content(sub.cells)
    sub.chapter = meta.get("chapter") if meta.get("chapter") in CHAPTERS else by_content or _chapter_from_name(path)
    named = _chapter_from_name(path)
    if named and sub.chapter and named != sub.chapter:
        sub.note = f"the file name says chapter {named}, but the notebook is chapter {sub.chapter}"
    if any(line.strip() == "### BEGIN SOLUTION" for s in sub.cells for line in s.splitlines()) \
            or meta.get("copy") == "teacher":
        sub.problem = ("a teacher copy (it holds the solutions between ### BEGIN SOLUTION and ### END SOLUTION), "
                       "not a student's work: not graded")
    elif sub.chapter is None:
        sub.problem = "no chapter found: neither its metadata nor its cells match a chapter of the course"
    return sub


def _chapter_from_name(path: Path) -> str | None:
    found = re.search(r"(?<!\d)(\d{2})(?!\d)", path.stem)
    return found.group(1) if found and found.group(1) in CHAPTERS else None


def _chapter_from_content(cells: list[str]) -> str | None:
    """The chapter whose checks the cells call most (a student copy calls each of its chapter's checks once)."""
    text = "\n".join(cells)
    score = {ch: sum(bool(re.search(rf"\b{e.check.__name__}\s*\(", text)) for e in ex) for ch, ex in CHAPTERS.items()}
    best = max(score, key=score.get)
    return best if score[best] else None


def _student_name(path: Path, root: Path) -> str:
    """The student's name from where the file sits: the file name without the chapter's own name, number and a
    copy suffix (alice_04.ipynb, 04_the_autoregressive_decoder (1).ipynb), else the folder below `root`
    (submissions/alice/04_....ipynb); an LMS prefix (Moodle's "Alice Smith_123_assignsubmission_file_", nbgrader's
    "alice+ps1+timestamp") is cut to the name."""
    stem = re.sub(r"\s*\(\d+\)$|-checkpoint$", "", path.stem)
    stem = re.sub(r"_\d+_assignsubmission_\w+?_.*$", "", stem)  # Moodle
    chapter_names = {p.stem for p in (ROOT / "chapters").glob("[0-9]*.ipynb")}
    for name in sorted(chapter_names, key=len, reverse=True):
        stem = stem.replace(name, "")
    stem = re.sub(r"(?<!\d)\d{2}(?!\d)", "", stem)
    stem = re.sub(r"^[\s_\-.+]+|[\s_\-.+]+$", "", stem)
    if not stem:
        folders = path.parent.relative_to(root).parts if path.parent.is_relative_to(root) else ()
        stem = folders[0] if folders else path.stem
    return stem.split("+")[0].strip() or path.stem


def _mark_duplicates(found: list[Submission]) -> None:
    latest: dict[str, Submission] = {}
    for sub in found:
        if sub.problem is None:
            other = latest.get(sub.key)
            if other is None or sub.path.stat().st_mtime > other.path.stat().st_mtime:
                latest[sub.key] = sub
    for sub in found:
        kept = latest.get(sub.key)
        if sub.problem is None and kept is not sub:
            sub.problem = f"a second copy of {sub.student}'s chapter {sub.chapter}: graded the newer {kept.path}"


# ---------------------------------------------------------------- a kernel, driven cell by cell
@dataclass
class Run:
    status: str  # "ok", "error", "timeout" (interrupted), "dead"
    seconds: float
    error: str = ""
    value: str | None = None


class Kernel:
    """An IPython kernel in `folder` (its working folder, TMPDIR and IPython profile live there), with the grader's
    own copy of the checks installed before any student code runs."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        from jupyter_client import KernelManager

        # The connection file and (on Unix) the sockets in the kernel's own folder: no TCP port for anyone else to
        # connect to, and no need for a writable home folder (a grader run as another user may have none).
        ipc = {"transport": "ipc", "ip": str(folder.parent / "kernel")} if os.name == "posix" else {}
        self.km = KernelManager(kernel_name="python3", connection_file=str(folder.parent / "kernel.json"), **ipc)
        self.km.start_kernel(cwd=str(folder), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.kc = self.km.blocking_client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)
        installed = self.run(_INSTALL, timeout=300)
        if installed.status != "ok":
            self.close()
            raise RuntimeError(f"the grader's checks could not be imported in the kernel: {installed.error}")

    def run(self, code: str, timeout: float, expression: str | None = None) -> Run:
        """Execute `code` (and then evaluate `expression`), interrupting it after `timeout` seconds."""
        start = time.monotonic()
        msg_id = self.kc.execute(code, store_history=expression is None, allow_stdin=False,
                                 user_expressions={"value": expression} if expression else None)
        error, interrupted = "", None
        while True:
            now = time.monotonic()
            if _STOP.is_set():  # the teacher pressed Ctrl-C
                raise KeyboardInterrupt
            if interrupted is None and now - start > timeout:
                self.km.interrupt_kernel()
                interrupted = now
            if interrupted is not None and now - interrupted > INTERRUPT_GRACE:
                return Run("dead", now - start, STUCK)
            try:
                msg = self.kc.get_iopub_msg(timeout=0.5)
            except queue.Empty:
                if not self.km.is_alive():
                    return Run("dead", time.monotonic() - start)
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "error":
                error = f"{msg['content']['ename']}: {msg['content']['evalue']}".strip()
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        seconds = time.monotonic() - start
        value = self._value(msg_id) if expression and not error else None
        return Run("timeout" if interrupted else "error" if error else "ok", seconds, error, value)

    def _value(self, msg_id: str) -> str | None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                reply = self.kc.get_shell_msg(timeout=1)
            except queue.Empty:
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                result = reply["content"].get("user_expressions", {}).get("value", {})
                text = result.get("data", {}).get("text/plain") if result.get("status") == "ok" else None
                return ast.literal_eval(text) if text else None
        return None

    def close(self) -> None:
        try:
            self.kc.stop_channels()
            self.km.shutdown_kernel(now=True)
        except Exception:  # a kernel that is already gone
            pass


# Runs in the kernel before any student cell: imports a private copy of imagen_tutorial (removed again from
# sys.modules, so the notebook's own import gets its own modules) and keeps a grade() that uses only that copy.
_INSTALL = r'''
def _imagen_grader_install():
    import contextlib, importlib, io, json, sys, types, warnings

    def ours(name):
        return name == "imagen_tutorial" or name.startswith("imagen_tutorial.")

    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if ours(name)}
    try:
        checks = importlib.import_module("imagen_tutorial.checks")
    finally:
        for name in [name for name in sys.modules if ours(name)]:
            del sys.modules[name]
        sys.modules.update(saved)

    def grade(namespace, chapter, name, learner_name):
        exercise = next(e for e in checks.CHAPTERS[chapter] if e.name == name)
        if learner_name not in namespace:
            return json.dumps({"exercise": name, "status": "missing", "message": ""})
        learner = namespace[learner_name]
        module = getattr(learner, "__module__", None) or ""
        if ours(module):
            return json.dumps({"exercise": name, "status": "failed", "mistake_id": "package-function",
                               "mistake": "the package's own function handed in as yours",
                               "message": f"{learner_name} is the package's own {module}."
                                          f"{getattr(learner, '__qualname__', '')}, not the student's code"})
        checks.core._verdicts.clear()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                exercise.check(learner)
            except Exception as error:
                return json.dumps({"exercise": name, "status": "crashed",
                                   "message": f"the check itself failed on it: {type(error).__name__}: {error}"})
        verdict = checks.core.last_verdict(name)
        if verdict is None:
            return json.dumps({"exercise": name, "status": "crashed", "message": "its check gave no verdict"})
        return json.dumps(verdict.to_dict())

    sys.modules["__imagen_grader__"] = types.SimpleNamespace(grade=grade)


_imagen_grader_install()
del _imagen_grader_install
'''


# ---------------------------------------------------------------- grading one notebook
@dataclass
class Result:
    submission: Submission
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)  # what went wrong while the notebook ran
    seconds: float = 0.0

    @property
    def passed(self) -> int:
        return sum(v.status == "passed" for v in self.verdicts.values())


@dataclass
class Limits:
    notebook: float  # seconds of student cells per notebook
    cell: float  # seconds for one cell
    check: float = CHECK_SECONDS  # seconds for the grader's call of one check


def default_limits(chapter: str, timeout: float | None = None) -> Limits:
    """Per notebook: `timeout`, or 6× the chapter's measured run time (TEACHING.md) + 3 minutes, since a class's
    kernels share the machine; per cell: half of that, so that an endless loop in one cell leaves time for the
    others; per check: CHECK_SECONDS (a check takes a few seconds), at most the cell's."""
    total = timeout if timeout is not None else 6 * chapter_seconds().get(chapter, 60) + 180
    return Limits(total, total / 2, min(CHECK_SECONDS, total / 2))


class _Grader:
    """Runs one notebook cell by cell, grading each exercise just before its check cell."""

    def __init__(self, sub: Submission, limits: Limits, env: dict[str, str], folder: Path) -> None:
        self.sub, self.limits, self.env, self.folder = sub, limits, env, folder
        self.exercises: tuple[Exercise, ...] = CHAPTERS[sub.chapter]
        self.check_cell = {e.name: _first_cell(sub, rf"(?<!def )\b{e.check.__name__}\s*\(") for e in self.exercises}
        # the name the student's check cell hands to the check (a renamed function is still found)
        self.learner = {e.name: _handed_to(sub, e) for e in self.exercises}
        self.result = Result(sub)
        self.used = 0.0  # seconds of student cells
        self.skip: set[int] = set()  # cells that killed the kernel
        self.replaced: set[str] = set()  # exercises whose function is replaced by the reference before its check
        self.restarts = 0
        self.stopped_at: int | None = None  # the cell where the notebook ran out of time
        self.kernel: Kernel | None = None

    def grade(self) -> Result:
        start = time.monotonic()
        try:
            self._run()
        finally:
            if self.kernel is not None:
                self.kernel.close()
        self._explain_the_rest()
        self.result.seconds = time.monotonic() - start
        return self.result

    def _start(self) -> None:
        work = self.folder / f"work{self.restarts}"
        for name in (work.name, "tmp", "ipython"):
            (self.folder / name).mkdir(exist_ok=True)
        self.kernel = Kernel(work, self.env)

    def _run(self) -> None:
        self._start()
        position, replay_until = 0, 0  # after a restart, the cells before replay_until run again, ungraded
        while position < len(self.sub.code):
            index = self.sub.code[position]
            replaying = position < replay_until
            if not replaying and not all(self._grade_exercise(e) for e in self._checked_at(index)):
                if not self._restart("while a check ran"):
                    return
                position, replay_until = 0, position
                continue
            for exercise in self._checked_at(index, graded=True):
                if exercise.name in self.replaced:
                    self._replace(exercise)
            if index not in self.skip and not self._run_cell(index, replaying):
                if self.stopped_at is not None:
                    return
                self.skip.add(index)
                if not self._restart(f"without cell {index + 1}"):
                    return
                position, replay_until = 0, position
                continue
            position += 1
        for exercise in self.exercises:  # exercises whose check cell the student deleted
            if exercise.name not in self.result.verdicts and not self._grade_exercise(exercise):
                return

    def _checked_at(self, index: int, graded: bool = False) -> list[Exercise]:
        """The exercises whose check cell is `index`: those not graded yet, or (graded=True) those graded."""
        return [e for e in self.exercises if self.check_cell[e.name] == index
                and (e.name in self.result.verdicts) == graded]

    def _run_cell(self, index: int, replaying: bool) -> bool:
        """Run a student cell; False when the kernel died or the notebook's time ran out (then `stopped_at`)."""
        left = self.limits.notebook - self.used
        if left <= 0:
            self.stopped_at = index
            return False
        limit = min(self.limits.cell, left)
        run = self.kernel.run(self.sub.cells[index], limit)
        self.used += run.seconds
        whole = self.used >= self.limits.notebook
        if run.status == "error" and not replaying:
            self._event(f"cell {index + 1} raised {_short(run.error)}")
        elif run.status == "timeout" and not replaying:
            self._event(f"cell {index + 1} timed out after {limit:.0f} s and was interrupted"
                        + (f" (the notebook's limit of {self.limits.notebook:.0f} s)" if whole else ""))
        elif run.status == "dead":
            self._event(f"cell {index + 1} timed out after {limit:.0f} s and did not stop when interrupted"
                        if run.error == STUCK else f"the kernel died at cell {index + 1} ({_death(run)})")
        if run.status == "timeout" and whole:
            self.stopped_at = index + 1
            return False
        return run.status != "dead"

    def _grade_exercise(self, exercise: Exercise) -> bool:
        """Call the exercise's check in the kernel and record its verdict; False when the kernel died."""
        name = exercise.name
        code = (f"__imagen_verdict = __import__('sys').modules['__imagen_grader__'].grade(globals(), "
                f"{self.sub.chapter!r}, {name!r}, {self.learner[name]!r})")
        run = self.kernel.run(code, self.limits.check, expression="__imagen_verdict")
        if run.status == "ok" and run.value:
            verdict = Verdict(**json.loads(run.value))
            if verdict.status == "missing":
                verdict = self._missing(exercise)
        elif run.status == "timeout" or run.error == STUCK:
            verdict = Verdict(name, "timed out", f"its check did not finish within {self.limits.check:.0f} s (an "
                                                 f"endless loop?); the notebook went on with the reference")
        elif run.status == "dead":
            verdict = Verdict(name, "crashed", f"the kernel died while its check ran ({_death(run)}); the notebook "
                                              f"went on with the reference")
        else:
            verdict = Verdict(name, "crashed", f"the grader could not check it: {_short(run.error)}")
        self.result.verdicts[name] = verdict
        if run.status in ("timeout", "dead"):
            self.replaced.add(name)
        return run.status != "dead"

    def _missing(self, exercise: Exercise) -> Verdict:
        learner = self.learner[exercise.name]
        defined = _first_cell(self.sub, rf"^\s*(def|class)\s+{learner}\b|^\s*{learner}\s*=(?!=)")
        if defined is None or defined == self.check_cell[exercise.name]:
            return Verdict(exercise.name, "missing", f"no {learner} in the notebook: its exercise cell was deleted, "
                                                     f"or the function renamed")
        why = next((e for e in self.result.events if e.startswith(f"cell {defined + 1} ")), None)
        return Verdict(exercise.name, "crashed", f"{learner} was never defined: "
                                                 + (why or f"cell {defined + 1}, which defines it, did not run"))

    def _replace(self, exercise: Exercise) -> None:
        """Bind the exercise's name to the reference (its check handed nothing), as the notebook does after ❌."""
        self.kernel.run(f"import contextlib as _c, io as _i\nwith _c.redirect_stdout(_i.StringIO()):\n"
                        f"    import imagen_tutorial.checks as _k\n"
                        f"    {self.learner[exercise.name]} = _k.{exercise.check.__name__}(None)\ndel _c, _i, _k",
                        self.limits.check)

    def _restart(self, how: str) -> bool:
        self.kernel.close()
        self.kernel = None
        if self.restarts >= MAX_RESTARTS:
            self._event(f"the kernel died {self.restarts + 1} times: grading stopped there")
            return False
        self.restarts += 1
        self._event(f"restarted the kernel and ran the earlier cells again, {how}")
        self._start()
        return True

    def _explain_the_rest(self) -> None:
        """A verdict for every exercise the run never reached."""
        for exercise in self.exercises:
            if exercise.name in self.result.verdicts:
                continue
            if self.stopped_at is not None:
                message = (f"the notebook ran out of time (its limit is {self.limits.notebook:.0f} s) at cell "
                           f"{self.stopped_at + 1}, before this exercise")
                self.result.verdicts[exercise.name] = Verdict(exercise.name, "timed out", message)
            else:
                self.result.verdicts[exercise.name] = Verdict(exercise.name, "crashed", "not checked: the kernel had "
                                                              "died before its check (see what went wrong above)")
        if self.stopped_at is not None:
            left = len([i for i in self.sub.code if i >= self.stopped_at])
            self._event(f"out of time: the notebook's limit of {self.limits.notebook:.0f} s was reached; "
                        f"{left} code cell(s) from cell {self.stopped_at + 1} on did not run")

    def _event(self, text: str) -> None:
        self.result.events.append(text)


def _handed_to(sub: Submission, exercise: Exercise) -> str:
    """The variable the student's check cell passes to the exercise's check (`my_attention` unless renamed)."""
    pattern = rf"(?<!def )\b{exercise.check.__name__}\s*\(\s*([A-Za-z_]\w*)\s*\)"
    found = [m.group(1) for i in sub.code for m in re.finditer(pattern, sub.cells[i])]
    return found[0] if found else exercise.learner


def _first_cell(sub: Submission, pattern: str) -> int | None:
    return next((i for i in sub.code if re.search(pattern, sub.cells[i], re.M)), None)


def _short(error: str) -> str:
    error = " ".join(error.split())
    return error if len(error) <= 160 else error[:157] + "..."


def _death(run: Run) -> str:
    return run.error or "os._exit, a crash in native code, or out of memory"


def grade_notebook(sub: Submission, limits: Limits | None = None, env: dict[str, str] | None = None) -> Result:
    """Grade one readable submission in a fresh kernel in a temporary folder (removed afterwards)."""
    limits = limits or default_limits(sub.chapter)
    with tempfile.TemporaryDirectory(prefix="imagen-grade-", ignore_cleanup_errors=True) as name:
        folder = Path(name)
        env = {**(env or kernel_env()), "TMPDIR": str(folder / "tmp"), "IPYTHONDIR": str(folder / "ipython")}
        try:
            return _Grader(sub, limits, env, folder).grade()
        except Exception as error:  # a kernel that would not start: this notebook is not graded, the class goes on
            why = f"not graded: {_short(str(error)) or type(error).__name__}"
            return Result(sub, {e.name: Verdict(e.name, "crashed", why) for e in CHAPTERS[sub.chapter]}, [why])


def kernel_env(jobs: int = 1) -> dict[str, str]:
    """The kernels' environment: this package first on the path (the kernel grades with the same checks), no
    plotting windows or progress bars, and one or a few threads each (unless OMP_NUM_THREADS is set)."""
    env = dict(os.environ)
    threads = env.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // max(1, jobs)))
    path = [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, MPLBACKEND="Agg", TQDM_DISABLE="1",
               PYTHONPATH=os.pathsep.join(path))
    return env


# ---------------------------------------------------------------- the class
def grade_class(paths: list[str | Path], out: str | Path, jobs: int | None = None, timeout: float | None = None,
                chapter: str | None = None, cell_timeout: float | None = None, check_timeout: float | None = None,
                progress: bool = True) -> list[Result]:
    """Grade every submission under `paths` with up to `jobs` kernels at once, and write grades.csv,
    feedback/STUDENT_CHAPTER.md, summary.md and summary.png into `out` (which must be new or empty)."""
    jobs = check_value("--jobs", jobs, int, low=1, high=256, optional=True)
    timeout = check_value("--timeout", timeout, float, low=0, low_open=True, optional=True, note="seconds")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GradingError(f"{out} already exists and is not an empty folder: choose a new --out folder (grading "
                           f"never overwrites earlier results)")
    chapter = chapter.zfill(2) if chapter is not None and chapter.isdigit() else chapter
    if chapter is not None and chapter not in CHAPTERS:
        raise GradingError(f"--chapter {chapter}: the chapters are {', '.join(CHAPTERS)}")
    _check_kernel_tools()
    subs = find_submissions(paths, chapter)
    if all(sub.path.is_dir() for sub in subs):
        raise GradingError(f"no notebooks (*.ipynb) found in {', '.join(map(str, paths))}")
    jobs = jobs or default_jobs()
    env = kernel_env(jobs)
    todo = [s for s in subs if s.problem is None]
    results = {id(s): Result(s) for s in subs if s.problem is not None}
    start = time.monotonic()
    bar = _progress(len(todo), progress)
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = {}
        for sub in todo:
            limits = default_limits(sub.chapter, timeout)
            limits.cell = cell_timeout or limits.cell
            limits.check = check_timeout or limits.check
            futures[pool.submit(grade_notebook, sub, limits, env)] = sub
        for future in as_completed(futures):
            result = future.result()
            results[id(result.submission)] = result
            if bar is not None:
                bar.set_postfix_str(f"{result.submission.student} ch{result.submission.chapter}")
                bar.update()
                for event in result.events:
                    bar.write(f"{result.submission.path}: {event}")
    except KeyboardInterrupt:  # Ctrl-C: stop every kernel, and keep what was graded
        _STOP.set()
        pool.shutdown(wait=True, cancel_futures=True)
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is None:
                results[id(futures[future])] = future.result()
        for sub in todo:
            if id(sub) not in results:
                sub.problem = "not graded: grading was interrupted (Ctrl-C) first"
                results[id(sub)] = Result(sub)
        write_report([results[id(s)] for s in subs], out, time.monotonic() - start, jobs)
        raise KeyboardInterrupt(f"interrupted (Ctrl-C): {out} holds what was graded before") from None
    finally:
        pool.shutdown(wait=True)
        _STOP.clear()
        if bar is not None:
            bar.close()
    ordered = [results[id(s)] for s in subs]
    write_report(ordered, out, time.monotonic() - start, jobs)
    return ordered


def default_jobs() -> int:
    """As many kernels as cores, and at most one per 2 GB of memory (a chapter's kernel peaks at 0.8–1.6 GB)."""
    cores = os.cpu_count() or 1
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return cores
    return max(1, min(cores, int(memory_gb // 2)))


def _check_kernel_tools() -> None:
    try:
        import ipykernel  # noqa: F401
        import jupyter_client  # noqa: F401
    except ImportError:
        raise GradingError("grading runs notebooks in Jupyter kernels: install jupyter_client and ipykernel "
                           "(pip install 'imagen-tutorial[dev]')") from None


def _progress(total: int, show: bool):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="grading", unit="notebook", file=sys.stderr)


# ---------------------------------------------------------------- TEACHING.md: run times and "when a student is stuck"
def chapter_seconds() -> dict[str, float]:
    """Each chapter's measured run time, from TEACHING.md's headings ("### 04 · The autoregressive decoder — 63 s")."""
    text = TEACHING.read_text(encoding="utf-8") if TEACHING.exists() else ""
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^### (\d{2}) · .*? — (\d+) s", text, re.M)}


def stuck_rows() -> list[tuple[str, str]]:
    """TEACHING.md's "When a student is stuck" table as (message pattern, usual cause) rows."""
    text = TEACHING.read_text(encoding="utf-8") if TEACHING.exists() else ""
    section = text.split("## When a student is stuck", 1)[-1].split("\n## ", 1)[0] if text else ""
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) == 2 and "`" in cells[0]:
            rows.append((cells[0], cells[1]))
    return rows


def _pattern(row: str) -> re.Pattern:
    """A row's first column (`raised <Error>: <message>` / `the output looks like <mistake>`, alternatives in
    separate backticks) as one regular expression."""
    alternatives = []
    for quoted in re.findall(r"`([^`]+)`", row):
        parts = re.split(r"<[^>]+>|…", quoted.replace("\\|", "|"))
        alternatives.append(".*?".join(re.escape(p.strip()) for p in parts if p.strip()))
    return re.compile("|".join(f"(?:{a})" for a in alternatives))


def stuck_row(verdict: Verdict, rows: list[tuple[str, str]]) -> tuple[str, str] | None:
    """The row of "When a student is stuck" that matches what the student saw, if any."""
    line = f"{MARKS.get(verdict.status, '')} {verdict.exercise}: {verdict.status}: {verdict.message}"
    for row in rows:
        if _pattern(row[0]).search(line):
            return row
    return None


# ---------------------------------------------------------------- what the teacher gets
def write_report(results: list[Result], out: Path, seconds: float, jobs: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(results, out / "grades.csv")
    rows = stuck_rows()
    (out / "feedback").mkdir(exist_ok=True)
    names: Counter = Counter()
    for result in results:
        if result.verdicts:
            key = _safe(result.submission.key)
            names[key] += 1
            name = key if names[key] == 1 else f"{key}_{names[key]}"
            (out / "feedback" / f"{name}.md").write_text(_feedback(result, rows), encoding="utf-8")
    counts, mistakes = _counts(results), ranked_mistakes(results)
    _write_chart(counts, mistakes, out / "summary.png")
    (out / "summary.md").write_text(_summary(results, counts, mistakes, seconds, jobs), encoding="utf-8")


def _exercise_columns(results: list[Result]) -> list[tuple[str, Exercise]]:
    chapters = sorted({r.submission.chapter for r in results if r.verdicts})
    return [(ch, e) for ch in chapters for e in CHAPTERS[ch]]


def _write_csv(results: list[Result], path: Path) -> None:
    columns = _exercise_columns(results)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "chapter", "file"] + [e.name for _, e in columns]
                        + ["passed", "exercises", "notes"])
        for r in results:
            sub = r.submission
            statuses = [r.verdicts[e.name].status if sub.chapter == ch and e.name in r.verdicts else ""
                        for ch, e in columns]
            notes = "; ".join(([sub.problem] if sub.problem else []) + ([sub.note] if sub.note else []) + r.events)
            writer.writerow([sub.student, sub.chapter or "", str(sub.path)] + statuses
                            + [r.passed if r.verdicts else "", len(r.verdicts) or "", notes])


def _safe(name: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", name).strip("_") or "student"


def _feedback(result: Result, rows: list[tuple[str, str]]) -> str:
    sub = result.submission
    lines = [f"# {sub.student} · chapter {sub.chapter}", "",
             f"`{sub.path}` — {result.passed} of {len(result.verdicts)} exercises passed.", ""]
    if sub.note or result.events:
        lines += ["While the notebook ran:", ""] + [f"- {e}" for e in ([sub.note] if sub.note else []) + result.events]
        lines.append("")
    for exercise in CHAPTERS[sub.chapter]:
        v = result.verdicts[exercise.name]
        lines += [f"## {MARKS[v.status]} {v.exercise} (`{exercise.learner}`): {v.status}", ""]
        if v.message:
            lines += [f"> {v.message}", ""]
        if v.mistake_id:
            lines += [f"Named mistake: `{v.mistake_id}`.", ""]
        row = stuck_row(v, rows) if v.status != "passed" else None
        if row:
            lines += [f"When a student is stuck ({row[0]}): {row[1]}", ""]
    return "\n".join(lines)


def _counts(results: list[Result]) -> dict[tuple[str, str], Counter]:
    """(chapter, exercise) -> how many of each status."""
    counts: dict[tuple[str, str], Counter] = {}
    for r in results:
        for name, v in r.verdicts.items():
            counts.setdefault((r.submission.chapter, name), Counter())[v.status] += 1
    return counts


@dataclass
class Ranked:
    """A named mistake and the students who made it."""

    chapter: str
    exercise: str
    mistake_id: str
    text: str
    students: list[str]


def ranked_mistakes(results: list[Result]) -> list[Ranked]:
    """The named mistakes of the class, the one most students made first."""
    found: dict[tuple[str, str, str], Ranked] = {}
    for r in results:
        for exercise in CHAPTERS[r.submission.chapter] if r.verdicts else ():
            v = r.verdicts[exercise.name]
            if v.mistake_id:
                key = (r.submission.chapter, exercise.name, v.mistake_id)
                found.setdefault(key, Ranked(*key, v.mistake or "", [])).students.append(r.submission.student)
    return sorted(found.values(), key=lambda m: (-len(m.students), m.chapter, m.exercise, m.mistake_id))


def _summary(results: list[Result], counts: dict, mistakes: list[Ranked], seconds: float, jobs: int) -> str:
    graded = [r for r in results if r.verdicts]
    lines = ["# Class summary", "",
             f"{len(graded)} notebook(s) graded, {len(results) - len(graded)} not graded, in {seconds:.0f} s "
             f"({jobs} at a time). Per student: grades.csv and feedback/; the chart: summary.png.", ""]
    for chapter in sorted({r.submission.chapter for r in graded}):
        lines += [f"## Chapter {chapter}", "", "| exercise | " + " | ".join(STATUSES) + " |",
                  "|---|" + "---|" * len(STATUSES)]
        for exercise in CHAPTERS[chapter]:
            c = counts.get((chapter, exercise.name), Counter())
            lines.append(f"| {exercise.name} | " + " | ".join(str(c[s]) for s in STATUSES) + " |")
        lines += ["", "Named mistakes, the most common first:", ""]
        ours = [m for m in mistakes if m.chapter == chapter]
        lines += [f"{k}. **{m.exercise}: `{m.mistake_id}`** — {len(m.students)} student(s) "
                  f"({', '.join(m.students)}): {m.text}" for k, m in enumerate(ours, 1)] or ["none"]
        lines.append("")
    problems = [(r.submission, e) for r in results for e in ([r.submission.problem] if r.submission.problem else [])
                + ([r.submission.note] if r.submission.note else []) + r.events]
    if problems:
        lines += ["## What went wrong while grading", ""]
        lines += [f"- `{sub.path}` ({sub.student}): {text}" for sub, text in problems]
        lines.append("")
    return "\n".join(lines)


COLOURS = {"passed": "#4caf50", "failed": "#e53935", "not attempted": "#bdbdbd", "missing": "#8d6e63",
           "crashed": "#8e24aa", "timed out": "#fb8c00"}


def _write_chart(counts: dict, mistakes: list[Ranked], path: Path) -> None:
    """Above: a bar per exercise, split by status. Below: the ten most common named mistakes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [(ch, e.name) for ch in sorted({ch for ch, _ in counts}) for e in CHAPTERS[ch] if (ch, e.name) in counts]
    top = mistakes[:10]
    heights = [0.4 * max(2, len(keys)) + 0.8] + ([0.4 * len(top) + 0.6] if top else [])
    fig, axes = plt.subplots(len(heights), 1, figsize=(9, sum(heights) + 0.4), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    ax = axes[0, 0]
    left = [0] * len(keys)
    for status in STATUSES:
        values = [counts[k][status] for k in keys]
        if any(values):
            ax.barh([f"{ch} {name}" for ch, name in keys], values, left=left, color=COLOURS[status], label=status)
            left = [a + b for a, b in zip(left, values, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("students")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(STATUSES), fontsize=8, frameon=False)
    if top:
        ax = axes[1, 0]
        ax.barh([f"{m.chapter} {m.exercise}: {m.mistake_id}" for m in top], [len(m.students) for m in top],
                color=COLOURS["failed"])
        ax.invert_yaxis()
        ax.set_xlabel("students who made the mistake")
        ax.set_title("named mistakes, the most common first", fontsize=9)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
