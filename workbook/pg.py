"""The throwaway PostgreSQL server behind the tests, the notebooks, the grader and `nox -s serve`.

`throwaway_postgres()` tries, in this order:

1. an explicit server named by the ``WORKBOOK_PG_DSN`` environment variable (fresh databases are created
   there and dropped afterwards; the server itself is left alone);
2. a testcontainers PostgreSQL container, when a Docker daemon answers a ping within two seconds;
3. a temporary cluster built with local server binaries (``initdb``/``pg_ctl``);
4. otherwise it raises `NoPostgresAvailable`, whose message names the three ways to get one.

Everything it starts is stopped and deleted when the ``with`` block ends, however it ends. A cluster
left behind by a run that was killed (``kill -9``, a closed laptop lid) is reaped by the next start, which
signals only a process it has verified to be that cluster's postmaster.

Local clusters live in a private per-user folder (`private_root`) and start as a copy of a template made
once by initdb and kept in a private cache (`cluster_template`): a copy and a start take well under a
second where initdb alone takes about one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import glob
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
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
# Not "workbook-pg-": older versions of the provider reaped every such folder in the temp directory.
TMP_PREFIX = "workbook-clusters-"
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


# How CREATE DATABASE copies its template. PostgreSQL 15's default (WAL_LOG) writes every page of it to the
# WAL, 15 ms of the server's CPU and 40 ms of wall time for the 6 MB of template1; FILE_COPY copies the
# files after a checkpoint, which costs next to nothing where nothing is flushed to disk (fsync off: our
# own throwaway clusters, FAST_START), 6 ms and 14 ms. On any other server it stays the default.
FILE_COPY_WHERE_CHEAP = """
    SELECT CASE WHEN current_setting('server_version_num')::int >= 150000
                 AND current_setting('fsync') = 'off' THEN ' STRATEGY FILE_COPY' ELSE '' END
"""


@dataclass
class PostgresServer:
    """A running server we may create and drop databases on, as a superuser."""

    host: str
    port: int
    user: str
    password: str = ""
    admin_database: str = "postgres"
    kind: str = "dsn"
    # A socket folder reachable without TCP, if any: what a step run and grading give the learner's app.
    socket: str = ""
    _databases: list[str] = field(default_factory=list, repr=False)
    # A local cluster's way to stop its postmaster and delete its folder at once (idempotent): a dead
    # cluster's storage is freed before a fresh one is started, which may need the same file system.
    _release: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def release(self) -> None:
        """Stop a local cluster and free its storage now, rather than when its context ends."""
        if self._release is not None:
            self._release()

    def over_socket(self) -> PostgresServer:
        """The same server reached through its socket folder, no TCP: what step runs and grading hand out."""
        return dataclasses.replace(self, host=self.socket) if self.socket else self

    @property
    def host_is_socket(self) -> bool:
        """True when `host` is a socket folder (libpq reads a host that starts with / as one)."""
        return self.host.startswith("/")

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

    def create_database(self, name: str | None = None, template: str | None = None, *,
                        also: str | None = None) -> str:  # fmt: skip
        """Create an empty database (or a copy of `template`) and remember to drop it on exit.

        Only its owner (and a superuser) may connect to it, and the role `also` names, if any. A new
        database lets PUBLIC connect, so it is created closed to every login and opened once PUBLIC has
        lost CONNECT: a classmate's role polling pg_database finds no moment in which it could get in (and
        hold a connection that blocks nothing here, but would read the tables). One connection for all its
        statements: each new one costs about 13 ms.
        """
        name = name or f"wb_{secrets.token_hex(6)}"
        ident = sql.Identifier(name)
        source = sql.SQL(" TEMPLATE {}").format(sql.Identifier(template)) if template else sql.SQL("")
        conn = psycopg2.connect(self.dsn(), connect_timeout=10)
        try:
            conn.set_isolation_level(ISOLATION_LEVEL_AUTOCOMMIT)
            with conn.cursor() as cur:
                cur.execute(FILE_COPY_WHERE_CHEAP)
                (strategy,) = cur.fetchone()
                cur.execute(sql.SQL("CREATE DATABASE {}{} ALLOW_CONNECTIONS false{}").format(
                    ident, source, sql.SQL(strategy)
                ))  # fmt: skip
                self._databases.append(name)
                cur.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(ident))
                if also:
                    grant = sql.SQL("GRANT CONNECT ON DATABASE {} TO {}")
                    cur.execute(grant.format(ident, sql.Identifier(also)))
                cur.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(ident))
        finally:
            conn.close()
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
        server = PostgresServer(
            host=container.get_container_host_ip(),
            port=int(container.get_exposed_port(5432)),
            user=SUPERUSER,
            password=password,
            kind="docker",
        )
        close_shared_databases(server.execute)
        yield server
    finally:
        container.stop()


# --- 3. local server binaries ----------------------------------------------------------------------------

_NEEDED = ("initdb", "pg_ctl", "postgres")


def _is_bindir(path: Path) -> bool:
    return all((path / name).is_file() and os.access(path / name, os.X_OK) for name in _NEEDED)


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path)) or (0,)


def _candidates() -> Iterator[tuple[str, Path]]:
    """The places server binaries may live, in the design's order, each looked up only when asked for."""
    if os.environ.get(ENV_BINDIR):
        yield ENV_BINDIR, Path(os.environ[ENV_BINDIR])
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                yield "pg_config --bindir", Path(out.stdout.strip())
    initdb = shutil.which("initdb")
    if initdb:  # a PATH entry is often a symlink farm: pg_ctl and postgres sit beside the real file
        yield "PATH", Path(initdb).resolve().parent
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        yield "/usr/lib/postgresql", Path(bindir)
    wheel_bindir = _pgserver_bindir()
    if wheel_bindir:
        yield "the pgserver wheel", wheel_bindir


def candidate_bindirs() -> list[tuple[str, Path]]:
    """Every place server binaries may live, in the order the design gives."""
    return list(_candidates())


def _pgserver_bindir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def find_bindir() -> Path | None:
    """The first candidate that really holds initdb, pg_ctl and postgres; later ones are not looked up."""
    for _source, path in _candidates():
        if _is_bindir(path):
            return path
    return None


def free_port() -> int:
    """A port nobody listens on right now, on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Where clusters live. Everything sits in one private folder per user, $TMPDIR/workbook-clusters-<uid>/, which
# nobody else can write to: a folder planted elsewhere in the temp directory is never looked at. In it:
#   cluster-XXXX/  one running cluster: owner.json (ours), data/ and run/ (the PostgreSQL user's), server.log
#   build-XXXX/    a template being built by initdb
# The initialized template that each cluster copies lives in a private cache folder (see cluster_template).
CLUSTER_PREFIX = "cluster-"
BUILD_PREFIX = "build-"
TEMPLATE_PREFIX = "pg-template-"
TEMPLATE_FORMAT = "2"  # part of the template's key: bump it when the initdb command line changes
SMALL_FILE = 4096  # owner.json and postmaster.pid are far smaller; anything bigger is not ours
READY_TIMEOUT = 60.0

# Settings for a throwaway server: no durability (the data dies with the run anyway), small shared memory,
# no replication machinery. Passed on the command line, so changing them needs no new template.
FAST_START = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",  # a step run's; grading sizes it from --jobs (grading_connections)
    # Checkpoints come sooner, so the WAL of a learner who writes without end stays within about this much
    # of the cluster's folder (in RAM by default) instead of the default 1 GB.
    "max_wal_size": "64MB",
    "min_wal_size": "32MB",
    "shared_buffers": "32MB",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_logical_replication_workers": "0",
    "jit": "off",
    # Parallel queries' shared memory as files in the data folder, removed with it: posix segments in
    # /dev/shm would outlive a server that had to be killed (1 MB each, found there after such runs).
    "dynamic_shared_memory_type": "mmap",
}


class UnsafeDirectory(NoPostgresAvailable):
    """A folder the provider would have to trust is not private to us: refusing beats being fooled."""


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

    @property
    def server_uid(self) -> int:
        """The uid the postmaster runs as: what the reaper demands of a process before it signals it."""
        return os.geteuid() if self.uid is None else self.uid

    @property
    def group(self) -> int | None:
        """The group allowed to traverse our private folders, when the server runs as another user."""
        return self.gid if self.uid is not None else None

    def _credentials(self) -> dict[str, Any]:
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def run(self, args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,  # keep the terminal's Ctrl+C for us; we stop the server ourselves
            env=_server_env(),
            check=False,
            **self._credentials(),
        )

    def popen(self, args: list[str], cwd: Path, log: Any) -> subprocess.Popen[bytes]:
        """Start a long-running server process, its output going to `log` (an open file)."""
        return subprocess.Popen(
            args,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=_server_env(),
            **self._credentials(),
        )

    def give(self, path: Path) -> None:
        """Hand a file or a whole tree to the server's user."""
        if self.uid is None:
            return
        os.chown(path, self.uid, self.gid, follow_symlinks=False)
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(root, name), self.uid, self.gid, follow_symlinks=False)

    def share(self, path: Path) -> None:
        """Let the server's user pass through one of our folders (traverse only: no listing, no writing)."""
        if self.group is not None:
            os.chown(path, -1, self.group)
            os.chmod(path, 0o710)


def _server_env() -> dict[str, str]:
    return {**os.environ, "LC_ALL": "C", "TZ": "UTC"}


# --- private folders and files we read without trusting them ---


def _check_private(fd: int, path: Path, group: int | None) -> None:
    """Refuse a folder not owned by us, or open to anyone but (for traversal only) the server's group."""
    info = os.fstat(fd)
    mode = stat.S_IMODE(info.st_mode)
    extra = mode & 0o077
    shared_ok = group is not None and extra == 0o010 and info.st_gid == group
    if info.st_uid != os.geteuid() or (extra and not shared_ok):
        raise UnsafeDirectory(
            f"{path} should be a folder private to uid {os.geteuid()} (mode 0700), but it is owned by uid "
            f"{info.st_uid} with mode {mode:04o}. Someone else may have created it: check, then remove it."
        )


def private_dir(path: Path, group: int | None = None, create: bool = True) -> Path | None:
    """`path` as a folder only we control, made if missing; a symlink or a foreign folder is refused.

    With `group`, members of that group (the PostgreSQL user's) may traverse it, nothing more. Without
    `create`, a missing folder gives None. The checks run on an open descriptor, so nothing can be
    swapped in between checking and using.
    """
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        if create:
            raise
        return None
    except OSError as exc:  # ELOOP for a symlink, ENOTDIR for a file or a FIFO
        raise UnsafeDirectory(
            f"{path} should be a private folder of ours, but it is not ({exc.strerror})"
        ) from None
    try:
        _check_private(fd, path, group)
        if group is not None and (
            os.fstat(fd).st_gid != group or stat.S_IMODE(os.fstat(fd).st_mode) != 0o710
        ):
            os.fchown(fd, -1, group)
            os.fchmod(fd, 0o710)
    finally:
        os.close(fd)
    return path


RAM_TEMP = Path("/dev/shm")
RAM_TEMP_MIN_FREE = 1 << 30  # a container's 64 MB /dev/shm is too small: PostgreSQL needs it for itself


def _is_roomy_tmpfs(path: Path) -> bool:
    """True for a sticky, world-writable tmpfs with room to spare (the usual /dev/shm of a Linux machine)."""
    try:
        info, space = os.stat(path), os.statvfs(path)
        mounts = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return False
    tmpfs = any(
        line.split()[4] == str(path) and line.split(" - ", 1)[1].split()[0] == "tmpfs"
        for line in mounts.splitlines()
        if " - " in line and len(line.split()) > 4
    )
    sticky = info.st_mode & stat.S_ISVTX and stat.S_IMODE(info.st_mode) & 0o777 == 0o777
    return bool(tmpfs and sticky and space.f_bavail * space.f_frsize >= RAM_TEMP_MIN_FREE)


def cluster_base(tmp_root: Path | None = None) -> Path:
    """The temp folder that holds our private folder: `tmp_root`, else $TMPDIR (or TEMP, TMP) when set,
    else /dev/shm when it is a roomy tmpfs, else the system's temp folder.

    RAM first because copying the template's 730 files onto a disk file system was measured at
    0.1 to 1 s here (ext4 with online discard, slowest right after the previous cluster was deleted),
    against 0.05 s on tmpfs.
    """
    if tmp_root is not None:
        chosen = Path(tmp_root)
    elif any(os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")) or not _is_roomy_tmpfs(RAM_TEMP):
        chosen = Path(tempfile.gettempdir())
    else:
        chosen = RAM_TEMP
    return Path(os.path.realpath(chosen))  # canonical: postgres records this very path in postmaster.pid


def private_root(
    tmp_root: Path | None = None, run_as: _RunAs | None = None, create: bool = True
) -> Path | None:
    """The per-user folder of every cluster: <temp>/workbook-clusters-<uid>/, mode 0700 (0710 as root)."""
    group = (run_as or _RunAs()).group
    return private_dir(cluster_base(tmp_root) / f"{TMP_PREFIX}{os.geteuid()}", group, create)


def _read_small(directory: Path, name: str) -> str | None:
    """The text of a small regular file directly in `directory`; None for anything else.

    A symlink, a FIFO (opened without blocking, so it cannot hang us), a device, a huge file or bytes that
    are not UTF-8 all read as None.
    """
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd
        )
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > SMALL_FILE:
                return None
            content = os.read(fd, SMALL_FILE + 1)
        finally:
            os.close(fd)
        return content.decode("utf-8") if len(content) <= SMALL_FILE else None
    except (OSError, UnicodeDecodeError):
        return None
    finally:
        os.close(dir_fd)


def _pid_max() -> int:
    text = _read_small(Path("/proc/sys/kernel"), "pid_max")
    return int(text) if text and text.strip().isdigit() else 4_194_304  # the kernel's upper limit


def parse_pid(text: str) -> int | None:
    """A pid we could ever signal, or None: never 0, 1, a negative (a process group) or garbage."""
    text = text.strip()
    if not re.fullmatch(r"[0-9]{1,10}", text):
        return None
    pid = int(text)
    return pid if 1 < pid <= _pid_max() else None


# --- who owns a cluster, and which process is its postmaster ---


def _process_start_ticks(pid: int) -> str | None:
    """The kernel's start time of a process, so a recycled pid is not taken for our old owner."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat_line.rsplit(")", 1)[1].split()[19]


def _write_owner(workdir: Path, run_as: _RunAs) -> None:
    """Record who uses a cluster folder, first thing, so the reaper never takes a live one for abandoned."""
    record = {
        "pid": os.getpid(),
        "start_ticks": _process_start_ticks(os.getpid()),
        "run_uid": run_as.server_uid,
    }
    fd = os.open(
        workdir / OWNER_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
    )
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(record))


def _read_owner(workdir: Path) -> dict[str, Any] | None:
    text = _read_small(workdir, OWNER_FILE)
    try:
        owner = json.loads(text) if text else None
    except ValueError:
        return None
    return owner if isinstance(owner, dict) else None


def _owner_alive(owner: dict[str, Any]) -> bool:
    pid = owner.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or parse_pid(str(pid)) is None:
        return False
    try:
        os.kill(pid, 0)  # signal 0 only asks; pid > 1 was checked above
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    ticks = owner.get("start_ticks")
    return ticks is None or _process_start_ticks(pid) in (None, ticks)


def is_postmaster_of(pid: int, data: Path, uid: int) -> bool:
    """True only for a live process `pid` running as `uid` whose command line is `postgres -D <data>`."""
    if parse_pid(str(pid)) is None:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return False
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if fields.get("Tgid", "").strip() != str(pid):  # a thread's id, not a process
        return False
    if fields.get("State", "").strip()[:1] in ("Z", "X", ""):
        return False
    if fields.get("Uid", "").split() != [str(uid)] * 4:
        return False
    if os.path.basename(os.fsdecode(argv[0])) not in ("postgres", "postmaster"):
        return False
    target = os.fsencode(str(data))
    return any(argv[i] == b"-D" and argv[i + 1] == target for i in range(len(argv) - 1))


def _signal_postmaster(pid: int, data: Path, uid: int, signum: int) -> bool:
    """Send `signum` to `pid` if, and only if, it is the postmaster of `data` running as `uid`.

    The pid is pinned with a pidfd before the check, so a process that exits and whose pid is reused
    meanwhile gets nothing: the signal goes to the pinned (dead) process.
    """
    pidfd = None
    with contextlib.suppress(AttributeError, OSError):  # no pidfd before Linux 5.3: a plain kill below
        pidfd = os.pidfd_open(pid)
    try:
        if not is_postmaster_of(pid, data, uid):
            return False
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signum)
        else:
            os.kill(pid, signum)
        return True
    except OSError:
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _postmaster_pid(data: Path) -> int | None:
    """The pid in `data`/postmaster.pid, if that file is sane and names this very data folder."""
    text = _read_small(data, "postmaster.pid")
    lines = text.splitlines() if text else []
    if len(lines) < 2 or lines[1] != str(data):
        return None
    return parse_pid(lines[0])


def stop_verified_postmaster(data: Path, uid: int, timeout: float = 5.0) -> bool:
    """Stop the postmaster of an abandoned `data` folder: immediate shutdown, then SIGKILL if it lingers.

    Nothing is signalled unless it is verified (see is_postmaster_of); returns whether one was stopped.
    """
    pid = _postmaster_pid(data)
    if pid is None:
        return False
    for signum in (signal.SIGQUIT, signal.SIGKILL):
        if not _signal_postmaster(pid, data, uid, signum):
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not is_postmaster_of(pid, data, uid):
                return True
            time.sleep(0.01)
    return not is_postmaster_of(pid, data, uid)


def abandoned_clusters(tmp_root: Path | None = None) -> list[Path]:
    """Cluster folders of ours whose owning process is gone (clusters of live runs are left alone).

    Only our private folder is looked at, and in it only real folders we own: symlinks, files and FIFOs
    are skipped. A private folder that is missing or not private gives nothing.
    """
    try:
        parent = private_root(tmp_root, _RunAs.for_this_process(), create=False)
    except NoPostgresAvailable:
        return []
    if parent is None:
        return []
    abandoned = []
    with os.scandir(parent) as entries:
        for entry in entries:
            if not entry.name.startswith((CLUSTER_PREFIX, BUILD_PREFIX)):
                continue
            try:
                if (
                    not entry.is_dir(follow_symlinks=False)
                    or entry.stat(follow_symlinks=False).st_uid != os.geteuid()
                ):
                    continue
                modified = entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            owner = _read_owner(Path(entry.path))
            if owner is not None and _owner_alive(owner):
                continue
            if owner is None and time.time() - modified < 60:
                continue  # being created right now by another process: it writes owner.json first thing
            abandoned.append(Path(entry.path))
    return abandoned


def reap_abandoned_clusters(tmp_root: Path | None = None) -> list[Path]:
    """Stop and delete clusters whose owning process is gone; return what was reaped."""
    reaped = abandoned_clusters(tmp_root)
    if reaped:
        uid = _RunAs.for_this_process().server_uid
        for workdir in reaped:
            owner = _read_owner(workdir) or {}
            if owner.get("run_uid", uid) == uid:  # a record naming another user is not believed
                stop_verified_postmaster(workdir / "data", uid)
            shutil.rmtree(workdir, ignore_errors=True)
    return reaped


# --- the template every cluster copies ---


def _copy_tree(source: Path, target: Path) -> None:
    """A plain recursive copy keeping modes and owners (the server's user owns a data folder)."""
    cp = shutil.which("cp")
    if cp:
        done = subprocess.run([cp, "-a", "--", str(source), str(target)], capture_output=True, text=True)
        if done.returncode == 0:
            return
        raise NoPostgresAvailable(f"could not copy the cluster template {source}:\n{done.stderr}")
    shutil.copytree(source, target, symlinks=True)
    owner = source.stat()
    if os.geteuid() == 0:
        _RunAs(uid=owner.st_uid, gid=owner.st_gid).give(target)


def _template_key(bindir: Path, run_as: _RunAs) -> str:
    """Changes when the binaries do (path, size, time, inode of initdb and postgres) or the users do."""
    real = bindir.resolve()
    parts = [TEMPLATE_FORMAT, str(real), str(os.geteuid()), str(run_as.server_uid)]
    for name in ("initdb", "postgres"):
        info = (real / name).stat()
        parts += [name, str(info.st_size), str(info.st_mtime_ns), str(info.st_ino)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def template_home() -> Path:
    """The private cache folder for templates: $XDG_CACHE_HOME/workbook, else ~/.cache/workbook."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    os.makedirs(cache, exist_ok=True)
    home = private_dir(Path(cache) / "workbook")
    assert home is not None
    return home


def _usable_template(folder: Path) -> bool:
    """True for a finished template of ours; a half-deleted one is removed so that it gets rebuilt."""
    if private_dir(folder, create=False) is None:
        return False
    if _read_small(folder / "data", "PG_VERSION") is not None:
        return True
    shutil.rmtree(folder, ignore_errors=True)
    return False


def cluster_template(bindir: Path, run_as: _RunAs, parent: Path) -> Path:
    """The data folder of an initialized, stopped cluster that every new cluster copies.

    Built once per binaries and users with initdb (about a second), then kept in the private cache. Two
    runs may build at once: each builds under a temporary name and renames it into place, which is atomic,
    and the loser throws its copy away.
    """
    home = template_home()
    final = home / f"{TEMPLATE_PREFIX}{_template_key(bindir, run_as)}"
    if _usable_template(final):
        return final / "data"
    build = Path(tempfile.mkdtemp(prefix=BUILD_PREFIX, dir=parent))
    try:
        _write_owner(build, run_as)
        run_as.share(build)
        data = build / "data"
        data.mkdir(mode=0o700)
        run_as.give(data)
        init = run_as.run(
            [
                str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                "--locale=C", "--no-sync", "--no-instructions", "--wal-segsize=1",
            ],
            build,
            120,
        )  # fmt: skip
        if init.returncode != 0:
            raise NoPostgresAvailable(f"initdb failed in {build}:\n{init.stderr or init.stdout}")
        _slim_template(bindir, data, run_as)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=home))
        try:
            try:
                os.rename(data, staging / "data")
            except OSError:  # the cache is on another file system than the temp folder
                _copy_tree(data, staging / "data")
            (staging / "template.json").write_text(json.dumps({"bindir": str(bindir.resolve())}))
            os.rename(staging, final)
        except OSError:
            if not _usable_template(final):
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _forget_stale_templates(home, final, bindir)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return final / "data"


def _slim_template(bindir: Path, data: Path, run_as: _RunAs) -> None:
    """Drop what PostgreSQL makes again by itself: each copy is then 730 files, 20 MB (not 970, 28 MB).

    The free space maps and visibility maps (`*_fsm`, `*_vm`) are optional forks, made again on demand;
    WAL segments other than the one holding the last checkpoint are spares initdb recycled ahead of time.
    """
    for folder, _dirs, files in os.walk(data):
        for name in files:
            if name.endswith(("_fsm", "_vm")):
                os.unlink(os.path.join(folder, name))
    control = run_as.run([str(bindir / "pg_controldata"), "-D", str(data)], data.parent, 30)
    redo = re.search(r"REDO WAL file:\s*([0-9A-F]{24})\s*$", control.stdout, re.MULTILINE)
    if control.returncode != 0 or redo is None:
        return  # no pg_controldata here: keep every segment
    for segment in (data / "pg_wal").iterdir():
        if re.fullmatch(r"[0-9A-F]{24}", segment.name) and segment.name != redo.group(1):
            segment.unlink()


def _forget_stale_templates(home: Path, current: Path, bindir: Path) -> None:
    """Remove templates of binaries that changed or vanished since they were built."""
    for folder in home.glob(f"{TEMPLATE_PREFIX}*"):
        if folder == current or folder.is_symlink():
            continue
        text = _read_small(folder, "template.json")
        try:
            built_for = Path(json.loads(text)["bindir"]) if text else None
        except (ValueError, KeyError, TypeError):
            built_for = None
        if built_for is None or built_for == bindir.resolve() or not (built_for / "postgres").exists():
            shutil.rmtree(folder, ignore_errors=True)


# --- a cluster ---


def setup_auth(data: Path, run_as: _RunAs) -> None:
    """Decide who may connect to a new cluster: the one place that sets up authentication.

    Every role needs its SCRAM password, over TCP (loopback only) and over the sockets alike, so a process
    that finds a socket or the port cannot log in as anyone. One exception, until `lock_down`: the
    operating-system user who started the cluster (peer authentication, checked by the kernel) may enter
    as the superuser over a socket without a password. That is how `set_superuser_password` gives each
    cluster a fresh password, also when the cluster is a copy of the template; a process under any other
    uid, a confined learner's, is refused.
    """
    hba, ident = data / "pg_hba.conf", data / "pg_ident.conf"
    me = pwd.getpwuid(os.geteuid()).pw_name
    hba.write_text(
        f"# written by workbook.pg (setup_auth)\nlocal all {SUPERUSER} peer map=workbook\n" + _PASSWORD_RULES
    )
    ident.write_text(f"# written by workbook.pg (setup_auth)\nworkbook {me} {SUPERUSER}\n")
    run_as.give(hba)
    run_as.give(ident)


# Members of this group (the learners' apps) may not log in over TCP: see learner_role.
SOCKET_ONLY_GROUP = "workbook_socket_only"
_PASSWORD_RULES = (
    "local all all scram-sha-256\n"
    f"host all +{SOCKET_ONLY_GROUP} 127.0.0.1/32 reject\n"
    "host all all 127.0.0.1/32 scram-sha-256\n"
)


def lock_down(data: Path, run: Path, port: int, password: str) -> None:
    """Passwords only from now on, the superuser's too: drop the peer rule and wait until it is gone.

    Needed where a learner's process shares the grader's uid (bubblewrap without root): peer would let it
    in as the superuser. The reload is asynchronous, so this waits until a password-less login fails.
    """
    hba = data / "pg_hba.conf"
    hba.write_text("# written by workbook.pg (lock_down)\n" + _PASSWORD_RULES)
    conn = psycopg2.connect(host=str(run), port=port, user=SUPERUSER, password=password, dbname="postgres",
                            connect_timeout=10)  # fmt: skip
    try:
        conn.set_isolation_level(ISOLATION_LEVEL_AUTOCOMMIT)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_catalog.pg_reload_conf()")
            cur.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (SOCKET_ONLY_GROUP,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(SOCKET_ONLY_GROUP)))
    finally:
        conn.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            psycopg2.connect(host=str(run), port=port, user=SUPERUSER, dbname="postgres",
                             connect_timeout=5).close()  # fmt: skip
        except psycopg2.OperationalError:
            return
        time.sleep(0.005)
    raise NoPostgresAvailable("PostgreSQL did not take its password-only rules within 5 s")


def set_superuser_password(run: Path, port: int) -> str:
    """A fresh random password for the superuser of a started cluster, set over its private socket."""
    password = secrets.token_urlsafe(24)
    conn = psycopg2.connect(host=str(run), port=port, user=SUPERUSER, dbname="postgres", connect_timeout=10)
    try:
        conn.set_isolation_level(ISOLATION_LEVEL_AUTOCOMMIT)
        with conn.cursor() as cur:
            cur.execute("SET password_encryption = 'scram-sha-256'")
            cur.execute(sql.SQL("ALTER ROLE {} PASSWORD %s").format(sql.Identifier(SUPERUSER)), (password,))
            close_shared_databases(cur.execute)
    finally:
        conn.close()
    return password


def close_shared_databases(execute: Callable[[str], object]) -> None:
    """Let other roles connect only where they are let in (see create_database and grading's LearnerRole):
    neither the admin database every cluster has nor template1.

    A connection held on template1 makes every CREATE DATABASE that copies it fail ("source database
    "template1" is being accessed by other users"), so one learner holding one would fail the classmates'
    steps. CREATE DATABASE copies template1 without connecting to it, so the roles that may create
    databases still can. No private template is needed besides: closed to all but the superuser, template1
    can be neither held nor changed by a learner, and each database the fixtures make is a fresh copy of it.
    """
    for database in ("postgres", "template1"):
        execute(f"REVOKE CONNECT, TEMPORARY ON DATABASE {database} FROM PUBLIC")
    # Before PostgreSQL 15 every role may create objects in the public schema of the admin database.
    execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")


def _wait_ready(process: subprocess.Popen[bytes], data: Path, timeout: float) -> bool:
    """Wait until the postmaster writes "ready" into its postmaster.pid; False if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        lines = (_read_small(data, "postmaster.pid") or "").splitlines()
        if len(lines) >= 8 and lines[0] == str(process.pid) and lines[7].strip() == "ready":
            return True
        time.sleep(0.002)
    return False


def _stop_child(process: subprocess.Popen[bytes] | None) -> None:
    """Immediate shutdown of a postmaster we started (our child, so its pid cannot have been reused)."""
    if process is None:
        return
    if process.poll() is None:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def _start_postmaster(
    bindir: Path, workdir: Path, run_as: _RunAs, sockets: str, max_connections: int | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """Start `postgres` on a free loopback port; retry on another port if someone took it meanwhile."""
    data, log_path = workdir / "data", workdir / "server.log"
    for attempt in range(3):
        port = free_port()
        args = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", sockets,
                "-c", "listen_addresses=127.0.0.1"]  # fmt: skip
        settings = FAST_START | ({"max_connections": str(max_connections)} if max_connections else {})
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        with open(log_path, "ab") as log:
            process = run_as.popen(args, workdir, log)
        if _wait_ready(process, data, READY_TIMEOUT):
            return process, port
        _stop_child(process)
        log_text = log_path.read_text(errors="replace")
        if "could not bind" not in log_text or attempt == 2:
            raise NoPostgresAvailable(f"PostgreSQL did not start in {workdir}:\n{log_text[-2000:]}")
    raise AssertionError("unreachable")


@contextlib.contextmanager
def local_postgres(
    bindir: Path,
    tmp_root: Path | None = None,
    socket_dir: Path | None = None,
    max_connections: int | None = None,
) -> Iterator[PostgresServer]:
    """A private cluster copied from the template: loopback only, a free port, fsync off.

    `socket_dir` adds a socket in a folder of the caller's (grading hands it to confined learners, who
    reach no TCP listener); password rules apply there as on TCP, the superuser's included. The server's
    `socket` is that folder, else the cluster's own: a step run hands it out too (see over_socket).
    `max_connections` replaces FAST_START's (see grading_connections).
    """
    run_as = _RunAs.for_this_process()
    parent = private_root(tmp_root, run_as)
    assert parent is not None
    reap_abandoned_clusters(tmp_root)
    template = cluster_template(bindir, run_as, parent)
    workdir = Path(tempfile.mkdtemp(prefix=CLUSTER_PREFIX, dir=parent))
    owner, postmaster = os.getpid(), None
    releasing = threading.Lock()

    def release() -> None:
        nonlocal postmaster
        if os.getpid() != owner:  # a forked child must not stop its parent's server
            return
        with releasing:
            _stop_child(postmaster)
            postmaster = None
            shutil.rmtree(workdir, ignore_errors=True)

    try:
        _write_owner(workdir, run_as)
        run_as.share(workdir)
        _copy_tree(template, workdir / "data")
        (workdir / "run").mkdir(mode=0o700)
        run_as.give(workdir / "run")
        sockets = str(workdir / "run")
        if socket_dir is not None:
            run_as.give(socket_dir)
            sockets += f",{socket_dir}"
        setup_auth(workdir / "data", run_as)
        postmaster, port = _start_postmaster(bindir, workdir, run_as, sockets, max_connections)
        password = set_superuser_password(workdir / "run", port)
        lock_down(workdir / "data", workdir / "run", port, password)
        yield PostgresServer(host="127.0.0.1", port=port, user=SUPERUSER, password=password, kind="local",
                             socket=str(socket_dir or workdir / "run"), _release=release)  # fmt: skip
    finally:
        release()


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


# --- the learner's side: the role and the host form it gets ----------------------------------------------

# The settings of the role a learner's app logs in as, the same in `nox -s stepN` (tests/conftest.py's
# Database.make_app_role) and in grading (grading.database.LearnerRole): so many connections at most (enough
# for step 10's checks to see a pool that overflows: they ask 18 queries at once of a pool of at most 6), no
# statement longer than this, and no more temporary files (sorts and hashes spilled to disk) than this: far
# beyond any query of the polls app, and few enough that the spills of every job at once fit beside the
# cluster, which lives in RAM by default. temp_file_limit is a superuser's setting: the role can neither SET
# nor ALTER ROLE it away.
LEARNER_CONNECTION_LIMIT = 25
LEARNER_STATEMENT_TIMEOUT = "20s"
LEARNER_TEMP_FILE_LIMIT = "128MB"
# Connections beyond the learners' roles: the grader's own (a few per job: roles made and dropped, the
# server asked whether it lives) and PostgreSQL's reserve for superusers (superuser_reserved_connections, 3).
GRADER_CONNECTIONS_PER_JOB = 2
GRADER_RESERVE = 10


def grading_connections(jobs: int) -> int:
    """The server's max_connections for a grading run of `jobs` steps at a time: every job's role may hold
    all it is allowed, and the grader still gets in. Learners who hold every connection they may then cost
    nobody else theirs (as a server of 200 did, shared by 8 jobs of 50 each)."""
    jobs = max(1, jobs)
    return jobs * (LEARNER_CONNECTION_LIMIT + GRADER_CONNECTIONS_PER_JOB) + GRADER_RESERVE


def learner_role(execute: Callable[[sql.Composable], list[tuple]], role: str, password: str, *,
                 createdb: bool = False, socket_only: bool = False) -> None:  # fmt: skip
    """Create the login role of a learner's app with the settings above, through `execute` (a server's or a
    database's, run as a superuser or a role that may create roles; only a superuser can set the temporary
    files' limit, and on a server where the judge is no superuser the role goes without it).

    With `socket_only`, and on a cluster of ours (which has the group), the role may not log in over TCP,
    only through the socket folder: an app that connects to a host of its own (localhost, 127.0.0.1)
    instead of the one its config names is refused in a step run as it is when graded, where a confined
    learner reaches PostgreSQL by its socket folder only.
    """
    ident = sql.Identifier(role)
    execute(sql.SQL(
        "CREATE ROLE {} LOGIN {} NOSUPERUSER NOCREATEROLE CONNECTION LIMIT {} PASSWORD {}"
    ).format(ident, sql.SQL("CREATEDB" if createdb else "NOCREATEDB"), sql.Literal(LEARNER_CONNECTION_LIMIT),
             sql.Literal(password)))  # fmt: skip
    execute(sql.SQL("ALTER ROLE {} SET statement_timeout = {}").format(
        ident, sql.Literal(LEARNER_STATEMENT_TIMEOUT)
    ))  # fmt: skip
    if execute(sql.SQL("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = current_user AND rolsuper")):
        execute(sql.SQL("ALTER ROLE {} SET temp_file_limit = {}").format(
            ident, sql.Literal(LEARNER_TEMP_FILE_LIMIT)
        ))  # fmt: skip
    group = sql.Literal(SOCKET_ONLY_GROUP)
    if socket_only and execute(sql.SQL("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {}").format(group)):
        execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(SOCKET_ONLY_GROUP), ident))


def host_form_note(server: PostgresServer) -> str:
    """One line for a step's output when the app's database host is no socket folder ('' when it is)."""
    if server.host_is_socket:
        return ""
    return (
        f"Note: {describe(server)} has no socket folder to give your app, so this run did not check that "
        "the app connects to the host its config names (grading gives a socket folder there)."
    )


def describe(server: PostgresServer) -> str:
    where = {"dsn": f"${ENV_DSN}", "docker": f"a {DOCKER_IMAGE} container", "local": "local binaries"}
    return f"PostgreSQL at {server.host}:{server.port} ({where.get(server.kind, server.kind)})"


@contextlib.contextmanager
def throwaway_postgres(
    socket_dir: Path | None = None, max_connections: int | None = None
) -> Iterator[PostgresServer]:
    """The one way the workbook gets a database server; see the module docstring for the order.

    `socket_dir`, `max_connections`: for a local cluster (see local_postgres); other servers ignore them.
    """
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
            with local_postgres(bindir, socket_dir=socket_dir, max_connections=max_connections) as server:
                yield server
            return
        tried = "\n".join(f"  - {source}: {path}" for source, path in candidate_bindirs()) or "  (none found)"
        raise NoPostgresAvailable(f"{REMEDIES}\nPlaces searched for server binaries:\n{tried}")
