"""Checks that every step still teaches: each task fails on its starter, every test passes on the solution,
and steps/ is exactly what the generator makes from solutions/."""

from __future__ import annotations

from collections.abc import Sequence

from . import catalogue, starter
from .runner import StepResult, run_many


def _cell(result: StepResult, task: int) -> str:
    passed, total = result.task_counts(task)
    if result.broken:
        return "cannot run"
    return f"{passed}/{total} pass"


def check(steps: Sequence[catalogue.Step] | None = None, workers: int = 2) -> list[str]:
    """Run the matrix, print it, and return the problems found (empty: all good)."""
    steps = list(steps or catalogue.steps())
    problems: list[str] = []

    build = starter.plan()
    problems += [
        f"steps/ is out of date: {path} differs from what `nox -s build` makes" for path in build.changes
    ]
    problems += [f"{label} has no marked region in its solution" for label in build.unmarked_tasks]
    if build.manifest_stale:
        problems.append(f"steps/{starter.MANIFEST} does not match the generated starters: run `nox -s build`")

    jobs = [(step, target) for step in steps for target in ("steps", "solutions")]
    results = run_many(jobs, workers=workers)
    by_job = {(r.step.number, r.target): r for r in results}

    verdicts = {"ok": 0, "PROBLEM": 0}
    print(f"\n{'step':<6}{'task':<6}{'starter':<16}{'solution':<16}verdict")
    for step in steps:
        start, solution = by_job[(step.number, "steps")], by_job[(step.number, "solutions")]
        if solution.returncode != 0:
            problems.append(f"step {step.number}: the solution's suite exited {solution.returncode}:\n"
                            + solution.output[-3000:])  # fmt: skip
        for task in step.tasks:
            start_passed, start_total = start.task_counts(task.number)
            teaches = start.broken == "" and start_total > 0 and start_passed < start_total
            solved = solution.task_done(task.number)
            verdict = "ok" if teaches and solved else "PROBLEM"
            verdicts[verdict] += 1
            print(f"{step.number:<6}{task.number:<6}{_cell(start, task.number):<16}"
                  f"{_cell(solution, task.number):<16}{verdict}")  # fmt: skip
            if not teaches:
                problems.append(f"{task.label}: no test fails on the starter, so the task teaches nothing")
            if not solved:
                problems.append(f"{task.label}: the solution does not pass every test")
    # A closing line in the one format CI reads from any runner: tasks whose check held, tasks whose did not.
    print(f"integrity: {verdicts['ok']} passed, {verdicts['PROBLEM']} failed")
    return problems
