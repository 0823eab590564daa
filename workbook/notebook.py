"""What the companion notebooks use to drive a step's app for real, in a few readable lines:

    bench = Workbench(step=5, tree=TREE)        # TREE: "steps" (yours) or "solutions"
    config = bench.config()                     # a throwaway PostgreSQL with the sample polls
    client = await bench.client(bench.module("main").init_app(config))
    bench.show(await client.get("/"))
    bench.table("SELECT * FROM question")
    await bench.close()

A step whose app runs on packages of its own (step 10: SQLAlchemy 2 and asyncpg, see
workbook/environments.py) cannot be imported by the notebook's kernel. Its app runs in a process of its
own, on the step's interpreter, and a cell that begins with `%%step_python` runs there too:

    client = await bench.serve(config)          # `python -m aiohttpdemo_polls --config FILE`
    bench.run_python("import sqlalchemy; print(sqlalchemy.__version__)")  # as %%step_python does

The server, the database, the HTTP test server and an app's own process are all stopped by `close()`,
and by the kernel's exit if a cell failed before it (an atexit hook), so no notebook leaves PostgreSQL
behind.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient, TestServer

from . import catalogue, environments
from .pg import PostgresServer, describe, free_port, throwaway_postgres
from .serve import PreparedApp, stop_process

SAMPLE_SQL = catalogue.ROOT / "tests" / "sql"
STARTUP_TIMEOUT = 30  # seconds for an app in its own process to listen
SCRIPT_TIMEOUT = 120  # seconds for one %%step_python cell


class StepPythonFailed(RuntimeError):
    """Code run on the step's own interpreter ended with an error; its output was printed above."""


class AppProcess:
    """A client for an app running in a process of its own: `get`, `post` and `request` as on aiohttp's
    TestClient (paths only: "/poll/1"); `close()` stops the client, then the app (SIGTERM, so its cleanup
    runs: the engine is disposed of)."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.session = ClientSession(base_url=f"http://127.0.0.1:{port}")

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.session.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.session.post(path, **kwargs)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.session.request(method, path, **kwargs)

    def output(self) -> str:
        """What the app printed (its log) so far."""
        return self.log.read_text(errors="replace")

    async def close(self) -> None:
        await self.session.close()
        await asyncio.to_thread(stop_process, self.process)


async def _listening(port: int) -> bool:
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


class Workbench:
    """One step's app, its database and an HTTP client, for a notebook."""

    def __init__(self, step: int, tree: str = "steps") -> None:
        if tree not in ("steps", "solutions"):
            raise ValueError(f"tree must be 'steps' or 'solutions', not {tree!r}")
        self.step = catalogue.step(step)
        self.tree = self.step.tree(catalogue.ROOT, tree)
        self._stack = contextlib.ExitStack()
        self._clients: list[TestClient | AppProcess] = []
        self._config: dict[str, Any] | None = None
        self.server: PostgresServer | None = None
        self.database: str | None = None
        # The interpreter of the step's app; another one than the kernel's if the step has its own packages.
        self.python = environments.learner_python(self.step)
        # Each step has its own aiohttpdemo_polls: forget any other step's modules before importing.
        for name in [
            n for n in sys.modules if n == catalogue.PACKAGE or n.startswith(catalogue.PACKAGE + ".")
        ]:
            del sys.modules[name]
        sys.path[:] = [
            p for p in sys.path if not p.endswith(tuple(f"step{s.number}" for s in catalogue.steps()))
        ]
        sys.path.insert(0, str(self.tree))
        atexit.register(self._stack.close)
        print(f"Step {self.step.number} ({self.step.title}) from {self.tree}")
        if self.own_environment:
            self._register_cell_magic()
            print(f"Its app runs on its own Python: {self.python}")
            print("Cells that begin with %%step_python run there, in the step's folder.")

    @property
    def own_environment(self) -> bool:
        """Whether the step's app runs on another interpreter than this kernel (catalogue: `environment`)."""
        return bool(self.step.environment)

    def module(self, name: str = "main") -> ModuleType:
        """Import aiohttpdemo_polls.<name> from the chosen tree."""
        if self.own_environment:
            raise RuntimeError(
                f"Step {self.step.number}'s app runs on packages this kernel does not have: start it with "
                "`await bench.serve(config)` and run its code in a %%step_python cell"
            )
        return importlib.import_module(f"{catalogue.PACKAGE}.{name}")

    def _register_cell_magic(self) -> None:
        with contextlib.suppress(ImportError):
            from IPython import get_ipython

            shell = get_ipython()
            if shell is not None:
                shell.register_magic_function(
                    lambda _line, cell: self.run_python(cell), magic_kind="cell", magic_name="step_python"
                )

    def config(self, load_sample_data: bool = True) -> dict[str, Any]:
        """A valid app configuration pointing at a fresh database on a throwaway server."""
        if self.server is None:
            self.server = self._stack.enter_context(throwaway_postgres())
            self.database = self.server.create_database()
            print(f"Started {describe(self.server)}, database {self.database}")
            if load_sample_data and self.step.serve == "database":
                for script in ("schema.sql", "seed.sql"):
                    self.server.execute((SAMPLE_SQL / script).read_text(), self.database)
        self._config = {
            "postgres": {**self.server.params(self.database), "minsize": 1, "maxsize": 5},
            "host": "127.0.0.1",
            "port": 8080,
        }
        return self._config

    def _prepared(self, config: dict[str, Any]) -> PreparedApp:
        """The step's tree and interpreter, with `config` written to a file, as `nox -s serve` runs it."""
        folder = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="workbook-notebook-")))
        path = folder / "polls.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return PreparedApp(self.tree, self.python, path)

    def _start(self, config: dict[str, Any]) -> AppProcess:
        prepared = self._prepared(config)
        log = prepared.config.with_name("app.log")  # type: ignore[union-attr]
        with log.open("wb") as output:
            process = subprocess.Popen(
                prepared.command(),
                cwd=self.tree,
                env={**prepared.env, "PYTHONWARNINGS": "error"},
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self._stack.callback(stop_process, process)  # before the database goes, at the latest
        return AppProcess(process, config["port"], log)

    async def serve(self, config: dict[str, Any]) -> AppProcess:
        """Run the app as `python -m aiohttpdemo_polls --config FILE` on the step's interpreter, on a free
        local port, warnings turned into errors; return a client once it listens."""
        client = self._start({**config, "host": "127.0.0.1", "port": free_port()})
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not await _listening(client.port):
            if client.process.poll() is not None or time.monotonic() > deadline:
                await client.close()
                raise RuntimeError(f"the app did not start; it printed:\n{client.output()}")
            await asyncio.sleep(0.1)
        self._clients.append(client)
        print(f"The app runs in process {client.process.pid}, at http://127.0.0.1:{client.port}/")
        return client

    def run_python(self, source: str) -> None:
        """Run `source` on the step's interpreter in its folder, as `python -c SOURCE --config FILE` with the
        config of `config()`, warnings turned into errors; print what it prints. Cells that begin with
        %%step_python come here."""
        if self._config is None:
            raise RuntimeError("call bench.config() first: the code reads its configuration")
        prepared = self._prepared(self._config)
        command = [self.python, "-c", source, "--config", str(prepared.config)]
        env = {**prepared.env, "PYTHONWARNINGS": "error"}
        done = subprocess.run(
            command, cwd=self.tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=SCRIPT_TIMEOUT, check=False,
        )  # fmt: skip
        print(done.stdout, end="")
        if done.returncode != 0:
            last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "no output"
            raise StepPythonFailed(f"{last} (exit status {done.returncode})") from None

    async def client(self, app: web.Application) -> TestClient:
        """Serve `app` on a free local port and return a client that talks to it over real HTTP."""
        client = TestClient(TestServer(app))
        await client.start_server()
        self._clients.append(client)
        return client

    @staticmethod
    def show(response: Any, body: str | None = None, limit: int = 600) -> None:
        """Print one HTTP exchange the way a person reads it: request line, status, headers, body."""
        request = response.request_info
        print(f"{request.method} {request.url.path_qs}")
        print(f"-> {response.status} {response.reason}")
        for header in ("Content-Type", "Location", "Content-Length"):
            if header in response.headers:
                print(f"   {header}: {response.headers[header]}")
        if body is not None:
            print("\n" + (body if len(body) <= limit else body[:limit] + f"\n... ({len(body)} characters)"))

    def rows(self, query: str) -> list[dict[str, Any]]:
        """Run a query against the notebook's database; rows as dicts."""
        if self.server is None or self.database is None:
            raise RuntimeError("call bench.config() first: it starts the database")
        import psycopg2.extras

        conn = psycopg2.connect(self.server.dsn(self.database))
        try:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                cur.execute(query)
                return [dict(row) for row in cur.fetchall()]
        finally:
            conn.close()

    def execute(self, statement: str) -> list[tuple]:
        """Run one statement and commit it (rows come back when it returns any)."""
        if self.server is None or self.database is None:
            raise RuntimeError("call bench.config() first: it starts the database")
        return self.server.execute(statement, self.database)

    def plot_votes(self, question_id: int, title: str) -> None:
        """A bar chart of one poll's votes, straight from PostgreSQL."""
        import matplotlib.pyplot as plt

        rows = self.rows(
            f"SELECT choice_text, votes FROM choice WHERE question_id = {int(question_id)} ORDER BY id"
        )
        figure, axes = plt.subplots(figsize=(6, 0.5 + 0.45 * len(rows)))
        axes.barh([row["choice_text"] for row in rows], [row["votes"] for row in rows], color="#2a7ab0")
        axes.invert_yaxis()  # first choice on top, as on the page
        axes.set_xlabel("votes")
        axes.set_title(title)
        figure.tight_layout()
        plt.show()

    def table(self, query: str) -> None:
        """Print a query's result as an aligned text table."""
        rows = self.rows(query)
        if not rows:
            print("(no rows)")
            return
        columns = list(rows[0])
        cells = [["" if r[c] is None else str(r[c]) for c in columns] for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
        print("  ".join("-" * w for w in widths))
        for row in cells:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))

    async def close(self) -> None:
        """Stop the HTTP servers and the apps' processes (the apps run their cleanup), then the database."""
        for client in self._clients:
            await client.close()
        self._clients.clear()
        self._stack.close()
        self.server = self.database = None
        print("Closed: app stopped, throwaway PostgreSQL removed.")
