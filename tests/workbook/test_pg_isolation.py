"""What a learner's PostgreSQL role may reach on a cluster of ours, and what it may use up (issue 20).

Each step of each learner logs in as a role of its own (grading's LearnerRole; in a step run, the app's
role of tests/conftest.py). These checks play two such roles on one local cluster: one cannot reach or
block the other's databases, cannot touch the server's files or programs, and cannot lift its quotas.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.sql
import pytest

from tests.conftest import app_database
from workbook import pg
from workbook.grading import watchdog
from workbook.grading.database import LearnerRole

JOBS = 8  # the default --jobs of a 4-core machine


@pytest.fixture(scope="module")
def local() -> Iterator[pg.PostgresServer]:
    with pg.throwaway_postgres(max_connections=pg.grading_connections(JOBS)) as server:
        if server.kind != "local":
            pytest.skip("these checks are about a cluster of ours")
        yield server


def as_role(server: pg.PostgresServer, role: LearnerRole) -> pg.PostgresServer:
    """The server as the role's DSN reaches it: what a learner's process (and its step's judge) holds."""
    return pg.server_from_dsn(role.dsn())


def connect(server: pg.PostgresServer, database: str) -> Any:
    return psycopg2.connect(server.dsn(database), connect_timeout=10)


def test_no_learner_role_may_connect_to_template1_yet_each_creates_databases_from_it(local):
    with LearnerRole(local) as holder, LearnerRole(local) as classmate:
        with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
            connect(as_role(local, holder), "template1")
        # CREATE DATABASE copies template1 without a connection to it, so CONNECT on it is not needed.
        with as_role(local, classmate).database() as name:
            assert name in classmate.databases()


def test_no_learner_role_may_connect_to_the_clusters_admin_database_or_a_classmates(local):
    """Each role runs CREATE DATABASE from an admin database of its own: `postgres` needs to let none in."""
    with LearnerRole(local) as mine, LearnerRole(local) as theirs:
        me, them = as_role(local, mine), as_role(local, theirs)
        for elsewhere in (local.admin_database, them.admin_database):
            with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
                connect(me, elsewhere)
        assert me.admin_database == mine.name
        with me.database() as name:  # made from its own admin database
            assert name in mine.databases()
        conn = connect(me, me.admin_database)
        try:  # where nothing can be made either, whichever PostgreSQL runs it
            with pytest.raises(psycopg2.errors.InsufficientPrivilege), conn.cursor() as cur:
                cur.execute("CREATE TABLE public.mine (x int)")
        finally:
            conn.close()
    assert not local.execute(
        psycopg2.sql.SQL("SELECT 1 FROM pg_catalog.pg_database WHERE datname IN ({}, {})").format(
            psycopg2.sql.Literal(mine.admin_database), psycopg2.sql.Literal(theirs.admin_database)
        )
    ), "expected each role's admin database to go with the role"


def test_a_database_a_role_makes_by_itself_is_closed_to_classmates_by_the_watchdog(local):
    """A plain CREATE DATABASE of a learner's code lets PUBLIC connect; the grader's next look closes it,
    and a classmate that got in meanwhile is put out."""
    with LearnerRole(local) as mine, LearnerRole(local) as theirs:
        me, them = as_role(local, mine), as_role(local, theirs)
        me.execute('CREATE DATABASE "made by itself"')
        me.execute('CREATE DATABASE "opened to a classmate" ALLOW_CONNECTIONS false')
        me.execute(psycopg2.sql.SQL('GRANT ALL ON DATABASE "opened to a classmate" TO {}').format(
            psycopg2.sql.Identifier(theirs.name)
        ))  # fmt: skip
        me.execute('ALTER DATABASE "opened to a classmate" ALLOW_CONNECTIONS true')
        held = connect(them, "made by itself")  # PostgreSQL's default: PUBLIC may connect
        connect(them, "opened to a classmate").close()
        dog = watchdog.Watchdog(lambda: local)
        dog.look()
        assert len(dog.breaches(mine.name)) == 2 and "could connect to" in dog.breaches(mine.name)[0]
        assert dog.breaches(theirs.name) == [
            "your code connected to another learner's database ('made by itself'): that session was ended"
        ]
        for name in ("made by itself", "opened to a classmate"):
            with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
                connect(them, name)
            connect(me, name).close()  # its owner still gets in
        with pytest.raises(psycopg2.OperationalError, match="terminat"), held.cursor() as cur:
            cur.execute("SELECT 1")
        held.close()


def test_a_connection_held_on_template1_fails_every_create_database_so_only_the_superuser_may_connect(local):
    with LearnerRole(local) as classmate:
        # What a learner could do before: the superuser holds one here to show the failure it caused.
        held = connect(local, "template1")
        try:
            with pytest.raises(psycopg2.errors.ObjectInUse, match="being accessed by other users"):
                as_role(local, classmate).create_database()
        finally:
            held.close()


def test_a_role_connects_to_its_own_databases_and_to_no_classmates(local):
    with LearnerRole(local) as mine, LearnerRole(local) as theirs:
        me, them = as_role(local, mine), as_role(local, theirs)
        # As the graded judge makes them (tests/conftest.py: the role cannot make an app role of its own).
        with app_database(me) as database:
            assert not database.app_role
            connect(me, database.name).close()
            with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
                connect(them, database.name)
            visible = them.execute("SELECT datname FROM pg_catalog.pg_database WHERE NOT datistemplate")
            for (name,) in visible:  # but its admin database, where it runs CREATE DATABASE (see LearnerRole)
                if name not in theirs.databases() and name != theirs.admin_database:
                    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
                        connect(them, name)


def test_a_classmate_polling_for_new_databases_never_gets_in(local):
    """A new database is closed to every login until PUBLIC has lost CONNECT: no window to slip through."""
    with LearnerRole(local) as mine, LearnerRole(local) as theirs:
        me, them = as_role(local, mine), as_role(local, theirs)
        stop, got_in = threading.Event(), []

        def prowl() -> None:
            while not stop.is_set():
                for (name,) in them.execute(
                    "SELECT datname FROM pg_catalog.pg_database WHERE datname LIKE 'wb\\_%'"
                ):
                    with contextlib.suppress(psycopg2.Error):
                        connect(them, name).close()
                        if name not in (*theirs.databases(), theirs.admin_database):
                            got_in.append(name)

        prowler = threading.Thread(target=prowl, daemon=True)
        prowler.start()
        try:
            for _ in range(15):
                with me.database():
                    pass
        finally:
            stop.set()
            prowler.join(30)
        assert got_in == []


@pytest.mark.parametrize(
    "statement",
    [
        "COPY (SELECT 1) TO PROGRAM 'id'",
        "COPY pg_catalog.pg_class FROM PROGRAM 'id'",
        "COPY (SELECT 1) TO '/tmp/workbook-learner-wrote-this'",
        "COPY pg_catalog.pg_class FROM '/etc/passwd'",
        "SELECT pg_catalog.pg_read_file('pg_hba.conf')",
        "SELECT pg_catalog.pg_read_binary_file('/etc/passwd')",
        "SELECT pg_catalog.pg_ls_dir('.')",
        "SELECT pg_catalog.lo_import('/etc/passwd')",
        "SELECT pg_catalog.lo_export(pg_catalog.lo_create(0), '/tmp/workbook-learner-wrote-this')",
        "CREATE EXTENSION file_fdw",
    ],
)
def test_a_learner_role_is_refused_the_servers_files_and_programs(local, statement):
    with LearnerRole(local) as role, as_role(local, role).database() as name:
        conn = connect(as_role(local, role), name)
        try:
            with pytest.raises(psycopg2.errors.InsufficientPrivilege), conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()


@pytest.mark.parametrize(
    "statement",
    [
        "SET temp_file_limit = -1",
        "SET SESSION temp_file_limit = '100GB'",
        "ALTER ROLE CURRENT_USER SET temp_file_limit = -1",
        "ALTER ROLE CURRENT_USER RESET temp_file_limit",
        "ALTER ROLE CURRENT_USER IN DATABASE {db} SET temp_file_limit = -1",
        "ALTER DATABASE {db} SET temp_file_limit = -1",
    ],
)
def test_a_learner_role_cannot_lift_its_temporary_files_limit(local, statement):
    with LearnerRole(local) as role, as_role(local, role).database() as name:
        conn = connect(as_role(local, role), name)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="temp_file_limit"):
                    cur.execute(statement.format(db=f'"{name}"'))
                cur.execute("ALTER ROLE CURRENT_USER RESET ALL")  # lets the role drop its own settings only
            again = connect(as_role(local, role), name)
            with again.cursor() as cur:
                cur.execute("SHOW temp_file_limit")
                assert cur.fetchone() == (pg.LEARNER_TEMP_FILE_LIMIT,)
            again.close()
        finally:
            conn.close()


def test_the_wal_is_kept_small(local):
    assert local.execute("SHOW max_wal_size") == [(pg.FAST_START["max_wal_size"],)]


def test_every_job_holding_all_its_connections_leaves_room_for_the_grader(local):
    """At --jobs 8, each job's role holding every connection it may costs no job, nor the grader, theirs."""
    assert local.execute("SHOW max_connections") == [(str(pg.grading_connections(JOBS)),)]
    held: list[Any] = []
    with contextlib.ExitStack() as roles:
        try:
            for _ in range(JOBS - 1):
                role = roles.enter_context(LearnerRole(local))
                server = as_role(local, role)
                held += [connect(server, role.admin_database) for _ in range(pg.LEARNER_CONNECTION_LIMIT)]
                with pytest.raises(psycopg2.OperationalError, match="too many connections for role"):
                    connect(server, role.admin_database)
            # The last job's role, made by the grader then: the judge's connections and a pool of its own.
            honest = roles.enter_context(LearnerRole(local))
            server = as_role(local, honest)
            with app_database(server) as database:  # which keeps one connection of the judge's
                held += [connect(server, database.name) for _ in range(pg.LEARNER_CONNECTION_LIMIT - 1)]
            for _ in range(JOBS * pg.GRADER_CONNECTIONS_PER_JOB):
                held.append(connect(local, "postgres"))
        finally:
            for conn in held:
                conn.close()


def test_the_step_run_role_and_the_graded_role_share_the_quotas(local):
    with app_database(dataclasses.replace(local.over_socket())) as database, LearnerRole(local) as graded:
        for role in (database.app_role, graded.name):
            rows = local.execute(
                psycopg2.sql.SQL(
                    "SELECT rolconnlimit, rolconfig FROM pg_catalog.pg_roles WHERE rolname = {}"
                ).format(psycopg2.sql.Literal(role))
            )
            assert rows[0][0] == pg.LEARNER_CONNECTION_LIMIT
            assert f"temp_file_limit={pg.LEARNER_TEMP_FILE_LIMIT}" in rows[0][1]
