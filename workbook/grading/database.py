"""The database side of grading: a PostgreSQL role of its own for each step of each learner.

One PostgreSQL server serves the whole run. Each step of each learner gets a login role of its own
(CREATEDB, no superuser): the suite's fixtures create and drop databases through that role, so it can
only ever drop its own, and the role goes with its databases when the step is graded.
"""

from __future__ import annotations

import contextlib
import secrets
import threading

import psycopg2
from psycopg2 import sql

from ..pg import PostgresServer, learner_role

_GRANT_LOCK = threading.Lock()


class LearnerRole:
    """A login role for one learner: it may create databases and drop only those it owns.

    The learner's test processes get a DSN for this role in WORKBOOK_PG_DSN; the test fixtures create and
    drop their databases through it, so no learner can see the inside of, or drop, another's database.
    """

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.name = f"wb_grade_{secrets.token_hex(6)}"
        self.password = secrets.token_urlsafe(18)

    def __enter__(self) -> LearnerRole:
        # The settings every learner's app gets, in a step run too (the suite's app shares this role here).
        learner_role(self.server.execute, self.name, self.password, createdb=True)
        # It creates its databases from the admin database, which is closed to other roles by default (and
        # holds nothing of anyone's; its databases are closed to all but itself: PostgresServer's
        # create_database, pg.close_shared_databases for template1). One grant at a time: two at once
        # update the same catalog row, and PostgreSQL refuses the second.
        with _GRANT_LOCK:
            self.server.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(self.server.admin_database), sql.Identifier(self.name)
                )
            )
        return self

    def dsn(self) -> str:
        return PostgresServer(
            host=self.server.host,
            port=self.server.port,
            user=self.name,
            password=self.password,
            admin_database=self.server.admin_database,
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
            role = sql.Identifier(self.name)
            with _GRANT_LOCK:  # its grant on the admin database goes first; one catalog change at a time
                self.server.execute(
                    sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(
                        sql.Identifier(self.server.admin_database), role
                    )
                )
                try:
                    self.server.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))
                except psycopg2.Error:
                    self.server.execute(sql.SQL("DROP OWNED BY {}").format(role))
                    self.server.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))
