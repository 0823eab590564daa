"""`nox -s serve`, `nox -s watch` and `nox -s status` killed with SIGTERM or SIGHUP: nothing may outlive them.

A process manager or an editor's stop button signals nox alone, and nox passes nothing on. The test plays
nox with a stand-in parent (conftest.STAND_IN), kills it once the command is busy, then looks for what of
the run is left: a process (by its environment or its command line, which carry the copy's path and a
token; or seen running before the kill), a PostgreSQL cluster, a temp folder, the served port. The run
gets a temp folder of its own, so anything named workbook-* in it was made by the run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.workbook.conftest import (
    STAND_IN,
    TOKEN_VARIABLE,
    command_line,
    descendants,
    environ,
    finish,
    live,
    processes,
)
from workbook.pg import ENV_DSN, TMP_PREFIX, free_port

STARTUP_DEADLINE = 60.0  # seconds until the command is busy: a cluster from the cached template, a suite
CLEANUP_DEADLINE = 20.0
SERVED_STEP = "9"  # the finished app: a database, a config file, an init_db run


def port_answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def port_bound(port: int) -> bool:
    """True while anything holds the port, listening or not (a bind would fail)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


class Run:
    """`python -m workbook ARGS` in the copy under a stand-in nox, with its own temp folder and token."""

    def __init__(self, copy: Path, tmp: Path, args: list[str], parent: list[str] | None = None) -> None:
        """`parent`: the command to kill instead of the stand-in (real nox), ARGS then being its own."""
        self.copy, self.tmp, self.token = copy, tmp, secrets.token_hex(8)
        self.log = copy.parent / "command.log"
        env = {**os.environ, "PYTHONPATH": str(copy), TOKEN_VARIABLE: self.token, "TMPDIR": str(tmp)}
        env.pop(ENV_DSN, None)  # the run starts a server of its own, which must go too
        command = [*parent, *args] if parent else [sys.executable, "-c", STAND_IN, sys.executable, "-m",
                                                    "workbook", *args]  # fmt: skip
        with self.log.open("wb") as output:
            self.parent = subprocess.Popen(
                command, cwd=copy, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def wait_until(self, busy: Callable[[Run], bool]) -> None:
        deadline = time.monotonic() + STARTUP_DEADLINE
        while time.monotonic() < deadline:
            assert self.parent.poll() is None, f"the command ended before it was killed:\n{self.output()}"
            if busy(self):
                return
            time.sleep(0.1)
        pytest.fail(f"the command was not busy within {STARTUP_DEADLINE:.0f}s:\n{self.output()}")

    def pytest_running(self) -> bool:
        table = processes()
        return any("-m pytest" in command_line(pid) for pid in descendants(self.parent.pid, table))

    def leftovers(self, started: dict[int, int], port: int | None = None) -> list[str]:
        table = processes()
        found = []
        for pid in table:
            if not live(table, pid) or pid in (os.getpid(), self.parent.pid):
                continue
            env = environ(pid)
            ours = env.get(TOKEN_VARIABLE) == self.token or str(self.copy) in command_line(pid)
            if ours or started.get(pid) == table[pid][2]:
                found.append(f"process {pid}: {command_line(pid)}")
        for entry in self.tmp.glob("workbook-*"):
            if entry.name.startswith(TMP_PREFIX):  # the per-user cluster folder stays; its clusters go
                found += [f"cluster {cluster}" for cluster in entry.iterdir()]
            else:
                found.append(f"temp folder {entry}")
        if port is not None and port_bound(port):
            found.append(f"port {port} still bound")
        return found

    def assert_nothing_left(self, started: dict[int, int], port: int | None, what: str) -> None:
        deadline = time.monotonic() + CLEANUP_DEADLINE
        while (left := self.leftovers(started, port)) and time.monotonic() < deadline:
            time.sleep(0.2)
        shown = "\n".join(left)
        assert left == [], f"left after {what}:\n{shown}\n--- output ---\n{self.output()}"

    def stop(self) -> None:
        if self.parent.poll() is None:
            self.parent.kill()
            self.parent.wait()


def kill_and_check(run: Run, busy: Callable[[Run], bool], signum: int, port: int | None = None) -> None:
    try:
        run.wait_until(busy)
        table = processes()
        started = {pid: table[pid][2] for pid in descendants(run.parent.pid, table)}
        run.parent.send_signal(signum)  # the parent alone, as `kill PID` on nox would
        run.parent.wait(10)
        run.assert_nothing_left(started, port, signal.Signals(signum).name)
    finally:
        run.stop()


def hanging_step1(copy: Path) -> None:
    """Step 1 finished, but its view never answers: the suite stays under way until it is killed."""
    finish(copy, 1)
    main = copy / "steps" / "step1" / "aiohttpdemo_polls" / "main.py"
    answer = '    return web.Response(text="Hello Aiohttp!")'
    hang = "    __import__('time').sleep(3600)\n"
    main.write_text(main.read_text().replace(answer, hang + answer))
    assert "sleep(3600)" in main.read_text(), "the step 1 solution changed shape: update this test"


@pytest.fixture
def run_tmp() -> Iterator[Path]:
    """The run's temp folder. Not under tmp_path: as root, PostgreSQL's own user must reach it."""
    folder = Path(tempfile.mkdtemp(prefix="signal-test-"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


SIGNALS = pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])


@SIGNALS
def test_killing_the_parent_of_serve_leaves_nothing(workbook_copy, run_tmp, signum):
    port = free_port()
    run = Run(workbook_copy, run_tmp, ["serve", SERVED_STEP, "--port", str(port)])
    kill_and_check(run, lambda _: port_answers(port), signum, port)


@SIGNALS
def test_killing_nox_alone_while_it_serves_leaves_nothing(workbook_copy, run_tmp, signum):
    """The real thing: `nox -s serve` from the copy (its environment shared with this checkout's, so
    nothing new is installed once it exists), and the signal to the nox process alone."""
    nox = shutil.which("nox")
    if nox is None:
        pytest.skip("nox is not on PATH (CI installs it before running the tests)")
    shutil.copy2(Path(__file__).resolve().parents[2] / "noxfile.py", workbook_copy / "noxfile.py")
    envdir = Path(__file__).resolve().parents[2] / ".nox"
    port = free_port()
    parent = [nox, "-f", str(workbook_copy / "noxfile.py"), "--envdir", str(envdir), "-s", "serve", "--"]
    run = Run(workbook_copy, run_tmp, [SERVED_STEP, "--port", str(port)], parent=parent)
    kill_and_check(run, lambda _: port_answers(port), signum, port)


@SIGNALS
def test_killing_the_parent_of_watch_leaves_nothing(workbook_copy, run_tmp, signum):
    finish(workbook_copy, 1)
    run = Run(workbook_copy, run_tmp, ["watch", "1"])
    kill_and_check(run, lambda r: "Watching" in r.output(), signum)


@SIGNALS
def test_killing_watch_while_it_checks_leaves_nothing(workbook_copy, run_tmp, signum):
    hanging_step1(workbook_copy)
    run = Run(workbook_copy, run_tmp, ["watch", "1"])
    kill_and_check(run, Run.pytest_running, signum)


@SIGNALS
def test_killing_the_parent_of_status_leaves_nothing(workbook_copy, run_tmp, signum):
    hanging_step1(workbook_copy)
    run = Run(workbook_copy, run_tmp, ["status"])
    kill_and_check(run, Run.pytest_running, signum)


def test_an_ordinary_step_run_leaves_nothing(workbook_copy, run_tmp):
    finish(workbook_copy, 1)
    run = Run(workbook_copy, run_tmp, ["check", "1"])
    try:
        assert run.parent.wait(STARTUP_DEADLINE) == 0, run.output()
        run.assert_nothing_left({}, None, "an ordinary `nox -s step1`")
    finally:
        run.stop()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_program_run_through_lifetime_ends_with_its_parent(signum):
    """`nox -s lab` runs JupyterLab through `python -m workbook.lifetime`, played here by a sleeping Python:
    killed alone, nox must not leave it running."""
    token = secrets.token_hex(8)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), TOKEN_VARIABLE: token}
    program = [sys.executable, "-c", "import time; time.sleep(600)"]
    command = [sys.executable, "-c", STAND_IN, sys.executable, "-m", "workbook.lifetime", *program]
    parent = subprocess.Popen(command, env=env, start_new_session=True)

    def ours() -> list[int]:
        table = processes()
        return [pid for pid in table if live(table, pid) and environ(pid).get(TOKEN_VARIABLE) == token]

    try:
        deadline = time.monotonic() + STARTUP_DEADLINE
        # The program itself, not workbook.lifetime (whose command line names it too): killed while it
        # still imports, the lifetime process has not asked to die with its parent yet.
        while not any(command_line(pid).startswith(" ".join(program)) for pid in ours()):
            assert time.monotonic() < deadline, "the program did not start"
            time.sleep(0.05)
        os.kill(parent.pid, signum)
        parent.wait(10)
        deadline = time.monotonic() + CLEANUP_DEADLINE
        while (left := ours()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert left == [], [command_line(pid) for pid in left]
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(),
                    reason="needs /proc/PID/task/TID/children (Linux)")  # fmt: skip
def test_a_signal_while_lifetime_starts_its_program_still_ends_the_program():
    """The signal that comes while `subprocess.Popen` is starting the program (forked, not yet returned):
    sent the moment the program's process appears, then a little later each round, it must still end it."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    program = [sys.executable, "-c", "import time; time.sleep(600)"]
    left = []
    for attempt in range(24):
        lifetime = subprocess.Popen([sys.executable, "-m", "workbook.lifetime", *program], env=env,
                                    start_new_session=True)  # fmt: skip
        started = []
        try:
            deadline = time.monotonic() + STARTUP_DEADLINE
            while not (started := children(lifetime.pid)) and lifetime.poll() is None:
                assert time.monotonic() < deadline, "the program did not start"
            time.sleep(attempt * 0.0005)  # from just after the fork to about Popen's return
            os.kill(lifetime.pid, signal.SIGTERM)
            lifetime.wait(CLEANUP_DEADLINE)
            deadline = time.monotonic() + CLEANUP_DEADLINE
            while (alive := [p for p in started if live(processes(), p)]) and time.monotonic() < deadline:
                time.sleep(0.05)
            left += [f"round {attempt}: {command_line(pid)}" for pid in alive]
        finally:
            for pid in started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if lifetime.poll() is None:
                lifetime.kill()
                lifetime.wait()
    assert left == []


def test_lifetime_whose_parent_died_while_it_started_runs_nothing(tmp_path):
    """`nox -s lab` names itself with --parent: killed while workbook.lifetime was still importing, it leaves
    a lifetime whose parent is already the reaper, which no death signal will reach. It must see that and
    start nothing (JupyterLab would run on with no one to end it)."""
    root = Path(__file__).resolve().parents[2]
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that was a parent once and is no more
    marker = tmp_path / "ran"
    program = [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]
    command = [sys.executable, "-m", "workbook.lifetime", "--parent", str(gone.pid), *program]
    ended = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(root)}, timeout=60, check=False)
    assert ended.returncode == 128 + signal.SIGTERM and not marker.exists(), ended.returncode
    told = [sys.executable, "-m", "workbook.lifetime", "--parent", str(os.getpid()), *program]
    assert subprocess.run(told, env={**os.environ, "PYTHONPATH": str(root)}, timeout=60).returncode == 0
    assert marker.exists(), "with its real parent named, the program must run"
