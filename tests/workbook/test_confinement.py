"""The confinement of grading's learner processes, attacked directly: each test starts a process the way the
judge does (workbook.grading.confinement) and has it try what a hostile learner would, then checks from
outside. The whole class graded confined is in test_grade_attacks.py."""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from workbook import catalogue
from workbook.grading import confinement
from workbook.grading.confinement import Confinement
from workbook.judge import learner_process
from workbook.pg import throwaway_postgres

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="a uid of its own per learner needs root")
TIERS = [confinement.UID, confinement.BWRAP_UID]


def tier_available(tier: str) -> bool:
    best, _ = confinement.detect_tier()
    return best == confinement.BWRAP_UID or (best == tier)


@pytest.fixture(scope="module")
def workspace() -> Iterator[Path]:
    """A grading workspace as the grader lays it out: traverse-only, with the runtime interpreter."""
    folder = Path(tempfile.mkdtemp(prefix="workbook-grade-test-"))
    os.chmod(folder, 0o711)
    confinement.build_runtime(folder / "runtime", catalogue.ROOT / "workbook" / "learner_side")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=TIERS)
def confined(request: pytest.FixtureRequest, workspace: Path) -> Iterator[Confinement]:
    """One run's Confinement under a fresh uid: its HOME, TMPDIR and a read-only step tree of root's."""
    if os.geteuid() != 0:
        pytest.skip("a uid of its own per learner needs root")
    if not tier_available(request.param):
        pytest.skip(f"tier {request.param} is not available here (bubblewrap missing?)")
    _, bwrap = confinement.detect_tier()
    uid = confinement.UidPool().take()
    run = Path(tempfile.mkdtemp(dir=workspace))
    os.chmod(run, 0o711)
    tree = run / "tree"
    shutil.copytree(
        catalogue.ROOT / "solutions" / "step1", tree, ignore=shutil.ignore_patterns("__pycache__")
    )
    confinement.open_to_group(tree, uid)
    home, tmp = run / "home", run / "tmp"
    confinement.give(home, uid, uid)
    confinement.give(tmp, uid, uid)
    runtime = workspace / "runtime"
    python = str(runtime / "env" / "bin" / "python")
    lib = str(runtime / "python" / "lib")
    conf = Confinement(
        tier=request.param, python=python, learner_side=str(runtime / "learner_side"), uid=uid, gid=uid,
        home=str(home), tmp=str(tmp), spool=str(tmp), readable=[str(runtime), str(tree)],
        writable=[str(home), str(tmp)], env={"LD_LIBRARY_PATH": lib}, bwrap=bwrap or "",
    )  # fmt: skip
    yield conf
    confinement.clean_up(uid)
    shutil.rmtree(run, ignore_errors=True)


def run_confined(conf: Confinement, code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -c CODE` as the judge starts a learner process: confined, limited, scrubbed."""
    cwd = Path(conf.readable[1])
    return subprocess.run(
        conf.command(["python", "-I", "-c", textwrap.dedent(code)], cwd),
        cwd=cwd, env=conf.environment(learner_process.learner_env()), capture_output=True, text=True,
        timeout=timeout, preexec_fn=conf.limit, **conf.credentials(),
    )  # fmt: skip


def test_a_learner_process_runs_under_its_own_uid_seen_from_outside(confined):
    """The uid is checked in /proc from outside: not root, not the server's, not nobody, not a user's."""
    process = subprocess.Popen(
        confined.command(["python", "-I", "-c", "import time; time.sleep(30)"], Path(confined.home)),
        cwd=confined.home, env=confined.environment({}), preexec_fn=confined.limit, **confined.credentials(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not confinement.pids_of(confined.uid) and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = confinement.pids_of(confined.uid)
        assert pids, "no process of the run's uid was found in /proc"
        users = {entry.pw_uid for entry in pwd.getpwall()}
        assert confined.uid not in users | {0, os.geteuid()}
        assert confinement.process_uid(process.pid) == confined.uid  # bwrap itself too: no root anywhere
    finally:
        process.kill()
        process.wait()


def test_it_cannot_read_the_checkout_the_root_folder_or_other_runs(confined, workspace):
    """A classmate's run beside it in the workspace (a guessable path), the instructor's suites, /root."""
    other = Path(tempfile.mkdtemp(dir=workspace))
    os.chmod(other, 0o711)
    (other / "secret.txt").write_text("a classmate's code")
    os.chmod(other / "secret.txt", 0o640)
    result = run_confined(
        confined,
        f"""
        import os
        found = []
        for path in ({str(catalogue.ROOT / "tests")!r}, "/root", {str(other)!r}):
            try:
                os.listdir(path)
                found.append(path)
            except OSError:
                pass
        try:
            open({str(other / "secret.txt")!r}).read()
            found.append("secret")
        except OSError:
            pass
        print("READ", found)
        """,
    )
    shutil.rmtree(other)
    assert result.returncode == 0, result.stderr
    if confined.tier == confinement.BWRAP_UID:
        assert "READ []" in result.stdout, result.stdout
    else:  # without a mount namespace the checkout's own permissions decide: the grader checks them first
        assert (
            "READ ['" + str(catalogue.ROOT / "tests") + "']" in result.stdout or "READ []" in result.stdout
        ), result.stdout


def test_it_can_write_its_home_and_nothing_the_judge_loads(confined):
    """Not the step's code (a .pyc, a conftest.py), not the interpreter's packages (a .pth)."""
    site = next(Path(confined.python).parent.parent.glob("lib/python*/site-packages"))
    result = run_confined(
        confined,
        f"""
        import os
        wrote = []
        for path in ({confined.home + "/ok"!r}, {confined.readable[1] + "/conftest.py"!r},
                     {confined.readable[1] + "/aiohttpdemo_polls/__pycache__/x.pyc"!r},
                     {str(site / "evil.pth")!r}, {str(Path(confined.learner_side) / "harness.py")!r}):
            try:
                with open(path, "a") as f:
                    f.write("import os")
                wrote.append(path)
            except OSError:
                pass
        print("WROTE", wrote)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert f"WROTE [{confined.home + '/ok'!r}]" in result.stdout, result.stdout


def test_it_reaches_no_tcp_listener_outside_its_network(confined):
    """The judge and its learner processes share a network of their own: a server on the machine's
    loopback (PostgreSQL's TCP port, a classmate's app) is out of reach."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    script = f"""
        import socket
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
            print("REACHED")
        except OSError as exc:
            print("REFUSED", exc)
    """
    judge_code = textwrap.dedent(
        """
        import json, pathlib, subprocess, sys
        from workbook.grading.confinement import Confinement, enter_private_network
        enter_private_network()  # what the judge does first when it is confined
        conf = Confinement(**json.loads(sys.argv[1]))
        command = conf.command(["python", "-I", "-c", sys.argv[2]], pathlib.Path(conf.home))
        result = subprocess.run(command, env=conf.environment({}), preexec_fn=conf.limit,
                                capture_output=True, text=True, **conf.credentials())
        print(result.stdout, result.stderr)
        """
    )
    try:
        judge = subprocess.run(
            [sys.executable, "-c", judge_code, json.dumps(dataclasses.asdict(confined)),
             textwrap.dedent(script)],
            cwd=catalogue.ROOT, env={**os.environ, "PYTHONPATH": str(catalogue.ROOT)},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        listener.close()
    assert "REFUSED" in judge.stdout, judge.stdout + judge.stderr


def test_a_double_forked_daemon_and_its_files_are_gone_after_clean_up(confined):
    """A process that leaves its group and session (double fork + setsid) still has the run's uid."""
    marker = f"/tmp/workbook-daemon-{os.getpid()}-{confined.uid}"
    result = run_confined(
        confined,
        f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                open({marker!r}, "w").write("left behind")
                time.sleep(600)
            os._exit(0)
        time.sleep(0.5)
        """,
    )
    assert result.returncode == 0, result.stderr
    if confined.tier == confinement.UID:  # bubblewrap's pid namespace ends with its first process
        assert confinement.pids_of(confined.uid), "the daemon should still be running before clean_up"
        assert os.path.exists(marker)
    confinement.clean_up(confined.uid)
    assert confinement.pids_of(confined.uid) == []
    assert not os.path.exists(marker)


def test_a_fork_storm_and_a_memory_hog_meet_their_limits(confined):
    result = run_confined(
        confined,
        """
        import os
        children = 0
        try:
            for _ in range(5000):
                if os.fork() == 0:
                    os.dup2(os.open(os.devnull, os.O_RDWR), 1)
                    os.dup2(1, 2)
                    import time; time.sleep(30); os._exit(0)
                children += 1
        except OSError:
            pass
        print("FORKED", children)
        try:
            hog = bytearray(8 << 30)
            print("HOGGED")
        except MemoryError:
            print("NO MEMORY")
        """,
    )
    forked = int(result.stdout.split("FORKED ")[1].split()[0])
    assert forked < confinement.LIMITS["RLIMIT_NPROC"], result.stdout
    assert "NO MEMORY" in result.stdout, result.stdout
    confinement.clean_up(confined.uid)
    assert confinement.pids_of(confined.uid) == []


def test_the_judge_signals_only_the_launchers_own_children(confined):
    """A launcher taken over by learner code could name any pid (the grader's, 1): the judge, root, would
    signal it. host_pid accepts only a descendant of the launcher under the run's uid."""
    assert learner_process.host_pid(os.getpid(), os.getpid(), confined) is None
    assert learner_process.host_pid(1, os.getpid(), confined) is None


@ROOT_ONLY
def test_the_uid_tier_finds_folders_other_users_can_read():
    tmp_path = Path(tempfile.mkdtemp())
    open_folder, closed_folder = tmp_path / "open", tmp_path / "closed"
    open_folder.mkdir(mode=0o755)
    closed_folder.mkdir(mode=0o700)
    os.chmod(tmp_path, 0o755)
    uid = confinement.UidPool().take()
    assert confinement.readable_by_strangers([open_folder, closed_folder], uid) == [open_folder]
    os.chmod(tmp_path, 0o700)  # a private folder above closes everything below
    assert confinement.readable_by_strangers([open_folder, closed_folder], uid) == []
    shutil.rmtree(tmp_path)


def test_no_role_enters_postgresql_without_its_password_over_the_socket():
    """The socket folder that confined learners reach: peer rights for the grader end with lock_down, so
    a learner sharing the grader's uid (bubblewrap without root) cannot log in as the superuser either."""
    sockets = Path(tempfile.mkdtemp(prefix="workbook-grade-test-"))
    os.chmod(sockets, 0o755)  # as the grader's: the server's user must reach it
    with throwaway_postgres(socket_dir=sockets) as server:
        if not server.socket:
            pytest.skip("the server is not a local cluster")
        for password in ("", "postgres", "wrong"):
            with pytest.raises(psycopg2.OperationalError):
                psycopg2.connect(host=server.socket, port=server.port, user=server.user, password=password,
                                 dbname="postgres", connect_timeout=5)  # fmt: skip
        psycopg2.connect(server.over_socket().dsn()).close()
    shutil.rmtree(sockets, ignore_errors=True)


@ROOT_ONLY
def test_an_unprivileged_grader_confines_with_bubblewrap():
    """The `bwrap` tier: an instructor without root grades with bubblewrap's namespaces under their own uid.
    Played here by `nobody` (PostgreSQL's initdb wants a user it can look up) running the grader from a copy
    of the checkout, with the runtime interpreter (this one lives under /root, which nobody can enter)."""
    best, _ = confinement.detect_tier()
    if best != confinement.BWRAP_UID:
        pytest.skip("bubblewrap is not usable here")
    base = Path(tempfile.mkdtemp(prefix="workbook-unprivileged-"))
    try:
        os.chmod(base, 0o755)
        pythons, _, env = confinement.build_runtime(
            base / "runtime", catalogue.ROOT / "workbook" / "learner_side"
        )
        python = pythons[""]
        instructor = pwd.getpwnam("nobody").pw_uid
        checkout, submissions, home = base / "checkout", base / "submissions", base / "home"
        for name in ("workbook", "tests", "config", "pyproject.toml"):
            source = catalogue.ROOT / name
            if source.is_dir():
                shutil.copytree(
                    source, checkout / name, ignore=shutil.ignore_patterns("__pycache__", "browser")
                )
            else:
                shutil.copy(source, checkout / name)
        from workbook.starter import strip_markers_into

        for number in (1, 2):
            step = catalogue.step(number)
            strip_markers_into(
                step.tree(catalogue.ROOT, "solutions"), step.tree(submissions / "ann", "steps"), number
            )
        home.mkdir()
        for folder in (checkout, submissions, home):
            for path in [folder, *folder.rglob("*")]:
                os.chown(path, instructor, instructor, follow_symlinks=False)
        out = home / "grades"
        completed = subprocess.run(
            [python, "-m", "workbook", "grade", str(submissions), "--steps", "1-2", "--out", str(out)],
            cwd=checkout, capture_output=True, text=True, timeout=600, user=instructor, group=instructor,
            extra_groups=[],
            env={"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(checkout), **env},
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr[-3000:]
        assert json.loads((out / "run.json").read_text())["tier"] == confinement.BWRAP
        points = sum(catalogue.step(n).points for n in (1, 2))
        assert f"{points}/{points}" in completed.stdout, completed.stdout
        # Whatever this run started carries its HOME (other tests may run as nobody meanwhile).
        mine = f"HOME={home}".encode()
        left = [pid for pid in confinement.pids_of(instructor) if mine in _environ(pid).split(b"\0")]
        assert left == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def test_shared_memory_a_learner_left_is_removed_after_clean_up(confined):
    """System V IPC is not a file: the uid tier removes its segments, semaphores and queues by uid too
    (inside bubblewrap they die with its ipc namespace)."""
    result = run_confined(
        confined,
        """
        import ctypes
        libc = ctypes.CDLL(None)
        print("SHM", libc.shmget(0, 4096, 0o1600), "SEM", libc.semget(0, 1, 0o1600))
        """,
    )
    assert result.returncode == 0 and "SHM -1" not in result.stdout, result.stdout + result.stderr

    def owned() -> int:
        tables = ("/proc/sysvipc/shm", "/proc/sysvipc/sem")
        return sum(
            1 for table in tables for row in Path(table).read_text().splitlines()[1:]
            if str(confined.uid) in row.split()
        )  # fmt: skip

    if confined.tier == confinement.UID:
        assert owned() == 2
    confinement.clean_up(confined.uid)
    assert owned() == 0


def probe_runtime(base: Path) -> tuple[dict[str, str], dict[str, str], Path, Path]:
    """A runtime built under `base` from an environment of the test's own (never files shared with the
    package cache) holding one package, wbprobe, that only its owner may read: (the runtime's pythons,
    its process environment, the runtime's file of wbprobe, the source file)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = Path(version) / "site-packages" / "wbprobe" / "__init__.py"
    module = base / "private-env" / "lib" / site
    module.parent.mkdir(parents=True)
    module.write_text("READY = True\n")
    os.chmod(module, 0o600)
    pythons, _, env = confinement.build_runtime(
        base / "runtime", catalogue.ROOT / "workbook" / "learner_side", {"probe": base / "private-env"}
    )
    return pythons, env, base / "runtime" / "env-probe" / "lib" / site, module


@ROOT_ONLY
def test_the_runtime_owns_what_others_cannot_read_and_leaves_the_source_alone():
    """A file narrowed where the environments share it (chmod -R o-rwx) is copied into the runtime, made
    readable there, and works under a learner's uid; the source keeps its mode."""
    base = Path(tempfile.mkdtemp())
    os.chmod(base, 0o755)
    try:
        pythons, env, copy, module = probe_runtime(base)
        assert copy.stat().st_ino != module.stat().st_ino, "an unreadable file must be copied, not linked"
        assert module.stat().st_mode & 0o777 == 0o600, "the source's mode must not change"
        uid = confinement.UidPool().take()
        assert confinement.check_runtime_as(uid, pythons["probe"], env, ["wbprobe"]) == ""
    finally:
        shutil.rmtree(base)


@ROOT_ONLY
def test_a_runtime_a_learner_uid_cannot_use_is_refused_before_anyone_is_graded(monkeypatch):
    from workbook.grading import running

    base = Path(tempfile.mkdtemp())
    os.chmod(base, 0o755)
    try:
        pythons, env, copy, _module = probe_runtime(base)
        os.chmod(
            copy, 0o600
        )  # the runtime's own copy, narrowed after it was built: nothing shared is touched
        monkeypatch.setattr(running, "APP_MODULES", ["wbprobe"])
        with pytest.raises(running.GradingError, match=r"does not work under a learner's uid.*Permission"):
            running._check_runtime(confinement.UidPool().take(), {"probe": pythons["probe"]}, env)
    finally:
        shutil.rmtree(base)
