"""`nox -s grade` killed with SIGTERM or SIGHUP: nothing the grading started may outlive it.

nox passes neither signal on to the `python -m workbook grade` it runs, so the test plays nox with a
stand-in parent that runs the command and forwards nothing, kills that parent alone while learners' steps
are running, and then looks in /proc for anything of the run that is left: a test process, a learner
process, the PostgreSQL server it started, its temp folder.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.workbook.test_grade import copy_of_the_workbook, finish, package
from workbook import catalogue
from workbook.grading.running import RUN_MARKER
from workbook.pg import ENV_DSN

ROOT = catalogue.ROOT
# nox's part: run the command, wait for it, pass no signal on.
STAND_IN = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"
TOKEN_VARIABLE = "WORKBOOK_SIGNAL_TEST"
STARTUP_DEADLINE = 180.0  # seconds until learners' steps run: a cold PostgreSQL template takes a while
CLEANUP_DEADLINE = 60.0


def processes() -> dict[int, tuple[int, str, int]]:
    """Every process: pid -> (parent pid, state, start time in clock ticks), read from /proc/PID/stat."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
        found[int(entry.name)] = (int(fields[1]), fields[0], int(fields[19]))
    return found


def descendants(root: int, table: dict[int, tuple[int, str, int]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def environ(pid: int) -> dict[str, str]:
    try:
        data = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in data.split(b"\0") if b"=" in item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return "(gone while we looked)"


def live(table: dict[int, tuple[int, str, int]], pid: int) -> bool:
    return pid in table and table[pid][1] not in ("Z", "X")


def hanging_class(submissions: Path) -> None:
    """Two learners whose step 2 never returns from setup_routes: grading stays under way until killed."""
    for name in ("ann", "bob"):
        copy = copy_of_the_workbook(submissions / name)
        for number in (1, 2):
            finish(copy, number)
        routes = package(copy, 2) / "routes.py"
        first_route = '    app.router.add_get("/"'
        hang = "    while True:\n        pass\n"
        routes.write_text(routes.read_text().replace(first_route, hang + first_route))
        assert "while True" in routes.read_text(), "the step 2 solution changed shape: update this test"


def wait_for_learner_process(parent: subprocess.Popen[bytes], log: Path) -> Path:
    """Wait until a learner process of this run is up; the run's workspace (its temp folder)."""
    deadline = time.monotonic() + STARTUP_DEADLINE
    while time.monotonic() < deadline:
        assert parent.poll() is None, f"grading ended before it was killed:\n{log.read_text()[-3000:]}"
        table = processes()
        for pid in descendants(parent.pid, table):
            env = environ(pid)
            if RUN_MARKER in env and "TMPDIR" in env:
                workspace = next(
                    (p for p in Path(env["TMPDIR"]).parents if p.name.startswith("workbook-grade-")), None
                )
                if workspace is not None:
                    return workspace
        time.sleep(0.1)
    pytest.fail(f"no learner process appeared in {STARTUP_DEADLINE:.0f}s:\n{log.read_text()[-3000:]}")


def leftovers(token: str, workspace: Path, started: dict[int, int]) -> list[str]:
    """What of the run is still there: processes (by their environment, or seen running before the kill)
    and the temp folder."""
    table = processes()
    found = []
    for pid in table:
        if not live(table, pid) or pid == os.getpid():
            continue
        env = environ(pid)
        ours = env.get(TOKEN_VARIABLE) == token or str(workspace) in env.get("TMPDIR", "")
        if ours or started.get(pid) == table[pid][2]:
            found.append(f"process {pid}: {command_line(pid)}")
    if workspace.exists():
        found.append(f"temp folder {workspace}")
    return found


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_killing_the_parent_of_grade_leaves_nothing_running(tmp_path, signum):
    submissions, out, log = tmp_path / "submissions", tmp_path / "grades", tmp_path / "grade.log"
    submissions.mkdir()
    hanging_class(submissions)
    token = secrets.token_hex(8)
    env = {**os.environ, "PYTHONPATH": str(ROOT), TOKEN_VARIABLE: token}
    env.pop(ENV_DSN, None)  # the run starts a server of its own, which must go too
    command = [
        sys.executable, "-c", STAND_IN,
        sys.executable, "-m", "workbook", "grade", str(submissions), "--steps", "1-2", "--out", str(out),
    ]  # fmt: skip
    with log.open("wb") as output:
        parent = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        workspace = wait_for_learner_process(parent, log)
        table = processes()
        # the command, its fork server, test and learner processes, and (from local binaries) its server
        started = {pid: table[pid][2] for pid in descendants(parent.pid, table)}

        parent.send_signal(signum)  # the parent alone, as `kill PID` on nox would
        parent.wait(10)

        deadline = time.monotonic() + CLEANUP_DEADLINE
        while (left := leftovers(token, workspace, started)) and time.monotonic() < deadline:
            time.sleep(0.2)
        shown = "\n".join(left)
        output = log.read_text()[-3000:]
        assert left == [], f"left after {signal.Signals(signum).name}:\n{shown}\n--- output ---\n{output}"
        assert not (out / "gradebook.csv").exists(), "an interrupted run must write no gradebook"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
