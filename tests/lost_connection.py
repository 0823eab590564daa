"""A database connection lost in the middle of a view's query: the poll exists, the database failed.

A view that catches psycopg2.OperationalError (or every exception) next to RecordNotFound turns a lost
database into a 404 that blames the visitor. To see it without a clock, the judge holds a lock on a table
the view uses, so the view's query waits inside PostgreSQL, then ends that query's backend
(pg_terminate_backend, as a restart of the server does, waiting until it is gone: PostgreSQL 14 or
later) before letting the lock go: the query raises OperationalError on every run.
Ending an idle pooled connection would not do: aiopg notices it and quietly opens another.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.conftest import Database, http_session, judge_connect, valid_config
from tests.held_query import HELD_SECONDS, lock_waiters

ENDED_MS = 5000  # how long pg_terminate_backend waits for the backend to be gone


async def status_with_a_lost_connection(learner: Any, database: Database, path: str, table: str,
                                        data: dict[str, str] | None = None) -> int | None:  # fmt: skip
    """The status of GET `path` (POST with `data`) whose query on public.`table` lost its connection
    while it ran; None when the query never waited for the judge's lock (the view answered first)."""
    app = learner.serve(valid_config(database))
    lock = judge_connect(database.server.dsn(database.name))  # not autocommit: the lock lasts until rollback
    try:
        with lock.cursor() as cur:
            cur.execute(f"LOCK TABLE public.{table} IN ACCESS EXCLUSIVE MODE")
        async with http_session(app.url) as client:
            sent = client.get(path) if data is None else client.post(path, data=data, allow_redirects=False)
            request = asyncio.ensure_future(sent)
            deadline = time.monotonic() + HELD_SECONDS
            while not request.done() and time.monotonic() < deadline:
                waiters = lock_waiters(database)
                if waiters:
                    database.execute(f"SELECT pg_catalog.pg_terminate_backend({int(waiters[0])}, {ENDED_MS})")
                    break
                await asyncio.sleep(0.02)
            else:  # the view answered without waiting for the lock, or never reached its query
                request.cancel()
                if request.done() and not request.cancelled() and request.exception() is None:
                    request.result().release()
                return None
            lock.rollback()
            async with await request as response:
                return response.status
    finally:
        lock.rollback()
        lock.close()
