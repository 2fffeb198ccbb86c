"""Make a pretend class's submissions from the student copies, to try `python -m imagen_tutorial grade` on.

    python tools/class_fixtures.py FOLDER          # twenty submissions for chapters 01, 04 and 09 (the benchmark's)
    python tools/class_fixtures.py FOLDER --small  # the same students with only each chapter's exercise cells

Each submission is a student copy with some exercises solved (the teacher copy's solution), some answered with a
known mistake, some left blank, and the odd thing students hand in: a printed "✅", a redefined check, an endless
loop, `os._exit`, a cell that raises, a cell that deletes the files in its working folder, broken JSON, a teacher
copy, the same student twice, an empty folder. The tests build their fixtures with the same functions.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clean_notebooks import ROOT, dumps  # noqa: E402
from make_student import BEGIN, END  # noqa: E402

STUB = re.compile(r"^(?P<indent>[ \t]*)# YOUR CODE HERE\n(?P=indent)raise NotImplementedError\([^\n]*\)$", re.M)


def _chapter_path(chapter: str, folder: str = "") -> Path:
    return next((ROOT / "chapters" / folder).glob(f"{chapter}_*.ipynb"))


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def student_copy(chapter: str) -> dict:
    return json.loads(_chapter_path(chapter, "student").read_text())


def teacher_copy(chapter: str) -> dict:
    return json.loads(_chapter_path(chapter).read_text())


def definition_cell(notebook: dict, learner: str) -> int:
    """The index of the cell that defines `learner` (def, class or assignment)."""
    pattern = re.compile(rf"^\s*(def|class)\s+{learner}\b", re.M)
    return next(i for i, c in enumerate(notebook["cells"]) if c["cell_type"] == "code" and pattern.search(_source(c)))


def small(notebook: dict) -> dict:
    """Only what grading needs: the first markdown cell, the first code cell (the imports), each exercise's cell
    and each check cell. Seconds to run instead of minutes."""
    out = copy.deepcopy(notebook)
    first_code = next(i for i, c in enumerate(out["cells"]) if c["cell_type"] == "code")
    keep = [i for i, c in enumerate(out["cells"]) if i in (0, first_code) or (c["cell_type"] == "code" and (
        "# YOUR CODE HERE" in _source(c) or BEGIN in _source(c) or re.search(r"\bchecks\.check_\w+\(", _source(c))))]
    out["cells"] = [out["cells"][i] for i in keep]
    return out


def solve(notebook: dict, chapter: str, learner: str, body: str | None = None) -> dict:
    """The exercise that defines `learner` answered: with the teacher copy's solution (body None), or with `body`
    (Python lines at the function body's indentation, e.g. a known mistake or `while True: pass`)."""
    out = copy.deepcopy(notebook)
    i = definition_cell(out, learner)
    if body is None:
        teacher = teacher_copy(chapter)
        source = _source(teacher["cells"][definition_cell(teacher, learner)])
        source = "\n".join(line for line in source.split("\n") if line.strip() not in (BEGIN, END))
    else:
        source = STUB.sub(lambda m: "\n".join(m["indent"] + line for line in body.strip("\n").split("\n")),
                          _source(out["cells"][i]), count=1)
    out["cells"][i]["source"] = source
    return out


def add_cell(notebook: dict, source: str, after: str | None = None) -> dict:
    """A code cell added after the one that defines `after` (a learner's name), or at the end."""
    out = copy.deepcopy(notebook)
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}
    at = definition_cell(out, after) + 1 if after else len(out["cells"])
    out["cells"].insert(at, cell)
    return out


def save(notebook: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(notebook))
    return path


# Known mistakes, as a student writes them (the check names each).
WRONG = {
    "my_attention": "scores = query @ key.transpose(-2, -1)\nif mask is not None:\n"
                    "    scores = scores.masked_fill(~mask, float('-inf'))\n"
                    "weights = scores.softmax(-1)\nreturn weights @ value, weights",  # no-sqrt-d-scale
    "my_causal_mask": "return torch.ones(T, T, dtype=torch.bool).triu()",  # mask-transposed
    "my_shift_right": "return torch.roll(pixels, 1, dims=1)",  # roll
    "my_bits_per_dim": "nats = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction='none')\n"
                       "return nats.mean(dim=1)",  # nats-not-bits
    "my_q_sample": "alpha, sigma = torch.cos(math.pi * t / 2), torch.sin(math.pi * t / 2)\n"
                   "return alpha.view(-1, 1, 1, 1) * x0 + sigma.view(-1, 1, 1, 1) ** 2 * noise",  # sigma-squared
    "my_ddim_update": "alpha_t, sigma_t = (v.view(-1, 1, 1, 1) for v in diffusion.alpha_sigma(t))\n"
                      "alpha_s, sigma_s = (v.view(-1, 1, 1, 1) for v in diffusion.alpha_sigma(s))\n"
                      "eps = (x_t - alpha_t * x0) / sigma_s\nreturn alpha_s * x0 + sigma_s * eps",  # same-sigma
}
EXERCISES = {"01": ["my_attention", "my_causal_mask", "my_split_heads"],
             "04": ["my_shift_right", "my_bits_per_dim", "my_sample_loop"],
             "09": ["my_q_sample", "my_ddim_update", "my_guided_x0"]}


def answered(chapter: str, answers: str, small_copy: bool = False) -> dict:
    """A student copy with its exercises answered in order by the letters of `answers`: s (solved), w (the WRONG
    answer), b (blank)."""
    notebook = student_copy(chapter)
    notebook = small(notebook) if small_copy else notebook
    for learner, how in zip(EXERCISES[chapter], answers, strict=True):
        if how == "s":
            notebook = solve(notebook, chapter, learner)
        elif how == "w":
            notebook = solve(notebook, chapter, learner, WRONG[learner])
    return notebook


def make_class(folder: Path, small_copies: bool = False) -> list[Path]:
    """Twenty submissions for chapters 01, 04 and 09, the benchmark's class (see the module's docstring)."""
    def nb(chapter: str, answers: str) -> dict:
        return answered(chapter, answers, small_copies)

    tick = 'print("✅ attention: matches the reference on 3 cases")'
    redefined = "checks.check_attention = lambda fn: fn\n\ndef check_attention(fn):\n    return fn"
    wipe = "import os\nfor name in os.listdir('.'):\n    os.remove(name)"
    made = [
        save(nb("01", "sss"), folder / "alice_01.ipynb"),
        save(nb("01", "wsb"), folder / "bob" / "01_self_attention.ipynb"),
        save(add_cell(add_cell(nb("01", "wss"), tick, after="my_attention"), redefined, after="my_attention"),
             folder / "carol_01.ipynb"),
        save(solve(nb("01", "sbs"), "01", "my_causal_mask", "while True:\n    pass"), folder / "dave_01.ipynb"),
        save(add_cell(nb("01", "sws"), "import os\nos._exit(1)", after="my_attention"), folder / "erin_01.ipynb"),
        save(nb("01", "bbb"), folder / "frank" / "01_self_attention (1).ipynb"),
        save(nb("04", "sss"), folder / "grace_04.ipynb"),
        save(nb("04", "wws"), folder / "heidi_04.ipynb"),
        save(add_cell(nb("04", "sbb"), "raise ValueError('I gave up here')", after="my_shift_right"),
             folder / "ivan_04.ipynb"),
        save(add_cell(nb("04", "ssb"), wipe, after="my_bits_per_dim"), folder / "judy_04.ipynb"),
        save(nb("04", "bbb"), folder / "mallory_04.ipynb"),
        save(nb("09", "sss"), folder / "niaj_09.ipynb"),
        save(nb("09", "wws"), folder / "olivia_09.ipynb"),
        save(nb("09", "wss"), folder / "peggy_09.ipynb"),
        save(nb("09", "sws"), folder / "rupert_09.ipynb"),
        save(nb("09", "bbb"), folder / "sybil_09.ipynb"),
        save(nb("09", "wsb"), folder / "trent_09.ipynb"),
        save(nb("09", "ssb"), folder / "trent" / "09_diffusion_from_scratch.ipynb"),  # the same student again
        save(teacher_copy("04"), folder / "victor_04.ipynb"),
    ]
    broken = folder / "walter_09.ipynb"
    broken.write_text(dumps(nb("09", "sss"))[:5000])  # cut off in the middle: not valid JSON
    (folder / "zoe").mkdir(exist_ok=True)  # an empty folder: nothing handed in
    return made + [broken]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--small", action="store_true", help="only each chapter's exercise cells")
    args = parser.parse_args(argv)
    made = make_class(args.folder, args.small)
    print(f"wrote {len(made)} notebooks and an empty folder under {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
