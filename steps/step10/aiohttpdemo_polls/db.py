"""The polls tables in SQLAlchemy Core, and the asyncio engine (asyncpg underneath) the running app shares."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from aiohttp import web
from sqlalchemy import Column, Date, ForeignKey, Integer, MetaData, Row, String, Table, select, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from .settings import CONFIG_KEY

# Every table registers itself on this one MetaData, so `meta.create_all()` and `meta.drop_all()` see
# the whole schema and create (or drop) the tables in the order their foreign keys need.
meta = MetaData()

question = Table(
    "question",
    meta,
    Column("id", Integer, primary_key=True),
    Column("question_text", String(200), nullable=False),
    Column("pub_date", Date, nullable=False),
)

choice = Table(
    "choice",
    meta,
    Column("id", Integer, primary_key=True),
    Column("choice_text", String(200), nullable=False),
    Column("votes", Integer, nullable=False, server_default="0"),
    Column("question_id", Integer, ForeignKey("question.id", ondelete="CASCADE"), nullable=False),
)

# The app's one engine (it owns the pool of connections), created at startup by pg_context.
DB_KEY = web.AppKey("db", AsyncEngine)

# Seconds to wait for PostgreSQL: for a new connection and for each query.
DB_TIMEOUT = 5.0
# Seconds a request may wait for a free connection of the pool. aiopg had one number for this and the two
# above; here it has its own, as generous as SQLAlchemy's default: in a burst of 100 visitors and 10
# connections, a request waits its turn behind nine rounds of queries, and that is no error.
POOL_TIMEOUT = 30.0


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached while the app started; main() turns it into one clear line."""


def database_url(postgres: dict[str, Any], driver: str = "asyncpg") -> URL:
    """The URL of the configured database, built from its parts: a name or password with a space, a quote
    or an @ in it needs no escaping, as it would in a URL pasted together with an f-string."""
    return URL.create(
        f"postgresql+{driver}",
        username=postgres["user"],
        password=postgres["password"] or None,
        host=postgres["host"],
        port=postgres["port"],
        database=postgres["database"],
    )


def make_engine(postgres: dict[str, Any]) -> AsyncEngine:
    """An engine whose pool holds at most `maxsize` connections, as aiopg's did."""
    # TODO (step 10, task 1): create_async_engine(database_url(...)); pool_size=maxsize, max_overflow=0 bound the pool
    raise NotImplementedError("TODO step 10, task 1")


async def open_connections(engine: AsyncEngine, count: int) -> None:
    """Open `count` connections and give them back to the pool, which keeps them for requests.

    SQLAlchemy's pool connects lazily, on first use; aiopg's `minsize` opened connections at startup.
    Doing it here keeps both of its effects: the first visitors find connections ready, and a database
    that cannot be reached stops the app before it serves anything. Each is held until all are open (else
    the pool would hand the same one back every time), and all go back however the opening ended.
    """
    # TODO (step 10, task 1): hold `count` connections (engine.connect() on an AsyncExitStack), then give them back
    raise NotImplementedError("TODO step 10, task 1")


async def check_database(engine: AsyncEngine, count: int) -> None:
    """open_connections, where failing to reach PostgreSQL becomes DatabaseUnavailable, with the reason.

    Out of reach means: no connection at all (OSError), no answer in time (asyncio.TimeoutError), a
    refusal from the server (a missing database, a wrong password: asyncpg.PostgresError) or a connection
    lost on the way (asyncpg.InterfaceError); SQLAlchemy may wrap the driver's errors in a DBAPIError.
    """
    # TODO (step 10, task 4): what open_connections raises when PostgreSQL is out of reach -> DatabaseUnavailable
    await open_connections(engine, count)


async def pg_context(app: web.Application) -> AsyncIterator[None]:
    """Open the engine before the app serves its first request; dispose of it when the app shuts down."""
    conf = app[CONFIG_KEY]["postgres"]
    # TODO (step 10, task 1): make_engine, app[DB_KEY] = engine, check_database(minsize), yield, then engine.dispose()
    yield


def first_line(exc: BaseException) -> str:
    """The first line of an error's text: drivers often add a second one with details or a hint."""
    original = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    text = str(original).strip()
    return text.splitlines()[0] if text else ""


class RecordNotFound(Exception):
    """The row asked for does not exist; views turn it into a 404."""


# The largest value of PostgreSQL's `integer`, the type of every id column here. asyncpg sends a query's
# values as typed parameters ($1::INTEGER), and a bigger number is refused with an error, where psycopg2
# wrote it into the SQL text and PostgreSQL simply found no row. An id beyond it cannot exist.
MAX_ID = 2**31 - 1


def possible_id(*ids: int) -> bool:
    """Whether every id could be a row's: the routes let through up to ten digits, integer holds fewer."""
    return all(0 <= value <= MAX_ID for value in ids)


async def get_question(conn: AsyncConnection, question_id: int) -> tuple[Row[Any], list[Row[Any]]]:
    """One question and its choices (in id order), or RecordNotFound if there is no such question."""
    # TODO (step 10, task 2): no query for an impossible id; await conn.execute(...), then .first() and .all()
    raise NotImplementedError("TODO step 10, task 2")


async def vote(conn: AsyncConnection, question_id: int, choice_id: int) -> int:
    """Count one vote for a choice of this question and return its new total, or raise RecordNotFound if
    it is not one of them.

    One UPDATE does the reading and the writing inside PostgreSQL, so two votes at the same moment cannot
    both read 5 and both write 6; RETURNING hands back the total it wrote, from the same statement.
    """
    # TODO (step 10, task 3): no query for impossible ids; one UPDATE ... RETURNING votes; no row -> RecordNotFound
    raise NotImplementedError("TODO step 10, task 3")
