"""A view held inside PostgreSQL by the judge: does the app keep answering, and whose connection waits?

The judge takes an ACCESS EXCLUSIVE lock on a table the view reads, so the view's query waits in
PostgreSQL for as long as the judge holds it: no clock decides the verdict. While it waits,
- an app whose view awaits its query (aiopg, asyncpg) answers another request at once; an app whose view
  queries through a synchronous driver (psycopg2, a synchronous SQLAlchemy engine) has its event loop
  stuck in that call and answers nothing until the lock goes, however long the judge waits;
- the backend that waits is one of the connections the app's engine opened at startup (with minsize =
  maxsize the pool never opens another), unless the view opened an engine or a connection of its own.

Any step whose app has a view reading `question` (steps 5-10) can use it: `held_in_postgres` around a
request, then `answers_meanwhile` for the loop and `client_backends` for whose connection waited. A
time.sleep or a file read is over before anything can be seen from outside; the harness notes every such
call made on a running loop, and `learner.blocking_calls()` (tests/conftest.py) hands those notes to the
judge.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from tests.conftest import Database, judge_connect

HELD_SECONDS = 10.0  # how long a view may take to reach its query, and to finish once the lock is gone
PROBE_SECONDS = 5.0  # how long a free event loop may take to answer a page with no route


def client_backends(db: Database) -> set[int]:
    """The pids of every client connection to `db`, but the one the judge asks through."""
    rows = db.execute(
        "SELECT pid FROM pg_catalog.pg_stat_activity WHERE datname = pg_catalog.current_database() "
        "AND pid <> pg_catalog.pg_backend_pid() AND backend_type = 'client backend'"
    )
    return {pid for (pid,) in rows}


def lock_waiters(db: Database) -> list[int]:
    rows = db.execute(
        "SELECT pid FROM pg_catalog.pg_stat_activity WHERE datname = pg_catalog.current_database() "
        "AND pid <> pg_catalog.pg_backend_pid() AND wait_event_type = 'Lock'"
    )
    return [pid for (pid,) in rows]


@dataclass
class Held:
    """What became of the held request: the backend that waited for the judge's lock, or why none did."""

    waiting: int | None  # pid of the app's backend waiting on the lock
    answered: tuple[int, str] | None  # (status, body start) when the view answered without waiting


async def _get(session: aiohttp.ClientSession, path: str) -> tuple[int, str]:
    async with session.get(path) as response:
        return response.status, (await response.text())[:300]


@contextlib.asynccontextmanager
async def held_in_postgres(db: Database, session: aiohttp.ClientSession, path: str,
                           table: str = "question") -> AsyncIterator[Held]:  # fmt: skip
    """GET `path` while the judge holds an ACCESS EXCLUSIVE lock on public.`table`; yields once the app's
    query waits for it (or the view answered, or HELD_SECONDS passed). The lock is released, and the request
    given HELD_SECONDS to finish, on the way out."""
    lock = judge_connect(db.server.dsn(db.name))  # not autocommit: the lock lasts until the rollback
    request: asyncio.Future[tuple[int, str]] | None = None
    try:
        with lock.cursor() as cur:
            cur.execute(f"LOCK TABLE public.{table} IN ACCESS EXCLUSIVE MODE")
        request = asyncio.ensure_future(_get(session, path))
        held = Held(None, None)
        deadline = time.monotonic() + HELD_SECONDS
        while time.monotonic() < deadline:
            waiters = lock_waiters(db)
            if waiters:
                held.waiting = waiters[0]
                break
            if request.done():
                with contextlib.suppress(Exception):
                    held.answered = request.result()
                break
            await asyncio.sleep(0.02)  # the request goes out while the judge waits
        yield held
    finally:
        lock.rollback()
        lock.close()
        if request is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(request, HELD_SECONDS)


async def answers_meanwhile(url: str, seconds: float = PROBE_SECONDS) -> int | None:
    """The status of GET `url` (a page with no route: nothing of the learner's but the loop answers it),
    or None when no answer came within `seconds`."""
    timeout = aiohttp.ClientTimeout(total=seconds)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
            return response.status
    except (asyncio.TimeoutError, aiohttp.ClientError):
        return None
