"""Grades a class: every learner's steps against the instructor's own suites, into a gradebook.

`nox -s grade -- SUBMISSIONS` (`python -m workbook grade SUBMISSIONS`) takes a folder holding one copy of
the workbook, or a .zip of one, per learner, and writes to ``--out`` (default ``grades/``):

    gradebook.csv                one row per learner: a column per step and the total
    learners/NAME/results.json   the learner's results in Gradescope's autograder format, one test per task
    learners/NAME/stepN.log      what pytest printed for that step (capped)
    report.html                  the class overview, pass rates per task and a section per learner

Why it is built the way it is:

- Learner code is untrusted and may hang, crash, print without end or delete files. Each step of each
  learner runs in a sandbox: a temp folder with copies of the instructor's tests/, workbook/, config/ and
  pyproject.toml (snapshotted once when grading starts, so an edit mid-run changes nobody's grade) plus
  that one step of the learner. Neither the submission nor this checkout is touched, and a step that
  deletes its sandbox's tests cannot spoil the next one.
- Each run is a separate process in its own process group, killed as a group on timeout (and any process
  left with the run's marker in its environment after it), with its output read through a pipe and
  capped, so a runaway learner costs time, never the run.
- The processes are forked from a warm interpreter (multiprocessing's forkserver) that has already
  imported pytest, aiohttp, SQLAlchemy and friends, saving the 0.2-0.8 s a new interpreter spends on
  that. The child forgets the instructor's own `workbook` and `tests` modules and runs pytest inside the
  sandbox as `python -m pytest tests/stepN --target steps` would.
- A timed-out or crashed run keeps the checks it passed: every test outcome is appended to a file as it
  happens, and read back when the process leaves no report.
- One PostgreSQL server serves the whole run. Each step of each learner gets a login role of its own
  (CREATEDB, no superuser): the suite's fixtures create and drop databases through that role, so it can
  only ever drop its own, and the role goes with its databases when the step is graded.
- The unit of work is one step of one learner, run `--jobs` at a time (default: twice the CPUs, because
  steps spend much of their time waiting on sockets and PostgreSQL).
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import csv
import importlib
import json
import multiprocessing
import os
import re
import secrets
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TextIO

import jinja2
import markupsafe
import psycopg2
from psycopg2 import sql

from . import catalogue, scoring
from .judge.untrusted import load_json, read_capped, read_json_object
from .pg import ENV_DSN, NoPostgresAvailable, PostgresServer, throwaway_postgres
from .runner import JUDGE_ARGS, JUDGE_ENV, kill_group

DEFAULT_TIMEOUT = 120.0
# Steps wait on sockets, timeouts and PostgreSQL much of the time: two runs per CPU keep the CPUs busy.
DEFAULT_JOBS = 2 * (os.cpu_count() or 1)
DEFAULT_OUT = "grades"
LEARNERS_DIR = "learners"
MAX_OUTPUT = 1024 * 1024  # bytes of pytest output kept per step: the head and the tail, half each
MAX_MESSAGE = 2000  # characters of one failing check's message in results.json and the report
ZIP_MAX_BYTES = 500 * 1024 * 1024
ZIP_MAX_FILES = 50_000
# The same bounds for one step folder handed in as files (a zip's are checked before it is unpacked).
FOLDER_MAX_BYTES = 100 * 1024 * 1024
FOLDER_MAX_FILES = 5_000
INSTRUCTOR_FILES = ("pyproject.toml", "workbook", "config")  # and the suite's part of tests/
INSTRUCTOR_IGNORED = shutil.ignore_patterns(".pytest_cache", ".ipynb_checkpoints")
IGNORED = shutil.ignore_patterns(
    "__pycache__",
    "*.pyc",
    ".git",
    ".venv",
    "venv",
    ".nox",
    ".pytest_cache",
    ".ipynb_checkpoints",
    ".workbook",
)
RUN_MARKER = "WORKBOOK_GRADE_RUN"  # every process of one step run inherits it: how stragglers are found
ROLE_CONNECTION_LIMIT = 50

# What the step suites import: loaded once in the fork server so that every test process starts warm.
PRELOAD = (
    "pytest",
    "_pytest.pytester",
    "aiohttp",
    "aiohttp.web",
    "aiohttp.test_utils",
    "pytest_aiohttp",
    "pytest_asyncio",
    "psycopg2",
    "psycopg2.extras",
    "yaml",
    "trafaret",
    "sqlalchemy",
    "aiopg",
    "aiopg.sa",
    "jinja2",
    "aiohttp_jinja2",
)


# --- submissions -----------------------------------------------------------------------------------------


class GradingError(RuntimeError):
    """Grading cannot start at all (no usable database server); the message says what to do."""


class SubmissionError(Exception):
    """A submission cannot be graded at all; the message says why in a few words."""


@dataclass(frozen=True)
class Submission:
    """One learner's hand-in: a folder or a .zip; the learner is known by its name."""

    name: str
    path: Path


def sort_key(name: str) -> tuple[str, str]:
    return name.casefold(), name


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name != "__MACOSX"


def discover(folder: Path) -> tuple[list[Submission], list[str]]:
    """The submissions in `folder`, sorted by learner name, and the names of entries that are neither."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SubmissionError(f"{folder} is not a folder of submissions")
    if (folder / "steps").is_dir():
        raise SubmissionError(
            f"{folder} is one workbook, not a folder of submissions: put each learner's copy in it"
        )
    entries = sorted((p for p in folder.iterdir() if _visible(p)), key=lambda p: sort_key(p.name))
    folders = {p.name for p in entries if p.is_dir()}
    found: list[Submission] = []
    skipped: list[str] = []
    for path in entries:
        if path.is_dir():
            found.append(Submission(path.name, path))
        elif path.suffix.lower() == ".zip":
            found.append(Submission(path.stem if path.stem not in folders else path.name, path))
        else:
            skipped.append(path.name)
    return sorted(found, key=lambda s: sort_key(s.name)), skipped


def extract_zip(archive: Path, into: Path) -> Path:
    """Unpack a learner's zip (never outside `into`; zipfile drops absolute and `..` paths)."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
            size = sum(member.file_size for member in members)
            if len(members) > ZIP_MAX_FILES or size > ZIP_MAX_BYTES:
                raise SubmissionError(
                    f"{archive.name} is too big to grade ({len(members)} files, {size // 2**20} MB unpacked)"
                )
            bundle.extractall(into)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, NotImplementedError, EOFError) as exc:
        raise SubmissionError(f"{archive.name} is not a readable zip file ({exc})") from None
    return into


def find_workbook(base: Path) -> Path:
    """The workbook inside a submission: at its top, or inside its only top folder."""
    if (base / "steps").is_dir():
        return base
    children = [p for p in base.iterdir() if p.is_dir() and _visible(p)]
    if len(children) == 1 and (children[0] / "steps").is_dir():
        return children[0]
    raise SubmissionError("no steps/ folder, neither at the top of the submission nor in its only folder")


def unpack(submission: Submission, into: Path) -> Path:
    """The workbook root of a submission; a zip (or a folder with just one zip) is extracted into `into`."""
    archive = submission.path
    if archive.is_dir():
        try:
            return find_workbook(archive)
        except SubmissionError:
            zips = [p for p in archive.iterdir() if p.is_file() and p.suffix.lower() == ".zip"]
            folders = [p for p in archive.iterdir() if p.is_dir() and _visible(p)]
            if len(zips) != 1 or folders:  # Gradescope keeps an uploaded zip as it is: look inside that
                raise
            archive = zips[0]
    into.mkdir(parents=True, exist_ok=True)
    try:
        return find_workbook(extract_zip(archive, into))
    except OSError as exc:
        raise SubmissionError(f"{archive.name} cannot be unpacked ({exc.strerror or exc})") from None


# --- scores ----------------------------------------------------------------------------------------------


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


# --- the learner's database role -------------------------------------------------------------------------


_GRANT_LOCK = threading.Lock()


class LearnerRole:
    """A login role for one learner: it may create databases and drop only those it owns.

    The learner's test processes get a DSN for this role in WORKBOOK_PG_DSN; the test fixtures create and
    drop their databases through it, so no learner can see the inside of, or drop, another's database.
    """

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.name = f"wb_grade_{secrets.token_hex(6)}"
        self.password = secrets.token_urlsafe(18)

    def __enter__(self) -> LearnerRole:
        self.server.execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN CREATEDB NOSUPERUSER NOCREATEROLE CONNECTION LIMIT {} PASSWORD {}"
            ).format(
                sql.Identifier(self.name), sql.Literal(ROLE_CONNECTION_LIMIT), sql.Literal(self.password)
            )
        )
        # It creates its databases from the admin database, which is closed to other roles by default. One
        # grant at a time: two at once update the same catalog row, and PostgreSQL refuses the second.
        with _GRANT_LOCK:
            self.server.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(self.server.admin_database), sql.Identifier(self.name)
                )
            )
        return self

    def dsn(self) -> str:
        return PostgresServer(
            host=self.server.host,
            port=self.server.port,
            user=self.name,
            password=self.password,
            admin_database=self.server.admin_database,
        ).dsn()

    def databases(self) -> list[str]:
        rows = self.server.execute(
            sql.SQL(
                "SELECT d.datname FROM pg_database d JOIN pg_roles r ON d.datdba = r.oid WHERE r.rolname = {}"
                " ORDER BY 1"
            ).format(sql.Literal(self.name))
        )
        return [row[0] for row in rows]

    def clear(self) -> None:
        """Drop every database the role owns, connections and all: the next step starts clean."""
        for name in self.databases():
            with contextlib.suppress(psycopg2.Error):
                self.server.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(psycopg2.Error):
            self.clear()
            self.server.execute(
                sql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {}").format(
                    sql.Literal(self.name)
                )
            )
            role = sql.Identifier(self.name)
            with _GRANT_LOCK:  # its grant on the admin database goes first; one catalog change at a time
                self.server.execute(
                    sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(
                        sql.Identifier(self.server.admin_database), role
                    )
                )
                try:
                    self.server.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))
                except psycopg2.Error:
                    self.server.execute(sql.SQL("DROP OWNED BY {}").format(role))
                    self.server.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))


# --- running one step in a sandbox -----------------------------------------------------------------------


def suite_files(root: Path, steps: Sequence[catalogue.Step]) -> list[Path]:
    """What of tests/ the suites of `steps` need: their own folders, the top-level files (conftest.py) and
    support folders holding no tests (sql/). Never other suites, such as the tooling's own tests."""
    tests = root / "tests"
    wanted = {step.name for step in steps}
    every_step = {step.name for step in catalogue.steps()}
    chosen = []
    for entry in sorted(tests.iterdir()):
        if entry.name in ("__pycache__", ".pytest_cache"):
            continue
        if entry.is_file() or entry.name in wanted:
            chosen.append(entry)
        elif entry.name not in every_step and not any(entry.rglob("test_*.py")):
            chosen.append(entry)
    return chosen


def _copy_instructor_files(root: Path, into: Path, steps: Sequence[catalogue.Step]) -> None:
    (into / "tests").mkdir(parents=True)
    for source in [root / name for name in INSTRUCTOR_FILES] + suite_files(root, steps):
        target = into / source.relative_to(root)
        if source.is_dir():
            shutil.copytree(source, target, ignore=INSTRUCTOR_IGNORED, dirs_exist_ok=True)
        elif source.is_file():
            shutil.copy2(source, target)


def take_snapshot(root: Path, into: Path, steps: Sequence[catalogue.Step]) -> Path:
    """The instructor's suites and tooling as they are when grading starts, compiled once: every learner
    is graded by the same tests even if the checkout is edited during the run."""
    _copy_instructor_files(root, into, steps)
    compileall.compile_dir(into / "workbook", quiet=2)
    return into


def vet_tree(tree: Path, root: Path) -> None:
    """Refuse a step folder that is not the learner's own plain files: SubmissionError says why.

    A steps/stepN that is a link (to a classmate's copy, to solutions/), a folder link anywhere inside it,
    a file link that leads out of the submission, a FIFO, socket or device, or more than FOLDER_MAX_FILES
    files or FOLDER_MAX_BYTES bytes. A file link that stays inside the submission is followed (copied as
    the file it names); so are links a zip cannot hold anyway.
    """
    root = root.resolve()
    where = tree.relative_to(tree.parents[1]).as_posix()  # steps/stepN
    for part in (tree.parent, tree):
        if part.is_symlink():
            raise SubmissionError(
                f"{part.relative_to(part.parents[1]).as_posix()} is a link, not the learner's own folder"
            )
    if not tree.exists():
        return
    count = size = 0
    for folder, dirs, files in os.walk(tree):
        skipped = IGNORED(folder, dirs + files)  # caches and checkouts are not copied: not counted either
        dirs[:] = [name for name in dirs if name not in skipped]
        for name in dirs + [name for name in files if name not in skipped]:
            path = Path(folder) / name
            shown = f"{where}/{path.relative_to(tree).as_posix()}"
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                target = path.resolve()
                if name in dirs or target.is_dir():
                    raise SubmissionError(f"{shown} is a link to a folder")
                if not target.is_relative_to(root) or not target.is_file():
                    raise SubmissionError(f"{shown} is a link that leads out of the submission")
                info = target.stat()
            elif not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                raise SubmissionError(f"{shown} is not a plain file or folder")
            count += 1
            size += info.st_size if stat.S_ISREG(info.st_mode) else 0
            if count > FOLDER_MAX_FILES or size > FOLDER_MAX_BYTES:
                raise SubmissionError(f"{where} is too big to grade (over {FOLDER_MAX_FILES} files or "
                                      f"{FOLDER_MAX_BYTES // 2**20} MB)")  # fmt: skip


def make_sandbox(sandbox: Path, learner_tree: Path, step: catalogue.Step, snapshot: Path) -> None:
    """The instructor's suite and tooling plus one step of the learner (vetted by vet_tree), all copies."""
    _copy_instructor_files(snapshot, sandbox, [step])
    shutil.copytree(learner_tree, step.tree(sandbox, "steps"), symlinks=False, ignore=IGNORED)


def plugin_modules() -> set[str]:
    """Top-level modules of installed pytest plugins. pytest rewrites their asserts when it loads them and,
    with warnings as errors, refuses to start if they were imported before: they must not be preloaded."""
    from importlib.metadata import distributions

    names = set()
    for dist in distributions():
        if not any(entry.group == "pytest11" for entry in dist.entry_points):
            continue
        for file in dist.files or []:
            parts = file.parts
            if len(parts) == 1 and file.suffix == ".py":
                names.add(file.stem)
            elif len(parts) == 2 and parts[1] == "__init__.py":
                names.add(parts[0])
            elif len(parts) == 3 and parts[2] == "__init__.py":  # a src/ layout
                names.add(parts[1])
        names.update(entry.module.split(".")[0] for entry in dist.entry_points if entry.group == "pytest11")
    return names


def preload_modules(plugins: set[str]) -> list[str]:
    """What the fork server imports once: PRELOAD but the pytest plugins, and this module."""
    return [name for name in PRELOAD if name.split(".")[0] not in plugins] + ["workbook.grade"]


class _Capture(threading.Thread):
    """Drains a pipe, keeping the first and last half of MAX_OUTPUT bytes: output never blocks the child."""

    def __init__(self, fd: int, limit: int) -> None:
        super().__init__(daemon=True)
        self.fd, self.half = fd, limit // 2
        self.head, self.tail = bytearray(), bytearray()
        self.total = 0

    def run(self) -> None:
        try:
            while chunk := os.read(self.fd, 65536):
                self.total += len(chunk)
                room = self.half - len(self.head)
                if room > 0:
                    self.head += chunk[:room]
                    chunk = chunk[room:]
                if chunk:
                    self.tail += chunk
                    del self.tail[: max(0, len(self.tail) - self.half)]
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                os.close(self.fd)

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        head = self.head.decode(errors="replace")
        if not self.truncated:
            return head + self.tail.decode(errors="replace")
        cut = self.total - len(self.head) - len(self.tail)
        return f"{head}\n[... {cut} bytes of output cut ...]\n{self.tail.decode(errors='replace')}"


@dataclass
class Completed:
    returncode: int | None
    output: str
    output_bytes: int
    truncated: bool
    timed_out: bool
    seconds: float
    timeout: float = 0.0


class _Stream:
    """A pytest plugin for the child: appends every collected test and every outcome to a file at once.

    What is written survives a SIGKILL, so a run that times out or dies still shows what passed.
    """

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _write(self, **data: Any) -> None:
        os.write(self.fd, (json.dumps(data) + "\n").encode())

    def pytest_collection_finish(self, session: Any) -> None:
        for item in session.items:
            marker = item.get_closest_marker("task")
            self._write(collected=item.nodeid, task=marker.args[0] if marker and marker.args else None)

    def pytest_runtest_logreport(self, report: Any) -> None:
        self._write(nodeid=report.nodeid, when=report.when, outcome=report.outcome)


def _forget_modules(prefixes: Sequence[str]) -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in prefixes:
            del sys.modules[name]


def _child(request: dict[str, Any], output: Any) -> None:
    """The test process (runs in the fork server's child): one pytest session inside one sandbox."""
    code = 70
    try:
        os.setsid()  # its own process group: a timeout kills it and everything it started
        os.dup2(output.fileno(), 1)
        os.dup2(output.fileno(), 2)
        output.close()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        sandbox = request["sandbox"]
        # The fork server imported the instructor's `workbook`; the suite must use the sandbox's copies.
        _forget_modules(("workbook", "tests", catalogue.PACKAGE, *request["plugins"]))
        instructor = {str(Path(p).resolve()) for p in request["forget_paths"]}
        sys.path[:] = [sandbox] + [p for p in sys.path if p and str(Path(p).resolve()) not in instructor]
        sys.path_importer_cache.clear()
        importlib.invalidate_caches()
        os.chdir(sandbox)
        os.environ.clear()
        os.environ.update(request["env"])
        tempfile.tempdir = None
        import pytest

        code = int(pytest.main(request["args"], plugins=[_Stream(request["stream"])]))
    except BaseException:  # anything at all: say what, and leave with a code the grader recognises
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def kill_marked(token: str) -> int:
    """SIGKILL every process whose environment carries this run's marker (ones that left the group)."""
    needle = f"{RUN_MARKER}={token}".encode()
    killed = 0
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError):
            if needle in (entry / "environ").read_bytes().split(b"\0") and int(entry.name) != os.getpid():
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    return killed


class Launcher:
    """Starts test processes from a warm fork server, watches their time and kills what they leave."""

    def __init__(self, start_method: str | None = None) -> None:
        available = multiprocessing.get_all_start_methods()
        method = start_method or ("forkserver" if "forkserver" in available else "spawn")
        # aiopg's SQLAlchemy reads this when imported, which the fork server does before any test runs.
        os.environ.setdefault("SQLALCHEMY_WARN_20", "1")
        self.context = multiprocessing.get_context(method)
        self.plugins = sorted(plugin_modules())
        if method == "forkserver":
            self.context.set_forkserver_preload(preload_modules(set(self.plugins)))
        self._active: set[int] = set()
        self._lock = threading.Lock()
        self.stopping = threading.Event()

    def run(self, request: dict[str, Any], timeout: float, max_output: int = MAX_OUTPUT) -> Completed:
        """Run `_child(request)`; kill its process group on timeout; keep at most max_output bytes."""
        token = request["env"][RUN_MARKER]
        request = {**request, "plugins": self.plugins}
        reader, writer = self.context.Pipe(duplex=False)
        process = self.context.Process(target=_child, args=(request, writer), name="workbook-grade")
        started = time.monotonic()
        process.start()
        writer.close()
        capture = _Capture(os.dup(reader.fileno()), max_output)
        reader.close()
        capture.start()
        assert process.pid is not None
        with self._lock:
            self._active.add(process.pid)
        try:
            process.join(timeout)
            timed_out = process.exitcode is None
        finally:
            kill_group(process.pid)  # on timeout; and stragglers such as a server the tests left running
            if process.exitcode is None:
                process.kill()
            process.join()
            kill_marked(token)
            with self._lock:
                self._active.discard(process.pid)
        seconds = time.monotonic() - started
        capture.join(10)
        returncode = None if timed_out else process.exitcode
        with contextlib.suppress(ValueError):
            process.close()
        return Completed(
            returncode,
            capture.text(),
            capture.total,
            capture.truncated,
            timed_out,
            seconds,
            timeout,
        )

    def kill_all(self) -> None:
        """Ctrl+C: every running test process goes, with its group."""
        self.stopping.set()
        with self._lock:
            for pid in self._active:
                kill_group(pid)


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
            problems.append(_broken_reason(str(report["broken"])))
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


@dataclass
class Run:
    """What every step's grading shares: the server, the launcher, the workspace and the settings.

    `snapshot` is what sandboxes are copied from; `root` is the instructor's checkout, kept off the test
    processes' sys.path."""

    server: PostgresServer | None
    launcher: Launcher
    workspace: Path
    timeout: float
    snapshot: Path
    root: Path = catalogue.ROOT
    max_output: int = MAX_OUTPUT


def _base_env(sandbox: Path, tmp: Path, dsn: str | None, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (ENV_DSN, "PYTHONPATH", "WORKBOOK_TARGET")}
    env.update(
        PYTHONPATH=str(sandbox),
        TMPDIR=str(tmp),
        SQLALCHEMY_WARN_20="1",
        **JUDGE_ENV,
        **{RUN_MARKER: token},
    )
    if dsn:
        env[ENV_DSN] = dsn
    return env


def sandbox_damage(sandbox: Path, step: catalogue.Step) -> list[str]:
    """Which of the instructor's files in the sandbox the learner's code removed (it cannot reach others)."""
    wanted = [sandbox / "tests" / step.name, sandbox / "tests" / "conftest.py", sandbox / "workbook"]
    gone = [p.relative_to(sandbox).as_posix() for p in wanted if not p.exists()]
    return (
        [f"the code deleted {', '.join(gone)} (in its sandbox copy; nothing else was touched)"]
        if gone
        else []
    )


def grade_step(run: Run, step: catalogue.Step, workbook: Path, workdir: Path, dsn: str | None) -> StepGrade:
    """Copy one step of a learner into a fresh sandbox and run the instructor's suite for it there."""
    tree = step.tree(workbook, "steps")
    try:
        vet_tree(tree, workbook)
    except SubmissionError as exc:
        return StepGrade.zero(step, str(exc))
    if not tree.is_dir():
        return StepGrade.zero(step, f"no steps/{step.name} folder in the submission")
    if not (tree / catalogue.PACKAGE).is_dir():
        return StepGrade.zero(step, f"no {catalogue.PACKAGE} package in steps/{step.name}")
    sandbox, tmp = workdir / "sandbox", workdir / "tmp"
    try:
        make_sandbox(sandbox, tree, step, run.snapshot)
        tmp.mkdir()
    except OSError as exc:
        return StepGrade.zero(step, f"steps/{step.name} could not be copied ({exc.strerror or exc})")
    report_path, stream_path = workdir / "report.json", workdir / "progress.jsonl"
    token = secrets.token_hex(8)
    request = {
        "sandbox": str(sandbox),
        "stream": str(stream_path),
        "forget_paths": [str(run.root)],
        "env": _base_env(sandbox, tmp, dsn, token),
        "args": [
            f"tests/{step.name}", "--target", "steps", "--workbook-report", str(report_path),
            "--basetemp", str(tmp / "pytest"), "-q", "--tb=short", "--color=no", *JUDGE_ARGS,
        ],
    }  # fmt: skip
    completed = run.launcher.run(request, run.timeout, run.max_output)
    try:
        graded = score_step(step, completed, read_report(report_path), read_stream(stream_path))
    except Exception as exc:  # a report of an unexpected shape costs this step, never the run
        return StepGrade.zero(step, f"grader error: {type(exc).__name__}: {exc}"[:300])
    graded.problems += sandbox_damage(sandbox, step)
    return graded


def grade_unit(run: Run, step: catalogue.Step, workbook: Path, workdir: Path) -> StepGrade:
    """One step of one learner, with a database role of its own that is dropped with its databases after."""
    if run.launcher.stopping.is_set():
        return StepGrade.zero(step, "grading was interrupted")
    workdir.mkdir(parents=True)
    try:
        if run.server is None:
            return grade_step(run, step, workbook, workdir, None)
        with LearnerRole(run.server) as role:
            return grade_step(run, step, workbook, workdir, role.dsn())
    except psycopg2.Error as exc:  # the database refused the grader itself: this step's error, not the run's
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StepGrade.zero(step, f"grader error: PostgreSQL refused: {first}"[:300])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- progress --------------------------------------------------------------------------------------------


class Progress:
    """A plain-text progress bar on stderr: redrawn in place on a terminal, a line per learner otherwise."""

    def __init__(self, learners: int, steps: int, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.learners, self.total = learners, learners * steps
        self.steps_per_learner = steps
        self.width = width
        self.done = 0
        self.learners_done = 0
        self.per_learner: dict[str, int] = {}
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def line(self, note: str = "") -> str:
        filled = self.width * self.done // self.total if self.total else self.width
        elapsed = int(time.monotonic() - self.started)
        bar = "#" * filled + "-" * (self.width - filled)
        return (
            f"grading [{bar}] {self.done}/{self.total} steps, {self.learners_done}/{self.learners} learners, "
            f"{elapsed // 60}:{elapsed % 60:02d}" + (f"  {note}" if note else "")
        )

    def step_done(self, learner: str, graded: StepGrade) -> None:
        with self._lock:
            self.done += 1
            self.per_learner[learner] = self.per_learner.get(learner, 0) + 1
            finished = self.per_learner[learner] == self.steps_per_learner
            self.learners_done += finished
            note = f"{learner}: step {graded.step.number} {format_points(graded.earned)}/{graded.step.points}"
            if graded.problems:
                note += f" ({graded.problems[0]})"
            if self.tty:
                self.stream.write("\r\x1b[K" + self.line(note[:80]))
            elif finished or self.done == self.total:
                self.stream.write(self.line(f"{learner} done") + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


# --- the whole class -------------------------------------------------------------------------------------


@contextlib.contextmanager
def grading_run(
    steps: Sequence[catalogue.Step],
    timeout: float,
    root: Path = catalogue.ROOT,
    start_method: str | None = None,
) -> Iterator[Run]:
    """One server, one fork server and one workspace for a whole grading run; all gone afterwards."""
    launcher = Launcher(start_method)
    with (
        tempfile.TemporaryDirectory(prefix="workbook-grade-", ignore_cleanup_errors=True) as workspace,
        throwaway_postgres() as server,
    ):
        # The fork server starts with this process's environment: keep an instructor's superuser DSN out
        # of what learner code could read in /proc/self/environ. Each learner gets a role's DSN instead.
        instructor_dsn = os.environ.pop(ENV_DSN, None)
        try:
            try:
                with LearnerRole(server):
                    pass
            except psycopg2.Error as exc:
                raise GradingError(
                    f"Grading gives every learner a PostgreSQL role of their own, and this server refused to "
                    f"create one ({str(exc).strip()}). Point {ENV_DSN} at a superuser, or unset it."
                ) from None
            snapshot = take_snapshot(root, Path(workspace) / "instructor", steps)
            yield Run(server, launcher, Path(workspace), timeout, snapshot, root)
        finally:
            launcher.kill_all()
            if instructor_dsn is not None:
                os.environ[ENV_DSN] = instructor_dsn


def grade_submissions(
    submissions: Sequence[Submission],
    steps: Sequence[catalogue.Step],
    *,
    jobs: int = 2,
    timeout: float = DEFAULT_TIMEOUT,
    root: Path = catalogue.ROOT,
    progress: Progress | None = None,
    start_method: str | None = None,
) -> list[LearnerGrade]:
    """Grade every step of every submission, `jobs` at a time; the result is sorted by learner name.

    The unit of work is one step of one learner, so that a slow step of one learner overlaps with quick
    ones of others. Called from a script, that script needs the `if __name__ == "__main__":` guard that
    multiprocessing asks for.
    """
    with grading_run(steps, timeout, root, start_method) as run:
        workbooks: list[Path | SubmissionError] = []
        for index, submission in enumerate(submissions):
            try:
                workbooks.append(unpack(submission, run.workspace / f"unpacked-{index:04d}"))
            except SubmissionError as exc:
                workbooks.append(exc)
        graded: dict[tuple[int, int], StepGrade] = {}

        def finish(index: int, result: StepGrade) -> None:
            graded[index, result.step.number] = result
            if progress:
                progress.step_done(submissions[index].name, result)

        with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="grade") as pool:
            futures = {}
            for index, workbook in enumerate(workbooks):
                for step in steps:
                    if isinstance(workbook, SubmissionError):
                        finish(index, StepGrade.zero(step, str(workbook)))
                        continue
                    workdir = run.workspace / f"learner-{index:04d}" / step.name
                    futures[pool.submit(grade_unit, run, step, workbook, workdir)] = index
            try:
                for future in as_completed(futures):
                    finish(futures[future], future.result())
            except BaseException:
                run.launcher.kill_all()
                for future in futures:
                    future.cancel()
                raise
            finally:
                if progress:
                    progress.close()
    results = []
    for index, (submission, workbook) in enumerate(zip(submissions, workbooks, strict=True)):
        problems = [str(workbook)] if isinstance(workbook, SubmissionError) else []
        results.append(LearnerGrade(submission.name, [graded[index, s.number] for s in steps], problems))
    return sorted(results, key=lambda g: sort_key(g.name))


# --- outputs ---------------------------------------------------------------------------------------------


def _csv_cell(text: str) -> str:
    """Keep a spreadsheet from reading a learner's name as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def write_gradebook(path: Path, grades: Sequence[LearnerGrade], steps: Sequence[catalogue.Step]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["learner", *(step.name for step in steps), "total"])
        for grade in grades:
            by_step = {s.step.number: s for s in grade.steps}
            writer.writerow(
                [
                    _csv_cell(grade.name),
                    *(format_points(by_step[s.number].earned) for s in steps),
                    format_points(grade.total),
                ]
            )


def _clip(text: str, limit: int = MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[:limit] + " [...]"


def task_feedback(score: TaskScore, step: StepGrade) -> str:
    """What a learner reads under one task: how many checks pass, what failed and why, step problems."""
    lines = [f"{score.passed}/{score.total} checks pass." if score.total else "No check of this task ran."]
    for check in score.checks:
        if check.outcome != "passed":
            message = _clip(check.message.strip()) or check.outcome
            lines.append(f"- {check.name}: {message}")
    if not score.done:  # why the checks may not have run at all
        lines += [f"Problem with step {step.step.number}: {problem}" for problem in step.problems]
    return "\n".join(lines)


def gradescope_results(grade: LearnerGrade) -> dict[str, Any]:
    """Gradescope's autograder results: one test per task, partial credit, feedback as its output."""
    tests = []
    for step in grade.steps:
        for score in step.tasks:
            tests.append(
                {
                    "name": f"Step {step.step.number}, task {score.task.number}: {score.task.title}",
                    "number": f"{step.step.number}.{score.task.number}",
                    "score": round(float(score.earned), 2),
                    "max_score": score.task.points,
                    "status": "passed" if score.done else "failed",
                    "output": task_feedback(score, step),
                    "visibility": "visible",
                }
            )
    summary = [f"{format_points(grade.total)}/{grade.max_points} points."]
    summary += [f"- {problem}" for problem in grade.all_problems()]
    return {
        "score": round(float(grade.total), 2),
        "output": "\n".join(summary),
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def write_learner(folder: Path, grade: LearnerGrade) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(gradescope_results(grade), indent=1) + "\n")
    for step in grade.steps:
        if step.log:
            (folder / f"{step.step.name}.log").write_text(step.log, errors="replace")


TEMPLATES = Path(__file__).with_name("templates")


def _code_spans(text: str) -> markupsafe.Markup:
    """A catalogue title as HTML: escaped, with `code` spans."""
    escaped = str(markupsafe.escape(text))
    return markupsafe.Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped))


def _task_rows(grade: LearnerGrade) -> list[dict[str, Any]]:
    rows = []
    for graded in grade.steps:
        for score in graded.tasks:
            failing = [c for c in score.checks if c.outcome != "passed"]
            rows.append({
                "label": f"{graded.step.number}.{score.task.number}",
                "title": score.task.title,
                "state": "done" if score.done else "failing",
                "passed": score.passed,
                "total": score.total,
                "points": format_points(score.earned),
                "max_points": score.task.points,
                "failing": [f"{c.name}: {_clip(c.message.strip()) or c.outcome}" for c in failing],
            })  # fmt: skip
    return rows


def _pass_rates(grades: Sequence[LearnerGrade], steps: Sequence[catalogue.Step]) -> list[dict[str, Any]]:
    rates = []
    for step in steps:
        for task in step.tasks:
            scores = [
                score
                for grade in grades
                for graded in grade.steps
                if graded.step.number == step.number
                for score in graded.tasks
                if score.task.number == task.number
            ]
            done = sum(score.done for score in scores)
            shares = [score.passed / score.total for score in scores if score.total]
            rates.append({
                "label": f"{step.number}.{task.number}",
                "title": task.title,
                "done": done,
                "count": len(scores),
                "share_done": done / len(scores) if scores else 0.0,
                "share_checks": sum(shares) / len(scores) if scores else 0.0,
            })  # fmt: skip
    return rates


def render_report(grades: Sequence[LearnerGrade], steps: Sequence[catalogue.Step]) -> str:
    """The class at a glance, pass rates per task, then every learner's details, from
    workbook/templates/report.html. Jinja2 escapes every value: a submission's name, messages and
    output cannot inject markup into the instructor's page."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    environment.filters["code_spans"] = _code_spans
    overview = []
    for grade in grades:
        by_step = {s.step.number: s for s in grade.steps}
        overview.append({
            "name": grade.name,
            "steps": [format_points(by_step[s.number].earned) for s in steps],
            "total": format_points(grade.total),
            "problems": len(grade.all_problems()),
        })  # fmt: skip
    learners = [
        {"name": grade.name, "total": format_points(grade.total), "max_points": grade.max_points,
         "problems": grade.all_problems(), "tasks": _task_rows(grade)}
        for grade in grades
    ]  # fmt: skip
    return environment.get_template("report.html").render(
        grades=grades,
        steps=steps,
        max_points=sum(step.points for step in steps),
        overview=overview,
        rates=_pass_rates(grades, steps),
        learners=learners,
    )


def write_outputs(out: Path, grades: Sequence[LearnerGrade], steps: Sequence[catalogue.Step]) -> None:
    """gradebook.csv, report.html and learners/NAME/ with results.json and the step logs."""
    out.mkdir(parents=True, exist_ok=True)
    learners = out / LEARNERS_DIR
    if learners.is_dir():  # a learner graded last time but not now must not linger; only our folders go
        for old in learners.iterdir():
            if old.is_dir() and (old / "results.json").is_file():
                shutil.rmtree(old)
    write_gradebook(out / "gradebook.csv", grades, steps)
    (out / "report.html").write_text(render_report(grades, steps), encoding="utf-8")
    for grade in grades:
        write_learner(learners / grade.name, grade)


# --- command line ----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m workbook grade` (shared with this module's own entry point)."""
    parser.add_argument(
        "submissions", type=Path, help="a folder with one workbook copy (or .zip) per learner"
    )
    parser.add_argument("--steps", help="which steps to grade, such as 1-3 or 1,4-9 (default: all)")
    parser.add_argument(
        "--out", type=Path, default=Path(DEFAULT_OUT), help="where to write (default: grades)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=DEFAULT_JOBS,
        help=f"steps graded at once (default {DEFAULT_JOBS}: twice the CPUs)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds one step of one learner may take (default {DEFAULT_TIMEOUT:.0f})",
    )


def run(args: argparse.Namespace) -> int:
    """Grade a class and write the outputs; the exit status is 0 even when learners fail (that is data)."""
    steps = catalogue.parse_step_range(args.steps) if args.steps else list(catalogue.steps())
    try:
        submissions, skipped = discover(args.submissions)
    except SubmissionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name in skipped:
        print(f"note: {name} is neither a folder nor a .zip: not graded", file=sys.stderr)
    if not submissions:
        print(f"error: no submissions (folders or .zip files) in {args.submissions}", file=sys.stderr)
        return 2
    print(
        f"Grading {len(submissions)} learners on steps {', '.join(str(s.number) for s in steps)} "
        f"({args.jobs} at a time, {args.timeout:.0f}s per step)...",
        file=sys.stderr,
    )
    progress = Progress(len(submissions), len(steps))
    try:
        grades = grade_submissions(
            submissions, steps, jobs=args.jobs, timeout=args.timeout, progress=progress
        )
    except (GradingError, NoPostgresAvailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\nInterrupted: the test processes and the database are gone, nothing was written.",
            file=sys.stderr,
        )
        return 130
    write_outputs(args.out, grades, steps)
    width = max(len(g.name) for g in grades)
    for grade in grades:
        problems = grade.all_problems()
        note = f"  ({len(problems)} problem{'s' * (len(problems) != 1)})" if problems else ""
        print(f"  {grade.name:<{width}}  {format_points(grade.total):>6}/{grade.max_points}{note}")
    print(f"Wrote {args.out / 'gradebook.csv'}, {args.out / 'report.html'} and a results.json per learner.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbook grade", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KeyError as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
