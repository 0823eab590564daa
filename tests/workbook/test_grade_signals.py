"""`nox -s grade` killed with SIGTERM or SIGHUP: nothing the grading started may outlive it; killed with
SIGKILL, what it could not remove (its workspace, server, processes) the next run removes, and writes the
outputs a run never interrupted writes.

nox passes neither signal on to the `python -m workbook grade` it runs, so the test plays nox with a
stand-in parent that runs the command and forwards nothing, kills that parent alone while learners' steps
are running, and then looks in /proc for anything of the run that is left: a test process, a learner
process, the PostgreSQL server it started, its temp folder.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import pytest

from tests.workbook.conftest import (
    STAND_IN,
    TOKEN_VARIABLE,
    command_line,
    copy_of_the_workbook,
    descendants,
    environ,
    finish,
    live,
    package,
    processes,
)
from workbook import catalogue, mistakes, pg
from workbook.grading import confinement, outputs, running, workspace
from workbook.grading.running import RUN_MARKER
from workbook.grading.scores import format_points
from workbook.pg import ENV_DSN
from workbook.runner import run_step

ROOT = catalogue.ROOT
STARTUP_DEADLINE = 180.0  # seconds until learners' steps run: a cold PostgreSQL template takes a while
CLEANUP_DEADLINE = 60.0


def confined_or_trusted() -> list[str]:
    """Confined where bubblewrap works (as in CI); elsewhere the uid tier would refuse this world-readable
    checkout, and the no-confinement tier a class not declared trusted: this test is about ending, so
    there it grades --trusted."""
    return [] if confinement.detect_tier()[0] in (confinement.BWRAP_UID, confinement.BWRAP) else ["--trusted"]


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
        *confined_or_trusted(),
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
        # An interrupted run writes what it has, and says that it did not complete: never a gradebook
        # that looks like a finished run's.
        run = json.loads((out / "run.json").read_text())
        assert run["completed"] is False and run["reason"].startswith("grading was "), run
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def plant(
    kind: str, record: str, owner: int | None = None, mode: int = 0o700, into: Path | None = None
) -> Path:
    """A folder named like a workspace in the temp folder (or `into`), holding `record` as its owner.json."""
    folder = Path(tempfile.mkdtemp(prefix=f"{workspace.PREFIX}{kind}-", dir=into))
    (folder / workspace.OWNER_FILE).write_text(record)
    (folder / "canary").write_text(kind)
    folder.chmod(mode)
    if owner is not None:
        for path in (folder, folder / workspace.OWNER_FILE, folder / "canary"):
            os.chown(path, owner, owner)
    return folder


def test_a_grader_killed_with_sigkill_leaves_a_workspace_the_next_run_removes(tmp_path):
    """SIGKILL gives the grader no chance to remove its workspace: the next run does, and only that one.
    Left alone: a live grader's workspace, one owned by another user, a link to a folder, a folder with no
    owner record, one that others may write to (all but the first with the killed grader's record)."""
    submissions, log = tmp_path / "submissions", tmp_path / "grade.log"
    submissions.mkdir()
    hanging_class(submissions)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "workbook", "grade", str(submissions), "--steps", "1-2",
               "--out", str(tmp_path / "grades"), *confined_or_trusted()]  # fmt: skip
    with log.open("wb") as output:
        grader = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    planted: list[Path] = []
    live_grader = subprocess.Popen(
        [sys.executable, "-c", LIVE_GRADER], cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        killed = wait_for_learner_process(grader, log)
        grader.kill()
        grader.wait()
        assert killed.is_dir(), "the killed grader's workspace should still be there"
        record = (killed / workspace.OWNER_FILE).read_text()
        [fork_server_folder] = json.loads((killed / workspace.OUTSIDE_FILE).read_text())["made"]
        assert Path(fork_server_folder).is_dir(), "the killed grader's fork server folder should be there"
        assert live_grader.stdout is not None
        alive = Path(live_grader.stdout.readline().decode().strip())
        assert alive.is_dir(), alive
        target = plant("target", record, into=tmp_path)  # a workspace, but not in the temp folder
        link = Path(tempfile.gettempdir()) / f"{workspace.PREFIX}link-{secrets.token_hex(4)}"
        link.symlink_to(target)
        planted += [link, plant("open", record, mode=0o777), plant("unrecorded", "")]
        if os.geteuid() == 0:
            planted.append(plant("foreign", record, owner=pwd.getpwnam("nobody").pw_uid))

        with running.grading_run([catalogue.step(1)], 10.0, trusted=True, tier=confinement.NONE) as run:
            assert run.workspace.is_dir()

        assert not killed.exists(), f"the killed grader's workspace is left: {os.listdir(killed)}"
        assert not Path(fork_server_folder).exists(), "the killed grader's fork server folder is left"
        clusters = pg.private_root(run_as=pg._RunAs.for_this_process(), create=False)
        assert clusters is not None
        owners = [pg._read_owner(folder) or {} for folder in clusters.iterdir()]
        assert grader.pid not in [owner.get("pid") for owner in owners], "the killed grader's cluster is left"
        assert alive.is_dir(), "a live grader's workspace was removed"
        for folder in planted:
            assert folder.exists(), f"{folder} is not provably ours, yet it was removed"
        assert (target / "canary").read_text() == "target", "the link was followed"
        live_grader.kill()  # now its owner is gone too
        live_grader.wait()
        assert alive in workspace.reap_abandoned_workspaces() and not alive.exists()
    finally:
        for process in (grader, live_grader):
            if process.poll() is None:
                process.kill()
            process.communicate()
        for folder in planted:  # whatever happened to them
            if folder.is_symlink():
                folder.unlink()
            else:
                shutil.rmtree(folder, ignore_errors=True)


def test_a_grader_killed_with_sigkill_then_run_again_writes_what_an_uninterrupted_run_would(tmp_path):
    """SIGKILL mid-grading, then the same command again: the second run removes what the first left (its
    workspace, server, processes), and --out holds its outputs alone, complete, with the gradebook that a
    run never interrupted writes (the trusted scores), never the previous run's files beside them."""
    submissions, out, log = tmp_path / "submissions", tmp_path / "grades", tmp_path / "grade.log"
    submissions.mkdir()
    steps = [catalogue.step(1), catalogue.step(2)]
    ann = copy_of_the_workbook(submissions / "ann")
    for step in steps:
        finish(ann, step.number)
    bea = copy_of_the_workbook(submissions / "bea")  # step 1 with a known mistake, step 2 the starter
    shutil.rmtree(bea / "steps" / "step1")
    mistakes.apply(next(m for m in mistakes.load([steps[0]]) if m.name == "wrong-case"), bea)
    copy_of_the_workbook(submissions / "sam")
    trusted = {"ann": [Fraction(step.points) for step in steps], "sam": [Fraction(0)] * len(steps)}
    trusted["bea"] = [run_step(step, str(bea)).points for step in steps]
    assert 0 < trusted["bea"][0] < steps[0].points, trusted["bea"]
    expected = ["learner,step1,step2,total"] + [
        ",".join([name, *map(format_points, points), format_points(sum(points))])
        for name, points in sorted(trusted.items())
    ]
    # A previous run's outputs, of another class: the killed run cannot replace them, the next one must.
    (out / "learners" / "previous").mkdir(parents=True)
    (out / "learners" / "previous" / "results.json").write_text('{"score": 99}\n')
    (out / "gradebook.csv").write_text("learner,step1,step2,total\nprevious,3,5,8\n")
    (out / "run.json").write_text('{"completed": true}\n')

    token = secrets.token_hex(8)
    env = {**os.environ, "PYTHONPATH": str(ROOT), TOKEN_VARIABLE: token}
    env.pop(ENV_DSN, None)  # the run starts a server of its own, which the next run must stop
    command = [sys.executable, "-m", "workbook", "grade", str(submissions), "--steps", "1-2",
               "--out", str(out), *confined_or_trusted()]  # fmt: skip
    with log.open("wb") as output:
        grader = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        killed = wait_for_learner_process(grader, log)
        table = processes()
        started = {pid: table[pid][2] for pid in descendants(grader.pid, table)}
        grader.kill()
        grader.wait()
    finally:
        if grader.poll() is None:
            grader.kill()
            grader.wait()
    [fork_server_folder] = json.loads((killed / workspace.OUTSIDE_FILE).read_text())["made"]
    # Between the kill and the next run, --out says a run was under way, never the older class's grades.
    meanwhile = json.loads((out / "run.json").read_text())
    assert meanwhile["completed"] is False and "has not finished" in meanwhile["reason"], meanwhile
    assert "previous" not in (out / "gradebook.csv").read_text(), "the older gradebook looks current"
    assert sorted(path.name for path in (out / "learners").iterdir()) == sorted(trusted)

    again = subprocess.run(
        command, cwd=ROOT, env={**env, TOKEN_VARIABLE: ""}, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]

    deadline = time.monotonic() + CLEANUP_DEADLINE
    while (left := leftovers(token, killed, started)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], "left by the killed run:\n" + "\n".join(left)
    assert not Path(fork_server_folder).exists(), "the killed grader's fork server folder is left"
    clusters = pg.private_root(run_as=pg._RunAs.for_this_process(), create=False)
    owners = [pg._read_owner(folder) or {} for folder in clusters.iterdir()] if clusters else []
    assert grader.pid not in [owner.get("pid") for owner in owners], "the killed grader's cluster is left"

    assert (out / "gradebook.csv").read_text().splitlines() == expected, again.stdout
    run = json.loads((out / "run.json").read_text())
    assert run["completed"] is True and run["learners"] == len(trusted), run
    names = sorted(path.name for path in (out / "learners").iterdir())
    assert names == sorted(trusted), f"learners' folders in --out: {names}"
    for name, points in trusted.items():
        results = json.loads((out / "learners" / name / "results.json").read_text())
        assert results["score"] == round(float(sum(points)), 2), (name, results["output"])
    assert sorted(path.name for path in out.iterdir()) == sorted(outputs.OUTPUT_NAMES)
    staging = sorted(path.name for path in out.parent.glob(f".{out.name}.*"))
    assert staging == [], f"staging folders left beside --out: {staging}"


LIVE_GRADER = """
import sys
from workbook.grading.workspace import workspace
with workspace() as folder:
    print(folder, flush=True)
    sys.stdin.read()
"""


@pytest.mark.parametrize(
    ("change", "abandoned"),
    [
        ({}, False),  # our own, live
        ({"pid": 2**22 + 1}, True),  # a pid above any pid_max: nobody
        ({"start_ticks": "1"}, True),  # our pid, another start time: a recycled pid
        ({"boot_id": "another-boot"}, True),
        ({"pid_namespace": "pid:[1]", "pid": 2**22 + 1}, False),  # another namespace's pid says nothing
        ({"pid": "1234"}, False),  # not a pid
    ],
)
def test_an_owner_record_is_abandoned_only_when_its_grader_is_provably_gone(tmp_path, change, abandoned):
    workspace.write_owner(tmp_path)
    record = json.loads((tmp_path / workspace.OWNER_FILE).read_text()) | change
    assert workspace.abandoned(record) is abandoned


def test_a_process_of_another_live_graders_workspace_is_not_ours(tmp_path, monkeypatch):
    """The leftover checks skip processes of a concurrent run on this machine, and only those."""
    from tests.workbook.conftest import of_another_live_grader
    from workbook.grading import workspace

    other = tmp_path / f"{workspace.PREFIX}other"
    other.mkdir(mode=0o700)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {
            "kind": workspace.KIND,
            "pid": sleeper.pid,
            "start_ticks": workspace._process_start_ticks(sleeper.pid),
            "boot_id": workspace._boot_id(),
            "pid_namespace": workspace._pid_namespace(),
        }
        (other / workspace.OWNER_FILE).write_text(json.dumps(record))
        os.chmod(other / workspace.OWNER_FILE, 0o600)
        command = f"/usr/bin/python {other}/runtime/env/bin/python harness.py"
        assert of_another_live_grader(command)
        assert not of_another_live_grader(f"/usr/bin/python {tmp_path}/{workspace.PREFIX}gone/harness.py")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not of_another_live_grader(command), "a workspace whose grader is gone is nobody's alibi"
