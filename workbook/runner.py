"""Runs one step's suite against one tree in its own pytest process and reads back the per-task report.

Used by `nox -s stepN`, the integrity check and (later) the progress view and the grader, so a step is
always tested the same way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from . import catalogue, scoring
from .judge.untrusted import read_json_object
from .pg import ENV_DSN, throwaway_postgres

# How the judge's pytest is started, run from the workbook's folder. It names its plugins (autoloading is
# off, so nothing installed into the environment is loaded), its configuration file (a pytest.ini or
# setup.cfg planted beside it is not read) and where conftest.py files may come from (tests/ only).
JUDGE_ARGS = (
    "-p", "pytest_asyncio.plugin", "-p", "workbook.pytest_plugin",
    "-c", "pyproject.toml", "--rootdir", ".", "--confcutdir", "tests",
)  # fmt: skip
JUDGE_ENV = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONDONTWRITEBYTECODE": "1"}

# A step's suite takes seconds; only a learner's endless loop or a hung server gets near this.
STEP_TIMEOUT = 300.0


@dataclass
class StepResult:
    step: catalogue.Step
    target: str
    returncode: int
    report: dict[str, Any] = field(default_factory=dict)
    output: str = ""

    @property
    def broken(self) -> str:
        return self.report.get("broken", "") if self.report else "the suite did not produce a report"

    def task_counts(self, task: int) -> tuple[int, int]:
        """(passed, total) checks of one task; (0, 0) when the suite could not run."""
        entry = self.report.get("tasks", {}).get(str(task), {}) if self.report else {}
        return entry.get("passed", 0), entry.get("total", 0)

    def task_done(self, task: int) -> bool:
        passed, total = self.task_counts(task)
        return total > 0 and passed == total

    @property
    def points(self) -> Fraction:
        """Partial credit, exactly as the grader gives it (workbook/scoring.py)."""
        if self.broken:
            return Fraction(0)
        return scoring.step_points(self.step, self.report.get("tests", []))


class RunningSuites:
    """The test processes one command has under way, each in a session of its own, so a signal that ends
    the command never reaches them: kill_all ends every one, and any that starts afterwards at once.
    Without it an interrupted `status` would wait for every suite to finish (or time out) before it could
    stop its database server; grading's Launcher keeps its test processes here too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pids: set[int] = set()
        self._stopping = False

    @property
    def stopping(self) -> bool:
        return self._stopping

    def add(self, pid: int) -> None:
        with self._lock:
            self._pids.add(pid)
            if self._stopping:  # started while kill_all ran: it must not run its course either
                kill_now(pid)

    def discard(self, pid: int) -> None:
        with self._lock:
            self._pids.discard(pid)

    def kill_all(self) -> None:
        with self._lock:
            self._stopping = True
            for pid in self._pids:
                kill_now(pid)


def pytest_command(
    step: catalogue.Step,
    target: str,
    report: Path | None,
    extra: Sequence[str] = (),
    basetemp: Path | None = None,
) -> list[str]:
    """The judge's command line. With `basetemp`, pytest's temp folders go there, a folder of this run's
    own: by default every pytest of the user shares /tmp/pytest-of-USER and removes the older folders
    in it, so two suites run at once (integrity, mutants, a class) could delete each other's, and the
    warning pytest then gives is an error here: a judge that died without a report."""
    command = [sys.executable, "-m", "pytest", f"tests/{step.name}", "--target", target, *JUDGE_ARGS]
    if report is not None:
        command += ["--workbook-report", str(report)]
    if basetemp is not None and not any(arg.startswith("--basetemp") for arg in extra):
        command += ["--basetemp", str(basetemp)]
    return command + list(extra)


def run_step(
    step: catalogue.Step,
    target: str = "steps",
    *,
    extra: Sequence[str] = (),
    timeout: float = STEP_TIMEOUT,
    env: dict[str, str] | None = None,
    root: Path = catalogue.ROOT,
    suites: RunningSuites | None = None,
) -> StepResult:
    """Run tests/stepN against `target` ('steps', 'solutions' or a workbook copy's path), output captured.

    `root` is the workbook whose tests/ run (the current directory of pytest). The suite runs in a process
    group of its own, so an endless loop in a learner's code ends with the whole group killed at
    `timeout`, reported as the reason the step could not be checked.
    """
    with tempfile.TemporaryDirectory(prefix="workbook-report-", ignore_cleanup_errors=True) as tmp:
        report_path = Path(tmp) / "report.json"
        process = subprocess.Popen(
            pytest_command(step, target, report_path, extra, Path(tmp) / "pytest"),
            cwd=root,
            env={**os.environ, **JUDGE_ENV, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        if suites is not None:
            suites.add(process.pid)
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(process.pid)
            output, _ = process.communicate()
            reason = (
                f"step {step.number}'s tests did not finish within {timeout:.0f}s: is there an endless loop?"
            )
            return StepResult(step, target, process.returncode, {"broken": reason, "tasks": {}}, output)
        except BaseException:  # Ctrl+C: the suite runs in its own session and would not hear it
            kill_group(process.pid)
            raise
        finally:
            if suites is not None:
                suites.discard(process.pid)
        # Written by the judge, in a folder a learner process could still reach: read as untrusted.
        report = read_json_object(report_path)
        if not isinstance(report.get("tasks", {}), dict) or not isinstance(report.get("tests", []), list):
            report = {}
    return StepResult(step, target, process.returncode, report, output)


def kill_group(pid: int) -> None:
    """SIGKILL a whole process group (a suite started with start_new_session=True, and its children)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def kill_now(pid: int) -> None:
    """SIGKILL a test process and its group, the process too in case it has not made its group yet (a
    forked one calls setsid first thing): a kill must never leave it to run until its timeout."""
    kill_group(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def shared_server() -> Iterator[dict[str, str]]:
    """One PostgreSQL server for many pytest processes: they find it through the DSN variable."""
    if os.environ.get(ENV_DSN):
        yield {}
        return
    with throwaway_postgres() as server:
        yield {ENV_DSN: server.over_socket().dsn()}  # the socket folder, as grading hands it out


def run_many(
    jobs: Sequence[tuple[catalogue.Step, str] | tuple[catalogue.Step, str, Sequence[str]]],
    workers: int = 2,
    root: Path = catalogue.ROOT,
) -> list[StepResult]:
    """Run several (step, target) suites of the workbook at `root`, `workers` at a time, one server; a job
    may carry pytest arguments of its own as a third item (`("--task", "2")`).

    Interrupted (Ctrl+C, SIGTERM, SIGHUP), it kills the running suites and starts no other, so the pool's
    exit does not wait for them and the server goes at once.
    """
    suites = RunningSuites()
    with shared_server() as env, ThreadPoolExecutor(max_workers=workers) as pool:
        futures = []
        for job in jobs:
            extra = job[2] if len(job) > 2 else ()
            futures.append(pool.submit(run_step, *job[:2], extra=extra, env=env, root=root, suites=suites))
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            suites.kill_all()
            raise
