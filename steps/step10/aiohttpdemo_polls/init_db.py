"""`python -m aiohttpdemo_polls.init_db [--config PATH]`: (re)create the tables and load sample polls.

Run it as often as you like: it drops the tables first, so every run ends with the same clean data.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from .db import DB_TIMEOUT, DatabaseUnavailable, check_database, choice, database_url, meta, question
from .settings import ConfigError, get_config

# The sample polls: question text, publication date and the answers to choose from.
SAMPLE_POLLS: list[tuple[str, date, list[str]]] = [
    ("What's new?", date(2015, 12, 15), ["Not much", "The sky", "Just hacking again"]),
    ("Which part of aiohttp do you like best?", date(2016, 1, 4), ["The server", "The client", "Both"]),
]


def make_engine(postgres: dict[str, Any]) -> AsyncEngine:
    """An engine for the `postgres` section of the configuration. A script that runs once keeps no
    connections for later (NullPool closes each one when it is given back)."""
    return create_async_engine(
        database_url(postgres),
        poolclass=NullPool,
        connect_args={"timeout": DB_TIMEOUT, "command_timeout": DB_TIMEOUT},
    )


async def create_tables(engine: AsyncEngine) -> None:
    """Drop the polls tables if they exist and create them afresh, in one transaction."""
    # TODO (step 10, task 5): in `async with engine.begin() as conn:`, conn.run_sync(meta.drop_all), then create_all
    raise NotImplementedError("TODO step 10, task 5")


async def sample_data(engine: AsyncEngine) -> None:
    """Insert the sample polls, each choice tied to the id its question really got."""
    # TODO (step 10, task 5): one transaction; insert each question with RETURNING its id, then its choices with that id
    raise NotImplementedError("TODO step 10, task 5")


async def rebuild(postgres: dict[str, Any]) -> None:
    """Reach the database, rebuild it, and dispose of the engine whatever happened."""
    engine = make_engine(postgres)
    try:
        await check_database(engine, 1)
        await create_tables(engine)
        await sample_data(engine)
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> None:
    """Read the configuration like the app does, then rebuild the database it names."""
    try:
        config = get_config(argv)
    except ConfigError as exc:
        print(f"Cannot set up the database: {exc}", file=sys.stderr)
        sys.exit(2)
    postgres = config["postgres"]
    try:
        asyncio.run(rebuild(postgres))
    except DatabaseUnavailable as exc:
        print(
            f"Cannot connect to PostgreSQL at {postgres['host']}:{postgres['port']} "
            f"(database {postgres['database']!r}): {exc}",
            file=sys.stderr,
        )
        sys.exit(1)
    print(f"Database {postgres['database']!r} is ready: tables created, {len(SAMPLE_POLLS)} sample polls.")


if __name__ == "__main__":
    main()
