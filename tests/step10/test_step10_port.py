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
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from tests.conftest import (
    Database,
    LearnerRaised,
    ServedApp,
    app_database,
    http_session,
    judge_connect,
    step_run,
    valid_config,
    why_it_ended,
)
from tests.pooled import assert_connections_given_back
from tests.step4.test_step4_schema import finish, table_rows, tables
from tests.step5.test_step5_engine import (
    GIVE_UP,
    SILENT_GIVE_UP,
    SILENT_TIMEOUT,
    Launched,
    Startup,
    app_connections,
    check_clear_failure,
    check_waits_db_timeout,
    ended,
    launch_startups,
    pool_config,
    pool_sizes,
    settled,
    wait_for_connections,
)
from workbook.judge.learner_process import Command, Finished

ASYNC_ENGINE = "sqlalchemy.ext.asyncio.engine.AsyncEngine"
APP_KEY = "aiohttp.helpers.AppKey"
INIT_DB = ("-m", "aiohttpdemo_polls.init_db", "--config")
ENGINE_HINT = "Hint: make_engine() returns create_async_engine(database_url(postgres), ...)."
DISPOSE_HINT = (
    "Hint: in pg_context, `finally: await engine.dispose()` after the `yield`, as it is: "
    "dispose(close=False) forgets the pool's connections without closing them."
)


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
    minsize, maxsize = pool_sizes()  # different every run: the config's numbers must reach the pool
    base = settled(polls_db)
    app = learner.serve(pool_config(polls_db, minsize, maxsize))
    attrs = engine_of(learner, app).get("attrs", {})
    shape = (attrs.get("pool_size"), attrs.get("max_overflow"))
    assert shape == (maxsize, 0), (
        f"expected a pool of at most maxsize={maxsize} connections (pool_size={maxsize}, max_overflow=0), "
        f"got pool_size={shape[0]}, max_overflow={shape[1]}. Hint: as the lesson's table says, "
        "pool_size=postgres['maxsize'] and max_overflow=0: the pool never opens more than maxsize."
    )
    count = wait_for_connections(polls_db, base + minsize) - base
    assert count == minsize, (
        f"expected the app to open minsize={minsize} connections at startup, PostgreSQL shows {count}. "
        "Hint: SQLAlchemy connects on first use; pg_context calls check_database(engine, conf['minsize']), "
        "which holds that many with open_connections and gives them back."
    )


@pytest.mark.task(1)
def test_pool_wait_is_bounded_by_pool_timeout(learner, polls_db, make_config):
    # Never SQLAlchemy's own default (30 s), so a pool_timeout left out or written as a number shows.
    bound = random.choice([4.5, 7.0, 12.5, 45.0, 60.0])
    learner.patch("db:POOL_TIMEOUT", bound)
    app = learner.serve(make_config(polls_db))
    got = engine_of(learner, app).get("attrs", {}).get("pool_timeout")
    assert got == bound, (
        f"with db.POOL_TIMEOUT set to {bound} s by the judge, expected a request to wait at most {bound} s "
        f"for a free connection of the pool (pool_timeout), the engine's pool waits {got} s. Hint: "
        "pool_timeout=POOL_TIMEOUT in make_engine, read when it is called: SQLAlchemy's own default is 30 s."
    )


@pytest.mark.task(1)
def test_connecting_and_each_query_are_bounded_by_db_timeout(learner, polls_db, make_config):
    # Neither the module's 5.0 nor asyncpg's defaults (60 s to connect, no bound on a query): a timeout left
    # out, or written as a number, shows.
    bound = 6.5
    learner.patch("db:DB_TIMEOUT", bound)
    app = learner.serve(make_config(polls_db))
    attrs = engine_of(learner, app).get("attrs", {})
    got = {"timeout": attrs.get("connect_timeout"), "command_timeout": attrs.get("command_timeout")}
    assert got == {"timeout": bound, "command_timeout": bound}, (
        f"with db.DB_TIMEOUT set to {bound} s by the judge, expected the engine to give asyncpg "
        f"timeout={bound} (connecting) and command_timeout={bound} (each query), it gives "
        + ", ".join(f"{name}={value if value is not None else 'nothing'}" for name, value in got.items())
        + ". Without command_timeout a query that never ends (on a lock, or a server that stopped "
        "answering) holds its request and its connection for ever. Hint: connect_args={'timeout': "
        "DB_TIMEOUT, 'command_timeout': DB_TIMEOUT} in make_engine, read when it is called, not a number of "
        "your own."
    )


def pool_timeout_with(learner, polls_db, seconds: float):
    """The pool_timeout of the engine an app builds with db.POOL_TIMEOUT patched to `seconds`, read from an
    app that starts and stops first (None if the judge cannot see it)."""
    learner.patch("db:POOL_TIMEOUT", seconds)
    first = learner.serve(pool_config(polls_db, 1, 1))
    waits = learner.app_item(first, "db:DB_KEY").get("attrs", {}).get("pool_timeout")
    learner.stop(first)
    return waits


@pytest.mark.task(1)
def test_a_start_that_fails_halfway_closes_what_it_opened(learner, polls_db):
    # minsize beyond the pool's size: open_connections gets `maxsize` connections, then waits for one more
    # until POOL_TIMEOUT (lowered here) and fails; the connections it did open are the engine's to close.
    maxsize = random.randint(1, 3)
    # The start below waits out the pool's timeout: an engine that ignores POOL_TIMEOUT would have this check
    # wait SQLAlchemy's own 30 s, so such a pool is told first.
    waits = pool_timeout_with(learner, polls_db, 0.5)
    if waits is not None and waits != 0.5:
        pytest.fail(
            f"this check makes the app's start wait for a connection of its pool, with db.POOL_TIMEOUT set "
            f"to 0.5 s by the judge; the engine's pool waits {waits} s instead, which it does not wait out. "
            "Hint: pool_timeout=POOL_TIMEOUT in make_engine, read when it is called.",
            pytrace=False,
        )
    base = settled(polls_db)
    collect_garbage(learner)
    start = learner.log_size()
    try:
        app = learner.serve(pool_config(polls_db, maxsize + 1, maxsize))
    except pytest.fail.Exception:
        pass  # the start failed, as it should
    else:
        learner.stop(app)
    # Connections dropped without being given back are closed by Python's garbage collector, with a warning:
    # collected now, any such warning is in the log.
    collect_garbage(learner)
    found = [line for line in learner.log_text(start).splitlines() if "non-checked-in connection" in line]
    assert not found, (
        f"the judge made the app's start fail halfway (minsize {maxsize + 1} with a pool of {maxsize}: the "
        "last connection waited out POOL_TIMEOUT); the connections open_connections had opened before were "
        "never given back to the pool: Python's garbage collector found them later and closed them: "
        f"{found[0][:300]}. Hint: enter each engine.connect() on one contextlib.AsyncExitStack, which gives "
        "every one back however the opening ends; a loop of conn.close() after the last one is skipped."
    )
    left = wait_for_connections(polls_db, base, seconds=10.0) - base  # returns as soon as they are gone
    assert left == 0, (
        f"the judge made the app's start fail halfway (minsize {maxsize + 1} with a pool of {maxsize}: the "
        f"last connection waited out POOL_TIMEOUT); expected no connection of that app left in PostgreSQL, "
        f"found {left}. {DISPOSE_HINT} A `finally:` runs when the start fails too, which code after the "
        "`yield` alone does not."
    )


@pytest.mark.task(2)
def test_pool_stays_bounded_while_pages_wait(learner, polls_db):
    # Task 2's: the connections are held by calls of get_question, which task 2 writes.
    minsize = random.randint(2, 3)
    maxsize = minsize + random.randint(1, 3)
    base = settled(polls_db)
    app = learner.serve(pool_config(polls_db, minsize, maxsize))
    wait_for_connections(polls_db, base + minsize)
    calls = 3 * maxsize  # more at once than the pool holds: they must wait their turn, not open more
    peak = peak_connections_while_held(learner, app, polls_db, calls, base + maxsize) - base
    assert peak <= maxsize, (
        f"expected at most maxsize={maxsize} connections while {calls} queries waited at once, PostgreSQL "
        f"showed {peak}. Hint: pool_size=postgres['maxsize'] and max_overflow=0 in make_engine."
    )


def peak_connections_while_held(
    learner, app, database: Database, calls: int, pool_size: int, hold: float = 1.5
) -> int:
    """The most connections of the app PostgreSQL shows while `calls` get_question calls run at once and the
    judge holds a lock on the question table, so none can finish and each keeps its connection.

    Counted after the burst, a pool that overflowed would look bounded: it closes its overflow
    connections as they come back. The lock is let go well within the pool's own timeout (DB_TIMEOUT).
    """
    (question_id,) = database.execute("SELECT pg_catalog.min(id) FROM public.question")[0]
    locker = judge_connect(database.server.dsn(database.name))
    outcome: list[object] = []
    try:
        with locker.cursor() as cursor:
            cursor.execute("LOCK TABLE public.question IN ACCESS EXCLUSIVE MODE")

        def run() -> None:
            try:
                outcome.append(learner.call("db:get_question", question_id, connection=app, times=calls))
            except LearnerRaised as exc:
                outcome.append(exc)

        burst = threading.Thread(target=run, daemon=True)
        burst.start()
        # Until the count has stood at the pool's size (every call waiting) for a moment, or `hold` is up. An
        # overflowing pool opens its extra connections at the same time as the others, not later.
        peak, deadline, settled_at = 0, time.monotonic() + hold, None
        while time.monotonic() < deadline:
            peak = max(peak, app_connections(database) - 1)  # the locker's own connection is not the app's
            if peak >= pool_size and settled_at is None:
                settled_at = time.monotonic()
            if settled_at is not None and time.monotonic() - settled_at > 0.3:
                break
            time.sleep(0.02)
    finally:
        locker.rollback()
        locker.close()
    burst.join(30)
    if outcome and isinstance(outcome[0], LearnerRaised):
        raised = outcome[0]
        todo = "TODO" in raised.message
        needs = " (write it first, then this check can judge the pool)" if todo else ""
        pytest.fail(
            f"this check holds connections of the pool with {calls} calls of your get_question at once"
            f"{needs}; they raised {raised.name}: {raised.message[:300]}",
            pytrace=False,
        )
    assert outcome and isinstance(outcome[0], list) and len(outcome[0]) == calls, (
        f"expected {calls} calls of get_question at once to come back once the lock was let go, got "
        f"{str(outcome)[:300] or 'nothing within 30 s'}"
    )
    return peak


@pytest.mark.task(1)
def test_engine_is_disposed_when_the_app_stops(learner, polls_db, make_config):
    base = settled(polls_db)
    app = learner.serve(make_config(polls_db))
    engine_of(learner, app)
    assert wait_for_connections(polls_db, base + 1) - base >= 1, (
        "expected the running app to hold a connection (minsize 1). Hint: check_database(engine, minsize)."
    )
    warnings = learner.stop(app)  # runs the app's cleanup, as Ctrl+C would; the process lives on
    left = wait_for_connections(polls_db, base, seconds=10.0) - base  # returns as soon as they are gone
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
    with app_database(pg_server, name) as database:
        try:
            app = learner.serve(valid_config(database))
        except pytest.fail.Exception as exc:
            pytest.fail(f"with the database named {name!r}: {exc.msg}\n{hint}", pytrace=False)
        engine_of(learner, app)
        count = wait_for_connections(database, 1)
        learner.stop(app)
    assert count == 1, (
        f"expected the app to connect to the database {name!r}, PostgreSQL shows {count}. {hint}"
    )


# --- task 3: the vote hands back its total -----------------------------------------------------------------


VOTES_AT_ONCE = 20
RETURNING_HINT = (
    "Hint: .returning(choice.c.votes) on the UPDATE, and `return result.scalar_one_or_none()` when it is "
    "not None: the total PostgreSQL wrote, not rowcount (always 1 here) or a count of your own."
)


def choice_with_votes(database: Database) -> tuple[int, int, int]:
    """(question id, choice id, votes) of a seeded choice whose count the judge first sets to a random number,
    so that a vote returning 1 (rowcount) or True cannot pass for the total."""
    question_id, choice_id = database.execute(
        "SELECT question_id, id FROM public.choice ORDER BY id LIMIT 1"
    )[0]
    votes = random.randint(10, 9000)
    database.execute(f"UPDATE public.choice SET votes = {votes} WHERE id = {int(choice_id)}")
    return question_id, choice_id, votes


@pytest.mark.task(3)
def test_vote_returns_the_new_total(learner, polls_app, polls_db):
    question_id, choice_id, before = choice_with_votes(polls_db)
    call = f"vote(conn, {question_id}, {choice_id}) on a choice with {before} votes"
    try:
        total = learner.call("db:vote", question_id, choice_id, connection=polls_app)
    except LearnerRaised as exc:
        pytest.fail(f"expected {call} to count the vote, it raised {exc.name}: {exc.message}", pytrace=False)
    (stored,) = polls_db.execute(f"SELECT votes FROM public.choice WHERE id = {int(choice_id)}")[0]
    assert stored == before + 1, f"expected {call} to leave {before + 1} votes, PostgreSQL holds {stored}"
    assert type(total) is int and total == stored, (
        f"expected {call} to return the new total, {stored}; it returned {total!r}. {RETURNING_HINT}"
    )


@pytest.mark.task(3)
def test_votes_at_once_each_return_their_own_total(learner, polls_app, polls_db):
    question_id, choice_id, before = choice_with_votes(polls_db)
    totals = learner.call_or_fail(
        "db:vote", question_id, choice_id, connection=polls_app, times=VOTES_AT_ONCE
    )
    expected = list(range(before + 1, before + VOTES_AT_ONCE + 1))
    assert sorted(t for t in totals if type(t) is int) == expected, (
        f"expected {VOTES_AT_ONCE} votes at once on a choice with {before} votes to return the totals "
        f"{before + 1} to {before + VOTES_AT_ONCE}, one each; they returned {sorted(totals, key=str)[:25]}. "
        + RETURNING_HINT
    )


# How many times this connection went through the choice table, sequentially or by one of its indexes: a
# statement that finds one row is one scan, whatever plan PostgreSQL chose for it. The count also holds
# earlier transactions' scans until PostgreSQL files them, which it never does inside a transaction: the
# vote's own are the count after it less the count before, both asked in the vote's transaction.
CHOICE_SCANS = (
    "SELECT pg_catalog.sum(pg_catalog.pg_stat_get_xact_numscans(oid))::int FROM pg_catalog.pg_class "
    "WHERE oid = 'public.choice'::regclass OR oid IN "
    "(SELECT indexrelid FROM pg_catalog.pg_index WHERE indrelid = 'public.choice'::regclass)"
)


@pytest.mark.task(3)
def test_vote_is_one_statement(learner, polls_app, polls_db):
    question_id, choice_id, _ = choice_with_votes(polls_db)
    call = f"vote(conn, {question_id}, {choice_id})"
    try:
        got = learner.call("db:vote", question_id, choice_id, connection=polls_app, probe=CHOICE_SCANS)
    except LearnerRaised as exc:
        pytest.fail(f"expected {call} to count the vote, it raised {exc.name}: {exc.message}", pytrace=False)
    scans = None
    with contextlib.suppress(TypeError, LookupError):
        (((before,),), ((after,),)) = got["probe"]
        scans = after - before
    assert scans == 1, (
        f"expected {call} to reach the choice table once, with the one UPDATE ... RETURNING that finds the "
        f"row, counts the vote and hands back the total; PostgreSQL counted {scans} scans of the table in "
        "its transaction (a statement that finds a row is one): a second query reads what the UPDATE "
        "could have returned. Hint: .returning(choice.c.votes) on the UPDATE, and "
        "result.scalar_one_or_none() for the total, with no SELECT before or after it."
    )


IMPOSSIBLE = 2**31  # one more than PostgreSQL's integer holds: asyncpg refuses it as a parameter
POSSIBLE_ID_HINT = (
    "Hint: asyncpg sends ids as typed integer parameters and raises on one beyond 2147483647, where "
    "psycopg2 found no row: ask possible_id(...) first and raise RecordNotFound when it says no."
)


@pytest.mark.task(2)
def test_get_question_of_an_impossible_id_is_not_found(learner, polls_app):
    try:
        got = learner.call("db:get_question", IMPOSSIBLE, connection=polls_app)
    except LearnerRaised as exc:
        assert exc.name == "RecordNotFound", (
            f"expected get_question(conn, {IMPOSSIBLE}) to raise RecordNotFound, it raised {exc.name}: "
            f"{exc.message[:300]}. {POSSIBLE_ID_HINT}"
        )
        return
    pytest.fail(f"expected get_question(conn, {IMPOSSIBLE}) to raise RecordNotFound, it returned {got!r}",
                pytrace=False)  # fmt: skip


RENAMED = "renamed_by_the_judge"


@contextlib.contextmanager
def question_table_broken(database: Database) -> Iterator[None]:
    """The question table's question_text column renamed for the block: every query of the table fails,
    although the polls are all there."""
    database.execute(f"ALTER TABLE public.question RENAME COLUMN question_text TO {RENAMED}")
    try:
        yield
    finally:  # waits for no lock a connection kept in a transaction holds: see Database.execute
        database.execute(f"ALTER TABLE public.question RENAME COLUMN {RENAMED} TO question_text")


@pytest.mark.task(2)
def test_a_broken_question_table_is_not_a_missing_poll(learner, polls_app, polls_db):
    (question_id,) = polls_db.execute("SELECT pg_catalog.min(id) FROM public.question")[0]
    learner.call_or_fail("db:get_question", question_id, connection=polls_app)  # first, with nothing broken
    raised = None
    with question_table_broken(polls_db):
        try:
            learner.call("db:get_question", question_id, connection=polls_app)
        except LearnerRaised as exc:
            raised = exc
    assert raised is None or raised.name != "RecordNotFound", (
        f"with the column question_text of the question table renamed by the judge (the database is broken, "
        f"poll {question_id} is there), expected get_question(conn, {question_id}) to let the database's "
        f"error through (a server error), it raised RecordNotFound: {raised.message[:300] if raised else ''}"
        ", which the view turns into a 404 that blames the visitor. Hint: raise RecordNotFound only when "
        "possible_id(...) says no (before any query) or no row came back; never catch the driver's errors "
        "(DBAPIError) to make one."
    )


def collect_garbage(learner) -> None:
    """Have the learner's process run its garbage collector now: the harness does whenever it is asked to
    stop an app, and no app has the id 0. A connection an earlier check left behind is then found, and
    logged, before this check starts reading the log."""
    learner.stop(ServedApp(0, 0))


@pytest.mark.task(2)
@pytest.mark.parametrize("page", ["/", "/poll/{id}", "/poll/{id}/results"])
async def test_a_page_that_fails_gives_its_connection_back(learner, polls_app, polls_db, page):
    (question_id,) = polls_db.execute("SELECT pg_catalog.min(id) FROM public.question")[0]
    path = page.format(id=question_id)
    async with http_session(polls_app.url) as client:
        learner.blocking_calls()  # forget what came before this request
        async with client.get(path) as response:
            working = response.status
        assert working == 200, (
            f"expected GET {path} to answer 200 before the judge breaks the question table, got {working}. "
            "Hint: make the page work first."
        )
        slept = learner.blocking_calls()
        assert not slept, (
            f"GET {path} called {slept[0]} on the event loop: while it waits no other visitor is served, "
            "as in step 5. Hint: no blocking call in a view; await asyncio.sleep(...) if it must wait."
        )
        collect_garbage(learner)
        start = learner.log_size()
        with question_table_broken(polls_db):
            async with client.get(path) as response:
                broken = response.status
            assert broken >= 500, (
                f"with the question table broken by the judge (a column renamed), expected GET {path} to "
                f"fail as a server error, got {broken}. Hint: the page reads the polls from that table."
            )
            await assert_connections_given_back(learner, polls_app, "GET", path)
    # A connection never given back may also be found by Python's garbage collector, which closes it with
    # a warning instead, at a moment of its own: collected now, any such warning is in the log.
    collect_garbage(learner)
    found = [line for line in learner.log_text(start).splitlines() if "non-checked-in connection" in line]
    assert not found, (
        f"with the question table broken by the judge (a column renamed), GET {path} failed as it should, "
        "but the connection it borrowed was never given back to the pool: Python's garbage collector found "
        f"it later and closed it: {found[0][:300]}. A view that closes its connection itself, after the "
        "query, skips that when the query raises. Hint: borrow it with `async with engine.connect() as "
        "conn:`, which gives it back however the block ends."
    )


@pytest.mark.task(3)
@pytest.mark.parametrize("which", ["question", "choice"])
def test_vote_for_an_impossible_id_is_not_found(learner, polls_app, polls_db, which):
    question_id, choice_id = polls_db.execute(
        "SELECT question_id, id FROM public.choice ORDER BY id LIMIT 1"
    )[0]
    args = (IMPOSSIBLE, choice_id) if which == "question" else (question_id, IMPOSSIBLE)
    try:
        got = learner.call("db:vote", *args, connection=polls_app)
    except LearnerRaised as exc:
        assert exc.name == "RecordNotFound", (
            f"expected vote(conn, {args[0]}, {args[1]}) (an impossible {which} id) to raise RecordNotFound, "
            f"it raised {exc.name}: {exc.message[:300]}. {POSSIBLE_ID_HINT}"
        )
        return
    pytest.fail(f"expected vote(conn, {args[0]}, {args[1]}) to raise RecordNotFound, it returned {got!r}",
                pytrace=False)  # fmt: skip


@pytest.mark.task(3)
async def test_voting_in_an_impossible_poll_is_404(polls_client, polls_db):
    (choice_id,) = polls_db.execute("SELECT pg_catalog.min(id) FROM public.choice")[0]
    path = f"/poll/{IMPOSSIBLE}/vote"
    async with polls_client.post(path, data={"choice": str(choice_id)}, allow_redirects=False) as response:
        status = response.status
    assert status == 404, (
        f"expected POST {path} (choice={choice_id}) to answer 404, got {status}. {POSSIBLE_ID_HINT}"
    )


# --- task 4: a clear stop when PostgreSQL is out of reach ---------------------------------------------------


@pytest.fixture(scope="module")
def startups_folder(tmp_path_factory) -> Path:
    """Where the starts' configurations are written (launch_startups names each NAME.yaml)."""
    return tmp_path_factory.mktemp("step10")


@pytest.fixture(scope="module")
def launched(request: pytest.FixtureRequest, pg_server, startups_folder) -> Iterator[Launched]:
    """Step 5's starts that must end by themselves, launched together when the first check needs them."""
    with contextlib.ExitStack() as stack:
        yield launch_startups(step_run(request.config).tree, pg_server, startups_folder, stack)


@pytest.fixture
def startups(launched) -> dict[str, Startup]:
    return launched[0]


HINTS = {
    "serving_hint": "Hint: pg_context must call check_database(engine, minsize) before its `yield` (task 1); "
    "SQLAlchemy alone connects only on first use.",
    "hanging_hint": "Hint: connect_args={{'timeout': DB_TIMEOUT, ...}} in make_engine, not a number of your "
    "own (asyncpg waits 60 s by default); this check sets db.DB_TIMEOUT to {timeout} s: read it as the app "
    "starts.",
}
FAILURE_HINTS = {
    "traceback_hint": "Hint: check_database raises DatabaseUnavailable from what open_connections raised, "
    "and main() catches DatabaseUnavailable around web.run_app.",
    "lines_hint": "Hint: first_line(exc) keeps the first line of the driver's message.",
}


def check_clear_stop(startup: Startup, seconds: float = GIVE_UP, where: str = "") -> None:
    status, output = ended(startup, seconds, **HINTS)
    check_clear_failure(status, output, startup.database, where, **FAILURE_HINTS)


@pytest.mark.task(4)
def test_closed_port_stops_the_app_with_a_clear_message(startups):
    check_clear_stop(startups["closed"])


@pytest.mark.task(4)
def test_missing_database_stops_the_app_with_a_clear_message(startups):
    check_clear_stop(startups["missing"])


@pytest.mark.task(4)
def test_silent_server_does_not_hang_the_app(launched):
    # DB_TIMEOUT waited, no less, no more (see step 5's launch_startups); started with its stdout thrown
    # away (as in step 5): the message must go to stderr.
    startups, servers = launched
    status, output = check_waits_db_timeout(startups, servers, HINTS["hanging_hint"])
    check_clear_failure(status, output, startups["silent"].database, " on stderr", **FAILURE_HINTS)


# What the line must say besides the database, start by start: the driver's reason (a closed port over TCP,
# or a socket folder without the server's socket file), or, for a silence that raised an error without
# text, that no answer came.
REASONS = {
    "closed": ("refused", "connect call failed", "no such file"),
    "missing": ("does not exist",),
    "silent": ("no answer", "timeout", "timed out"),
}


@pytest.mark.task(4)
@pytest.mark.parametrize("which", sorted(REASONS))
def test_the_line_says_where_and_why(startups, startups_folder, which):
    _, output = ended(startups[which], SILENT_GIVE_UP if which == "silent" else GIVE_UP, **HINTS)
    postgres = yaml.safe_load((startups_folder / f"{which}.yaml").read_text())["postgres"]
    line = " ".join(output.split())
    where = [str(postgres["host"]), str(postgres["port"])]
    assert all(part in line for part in where), (
        f"expected the one line of an app whose PostgreSQL is out of reach ({which}) to name the host and "
        f"port it tried, {':'.join(where)}, got: {line[-600:]!r}. Hint: print the host and port of "
        "config['postgres'] in main(), as in step 5."
    )
    assert any(reason in line.lower() for reason in REASONS[which]), (
        f"expected the one line of an app whose PostgreSQL is out of reach ({which}) to give the reason, "
        f"saying {' or '.join(repr(reason) for reason in REASONS[which])}, got: {line[-600:]!r}. Hint: "
        "DatabaseUnavailable(first_line(exc) or f\"no answer in {DB_TIMEOUT:g}s\") in check_database: the "
        "driver's own first line, and words of yours only when it has none."
    )
    said = re.search(r"no answer in ([0-9.]+) ?s", line)
    waited = re.search(rf"(?<![0-9.]){re.escape(f'{SILENT_TIMEOUT:g}')} ?s", line)
    assert which != "silent" or said or waited, (
        f"expected the one line of an app whose PostgreSQL never answers ({which}) to say how long it "
        f"waited, {SILENT_TIMEOUT:g}s (db.DB_TIMEOUT in this check), got: {line[-400:]!r}. Hint: a timeout "
        "has no text of its own, so the reason is yours: f\"no answer in {DB_TIMEOUT:g}s\"."
    )
    assert not said or float(said.group(1)) == SILENT_TIMEOUT, (
        f"expected the one line of an app whose PostgreSQL never answers ({which}) to say how long it "
        f"waited, db.DB_TIMEOUT = {SILENT_TIMEOUT:g} s in this check, it says {said.group(0)!r}: "
        f"{line[-300:]!r}. "
        "Hint: f\"no answer in {DB_TIMEOUT:g}s\", read from DB_TIMEOUT when the error comes, not a number "
        "written in the text."
    )


@pytest.mark.task(4)
def test_a_bug_at_startup_is_not_blamed_on_the_database(learner, polls_db, make_config):
    # A timeout that is text, not a number: asyncpg fails on it before it sends a byte. That is the app's own
    # bug, and the database is right there; calling it "cannot connect" sends the learner to the wrong place.
    learner.patch("db:DB_TIMEOUT", "soon")
    try:
        app = learner.serve(make_config(polls_db))
    except pytest.fail.Exception as exc:
        failure = str(exc)
    else:
        learner.stop(app)
        return  # this make_engine does not read DB_TIMEOUT: the silent server's check says so
    assert "raised DatabaseUnavailable" not in failure, (
        "with db.DB_TIMEOUT set to the text 'soon' (a bug of the app's own; PostgreSQL is reachable), "
        f"expected the app's start to fail with that bug's own error, got DatabaseUnavailable: "
        f"{failure[:600]}\nHint: in check_database, catch only what says PostgreSQL is out of reach "
        "(OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, DBAPIError), never "
        "Exception."
    )


@pytest.mark.task(4)
def test_a_pool_too_small_is_not_blamed_on_the_database(learner, polls_db):
    # minsize above maxsize (a pool too small for the start the app asks of it; PostgreSQL is reachable):
    # open_connections waits POOL_TIMEOUT (lowered here) for a connection the pool never lends, and SQLAlchemy
    # raises its own TimeoutError, a subclass of SQLAlchemyError but not of DBAPIError.
    maxsize = random.randint(1, 3)
    # An engine that ignores POOL_TIMEOUT would have the start below wait its own timeout (SQLAlchemy's is
    # 30 s): task 1's check says so, this one leaves it.
    waits = pool_timeout_with(learner, polls_db, 0.2)
    if waits is not None and waits != 0.2:
        return
    try:
        app = learner.serve(pool_config(polls_db, maxsize + 1, maxsize))
    except pytest.fail.Exception as exc:
        failure = str(exc)
    else:
        learner.stop(app)
        return  # a start that does not open minsize connections: task 1's checks say so
    assert "raised DatabaseUnavailable" not in failure, (
        f"with minsize {maxsize + 1} and a pool of {maxsize} (maxsize; PostgreSQL is reachable), the pool "
        "has no connection left to lend and SQLAlchemy raises its own sqlalchemy.exc.TimeoutError once "
        "POOL_TIMEOUT has passed: the app's pool, no news about the database. Expected the app's start to "
        f"fail with that error, got DatabaseUnavailable: {failure[:600]}\nHint: catch SQLAlchemy's "
        "DBAPIError in check_database (the driver's errors, wrapped), not its base class SQLAlchemyError, "
        "which covers the pool's own errors too."
    )


class HangUpServer:
    """A PostgreSQL port that lets every client log in (no password asked), then hangs up on the first
    statement it sends: a connection lost on the way. asyncpg itself connects; what fails is SQLAlchemy's
    first use of the new connection, so the error comes wrapped in SQLAlchemy's DBAPIError.

    With `kerberos`, it asks instead for a Kerberos login, which asyncpg cannot do: asyncpg raises its
    InterfaceError while connecting, where SQLAlchemy does not wrap it."""

    SSL_REQUEST, GSS_REQUEST = 80877103, 80877104
    PARAMETERS: ClassVar[dict[str, str]] = {
        "server_version": "16.0", "server_encoding": "UTF8", "client_encoding": "UTF8",
        "standard_conforming_strings": "on", "integer_datetimes": "on", "DateStyle": "ISO, MDY",
    }  # fmt: skip

    KERBEROS_V5 = 2  # the code of AuthenticationKerberosV5, a login method asyncpg does not support

    def __init__(self, kerberos: bool = False) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.1)
        self.logins = 0
        self.kerberos = kerberos
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> HangUpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]

    @staticmethod
    def message(kind: bytes, body: bytes = b"") -> bytes:
        return kind + struct.pack("!i", len(body) + 4) + body

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            with client, contextlib.suppress(OSError, struct.error):
                client.settimeout(2.0)  # a client that stops talking is hung up on too
                self._log_in_then_hang_up(client)

    def _read(self, client: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = client.recv(size - len(data))
            if not chunk:
                raise OSError("the client hung up")
            data += chunk
        return data

    def _log_in_then_hang_up(self, client: socket.socket) -> None:
        while True:  # the startup message, after any requests for encryption (refused: b"N")
            (length,) = struct.unpack("!i", self._read(client, 4))
            body = self._read(client, length - 4)
            if struct.unpack("!i", body[:4])[0] not in (self.SSL_REQUEST, self.GSS_REQUEST):
                break
            client.sendall(b"N")
        if self.kerberos:
            client.sendall(self.message(b"R", struct.pack("!i", self.KERBEROS_V5)))
            client.recv(4096)  # nothing comes: asyncpg gives up; the connection closes
            return
        parameters = b"".join(self.message(b"S", f"{key}\0{value}\0".encode())
                              for key, value in self.PARAMETERS.items())  # fmt: skip
        client.sendall(self.message(b"R", struct.pack("!i", 0)) + parameters
                       + self.message(b"K", struct.pack("!ii", 1, 1)) + self.message(b"Z", b"I"))  # fmt: skip
        self.logins += 1
        client.recv(4096)  # the first statement; the connection closes unanswered


def failure_to_start(learner, config: dict, where: str, what: str) -> str:
    """How the app's start failed against the judge's server at `where`, which `what`, as its message."""
    return str(start_failure(learner, config, where, what))


def start_failure(learner, config: dict, where: str, what: str) -> BaseException:
    """The failure that stopped the app's start against the judge's server at `where`, which `what`; a
    failure of the check if the app started serving instead."""
    try:
        app = learner.serve(config)
    except pytest.fail.Exception as exc:
        return exc
    learner.stop(app)
    pytest.fail(
        f"the judge's server at {where} {what}; expected the app's start to fail, it started serving. "
        "Hint: use config['postgres']['host'] and ['port'] (task 1).",
        pytrace=False,
    )


@pytest.mark.task(4)
def test_a_connection_lost_on_the_way_is_out_of_reach_too(learner, polls_db, make_config):
    config = make_config(polls_db)
    with HangUpServer() as server:
        config["postgres"].update(host="127.0.0.1", port=server.port)
        where = f"127.0.0.1:{server.port}"
        hangs_up = "lets the app log in, then hangs up on its first statement"
        stopped = start_failure(learner, config, where, hangs_up)
        failure = str(stopped)
        # The message as the learner's code made it: learner.serve's failure, raised while handling the
        # learner's error (its __context__), shows it without SQLAlchemy's trailing lines.
        raised = stopped.__context__ if isinstance(stopped.__context__, LearnerRaised) else None
        logins = server.logins
    assert "raised DatabaseUnavailable" in failure, (
        f"the judge's server at {where} let the app log in{'' if logins else ' (it never did)'}, then hung "
        "up on its first statement: a connection lost on the way, which SQLAlchemy reports as its "
        f"DBAPIError. Expected check_database to raise DatabaseUnavailable for it, got: {failure[:600]}\n"
        "Hint: catch SQLAlchemy's DBAPIError in check_database too, with the other four task 4 lists "
        "(OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)."
    )
    if raised is not None:
        reason = raised.message.strip()
    else:  # not expected; the first line of what the failure shows
        reason = failure.split("raised DatabaseUnavailable:", 1)[1].strip().splitlines()[0]
    extra = [part for part in ("[SQL:", "Background on this error") if part in reason]
    carries = f" and carries SQLAlchemy's later lines ({extra[0]!r})" if extra else ""
    assert not extra and "\n" not in reason, (
        f"the judge's server at {where} hung up on the app's first statement; expected DatabaseUnavailable's "
        f"reason to be one line, the first line of the driver's message, it is {len(reason.splitlines())} "
        f"lines{carries}: {reason[:400]!r}. main() prints it on its one line. Hint: "
        "DatabaseUnavailable(first_line(exc) or ...), not str(exc): first_line keeps the first "
        "line of the driver's own error (exc.orig), without SQLAlchemy's [SQL: ...] and Background lines."
    )
    wrapper = re.match(r"\(sqlalchemy\.[\w.]+\)", reason)
    assert not wrapper, (
        f"the judge's server at {where} hung up on the app's first statement; expected DatabaseUnavailable's "
        f"reason to be the driver's own message, it starts with SQLAlchemy's wrapping of it, "
        f"{wrapper.group(0)!r}: {reason[:400]!r}. Hint: DatabaseUnavailable(first_line(exc) or ...), not "
        "the first line of str(exc): first_line reads the driver's error (exc.orig), where str(exc) of a "
        "DBAPIError starts with SQLAlchemy's class names."
    )


@pytest.mark.task(4)
def test_a_login_the_driver_cannot_do_is_out_of_reach_too(learner, polls_db, make_config):
    config = make_config(polls_db)
    with HangUpServer(kerberos=True) as server:
        config["postgres"].update(host="127.0.0.1", port=server.port)
        where = f"127.0.0.1:{server.port}"
        failure = failure_to_start(learner, config, where, "asks for a Kerberos login")
    assert "raised DatabaseUnavailable" in failure, (
        f"the judge's server at {where} asks every client for a Kerberos login, which asyncpg cannot do: "
        "asyncpg raises its InterfaceError while connecting, and SQLAlchemy hands it on unwrapped. Expected "
        f"check_database to raise DatabaseUnavailable for it, got: {failure[:600]}\nHint: catch "
        "asyncpg.InterfaceError in check_database too, with the others task 4 lists (OSError, "
        "asyncio.TimeoutError, asyncpg.PostgresError, DBAPIError)."
    )


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
    assert runs[0] == runs[1], (
        "expected a second run of init_db to rebuild exactly the same rows, found others: "
        f"{runs[0]} then {runs[1]}"
    )


@pytest.mark.task(5)
def test_init_db_reports_an_unreachable_database(tree, pg_database, tmp_path):
    config = valid_config(pg_database)
    config["postgres"].update(host="127.0.0.1", port=pg_database.closed_port())  # nothing answers there
    status, output = init_db(tree, config, tmp_path, "unreachable")
    lines = [line for line in output.splitlines() if line.strip()]
    assert status == 1 and "Traceback" not in output and len(lines) == 1, (
        f"expected init_db to stop with exit status 1 and one line when PostgreSQL cannot be reached, got "
        f"status {status}:\n{output.strip()[-1200:]}\nHint: rebuild() calls check_database(engine, 1) first, "
        "and main() catches DatabaseUnavailable around asyncio.run(...)."
    )


# Runs in the learner's process: the learner's init_db.main(), with create_tables wrapped so that once the
# learner's tables exist, the judge's statements run (in a transaction of their own) before sample_data.
INIT_DB_AFTER_TABLES = """
from sqlalchemy import text
from aiohttpdemo_polls import init_db
learners_create_tables = init_db.create_tables
async def create_tables(engine):
    await learners_create_tables(engine)
    async with engine.begin() as conn:
        for statement in {statements!r}:
            await conn.execute(text(statement))
init_db.create_tables = create_tables
init_db.main(["--config", {path!r}])
"""


def init_db_after_tables(tree: Path, database: Database, folder: Path, statements: list[str]) -> Finished:
    """The learner's init_db run on an empty schema, with the judge's statements run once its tables exist."""
    database.empty_schema()
    path = folder / "polls.yaml"
    path.write_text(yaml.safe_dump(valid_config(database)))
    return finish(Command(tree, "-c", INIT_DB_AFTER_TABLES.format(statements=statements, path=str(path))))


SAMPLE_IDS_HINT = (
    "Hint: insert each question with .returning(question.c.id), read it with result.scalar_one(), and give "
    "its choices that id, not the one you expect it to get."
)
JUDGE_ROW_ABOVE = 1000  # the judge's own poll: this far above where the sequence starts
JUDGE_TEXT = "What's new?"  # ... with the text of the first sample question (SAMPLE_POLLS, given)
JUDGE_SQL = "'" + JUDGE_TEXT.replace("'", "''") + "'"


@pytest.mark.task(5)
def test_sample_choices_follow_the_ids_postgres_hands_out(tree, pg_database, tmp_path):
    # The ids start after `start`, as in a database that has seen other rows, and a poll of the judge's sits
    # above them with an id of its own, as one inserted by hand (or by someone else at that moment) can:
    # neither the ids you expect nor SELECT max(id) are the id your insert got. It has the text of the first
    # sample question, so a SELECT by text finds two. The choice ids too start after a number of the judge's.
    start, choice_start = random.randint(100, 900), random.randint(100, 900)
    judge_row = start + JUDGE_ROW_ABOVE
    finished = init_db_after_tables(tree, pg_database, tmp_path, [
        f"SELECT setval(pg_get_serial_sequence('question', 'id'), {start})",
        f"SELECT setval(pg_get_serial_sequence('choice', 'id'), {choice_start})",
        f"INSERT INTO question (id, question_text, pub_date) VALUES ({judge_row}, {JUDGE_SQL}, '2000-01-01')",
    ])  # fmt: skip
    if finished.status != 0:
        stray_ids = "foreign key" in finished.output.lower()
        by_text = "multipleresultsfound" in finished.output.lower()
        pytest.fail(
            f"expected init_db to succeed with the question ids starting after {start}, it exited with "
            f"{finished.status}: {why_it_ended(finished.output)}\n"
            + (f"PostgreSQL refused a choice whose question does not exist. {SAMPLE_IDS_HINT}" if stray_ids
               else f"The judge's own poll has the text of a sample question, {JUDGE_TEXT!r}: a SELECT by "
               f"text finds it too. {SAMPLE_IDS_HINT}" if by_text
               else "Hint: create_tables is an `async def` that takes the engine."),
            pytrace=False,
        )  # fmt: skip
    questions, choices = table_rows(pg_database)
    own_ids = sorted(row[0] for row in choices if row[0] <= choice_start)
    assert not own_ids, (
        f"the judge set the choice table's sequence to {choice_start} before sample_data ran; expected the "
        f"sample choices to get their ids from it (above {choice_start}), these ids are not: {own_ids[:6]}. "
        "An id of your own leaves the sequence behind, so the next choice inserted without one collides with "
        "it. Hint: give a choice no id; PostgreSQL numbers it."
    )
    question_ids = {row[0] for row in questions}
    strays = [row for row in choices if row[3] not in question_ids]
    assert questions and choices and not strays, (
        f"expected every sample choice to belong to a sample question; the questions got the ids "
        f"{sorted(question_ids)}, and these choices name others: {strays[:5]}. " + SAMPLE_IDS_HINT
    )
    taken = [row for row in choices if row[3] == judge_row]
    # Some choices still reached a sample question: only the question sharing the judge's text lost its own,
    # as a SELECT by text does; max(id) sends every choice to the judge's poll.
    by_text = any(row[3] != judge_row for row in choices)
    why = (f"The judge's poll has the text of the first sample question, {JUDGE_TEXT!r}: a SELECT by that "
           "text found it, not the question you had just inserted; two polls may share a text." if by_text
           else "The newest question is not the one with the largest id.")  # fmt: skip
    assert not taken, (
        f"the judge put a poll of its own in the question table before sample_data ran, with the id "
        f"{judge_row}, above the ids the sequence hands out (from {start + 1}); expected the sample choices "
        f"to go to the sample questions {sorted(question_ids - {judge_row})}, these went to the judge's: "
        f"{taken[:5]}. {why} " + SAMPLE_IDS_HINT
    )


# Refuses a second row in the question table, so sample_data fails after its first question is in.
REFUSE_A_SECOND_QUESTION = [
    "CREATE FUNCTION refuse_a_second_question() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF EXISTS (SELECT 1 FROM question) THEN RAISE EXCEPTION 'the judge refuses a second question'; "
    "END IF; RETURN NEW; END $$",
    "CREATE TRIGGER refuse_a_second_question BEFORE INSERT ON question FOR EACH ROW "
    "EXECUTE FUNCTION refuse_a_second_question()",
]
# Refuses a second row in the choice table, so sample_data fails after its first choice is in (whether the
# questions went in before it in the same transaction or in one of their own).
REFUSE_A_SECOND_CHOICE = [
    "CREATE FUNCTION refuse_a_second_choice() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF EXISTS (SELECT 1 FROM choice) THEN RAISE EXCEPTION 'the judge refuses a second choice'; "
    "END IF; RETURN NEW; END $$",
    "CREATE TRIGGER refuse_a_second_choice BEFORE INSERT ON choice FOR EACH ROW "
    "EXECUTE FUNCTION refuse_a_second_choice()",
]
REFUSALS = {"question": REFUSE_A_SECOND_QUESTION, "choice": REFUSE_A_SECOND_CHOICE}


# Runs in the learner's process: the learner's create_tables, on tables that hold rows, with create_all made
# to fail once it has created every table (as a lost connection would). In one transaction the drop is rolled
# back with it and the old tables stay (step 4's check, on the asyncio engine).
CREATE_FAILS = """
import asyncio
from sqlalchemy import event
from aiohttpdemo_polls import db, init_db
from aiohttpdemo_polls.settings import load_config
class JudgeStop(Exception):
    pass
def stop(target, connection, **kw):
    raise JudgeStop("the judge makes create_all fail here")
event.listen(db.meta, "after_create", stop)
async def main():
    engine = init_db.make_engine(load_config({path!r})["postgres"])
    try:
        await init_db.create_tables(engine)
        print("JUDGE: create_tables returned without calling meta.create_all")
    except JudgeStop:
        pass
    finally:
        await engine.dispose()
asyncio.run(main())
"""


@pytest.mark.task(5)
def test_create_tables_drops_and_creates_in_one_transaction(tree, pg_database, tmp_path):
    """A failure while creating must leave the old tables: drop and create commit together or not at all."""
    built = init_db_after_tables(tree, pg_database, tmp_path, [])
    if built.status != 0:
        why = why_it_ended(built.output)
        pytest.fail(f"expected init_db to succeed, it exited with {built.status}: {why}", pytrace=False)
    before = table_rows(pg_database)
    failed = finish(Command(tree, "-c", CREATE_FAILS.format(path=str(tmp_path / "polls.yaml"))))
    if "without calling meta.create_all" in failed.output:
        pytest.fail("expected create_tables to build the tables with conn.run_sync(meta.create_all), it "
                    "returned without calling it", pytrace=False)  # fmt: skip
    left = sorted(tables(pg_database) & {"question", "choice"})
    after = table_rows(pg_database) if len(left) == 2 else None
    assert after == before, (
        "the judge made meta.create_all fail once it had created the tables (as a lost connection would), "
        "while create_tables rebuilt tables that held rows: expected the drop to be rolled back with it and "
        f"the old rows to stay, found {f'the tables {left}' if left else 'no tables'}"
        f"{' with other rows' if after is not None else ''}; it printed: {why_it_ended(failed.output)}. "
        "Hint: drop and create in one transaction: both conn.run_sync calls inside one "
        "`async with engine.begin() as conn:`, never in two blocks."
    )


# Runs in the learner's process: a table added to the learner's meta later (as a next step would), given a
# row, then create_tables once more. run_sync(meta.drop_all) drops every table on meta, so the row goes; a
# DROP TABLE of one's own names only question and choice, and create_all skips a table that exists.
TABLE_ADDED_LATER = """
import asyncio
from sqlalchemy import Column, Integer, String, Table, func, insert, select, text
from aiohttpdemo_polls import db, init_db
from aiohttpdemo_polls.settings import load_config
added = Table({table!r}, db.meta, Column("id", Integer, primary_key=True), Column("word", String(20)))
async def main():
    engine = init_db.make_engine(load_config({path!r})["postgres"])
    try:
        await init_db.create_tables(engine)
        async with engine.begin() as conn:
            await conn.execute(insert(added).values(word="stale"))
            await conn.execute(text("CREATE TABLE {outside} (id integer)"))
        await init_db.create_tables(engine)
        async with engine.begin() as conn:
            print("JUDGE ROWS", (await conn.execute(select(func.count()).select_from(added))).scalar_one())
            kept = (await conn.execute(text("SELECT to_regclass('public.{outside}')"))).scalar_one()
            print("JUDGE OUTSIDE", "kept" if kept else "dropped")
    finally:
        await engine.dispose()
asyncio.run(main())
"""


@pytest.mark.task(5)
def test_create_tables_drops_every_table_on_meta(tree, pg_database, tmp_path):
    pg_database.empty_schema()
    path = tmp_path / "polls.yaml"
    path.write_text(yaml.safe_dump(valid_config(pg_database)))
    table = f"judge_added_{random.randint(1000, 9999)}"
    outside = f"judge_outside_{random.randint(1000, 9999)}"
    try:
        finished = finish(Command(tree, "-c", TABLE_ADDED_LATER.format(table=table, outside=outside,
                                                                       path=str(path))))  # fmt: skip
    finally:
        pg_database.execute(f"DROP TABLE IF EXISTS public.{table}")
        pg_database.execute(f"DROP TABLE IF EXISTS public.{outside}")
    assert "JUDGE ROWS 0" in finished.output, (
        f"the judge added a table {table} to db.meta, gave it a row and called create_tables again: expected "
        f"the table dropped and created afresh (0 rows), but {finished.ended}: "
        f"{why_it_ended(finished.output)}\nHint: await conn.run_sync(meta.drop_all) drops every table on "
        "meta, the ones a later step adds too; a DROP TABLE of your own names only today's tables."
    )
    assert "JUDGE OUTSIDE kept" in finished.output, (
        f"the judge created a table {outside} that is not on db.meta (as another program sharing the "
        f"database would) and called create_tables: expected it left alone, create_tables dropped it. "
        "Hint: await conn.run_sync(meta.drop_all) drops the tables on meta and only those; reflecting the "
        "database and dropping all it holds destroys what is not the app's."
    )


@pytest.mark.task(5)
@pytest.mark.parametrize("refused", sorted(REFUSALS, reverse=True))
def test_sample_data_fails_as_a_whole(tree, pg_database, tmp_path, refused):
    finished = init_db_after_tables(tree, pg_database, tmp_path, REFUSALS[refused])
    if f"the judge refuses a second {refused}" not in finished.output:
        pytest.fail(
            f"the judge made PostgreSQL refuse the second sample {refused} (a trigger); expected init_db to "
            f"get that far, it exited with {finished.status}: {why_it_ended(finished.output)}\nHint: "
            "create_tables first (task 5), then sample_data inserts the sample polls.",
            pytrace=False,
        )
    questions, choices = table_rows(pg_database)
    assert not questions and not choices, (
        f"the judge made PostgreSQL refuse the second sample {refused} (a trigger), once the first was "
        f"inserted; expected init_db to leave no sample poll behind (one transaction: all of them or none), "
        f"it exited with {finished.status} and left {len(questions)} question(s) and {len(choices)} "
        f"choice(s): {questions[:3]}. Hint: one `async with engine.begin() as conn:` around the whole loop "
        "in sample_data, questions and choices alike, not one per question nor one for the questions and "
        "another for the choices."
    )
