"""Checks that a view borrows a connection of the app's one engine and gives it back (steps 5-7, carried
into step 10): no engine or connection of its own per request, no connection kept after the answer.

Both are judged from PostgreSQL and from the app's engine, never by reading code:
- which backend serves a request: the judge locks the table the view reads, so the request's query waits
  for the lock and shows its backend in pg_stat_activity; a backend that did not exist before the request
  was connected for it (a new engine, or a new connection, per request);
- how many connections of the pool are still in use once every answer has come back (the engine's own
  counts, read in the learner's process): anything above none was never given back.
"""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp
import pytest

from tests.conftest import Database, Learner, ServedApp, judge_connect

LOCK_WAIT = 10.0  # seconds for the request's query to reach the judge's lock
HINT = (
    "Hint: in the view, async with request.app[db.DB_KEY].acquire() as conn: ... (engine.connect() or "
    "engine.begin() in step 10): it borrows one of the app's pooled connections and gives it back when the "
    "block ends, even when the view raises."
)


def app_backends(db: Database, leave_out: int) -> set[int]:
    """The pids of the client backends on the database, but the judge's (the asking one and `leave_out`)."""
    rows = db.execute(
        "SELECT pid FROM pg_catalog.pg_stat_activity WHERE datname = pg_catalog.current_database() "
        "AND pid <> pg_catalog.pg_backend_pid() AND backend_type = 'client backend'"
    )
    return {pid for (pid,) in rows} - {leave_out}


async def assert_served_by_the_pool(
    client: aiohttp.ClientSession, db: Database, method: str, path: str, table: str, **kwargs: object
) -> None:
    """`method path` must be served by a connection that existed before it: one of the app's pool."""
    locker = judge_connect(db.server.dsn(db.name))
    request = None
    try:
        with locker.cursor() as cursor:
            cursor.execute("SELECT pg_catalog.pg_backend_pid()")
            (locker_pid,) = cursor.fetchone()
            cursor.execute(f"LOCK TABLE public.{table} IN ACCESS EXCLUSIVE MODE")
        before = app_backends(db, locker_pid)
        request = asyncio.ensure_future(client.request(method, path, allow_redirects=False, **kwargs))
        deadline, waiting = time.monotonic() + LOCK_WAIT, None
        while waiting is None and not request.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            rows = db.execute(
                "SELECT pid FROM pg_catalog.pg_stat_activity WHERE datname = pg_catalog.current_database() "
                "AND wait_event_type = 'Lock'"
            )
            waiting = rows[0][0] if rows else None
    finally:
        locker.rollback()
        locker.close()
    response = await request
    async with response:
        said = (await response.read()).decode("utf-8", "replace").strip()
    if waiting is None:
        sent = f" with the form {kwargs['data']}" if "data" in kwargs else ""
        refused = (
            f": {said[:200]!r}. Hint: the view refused the request before any query; the judge sent the form "
            "as the lesson describes it: read the field by the name the lesson gives it"
            if 400 <= response.status < 500 else ""
        )
        pytest.fail(
            f"expected {method} {path}{sent} to read the {table} table (the judge held a lock on it to see "
            "which connection the query came on); no query waited for it, and the answer was "
            f"{response.status}{refused}",
            pytrace=False,
        )
    if waiting not in before:
        pytest.fail(
            f"while the judge held a lock on the {table} table, {method} {path} was served by a connection "
            f"PostgreSQL had not seen before the request (pid {waiting}; the app's connections before it: "
            f"{sorted(before) or 'none'}): the view opened a new engine or connection for this request "
            "instead of borrowing one of the app's pool, which costs a new connection every time and "
            f"ignores maxsize. {HINT}",
            pytrace=False,
        )


def connections_in_use(learner: Learner, app: ServedApp) -> int | None:
    """Connections of the app's engine lent out now: aiopg's size - freesize, SQLAlchemy's checkedout()."""
    attrs = learner.app_item(app, "db:DB_KEY").get("attrs", {})
    if isinstance(attrs.get("checked_out"), int):
        return attrs["checked_out"]
    if isinstance(attrs.get("size"), int) and isinstance(attrs.get("freesize"), int):
        return attrs["size"] - attrs["freesize"]
    return None


async def assert_connections_given_back(
    learner: Learner, app: ServedApp, method: str, path: str, times: int = 3, **kwargs: object
) -> None:
    """After `times` answers to `method path` on `app` (one at a time), no connection may be in use.

    An app that kept its connections cannot close its engine (aiopg waits for them), so it is left running
    rather than stopped; the learner's process ends it."""
    async with aiohttp.ClientSession(app.url, timeout=aiohttp.ClientTimeout(total=20)) as client:
        statuses = []
        for _ in range(times):
            async with client.request(method, path, allow_redirects=False, **kwargs) as response:
                await response.read()
                statuses.append(response.status)
    in_use = connections_in_use(learner, app)
    if in_use is None:
        return  # no engine under DB_KEY: the checks of the engine itself say so
    if in_use and app in learner.served:
        learner.served.remove(app)  # see the docstring: stopping it would wait for connections forever
    assert in_use == 0, (
        f"after {times} requests {method} {path} had all been answered ({statuses}), {in_use} connections "
        "of the app's pool were still in use: the view borrowed a connection that was never given back, "
        "and once the pool's maxsize are all kept, every request waits for one that never comes. "
        f"{HINT}"
    )


async def assert_given_back_when_the_query_fails(
    learner: Learner, database: Database, app: ServedApp, method: str, path: str, table: str, **kwargs: object
) -> None:
    """With `table` renamed away (the view's query raises), one `method path` on `app`; then no connection
    may be in use: a release() written after the query is skipped by the error, `async with` is not."""
    away = f"{table}_away_{random.randint(1000, 9999)}"
    database.execute(f"ALTER TABLE public.{table} RENAME TO {away}")
    try:
        async with aiohttp.ClientSession(app.url, timeout=aiohttp.ClientTimeout(total=20)) as client, \
                client.request(method, path, allow_redirects=False, **kwargs) as response:  # fmt: skip
            await response.read()
            status = response.status
    finally:
        database.execute(f"ALTER TABLE public.{away} RENAME TO {table}")
    in_use = connections_in_use(learner, app)
    if in_use is None:
        return  # no engine under DB_KEY: the checks of the engine itself say so
    if in_use and app in learner.served:
        learner.served.remove(app)  # as in assert_connections_given_back: stopping it would wait forever
    assert in_use == 0, (
        f"{method} {path} while the {table} table did not exist (the view's query raised; the app answered "
        f"{status}): expected its connection back in the pool all the same, {in_use} still in use: each "
        "such error keeps one more, until the pool is empty and every request waits. "
        + given_back_hint(learner, app)
    )


def given_back_hint(learner: Learner, app: ServedApp) -> str:
    """The way to borrow a connection that comes back when the query raises, for the app's kind of engine:
    aiopg's acquire()/release() (steps 5-7), or SQLAlchemy's connect()/close() (step 10)."""
    if isinstance(learner.app_item(app, "db:DB_KEY").get("attrs", {}).get("checked_out"), int):
        return (
            "Hint: borrow it with `async with request.app[db.DB_KEY].connect() as conn:` (engine.begin() "
            "where the view writes), which gives it back however the block ends; a conn.close() after the "
            "query is skipped by the error."
        )
    return (
        "Hint: borrow it with `async with request.app[db.DB_KEY].acquire() as conn:`, which gives it back "
        "even when the query raises; a release() after the query is skipped by the error."
    )
