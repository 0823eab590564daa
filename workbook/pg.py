"""The throwaway PostgreSQL server behind the tests, the notebooks, the grader and `nox -s serve`.

`throwaway_postgres()` tries, in this order:

1. an explicit server named by the ``WORKBOOK_PG_DSN`` environment variable (fresh databases are created
   there and dropped afterwards; the server itself is left alone);
2. a testcontainers PostgreSQL container, when a Docker daemon answers a ping within two seconds;
3. a temporary cluster built with local server binaries (``initdb``/``pg_ctl``);
4. otherwise it raises `NoPostgresAvailable`, whose message names the three ways to get one.

Everything it starts is stopped and deleted when the ``with`` block ends, however it ends. A cluster
left behind by a run that was killed (``kill -9``, a closed laptop lid) is reaped by the next start.
"""

from __future__ import annotations

import contextlib
import gc
import glob
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import ISOLATION_LEVEL_AUTOCOMMIT, parse_dsn

ENV_DSN = "WORKBOOK_PG_DSN"
ENV_BINDIR = "PG_BINDIR"
DOCKER_IMAGE = "postgres:15-alpine"
DOCKER_PING_SECONDS = 2.0
TMP_PREFIX = "workbook-pg-"
OWNER_FILE = "owner.json"
SUPERUSER = "postgres"


class NoPostgresAvailable(RuntimeError):
    """No way to run PostgreSQL was found; the message says how to provide one."""


REMEDIES = f"""\
The workbook needs a PostgreSQL server for its tests and found no way to start one. Any of these fixes it:
  1. Point it at a server you already have (a database is created there per run and dropped after):
       export {ENV_DSN}=postgresql://USER:PASSWORD@HOST:5432/postgres
  2. Start a Docker daemon: the workbook then runs {DOCKER_IMAGE} with testcontainers.
  3. Install the PostgreSQL server binaries (initdb, pg_ctl, postgres), for example
       apt-get install postgresql        (Debian/Ubuntu; or set {ENV_BINDIR}=/path/to/bin)
       pip install pgserver              (ships the binaries in a wheel, no root needed)"""


@dataclass
class PostgresServer:
    """A running server we may create and drop databases on, as a superuser."""

    host: str
    port: int
    user: str
    password: str = ""
    admin_database: str = "postgres"
    kind: str = "dsn"
    _databases: list[str] = field(default_factory=list, repr=False)

    def params(self, database: str | None = None) -> dict[str, Any]:
        """Connection keywords in the shape the polls config's `postgres` section uses."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": database or self.admin_database,
        }

    def dsn(self, database: str | None = None) -> str:
        """A libpq key=value DSN, accepted by psycopg2, aiopg and psql alike."""
        params = self.params(database)
        params["dbname"] = params.pop("database")
        return " ".join(f"{key}='{_quote_libpq(str(value))}'" for key, value in params.items() if value != "")

    def execute(self, statement: str | sql.Composable, database: str | None = None) -> list[tuple]:
        """Run one statement in autocommit mode (CREATE/DROP DATABASE refuse to run in a transaction)."""
        conn = psycopg2.connect(self.dsn(database), connect_timeout=10)
        try:
            conn.set_isolation_level(ISOLATION_LEVEL_AUTOCOMMIT)
            with conn.cursor() as cur:
                cur.execute(statement)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def create_database(self, name: str | None = None, template: str | None = None) -> str:
        """Create an empty database (or a copy of `template`) and remember to drop it on exit."""
        name = name or f"wb_{secrets.token_hex(6)}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        self.execute(statement)
        self._databases.append(name)
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database even if a connection is still open on it (PostgreSQL 13+)."""
        self.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        with contextlib.suppress(ValueError):
            self._databases.remove(name)

    @contextlib.contextmanager
    def database(self, name: str | None = None, template: str | None = None) -> Iterator[str]:
        """A fresh database for the length of a ``with`` block."""
        created = self.create_database(name, template)
        try:
            yield created
        finally:
            self.drop_database(created)

    def drop_all_created(self) -> None:
        for name in list(self._databases):
            with contextlib.suppress(psycopg2.Error):
                self.drop_database(name)


def _quote_libpq(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


# --- 1. an explicit server -------------------------------------------------------------------------------


def server_from_dsn(dsn: str) -> PostgresServer:
    """Read a URI or key=value DSN; the database it names is the one we connect to for admin work."""
    try:
        parts = parse_dsn(dsn)
    except psycopg2.ProgrammingError as exc:
        raise NoPostgresAvailable(f"{ENV_DSN} is not a valid PostgreSQL DSN ({exc}): {dsn!r}") from None
    return PostgresServer(
        host=parts.get("host", "localhost"),
        port=int(parts.get("port", 5432)),
        user=parts.get("user", os.environ.get("USER", SUPERUSER)),
        password=parts.get("password", ""),
        admin_database=parts.get("dbname", "postgres"),
        kind="dsn",
    )


# --- 2. a Docker container -------------------------------------------------------------------------------


DOCKER_SOCKET = Path("/var/run/docker.sock")


def docker_answers(timeout: float = DOCKER_PING_SECONDS) -> bool:
    """True when a Docker daemon answers a ping quickly.

    Without DOCKER_HOST and without the default socket there is nobody to ask; skipping the SDK there also
    avoids the socket it leaves open when the connection fails (a ResourceWarning, an error in our runs).
    """
    if not os.environ.get("DOCKER_HOST") and not DOCKER_SOCKET.exists():
        return False
    try:
        import docker
    except ImportError:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=max(1, round(timeout)))
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:  # the SDK raises many kinds (DockerException, requests errors, timeouts)
            return False
        finally:
            gc.collect()  # let a socket the SDK dropped be closed here, under the filter above


def _container_class() -> type:
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers before 4.x kept the module at the top level
        from testcontainers.postgres import PostgresContainer
    return PostgresContainer


@contextlib.contextmanager
def docker_postgres() -> Iterator[PostgresServer]:
    container_class = _container_class()
    password = secrets.token_hex(8)
    container = container_class(
        DOCKER_IMAGE, username=SUPERUSER, password=password, dbname="postgres", driver=None
    )
    container.start()
    try:
        yield PostgresServer(
            host=container.get_container_host_ip(),
            port=int(container.get_exposed_port(5432)),
            user=SUPERUSER,
            password=password,
            kind="docker",
        )
    finally:
        container.stop()


# --- 3. local server binaries ----------------------------------------------------------------------------

_NEEDED = ("initdb", "pg_ctl", "postgres")


def _is_bindir(path: Path) -> bool:
    return all((path / name).is_file() and os.access(path / name, os.X_OK) for name in _NEEDED)


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path)) or (0,)


def candidate_bindirs() -> list[tuple[str, Path]]:
    """Every place server binaries may live, in the order the design gives."""
    found: list[tuple[str, Path]] = []
    if os.environ.get(ENV_BINDIR):
        found.append((ENV_BINDIR, Path(os.environ[ENV_BINDIR])))
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                found.append(("pg_config --bindir", Path(out.stdout.strip())))
    initdb = shutil.which("initdb")
    if initdb:  # a PATH entry is often a symlink farm: pg_ctl and postgres sit beside the real file
        found.append(("PATH", Path(initdb).resolve().parent))
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        found.append(("/usr/lib/postgresql", Path(bindir)))
    wheel_bindir = _pgserver_bindir()
    if wheel_bindir:
        found.append(("the pgserver wheel", wheel_bindir))
    return found


def _pgserver_bindir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def find_bindir() -> Path | None:
    """The first candidate that really holds initdb, pg_ctl and postgres."""
    for _source, path in candidate_bindirs():
        if _is_bindir(path):
            return path
    return None


def free_port() -> int:
    """A port nobody listens on right now, on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class _RunAs:
    """Who runs the PostgreSQL commands: ourselves, or an unprivileged user when we are root."""

    uid: int | None = None
    gid: int | None = None
    name: str = ""

    @classmethod
    def for_this_process(cls) -> _RunAs:
        if os.geteuid() != 0:
            return cls()
        for name in ("postgres", "nobody"):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            return cls(uid=entry.pw_uid, gid=entry.pw_gid, name=name)
        raise NoPostgresAvailable(
            "PostgreSQL refuses to run as root and there is no 'postgres' or 'nobody' user to run it as.\n"
            + REMEDIES
        )

    def run(self, args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        extra: dict[str, Any] = {}
        if self.uid is not None:
            extra = {"user": self.uid, "group": self.gid, "extra_groups": []}
        return subprocess.run(
            args,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,  # keep the terminal's Ctrl+C for us; we stop the server ourselves
            env={**os.environ, "LC_ALL": "C", "TZ": "UTC"},
            check=False,
            **extra,
        )

    def give(self, path: Path) -> None:
        if self.uid is None:
            return
        for root, dirs, files in os.walk(path):
            os.chown(root, self.uid, self.gid)
            for name in dirs + files:
                os.chown(os.path.join(root, name), self.uid, self.gid)


def _process_start_ticks(pid: int) -> str | None:
    """The kernel's start time of a process, so a recycled pid is not taken for our old owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _owner_alive(owner: dict[str, Any]) -> bool:
    pid = int(owner.get("pid", 0))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    ticks = owner.get("start_ticks")
    return ticks is None or _process_start_ticks(pid) in (None, ticks)


def _stop_cluster(workdir: Path, bindir: Path | None, run_as: _RunAs) -> None:
    """Stop the postmaster of a cluster directory: pg_ctl first, a signal if that does not work."""
    data = workdir / "data"
    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return
    if bindir is not None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            run_as.run(
                [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], workdir, 30
            )
    if pid_file.exists():
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)


def abandoned_clusters(tmp_root: Path | None = None) -> list[Path]:
    """Cluster directories of ours whose owning process is gone (clusters of live runs are left alone)."""
    tmp_root = Path(tmp_root or tempfile.gettempdir())
    abandoned = []
    for workdir in tmp_root.glob(f"{TMP_PREFIX}*"):
        try:
            owner = json.loads((workdir / OWNER_FILE).read_text())
        except (OSError, ValueError):
            owner = {}
        if owner and _owner_alive(owner):
            continue
        if not owner and time.time() - workdir.stat().st_mtime < 60:
            continue  # being created right now by another process: it writes owner.json first thing
        abandoned.append(workdir)
    return abandoned


def reap_abandoned_clusters(tmp_root: Path | None = None) -> list[Path]:
    """Stop and delete clusters whose owning process is gone; return what was reaped."""
    reaped = abandoned_clusters(tmp_root)
    if reaped:
        bindir, run_as = find_bindir(), _RunAs.for_this_process()
        for workdir in reaped:
            _stop_cluster(workdir, bindir, run_as)
            shutil.rmtree(workdir, ignore_errors=True)
    return reaped


@contextlib.contextmanager
def local_postgres(bindir: Path, tmp_root: Path | None = None) -> Iterator[PostgresServer]:
    """A private cluster in a temp directory: loopback only, a free port, fsync off, trust auth."""
    reap_abandoned_clusters(tmp_root)
    run_as = _RunAs.for_this_process()
    workdir = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=tmp_root))
    try:
        (workdir / OWNER_FILE).write_text(
            json.dumps({"pid": os.getpid(), "start_ticks": _process_start_ticks(os.getpid())})
        )
        os.chmod(workdir, 0o755)
        (workdir / "socket").mkdir()
        run_as.give(workdir)
        data = workdir / "data"
        init = run_as.run(
            [
                str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                "--locale=C", "--no-sync", "--no-instructions",
            ],
            workdir,
            120,
        )  # fmt: skip
        if init.returncode != 0:
            raise NoPostgresAvailable(f"initdb failed in {workdir}:\n{init.stderr or init.stdout}")
        for attempt in range(3):
            port = free_port()
            options = (
                f"-p {port} -k {workdir / 'socket'} -c listen_addresses=127.0.0.1 -F "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            start = run_as.run(
                [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(workdir / "server.log"),
                 "-o", options, "-w", "-t", "60", "start"],
                workdir,
                90,
            )  # fmt: skip
            if start.returncode == 0:
                break
            log = (
                (workdir / "server.log").read_text(errors="replace")
                if (workdir / "server.log").exists()
                else ""
            )
            if "could not bind" not in log or attempt == 2:
                raise NoPostgresAvailable(
                    f"pg_ctl could not start PostgreSQL:\n{start.stderr}\n{log[-2000:]}"
                )
        yield PostgresServer(host="127.0.0.1", port=port, user=SUPERUSER, kind="local")
    finally:
        _stop_cluster(workdir, bindir, run_as)
        shutil.rmtree(workdir, ignore_errors=True)


# --- the provider ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit while a server runs, so `finally` blocks clean up on `kill` too."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def describe(server: PostgresServer) -> str:
    where = {"dsn": f"${ENV_DSN}", "docker": f"a {DOCKER_IMAGE} container", "local": "local binaries"}
    return f"PostgreSQL at {server.host}:{server.port} ({where.get(server.kind, server.kind)})"


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[PostgresServer]:
    """The one way the workbook gets a database server; see the module docstring for the order."""
    with _terminate_as_exit():
        dsn = os.environ.get(ENV_DSN, "").strip()
        if dsn:
            server = server_from_dsn(dsn)
            try:
                server.execute("SELECT 1")
            except psycopg2.Error as exc:
                raise NoPostgresAvailable(
                    f"Cannot connect to the server in {ENV_DSN}: {exc}".strip()
                ) from None
            try:
                yield server
            finally:
                server.drop_all_created()
            return
        if docker_answers():
            with docker_postgres() as server:
                yield server
            return
        bindir = find_bindir()
        if bindir is not None:
            with local_postgres(bindir) as server:
                yield server
            return
        tried = "\n".join(f"  - {source}: {path}" for source, path in candidate_bindirs()) or "  (none found)"
        raise NoPostgresAvailable(f"{REMEDIES}\nPlaces searched for server binaries:\n{tried}")
