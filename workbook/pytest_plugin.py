"""The workbook's pytest plugin: chooses the step tree under test and reports results per task.

This process is the judge. It never imports the tree under test. It starts the learner-side harness
(workbook/judge/learner_process.py) at once, which preloads the libraries while pytest collects, and only
once the suite is loaded asks it to import the learner's package, in that process of its own. An audit
hook (workbook/judge/guard.py) fails the run if anything here loads the learner's code.

One pytest process tests one step tree. The step comes from the test path (tests/step3/...), the tree
from ``--target``:

    steps       the learner's tree, steps/stepN (the default)
    solutions   the reference, solutions/stepN
    PATH        another copy of the workbook (a learner's submission): PATH/steps/stepN
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from . import catalogue, environments, scoring
from .grading.confinement import Confinement, enter_private_network
from .judge import guard
from .judge.learner_process import (
    PRELOAD,
    Harness,
    Launcher,
    LearnerGone,
    LearnerRaised,
    use_confinement,
    use_launcher,
    use_python,
)
from .judge.logs import how_it_ended, last_exception, without_own_frames
from .pg import (
    NoPostgresAvailable,
    PostgresServer,
    host_form_note,
    private_dir,
    template_home,
    throwaway_postgres,
)

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
    harness: Harness | None = None
    launcher: Launcher | None = None
    postgres: PostgresServer | None = None
    postgres_problem: str = ""
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
            "guard": guard.installed(),
            "tasks": tasks,
            "tests": [vars(o) for o in self.outcomes.values()],
        }


RUN_KEY = pytest.StashKey[StepRun]()
LOG_START = pytest.StashKey[int]()
BROKEN_EXIT_STATUS = 3


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("workbook")
    group.addoption(
        "--target",
        default=os.environ.get("WORKBOOK_TARGET", "steps"),
        help="which tree to test: 'steps' (yours, default), 'solutions', or a path to a workbook copy",
    )
    group.addoption("--workbook-report", default=None, help="write per-task results as JSON to this file")
    group.addoption("--task", type=int, default=None, help="run only the checks of this task")
    group.addoption(
        "--up-to-task",
        type=int,
        default=None,
        help="stop after the last check of this task or an earlier one: the run as far as a learner "
        "reads before the later tasks",
    )
    group.addoption(
        "--confinement",
        default=None,
        help="(grading) the grader's confinement file for the learner's processes",
    )


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


def import_problems(hello: dict[str, Any], tree: Path) -> str:
    """One paragraph per module the learner's process could not import: file, line and error."""
    problems = []
    with contextlib.suppress(ValueError):
        tree = tree.relative_to(catalogue.ROOT)  # steps/step2: the path a learner finds from the workbook
    for module, error in sorted(hello.get("failed", {}).items()):
        where = f"{tree}/{error.get('where') or f'{catalogue.PACKAGE}/{module}'}"
        problems.append(f"{where}\n    {error.get('name')}: {error.get('message')}")
    return "\n".join(problems)


def pytest_configure(config: pytest.Config) -> None:
    step = step_of_args([str(a) for a in config.args])
    if step is None:
        return
    target = config.getoption("--target")
    tree = resolve_tree(target, step)
    if not (tree / catalogue.PACKAGE).is_dir():
        raise pytest.UsageError(f"There is no {catalogue.PACKAGE} package in {tree} (--target {target}).")
    guard.install(tree, catalogue.PACKAGE)
    if config.getoption("--confinement"):  # the grader's runtime names the interpreter
        confine(Confinement.load(Path(config.getoption("--confinement"))))
    else:
        if "WORKBOOK_GRADE_RUN" not in os.environ:  # grading's marker (grading.running.RUN_MARKER)
            cache_rewritten_suites()
        try:
            use_python(environments.learner_python(step))
        except environments.EnvironmentMissing as exc:
            raise pytest.UsageError(str(exc)) from None
    run = StepRun(step=step, target=target, tree=tree, harness=Harness(tree, step.libraries or PRELOAD))
    run.launcher = Launcher.beside(run.harness)  # for the learner's commands: the harness forks it, warm
    run.harness.start()  # preloads the libraries while pytest collects; no learner code runs yet
    use_launcher(run.launcher)
    config.stash[RUN_KEY] = run
    config.pluginmanager.register(_Recorder(run), "workbook-recorder")


def cache_rewritten_suites() -> None:
    """Keep the suites' rewritten bytecode between local runs, in a private cache folder.

    pytest rewrites every test module's asserts when it imports it, and keeps the result only where it may
    write bytecode; the judge runs with PYTHONDONTWRITEBYTECODE, so that nothing lands beside the suites,
    and so rewrote them on every run: a sixth of the judge's CPU in step 10, 0.05 to 0.1 s in the others,
    paid again by each mutant and mistake judged. From here on (the modules of the suite are imported
    after this hook) bytecode goes to a folder of the user's cache that only this user may write, never
    beside the suites nor in the learner's tree; pytest checks a cached module against its source's hash.
    Never when graded, confined or not: a graded judge writes nothing outside its run.
    """
    with contextlib.suppress(OSError, NoPostgresAvailable):  # no usable cache folder: rewrite as before
        sys.pycache_prefix = str(private_dir(template_home() / "judge-bytecode"))
        sys.dont_write_bytecode = False


def confine(confinement: Confinement) -> None:
    """Grading: the learner's processes start confined, and this judge first moves into the run's own
    network, which it shares with them and nobody else (see grading.confinement)."""
    enter_private_network()
    use_confinement(confinement)
    if confinement.gid is not None:
        _open_temp_folders_to(confinement.gid)


def _open_temp_folders_to(gid: int) -> None:
    """pytest makes its temp folders private (0700, since pytest 7.3), so a learner's uid could not read a
    configuration the judge writes there for it. Here every folder tmp_path and tmp_path_factory make
    becomes root's, readable by the run's group only: pytest has no option for that, hence the wrapper."""
    original = pytest.TempPathFactory.mktemp

    def mktemp(self: pytest.TempPathFactory, basename: str, numbered: bool = True) -> Path:
        path = original(self, basename, numbered)
        for folder in (self.getbasetemp(), path):
            os.chown(folder, 0, gid)
            os.chmod(folder, 0o750)
        return path

    pytest.TempPathFactory.mktemp = mktemp  # type: ignore[method-assign]


def start_postgres(config: pytest.Config, run: StepRun) -> None:
    """Start the suite's throwaway PostgreSQL now (the `pg_server` fixture hands it out), stopped at exit."""
    stack = contextlib.ExitStack()
    config.add_cleanup(stack.close)
    try:
        # Through its socket folder, when it has one: the host form grading gives the learner's app too.
        run.postgres = stack.enter_context(throwaway_postgres()).over_socket()
    except NoPostgresAvailable as exc:
        run.postgres_problem = str(exc)


def pytest_unconfigure(config: pytest.Config) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run is not None and run.harness is not None:
        run.harness.close()
    if run is not None and run.launcher is not None:
        use_launcher(None)
        run.launcher.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    run = session.config.stash.get(RUN_KEY, None)
    if guard.violations:
        if run is not None:
            run.broken = "\n".join(dict.fromkeys(guard.violations))
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
    elif run is not None and run.broken:
        session.exitstatus = BROKEN_EXIT_STATUS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run is None:
        return
    try:
        # Only now that the suite is loaded does the learner's code run: wait_ready imports the package.
        # Before that, this process starts PostgreSQL if the suite needs it.
        assert run.harness is not None
        if any("pg_server" in getattr(item, "fixturenames", ()) for item in items):
            start_postgres(config, run)
        run.broken = import_problems(run.harness.wait_ready(), run.tree)
    except LearnerGone as exc:
        run.broken = str(exc)
    if run.broken:  # nothing can import the package: one clear message beats a wall of identical failures
        config.hook.pytest_deselected(items=list(items))
        items[:] = []
        return
    known = {task.number for task in run.step.tasks}
    only, up_to = config.getoption("--task"), config.getoption("--up-to-task")
    left_out = [item for item in items if only is not None and _task_of(item) != only]
    if up_to is not None:  # a prefix of the run, so that every check in it meets the same learner process
        last = max((i for i, item in enumerate(items) if (_task_of(item) or 0) <= up_to), default=-1)
        left_out = list(dict.fromkeys(left_out + items[last + 1 :]))
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if item not in left_out]
    for item in items:
        markers = list(item.iter_markers("task"))
        if len(markers) != 1 or not markers[0].args or markers[0].args[0] not in known:
            raise pytest.UsageError(
                f"{item.nodeid}: every test of step {run.step.number} needs exactly one "
                f"@pytest.mark.task(N) with N in {sorted(known)}"
            )
        run.outcomes[item.nodeid] = TestOutcome(item.nodeid, markers[0].args[0], outcome="not run")
    # What exists now (pytest, the libraries, the suite's modules and items) lives until the run ends: out
    # of the collector's sight, its full collections during the checks and pytest's own at the end (for
    # the dying warnings of the checks' objects, which stay in sight) scan only what the checks made.
    gc.freeze()


def _task_of(item: pytest.Item) -> int | None:
    marker = item.get_closest_marker("task")
    return marker.args[0] if marker and marker.args else None


MAX_LINES = 8
SHOWN_PER_TASK = 3


def _short_message(report: pytest.TestReport) -> str:
    """The failure's own words: our assertion message without pytest's introspection, a few lines at most."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and crash.message:
        message = str(crash.message)
    else:
        message = str(report.longrepr).strip().splitlines()[-1] if report.longrepr else ""
    message = message.split("\nassert ")[0]
    for internal in (LearnerRaised, LearnerGone):  # an escaped one says what the learner's code did
        message = message.removeprefix(f"{internal.__module__}.{internal.__qualname__}: ")
    exit_status = getattr(report, "learner_exit", None)
    if exit_status is not None and "exited" not in message:
        message += f"\n(the learner's process ended during this check: {how_it_ended(exit_status)})"
    server_error = last_exception(getattr(report, "learner_log", ""), catalogue.PACKAGE)
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

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        item.stash[LOG_START] = self.run.harness.log_size() if self.run.harness else 0

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        """A failing check carries what the learner's process logged meanwhile (a 500's traceback)."""
        report = yield
        harness = self.run.harness
        if report.failed and harness is not None:
            log = without_own_frames(harness.log_text(item.stash.get(LOG_START, 0))).strip()
            if log:
                report.learner_log = log
                report.sections.append(("what the learner's process logged", log[-6000:]))
            status = harness.exit_status()
            if status is not None:  # it died during this check: the next one gets a fresh process
                report.learner_exit = status
        return report

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
    if guard.violations:
        write("")
        write(
            "JUDGE GUARD: this run loaded the learner's code into the judge, so it gives no verdict:",
            red=True,
        )
        for line in dict.fromkeys(guard.violations):
            write(f"  {line}", red=True)
        return
    if run.broken:
        write("")
        write(f"Your code for step {run.step.number} cannot be imported, so no check could run:", red=True)
        for line in run.broken.splitlines():
            write(f"  {line}")
        write("  Fix that line, save, and run the check again.", yellow=True)
        return
    write("")
    write(f"Step {run.step.number}: {run.step.title}  (testing {run.tree})", bold=True)
    note = host_form_note(run.postgres) if run.postgres is not None else ""
    if note:
        write(f"  {note}", yellow=True)
    first_failing, started = None, False
    earned = Fraction(0)
    for task in run.step.tasks:
        outcomes = run.by_task()[task.number]
        if not outcomes:  # every check of this task was left out with -k or -m
            write(f"  ----  task {task.number}: {task.title}  (not run this time)")
            continue
        passed = sum(o.outcome == "passed" for o in outcomes)
        done = bool(outcomes) and passed == len(outcomes)
        earned += scoring.task_points(
            task, [(scoring.check_name(o.nodeid), o.outcome == "passed") for o in outcomes]
        )
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
            first_failing, started = task, passed > 0
    write(f"  {scoring.format_points(earned)}/{run.step.points} points")
    if first_failing is not None:
        if started:  # the failing checks' own hints above fit better than the task's first one
            command = f"nox -s hint -- {run.step.number}"
            write(
                f"  Stuck on task {first_failing.number}? `{command}` gives its hints one at a time.",
                yellow=True,
            )
        else:
            write(f"  Hint for task {first_failing.number}: {first_failing.hints[0]}", yellow=True)
        write(f"  The lesson: {run.tree / 'README.md'}")
    elif not run.outcomes or exitstatus != 0:
        # Nothing ran (a test module failed to load, or -k matched nothing): that is no success.
        write(f"  No verdict for step {run.step.number}: pytest ended with status {exitstatus}.", red=True)
    else:
        last = run.step.number == max(step.number for step in catalogue.steps())
        follow = "That was the last step: the polls app is finished." if last else "On to the next one!"
        write(f"  Step {run.step.number} is done. {follow}", green=True)
