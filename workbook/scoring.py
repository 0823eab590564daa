"""The one scoring model: points for the checks a learner's work made pass, never for the starter's.

Some checks pass on an untouched starter (a route that does not exist yet answers 404, as it should).
Paying for them would give points for no work, so each task's points are shared among its *earning*
checks, the ones that fail on the starter. A check that passed on the starter still matters: a learner
whose change breaks it loses the credit of one earning check for it.

Which checks pass on each starter is recorded in tests/baseline.json, with the number of checks of every
task (a floor: a task may gain checks, never lose one). `nox -s integrity` verifies both against a real
run of every starter and `nox -s integrity -- --record` rewrites the file after a deliberate change.
`nox -s stepN`, `nox -s status`, integrity and the grader all score with `task_points`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

from . import catalogue

BASELINE_FILE = catalogue.ROOT / "tests" / "baseline.json"


@dataclass(frozen=True)
class TaskRecord:
    """What is known of a task's suite: how many checks it has at least, which pass on the starter."""

    checks: int = 0
    starter_passes: frozenset[str] = frozenset()


def check_name(nodeid: str) -> str:
    """'tests/step1/test_x.py::test_y[case]' -> 'test_y[case]': how checks are named in the baseline."""
    return nodeid.split("::")[-1]


@cache
def _records(path: Path) -> dict[tuple[int, int], TaskRecord]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    records = {}
    for step, tasks in data.items():
        for task, entry in tasks.items():
            records[(int(step), int(task))] = TaskRecord(
                int(entry["checks"]), frozenset(entry["starter_passes"])
            )
    return records


def record(task: catalogue.Task, path: Path = BASELINE_FILE) -> TaskRecord:
    return _records(path).get((task.step, task.number), TaskRecord())


def task_points(
    task: catalogue.Task, outcomes: Iterable[tuple[str, bool]], path: Path = BASELINE_FILE
) -> Fraction:
    """Points earned on `task` from (check name, passed) pairs: earning checks passed, minus baseline
    checks broken, as a share of the earning checks; never below zero."""
    baseline = record(task, path).starter_passes
    outcomes = list(outcomes)
    earning = [passed for name, passed in outcomes if name not in baseline]
    broken = sum(not passed for name, passed in outcomes if name in baseline)
    if not earning:
        return Fraction(0)
    return Fraction(task.points) * max(0, sum(earning) - broken) / len(earning)


def step_points(
    step: catalogue.Step, tests: Iterable[dict[str, Any]], path: Path = BASELINE_FILE
) -> Fraction:
    """The step's points from a per-task report's tests ({'nodeid', 'task', 'outcome'})."""
    by_task: dict[int, list[tuple[str, bool]]] = {task.number: [] for task in step.tasks}
    for test in tests:
        if isinstance(test, dict) and test.get("task") in by_task:
            by_task[test["task"]].append(
                (check_name(str(test.get("nodeid", ""))), test.get("outcome") == "passed")
            )
    return sum((task_points(task, by_task[task.number], path) for task in step.tasks), Fraction(0))


def format_points(value: Fraction | float) -> str:
    """8, 2.5, 2.67: at most two decimals, no trailing zeros, the same text for the same score."""
    return f"{float(value):.2f}".rstrip("0").rstrip(".")


def write_baseline(entries: dict[tuple[int, int], TaskRecord], path: Path = BASELINE_FILE) -> None:
    """Rewrite the baseline file (integrity --record), sorted so that diffs stay small."""
    steps: dict[int, list[str]] = {}
    for (step, task), entry in sorted(entries.items()):
        line = json.dumps({"checks": entry.checks, "starter_passes": sorted(entry.starter_passes)})
        steps.setdefault(step, []).append(f'    "{task}": {line}')
    # One line per task: a diff shows exactly which task's record moved.
    blocks = [f'  "{step}": {{\n' + ",\n".join(lines) + "\n  }" for step, lines in steps.items()]
    path.write_text("{\n" + ",\n".join(blocks) + "\n}\n")
    _records.cache_clear()
