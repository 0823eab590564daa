"""The one scoring model: no points for checks the starter already passes, a penalty for breaking them."""

from __future__ import annotations

import re
import shutil
from fractions import Fraction

from tests.workbook.conftest import run_workbook
from workbook import catalogue, scoring
from workbook.grading import scores
from workbook.runner import run_step
from workbook.scoring import check_name
from workbook.starter import strip_markers_into

TASK = catalogue.step(1).task(2)  # 3 points


def baseline(tmp_path, passes: list[str]):
    path = tmp_path / "baseline.json"
    scoring.write_baseline({(TASK.step, TASK.number): scoring.TaskRecord(3, frozenset(passes))}, path)
    return path


def test_checks_that_pass_on_the_starter_earn_nothing(tmp_path):
    path = baseline(tmp_path, ["free"])
    assert scoring.task_points(TASK, [("free", True), ("a", False), ("b", False)], path) == 0
    assert scoring.task_points(TASK, [("free", True), ("a", True), ("b", False)], path) == Fraction(3, 2)
    assert scoring.task_points(TASK, [("free", True), ("a", True), ("b", True)], path) == 3


def test_breaking_a_starter_check_costs_credit_never_below_zero(tmp_path):
    path = baseline(tmp_path, ["free"])
    assert scoring.task_points(TASK, [("free", False), ("a", True), ("b", True)], path) == Fraction(3, 2)
    assert scoring.task_points(TASK, [("free", False), ("a", False), ("b", False)], path) == 0


def test_without_a_baseline_every_check_earns(tmp_path):
    path = tmp_path / "missing.json"
    assert scoring.task_points(TASK, [("a", True), ("b", False)], path) == Fraction(3, 2)


def test_the_recorded_baseline_covers_every_task():
    for step in catalogue.steps():
        for task in step.tasks:
            assert scoring.record(task).checks > 0, f"{task.label} has no record in tests/baseline.json"


def test_format():
    assert [scoring.format_points(x) for x in (Fraction(8), Fraction(5, 2), Fraction(8, 3), Fraction(0))] == [
        "8", "2.5", "2.67", "0",
    ]  # fmt: skip


# --- the same points wherever they are shown --------------------------------------------------------------

# Step 1 finished, plus a catch-all route: /nothing-here answers 200, which breaks the one check that the
# starter already passes (test_other_paths_are_not_found, task 2). Tasks 1 and 3 earn their 3 and 2 points;
# task 2 has two earning checks, both passed, minus one for the broken starter check: 3 * (2 - 1) / 2.
CATCH_ALL = '\napp.router.add_get("/{tail:.+}", index)\n'
EXPECTED = Fraction(3) + Fraction(3, 2) + Fraction(2)


def points_printed(output: str, step: catalogue.Step) -> str:
    """The '6.5/8 points' line that `nox -s stepN` prints under the tasks, as text ('6.5')."""
    found = re.findall(rf"^\s+(\S+)/{step.points} points$", output, flags=re.MULTILINE)
    assert len(found) == 1, output
    return found[0]


def test_step_status_and_grader_show_the_same_points(workbook_copy):
    """One tree, one run: `nox -s step1`, `nox -s status` and the grader give the same partial credit, in
    which a broken starter check costs what the scoring model says."""
    step = catalogue.step(1)
    tree = step.tree(workbook_copy, "steps")
    shutil.rmtree(tree)
    strip_markers_into(workbook_copy / "solutions" / step.name, tree, step.number)
    main = tree / catalogue.PACKAGE / "main.py"
    main.write_text(main.read_text().replace("\n\ndef main(", CATCH_ALL + "\n\ndef main(", 1))
    result = run_step(step, "steps", root=workbook_copy, env={"PYTHONPATH": str(workbook_copy)})
    outcomes = {check_name(t["nodeid"]): t["outcome"] for t in result.report.get("tests", [])}
    assert outcomes.get("test_other_paths_are_not_found") == "failed", result.output
    shown = scoring.format_points(EXPECTED)
    assert points_printed(result.output, step) == shown  # nox -s step1
    assert result.points == EXPECTED  # status and `solutions` score a StepResult
    completed = scores.Completed(result.returncode, result.output, len(result.output), False, False, 1.0)
    assert scores.score_step(step, completed, result.report, ([], "")).earned == EXPECTED
    status = run_workbook(workbook_copy, "status")
    lines = {line.split()[0]: line for line in status.stdout.splitlines() if line[:1].isdigit()}
    assert f" {shown}/{step.points} " in lines["1"], status.stdout
    for other in catalogue.steps()[1:]:  # untouched starters: nothing earned
        assert f" 0/{other.points} " in lines[str(other.number)], status.stdout


def test_an_untouched_starter_earns_nothing_where_points_are_shown():
    """The starter of step 1 passes one check (a path with no route answers 404); it still scores 0."""
    step = catalogue.step(1)
    result = run_step(step, "steps")
    passed = [check_name(t["nodeid"]) for t in result.report["tests"] if t["outcome"] == "passed"]
    assert passed == ["test_other_paths_are_not_found"], result.output  # the baseline's one free check
    assert points_printed(result.output, step) == "0" and result.points == 0
    completed = scores.Completed(result.returncode, result.output, len(result.output), False, False, 1.0)
    assert scores.score_step(step, completed, result.report, ([], "")).earned == 0
