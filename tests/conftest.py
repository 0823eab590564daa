"""Shared fixtures: the tree under test (see workbook/pytest_plugin.py) and the throwaway database."""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg2
import pytest

from workbook import catalogue
from workbook.pg import NoPostgresAvailable, PostgresServer, throwaway_postgres
from workbook.serve import stop_process

pytest_plugins = ["workbook.pytest_plugin"]

SQL_DIR = Path(__file__).with_name("sql")


class Polls:
    """Imports the modules of the `aiohttpdemo_polls` package under test, failing in plain words."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.tree = run.tree

    def module(self, name: str = "main", *, fresh: bool = False) -> ModuleType:
        full_name = f"{catalogue.PACKAGE}.{name}"
        try:
            if fresh and full_name in sys.modules:
                return importlib.reload(sys.modules[full_name])
            return importlib.import_module(full_name)
        except ModuleNotFoundError as exc:
            if exc.name in (full_name, catalogue.PACKAGE):
                pytest.fail(
                    f"expected a module {full_name} ({self.tree / catalogue.PACKAGE / (name + '.py')}), "
                    "found none. Hint: create the file; the lesson says what goes in it.",
                    pytrace=False,
                )
            raise
        except Exception as exc:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            pytest.fail(
                f"importing {full_name} raised {type(exc).__name__}: {exc}\n"
                f"  at {frame.filename}, line {frame.lineno}: {frame.line}",
                pytrace=False,
            )

    def attribute(self, module: str, name: str) -> Any:
        """module.name, or a failure saying which name is missing where."""
        loaded = self.module(module)
        if not hasattr(loaded, name):
            pytest.fail(
                f"expected `{name}` in {catalogue.PACKAGE}/{module}.py, found no such name. "
                "Hint: check the spelling; the tests use the tutorial's names.",
                pytrace=False,
            )
        return getattr(loaded, name)


@pytest.fixture
def polls(request: pytest.FixtureRequest) -> Polls:
    """The package under test: polls.module("views"), polls.attribute("main", "init_app")."""
    recorder = request.config.pluginmanager.get_plugin("workbook-recorder")
    if recorder is None:
        pytest.fail("these tests belong to a step: run them as `nox -s stepN` or `pytest tests/stepN`")
    return Polls(recorder.run)


# --- the database ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run (see workbook/pg.py for where it comes from)."""
    try:
        with throwaway_postgres() as server:
            yield server
    except NoPostgresAvailable as exc:
        pytest.fail(str(exc), pytrace=False)


@dataclass
class Database:
    """A fresh database on the throwaway server, with the keywords the polls config expects."""

    server: PostgresServer
    name: str

    @property
    def params(self) -> dict[str, Any]:
        return self.server.params(self.name)

    def execute(self, statement: str) -> list[tuple]:
        return self.server.execute(statement, self.name)

    def run_sql_file(self, name: str) -> None:
        """Run one of tests/sql/*.sql in a single transaction."""
        conn = psycopg2.connect(self.server.dsn(self.name))
        try:
            with conn, conn.cursor() as cur:
                cur.execute((SQL_DIR / name).read_text())
        finally:
            conn.close()


@pytest.fixture(scope="module")
def pg_database(pg_server: PostgresServer) -> Iterator[Database]:
    """An empty database per test module, dropped afterwards."""
    with pg_server.database() as name:
        yield Database(pg_server, name)


@pytest.fixture
def polls_db(pg_database: Database) -> Database:
    """The module's database with the polls tables and the tests' sample polls, reset for every test.

    TRUNCATE ... RESTART IDENTITY and a fresh insert take a few milliseconds, so every test starts from the
    same rows with the same ids.
    """
    pg_database.run_sql_file("schema.sql")
    pg_database.run_sql_file("seed.sql")
    return pg_database


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


# --- the app as a real process ---------------------------------------------------------------------------


class PollsProcess:
    """`python -m aiohttpdemo_polls ...` run from the tree under test, as a learner would start it."""

    def __init__(self, tree: Path) -> None:
        self.tree = tree
        self.processes: list[subprocess.Popen[str]] = []

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run to completion (for commands that should exit, such as a bad config)."""
        return subprocess.run(
            [sys.executable, "-m", *args], cwd=self.tree, env=self._env(), capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip

    def start(self, *args: str) -> subprocess.Popen[str]:
        """Start a server in the background; it is stopped when the test ends."""
        process = subprocess.Popen(
            [sys.executable, "-m", *args], cwd=self.tree, env=self._env(), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.processes.append(process)
        return process

    def wait_for_port(self, process: subprocess.Popen[str], port: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                output = process.stdout.read() if process.stdout else ""
                last_lines = "\n".join(output.strip().splitlines()[-3:])
                pytest.fail(
                    f"expected the server to keep running, it exited ({process.returncode}):\n{last_lines}",
                    pytrace=False,
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
            time.sleep(0.1)
        pytest.fail(f"expected the server to listen on port {port} within {timeout:.0f}s, it did not",
                    pytrace=False)  # fmt: skip

    def _env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.tree), "PYTHONUNBUFFERED": "1"}

    def stop_all(self) -> None:
        for process in self.processes:
            stop_process(process, grace=10)
            if process.stdout:
                process.stdout.close()


@pytest.fixture
def polls_process(polls: Polls) -> Iterator[PollsProcess]:
    runner = PollsProcess(polls.tree)
    yield runner
    runner.stop_all()


# --- the polls app on the seeded database (steps 5 to 9) -------------------------------------------------


@pytest.fixture
def polls_app(polls: Polls, polls_db: Database) -> Any:
    """A new app from the tree's init_app(config), its config pointing at the freshly seeded database."""
    return polls.attribute("main", "init_app")(valid_config(polls_db))


@pytest.fixture
async def polls_client(polls_app: Any, aiohttp_client: Any) -> Any:
    """A pytest-aiohttp client for polls_app: the app has started (engine open) when the test gets it."""
    return await aiohttp_client(polls_app)
