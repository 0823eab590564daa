"""Quotas PostgreSQL does not keep by itself, kept from outside while a class is graded.

PostgreSQL has no storage quota per role, and a role may undo its own `statement_timeout` (`SET
statement_timeout = 0` is allowed to any role). So one thread of the grader watches the shared server:
- storage: the databases a learner's role owns, their total size and their number. A role past its share
  loses its step: its sessions are ended, it may not log in again, and its databases are dropped at once,
  which frees the space for everyone else. A watchdog is the portable way: a capped tablespace needs root
  and a file system of its own, which the bubblewrap tier and a grading container do not have;
- statement time: a learner's statement still running after STATEMENT_LIMIT is cancelled;
- privacy: a database a learner's role created by itself (its code, not the judge's fixtures, which
  create theirs closed) lets PUBLIC connect, as every new database does; see `_close_opened`.
The server's own settings bound the rest (temporary files, WAL; see workbook/pg.py).
"""

from __future__ import annotations

import contextlib
import threading
from collections import defaultdict
from collections.abc import Callable

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import ISOLATION_LEVEL_AUTOCOMMIT

from ..pg import PostgresServer

ROLE_PATTERN = "wb\\_grade\\_%"  # grading.database.LearnerRole's names
STORAGE_LIMIT = 256 * 2**20  # bytes, all of one role's databases together
DATABASE_LIMIT = 100  # databases one role may own at once (a step's suite makes a handful)
STATEMENT_LIMIT = 30.0  # seconds: above the role's own statement_timeout, which a role can undo
INTERVAL = 0.5  # seconds between two looks


class Watchdog:
    """The thread that keeps the quotas; `breaches(role)` says what a role did, for its step's report."""

    def __init__(self, server: Callable[[], PostgresServer | None]) -> None:
        self._server = server  # asked at every look: a revived server replaces the dead one
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._breaches: dict[str, list[str]] = defaultdict(list)
        self._lost: set[str] = set()
        self._thread = threading.Thread(target=self._watch, name="quota-watchdog", daemon=True)
        self._conn = None
        self._conn_dsn = ""

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._close()

    def breaches(self, role: str) -> list[str]:
        with self._lock:
            return list(self._breaches.get(role, []))

    def lost_step(self, role: str) -> bool:
        """Whether the role went past its storage share: its step is lost, whatever its checks said."""
        with self._lock:
            return role in self._lost

    def look(self) -> None:
        """One look at the server (the thread's loop; a test calls it directly)."""
        server = self._server()
        if server is None:
            return
        try:
            self._enforce(server)
        except psycopg2.Error:
            self._close()  # the server restarts or died: the next look reconnects

    def _watch(self) -> None:
        while not self._stop.wait(INTERVAL):
            self.look()

    def _execute(self, server: PostgresServer, statement: sql.Composable | str) -> list[tuple]:
        if self._conn is None or self._conn.closed or self._conn_dsn != server.dsn():
            self._close()
            self._conn = psycopg2.connect(server.dsn(), connect_timeout=5)
            self._conn.set_isolation_level(ISOLATION_LEVEL_AUTOCOMMIT)
            self._conn_dsn = server.dsn()
        with self._conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall() if cur.description else []

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
        self._conn = None

    def _enforce(self, server: PostgresServer) -> None:
        pattern = sql.Literal(ROLE_PATTERN)
        owned = self._execute(server, sql.SQL(
            "SELECT r.rolname, sum(pg_catalog.pg_database_size(d.oid)), count(*), array_agg(d.datname) "
            "FROM pg_catalog.pg_database d JOIN pg_catalog.pg_roles r ON d.datdba = r.oid "
            "WHERE r.rolname LIKE {} GROUP BY r.rolname"
        ).format(pattern))  # fmt: skip
        for role, size, count, names in owned:
            if role in self._lost:
                continue
            if size > STORAGE_LIMIT:
                self._take_away(server, role, names, f"your database grew past {STORAGE_LIMIT >> 20} MB "
                                f"({int(size) >> 20} MB): the step was stopped there")  # fmt: skip
            elif count > DATABASE_LIMIT:
                self._take_away(server, role, names, f"your code created more than {DATABASE_LIMIT} "
                                f"databases at once ({count}): the step was stopped there")  # fmt: skip
        overdue = self._execute(server, sql.SQL(
            "SELECT pid, usename FROM pg_catalog.pg_stat_activity WHERE usename LIKE {} AND state = 'active' "
            "AND now() - query_start > make_interval(secs => {})"
        ).format(pattern, sql.Literal(STATEMENT_LIMIT)))  # fmt: skip
        for pid, role in overdue:  # noted first: the report must know before the learner's wait ends
            self._note(
                role, f"a statement of your code ran longer than {STATEMENT_LIMIT:g} s and was cancelled"
            )
            self._execute(server, sql.SQL("SELECT pg_catalog.pg_cancel_backend({})").format(sql.Literal(pid)))
        self._close_opened(server, pattern)

    def _close_opened(self, server: PostgresServer, pattern: sql.Composable) -> None:
        """Close to every other learner role the databases of a learner's role that one of them may enter,
        and end the sessions they already hold there.

        A role with CREATEDB makes databases PUBLIC may connect to, unless it revokes that itself (the
        fixtures' create_database does, before the database takes any connection). Nothing in PostgreSQL
        stops it: a new database's privileges are never copied from its template, no default privileges
        or event triggers apply to databases, and pg_hba.conf cannot say "only its owner" (it knows names,
        not owners, and the fixtures choose any name). The alternative, the role losing CREATEDB and the
        grader making every database on request, needs a channel from the sandbox to the grader. So this
        look closes such a database within INTERVAL of its creation and then ends any classmate's session
        there: a classmate may get in only during that moment, and not stay. A database still closed to
        all (ALLOW_CONNECTIONS false: the fixtures' create_database at work) is left alone, lest two
        changes of its catalog row at once fail the fixture's own.
        """
        opened = self._execute(server, sql.SQL(
            "SELECT d.datname, o.rolname, array_agg(r.rolname) FROM pg_catalog.pg_database d "
            "JOIN pg_catalog.pg_roles o ON d.datdba = o.oid "
            "JOIN pg_catalog.pg_roles r ON r.rolname LIKE {pattern} AND r.oid <> o.oid "
            "AND pg_catalog.has_database_privilege(r.oid, d.oid, 'CONNECT') "
            "WHERE o.rolname LIKE {pattern} AND d.datallowconn GROUP BY d.datname, o.rolname"
        ).format(pattern=pattern))  # fmt: skip
        for name, owner, others in opened:
            database = sql.Identifier(name)
            with contextlib.suppress(psycopg2.Error):  # its owner changing it at the same moment, say
                self._execute(server, sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
                for other in others:
                    self._execute(server, sql.SQL("REVOKE ALL ON DATABASE {} FROM {} CASCADE").format(
                        database, sql.Identifier(other)
                    ))  # fmt: skip
            self._note(
                owner,
                f"your code made a database other learners could connect to ({name!r}): it "
                "was closed to them (a new database lets everyone in until its owner says otherwise)",
            )
            inside = self._execute(server, sql.SQL(
                "SELECT pid, usename FROM pg_catalog.pg_stat_activity "
                "WHERE datname = {} AND usename <> {} AND usename LIKE {}"
            ).format(sql.Literal(name), sql.Literal(owner), pattern))  # fmt: skip
            for pid, intruder in inside:  # the report names the one who went in, not only the one let in
                end = sql.SQL("SELECT pg_catalog.pg_terminate_backend({})").format(sql.Literal(pid))
                self._execute(server, end)
                self._note(intruder, f"your code connected to another learner's database ({name!r}): that "
                           "session was ended")  # fmt: skip

    def _take_away(self, server: PostgresServer, role: str, names: list[str], message: str) -> None:
        with self._lock:
            self._lost.add(role)
        self._note(role, message)
        ident = sql.Identifier(role)
        self._execute(server, sql.SQL("ALTER ROLE {} NOLOGIN").format(ident))
        self._execute(server, sql.SQL(
            "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE usename = {}"
        ).format(sql.Literal(role)))  # fmt: skip
        for name in names:
            with contextlib.suppress(psycopg2.Error):
                self._execute(
                    server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )

    def _note(self, role: str, message: str) -> None:
        with self._lock:
            if message not in self._breaches[role]:
                self._breaches[role].append(message)
