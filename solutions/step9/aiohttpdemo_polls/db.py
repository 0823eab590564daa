"""The polls tables in SQLAlchemy Core, and the database engine the running app shares."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiopg.sa
from aiohttp import web
from aiopg.sa.result import RowProxy
from sqlalchemy import Column, Date, ForeignKey, Integer, MetaData, String, Table, select, update

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

# The app's one engine (a pool of connections), created at startup by pg_context.
DB_KEY = web.AppKey("db", aiopg.sa.Engine)

# Seconds aiopg waits, one number for three waits: to connect, for each query, and for a free connection
# of the pool. The last can be the longest: in a burst of 100 visitors and 10 connections, a request
# waits its turn behind nine rounds of queries, so the number is as generous as upstream's (it is 60 s).
# Async connections ignore libpq's connect_timeout: this is also what stops a silent server at startup.
DB_TIMEOUT = 30.0


async def pg_context(app: web.Application) -> AsyncIterator[None]:
    """Open the engine before the app serves its first request; close it when the app shuts down."""
    conf = app[CONFIG_KEY]["postgres"]
    engine = await aiopg.sa.create_engine(
        database=conf["database"],
        user=conf["user"],
        password=conf["password"],
        host=conf["host"],
        port=conf["port"],
        minsize=conf["minsize"],
        maxsize=conf["maxsize"],
        timeout=DB_TIMEOUT,
    )
    app[DB_KEY] = engine
    yield
    engine.close()
    await engine.wait_closed()


class RecordNotFound(Exception):
    """The row asked for does not exist; views turn it into a 404."""


async def get_question(conn: aiopg.sa.SAConnection, question_id: int) -> tuple[RowProxy, list[RowProxy]]:
    """One question and its choices (in id order), or RecordNotFound if there is no such question."""
    cursor = await conn.execute(select(question).where(question.c.id == question_id))
    record = await cursor.first()
    if record is None:
        raise RecordNotFound(f"There is no poll {question_id}.")
    cursor = await conn.execute(
        select(choice).where(choice.c.question_id == question_id).order_by(choice.c.id)
    )
    return record, await cursor.fetchall()


async def vote(conn: aiopg.sa.SAConnection, question_id: int, choice_id: int) -> None:
    """Count one vote for a choice of this question, or raise RecordNotFound if it is not one of them.

    One UPDATE does the reading and the writing inside PostgreSQL, so two votes at the same moment
    cannot both read 5 and both write 6.
    """
    result = await conn.execute(
        update(choice)
        .where(choice.c.id == choice_id, choice.c.question_id == question_id)
        .values(votes=choice.c.votes + 1)
    )
    if result.rowcount == 0:
        raise RecordNotFound(f"Poll {question_id} has no choice {choice_id}.")
