"""Student copies: no solution survives, the stubs parse, and the committed copies are up to date."""

import ast
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import make_student  # noqa: E402

TEACHER = '''def my_fn(x):
    """Doubles x."""
    ### BEGIN SOLUTION
    y = x * 2
    return y
    ### END SOLUTION
'''


def test_solution_region_becomes_a_stub_at_the_same_indentation():
    source, removed = make_student.blank_solutions(TEACHER, "Exercise 3", "cell")
    assert removed == ["    y = x * 2", "    return y"]
    assert '    raise NotImplementedError("Exercise 3: write my_fn")' in source
    assert "y = x * 2" not in source and "BEGIN SOLUTION" not in source
    namespace = {}
    exec(source, namespace)
    with pytest.raises(NotImplementedError, match="Exercise 3: write my_fn"):
        namespace["my_fn"](1)


@pytest.mark.parametrize("source, message", [
    ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n", "must be inside a function"),
    ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", "without '### END SOLUTION'"),
    ("def f():\n    return 1\n    ### END SOLUTION\n", "without '### BEGIN SOLUTION'"),
])
def test_malformed_regions_are_refused(source, message):
    with pytest.raises(ValueError, match=message):
        make_student.blank_solutions(source, "Exercise 1", "cell 4")


def _code(notebook):
    return [c for c in notebook["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("chapter", make_student.chapters(), ids=lambda p: p.stem)
def test_no_solution_survives_and_stubs_parse(chapter):
    teacher = json.loads(chapter.read_text())
    student = make_student.student_notebook(teacher, chapter.name)
    regions = 0
    for t_cell, s_cell in zip(_code(teacher), _code(student), strict=True):
        t_src, s_src = "".join(t_cell["source"]), "".join(s_cell["source"])
        if make_student.BEGIN in t_src:
            regions += 1
            _, removed = make_student.blank_solutions(t_src, "Exercise", "cell")
            survivors = [line for line in removed if len(line.strip()) > 12 and line.strip() in s_src]
            assert not survivors, f"solution lines left in {chapter.name}: {survivors}"
        assert make_student.BEGIN not in s_src and not s_cell["outputs"]
        ast.parse("\n".join(line for line in s_src.splitlines() if not line.lstrip().startswith(("%", "!"))))
    assert regions >= 2, f"{chapter.name} has fewer than two exercises"


def test_committed_student_copies_are_up_to_date():
    assert make_student.main(["--check"]) == 0, "run `make student` and commit chapters/student/"


def test_a_method_stub_names_its_class():
    source = ("class MyBlock:\n    def forward(self, x):\n"
              "        ### BEGIN SOLUTION\n        return x\n        ### END SOLUTION\n")
    stub, _ = make_student.blank_solutions(source, "Exercise 3", "cell")
    assert 'raise NotImplementedError("Exercise 3: write MyBlock.forward")' in stub
