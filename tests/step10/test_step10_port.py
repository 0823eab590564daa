"""Step 10: the port itself. The engine's type, pool and disposal (task 1), the vote's RETURNING (task 3), a
clear stop when PostgreSQL is out of reach (task 4) and init_db on the asyncio engine (task 5).

Everything a visitor sees is judged by the carried checks of steps 6 to 9 (test_step10_kept_*.py). Here
the judge counts the app's connections in pg_stat_activity while the learner's process still runs, reads
the pool's make-up from that process, and starts the learner's own commands against databases that
cannot be reached.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import Database, LearnerRaised, step_run, valid_config, why_it_ended
from tests.step4.test_step4_schema import finish, table_rows, tables
from tests.step5.test_step5_engine import (
    GIVE_UP,
    SILENT_GIVE_UP,
    Startup,
    check_clear_failure,
    ended,
    launch_startups,
    pool_config,
    settled,
    wait_for_connections,
)
from workbook.judge.learner_process import Command
from workbook.pg import free_port

ASYNC_ENGINE = "sqlalchemy.ext.asyncio.engine.AsyncEngine"
APP_KEY = "aiohttp.helpers.AppKey"
INIT_DB = ("-m", "aiohttpdemo_polls.init_db", "--config")
ENGINE_HINT = "Hint: make_engine() returns create_async_engine(database_url(postgres), ...)."
DISPOSE_HINT = "Hint: in pg_context, `finally: await engine.dispose()` after the `yield`."


def engine_of(learner, app) -> dict:
    """describe() of app[db.DB_KEY], failing in plain words when it is missing or not an AsyncEngine."""
    engine = learner.app_item(app, "db:DB_KEY")
    assert engine.get("exists"), (
        "expected app[DB_KEY] to hold the engine once the app has started, found nothing. "
        "Hint: pg_context stores it with app[DB_KEY] = engine before its `yield`."
    )
    assert ASYNC_ENGINE in engine.get("mro", []), (
        f"expected app[DB_KEY] to be SQLAlchemy's AsyncEngine, got {engine.get('type')}. {ENGINE_HINT}"
    )
    return engine


# --- task 1: the engine ------------------------------------------------------------------------------------


@pytest.mark.task(1)
def test_engine_is_an_asyncio_engine_on_asyncpg(learner, polls_db, make_config):
    db_key = learner.require("db:DB_KEY")
    assert APP_KEY in db_key["mro"], (
        f"expected db.DB_KEY to be a web.AppKey, got {db_key['type']}. "
        "Hint: DB_KEY = web.AppKey('db', AsyncEngine)."
    )
    app = learner.serve(make_config(polls_db))
    driver = engine_of(learner, app).get("attrs", {}).get("driver")
    assert driver == "asyncpg", (
        f"expected the engine to talk to PostgreSQL through asyncpg, its driver is {driver!r}. "
        "Hint: database_url() builds a URL whose drivername is 'postgresql+asyncpg'."
    )


@pytest.mark.task(1)
def test_pool_is_bounded_by_the_config(learner, polls_db):
    minsize = random.randint(2, 3)
    maxsize = minsize + random.randint(1, 3)  # different every run: the config's numbers must reach the pool
    base = settled(polls_db)
    app = learner.serve(pool_config(polls_db, minsize, maxsize))
    attrs = engine_of(learner, app).get("attrs", {})
    shape = (attrs.get("pool_size"), attrs.get("max_overflow"))
    assert shape == (maxsize, 0), (
        f"expected a pool of at most maxsize={maxsize} connections (pool_size={maxsize}, max_overflow=0), "
        f"got pool_size={shape[0]}, max_overflow={shape[1]}. Hint: SQLAlchemy's pool keeps pool_size "
        "connections and opens max_overflow more under load; aiopg's maxsize is their sum."
    )
    count = wait_for_connections(polls_db, base + minsize) - base
    assert count == minsize, (
        f"expected the app to open minsize={minsize} connections at startup, PostgreSQL shows {count}. "
        "Hint: SQLAlchemy connects on first use; pg_context calls check_database(engine, conf['minsize']), "
        "which borrows that many at once with open_connections and gives them back."
    )
    calls = 3 * maxsize  # more at once than the pool holds: they must wait their turn, not open more
    (question_id,) = polls_db.execute("SELECT pg_catalog.min(id) FROM public.question")[0]
    learner.call_or_fail("db:get_question", question_id, connection=app, times=calls)
    count = wait_for_connections(polls_db, base + maxsize, seconds=0.5) - base
    assert minsize <= count <= maxsize, (
        f"expected between minsize={minsize} and maxsize={maxsize} connections after {calls} queries at "
        f"once, PostgreSQL shows {count}"
    )


@pytest.mark.task(1)
def test_engine_is_disposed_when_the_app_stops(learner, polls_db, make_config):
    base = settled(polls_db)
    app = learner.serve(make_config(polls_db))
    engine_of(learner, app)
    assert wait_for_connections(polls_db, base + 1) - base >= 1, (
        "expected the running app to hold a connection (minsize 1). Hint: check_database(engine, minsize)."
    )
    warnings = learner.stop(app)  # runs the app's cleanup, as Ctrl+C would; the process lives on
    left = wait_for_connections(polls_db, base) - base
    assert left == 0, (
        f"expected no connection of the app in pg_stat_activity once its cleanup ran (the process still "
        f"runs), found {left}. {DISPOSE_HINT}"
    )
    assert not warnings, (
        f"expected a quiet shutdown, the app's objects complained: {warnings[:3]}. {DISPOSE_HINT}"
    )


@pytest.mark.task(1)
def test_each_app_has_its_own_engine(learner, polls_db, make_config):
    base = settled(polls_db)
    first, second = learner.serve(make_config(polls_db)), learner.serve(make_config(polls_db))
    assert engine_of(learner, first)["id"] != engine_of(learner, second)["id"], (
        "expected every app to make its own engine, two apps shared one. "
        "Hint: call make_engine inside pg_context, not at module level."
    )
    learner.stop(first)
    count = wait_for_connections(polls_db, base + 1) - base
    assert count == 1, (
        f"expected the second app's connection to stay open when the first app stopped, found {count}"
    )


@pytest.mark.task(1)
def test_engine_connects_whatever_the_names(learner, pg_server):
    # A name with a space, a quote and an @: a URL pasted together with an f-string breaks on it.
    name = f"polls o'poll @{random.randint(100, 999)}"
    hint = "Hint: build the URL from its parts with URL.create(...), not with an f-string."
    with pg_server.database(name):
        database = Database(pg_server, name)
        try:
            app = learner.serve(valid_config(database))
        except pytest.fail.Exception as exc:
            pytest.fail(f"with the database named {name!r}: {exc.msg}\n{hint}", pytrace=False)
        engine_of(learner, app)
        count = wait_for_connections(database, 1)
        learner.stop(app)
        database.close()
    assert count == 1, (
        f"expected the app to connect to the database {name!r}, PostgreSQL shows {count}. {hint}"
    )


# --- task 3: the vote hands back its total -----------------------------------------------------------------


@pytest.mark.task(3)
def test_vote_returns_the_new_total(learner, polls_app, polls_db):
    question_id, choice_id, before = polls_db.execute(
        "SELECT question_id, id, votes FROM public.choice ORDER BY id LIMIT 1"
    )[0]
    try:
        total = learner.call("db:vote", question_id, choice_id, connection=polls_app)
    except LearnerRaised as exc:
        pytest.fail(f"expected vote(conn, {question_id}, {choice_id}) to count the vote, it raised "
                    f"{exc.name}: {exc.message}", pytrace=False)  # fmt: skip
    (stored,) = polls_db.execute(f"SELECT votes FROM public.choice WHERE id = {int(choice_id)}")[0]
    assert stored == before + 1 and total == stored, (
        f"expected vote(conn, {question_id}, {choice_id}) to add one vote ({before} -> {before + 1}) and "
        f"return the new total; PostgreSQL holds {stored}, vote returned {total!r}. Hint: "
        ".returning(choice.c.votes) on the UPDATE, then `return result.scalar_one_or_none()` when not None."
    )


# --- task 4: a clear stop when PostgreSQL is out of reach ---------------------------------------------------


@pytest.fixture(scope="module")
def startups(request: pytest.FixtureRequest, pg_server, tmp_path_factory) -> Iterator[dict[str, Startup]]:
    """Step 5's four starts that must end by themselves, launched together when the first check needs them."""
    with contextlib.ExitStack() as stack:
        folder = tmp_path_factory.mktemp("step10")
        yield launch_startups(step_run(request.config).tree, pg_server, folder, stack)


HINTS = {
    "serving_hint": "Hint: pg_context must call check_database(engine, minsize) before its `yield` (task 1); "
    "SQLAlchemy alone connects only on first use.",
    "hanging_hint": "Hint: connect_args={{'timeout': DB_TIMEOUT, ...}} in make_engine (asyncpg waits 60 s by "
    "default); this check sets db.DB_TIMEOUT to {timeout} s: read it as the app starts.",
}
FAILURE_HINTS = {
    "traceback_hint": "Hint: check_database raises DatabaseUnavailable from what open_connections raised, "
    "and main() catches DatabaseUnavailable around web.run_app.",
    "lines_hint": "Hint: first_line(exc) keeps the first line of the driver's message.",
}


def check_clear_stop(startup: Startup, seconds: float = GIVE_UP) -> None:
    status, output = ended(startup, seconds, **HINTS)
    check_clear_failure(status, output, startup.database, **FAILURE_HINTS)


@pytest.mark.task(4)
def test_closed_port_stops_the_app_with_a_clear_message(startups):
    check_clear_stop(startups["closed"])


@pytest.mark.task(4)
def test_missing_database_stops_the_app_with_a_clear_message(startups):
    check_clear_stop(startups["missing"])


@pytest.mark.task(4)
def test_silent_server_does_not_hang_the_app(startups):
    check_clear_stop(startups["silent"], SILENT_GIVE_UP)


@pytest.mark.task(4)
def test_other_errors_are_not_blamed_on_the_database(startups):
    status, output = ended(startups["taken"], **HINTS)
    assert status != 0, f"expected a non-zero exit status when the port is taken, got {status}"
    assert startups["taken"].database not in output and "in use" in output, (
        "with the database reachable and the app's port already in use, expected the port's error "
        f"(address already in use), not a message about the database; got:\n{output.strip()[-800:]}\n"
        "Hint: main() catches only DatabaseUnavailable: a port in use is an OSError too."
    )


# --- task 5: init_db on the asyncio engine ----------------------------------------------------------------


def init_db(tree: Path, config: dict, folder: Path, name: str) -> tuple[int, str]:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    finished = finish(Command(tree, *INIT_DB, str(path)))
    return finished.status, finished.output


@pytest.mark.task(5)
def test_init_db_builds_tables_and_sample_polls_twice_alike(tree, pg_database, tmp_path):
    pg_database.empty_schema()
    runs = []
    for attempt in ("first", "second"):
        status, output = init_db(tree, valid_config(pg_database), tmp_path, attempt)
        assert status == 0, (
            f"expected `python -m aiohttpdemo_polls.init_db --config FILE` to succeed ({attempt} run), it "
            f"exited with {status}: {why_it_ended(output)}\nHint: create_tables runs meta.drop_all and "
            "meta.create_all through `await conn.run_sync(...)` inside `async with engine.begin() as conn:`."
        )
        found = tables(pg_database)
        assert {"question", "choice"} <= found, (
            f"expected init_db to create the tables question and choice, found {sorted(found)}"
        )
        runs.append(table_rows(pg_database))
    questions, choices = runs[0]
    assert questions and choices, "expected init_db to insert sample questions and their choices, found none"
    question_ids = {row[0] for row in questions}
    assert all(row[3] in question_ids for row in choices), (
        "expected every sample choice to belong to a sample question. Hint: insert each question with "
        ".returning(question.c.id) and give its choices that id."
    )
    assert runs[0] == runs[1], (
        "expected a second run of init_db to rebuild exactly the same rows, found others: "
        f"{runs[0]} then {runs[1]}"
    )


@pytest.mark.task(5)
def test_init_db_reports_an_unreachable_database(tree, pg_database, tmp_path):
    config = valid_config(pg_database)
    config["postgres"].update(host="127.0.0.1", port=free_port())  # nothing listens there
    status, output = init_db(tree, config, tmp_path, "unreachable")
    lines = [line for line in output.splitlines() if line.strip()]
    assert status == 1 and "Traceback" not in output and len(lines) == 1, (
        f"expected init_db to stop with exit status 1 and one line when PostgreSQL cannot be reached, got "
        f"status {status}:\n{output.strip()[-1200:]}\nHint: rebuild() calls check_database(engine, 1) first, "
        "and main() catches DatabaseUnavailable around asyncio.run(...)."
    )
