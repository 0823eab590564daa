"""The flake run's bookkeeping: a check whose outcome differs between runs is listed, a steady one is not."""

from workbook import catalogue
from workbook.flakes import Changes, Subject
from workbook.runner import StepResult


def result(outcomes: dict[str, str], broken: str = "") -> StepResult:
    step = catalogue.step("1")
    tests = [{"nodeid": nodeid, "task": 1, "outcome": outcome, "message": f"said {outcome}"}
             for nodeid, outcome in outcomes.items()]  # fmt: skip
    return StepResult(step, "solutions", 0, {"broken": broken, "tasks": {}, "tests": tests})


def test_a_check_that_passes_once_and_fails_once_is_listed_with_what_each_said():
    changes = Changes(Subject(catalogue.step("1"), "mistake x", "copy"))
    changes.add(result({"a": "passed", "b": "failed"}))
    changes.add(result({"a": "failed", "b": "failed"}))
    (found,) = changes.changed()
    assert found.startswith("mistake x: a: ") and "passed 1x" in found and "failed 1x" in found
    assert "said failed" in found and "said passed" in found


def test_a_suite_that_timed_out_once_or_lost_a_check_is_listed():
    changes = Changes(Subject(catalogue.step("1"), "solution", "solutions"))
    changes.add(result({"a": "passed"}))
    changes.add(result({}, broken="did not finish within 300s"))
    listed = changes.changed()
    assert any("(the whole suite)" in line and "broken" in line for line in listed)
    assert any(line.startswith("solution: a: passed 1x, absent 1x") for line in listed)


def test_steady_verdicts_are_not_listed():
    changes = Changes(Subject(catalogue.step("1"), "starter", "steps"))
    for _ in range(3):
        changes.add(result({"a": "failed", "b": "passed"}))
    assert changes.changed() == []
