"""The one scoring model: no points for checks the starter already passes, a penalty for breaking them."""

from __future__ import annotations

from fractions import Fraction

from workbook import catalogue, scoring

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
