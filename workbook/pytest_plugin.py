"""The workbook's pytest plugin: chooses the step tree under test and reports results per task.

One pytest process tests one step tree, because every tree has its own `aiohttpdemo_polls` package. The
step comes from the test path (tests/step3/...), the tree from ``--target``:

    steps       the learner's tree, steps/stepN (the default)
    solutions   the reference, solutions/stepN
    PATH        another copy of the workbook (a learner's submission): PATH/steps/stepN
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from . import catalogue

# aiopg's SQLAlchemy 1.4 must warn about everything that changes in 2.0; set before anything imports it.
os.environ.setdefault("SQLALCHEMY_WARN_20", "1")

_STEP_IN_PATH = re.compile(r"(?:^|[\\/])tests[\\/]step(\d+)(?:[\\/]|$|::)")


@dataclass
class TestOutcome:
    nodeid: str
    task: int
    outcome: str = "passed"
    message: str = ""


@dataclass
class StepRun:
    """What this pytest process is testing and what it found."""

    step: catalogue.Step
    target: str
    tree: Path
    broken: str = ""
    outcomes: dict[str, TestOutcome] = field(default_factory=dict)

    def by_task(self) -> dict[int, list[TestOutcome]]:
        grouped: dict[int, list[TestOutcome]] = {task.number: [] for task in self.step.tasks}
        for outcome in self.outcomes.values():
            grouped.setdefault(outcome.task, []).append(outcome)
        return grouped

    def as_report(self) -> dict[str, Any]:
        tasks = {}
        for number, outcomes in self.by_task().items():
            passed = sum(o.outcome == "passed" for o in outcomes)
            tasks[str(number)] = {"passed": passed, "total": len(outcomes)}
        return {
            "step": self.step.number,
            "target": self.target,
            "tree": str(self.tree),
            "broken": self.broken,
            "tasks": tasks,
            "tests": [vars(o) for o in self.outcomes.values()],
        }


RUN_KEY = pytest.StashKey[StepRun]()
BROKEN_EXIT_STATUS = 3


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("workbook")
    group.addoption(
        "--target",
        default=os.environ.get("WORKBOOK_TARGET", "steps"),
        help="which tree to test: 'steps' (yours, default), 'solutions', or a path to a workbook copy",
    )
    group.addoption("--workbook-report", default=None, help="write per-task results as JSON to this file")


def resolve_tree(target: str, step: catalogue.Step) -> Path:
    """The step directory a --target value means."""
    if target in ("steps", "solutions"):
        return step.tree(catalogue.ROOT, target)
    return step.tree(Path(target).expanduser().resolve(), "steps")


def step_of_args(args: list[str]) -> catalogue.Step | None:
    numbers = {int(m.group(1)) for arg in args for m in [_STEP_IN_PATH.search(arg)] if m}
    if len(numbers) > 1:
        raise pytest.UsageError(
            "Run one step per pytest process (each step has its own aiohttpdemo_polls package): "
            f"got steps {sorted(numbers)}. Use `nox -s stepN` or `python -m workbook check N`."
        )
    return catalogue.step(numbers.pop()) if numbers else None


def syntax_problems(tree: Path) -> str:
    """Compile every Python file of the tree, so a typo is reported once, with file and line."""
    problems = []
    for path in sorted(tree.rglob("*.py")):
        try:
            compile(path.read_bytes(), str(path), "exec")
        except SyntaxError as exc:
            where = path.relative_to(tree.parent.parent) if len(tree.parts) > 2 else path
            problems.append(f"{where}, line {exc.lineno}: {exc.msg}\n    {(exc.text or '').strip()}")
    return "\n".join(problems)


def pytest_configure(config: pytest.Config) -> None:
    step = step_of_args([str(a) for a in config.args])
    if step is None:
        return
    target = config.getoption("--target")
    tree = resolve_tree(target, step)
    if not (tree / catalogue.PACKAGE).is_dir():
        raise pytest.UsageError(f"There is no {catalogue.PACKAGE} package in {tree} (--target {target}).")
    sys.path.insert(0, str(tree))
    run = StepRun(step=step, target=target, tree=tree, broken=syntax_problems(tree))
    config.stash[RUN_KEY] = run
    config.pluginmanager.register(_Recorder(run), "workbook-recorder")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    run = session.config.stash.get(RUN_KEY, None)
    if run is not None and run.broken:
        session.exitstatus = BROKEN_EXIT_STATUS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run is None:
        return
    if run.broken:  # nothing can import the package: one clear message beats a wall of identical failures
        config.hook.pytest_deselected(items=list(items))
        items[:] = []
        return
    known = {task.number for task in run.step.tasks}
    for item in items:
        markers = list(item.iter_markers("task"))
        if len(markers) != 1 or not markers[0].args or markers[0].args[0] not in known:
            raise pytest.UsageError(
                f"{item.nodeid}: every test of step {run.step.number} needs exactly one "
                f"@pytest.mark.task(N) with N in {sorted(known)}"
            )
        run.outcomes[item.nodeid] = TestOutcome(item.nodeid, markers[0].args[0], outcome="not run")


MAX_LINES = 8
SHOWN_PER_TASK = 3


def _last_logged_exception(log: str) -> str:
    """The final line of the last traceback in a test's captured log: why the app answered 500."""
    if "Traceback (most recent call last)" not in log:
        return ""
    tail = log.rsplit("Traceback (most recent call last)", 1)[1].splitlines()
    lines = [line for line in tail if line.strip() and not line.startswith((" ", "\t"))]
    return lines[-1].strip() if lines else ""


def _short_message(report: pytest.TestReport) -> str:
    """The failure's own words: our assertion message without pytest's introspection, a few lines at most."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and crash.message:
        message = str(crash.message)
    else:
        message = str(report.longrepr).strip().splitlines()[-1] if report.longrepr else ""
    message = message.split("\nassert ")[0]
    server_error = _last_logged_exception(getattr(report, "caplog", ""))
    if server_error and server_error not in message:
        message += f"\n(the app logged: {server_error})"
    lines = message.splitlines()
    return "\n".join(lines[:MAX_LINES] + (["..."] if len(lines) > MAX_LINES else []))


def record(run: StepRun, report: pytest.TestReport) -> None:
    """Fold one phase's report (setup, call, teardown) into the test's outcome."""
    if report.nodeid not in run.outcomes:
        return
    outcome = run.outcomes[report.nodeid]
    if report.failed and outcome.outcome != "failed":
        outcome.outcome, outcome.message = "failed", _short_message(report)
    elif report.when == "call" and report.passed and outcome.outcome == "not run":
        outcome.outcome = "passed"
    elif report.skipped and outcome.outcome == "not run":
        outcome.outcome, outcome.message = "skipped", _short_message(report)


class _Recorder:
    """Registered for step runs only: hooks that need the StepRun at hand."""

    def __init__(self, run: StepRun) -> None:
        self.run = run

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record(self.run, report)

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        """Tests left out with -k or -m are not failures: drop them from the per-task report."""
        for item in items:
            self.run.outcomes.pop(item.nodeid, None)


def _write_report(config: pytest.Config, run: StepRun) -> None:
    path = config.getoption("--workbook-report")
    if path:
        Path(path).write_text(json.dumps(run.as_report(), indent=1))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run is None:
        return
    _write_report(config, run)
    write = terminalreporter.write_line
    if run.broken:
        write("")
        write(f"Python cannot read your code for step {run.step.number}, so no test could run:", red=True)
        for line in run.broken.splitlines():
            write(f"  {line}")
        write("  Fix that line, save, and run the check again.", yellow=True)
        return
    write("")
    write(f"Step {run.step.number}: {run.step.title}  (testing {run.tree})", bold=True)
    first_failing = None
    earned = 0
    for task in run.step.tasks:
        outcomes = run.by_task()[task.number]
        if not outcomes:  # every check of this task was left out with -k or -m
            write(f"  ----  task {task.number}: {task.title}  (not run this time)")
            continue
        passed = sum(o.outcome == "passed" for o in outcomes)
        done = bool(outcomes) and passed == len(outcomes)
        earned += task.points if done else 0
        mark = "PASS" if done else "FAIL"
        write(f"  {mark}  task {task.number}: {task.title}  ({passed}/{len(outcomes)} checks)",
              green=done, red=not done)  # fmt: skip
        failing = [o for o in outcomes if o.outcome != "passed"]
        for outcome in failing[:SHOWN_PER_TASK]:
            name = outcome.nodeid.split("::")[-1]
            message = outcome.message.replace("\n", "\n          ")
            write(f"        - {name}: {message}")
        if len(failing) > SHOWN_PER_TASK:
            write(f"        ... and {len(failing) - SHOWN_PER_TASK} more failing (`-- -v` lists them)")
        if not done and first_failing is None:
            first_failing = task
    write(f"  {earned}/{run.step.points} points")
    if first_failing is not None:
        write(f"  Hint for task {first_failing.number}: {first_failing.hints[0]}", yellow=True)
        write(f"  The lesson: {run.tree / 'README.md'}")
    elif not run.outcomes or exitstatus != 0:
        # Nothing ran (a test module failed to load, or -k matched nothing): that is no success.
        write(f"  No verdict for step {run.step.number}: pytest ended with status {exitstatus}.", red=True)
    else:
        write(f"  Step {run.step.number} is done. On to the next one!", green=True)
