"""The throwaway PostgreSQL provider: every path it can take, and that it leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psycopg2
import pytest

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
        (pid,) = server.execute("SELECT pg_backend_pid()")[0]
        uid = int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0])
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
        monkeypatch.setenv(pg.ENV_DSN, f"postgresql://postgres@127.0.0.1:{outer.port}/postgres")
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

        def start(self):
            events.append("started")
            self._server = self._cluster.__enter__()
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
    monkeypatch.setattr(pg.PostgresServer, "dsn", lambda self, database=None: _trust_dsn(self, database))
    with pg.throwaway_postgres() as server:
        assert server.kind == "docker"
        assert server.execute("SELECT 1") == [(1,)]
    assert events == [
        f"created {pg.DOCKER_IMAGE} user=postgres db=postgres driver=None",
        "started",
        "stopped",
    ]
    assert_nothing_left(tmp_root)


def _trust_dsn(server: pg.PostgresServer, database: str | None) -> str:
    # The local stand-in trusts loopback connections and knows no password.
    return f"host={server.host} port={server.port} user={server.user} dbname={database or 'postgres'}"


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
    assert postgres_processes(tmp_root), "expected the abandoned postmaster to still run before reaping"
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
