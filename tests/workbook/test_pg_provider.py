"""The throwaway PostgreSQL provider: every path it can take, and that it leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from workbook import pg

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tmp_root(monkeypatch: pytest.MonkeyPatch):
    """A temp root the unprivileged PostgreSQL user can enter (pytest's own tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="wbtest-", dir="/tmp"))
    path.chmod(0o755)
    monkeypatch.setenv("TMPDIR", str(path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # forget the cached default so TMPDIR counts
    monkeypatch.delenv(pg.ENV_DSN, raising=False)
    yield path
    pg.reap_abandoned_clusters(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def no_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg, "docker_answers", lambda timeout=pg.DOCKER_PING_SECONDS: False)


def postgres_processes(under: Path) -> list[int]:
    """PIDs of postgres processes whose command line mentions a directory below `under`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            status = (entry / "status").read_text()
        except OSError:
            continue
        if "postgres" in cmdline and str(under) in cmdline and "State:\tZ" not in status:
            found.append(int(entry.name))
    return found


def clusters(root: Path) -> list[Path]:
    """The cluster folders in the private folder below `root`."""
    return sorted((root / f"{pg.TMP_PREFIX}{os.geteuid()}").glob(f"{pg.CLUSTER_PREFIX}*"))


def assert_nothing_left(root: Path) -> None:
    leftovers = clusters(root) + sorted(root.glob(f"*/{pg.BUILD_PREFIX}*"))
    assert leftovers == [], f"expected no cluster directory left in {root}, found {leftovers}"
    assert postgres_processes(root) == [], (
        f"expected no postgres process left, found {postgres_processes(root)}"
    )


def test_local_binaries_as_root_drop_privileges(tmp_root, no_docker):
    with pg.throwaway_postgres() as server:
        assert server.kind == "local"
        conn = psycopg2.connect(server.dsn())  # held open: its backend process lives while it is read
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                (pid,) = cur.fetchone()
            uid = int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0])
        finally:
            conn.close()
        if os.geteuid() == 0:
            assert uid != 0, "expected the PostgreSQL processes to run as an unprivileged user, not root"
        settings = dict(
            server.execute("SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'port')")
        )
        assert settings == {"fsync": "off", "port": str(server.port)}
        assert server.host == "127.0.0.1"
        assert len(clusters(tmp_root)) == 1
    assert_nothing_left(tmp_root)


def test_databases_are_fresh_and_dropped(tmp_root, no_docker):
    with pg.throwaway_postgres() as server:
        with server.database() as name:
            server.execute("CREATE TABLE t (x int)", name)
            assert server.execute("SELECT count(*) FROM t", name) == [(0,)]
            copy = server.create_database(template=name)
            assert server.execute("SELECT count(*) FROM t", copy) == [(0,)], "a template copy has the tables"
        names = {row[0] for row in server.execute("SELECT datname FROM pg_database")}
        assert name not in names


def test_explicit_dsn_creates_and_drops_its_databases(tmp_root, no_docker, monkeypatch):
    with pg.throwaway_postgres() as outer:
        monkeypatch.setenv(pg.ENV_DSN, outer.dsn())
        with pg.throwaway_postgres() as server:
            assert server.kind == "dsn" and server.port == outer.port
            created = server.create_database()
            assert (created,) in outer.execute("SELECT datname FROM pg_database")
        assert (created,) not in outer.execute("SELECT datname FROM pg_database"), "dropped on exit"
        assert outer.execute("SELECT 1") == [(1,)], "the explicit server itself is left running"


def test_explicit_dsn_that_does_not_answer_says_so(monkeypatch):
    monkeypatch.setenv(pg.ENV_DSN, "postgresql://nobody@127.0.0.1:1/postgres")
    with pytest.raises(pg.NoPostgresAvailable, match=pg.ENV_DSN), pg.throwaway_postgres():
        pass


class FakeDockerClient:
    def __init__(self, answers: bool) -> None:
        self.answers = answers

    def ping(self) -> bool:
        if not self.answers:
            raise ConnectionError("no daemon")
        return True

    def close(self) -> None:
        pass


@pytest.mark.parametrize("answers", [True, False])
def test_docker_ping_decides(monkeypatch, answers):
    import docker

    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    monkeypatch.setattr(docker, "from_env", lambda **kwargs: FakeDockerClient(answers))
    assert pg.docker_answers() is answers


def test_no_daemon_address_means_no_docker(monkeypatch, tmp_path):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(pg, "DOCKER_SOCKET", tmp_path / "no-such.sock")
    assert pg.docker_answers() is False


def test_an_unreachable_daemon_is_no_and_leaks_nothing(monkeypatch):
    """A socket that refuses: the SDK's failure must not leave a ResourceWarning (an error in our runs)."""
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    assert pg.docker_answers(timeout=1) is False


def test_docker_path_with_a_faked_daemon(tmp_root, monkeypatch):
    """The container path end to end; the 'container' is a local cluster since no daemon runs here."""
    import docker

    events: list[str] = []
    bindir = pg.find_bindir()
    assert bindir is not None

    class FakeContainer:
        def __init__(self, image, username, password, dbname, driver):
            events.append(f"created {image} user={username} db={dbname} driver={driver}")
            self._cluster = pg.local_postgres(bindir)
            self._password = password

        def start(self):
            events.append("started")
            self._server = self._cluster.__enter__()
            # A real container's superuser has the password it was created with: so has this one.
            self._server.execute(
                sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(self._password))
            )
            return self

        def get_container_host_ip(self):
            return self._server.host

        def get_exposed_port(self, port):
            assert port == 5432
            return str(self._server.port)

        def stop(self):
            events.append("stopped")
            self._cluster.__exit__(None, None, None)

    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    monkeypatch.setattr(docker, "from_env", lambda **kwargs: FakeDockerClient(True))
    monkeypatch.setattr(pg, "_container_class", lambda: FakeContainer)
    with pg.throwaway_postgres() as server:
        assert server.kind == "docker"
        assert server.execute("SELECT 1") == [(1,)]
    assert events == [
        f"created {pg.DOCKER_IMAGE} user=postgres db=postgres driver=None",
        "started",
        "stopped",
    ]
    assert_nothing_left(tmp_root)


def test_the_container_class_is_importable():
    assert pg._container_class().__name__ == "PostgresContainer"


def test_nothing_available_names_the_three_remedies(monkeypatch, no_docker):
    monkeypatch.delenv(pg.ENV_DSN, raising=False)
    monkeypatch.setattr(pg, "find_bindir", lambda: None)
    with pytest.raises(pg.NoPostgresAvailable) as caught, pg.throwaway_postgres():
        pass
    message = str(caught.value)
    for remedy in (pg.ENV_DSN, "Docker", "apt-get install postgresql", "pip install pgserver"):
        assert remedy in message, f"expected the error to mention {remedy!r}:\n{message}"


def test_bindir_candidates_follow_the_documented_order(monkeypatch, tmp_path):
    monkeypatch.setenv(pg.ENV_BINDIR, str(tmp_path))
    documented = [pg.ENV_BINDIR, "pg_config --bindir", "PATH", "/usr/lib/postgresql", "the pgserver wheel"]
    sources = [source for source, _ in pg.candidate_bindirs()]
    positions = [documented.index(source) for source in sources]
    assert sources[0] == pg.ENV_BINDIR
    assert positions == sorted(positions), f"expected the documented order {documented}, got {sources}"


SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
from workbook import pg
pg.docker_answers = lambda timeout=2: False
with pg.throwaway_postgres() as server:
    print("ready", flush=True)
    {body}
"""


def start_owner(tmp_root: Path, body: str) -> subprocess.Popen[str]:
    code = textwrap.dedent(SCRIPT).format(root=str(ROOT), body=body)
    env = {**os.environ, "TMPDIR": str(tmp_root)}
    env.pop(pg.ENV_DSN, None)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.strip() == "ready", f"the owner process did not start its server: {process.stderr.read()}"
    return process


def test_cleanup_after_a_failure_inside_the_block(tmp_root):
    process = start_owner(tmp_root, "raise RuntimeError('a test failed')")
    process.communicate(timeout=60)
    assert process.returncode != 0
    assert_nothing_left(tmp_root)


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "terminate"])
def test_cleanup_on_interrupt(tmp_root, sent):
    process = start_owner(tmp_root, "time.sleep(60)")
    process.send_signal(sent)
    process.communicate(timeout=60)
    assert_nothing_left(tmp_root)


def test_cluster_of_a_killed_run_is_reaped_by_the_next_start(tmp_root, no_docker):
    process = start_owner(tmp_root, "time.sleep(600)")
    process.kill()  # SIGKILL: no finally block runs, the cluster stays behind
    process.communicate(timeout=30)
    time.sleep(0.2)
    assert len(clusters(tmp_root)) == 1
    running = postgres_processes(tmp_root)
    assert running, "expected the abandoned postmaster to still run before reaping"
    # Shared memory the server keeps outside its data folder would outlive a postmaster that had to be killed.
    mapped = {
        line.split()[-1] for pid in running for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
    }
    assert not [name for name in mapped if name.startswith("/dev/shm/")], sorted(mapped)
    with pg.throwaway_postgres():
        leftovers = clusters(tmp_root)
        assert len(leftovers) == 1, f"expected only the new cluster, found {leftovers}"
    assert_nothing_left(tmp_root)


def test_a_live_owners_cluster_is_not_reaped(tmp_root):
    process = start_owner(tmp_root, "time.sleep(600)")
    try:
        assert pg.reap_abandoned_clusters(tmp_root) == []
        assert postgres_processes(tmp_root)
    finally:
        process.terminate()
        process.communicate(timeout=60)
    assert_nothing_left(tmp_root)


def test_server_dsn_connects(tmp_root, no_docker):
    with pg.throwaway_postgres() as server, server.database() as name:
        conn = psycopg2.connect(server.dsn(name))
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_database()")
                assert cur.fetchone() == (name,)
        finally:
            conn.close()


# --- the reaper under attack: it must signal nothing but a verified postmaster of its own cluster ---------


@pytest.fixture
def signals(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every (pid, signal) the code under test sends; those that could hurt this machine are not delivered."""
    sent: list[tuple[int, int]] = []
    real_kill, real_pidfd_send = os.kill, signal.pidfd_send_signal

    def harmless(pid: int, signum: int) -> bool:
        return signum == 0 or (pid > 1 and pid != os.getpid())

    def kill(pid: int, signum: int) -> None:
        sent.append((pid, signum))
        if harmless(pid, signum):
            real_kill(pid, signum)

    def killpg(pgid: int, signum: int) -> None:
        sent.append((-pgid, signum))

    def pidfd_send_signal(fd: int, signum: int, *args: object) -> None:
        info = Path(f"/proc/self/fdinfo/{fd}").read_text()
        pid = int(info.split("Pid:")[1].split()[0])
        sent.append((pid, signum))
        if harmless(pid, signum):
            real_pidfd_send(fd, signum, *args)

    monkeypatch.setattr(os, "kill", kill)
    monkeypatch.setattr(os, "killpg", killpg)
    monkeypatch.setattr(signal, "pidfd_send_signal", pidfd_send_signal)
    return sent


@pytest.fixture
def bystander():
    """An unrelated live process (a `sleep`) that the reaper must leave alone."""
    process = subprocess.Popen(["sleep", "300"])
    yield process
    process.kill()
    process.wait()


def dead_pid() -> int:
    done = subprocess.run(["true"], check=True)
    assert done.returncode == 0
    finished = subprocess.Popen(["true"])
    finished.wait()
    return finished.pid


def private(root: Path) -> Path:
    parent = pg.private_root(root, pg._RunAs.for_this_process())
    assert parent is not None
    return parent


def plant(folder: Path, pid_line: str | None, owner_pid: int | None = None) -> Path:
    """A cluster folder whose owner is dead and whose postmaster.pid names `pid_line` for its own data."""
    data = folder / "data"
    data.mkdir(parents=True)
    (folder / pg.OWNER_FILE).write_text(json.dumps({"pid": owner_pid or dead_pid()}))
    if pid_line is not None:
        (data / "postmaster.pid").write_text(f"{pid_line}\n{data}\n1700000000\n5432\n/tmp\n*\n0\nready\n")
    return folder


def reap_quickly(root: Path) -> list[Path]:
    """Reap in a thread: a reaper that blocks (on a FIFO, say) fails here instead of hanging the run."""
    result: list[list[Path]] = []
    worker = threading.Thread(target=lambda: result.append(pg.reap_abandoned_clusters(root)), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "the reaper blocked"
    return result[0]


def alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


@pytest.mark.parametrize(
    "target", ["0", "-1", "1", "own pid", "own group", "bystander", "huge", "not a number", "empty"]
)
def test_the_reaper_kills_no_pid_it_is_handed(tmp_root, signals, bystander, target):
    pid_line = {
        "own pid": str(os.getpid()),
        "own group": str(-os.getpgrp()),
        "bystander": str(bystander.pid),
        "huge": "9" * 30,
        "not a number": "12ab",
        "empty": "",
    }.get(target, target)
    folder = plant(private(tmp_root) / f"{pg.CLUSTER_PREFIX}planted", pid_line)
    assert reap_quickly(tmp_root) == [folder], "an abandoned folder in our private folder is removed"
    assert not folder.exists()
    assert [s for s in signals if s[1] != 0] == [], f"expected no signal at all, sent {signals}"
    assert bystander.poll() is None and alive(bystander.pid), "the unrelated process was killed"


def test_a_fifo_or_a_symlink_for_a_file_does_not_block_or_fool_the_reaper(tmp_root, signals, bystander):
    fifo = plant(private(tmp_root) / f"{pg.CLUSTER_PREFIX}fifo", None)
    os.mkfifo(fifo / "data" / "postmaster.pid")
    os.mkfifo(fifo / "owner-fifo")
    linked = plant(private(tmp_root) / f"{pg.CLUSTER_PREFIX}linked", None)
    real = tmp_root / "elsewhere.pid"
    real.write_text(f"{bystander.pid}\n{linked / 'data'}\n")
    (linked / "data" / "postmaster.pid").symlink_to(real)
    owner_fifo = private(tmp_root) / f"{pg.CLUSTER_PREFIX}owner-fifo"
    owner_fifo.mkdir()
    os.mkfifo(owner_fifo / pg.OWNER_FILE)
    os.utime(owner_fifo, (time.time() - 3600, time.time() - 3600))
    assert sorted(reap_quickly(tmp_root)) == sorted([fifo, linked, owner_fifo])
    assert [s for s in signals if s[1] != 0] == []
    assert bystander.poll() is None
    assert real.exists(), "a symlink's target outside the folder is not deleted"


def test_symlinked_and_foreign_folders_are_skipped(tmp_root, signals, bystander):
    outside = plant(tmp_root / "outside", str(bystander.pid))
    (private(tmp_root) / f"{pg.CLUSTER_PREFIX}link").symlink_to(outside)
    old_style = plant(tmp_root / "workbook-pg-planted", str(bystander.pid))  # the old layout: ignored
    assert reap_quickly(tmp_root) == []
    assert [s for s in signals if s[1] != 0] == []
    assert bystander.poll() is None
    assert (outside / "data" / "postmaster.pid").exists() and old_style.exists(), "nothing outside is deleted"


def test_a_live_owners_folder_is_left_alone(tmp_root, signals, bystander):
    folder = plant(private(tmp_root) / f"{pg.CLUSTER_PREFIX}live", str(bystander.pid), owner_pid=os.getpid())
    (folder / pg.OWNER_FILE).write_text(
        json.dumps({"pid": os.getpid(), "start_ticks": pg._process_start_ticks(os.getpid())})
    )
    assert reap_quickly(tmp_root) == []
    assert folder.exists() and [s for s in signals if s[1] != 0] == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as root beside the server user")
def test_an_impostor_postmaster_running_as_another_user_survives(tmp_root, signals):
    """A process whose command line is exactly `postgres -D <data>` but whose uid is not the server's."""
    folder = private(tmp_root) / f"{pg.CLUSTER_PREFIX}impostor"
    data = folder / "data"
    argv = ["/usr/lib/postgresql/bin/postgres", "-c", "import time; time.sleep(300)", "-D", str(data)]
    impostor = subprocess.Popen(argv, executable=sys.executable)  # runs as root, looks like postgres
    try:
        plant(folder, str(impostor.pid))
        time.sleep(0.2)  # let the interpreter start, so its command line is the one above
        assert pg.is_postmaster_of(impostor.pid, data, 0), "only its uid tells it from a real postmaster"
        (folder / pg.OWNER_FILE).write_text(json.dumps({"pid": dead_pid(), "run_uid": 0}))
        assert reap_quickly(tmp_root) == [folder]
        assert [s for s in signals if s[1] != 0] == []
        assert impostor.poll() is None
    finally:
        impostor.kill()
        impostor.wait()


@pytest.mark.parametrize("problem", ["symlink", "loose mode", "foreign owner"])
def test_a_private_folder_that_is_not_private_is_refused(tmp_root, no_docker, problem):
    parent = tmp_root / f"{pg.TMP_PREFIX}{os.geteuid()}"
    if problem == "symlink":
        (tmp_root / "target").mkdir(mode=0o700)
        parent.symlink_to(tmp_root / "target")
    else:
        parent.mkdir(mode=0o700)
        if problem == "loose mode":
            parent.chmod(0o777)
        elif os.geteuid() == 0:
            os.chown(parent, 65534, 65534)
        else:
            pytest.skip("only root can give a folder to another user")
    with pytest.raises(pg.UnsafeDirectory, match=str(parent)), pg.throwaway_postgres():
        pass
    assert pg.abandoned_clusters(tmp_root) == []


# --- the template every cluster copies ---------------------------------------------------------------------


@pytest.fixture
def cache(tmp_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty template cache of the test's own (the real one is shared by every run of the machine)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_root / "cache"))
    return tmp_root / "cache" / "workbook"


def templates(cache: Path) -> list[Path]:
    return sorted(cache.glob(f"{pg.TEMPLATE_PREFIX}*"))


def test_the_template_is_built_once_and_each_run_gets_a_clean_copy(tmp_root, no_docker, cache):
    with pg.throwaway_postgres() as server:
        server.execute("CREATE TABLE scribble (x int)")
    (template,) = templates(cache)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE(template.stat().st_mode) == 0o700
    built = (template / "data" / "PG_VERSION").stat().st_ino
    with pg.throwaway_postgres() as server:
        assert server.execute("SELECT to_regclass('scribble')::text") == [(None,)], "a fresh copy each run"
    assert templates(cache) == [template], "the template is reused"
    assert (template / "data" / "PG_VERSION").stat().st_ino == built
    assert list(cache.glob(".*")) == [] and list(private(tmp_root).glob(f"{pg.BUILD_PREFIX}*")) == []
    assert_nothing_left(tmp_root)


def test_the_template_key_follows_the_binaries(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("initdb", "postgres"):
        (bindir / name).write_text("version 1")
    run_as = pg._RunAs.for_this_process()
    first = pg._template_key(bindir, run_as)
    assert pg._template_key(bindir, run_as) == first
    (bindir / "postgres").write_text("version 2, a new build")
    assert pg._template_key(bindir, run_as) != first


def test_changed_binaries_replace_the_template_and_a_broken_one_is_rebuilt(tmp_root, cache, monkeypatch):
    bindir, run_as = pg.find_bindir(), pg._RunAs.for_this_process()
    assert bindir is not None
    monkeypatch.setattr(pg, "_template_key", lambda bindir, run_as: "old")
    pg.cluster_template(bindir, run_as, private(tmp_root))
    monkeypatch.setattr(pg, "_template_key", lambda bindir, run_as: "new")
    data = pg.cluster_template(bindir, run_as, private(tmp_root))
    assert [t.name for t in templates(cache)] == [f"{pg.TEMPLATE_PREFIX}new"], "the stale one is removed"
    (data / "PG_VERSION").unlink()
    assert pg.cluster_template(bindir, run_as, private(tmp_root)) == data
    assert (data / "PG_VERSION").exists()


def test_parallel_runs_build_one_template(tmp_root, cache):
    bindir, run_as, parent = pg.find_bindir(), pg._RunAs.for_this_process(), private(tmp_root)
    assert bindir is not None
    results: list[Path] = []
    builders = [
        threading.Thread(target=lambda: results.append(pg.cluster_template(bindir, run_as, parent)))
        for _ in range(3)
    ]
    for builder in builders:
        builder.start()
    for builder in builders:
        builder.join(timeout=120)
    assert len(results) == 3 and len(set(results)) == 1
    assert len(templates(cache)) == 1
    assert list(cache.glob(".*")) == [], "the losers' copies are thrown away"
    assert list(parent.glob(f"{pg.BUILD_PREFIX}*")) == []


def test_clusters_go_to_ram_unless_a_temp_folder_is_named(monkeypatch, tmp_path):
    for name in ("TMPDIR", "TEMP", "TMP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pg, "_is_roomy_tmpfs", lambda path: True)
    assert pg.cluster_base() == Path(os.path.realpath(pg.RAM_TEMP))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    assert pg.cluster_base() == tmp_path.resolve()
    assert pg.cluster_base(tmp_path / "x") == (tmp_path / "x").resolve()


def test_the_superuser_needs_a_fresh_password_over_tcp(tmp_root, no_docker):
    """SCRAM for every role over TCP: knowing the port is not enough, and no two clusters (copies of one
    template) share the superuser's password."""
    with pg.throwaway_postgres() as first, pg.throwaway_postgres() as second:
        assert first.password and second.password and first.password != second.password
        assert first.execute(
            "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'postgres'"
        ) == [(True,)]
        for password in ("", second.password):
            with pytest.raises(psycopg2.OperationalError):
                psycopg2.connect(host="127.0.0.1", port=first.port, user="postgres", password=password,
                                 dbname="postgres", connect_timeout=5)  # fmt: skip


def test_an_app_role_reaches_only_its_own_database(tmp_root, no_docker):
    """The learner's app logs in as a role that owns its database and can enter no other, nor log in as
    the superuser (the checks' Database fixture, tests/conftest.py)."""
    from tests.conftest import Database

    with pg.throwaway_postgres() as local, local.database() as mine, local.database() as theirs:
        server = local.over_socket()  # as a step run hands it out
        database, other = Database(server, mine), Database(server, theirs)  # two test modules' databases
        database.make_app_role()
        other.make_app_role()
        params = database.params
        assert params["user"] != server.user and params["password"] != server.password
        app = psycopg2.connect(**params, connect_timeout=5)
        try:
            with app.cursor() as cur:
                cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                assert cur.fetchone() == (False,)
        finally:
            app.close()
        for elsewhere in (theirs, server.admin_database):
            with pytest.raises(psycopg2.OperationalError, match="permission denied"):
                psycopg2.connect(**{**params, "database": elsewhere}, connect_timeout=5)
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(**{**params, "user": server.user}, connect_timeout=5)
        database.close()
        other.close()


def test_a_closed_port_is_neither_the_servers_nor_a_socket_files(tmp_path, monkeypatch):
    """In a step's private network the live server's port is free on the loopback too; with a socket
    folder as host that port, or any other with a socket file, would reach a live server."""
    import tests.conftest as suites

    database = suites.Database(
        server=pg.PostgresServer(host=str(tmp_path), port=5999, user="judge"), name="polls"
    )
    (tmp_path / ".s.PGSQL.6000").touch()
    offered = iter([5999, 6000, 6001])
    monkeypatch.setattr(suites, "free_port", lambda: next(offered))
    assert database.closed_port() == 6001
