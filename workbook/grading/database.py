"""The database side of grading: a PostgreSQL role of its own for each step of each learner.

One PostgreSQL server serves the whole run. Each step of each learner gets a login role of its own
(CREATEDB, no superuser): the suite's fixtures create and drop databases through that role, so it can
only ever drop its own, and the role goes with its databases when the step is graded.

CREATE DATABASE has to be run from inside some database. Each role gets one of its own for that, its
admin database, named after it: the cluster's admin database (`postgres`) and every classmate's stay
closed to it (see LearnerRole.__enter__).
"""

from __future__ import annotations

import contextlib
import secrets

import psycopg2
from psycopg2 import sql

from ..pg import PostgresServer, learner_role

_VERSIONS: dict[tuple[str, int], int] = {}


def _server_version(server: PostgresServer) -> int:
    """The server's version number (150004 for 15.4), asked once per server: each question costs 15 ms."""
    key = (server.host, server.port)
    if key not in _VERSIONS:
        _VERSIONS[key] = int(server.execute("SHOW server_version_num")[0][0])
    return _VERSIONS[key]


class LearnerRole:
    """A login role for one learner: it may create databases and drop only those it owns.

    The learner's test processes get a DSN for this role in WORKBOOK_PG_DSN; the test fixtures create and
    drop their databases through it, so no learner can see the inside of, or drop, another's database.
    """

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.name = f"wb_grade_{secrets.token_hex(6)}"
        self.password = secrets.token_urlsafe(18)
        self.admin_database = self.name

    def __enter__(self) -> LearnerRole:
        # The settings every learner's app gets, in a step run too (the suite's app shares this role here).
        learner_role(self.server.execute, self.name, self.password, createdb=True)
        try:
            self._make_admin_database()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _make_admin_database(self) -> None:
        """The database the role runs CREATE DATABASE from: its own, so that no other needs to let it in.

        Before, the role was granted CONNECT on the cluster's admin database, shared by every role of the
        class: a learner could sit there, holding connections and watching the others'. This one is the
        superuser's (the watchdog's storage share and `clear` count only what the role owns), closed to
        PUBLIC from the moment it exists (create_database), open to this role only and to no other, and
        nobody may create anything in it (before PostgreSQL 15 PUBLIC could in the public schema). It is
        a copy of template1, so it costs what any database does: about 50 ms to make and 20 ms to drop
        on a cluster of ours. Each grant changes this database's own catalog row, so steps graded at once
        never update the same row (two GRANTs on one database at once: "tuple concurrently updated").
        """
        self.server.create_database(self.admin_database, also=self.name)
        if _server_version(self.server) < 150000:  # PostgreSQL 15 closed the public schema to PUBLIC
            self.server.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"), self.admin_database)

    def dsn(self) -> str:
        return PostgresServer(
            host=self.server.host,
            port=self.server.port,
            user=self.name,
            password=self.password,
            admin_database=self.admin_database,
        ).dsn()

    def databases(self) -> list[str]:
        rows = self.server.execute(
            sql.SQL(
                "SELECT d.datname FROM pg_database d JOIN pg_roles r ON d.datdba = r.oid WHERE r.rolname = {}"
                " ORDER BY 1"
            ).format(sql.Literal(self.name))
        )
        return [row[0] for row in rows]

    def clear(self) -> None:
        """Drop every database the role owns, connections and all: the next step starts clean."""
        for name in self.databases():
            with contextlib.suppress(psycopg2.Error):
                self.server.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(psycopg2.Error):
            self.clear()
            self.server.execute(
                sql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {}").format(
                    sql.Literal(self.name)
                )
            )
        with contextlib.suppress(psycopg2.Error):  # its grant goes with its admin database, then the role
            self.server.drop_database(self.admin_database)
        with contextlib.suppress(psycopg2.Error):
            role = sql.Identifier(self.name)
            try:
                self.server.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))
            except psycopg2.Error:
                self.server.execute(sql.SQL("DROP OWNED BY {}").format(role))
                self.server.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))
