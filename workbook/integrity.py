"""Checks that every step still teaches: each task fails on its starter, every test passes on the solution,
every known mistake fails its task with its phrase, no task loses a check, and steps/ is exactly what
the generator makes from solutions/."""

from __future__ import annotations

from collections.abc import Sequence

from . import catalogue, mistakes, starter
from .runner import StepResult, run_many

MISTAKES_PER_TASK = 2


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
    print(f"\n{'step':<6}{'task':<6}{'checks':<8}{'starter':<16}{'solution':<16}verdict")
    for step in steps:
        start, solution = by_job[(step.number, "steps")], by_job[(step.number, "solutions")]
        if solution.returncode != 0:
            problems.append(f"step {step.number}: the solution's suite exited {solution.returncode}:\n"
                            + solution.output[-3000:])  # fmt: skip
        for task in step.tasks:
            start_passed, start_total = start.task_counts(task.number)
            teaches = start.broken == "" and start_total > 0 and start_passed < start_total
            solved = solution.task_done(task.number)
            checks = solution.task_counts(task.number)[1]
            kept = checks >= task.checks
            verdict = "ok" if teaches and solved and kept else "PROBLEM"
            verdicts[verdict] += 1
            print(f"{step.number:<6}{task.number:<6}{checks:<8}{_cell(start, task.number):<16}"
                  f"{_cell(solution, task.number):<16}{verdict}")  # fmt: skip
            if not kept:
                problems.append(
                    f"{task.label}: {checks} checks, fewer than the {task.checks} in catalogue.toml"
                )
            if not teaches:
                problems.append(f"{task.label}: no test fails on the starter, so the task teaches nothing")
            if not solved:
                problems.append(f"{task.label}: the solution does not pass every test")
    try:
        known = mistakes.load(steps)
    except mistakes.MistakeError as exc:
        problems.append(str(exc))
        known = []
    per_task = {(task.step, task.number): 0 for step in steps for task in step.tasks}
    print(f"\n{'step':<6}{'task':<6}{'mistake':<40}verdict")
    for verdict in mistakes.check_all(known, workers=workers):
        mistake = verdict.mistake
        per_task[(mistake.step.number, mistake.task)] += verdict.caught
        verdicts["ok" if verdict.caught else "PROBLEM"] += 1
        print(f"{mistake.step.number:<6}{mistake.task:<6}{mistake.name:<40}"
              f"{'caught' if verdict.caught else 'PROBLEM'}: {verdict.detail.splitlines()[0]}")  # fmt: skip
        if not verdict.caught:
            problems.append(
                f"mistake {mistake.step.name}/{mistake.name} (task {mistake.task}): {verdict.detail}"
            )
    problems += [
        f"step {step_number}, task {task_number}: {count} known mistake(s) caught, at least 2 wanted"
        for (step_number, task_number), count in per_task.items()
        if count < MISTAKES_PER_TASK
    ]
    # A closing line in the one format CI reads from any runner: checks that held, checks that did not.
    print(f"integrity: {verdicts['ok']} passed, {verdicts['PROBLEM']} failed")
    return problems
