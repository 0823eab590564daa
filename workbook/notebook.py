"""What the companion notebooks use to drive a step's app for real, in a few readable lines:

    bench = Workbench(step=5, tree=TREE)        # TREE: "steps" (yours) or "solutions"
    config = bench.config()                     # a throwaway PostgreSQL with the sample polls
    client = await bench.client(bench.module("main").init_app(config))
    bench.show(await client.get("/"))
    bench.table("SELECT * FROM question")
    await bench.close()

The server, the database and the HTTP test server are all stopped by `close()`, and by the kernel's
exit if a cell failed before it (an atexit hook), so no notebook leaves PostgreSQL behind.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import sys
from types import ModuleType
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from . import catalogue
from .pg import PostgresServer, describe, throwaway_postgres

SAMPLE_SQL = catalogue.ROOT / "tests" / "sql"


class Workbench:
    """One step's app, its database and an HTTP client, for a notebook."""

    def __init__(self, step: int, tree: str = "steps") -> None:
        if tree not in ("steps", "solutions"):
            raise ValueError(f"tree must be 'steps' or 'solutions', not {tree!r}")
        self.step = catalogue.step(step)
        self.tree = self.step.tree(catalogue.ROOT, tree)
        self._stack = contextlib.ExitStack()
        self._clients: list[TestClient] = []
        self.server: PostgresServer | None = None
        self.database: str | None = None
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

    def module(self, name: str = "main") -> ModuleType:
        """Import aiohttpdemo_polls.<name> from the chosen tree."""
        return importlib.import_module(f"{catalogue.PACKAGE}.{name}")

    def config(self, load_sample_data: bool = True) -> dict[str, Any]:
        """A valid app configuration pointing at a fresh database on a throwaway server."""
        if self.server is None:
            self.server = self._stack.enter_context(throwaway_postgres())
            self.database = self.server.create_database()
            print(f"Started {describe(self.server)}, database {self.database}")
            if load_sample_data and self.step.serve == "database":
                for script in ("schema.sql", "seed.sql"):
                    self.server.execute((SAMPLE_SQL / script).read_text(), self.database)
        return {
            "postgres": {**self.server.params(self.database), "minsize": 1, "maxsize": 5},
            "host": "127.0.0.1",
            "port": 8080,
        }

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
        """Stop the HTTP servers (the apps run their cleanup), then the database server."""
        for client in self._clients:
            await client.close()
        self._clients.clear()
        self._stack.close()
        self.server = self.database = None
        print("Closed: app stopped, throwaway PostgreSQL removed.")
