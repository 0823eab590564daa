"""Running the class: every step of every learner as a test process of its own, `--jobs` at a time.

- Each run is a separate process in its own process group, killed as a group on timeout (and any process
  left with the run's marker in its environment after it), with its output read through a pipe and
  capped, so a runaway learner costs time, never the run.
- The processes are forked from a warm interpreter (multiprocessing's forkserver) that has already
  imported pytest, aiohttp, SQLAlchemy and friends, saving the 0.2-0.8 s a new interpreter spends on
  that. The child forgets the instructor's own `workbook` and `tests` modules and runs pytest inside the
  sandbox as `python -m pytest tests/stepN --target steps` would.
- The unit of work is one step of one learner, run `--jobs` at a time (default: twice the CPUs, because
  steps spend much of their time waiting on sockets and PostgreSQL).
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import json
import multiprocessing
import multiprocessing.util
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg2

from .. import catalogue, environments
from ..judge.learner_process import PRELOAD as LEARNER_PRELOAD
from ..pg import (
    ENV_DSN,
    NoPostgresAvailable,
    PostgresServer,
    describe,
    find_bindir,
    grading_connections,
    local_postgres,
    throwaway_postgres,
)
from ..runner import JUDGE_ARGS, JUDGE_ENV, RunningSuites, kill_group
from . import confinement
from .confinement import Confinement, UidPool
from .database import LearnerRole
from .sandbox import fingerprint, make_sandbox, sandbox_damage, take_snapshot
from .scores import MAX_OUTPUT, Completed, LearnerGrade, StepGrade, read_report, read_stream, score_step
from .submissions import Submission, SubmissionError, sort_key, unpack, vet_tree
from .watchdog import Watchdog
from .workspace import remember
from .workspace import workspace as grading_workspace

if TYPE_CHECKING:
    from .progress import Progress


DEFAULT_TIMEOUT = 120.0
# Steps wait on sockets, timeouts and PostgreSQL much of the time: two runs per CPU keep the CPUs busy.
DEFAULT_JOBS = 2 * (os.cpu_count() or 1)

RUN_MARKER = "WORKBOOK_GRADE_RUN"  # every process of one step run inherits it: how stragglers are found

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


class GradingError(RuntimeError):
    """Grading cannot start at all (no usable database server); the message says what to do."""


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
    return [name for name in PRELOAD if name.split(".")[0] not in plugins] + ["workbook.grading.running"]


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
        self.running = RunningSuites()

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
        self.running.add(process.pid)  # killed at once if kill_all came while it started
        try:
            process.join(timeout)
            timed_out = process.exitcode is None
        finally:
            kill_group(process.pid)  # on timeout; and stragglers such as a server the tests left running
            if process.exitcode is None:
                process.kill()
            process.join()
            kill_marked(token)
            self.running.discard(process.pid)
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

    @property
    def stopping(self) -> bool:
        return self.running.stopping

    def kill_all(self) -> None:
        """Ctrl+C, SIGTERM, SIGHUP: every running test process goes, with its group; none starts after."""
        self.running.kill_all()


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
    # The snapshot's fingerprint (sandbox.fingerprint): run.json carries it, so shards can be matched.
    snapshot_hash: str = ""
    # How learner processes are confined; run.json and the report say it, so a grade can be weighed by it.
    tier: str = confinement.NONE
    # What every run's Confinement shares (the runtime interpreter, bwrap); None when not confined.
    base: Confinement | None = None
    # The runtime's interpreter for each step environment ("" for the judge's own), when confined.
    pythons: dict[str, str] = field(default_factory=dict)
    # The environments of their own that the graded steps' apps run on (name -> prefix).
    own_environments: dict[str, Path] = field(default_factory=dict)
    uids: UidPool | None = None
    socket_dir: Path | None = None
    # Where a replacement server is entered, so that it is stopped with the run (see revive_database).
    servers: contextlib.ExitStack | None = None
    # Keeps the storage and statement quotas PostgreSQL cannot (see watchdog.py); None without a server.
    watchdog: Watchdog | None = None
    # The server's max_connections, sized from --jobs (pg.grading_connections); a revived server gets it too.
    max_connections: int | None = None
    # The server's generation: 0 for the first, one more for each replacement. A step notes it before it
    # starts; if the server moved past it by the time the step ended, the step overlapped an outage.
    generation: int = 0
    # Why the server is gone for good (a revival failed): every later step says so instead of running.
    lost: str = ""
    _server_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def database_alive(self) -> bool:
        server = self.database
        if server is None:
            return True
        try:
            server.execute("SELECT 1")
        except psycopg2.Error:
            return False
        return True

    def _dead_for_sure(self, tries: int = 3, pause: float = 0.5) -> bool:
        """The server missed `tries` checks in a row: a reviving stops it and regrades what was running,
        so one refused connection on a loaded machine must not pass for a death."""
        for attempt in range(tries):
            if self.database_alive():
                return False
            if attempt + 1 < tries:
                time.sleep(pause)
        return True

    def revive_database(self, generation: int | None = None) -> bool:
        """Replace a server that died (true if the server is now a newer one than `generation`, the one a
        step started under): one lost server must not cost every later step.

        Only a private local cluster can be started again; another server is the instructor's to mind. The
        dead cluster's folder goes first: when a full file system killed it (a learner writing without
        end), the fresh copy of the template needs that room.
        """
        with self._server_lock:
            if generation is not None and generation != self.generation:
                return True  # another step's thread replaced it meanwhile
            if self.server is None or self.servers is None or self.server.kind != "local" or self.lost:
                return False
            if not self._dead_for_sure():
                return False
            self.server.release()
            try:
                bindir = find_bindir()
                if bindir is None:
                    raise NoPostgresAvailable("its server binaries are gone")
                self.server = self.servers.enter_context(
                    local_postgres(bindir, socket_dir=self.socket_dir, max_connections=self.max_connections)
                )
            except NoPostgresAvailable as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                self.lost = f"the database server died and could not be started again ({first})"[:300]
                return False
            self.generation += 1
            return True

    @property
    def database(self) -> PostgresServer | None:
        """The server as the judges reach it: through its socket folder when it has one (a confined
        network has no way to the TCP listener, and a step run hands out the socket folder too)."""
        return self.server.over_socket() if self.server is not None else None


@dataclass
class RunRecord:
    """What run.json says about one grading run: how confined, on which database, what, and how long; and
    what identifies it as one shard of a class (shards.py), so that grade-merge can refuse a missing,
    doubled or foreign one. A run of the whole class is shard 1 of 1."""

    tier: str = ""
    database: str = ""
    learners: int = 0
    steps: list[int] = field(default_factory=list)
    seconds: float = 0.0
    snapshot: str = ""  # sandbox.fingerprint of the instructor's suites and tooling graded with
    shard: dict[str, int] = field(default_factory=lambda: {"index": 1, "count": 1})
    graded: list[str] = field(default_factory=list)  # the learners this run graded, sorted
    # The whole class this shard was cut from: its size and shards.class_hash of its learners' names.
    roster: dict[str, Any] = field(default_factory=dict)
    # Set when learners/NAME/result.json in Classroom 50's format was asked for (outputs.classroom50_result).
    classroom50: dict[str, Any] | None = None
    # When the run started and ended (UTC, ISO 8601), and whether it graded every step it was asked to;
    # if not, `reason` says why. An older gradebook is never left in --out to look current: a failed
    # run's outputs take its place and say so.
    started: str = ""
    ended: str = ""
    completed: bool = False
    reason: str = ""


def utc_now() -> str:
    """The time as run.json and result.json write it: UTC to the second."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def failure_reason(exc: BaseException) -> str:
    """One line on why a run stopped, for run.json, the report and the steps it did not reach."""
    if isinstance(exc, KeyboardInterrupt):
        return "grading was interrupted (Ctrl+C)"
    if isinstance(exc, SystemExit):
        return f"grading was stopped by a signal (exit status {exc.code})"
    text = str(exc).strip()
    if isinstance(exc, (GradingError, NoPostgresAvailable)):
        return (text or type(exc).__name__)[:1500]
    first = text.splitlines()[0] if text else ""
    return f"grader error: {type(exc).__name__}: {first}".strip().rstrip(":")[:500]


def unfinished_grades(
    names: Sequence[str],
    steps: Sequence[catalogue.Step],
    graded: dict[tuple[str, int], StepGrade],
    reason: str,
) -> list[LearnerGrade]:
    """Every learner of a run that stopped: the steps it graded as they were, the rest at 0 saying why."""
    grades = []
    for name in names:
        missing = f"not graded: {reason}"
        mine = [graded.get((name, step.number)) or StepGrade.zero(step, missing) for step in steps]
        grades.append(LearnerGrade(name, mine))
    return sorted(grades, key=lambda g: sort_key(g.name))


def _base_env(run: Run, sandbox: Path, tmp: Path, dsn: str | None, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (ENV_DSN, "PYTHONPATH", "WORKBOOK_TARGET")}
    # The step environments found before grading began: the judge runs from the sandbox, where the
    # checkout's own .nox folder is not to be found.
    env.update({environments.variable(name): str(environments.interpreter(prefix))
                for name, prefix in run.own_environments.items()})  # fmt: skip
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
    # The judge's report and progress are root's alone: the learner's uid (and a classmate's) may traverse
    # the workdir once _confine opens it, and these names are predictable.
    judge = workdir / "judge"
    judge.mkdir(mode=0o700)
    report_path, stream_path = judge / "report.json", judge / "progress.jsonl"
    confined = _confine(run, step, workdir, sandbox, tmp) if run.base is not None else None
    token = secrets.token_hex(8)
    request = {
        "sandbox": str(sandbox),
        "stream": str(stream_path),
        "forget_paths": [str(run.root)],
        "env": _base_env(run, sandbox, tmp, dsn, token),
        "args": [
            f"tests/{step.name}", "--target", "steps", "--workbook-report", str(report_path),
            "--basetemp", str(tmp / "pytest"), "-q", "--tb=short", "--color=no", *JUDGE_ARGS,
        ],
    }  # fmt: skip
    if confined is not None:
        request["args"] += ["--confinement", str(workdir / "confinement.json")]
    try:
        completed = run.launcher.run(request, run.timeout, run.max_output)
    finally:
        if confined is not None and confined.uid is not None:
            confinement.clean_up(confined.uid, files=run.tier == confinement.UID, skip=(str(run.workspace),))
    try:
        graded = score_step(step, completed, read_report(report_path), read_stream(stream_path))
    except Exception as exc:  # a report of an unexpected shape costs this step, never the run
        return StepGrade.zero(step, f"grader error: {type(exc).__name__}: {exc}"[:300])
    graded.problems += sandbox_damage(sandbox, step)
    return graded


def _confine(run: Run, step: catalogue.Step, workdir: Path, sandbox: Path, tmp: Path) -> Confinement:
    """Lay out one run's folders for its confined learner processes and write their Confinement.

    Under a fresh uid, the learner can read the step's code, the configuration folder and the judge's
    temp folder (root's, open to the run's group), write its HOME, TMPDIR and launcher logs, and nothing
    else: the instructor's suite and tooling in the sandbox are root's alone, and every folder above is
    root's with traverse-only rights, so a classmate's run (another uid and group) gets nowhere.
    """
    assert run.base is not None
    tree, config = step.tree(sandbox, "steps"), sandbox / "config"
    home, learner_tmp, spool = workdir / "home", workdir / "learner-tmp", workdir / "spool"
    uid = run.uids.take() if run.uids is not None else None
    if uid is None:  # bubblewrap under our own uid: its mounts are the wall
        for folder in (home, learner_tmp, spool):
            folder.mkdir(mode=0o700)
    else:
        for folder in (workdir, workdir.parent, sandbox, sandbox / "steps", tmp):
            os.chmod(folder, 0o711)
        for private in ("tests", "workbook", "pyproject.toml"):
            os.chmod(sandbox / private, 0o700 if (sandbox / private).is_dir() else 0o600)
        for shared in (tree, config):
            if shared.is_dir():
                confinement.open_to_group(shared, uid)
        confinement.give(home, uid, uid)
        confinement.give(learner_tmp, uid, uid)
        spool.mkdir(mode=0o710)
        os.chown(spool, 0, uid)
    readable = [run.base.python_home, str(tree), str(config), str(tmp)]
    if run.socket_dir is not None:
        readable.append(str(run.socket_dir))
    confined = Confinement(
        tier=run.tier, python=run.pythons[step.environment],
        learner_side=run.base.learner_side, uid=uid, gid=uid,
        home=str(home), tmp=str(learner_tmp), spool=str(spool), readable=readable,
        writable=[str(home), str(learner_tmp), str(spool)], env=run.base.env, bwrap=run.base.bwrap,
    )  # fmt: skip
    confined.save(workdir / "confinement.json")
    return confined


# How many times one step is graded when the database server goes away under it: a learner who kills the
# server at every try must not keep its classmates' steps (or its own) going for ever.
MAX_ATTEMPTS = 3


def grade_unit(run: Run, step: catalogue.Step, workbook: Path, workdir: Path) -> StepGrade:
    """One step of one learner, with a database role of its own that is dropped with its databases after.

    If the database server died meanwhile (nothing a learner's role should be able to do; the machine's
    memory killer or a full disk can), it is started again, and every step whose run overlapped the outage
    is graded again, not only the one that noticed: a step started under the server's generation g whose
    run ended once the server had moved past g (or with the server dead) may have failed checks for it.
    """
    graded = None
    for attempt in range(MAX_ATTEMPTS):
        generation = run.generation  # read before the step takes its server: a newer one only costs a retry
        graded = _grade_unit_once(run, step, workbook, workdir)
        if run.lost or run.server is None:
            return graded
        if run.generation == generation and run.database_alive():
            # The server is fine, yet it refused the grader this step's role (a slot, a lock): once more,
            # after a moment. A dead server is revived below instead, and the step graded again there.
            if _refused_the_grader(graded) and attempt + 1 < MAX_ATTEMPTS and not run.launcher.stopping:
                time.sleep(REFUSAL_PAUSE * (attempt + 1))
                continue
            return graded
        revived = run.revive_database(generation)
        if run.lost:
            return StepGrade.zero(step, f"not graded: {run.lost}")
        if not revived:  # not a server of ours to start again, or alive after all: the grade stands
            return graded
    assert graded is not None
    graded.problems.append(
        f"the database server died during each of {MAX_ATTEMPTS} tries at grading this step: checks that "
        "failed may have failed for that, not for your code"
    )
    return graded


# Seconds before grading again a step whose database role the server refused to the grader itself (no
# learner code ran yet: a failure of the grader's environment, never the learner's), times the attempt.
REFUSAL_PAUSE = 1.0
REFUSED = "grader error: PostgreSQL refused"


def _refused_the_grader(graded: StepGrade) -> bool:
    return bool(graded.problems) and graded.problems[0].startswith(REFUSED)


def _grade_unit_once(run: Run, step: catalogue.Step, workbook: Path, workdir: Path) -> StepGrade:
    if run.launcher.stopping:
        return StepGrade.zero(step, "grading was interrupted")
    if run.lost:
        return StepGrade.zero(step, f"not graded: {run.lost}")
    # Private from the start: the learner's tree is copied in before _confine narrows what a uid may see,
    # so a folder opened first and narrowed later would let a classmate's polling process read it meanwhile.
    workdir.parent.mkdir(mode=0o700, exist_ok=True)
    workdir.mkdir(mode=0o700)
    try:
        if run.server is None:
            return grade_step(run, step, workbook, workdir, None)
        with LearnerRole(run.database) as role:
            return _with_quotas(run, step, role.name, grade_step(run, step, workbook, workdir, role.dsn()))
    except psycopg2.Error as exc:  # the database refused the grader itself: this step's error, not the run's
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StepGrade.zero(
            step, f"{REFUSED} this step's database role ({first}); it is not graded, which is no fault of "
            "your code: ask for it to be graded again"[:400]
        )  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _with_quotas(run: Run, step: catalogue.Step, role: str, graded: StepGrade) -> StepGrade:
    """What the watchdog saw of this step's role: past its storage share, the step is lost, saying why."""
    if run.watchdog is None:
        return graded
    breaches = run.watchdog.breaches(role)
    if run.watchdog.lost_step(role):
        return StepGrade.zero(step, "; ".join(breaches))
    graded.problems += breaches
    return graded


@contextlib.contextmanager
def grading_run(
    steps: Sequence[catalogue.Step],
    timeout: float,
    root: Path = catalogue.ROOT,
    start_method: str | None = None,
    *,
    trusted: bool = False,
    tier: str | None = None,
    private: Sequence[Path] = (),
    jobs: int = 2,
) -> Iterator[Run]:
    """One server, one fork server and one workspace for a whole grading run; all gone afterwards.

    The strongest confinement the machine allows (`tier` may ask for a weaker one); no confinement, or a
    database server that is not a private local cluster, only when the instructor says the class is
    `trusted`. In the uid-only tier, the checkout (`root`) and the `private` folders (submissions,
    outputs) must be unreadable to a stranger's uid, which is all that stands between them and the
    learners' processes there. `jobs`, the steps graded at once, sizes the server's connections.
    """
    own_environments = step_environments(steps)
    chosen, bwrap = confinement.detect_tier(tier)
    if tier == confinement.NONE and not trusted:
        raise GradingError("--tier none grades learners' code unconfined: say --trusted too if you mean it.")
    if chosen == confinement.NONE and not trusted:
        raise GradingError(
            "Grading runs every learner's code, and this machine can confine it neither under a uid of its "
            f"own (that needs root) nor with bubblewrap. {confinement.INSTALL_HINT} If you trust every "
            "learner of this class, grade unconfined with --trusted."
        )
    launcher = Launcher(start_method)
    with contextlib.ExitStack() as stack:
        workspace = stack.enter_context(grading_workspace())  # and the workspaces of killed graders go
        # The fork server's socket folder (pymp-*, made once per process): the next run removes it too.
        remember(workspace, [multiprocessing.util.get_temp_dir()])
        socket_dir = None
        if chosen != confinement.NONE:
            os.chmod(workspace, 0o711)
            socket_dir = workspace / "postgres"
            socket_dir.mkdir(mode=0o755)
        connections = grading_connections(jobs)
        server = stack.enter_context(throwaway_postgres(socket_dir=socket_dir, max_connections=connections))
        if chosen != confinement.NONE and not server.socket and not trusted:
            raise GradingError(
                "Confined grading needs its own private PostgreSQL cluster (local server binaries); this run "
                f"found {describe(server)}, which the learners' processes could not reach, or could reach "
                f"beyond their own databases. Unset {ENV_DSN}, or pass --trusted."
            )
        if socket_dir is not None and not server.socket:
            chosen = confinement.NONE  # trusted, on a server we cannot hand over by socket
        if socket_dir is not None:
            os.chmod(socket_dir, 0o755)
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
            snapshot = take_snapshot(root, workspace / "instructor", steps)
            os.chmod(snapshot, 0o700)
            run = Run(server, launcher, workspace, timeout, snapshot, root, tier=chosen, servers=stack,
                      max_connections=connections)  # fmt: skip
            if server is not None:
                run.watchdog = stack.enter_context(Watchdog(lambda: run.database))
            run.own_environments = own_environments
            run.snapshot_hash = fingerprint(snapshot)
            if chosen != confinement.NONE:
                # The checkout graded with and the one this code runs from (usually the same).
                checkouts = list(dict.fromkeys([root.resolve(), catalogue.ROOT.resolve()]))
                _prepare_confinement(
                    run, bwrap, socket_dir, [*checkouts, *private], trusted, own_environments
                )
            yield run
        finally:
            launcher.kill_all()
            if instructor_dsn is not None:
                os.environ[ENV_DSN] = instructor_dsn


def step_environments(steps: Sequence[catalogue.Step]) -> dict[str, Path]:
    """The environments of their own that these steps' apps run on (name -> prefix), checked before any
    learner is graded: present, and for the grader's Python version (grading links one interpreter)."""
    found: dict[str, Path] = {}
    for step in steps:
        if not step.environment or step.environment in found:
            continue
        try:
            python = environments.learner_python(step)
        except environments.EnvironmentMissing as exc:
            raise GradingError(str(exc)) from None
        if not environments.same_version(python):
            raise GradingError(
                f"Step {step.number}'s environment ({python}) is not for this Python "
                f"({sys.version.split()[0]}): build it with the interpreter that grades (nox does)."
            )
        found[step.environment] = Path(python).parent.parent
    return found


def _prepare_confinement(
    run: Run,
    bwrap: str | None,
    socket_dir: Path | None,
    private: list[Path],
    trusted: bool,
    own_environments: dict[str, Path],
) -> None:
    """The interpreter learners' uids can reach, their uid pool, and the uid tier's check of permissions."""
    pythons, learner_side, env = confinement.build_runtime(
        run.workspace / "runtime", run.snapshot / "workbook" / "learner_side", own_environments
    )
    run.pythons = pythons
    run.base = Confinement(
        tier=run.tier, python=pythons[""], learner_side=learner_side, env=env, bwrap=bwrap or ""
    )
    run.socket_dir = socket_dir
    if run.tier in (confinement.BWRAP_UID, confinement.UID):
        run.uids = UidPool()
        _check_runtime(run.uids.take(), pythons, env)
    if run.tier == confinement.UID and run.uids is not None:
        exposed = confinement.readable_by_strangers([p for p in private if p.exists()], run.uids.take())
        if exposed and not trusted:
            shown = "\n".join(f"  {path}" for path in exposed)
            raise GradingError(
                "Without bubblewrap, a learner's processes run under a uid of their own and only file "
                f"permissions keep them out, but any user can read:\n{shown}\nMake them private (for "
                "example chmod o-rwx on each, or on a folder above), install bubblewrap, or pass --trusted."
            )


# What a learner's app imports in every environment (step 10's too); the judge's own adds its preload.
APP_MODULES = ["aiohttp", "aiohttp.web", "jinja2", "aiohttp_jinja2", "yaml", "trafaret", "sqlalchemy"]


def _check_runtime(uid: int, pythons: dict[str, str], env: dict[str, str]) -> None:
    """Before any learner runs: the runtime works under a learner's uid, or the run is refused, naming the
    cause, instead of scoring the whole class 0 and telling each learner their code cannot be imported."""
    for name, python in pythons.items():
        modules = APP_MODULES + ([m for m in LEARNER_PRELOAD if m not in APP_MODULES] if not name else [])
        problem = confinement.check_runtime_as(uid, python, env, modules)
        if problem:
            raise GradingError(
                f"The grading runtime ({python}) does not work under a learner's uid: importing the "
                f"libraries there failed with: {problem}. Nobody's code has run yet. Make the grader's "
                "environments and Python readable by other users (chmod -R o+rX on them), or rebuild "
                "them (remove the checkout's .nox folder; nox makes them again), then grade again."
            )


def grade_submissions(
    submissions: Sequence[Submission],
    steps: Sequence[catalogue.Step],
    *,
    jobs: int = 2,
    timeout: float = DEFAULT_TIMEOUT,
    root: Path = catalogue.ROOT,
    progress: Progress | None = None,
    start_method: str | None = None,
    record: RunRecord | None = None,
    trusted: bool = False,
    tier: str | None = None,
    private: Sequence[Path] = (),
    graded: dict[tuple[str, int], StepGrade] | None = None,
) -> list[LearnerGrade]:
    """Grade every step of every submission, `jobs` at a time; the result is sorted by learner name.

    The unit of work is one step of one learner, so that a slow step of one learner overlaps with quick
    ones of others. Called from a script, that script needs the `if __name__ == "__main__":` guard that
    multiprocessing asks for. A `record`, if given, is filled in with what run.json tells, also when the
    run fails (then it says why, and raises).

    `graded`, if given, is filled in as steps finish, keyed by (learner, step number): when the run fails,
    the caller still has every step it graded (unfinished_grades) and writes them. The run's state is that
    map and the record, and nothing else; issue 21's "regrade one learner" and "resume into an existing
    output" fit it: read the (learner, step) grades back from the output's grades.json (as grade-merge
    does), keep those not to be graded again in `graded`, and skip the units already in it below.
    """
    started = time.monotonic()
    if record is not None:
        record.started, record.ended, record.completed, record.reason = utc_now(), "", False, ""
    try:
        results = _grade_submissions(
            submissions, steps, jobs=jobs, timeout=timeout, root=root, progress=progress,
            start_method=start_method, record=record, trusted=trusted, tier=tier, private=private,
            graded={} if graded is None else graded,
        )  # fmt: skip
    except BaseException as exc:
        if record is not None:
            record.reason = failure_reason(exc)
        raise
    else:
        if record is not None:
            record.completed = True
        return results
    finally:
        if record is not None:
            record.ended = utc_now()
            record.seconds = round(time.monotonic() - started, 1)


def _grade_submissions(
    submissions: Sequence[Submission],
    steps: Sequence[catalogue.Step],
    *,
    jobs: int,
    timeout: float,
    root: Path,
    progress: Progress | None,
    start_method: str | None,
    record: RunRecord | None,
    trusted: bool,
    tier: str | None,
    private: Sequence[Path],
    graded: dict[tuple[str, int], StepGrade],
) -> list[LearnerGrade]:
    with grading_run(
        steps, timeout, root, start_method, trusted=trusted, tier=tier, private=private, jobs=jobs
    ) as run:
        if record is not None:
            record.tier = run.tier
            record.database = run.server.kind if run.server else "none"
            record.learners = len(submissions)
            record.steps = [step.number for step in steps]
            record.snapshot = run.snapshot_hash
            record.graded = sorted((s.name for s in submissions), key=sort_key)
        workbooks: list[Path | SubmissionError] = []
        for index, submission in enumerate(submissions):
            try:
                workbooks.append(unpack(submission, run.workspace / f"unpacked-{index:04d}"))
            except SubmissionError as exc:
                workbooks.append(exc)

        def finish(index: int, result: StepGrade) -> None:
            graded[submissions[index].name, result.step.number] = result
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
    for submission, workbook in zip(submissions, workbooks, strict=True):
        problems = [str(workbook)] if isinstance(workbook, SubmissionError) else []
        results.append(
            LearnerGrade(submission.name, [graded[submission.name, s.number] for s in steps], problems)
        )
    return sorted(results, key=lambda g: sort_key(g.name))
