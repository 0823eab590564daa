"""The finished apps (solutions of steps 5-10) answer a burst of 100 concurrent clients with no 5xx.

A fast machine serves such a burst in milliseconds, and no timeout is ever near; a busy one once answered
168 of 16,000 requests with 500 (bench/RESULTS.md), because a request waiting for a free connection of
the pool is bounded by a timeout too (aiopg's one `timeout`, SQLAlchemy's `pool_timeout`). To make that
wait long on any machine, the judge slows the database down instead: every read of the question table
takes QUERY_SECONDS, so with a pool of POOL connections the last of CLIENTS requests waits at least
(CLIENTS / POOL - 1) * QUERY_SECONDS = 5.4 s for a connection, longer than the 5 s the apps once gave it,
while no single query comes near a query timeout. Every app is started at once on one server, each on a
database of its own, so the whole test takes about one burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from workbook import catalogue, environments
from workbook.pg import PostgresServer, free_port, throwaway_postgres
from workbook.serve import PreparedApp, stop_process, write_config

STEPS = (5, 6, 7, 8, 9, 10)
CLIENTS = 100
POOL = 10
QUERY_SECONDS = 0.6
# Each app's burst is over in about CLIENTS / POOL * QUERY_SECONDS = 6 s; a client that waits longer
# than this has met a hang, which is a failure too.
CLIENT_TIMEOUT = 60

# The question table behind a view that sleeps once per query (an uncorrelated subquery runs once, and a
# volatile function is never folded away), so every page that lists the polls takes QUERY_SECONDS.
# The tables and sample polls as the suites make them (tests/sql), not by each app's init_db: six more
# interpreters would double the test's time.
TABLES = "".join((catalogue.ROOT / "tests" / "sql" / name).read_text() for name in ("schema.sql", "seed.sql"))
SLOW_QUESTIONS = f"""
ALTER TABLE question RENAME TO question_stored;
CREATE VIEW question AS SELECT * FROM question_stored
    WHERE (SELECT count(*) FROM pg_sleep({QUERY_SECONDS})) = 1;
"""


@contextlib.contextmanager
def slow_apps(server: PostgresServer, folder: Path) -> Iterator[dict[str, tuple[str, subprocess.Popen]]]:
    """Each step's solution serving on a free port, over a database whose question table is slow."""
    prepared, bases = [], []
    for number in STEPS:
        step = catalogue.step(number)
        database = server.create_database(f"burst_{step.name}")
        port = free_port()
        (folder / step.name).mkdir()
        config = write_config(folder / step.name, server.params(database) | {"maxsize": POOL}, port)
        tree, python = step.tree(catalogue.ROOT, "solutions"), environments.learner_python(step)
        prepared.append(PreparedApp(tree, python, config, server, database))
        bases.append(f"http://127.0.0.1:{port}")
    started: dict[str, tuple[str, subprocess.Popen]] = {}
    try:
        for app, base in zip(prepared, bases, strict=True):
            server.execute(TABLES + SLOW_QUESTIONS, app.database)
            started[app.tree.name] = (base, app.start())
        yield started
    finally:
        for _, process in started.values():
            stop_process(process, grace=15)


async def wait_until_serving(base: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert process.poll() is None, f"the app at {base} ended with exit status {process.returncode}"
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(base + "/") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    pytest.fail(f"the app at {base} did not answer GET / within {timeout:.0f} s")


async def burst(base: str) -> Counter[int]:
    """CLIENTS requests for GET / sent at the same moment; how many got each status."""
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as session:

        async def one() -> int:
            async with session.get("/") as response:
                await response.read()
                return response.status

        return Counter(await asyncio.gather(*(one() for _ in range(CLIENTS))))


async def every_burst(apps: dict[str, tuple[str, subprocess.Popen]]) -> dict[str, Counter[int]]:
    await asyncio.gather(*(wait_until_serving(base, process) for base, process in apps.values()))
    counts = await asyncio.gather(*(burst(base) for base, _ in apps.values()))
    return dict(zip(apps, counts, strict=True))


def test_a_burst_of_100_clients_gets_no_server_error(tmp_path: Path) -> None:
    for number in STEPS:
        try:
            environments.learner_python(catalogue.step(number))
        except environments.EnvironmentMissing as exc:
            pytest.skip(f"step {number}'s app cannot run here: {exc}")
    with throwaway_postgres() as server, slow_apps(server, tmp_path) as apps:
        statuses = asyncio.run(every_burst(apps))
    failed = {name: dict(count) for name, count in statuses.items() if set(count) != {200}}
    assert not failed, (
        f"{CLIENTS} clients at once asked each app for GET / (pool {POOL}, {QUERY_SECONDS} s per query, so "
        f"the last waits about {(CLIENTS / POOL - 1) * QUERY_SECONDS:.1f} s for a connection); statuses "
        f"per solution: {failed}. A 500 or 504 here is a wait for a pooled connection cut short by a timeout."
    )
