"""Checks that every step still teaches: each task fails on its starter, every test passes on the solution,
every known mistake fails its task and the first message of its step says its phrase (mistakes.py), no
task loses a check, the checks that pass on the starters are the recorded ones, and steps/ is exactly what
the generator makes from solutions/."""

from __future__ import annotations

from collections.abc import Sequence

from . import catalogue, mistakes, scoring, starter
from .runner import StepResult, run_many

MISTAKES_PER_TASK = 2
BASELINE = scoring.BASELINE_FILE.relative_to(catalogue.ROOT)


def _cell(result: StepResult, task: int) -> str:
    passed, total = result.task_counts(task)
    if result.broken:
        return "cannot run"
    return f"{passed}/{total} pass"


def starter_passes(result: StepResult, task: int) -> frozenset[str]:
    """Names of the task's checks that pass on the untouched starter: they earn nothing (scoring.py)."""
    return frozenset(
        scoring.check_name(str(t.get("nodeid", "")))
        for t in result.report.get("tests", [])
        if t.get("task") == task and t.get("outcome") == "passed"
    )


def _generated_problems() -> list[str]:
    build = starter.plan()
    problems = [
        f"steps/ is out of date: {path} differs from what `nox -s build` makes" for path in build.changes
    ]
    problems += [f"{label} has no marked region in its solution" for label in build.unmarked_tasks]
    if build.manifest_stale:
        problems.append(f"steps/{starter.MANIFEST} does not match the generated starters: run `nox -s build`")
    return problems


def check(steps: Sequence[catalogue.Step] | None = None, workers: int = 2, record: bool = False) -> list[str]:
    """Run the matrix, print it, and return the problems found (empty: all good).

    With `record`, tests/baseline.json is rewritten from this run (checks per task, checks that pass on
    the starter) instead of being compared with it.
    """
    steps = list(steps or catalogue.steps())
    problems = _generated_problems()
    results = run_many([(step, target) for step in steps for target in ("steps", "solutions")], workers)
    by_job = {(r.step.number, r.target): r for r in results}
    verdicts = {"ok": 0, "PROBLEM": 0}
    measured: dict[tuple[int, int], scoring.TaskRecord] = {}

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
            now = scoring.TaskRecord(solution.task_counts(task.number)[1], starter_passes(start, task.number))
            measured[(step.number, task.number)] = now
            known = scoring.record(task)
            kept = record or now.checks >= known.checks
            same_baseline = record or now.starter_passes == known.starter_passes
            verdict = "ok" if teaches and solved and kept and same_baseline else "PROBLEM"
            verdicts[verdict] += 1
            print(f"{step.number:<6}{task.number:<6}{now.checks:<8}{_cell(start, task.number):<16}"
                  f"{_cell(solution, task.number):<16}{verdict}")  # fmt: skip
            if not teaches:
                problems.append(f"{task.label}: no test fails on the starter, so the task teaches nothing")
            if not solved:
                problems.append(f"{task.label}: the solution does not pass every test")
            if not kept:
                problems.append(
                    f"{task.label}: {now.checks} checks, fewer than the {known.checks} in {BASELINE}"
                )
            if not same_baseline:
                problems.append(
                    f"{task.label}: the checks passing on the starter are {sorted(now.starter_passes)}, "
                    f"{BASELINE} records {sorted(known.starter_passes)}: run `nox -s integrity -- --record` "
                    "if the change is deliberate"
                )
    if record:
        everything = {(t.step, t.number): scoring.record(t) for s in catalogue.steps() for t in s.tasks}
        scoring.write_baseline({**everything, **measured})
        print(f"\nRecorded {BASELINE}: the checks per task and the checks that pass on each starter.")

    problems += _check_mistakes(steps, workers, verdicts)
    # A closing line in the one format CI reads from any runner: checks that held, checks that did not.
    print(f"integrity: {verdicts['ok']} passed, {verdicts['PROBLEM']} failed")
    return problems


def _check_mistakes(steps: Sequence[catalogue.Step], workers: int, verdicts: dict[str, int]) -> list[str]:
    """Every known mistake must fail its task, its phrase in the step's first message; every task needs
    MISTAKES_PER_TASK."""
    problems: list[str] = []
    try:
        known = mistakes.load(steps)
    except mistakes.MistakeError as exc:
        return [str(exc)]
    caught = {(task.step, task.number): 0 for step in steps for task in step.tasks}
    print(f"\n{'step':<6}{'task':<6}{'mistake':<40}verdict")
    for verdict in mistakes.check_all(known, workers=workers):
        mistake = verdict.mistake
        caught[(mistake.step.number, mistake.task)] += verdict.caught
        verdicts["ok" if verdict.caught else "PROBLEM"] += 1
        print(f"{mistake.step.number:<6}{mistake.task:<6}{mistake.name:<40}"
              f"{'caught' if verdict.caught else 'PROBLEM'}: {verdict.detail.splitlines()[0]}")  # fmt: skip
        if not verdict.caught:
            problems.append(
                f"mistake {mistake.step.name}/{mistake.name} (task {mistake.task}): {verdict.detail}"
            )
    problems += [
        f"step {step}, task {task}: {count} known mistake(s) caught, at least {MISTAKES_PER_TASK} wanted"
        for (step, task), count in caught.items()
        if count < MISTAKES_PER_TASK
    ]
    return problems
