"""`python -m imagen_tutorial grade`: a pretend class, built from the student copies, graded once (small notebooks:
each chapter's imports, exercise cells and check cells), and what the teacher gets."""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from pathlib import Path

import pytest

from imagen_tutorial import checks
from imagen_tutorial.__main__ import main
from imagen_tutorial.checks import Verdict
from imagen_tutorial.grading import (
    GradingError,
    chapter_seconds,
    find_submissions,
    grade_class,
    stuck_row,
    stuck_rows,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from class_fixtures import add_cell, answered, save, solve, student_copy, teacher_copy  # noqa: E402

TICK = 'print("✅ attention: matches the reference on 3 cases")'
REDEFINED = "checks.check_attention = lambda fn: fn\n\ndef check_attention(fn):\n    return fn"


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Chapter 01's student copy untouched, and four small chapter-01 notebooks, graded two at a time: (results by
    student, the output folder)."""
    folder = tmp_path_factory.mktemp("class")
    save(answered("01", "sss", small_copy=True), folder / "alice_01.ipynb")
    save(student_copy("01"), folder / "frank" / "01_self_attention (1).ipynb")  # the whole copy, untouched
    carol = add_cell(add_cell(answered("01", "wsb", small_copy=True), TICK, after="my_attention"), REDEFINED,
                     after="my_attention")
    save(carol, folder / "carol_01.ipynb")
    dave = solve(answered("01", "sbs", small_copy=True), "01", "my_causal_mask", "while True:\n    pass")
    save(add_cell(dave, "while True:\n    pass", after="my_attention"), folder / "dave_01.ipynb")
    save(add_cell(answered("01", "sws", small_copy=True), "import os\nos._exit(1)", after="my_attention"),
         folder / "erin_01.ipynb")
    out = tmp_path_factory.mktemp("graded") / "out"
    results = grade_class([folder], out, jobs=2, cell_timeout=6, check_timeout=6, progress=False)
    return {r.submission.student: r for r in results}, out


def statuses(result) -> list[str]:
    return [result.verdicts[e.name].status for e in checks.CHAPTERS["01"]]


def test_correct_answers_pass(graded):
    assert statuses(graded[0]["alice"]) == ["passed"] * 3


def test_a_wrong_answer_fails_with_its_named_mistake(graded):
    verdict = graded[0]["carol"].verdicts["attention"]
    assert (verdict.status, verdict.mistake_id) == ("failed", "no-sqrt-d-scale")
    assert "the √d scale is missing" in verdict.message


def test_an_untouched_student_copy_is_not_attempted_everywhere(graded):
    assert statuses(graded[0]["frank"]) == ["not attempted"] * 3


def test_a_printed_tick_and_a_redefined_check_do_not_change_the_grade(graded):
    assert statuses(graded[0]["carol"]) == ["failed", "passed", "not attempted"]


def test_an_endless_loop_is_timed_out_and_the_other_exercises_are_still_graded(graded):
    dave = graded[0]["dave"]
    assert statuses(dave) == ["passed", "timed out", "passed"]
    assert any(re.fullmatch(r"cell \d+ timed out after 6 s and was interrupted", e) for e in dave.events)


def test_os_exit_kills_the_kernel_and_grading_goes_on_without_that_cell(graded):
    erin = graded[0]["erin"]
    assert statuses(erin) == ["passed", "failed", "passed"]
    assert erin.verdicts["causal_mask"].mistake_id == "mask-transposed"
    assert any(e.startswith("the kernel died at cell") for e in erin.events)
    assert any("without cell" in e for e in erin.events)


def test_the_csv_has_a_row_per_submission_and_a_column_per_exercise(graded):
    results, out = graded
    with (out / "grades.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:6] == ["student", "chapter", "file", "attention", "causal_mask", "split_heads"]
    assert list(rows[0])[6:] == ["passed", "exercises", "notes"]
    by_student = {row["student"]: row for row in rows}
    assert sorted(by_student) == sorted(results)
    assert [by_student["dave"][e] for e in ("attention", "causal_mask", "split_heads", "passed")] == \
        ["passed", "timed out", "passed", "2"]


def test_the_summary_counts_match_the_fixtures(graded):
    summary = (graded[1] / "summary.md").read_text()
    assert "| attention | 3 | 1 | 1 | 0 | 0 | 0 |" in summary  # alice, dave, erin · carol · frank
    assert "| causal_mask | 2 | 1 | 1 | 0 | 0 | 1 |" in summary
    assert "1. **attention: `no-sqrt-d-scale`** — 1 student(s) (carol)" in summary
    assert (graded[1] / "summary.png").stat().st_size > 1000


def test_feedback_gives_each_exercise_its_verdict_and_what_to_do(graded):
    feedback = (graded[1] / "feedback" / "carol_01.md").read_text()
    assert "## ❌ attention (`my_attention`): failed" in feedback
    assert "Named mistake: `no-sqrt-d-scale`." in feedback
    assert "When a student is stuck (`the output looks like <mistake>`" in feedback
    assert "When a student is stuck (`➖ … not attempted`)" in feedback


# ---------------------------------------------------------------- what students hand in, found without a kernel
def test_broken_json_a_teacher_copy_another_chapter_and_an_empty_folder_are_told_apart(tmp_path):
    (tmp_path / "walter_09.ipynb").write_text(json.dumps(student_copy("09"))[:3000])
    save(teacher_copy("04"), tmp_path / "victor_04.ipynb")
    save(answered("09", "bbb", small_copy=True), tmp_path / "yvonne_04.ipynb")
    (tmp_path / "zoe").mkdir()
    found = {s.student: s for s in find_submissions([tmp_path])}
    assert found["walter"].problem.startswith("not a notebook: the file is not valid JSON")
    assert found["victor"].problem.startswith("a teacher copy")
    assert (found["yvonne"].chapter, found["yvonne"].problem) == ("09", None)
    assert found["yvonne"].note == "the file name says chapter 04, but the notebook is chapter 09"
    assert found["zoe"].problem == "an empty folder: no notebook handed in"


def test_the_chapter_comes_from_the_cells_when_the_metadata_is_gone(tmp_path):
    notebook = answered("04", "sbb", small_copy=True)
    notebook["metadata"].pop("imagen_tutorial")
    (found,) = find_submissions([save(notebook, tmp_path / "homework.ipynb")])
    assert found.chapter == "04" and found.problem is None


def test_students_are_named_as_their_files_and_folders_name_them(tmp_path):
    notebook = answered("01", "bbb", small_copy=True)
    paths = ["alice_01.ipynb", "bob/01_self_attention (1).ipynb",
             "carol+ps1+2024-05-01 10 00 00 UTC/01_self_attention.ipynb",  # nbgrader's exchange
             "Dave Jones_123_assignsubmission_file_dave_01.ipynb"]  # a Moodle download
    for path in paths:
        save(notebook, tmp_path / path)
    assert sorted(s.student for s in find_submissions([tmp_path])) == ["Dave Jones", "alice", "bob", "carol"]


def test_the_same_student_twice_grades_the_newer_copy(tmp_path):
    old = save(answered("01", "bbb", small_copy=True), tmp_path / "alice_01.ipynb")
    new = save(answered("01", "sbb", small_copy=True), tmp_path / "alice" / "01_self_attention.ipynb")
    os.utime(old, (1_000_000, 1_000_000))
    found = {s.path: s for s in find_submissions([tmp_path])}
    assert found[new].problem is None
    assert found[old].problem == f"a second copy of alice's chapter 01: graded the newer {new}"


def test_grading_refuses_an_output_folder_that_holds_earlier_results(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "grades.csv").write_text("student\n")
    with pytest.raises(GradingError, match="not an empty folder"):
        grade_class([tmp_path], tmp_path / "out")


def test_a_folder_without_notebooks_is_nothing_to_grade(tmp_path):
    (tmp_path / "class" / "zoe").mkdir(parents=True)
    with pytest.raises(GradingError, match="no notebooks"):
        grade_class([tmp_path / "class"], tmp_path / "out")


def test_the_command_says_in_one_line_when_a_path_does_not_exist(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


# ---------------------------------------------------------------- the checks and TEACHING.md the grader relies on
def test_every_chapter_lists_the_exercises_its_notebook_checks():
    for chapter, exercises in checks.CHAPTERS.items():
        (path,) = (ROOT / "chapters").glob(f"{chapter}_*.ipynb")
        cells = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        called = [m.groups() for c in cells for m in re.finditer(r"^(\w+) = checks\.(check_\w+)\((\w+)\)", c, re.M)]
        assert [(e.learner, e.check.__name__, e.learner) for e in exercises] == called, chapter


def test_every_check_records_a_verdict_under_its_exercise_name(capsys):
    for exercises in checks.CHAPTERS.values():
        for exercise in exercises:
            exercise.check(None)
            assert checks.last_verdict(exercise.name) == Verdict(exercise.name, "not attempted", "not attempted")


def test_teaching_gives_every_chapter_a_run_time():
    assert sorted(chapter_seconds()) == sorted(checks.CHAPTERS)


@pytest.mark.parametrize("status, message, cause", [
    ("crashed", "raised IndexError: index 3 is out of bounds", "the student's code crashed"),
    ("failed", "it writes into its input `x` (the caller's tensor changes …)", "changes its argument in place"),
    ("timed out", "its check did not finish within 60 s (an endless loop?)", "endless loop"),
    ("crashed", "the kernel died while its check ran (os._exit …)", "os._exit"),
    ("missing", "no my_attention in the notebook: its exercise cell was deleted", "deleted"),
])
def test_each_kind_of_verdict_finds_its_row_of_when_a_student_is_stuck(status, message, cause):
    row = stuck_row(Verdict("attention", status, message), stuck_rows())
    assert row is not None and cause in row[1]
