"""Shared fixtures: the learner's process, the throwaway database, and the app served over HTTP.

The suites are the judge: they never import the tree under test. They reach the learner's code through
the `learner` fixture (a harness process that serves the learner's apps and calls the learner's
functions, see workbook/judge/learner_process.py) and `polls_process` (the learner's own commands), and
read PostgreSQL themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import json
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg2
import psycopg2.errors
import psycopg2.sql
import pytest

from workbook.judge.learner_process import Command, Finished, Harness, LearnerGone, LearnerRaised
from workbook.judge.logs import error_text, last_exception, without_own_frames
from workbook.pg import NoPostgresAvailable, PostgresServer, free_port, learner_role, throwaway_postgres

pytest_plugins = ["workbook.pytest_plugin"]

SQL_DIR = Path(__file__).with_name("sql")
# Every request the judge sends must get its answer (status and headers) within ANSWER_DEADLINE, longer
# than any wait the lessons give the app itself (DB_TIMEOUT, 5 s), whatever the machine's load; the whole
# exchange, body included, within HTTP_TIMEOUT. Each wait of the judge has its deadline where it waits (this
# one, the judge's SQL below, a call into the learner's process, a command), so that a failure can say
# what never came; a per-test timer such as pytest-timeout could only say that the test ran long, and its
# signal would land inside the event loop, its thread method end the whole suite.
ANSWER_DEADLINE = 10.0
HTTP_TIMEOUT = 20
NAME_HINT = "Hint: check the spelling; the tests use the tutorial's names."


def raised_text(error: dict[str, str]) -> str:
    """'NameError: name 'x' is not defined (at aiohttpdemo_polls/views.py, line 3: ...)'."""
    where = f"\n  at {error['where']}" if error.get("where") else ""
    return f"{error['name']}: {error_text(error['message'])}{where}"


def ignored_setting_hint(message: str, config: Any) -> str:
    """' Hint: ...' naming the value of config['postgres'] the app did not use, when the error that stopped
    it shows one; '' otherwise. Every run gives other values (a socket folder as the host, as grading
    does), so a value of the app's own fails here as it would when graded."""
    postgres = config.get("postgres") if isinstance(config, dict) else None
    if not isinstance(postgres, dict):
        return ""
    wrong = ""
    if "rejects connection for host" in message:  # a local cluster lets the app's role in by socket only
        wrong = "host"
    elif (found := re.search(r'database "([^"]*)" does not exist', message)) and \
            found[1] != postgres.get("database"):  # fmt: skip
        wrong = "database"
    elif found := re.search(r'password authentication failed for user "([^"]*)"', message):
        if found[1] != postgres.get("user") and re.fullmatch(r"wb_app_[0-9a-f]{10}", found[1]):
            # A role the judge made for an earlier app (Database.make_app_role): that app's engine, kept.
            return (
                f"\nHint: {found[1]!r} is the user the judge gave an earlier app of this run, not this "
                "app's: expected every app to make its own engine, this one shared one with an earlier app. "
                "Call make_engine inside pg_context, not at module level or in a cache of your own."
            )
        wrong = "user" if found[1] != postgres.get("user") else "password"
    elif (found := re.search(r"\.s\.PGSQL\.(\d+)|port (\d+) failed", message)) and \
            int(found[1] or found[2]) != postgres.get("port"):  # fmt: skip
        wrong = "port"
    elif str(postgres.get("host", "")).startswith("/") and "TCP/IP" in message:  # confined: no network
        wrong = "host"
    elif str(postgres.get("host", "")).startswith("/") and "No such file or directory" in message:
        wrong = "port"  # asyncpg's words when the socket folder has no socket for that port
    if not wrong:
        return ""
    return (
        f"\nHint: use config['postgres']['{wrong}'] (this run: {postgres.get(wrong)!r}), not a value of your "
        "own: every run gives other values, as grading does."
    )


@dataclass
class ServedApp:
    """An app running in the learner's process, reachable at `url`."""

    id: int
    port: int
    routes: list[dict[str, Any]] = field(default_factory=list, compare=False)  # method, path, name, handler

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Learner:
    """The learner's package, reached through the harness process. Every method fails in plain words."""

    harness: Harness
    tree: Path
    served: list[ServedApp] = field(default_factory=list)
    patched: bool = False

    def _request(self, op: str, what: str, **fields: Any) -> Any:
        try:
            return self.harness.request(op, **fields)
        except LearnerGone as exc:
            pytest.fail(f"{what}: {exc}", pytrace=False)
        except LearnerRaised as exc:
            if exc.name == "MissingName":
                pytest.fail(f"{exc.message}. {NAME_HINT}", pytrace=False)
            raise

    def serve(self, config: dict[str, Any] | None = None, *, factory: str = "main:init_app",
              attribute: str | None = None, views: dict[str, str] | None = None, reload: tuple[str, ...] = (),
              raising_routes: list[dict[str, str]] | None = None,
              mount: str | None = None, apart: dict[str, str] | None = None,
              setup: tuple[str, ...] | None = None) -> ServedApp:  # fmt: skip
        """Build an app (factory(config), a module's `app`, or bare views) and serve it on a free port.

        With `setup` (('routes:setup_routes',)), a bare app is passed to each of those functions first.
        With `mount` ('/x1'), the app is served as a sub-application under that prefix (its routes and the
        addresses the router builds move there, hard-coded ones do not). With `apart` ({'poll': '/q1'}),
        each named route is first put under a prefix of its own (see tests/moved.py).
        """
        fields: dict[str, Any] = {"reload": list(reload), "raising_routes": raising_routes or []}
        if mount:
            fields["mount"] = mount
        if apart:
            fields["apart"] = apart
        if views is not None or setup is not None:
            fields["views"], fields["setup"] = views or {}, list(setup or ())
            what = "serving the views " + ", ".join((views or {}).values())
            if setup:
                what = "serving a new app passed to " + ", ".join(f"{target}(app)" for target in setup)
                what = what.replace(":", ".")
        elif attribute is not None:
            fields["attribute"], what = attribute, f"serving {attribute.replace(':', '.')}"
        else:
            fields["factory"], fields["args"] = factory, [config] if config is not None else []
            shown = f"{factory.replace(':', '.')}({'' if config is None else 'config'})"
            what = f"building and starting the app from {shown}"
        try:
            reply = self._request("serve", what, **fields)
        except LearnerRaised as exc:
            hint = ignored_setting_hint(exc.message, config)
            pytest.fail(f"{what} raised {raised_text(exc.error)}{hint}", pytrace=False)
        if not isinstance(reply, dict) or not isinstance(reply.get("app"), int) \
                or not isinstance(reply.get("port"), int):  # fmt: skip
            pytest.fail(f"{what}: the learner's process sent an unreadable answer", pytrace=False)
        routes = reply.get("routes") if isinstance(reply.get("routes"), list) else []
        routes = [{key: str(value)[:500] if value is not None else None for key, value in route.items()
                   if key in ("method", "path", "name", "handler")}
                  for route in routes[:200] if isinstance(route, dict)]  # fmt: skip
        app = ServedApp(reply["app"], reply["port"], routes)
        self.served.append(app)
        return app

    def stop(self, app: ServedApp) -> list[str]:
        """Run the app's cleanup (as Ctrl+C would); returns the warnings its objects raised while dying."""
        if app in self.served:
            self.served.remove(app)
        try:
            reply = self._request("stop", "stopping the app", app=app.id)
        except LearnerRaised as exc:
            pytest.fail(f"stopping the app (its cleanup) raised {raised_text(exc.error)}", pytrace=False)
        unraisable = reply.get("unraisable") if isinstance(reply, dict) else None
        return [str(item)[:500] for item in unraisable] if isinstance(unraisable, list) else []

    def blocking_calls(self) -> list[str]:
        """Blocking calls (time.sleep) the learner's code made on a running event loop since the last ask."""
        reply = self._request("blocking", "asking the learner's process for blocking calls")
        return [str(item)[:500] for item in reply] if isinstance(reply, list) else []

    def sql_statements(self) -> list[str]:
        """What conn.execute() was given in calls made with watch_sql since the last ask: 'an expression',
        or 'SQL text: ...' for a str or text()."""
        reply = self._request("sql", "asking the learner's process what its queries were built from")
        return [str(item)[:300] for item in reply] if isinstance(reply, list) else []

    def sql_text_sent(self, target: str, *args: Any, connection: ServedApp) -> list[str]:
        """The SQL text (not expressions) that one call of `target` handed to conn.execute(): what a check
        against queries pasted together from values shows."""
        self.sql_statements()  # forget what earlier calls sent
        self.call_or_fail(target, *args, connection=connection, watch_sql=True)
        prefix = "SQL text: "
        return [sent[len(prefix) :] for sent in self.sql_statements() if sent.startswith(prefix)]

    def call(self, target: str, *args: Any, connection: ServedApp | None = None, times: int | None = None,
             describe_result: bool = False, probe: str | None = None, watch_sql: bool = False,
             **kwargs: Any) -> Any:  # fmt: skip
        """The learner's `target` ('settings:load_config') called with these arguments; its result.

        With `connection`, the first argument is a connection from that app's engine (app[db.DB_KEY]). With
        `times`, that many calls run at once, and the list of their results comes back. With
        `describe_result`, each result comes back as describe() shows a name (type, mro, id). With `probe`
        (SQL, SQLAlchemy 2 only), the judge's query runs on that connection just before and just after the
        call, in its transaction, and {'result': ..., 'probe': [rows before, rows after]} comes back.
        With `watch_sql` (and `connection`), what the code hands to conn.execute() is noted
        (sql_statements()). If the learner's code raises, LearnerRaised carries its type and message.
        """
        fields: dict[str, Any] = {"target": target, "args": list(args), "kwargs": kwargs}
        if probe is not None:
            fields["probe"] = probe
        if describe_result:
            fields["describe"] = True
        if connection is not None:
            fields["connection"] = {"app": connection.id, "key": "db:DB_KEY", "watch": watch_sql}
        if times is not None:
            fields["times"] = times
        return self._request("call", f"calling {target.replace(':', '.')}", **fields)

    def call_or_fail(self, target: str, *args: Any, **kwargs: Any) -> Any:
        """call(), with an exception from the learner's code turned into a failure that shows it."""
        try:
            return self.call(target, *args, **kwargs)
        except LearnerRaised as exc:
            ours = ("connection", "times", "describe_result", "probe", "watch_sql")
            shown = ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()
                                                          if k not in ours])  # fmt: skip
            pytest.fail(f"{target.replace(':', '.')}({shown}) raised {raised_text(exc.error)}", pytrace=False)

    def describe(self, target: str) -> dict[str, Any]:
        """What `target` is in the learner's package: {'exists', 'type', 'mro', 'value', 'attrs', ...}."""
        reply = self._request("describe", f"looking up {target}", target=target)
        return reply if isinstance(reply, dict) else {"exists": False}

    def require(self, target: str) -> dict[str, Any]:
        """describe(), failing when the name does not exist."""
        found = self.describe(target)
        if not found.get("exists"):
            pytest.fail(f"{found.get('message', f'expected {target}, found nothing')}. {NAME_HINT}",
                        pytrace=False)  # fmt: skip
        return found

    def app_item(self, app: ServedApp, key: str) -> dict[str, Any]:
        """describe() of app[key] in a running app, key given as 'db:DB_KEY'; {'exists': False} if absent."""
        try:
            reply = self._request("app_item", f"reading app[{key}]", app=app.id, key=key)
        except LearnerRaised as exc:
            pytest.fail(f"reading app[{key}] raised {raised_text(exc.error)}", pytrace=False)
        return reply if isinstance(reply, dict) else {"exists": False}

    def app_info(self, app: ServedApp) -> dict[str, Any]:
        """A running app's resources ({'name', 'kind', 'canonical', 'info'}) and middlewares (names)."""
        try:
            reply = self._request("app_info", "reading the app's routes", app=app.id)
        except LearnerRaised as exc:
            pytest.fail(f"reading the app's routes raised {raised_text(exc.error)}", pytrace=False)
        if not isinstance(reply, dict) or not isinstance(reply.get("resources"), list) \
                or not isinstance(reply.get("middlewares"), list):  # fmt: skip
            pytest.fail("reading the app's routes: the learner's process sent an unreadable answer",
                        pytrace=False)  # fmt: skip
        return reply

    def patch(self, target: str, value: Any, *, kind: str | None = None) -> None:
        """Set a module attribute of the learner's package for this test only (kind: 'path' or 'paths')."""
        self.patched = True
        try:
            extra = {"as": kind} if kind else {}
            self._request("patch", f"setting {target}", target=target, value=value, **extra)
        except LearnerRaised as exc:
            pytest.fail(f"setting {target} raised {raised_text(exc.error)}", pytrace=False)

    def log_size(self) -> int:
        return self.harness.log_size()

    def log_text(self, start: int = 0) -> str:
        return self.harness.log_text(start)

    def cleanup(self) -> None:
        if unanswered:  # an app hung: its process is killed, not stopped (the next request starts another)
            self.harness.close()
            self.served.clear()
            self.patched = False
        for app in list(self.served):
            if kept_connections(self, app):  # its engine would wait for them to come back, for ever
                self.served.remove(app)
                continue
            with contextlib.suppress(LearnerGone, LearnerRaised, pytest.fail.Exception):
                self.stop(app)
        if self.patched:
            self.patched = False
            with contextlib.suppress(LearnerGone, LearnerRaised):
                self.harness.request("unpatch")


def step_run(config: pytest.Config) -> Any:
    """The plugin's StepRun: the tree under test and its harness."""
    recorder = config.pluginmanager.get_plugin("workbook-recorder")
    run = recorder.run if recorder is not None else None
    if run is None or run.harness is None:
        pytest.fail("these tests belong to a step: run them as `nox -s stepN` or `pytest tests/stepN`")
    return run


@pytest.fixture
def learner(request: pytest.FixtureRequest) -> Iterator[Learner]:
    """The learner's package, in its own process; apps served and patches made here end with the test."""
    run = step_run(request.config)
    assert run.harness is not None
    helper = Learner(run.harness, run.tree)
    yield helper
    helper.cleanup()


@pytest.fixture
def tree(request: pytest.FixtureRequest) -> Path:
    """The step folder under test (steps/stepN, solutions/stepN, or a submission's)."""
    return step_run(request.config).tree


# --- the database ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run (see workbook/pg.py for where it comes from).

    In a step's suite the plugin has already started it, while the learner's process was importing.
    """
    recorder = request.config.pluginmanager.get_plugin("workbook-recorder")
    run = recorder.run if recorder is not None else None
    if run is not None and run.postgres_problem:
        pytest.fail(run.postgres_problem, pytrace=False)
    if run is not None and run.postgres is not None:
        yield run.postgres
        return
    try:
        with throwaway_postgres() as server:
            yield server
    except NoPostgresAvailable as exc:
        pytest.fail(str(exc), pytrace=False)


@functools.cache
def sql_text(name: str) -> str:
    return (SQL_DIR / name).read_text()


# The judge's search_path, fixed when it connects. The app's role owns the database, so it may create a
# schema named after the judge's role (searched first as "$user"), put pg_catalog after public with
# ALTER ROLE/DATABASE ... SET search_path, and define look-alikes there (a view pg_stat_activity, a count
# aggregate, an `=` operator). Options sent at connection time outrank those stored defaults, and with
# pg_catalog listed first, the real catalog's names and operators win. Names in the judge's own SQL are
# still qualified (pg_catalog.count, public.question): a function with a closer argument type in public
# could otherwise beat pg_catalog's. Anything the judge creates names its schema, since the first schema
# of this path is pg_catalog.
# lock_timeout: the judge's own statements (a reset's TRUNCATE, a check's ALTER TABLE) wait at most
# LOCK_WAIT seconds for a lock the app holds, so a connection the app never gave back fails a check with its
# cause instead of stopping the suite; statement_timeout bounds any other wait of the judge's on PostgreSQL.
LOCK_WAIT = 5
JUDGE_OPTIONS = f"-c search_path=pg_catalog,public -c lock_timeout={LOCK_WAIT}s -c statement_timeout=30s"
SETTLE = 1.0  # seconds a connection found in a transaction after a check gets to end it

# The app's connections that sit inside a transaction with nothing to do: a connection taken from its pool
# and never given back (a correct app is never idle in a transaction once a request has been answered).
LEFT_IN_TRANSACTION = """
    SELECT pid, round(extract(epoch FROM now() - state_change))::int, left(query, 200)
    FROM pg_catalog.pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_catalog.pg_backend_pid()
      AND state IN ('idle in transaction', 'idle in transaction (aborted)')
      AND state_change <= now() - make_interval(secs => %s)
    ORDER BY pid
"""
NEVER_RETURNED_HINT = (
    "Hint: borrow every connection in an `async with` block (`async with engine.connect() as conn:`, or "
    "`engine.acquire()` with aiopg), so that it goes back to the pool, its transaction ended, however the "
    "block ends."
)


def judge_connect(dsn: str) -> Any:
    """A connection of the judge's to a learner's database, its search_path pinned (see above)."""
    return psycopg2.connect(dsn, connect_timeout=10, options=JUDGE_OPTIONS)


@dataclass
class Database:
    """A fresh database on the throwaway server, with the keywords the polls config expects."""

    server: PostgresServer
    name: str
    # One connection of the judge's for the module's reads and resets, in autocommit: a new connection per
    # statement cost a suite half a second. It is excluded from the app's connection counts by
    # `pid <> pg_backend_pid()`, since the counts are asked through it.
    _connection: Any = field(default=None, repr=False)
    # The role the learner's app logs in as (`params`), when the server lets the judge make one.
    app_role: str = ""
    app_password: str = field(default="", repr=False)

    @property
    def params(self) -> dict[str, Any]:
        """What the learner's config gets: the database's own role, never the judge's superuser."""
        params = self.server.params(self.name)
        if self.app_role:
            params.update(user=self.app_role, password=self.app_password)
        return params

    def make_app_role(self) -> None:
        """Hand the database to a login role of its own, if the judge's user may create roles.

        The learner's app then owns its tables and nothing else: it is no superuser, reaches no other
        database, has grading's connection limit and statement timeout, and on a local cluster logs in
        through the socket folder only, as when graded. (In grading the judge itself is such a role
        already, and the app shares it.)
        """
        (may,) = self.execute(
            "SELECT rolsuper OR rolcreaterole FROM pg_catalog.pg_roles WHERE rolname = current_user"
        )[0]
        if not may:
            return
        role, password = f"wb_app_{secrets.token_hex(5)}", secrets.token_urlsafe(18)
        # The settings grading gives; TCP closed to it where its host is a socket folder, as when graded.
        learner_role(self.execute, role, password, socket_only=self.server.host_is_socket)
        names = {"role": psycopg2.sql.Identifier(role), "db": psycopg2.sql.Identifier(self.name)}
        for statement in (
            "ALTER DATABASE {db} OWNER TO {role}",
            "REVOKE CONNECT, TEMPORARY ON DATABASE {db} FROM PUBLIC",
        ):
            self.execute(psycopg2.sql.SQL(statement).format(**names))
        self.app_role, self.app_password = role, password

    def closed_port(self) -> int:
        """A port where nothing answers for this database's host, for the "unreachable database" cases.

        Free on the loopback now is not enough: with a socket folder as host, the port only names the
        socket file (.s.PGSQL.<port>), and in a step's private network the live server's port is free on
        the loopback too, so a free port that happens to be the server's reaches the live database.
        """
        host = str(self.params["host"])
        for _ in range(100):
            port = free_port()
            socket_file = Path(host, f".s.PGSQL.{port}") if host.startswith("/") else None
            if port != self.server.port and not (socket_file and socket_file.exists()):
                return port
        raise RuntimeError("no closed port found in 100 tries")

    def empty_schema(self) -> None:
        """Drop everything in the public schema: a new, empty one, owned by the app's role if it has one."""
        owner = psycopg2.sql.Identifier(self.app_role or self.server.user)
        self.execute(
            psycopg2.sql.SQL("DROP SCHEMA public CASCADE; CREATE SCHEMA public AUTHORIZATION {}").format(
                owner
            )
        )

    def drop_app_role(self) -> None:
        if self.app_role:
            self.server.execute(
                psycopg2.sql.SQL("DROP ROLE IF EXISTS {}").format(psycopg2.sql.Identifier(self.app_role))
            )

    def _cursor(self) -> Any:
        if self._connection is None or self._connection.closed:
            self._connection = judge_connect(self.server.dsn(self.name))
            self._connection.autocommit = True
        return self._connection.cursor()

    def execute(self, statement: Any) -> list[tuple]:
        """One statement, committed at once; its rows, if it returns any."""
        with self._cursor() as cur:
            try:
                cur.execute(statement)
            except psycopg2.errors.LockNotAvailable:
                self.fail_on_connections_left()
                raise
            return cur.fetchall() if cur.description else []

    def run_sql_file(self, *names: str) -> None:
        """Run tests/sql/*.sql files, in this order, in a single transaction."""
        with self._cursor() as cur:
            # As the app's role, so that the tables are its own.
            role = f"SET LOCAL ROLE {self.app_role};\n" if self.app_role else ""
            try:
                cur.execute("BEGIN;\n" + role + "\n".join(sql_text(name) for name in names) + "\nCOMMIT;")
            except psycopg2.Error as exc:
                cur.execute("ROLLBACK")
                if isinstance(exc, psycopg2.errors.LockNotAvailable):
                    self.fail_on_connections_left(f"resetting the polls tables waited {LOCK_WAIT} s for a "
                                                  "lock: ")  # fmt: skip
                raise

    def fail_on_connections_left(self, waited: str = "", settle: bool = False) -> None:
        """Fail the check if any of the app's connections sits idle inside a transaction (taken from the
        pool and never given back), after ending those connections so that their locks go and the next
        checks can run. Returns if there is none."""
        left = self._rows(LEFT_IN_TRANSACTION, (0,))
        if left and settle:  # a request still on its way out gets a second to end its transaction
            time.sleep(SETTLE)
            left = self._rows(LEFT_IN_TRANSACTION, (SETTLE,))
        if not left:
            return
        for pid, _, _ in left:
            self._rows("SELECT pg_catalog.pg_terminate_backend(%s)", (pid,))
        pid, seconds, query = left[0]
        pytest.fail(
            f"{waited}{len(left)} connection(s) of your app stayed inside a transaction after the request "
            f"was answered, idle for {seconds} s (its last statement: {' '.join(query.split())[:160]}): a "
            "connection taken from the pool and never returned keeps its transaction open, and its locks "
            f"stop every other writer of those tables. {NEVER_RETURNED_HINT}",
            pytrace=False,
        )

    def _rows(self, statement: str, args: tuple[Any, ...]) -> list[tuple]:
        with self._cursor() as cur:
            cur.execute(statement, args)
            return cur.fetchall() if cur.description else []

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


@contextlib.contextmanager
def app_database(server: PostgresServer, name: str | None = None) -> Iterator[Database]:
    """A fresh database and the login role the learner's app gets for it; both dropped afterwards."""
    database = Database(server, "")
    try:
        with server.database(name) as database.name:
            database.make_app_role()
            try:
                yield database
            finally:
                database.close()
    finally:
        database.drop_app_role()


@pytest.fixture(scope="module")
def pg_database(pg_server: PostgresServer) -> Iterator[Database]:
    """An empty database per test module, dropped afterwards."""
    with app_database(pg_server) as database:
        yield database


@pytest.fixture
def polls_db(pg_database: Database) -> Iterator[Database]:
    """The module's database with the polls tables and the tests' sample polls, reset for every test.

    TRUNCATE ... RESTART IDENTITY and a fresh insert take a few milliseconds, so every test starts from the
    same rows with the same ids. A check after which the app still holds a connection inside a transaction
    fails (the connection was never given back to the pool), and that connection is ended.
    """
    pg_database.run_sql_file("schema.sql", "seed.sql")
    yield pg_database
    pg_database.fail_on_connections_left(settle=True)


def valid_config(database: Database | None = None, **overrides: Any) -> dict[str, Any]:
    """A valid configuration for the app, pointing at `database` when one is given."""
    postgres = {
        "database": "aiohttpdemo_polls",
        "user": "aiohttpdemo_user",
        "password": "aiohttpdemo_pass",
        "host": "localhost",
        "port": 5432,
        "minsize": 1,
        "maxsize": 5,
    }
    if database is not None:
        postgres.update(database.params)
    config: dict[str, Any] = {"postgres": postgres, "host": "127.0.0.1", "port": 8080}
    config.update(overrides)
    return config


@pytest.fixture
def make_config() -> Any:
    """valid_config as a fixture: make_config(database, port=...)."""
    return valid_config


# --- the learner's commands -----------------------------------------------------------------------------


def why_it_ended(output: str) -> str:
    """The failing line and error of a learner process's traceback, else the last lines it printed."""
    shown = without_own_frames(output).strip().splitlines()[-6:]
    return last_exception(output) or "\n".join(shown) or "(it printed nothing)"


class PollsProcess:
    """`python -m aiohttpdemo_polls ...` run from the tree under test, as a learner would start it."""

    def __init__(self, tree: Path) -> None:
        self.tree = tree
        self.commands: list[Command] = []

    def run(self, *args: str, timeout: float = 30) -> Finished:
        """`python -m ARGS` to completion (a bad config, init_db): its status and output."""
        command = Command(self.tree, "-m", *args)
        self.commands.append(command)
        return command.wait(timeout)

    def start(self, *args: str) -> Command:
        """`python -m ARGS` in the background (a server); stopped when the test ends."""
        command = Command(self.tree, "-m", *args)
        self.commands.append(command)
        return command

    def start_python(self, code: str) -> Command:
        """`python -c CODE`: a call into the learner's package that must run as a process of its own."""
        command = Command(self.tree, "-c", code)
        self.commands.append(command)
        return command

    def wait_for_port(self, command: Command, port: int, timeout: float = 20,
                      host: str = "127.0.0.1") -> None:  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if command.returncode is not None:
                pytest.fail(
                    f"expected the server to keep running, it exited ({command.returncode}): "
                    f"{why_it_ended(command.output())}",
                    pytrace=False,
                )
            with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
                return
            time.sleep(0.05)
        pytest.fail(f"expected the server to listen on {host}:{port} within {timeout:.0f}s, it did not",
                    pytrace=False)  # fmt: skip

    def stop_all(self) -> None:
        grace = 0 if unanswered else 5  # a server that hung on a request would hang on its way out too
        for command in self.commands:
            command.stop(grace=grace)
            command.close()


@pytest.fixture
def polls_process(tree: Path) -> Iterator[PollsProcess]:
    runner = PollsProcess(tree)
    yield runner
    runner.stop_all()


# --- the polls app on the seeded database (steps 5 to 9) -------------------------------------------------


@pytest.fixture(scope="module")
def module_learner(request: pytest.FixtureRequest) -> Iterator[Learner]:
    """Like `learner`, for apps that serve a whole test module."""
    run = step_run(request.config)
    helper = Learner(run.harness, run.tree)
    yield helper
    helper.cleanup()


@pytest.fixture(scope="module")
def module_apps() -> dict[int | None, ServedApp]:
    """The module's app, by the pid of the learner process that serves it."""
    return {}


def served_once(learner: Learner, cache: dict[int | None, Any], serve: Any) -> Any:
    """A module's app kept in `cache` (a module-scoped dict), served again by `serve()` when the learner's
    process that served it is gone (the learner's code killed it, or the judge ended it after a request
    got no answer): the module's next checks then run on a fresh one instead of failing to connect."""
    pid = learner.harness.pid
    if pid is None or pid not in cache or learner.harness.exit_status() is not None:
        cache.clear()
        served = serve()
        cache[learner.harness.pid] = served
        return served
    return cache[pid]


@pytest.fixture
def polls_app(
    module_learner: Learner, module_apps: dict, pg_database: Database, polls_db: Database
) -> ServedApp:
    """The learner's init_app(config) serving the module's database, reseeded for every test.

    One app serves the whole module: the data is reset per test anyway, and a fresh app per check would
    cost a connection pool's start and stop each time. Checks of the app's own life (its engine opened
    and closed) serve apps of their own. If the learner's process died, a new app is served.
    """
    pid = module_learner.harness.pid
    if pid in module_apps and module_learner.harness.exit_status() is None and kept_connections(
        module_learner, module_apps[pid]
    ):  # a view kept its connections: a fresh pool, so one mistake fails its own check, not every later one
        module_learner.served.remove(module_apps.pop(pid))  # stopping it would wait for them forever
    if pid not in module_apps or module_learner.harness.exit_status() is not None:
        module_apps.clear()
        module_learner.served.clear()
        module_apps[module_learner.harness.pid] = module_learner.serve(valid_config(pg_database))
    return module_apps[module_learner.harness.pid]


def kept_connections(learner: Learner, app: ServedApp) -> bool:
    """Whether connections of the app's engine are still lent out between two checks (none should be)."""
    from tests.pooled import connections_in_use  # a test library that imports this module

    try:
        return bool(connections_in_use(learner, app))
    except (LearnerGone, LearnerRaised, pytest.fail.Exception):
        return False


@pytest.fixture
async def polls_client(polls_app: ServedApp) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for polls_app: `await polls_client.get("/poll/1")`."""
    async with http_session(polls_app.url) as session:
        yield session


def page_text(body: str) -> str:
    """What a reader sees: tags removed, entities decoded, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def around(body: str, needle: str, width: int = 120) -> str:
    """The part of the page around `needle` (where a failure happened), on one line."""
    at = body.find(needle)
    start, end = (0, 2 * width) if at < 0 else (max(0, at - width), at + len(needle) + width)
    excerpt = " ".join(body[start:end].split())
    return ("..." if start else "") + excerpt + ("..." if end < len(body) else "")


async def status_with_a_broken_database(client: aiohttp.ClientSession, database: Database, path: str) -> int:
    """The status of GET `path` while a column the views read is renamed: the database is broken, the poll
    is not missing, so the answer must not be a 404 that blames the visitor."""
    database.execute("ALTER TABLE public.choice RENAME COLUMN choice_text TO renamed_by_the_judge")
    try:
        async with client.get(path) as response:
            return response.status
    finally:
        database.execute("ALTER TABLE public.choice RENAME COLUMN renamed_by_the_judge TO choice_text")


def recorded_run_app(polls_process: PollsProcess, code: str, host: str, port: int) -> dict[str, Any]:
    """Run `code` (which replaces web.run_app with a recorder, calls main(host, port) and prints one line
    `RUN_APP {json}`) in the learner's tree; that JSON, read with a size cap, or a failure saying why not."""
    finished = polls_process.start_python(code).wait(30)
    lines = [line for line in finished.output.splitlines() if line.startswith("RUN_APP ")]
    if finished.timed_out:
        pytest.fail(f"calling main(host={host!r}, port={port}) with a web.run_app that returns at once: "
                    f"{finished.ended}. Hint: serve with web.run_app(...), not a loop or a runner of your "
                    "own.", pytrace=False)  # fmt: skip
    if finished.status != 0 or not lines:
        pytest.fail(f"calling main(host={host!r}, port={port}) failed ({finished.ended}): "
                    f"{why_it_ended(finished.output)}", pytrace=False)  # fmt: skip
    with contextlib.suppress(ValueError, RecursionError):
        seen = json.loads(lines[-1][len("RUN_APP ") :][:10000])
        if isinstance(seen, dict):
            return seen
    pytest.fail(f"calling main(host={host!r}, port={port}) printed an unreadable record", pytrace=False)


# Runs in the learner's process: web.run_app is replaced, before main.py is imported, by one that records
# each call and raises what a taken port raises; `setup` then `call` run main. What main did with the error
# is printed as one line `TAKEN {json}`.
PORT_TAKEN = """
import errno, json, sys
from aiohttp import web
calls = []
def taken(app, *args, **kwargs):
    calls.append({{"host": kwargs.get("host"), "port": kwargs.get("port")}})
    raise OSError(errno.EADDRINUSE, "address already in use (the judge's stand-in for a taken port)")
web.run_app = taken
{setup}
try:
    {call}
except BaseException as exc:
    outcome = type(exc).__name__ + (f": {{exc}}" if str(exc) else "")
else:
    outcome = "returned"
print("TAKEN " + json.dumps({{"calls": calls[:5], "outcome": outcome[:300]}}))
"""


def main_with_port_taken(polls_process: PollsProcess, setup: str, call: str) -> tuple[dict[str, Any], str]:
    """`call` (main(...)) run where web.run_app raises OSError(EADDRINUSE): its record (`calls`, `outcome`)
    and the process's output, or a failure saying why there is none. A cheap stand-in for a taken port:
    no server, no second process holding the port. Its 30 s are those of recorded_run_app: a process that
    must import aiohttp first, on a loaded machine too."""
    finished = polls_process.start_python(PORT_TAKEN.format(setup=setup, call=call)).wait(30)
    lines = [line for line in finished.output.splitlines() if line.startswith("TAKEN ")]
    with contextlib.suppress(ValueError, RecursionError):
        seen = json.loads(lines[-1][len("TAKEN ") :][:10000]) if lines else None
        if isinstance(seen, dict):
            return seen, finished.output
    pytest.fail(f"calling {call} with a web.run_app that raises OSError (address already in use): "
                f"{finished.ended}: {why_it_ended(finished.output)}", pytrace=False)  # fmt: skip


def assert_a_taken_port_ends_main(polls_process: PollsProcess, call: str, port: int) -> None:
    """The check of steps 1 and 2: `call` (main(host, port)) with its port taken makes one call of
    web.run_app, on that port, and the OSError ends main()."""
    seen, _ = main_with_port_taken(polls_process, "from aiohttpdemo_polls.main import main", call)
    sent = f"{call} while its port is taken (web.run_app raises OSError: address already in use)"
    ports = [c.get("port") for c in seen.get("calls", [])]
    assert ports == [port], (
        f"{sent}: expected one call of web.run_app, on port {port}, and the error to end the program; "
        f"web.run_app was called on the ports {ports}. Hint: do not catch the OSError to try another "
        "port: the user asked for this one, and a server quietly elsewhere is one nobody finds."
    )
    assert str(seen.get("outcome", "")).startswith("OSError"), (
        f"{sent}: expected the OSError to end main() (its traceback says the port is taken), main() ended "
        f"with: {seen.get('outcome')}. Hint: no try/except around web.run_app."
    )


# The requests of the running check that got no answer in time: the learner's process that hangs is
# killed when the check ends (its cleanup would wait on the same hung code), and the next check starts a
# fresh one.
unanswered: list[str] = []


async def answer_deadline(request: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
    """A client middleware: the request's answer within ANSWER_DEADLINE, or the check fails saying which
    request waited."""
    try:
        return await asyncio.wait_for(handler(request), ANSWER_DEADLINE)
    except asyncio.TimeoutError:
        sent = f"{request.method} {request.url.path_qs}"
        unanswered.append(sent)
    pytest.fail(
        f"{sent} got no answer within {ANSWER_DEADLINE:g} s (the judge then ended your app's process). "
        "Hint: a view that waits for what never comes (a lock, a connection the pool cannot give, an "
        "endless loop, a blocking call such as time.sleep) never answers.",
        pytrace=False,
    )


def http_session(base_url: str | None = None) -> aiohttp.ClientSession:
    """The judge's HTTP client: a request of a learner's app that hangs fails the check after
    ANSWER_DEADLINE seconds, naming the request, and a whole exchange is bounded by HTTP_TIMEOUT."""
    return aiohttp.ClientSession(
        base_url=base_url, timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT), middlewares=(answer_deadline,)
    )


@pytest.fixture(autouse=True)
def end_a_hung_learner_process(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a check in which a request got no answer, kill the learner's process (the harness, with the
    apps it served): stopping a hung app cleanly would wait on the hung code again."""
    unanswered.clear()
    yield
    if unanswered:
        unanswered.clear()
        recorder = request.config.pluginmanager.get_plugin("workbook-recorder")
        if recorder is not None and recorder.run is not None and recorder.run.harness is not None:
            recorder.run.harness.close()
