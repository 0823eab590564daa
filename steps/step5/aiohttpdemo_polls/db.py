"""The polls tables in SQLAlchemy Core, and the database engine the running app shares."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiopg.sa
from aiohttp import web
from sqlalchemy import Column, Date, ForeignKey, Integer, MetaData, String, Table

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
    # TODO (step 5, task 1): create the engine from config["postgres"], keep it under DB_KEY, close it after yield
    yield
