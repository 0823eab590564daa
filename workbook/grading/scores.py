"""Points: what one step of one learner earned, read from what its test process left behind.

A timed-out or crashed run keeps the checks it passed: every test outcome is appended to a file as it
happens (the child's plugin in running.py), and read back here (read_stream) when the process leaves no
report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from .. import catalogue, scoring
from ..judge.untrusted import load_json, read_capped, read_json_object

MAX_OUTPUT = 1024 * 1024  # bytes of pytest output kept per step: the head and the tail, half each


@dataclass
class Check:
    """One test of a task, as the report or the progress stream saw it."""

    name: str
    task: int
    outcome: str
    message: str = ""


@dataclass
class TaskScore:
    task: catalogue.Task
    passed: int = 0
    total: int = 0
    checks: list[Check] = field(default_factory=list)

    @property
    def earned(self) -> Fraction:
        """Partial credit for the checks the learner's work made pass (workbook/scoring.py)."""
        return scoring.task_points(self.task, [(c.name, c.outcome == "passed") for c in self.checks])

    @property
    def done(self) -> bool:
        return self.total > 0 and self.passed == self.total


@dataclass
class StepGrade:
    step: catalogue.Step
    tasks: list[TaskScore]
    problems: list[str] = field(default_factory=list)
    log: str = ""
    seconds: float = 0.0

    @classmethod
    def zero(cls, step: catalogue.Step, problem: str) -> StepGrade:
        return cls(step, [TaskScore(task) for task in step.tasks], [problem])

    @property
    def earned(self) -> Fraction:
        return sum((task.earned for task in self.tasks), Fraction(0))


@dataclass
class LearnerGrade:
    name: str
    steps: list[StepGrade]
    problems: list[str] = field(default_factory=list)

    @property
    def total(self) -> Fraction:
        return sum((step.earned for step in self.steps), Fraction(0))

    @property
    def max_points(self) -> int:
        return sum(step.step.points for step in self.steps)

    def all_problems(self) -> list[str]:
        """Every recorded problem, each once, prefixed with its step."""
        found = list(self.problems)
        for step in self.steps:
            found += [f"step {step.step.number}: {p}" for p in step.problems if p not in self.problems]
        return found


format_points = scoring.format_points


@dataclass
class Completed:
    returncode: int | None
    output: str
    output_bytes: int
    truncated: bool
    timed_out: bool
    seconds: float
    timeout: float = 0.0


def read_report(path: Path) -> dict[str, Any]:
    """The judge's per-task report, read as untrusted: capped, non-blocking, an object or nothing."""
    return read_json_object(path)


def read_stream(path: Path) -> tuple[list[Check], str]:
    """The checks a run collected and how far each got, from the progress stream; and the running test."""
    checks: dict[str, Check] = {}
    running = ""
    data = read_capped(path)
    lines = data.decode("utf-8", "replace").splitlines() if data is not None else []
    for line in lines:
        entry = load_json(line)
        if not isinstance(entry, dict):
            continue  # the last line may be cut short by the kill
        if "collected" in entry and isinstance(entry.get("task"), int):
            checks[entry["collected"]] = Check(entry["collected"], entry["task"], "not run")
            continue
        check = checks.get(entry.get("nodeid", ""))
        if check is None:
            continue
        running = check.name if entry.get("when") == "setup" else running
        if entry.get("outcome") == "failed":
            check.outcome = "failed"
        elif entry.get("when") == "call" and entry.get("outcome") == "passed" and check.outcome == "not run":
            check.outcome = "passed"
        if entry.get("when") == "teardown" and running == check.name:
            running = ""
    return list(checks.values()), running


def _short_name(nodeid: str) -> str:
    return nodeid.split("::")[-1]


def _broken_reason(broken: str) -> str:
    """'SyntaxError in aiohttpdemo_polls/views.py, line 3' from the judge's import report (see the plugin's
    import_problems: the place on one line, the error's name and message on the next)."""
    lines = [line.strip() for line in broken.strip().splitlines()]
    if len(lines) >= 2 and ": " in lines[1]:
        where = lines[0].split(": ", 1)[0]
        return f"{lines[1].split(':', 1)[0]} in {where}"[:300]
    return (lines[0] if lines else "the code could not be checked")[:300]


def score_step(
    step: catalogue.Step, completed: Completed, report: dict[str, Any], stream: tuple[list[Check], str]
) -> StepGrade:
    """Turn a finished run into points and short reasons."""
    problems: list[str] = []
    checks: list[Check]
    if report:
        checks = [
            Check(_short_name(t.get("nodeid", "")), int(t.get("task", 0)), str(t.get("outcome", "")),
                  str(t.get("message", "")))
            for t in report.get("tests", [])
            if isinstance(t, dict)
        ]  # fmt: skip
        if report.get("broken"):
            # No verdict on a step that could not be checked (it does not import, or the judge's guard
            # stopped the run): 0, as `nox -s stepN` and status show it (runner.StepResult.points).
            problems.append(_broken_reason(str(report["broken"])))
            for check in checks:
                check.outcome = "failed"
        elif completed.returncode not in (0, 1, None):
            problems.append(f"the test run ended with exit code {completed.returncode}")
    else:
        collected, running = stream
        checks = [Check(_short_name(c.name), c.task, c.outcome, c.message) for c in collected]
        if completed.timed_out:
            where = f" while running {_short_name(running)}" if running else ""
            problems.append(f"timed out after {completed.timeout:g}s{where}")
            for check in checks:
                if check.outcome == "not run":
                    check.message = "did not finish: the step timed out"
        else:
            problems.append(f"the test process died (exit {completed.returncode}) before reporting")
            for check in checks:
                if check.outcome == "not run":
                    check.message = "did not finish: the test process died"
    if completed.truncated:
        problems.append(
            f"output truncated at {MAX_OUTPUT // 2**20} MB ({completed.output_bytes} bytes printed)"
        )
    tasks = []
    for task in step.tasks:
        mine = [c for c in checks if c.task == task.number]
        tasks.append(TaskScore(task, sum(c.outcome == "passed" for c in mine), len(mine), mine))
    return StepGrade(step, tasks, problems, completed.output, completed.seconds)
