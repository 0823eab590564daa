"""`python -m aiohttpdemo_polls.init_db [--config PATH]`: (re)create the tables and load sample polls.

Run it as often as you like: it drops the tables first, so every run ends with the same clean data.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import create_engine, insert
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import OperationalError

from .db import choice, meta, question
from .settings import ConfigError, get_config

# The sample polls: question text, publication date and the answers to choose from.
SAMPLE_POLLS: list[tuple[str, date, list[str]]] = [
    ("What's new?", date(2015, 12, 15), ["Not much", "The sky", "Just hacking again"]),
    ("Which part of aiohttp do you like best?", date(2016, 1, 4), ["The server", "The client", "Both"]),
]


def make_engine(postgres: dict[str, Any]) -> Engine:
    """A synchronous SQLAlchemy engine for the `postgres` section of the configuration."""
    url = URL.create(
        "postgresql+psycopg2",
        username=postgres["user"],
        password=postgres["password"] or None,
        host=postgres["host"],
        port=postgres["port"],
        database=postgres["database"],
    )
    # future=True: the SQLAlchemy 2.0 behaviour (explicit transactions, no autocommit surprises).
    return create_engine(url, future=True, connect_args={"connect_timeout": 5})


def create_tables(engine: Engine) -> None:
    """Drop the polls tables if they exist and create them afresh, in one transaction."""
    with engine.begin() as conn:
        meta.drop_all(conn)
        meta.create_all(conn)


def sample_data(engine: Engine) -> None:
    """Insert the sample polls, each choice tied to the id its question really got."""
    with engine.begin() as conn:
        for text, published, answers in SAMPLE_POLLS:
            new_id = conn.execute(
                insert(question).values(question_text=text, pub_date=published).returning(question.c.id)
            ).scalar_one()
            conn.execute(insert(choice), [{"question_id": new_id, "choice_text": a} for a in answers])


def main(argv: Sequence[str] | None = None) -> None:
    """Read the configuration like the app does, then rebuild the database it names."""
    try:
        config = get_config(argv)
    except ConfigError as exc:
        print(f"Cannot set up the database: {exc}", file=sys.stderr)
        sys.exit(2)
    postgres = config["postgres"]
    engine = make_engine(postgres)
    try:
        create_tables(engine)
        sample_data(engine)
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        print(
            f"Cannot connect to PostgreSQL at {postgres['host']}:{postgres['port']} "
            f"(database {postgres['database']!r}): {reason}",
            file=sys.stderr,
        )
        sys.exit(1)
    finally:
        engine.dispose()
    print(f"Database {postgres['database']!r} is ready: tables created, {len(SAMPLE_POLLS)} sample polls.")


if __name__ == "__main__":
    main()
