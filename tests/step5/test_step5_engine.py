"""Step 5: one aiopg engine per app, opened at startup and closed at cleanup; the index reads PostgreSQL.

The learner's apps run in the harness process; the judge counts their connections in pg_stat_activity
(at startup, while two apps run, and after an app's cleanup, before the process exits) and reads the
index over HTTP. Task 3 starts the learner's own `python -m aiohttpdemo_polls` against databases that
cannot be reached; those commands start together when the module does, so none waits for another.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import yaml
from psycopg2 import sql

from tests.conftest import Database, app_database, http_session, step_run, valid_config, why_it_ended
from tests.held_query import PROBE_SECONDS, Held, answers_meanwhile, client_backends, held_in_postgres
from workbook.judge.learner_process import Command
from workbook.pg import free_port

ENGINE = "aiopg.sa.engine.Engine"
APP_KEY = "aiohttp.helpers.AppKey"
SILENT_TIMEOUT = 0.5  # the judge's db.DB_TIMEOUT for the silent server: no one waits 5 s for a verdict
PATIENT_TIMEOUT = 300.0  # db.DB_TIMEOUT for a second silent server, which the judge hangs up on first
PLANTED_BUG = f'relation "judge_planted_{random.randint(1000, 9999)}" does not exist'
GIVE_UP = 8.0  # how long a startup that should fail may take before the judge calls it hung
SILENT_GIVE_UP = 4.0  # with DB_TIMEOUT lowered to SILENT_TIMEOUT, once the check runs
CONNECT_WAIT = 10.0  # how long the judge waits for the patient start to reach its silent server

# The learner's `python -m aiohttpdemo_polls --config FILE`, with db.DB_TIMEOUT lowered first (the lesson
# says the suite does this) and stdout thrown away, so only what the app prints to stderr is kept.
RUN_WITH_SHORT_TIMEOUT = """
import os, runpy, sys
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
import aiohttpdemo_polls.db
aiohttpdemo_polls.db.DB_TIMEOUT = {timeout!r}
sys.argv = ["aiohttpdemo_polls", "--config", {path!r}]
runpy.run_module("aiohttpdemo_polls", run_name="__main__", alter_sys=True)
"""

# The learner's `python -m aiohttpdemo_polls --config FILE`, noting each call of `{module}.{name}` as a line
# of its own on stderr (`mark`; taken_marks takes those lines out of the output the checks then read). Not a
# file: when graded, the learner's process may write nowhere the judge reads. aiopg.sa.create_engine: an app
# that retries a refused connection makes more than one; aiohttp.web.run_app: an app that tries another port
# once its own is taken makes two, whether or not that other port happens to be free on the machine.
TRY_MARK = "WORKBOOK-CREATE-ENGINE-CALLED"
SERVE_MARK = "WORKBOOK-RUN-APP-CALLED"
RUN_COUNTING_CALLS = """
import importlib, os, runpy, sys
module = importlib.import_module({module!r})
original = getattr(module, {name!r})
def counted(*args, **kwargs):
    os.write(2, b"{mark}\\n")
    return original(*args, **kwargs)
setattr(module, {name!r}, counted)
sys.argv = ["aiohttpdemo_polls", "--config", {path!r}]
runpy.run_module("aiohttpdemo_polls", run_name="__main__", alter_sys=True)
"""


def taken_marks(output: str, mark: str) -> tuple[int, str]:
    """How many lines of `output` are `mark` (RUN_COUNTING_CALLS), and the output without them."""
    lines = output.splitlines(keepends=True)
    kept = [line for line in lines if line.strip() != mark]
    return len(lines) - len(kept), "".join(kept)


# A bug planted in the engine's creation: it raises psycopg2.ProgrammingError (what a mistaken SQL
# statement at startup raises), awaited or used with `async with`, while PostgreSQL itself is fine.
RUN_WITH_A_BUG = """
import runpy, sys
import aiopg.sa, psycopg2

class BrokenEngine:
    def __init__(self, *args, **kwargs):
        pass
    def __await__(self):
        raise psycopg2.ProgrammingError({message!r})
        yield
    async def __aenter__(self):
        raise psycopg2.ProgrammingError({message!r})
    async def __aexit__(self, *exc):
        return False

aiopg.sa.create_engine = BrokenEngine
sys.argv = ["aiohttpdemo_polls", "--config", {path!r}]
runpy.run_module("aiohttpdemo_polls", run_name="__main__", alter_sys=True)
"""

# --- helpers ---------------------------------------------------------------------------------------------


def app_connections(database: Database) -> int:
    """Client connections to `database`, not counting the one asking."""
    rows = database.execute(  # asked through the judge's own connection, which the count leaves out
        "SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity "
        "WHERE datname = pg_catalog.current_database() AND pid <> pg_catalog.pg_backend_pid() "
        "AND backend_type = 'client backend'"
    )
    return rows[0][0]


def wait_for_connections(database: Database, wanted: int, seconds: float = 3.0) -> int:
    """PostgreSQL removes a backend a moment after its client hung up: poll briefly."""
    deadline = time.monotonic() + seconds
    count = app_connections(database)
    while count != wanted and time.monotonic() < deadline:
        time.sleep(0.02)
        count = app_connections(database)
    return count


def settled(database: Database) -> int:
    """Connections left by earlier checks (none, unless an engine leaked): later counts are on top of it."""
    return wait_for_connections(database, 0, seconds=0.5)


def engine_of(learner, app) -> dict:
    """describe() of app[db.DB_KEY], failing in plain words when it is missing or not an aiopg engine."""
    engine = learner.app_item(app, "db:DB_KEY")
    assert engine.get("exists"), (
        "expected app[DB_KEY] to hold the engine once the app has started, found nothing. "
        "Hint: pg_context stores it before its `yield`, and init_app appends pg_context to app.cleanup_ctx."
    )
    assert ENGINE in engine.get("mro", []), (
        f"expected app[DB_KEY] to be an aiopg.sa.Engine, got {engine.get('type')}. "
        "Hint: engine = await aiopg.sa.create_engine(...)."
    )
    return engine


def pool_sizes() -> tuple[int, int]:
    """This run's minsize and maxsize: never config/polls.yaml's 1 and 5 (also aiopg's minsize and
    SQLAlchemy's pool_size by default), so sizes of the app's own fail on every draw."""
    minsize = random.randint(2, 3)
    return minsize, random.choice([n for n in range(minsize + 1, minsize + 4) if n != 5])


def pool_config(database: Database, minsize: int, maxsize: int) -> dict:
    config = valid_config(database)
    config["postgres"].update(minsize=minsize, maxsize=maxsize)
    return config


async def json_of(response: aiohttp.ClientResponse) -> dict:
    """The JSON body of a 200 response, or a failure that shows what came instead."""
    if response.status != 200 or response.content_type != "application/json":
        body = (await response.text())[:300]
        hint = ("a 500 means the view raised (what the app logged is shown)" if response.status == 500
                else "web.json_response sets that Content-Type, web.Response(text=...) does not")
        pytest.fail(
            f"expected GET {response.url.path} to answer 200 with JSON (application/json), got "
            f"{response.status} {response.content_type}: {body!r}. Hint: return "
            f"web.json_response({{'questions': [...]}}); {hint}.",
            pytrace=False,
        )
    return await response.json()


def expected_questions(database: Database) -> list[dict]:
    rows = database.execute("SELECT id, question_text, pub_date FROM public.question ORDER BY id")
    return [{"id": i, "question_text": text, "pub_date": day.isoformat()} for i, text, day in rows]


def random_text(what: str) -> str:
    return f"{what} #{random.randint(10000, 99999)}?"


# --- task 1: the engine's life ---------------------------------------------------------------------------


@pytest.mark.task(1)
def test_engine_is_open_while_the_app_runs(learner, polls_db, make_config):
    db_key = learner.require("db:DB_KEY")
    assert APP_KEY in db_key["mro"], (
        f"expected db.DB_KEY to be a web.AppKey, got {db_key['type']}. Hint: keep "
        "DB_KEY = web.AppKey('db', aiopg.sa.Engine) and store the engine with app[DB_KEY] = engine."
    )
    base = settled(polls_db)
    app = learner.serve(make_config(polls_db))  # minsize 1
    minsize = engine_of(learner, app).get("attrs", {}).get("minsize")
    count = wait_for_connections(polls_db, base + 1) - base
    hint = ("Hint: pass database, user, password, host and port from app[CONFIG_KEY]['postgres']."
            if minsize in (1, None) else f"its engine has minsize={minsize}: expected the pool sizes from "
            "the config. Hint: minsize=conf['minsize'], maxsize=conf['maxsize'].")  # fmt: skip
    assert count == 1, (
        f"expected the running app (minsize 1) to hold one connection to the configured database "
        f"{polls_db.name!r}, PostgreSQL shows {count}; {hint}"
    )


# Before the pool-size check: the apps of a suite share one learner process, so an engine kept at module level
# reaches the next app with the first app's sizes, and this check is the one that names the cause.
@pytest.mark.task(1)
def test_each_app_has_its_own_engine(learner, polls_db, make_config):
    base = settled(polls_db)
    first, second = learner.serve(make_config(polls_db)), learner.serve(make_config(polls_db))
    first_engine, second_engine = engine_of(learner, first), engine_of(learner, second)
    assert first_engine["id"] != second_engine["id"], (
        "expected every app to open its own engine, two apps shared one. "
        "Hint: create it inside pg_context, not at module level."
    )
    count = wait_for_connections(polls_db, base + 2) - base
    assert count == 2, f"expected two apps (minsize 1 each) to hold 2 connections, PostgreSQL shows {count}"
    learner.stop(first)
    still = engine_of(learner, second).get("attrs", {})
    assert still.get("closed") is False and wait_for_connections(polls_db, base + 1) - base == 1, (
        "expected the second app's engine to stay open when the first app stopped"
    )


@pytest.mark.task(1)
def test_engine_uses_the_configured_pool_size_and_db_timeout(learner, polls_db):
    minsize, maxsize = pool_sizes()  # different every run: the config's numbers must reach the pool
    timeout = random.choice([12.5, 17.25, 23.75])  # db.DB_TIMEOUT for this check, never the lesson's 30
    learner.patch("db:DB_TIMEOUT", timeout)
    base = settled(polls_db)
    app = learner.serve(pool_config(polls_db, minsize, maxsize))
    attrs = engine_of(learner, app).get("attrs", {})
    assert (attrs.get("minsize"), attrs.get("maxsize")) == (minsize, maxsize), (
        f"expected the pool sizes from the config (minsize {minsize}, maxsize {maxsize}), got "
        f"({attrs.get('minsize')}, {attrs.get('maxsize')}). "
        "Hint: pass minsize= and maxsize= to create_engine."
    )
    assert attrs.get("timeout") == timeout, (
        f"with db.DB_TIMEOUT set to {timeout} s before the app started, expected its engine's timeout to be "
        f"{timeout}, got {attrs.get('timeout')}. Hint: timeout=DB_TIMEOUT in the create_engine call itself, "
        "read when the engine is made: not a number of your own, nor a default argument (def "
        "pg_context(app, timeout=DB_TIMEOUT) keeps the value of import time)."
    )
    count = wait_for_connections(polls_db, base + minsize) - base
    assert count == minsize, (
        f"expected the app to open minsize={minsize} connections at startup, PostgreSQL shows {count}"
    )
    idle = learner.serve(pool_config(polls_db, 0, maxsize))  # 0 is a size too: no connection until needed
    got = engine_of(learner, idle).get("attrs", {}).get("minsize")
    assert got == 0, (
        f"with minsize 0 in the config (open no connection until a request needs one), expected the app's "
        f"engine to have minsize 0, got {got}. Hint: minsize=conf['minsize'] as it is; `or 1` turns 0 into 1."
    )


@pytest.mark.task(1)
def test_engine_is_closed_when_the_app_stops(learner, polls_db, make_config):
    app = learner.serve(make_config(polls_db))
    engine_of(learner, app)
    assert wait_for_connections(polls_db, 1) >= 1, "expected the running app to hold a connection"
    warnings = learner.stop(app)  # runs the app's cleanup, as Ctrl+C would; the process lives on
    unclosed = [w for w in warnings if "nclosed" in w]
    assert not unclosed, (
        f"expected the engine to be closed when the app stopped; its connections were left open and "
        f"complained when Python collected them ({unclosed[0]}). "
        "Hint: after `yield` in pg_context, engine.close() then await engine.wait_closed()."
    )
    left = wait_for_connections(polls_db, 0)
    assert left == 0, (
        f"expected no connection of the app in pg_stat_activity after its cleanup, found {left}. "
        "Hint: after `yield` in pg_context, engine.close() then await engine.wait_closed()."
    )
    assert not warnings, f"expected a quiet shutdown, the app's objects complained: {warnings[:3]}"


@pytest.mark.task(1)
def test_engine_connects_whatever_the_names(learner, pg_server):
    # A database name with a space and a quote: a DSN built by hand with an f-string breaks on it.
    name = f"polls o'poll {random.randint(100, 999)}"
    hint = "Hint: pass database=, user=, password=, host=, port= to create_engine, not a DSN string."
    with app_database(pg_server, name) as database:
        try:
            app = learner.serve(valid_config(database))
        except pytest.fail.Exception as exc:
            if re.search(r'relation "[^"]*" does not exist', exc.msg):  # a table read at startup
                hint = ("This database holds no tables yet, and the app must start all the same. Hint: "
                        "pg_context only opens the engine; read the questions in the view, on every request, "
                        "never once at startup.")  # fmt: skip
            pytest.fail(f"with the database named {name!r}: {exc.msg}\n{hint}", pytrace=False)
        engine_of(learner, app)
        count = wait_for_connections(database, 1)
        learner.stop(app)
    assert count == 1, (
        f"expected the app to connect to the database {name!r}, PostgreSQL shows {count} connections there. "
        + hint
    )


# --- task 2: the index reads the database ----------------------------------------------------------------


@pytest.mark.task(2)
async def test_index_lists_the_questions_ordered_by_id(polls_client, polls_db):
    # A question the learner cannot know, and question 1 rewritten so that PostgreSQL stores it last:
    # without ORDER BY it would come out last. The new question is the oldest, so that ordering by
    # pub_date (which rises with the id in the sample polls) puts it first instead of last.
    day = f"{random.randint(1990, 2009)}-{random.randint(1, 12):02}-{random.randint(1, 28):02}"
    added, renamed = random_text("Tea"), random_text("Still new")
    polls_db.execute(f"INSERT INTO public.question (question_text, pub_date) VALUES ('{added}', '{day}')")
    polls_db.execute(f"UPDATE public.question SET question_text = '{renamed}' WHERE id = 1")
    got = await json_of(await polls_client.get("/"))
    expected = {"questions": expected_questions(polls_db)}
    listed = got.get("questions") if isinstance(got, dict) else None
    listed = listed if isinstance(listed, list) else []
    texts = [q.get("question_text") for q in listed if isinstance(q, dict)]
    if added not in texts and renamed not in texts:  # neither change shows: rows read before them
        hint = ("Neither the question the judge added just before this request nor question 1's new text is "
                "there: the list is the database as it was earlier. Hint: query the database in the view, on "
                "every request; do not keep the rows in a variable or on the app.")  # fmt: skip
    else:
        hint = ("Hint: select(db.question).order_by(db.question.c.id): by id, not by date; without ORDER BY, "
                "rows come in any order.")  # fmt: skip
    assert got == expected, (
        f"expected GET / to list the questions in the database, ordered by id:\n  {expected}\ngot:\n  {got}\n"
        + hint
    )


@pytest.mark.task(2)
async def test_index_follows_the_database(polls_client, polls_db):
    await json_of(await polls_client.get("/"))  # a first answer, which must not be kept for later
    text = random_text("Brand new")
    polls_db.execute("DELETE FROM public.question WHERE id = 3")
    polls_db.execute(f"INSERT INTO public.question (question_text, pub_date) VALUES ('{text}', '2024-02-29')")
    got = await json_of(await polls_client.get("/"))
    texts = [q.get("question_text") for q in got.get("questions", [])]
    assert text in texts and "Which colour do you like best?" not in texts, (
        f"expected GET / to show the database as it is now (one question added, one gone), got {texts}. "
        "Hint: query the database on every request; do not keep the rows in a variable."
    )


@pytest.mark.task(2)
async def test_index_lists_every_question(polls_client, polls_db):
    count = random.randint(200, 250)  # more than any page size a view might cut the list to
    polls_db.execute("INSERT INTO public.question (question_text, pub_date) "
                     f"SELECT 'Question ' || n, DATE '2020-01-01' FROM generate_series(1, {count}) AS n")
    expected = [question["id"] for question in expected_questions(polls_db)]
    got = await json_of(await polls_client.get("/"))
    listed = got.get("questions") if isinstance(got, dict) else None
    ids = [q.get("id") for q in listed if isinstance(q, dict)] if isinstance(listed, list) else []
    assert ids == expected, (
        f"with {len(expected)} questions in the database (ids {expected[0]} to {expected[-1]}), expected "
        f"GET / to list them all, got {len(ids)}" + (f" (ids {ids[0]} to {ids[-1]})" if ids else "")
        + ". Hint: every question, ordered by id: no .limit() on the select."
    )


@pytest.mark.task(2)
async def test_index_with_no_questions(polls_client, polls_db):
    polls_db.execute("TRUNCATE public.question CASCADE")
    got = await json_of(await polls_client.get("/"))
    assert got == {"questions": []}, f"expected {{'questions': []}} for an empty database, got {got}"


@pytest.mark.task(2)
async def test_index_gives_its_connection_back(learner, polls_db):
    maxsize = random.randint(2, 3)
    before = app_connections(polls_db)  # the module's own app, if an earlier check served it
    app = learner.serve(pool_config(polls_db, 1, maxsize))
    async with aiohttp.ClientSession(base_url=app.url, timeout=aiohttp.ClientTimeout(total=5)) as client:
        await json_of(await client.get("/"))
        attrs = learner.app_item(app, "db:DB_KEY").get("attrs", {})
        assert attrs.get("freesize") == attrs.get("size"), (
            f"expected every connection back in the pool after GET / answered, {attrs.get('size')} open and "
            f"only {attrs.get('freesize')} free. Hint: borrow it with `async with engine.acquire() as conn:`."
        )
        wanted = 3 * maxsize  # more requests at once than the pool holds: they must wait their turn
        try:
            answers = await asyncio.gather(*(client.get("/") for _ in range(wanted)))
        except asyncio.TimeoutError:
            pytest.fail(f"expected {wanted} GET / at once to be answered by a pool of {maxsize}, some hung",
                        pytrace=False)  # fmt: skip
    statuses = sorted({answer.status for answer in answers})
    assert statuses == [200], f"expected {wanted} GET / at once to answer 200, got statuses {statuses}"
    # PostgreSQL lists a backend a moment after its client has gone: only connections that stay count.
    deadline = time.monotonic() + 2.0
    count = app_connections(polls_db) - before
    while count > maxsize and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        count = app_connections(polls_db) - before
    assert count <= maxsize, (
        f"expected at most maxsize={maxsize} connections once {wanted} requests were answered, {count} "
        "stayed open: the ones beyond the pool's come from an engine of its own (or a connection of its "
        "own) that the view opens per request and never closes. "
        "Hint: async with request.app[db.DB_KEY].acquire() as conn."
    )


@pytest.mark.task(2)
async def test_index_gives_its_connection_back_when_the_query_fails(learner, polls_db):
    maxsize = random.randint(2, 3)
    app = learner.serve(pool_config(polls_db, 1, maxsize))
    away = f"question_away_{random.randint(1000, 9999)}"
    polls_db.execute(f"ALTER TABLE public.question RENAME TO {away}")  # the index's query now raises
    try:
        async with http_session(app.url) as client, client.get("/") as response:
            status = response.status
    finally:
        polls_db.execute(f"ALTER TABLE public.{away} RENAME TO question")
    attrs = learner.app_item(app, "db:DB_KEY").get("attrs", {})
    assert attrs.get("freesize") == attrs.get("size"), (
        f"GET / while the question table did not exist (its query raised; the app answered {status}): "
        f"expected the connection back in the pool all the same, {attrs.get('size')} open and only "
        f"{attrs.get('freesize')} free: each such error keeps one more, until the pool is empty and every "
        "request waits. Hint: borrow it with `async with engine.acquire() as conn:`, which gives it back "
        "even when the query raises; a release() after the query is skipped by the error."
    )


def not_held(held: Held) -> str:
    """Why GET / could not be held inside PostgreSQL: it answered without reading, or never got there."""
    if held.answered is not None:
        status, body = held.answered
        return (
            f"while the judge held a lock on the question table, GET / answered {status} {body[:100]!r} "
            "without waiting for it: expected the index to read the questions from PostgreSQL on every "
            "request. Hint: select(db.question) on a connection from request.app[db.DB_KEY]."
        )
    return "expected GET / to query the question table, it did not reach PostgreSQL within 10 s"


@pytest.mark.task(2)
async def test_index_waits_for_postgres_without_blocking_the_loop(learner, polls_db):
    app = learner.serve(pool_config(polls_db, 1, 2))
    probe = f"/judge-probe-{random.randint(10**5, 10**6)}"
    learner.blocking_calls()  # forget what came before this request
    async with http_session(app.url) as client, held_in_postgres(polls_db, client, "/") as held:
        if held.waiting is None:
            pytest.fail(not_held(held), pytrace=False)
        status = await answers_meanwhile(app.url + probe)
    slept = learner.blocking_calls()
    hint = (
        "await asyncio.sleep(...) if a view must wait; better, do not wait"
        if slept and slept[0].startswith(("time.sleep", "select.select", "threading.Event.wait"))
        else "read what a view needs from a file once, at startup (in init_app), and keep it on the app"
    )
    assert not slept, (
        f"GET / called {slept[0]} on the event loop: that call blocks the event loop, so while it waits "
        f"(for the clock, or the disk) no other visitor is served. Hint: {hint}."
    )
    assert status is not None, (
        f"while GET / waited for PostgreSQL (the judge held a lock on the question table), GET {probe} "
        f"got no answer within {PROBE_SECONDS:.0f}s: the view blocks the event loop, so while it waits "
        "no other visitor is served. Hint: await the query on a connection from the app's aiopg engine; "
        "never a synchronous driver in a view (psycopg2.connect, step 4's make_engine), nor time.sleep "
        "or a blocking file read."
    )


@pytest.mark.task(2)
async def test_index_borrows_a_connection_from_the_apps_engine(learner, polls_db):
    size = random.randint(2, 3)  # minsize = maxsize: the engine opens every connection it will ever use
    before = client_backends(polls_db)
    app = learner.serve(pool_config(polls_db, size, size))
    deadline = time.monotonic() + 3.0  # the engine has opened them by now; PostgreSQL may list them late
    pool = client_backends(polls_db) - before
    while len(pool) < size and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        pool = client_backends(polls_db) - before
    # A second app, started after this one: an engine kept at module level would now be the second's.
    learner.serve(pool_config(polls_db, 1, 1))
    deadline = time.monotonic() + 3.0
    decoy = client_backends(polls_db) - before - pool
    while not decoy and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        decoy = client_backends(polls_db) - before - pool
    # No new connection gets into the database while GET / runs, but the judge's own lock: one the view
    # opens for itself is refused, even one it closes before its query. (A superuser app role is exempt.)
    with no_new_connections(polls_db, room=1):
        async with http_session(app.url) as client, held_in_postgres(polls_db, client, "/") as held:
            if held.waiting is None:
                pytest.fail(refused(held, size) or not_held(held), pytrace=False)
            # Seen while the view waits, so a connection it opened for itself (and still holds) is listed.
            others = client_backends(polls_db) - before - pool - decoy - lock_holders(polls_db)
            sent = query_of(polls_db, held.waiting)
    assert held.waiting not in decoy, (
        "GET / (while the judge held a lock on the question table) waited on a connection of another app, "
        "one started after this one: the view reads an engine kept at module level, which the last app "
        "to start replaced. Hint: async with request.app[db.DB_KEY].acquire() as conn, the engine of the "
        "app that received the request."
    )
    assert held.waiting in pool, (
        f"GET / (while the judge held a lock on the question table) waited on a connection the app's "
        f"engine did not open (the engine's {size} connections, minsize = maxsize = {size}, are the "
        f"backends {sorted(pool)}; the query waited on {held.waiting}): the view opened an engine of its "
        "own, or a connection of its own, for the request. Connecting costs far more than the query, and "
        "under load such connections pile up past PostgreSQL's limit. "
        "Hint: async with request.app[db.DB_KEY].acquire() as conn."
    )
    assert not others, (
        f"while GET / waited for PostgreSQL (the judge held a lock on the question table), the app had "
        f"{len(others)} connection(s) besides its engine's {size} (minsize = maxsize = {size}): the view "
        "opened a connection of its own (psycopg2.connect, an engine of its own), a blocking call that "
        "costs more than the query and piles up connections under load. Hint: only "
        "`async with request.app[db.DB_KEY].acquire() as conn:`, no connection of the view's own, not even "
        "for a check such as SELECT 1."
    )
    built = all(f"question.{column}" in sent for column in ("id", "question_text", "pub_date"))
    assert built, (
        f"GET / sent PostgreSQL {' '.join(sent.split())[:300]!r}; expected the statement SQLAlchemy builds "
        "from select(db.question), which names every column after its table (SELECT question.id, "
        "question.question_text, question.pub_date FROM question ...): the view hands conn.execute SQL text "
        "written by hand. Hint: conn.execute(select(db.question).order_by(db.question.c.id)): the table "
        "object from db.py knows its columns, text does not."
    )


@contextlib.contextmanager
def no_new_connections(database: Database, room: int = 0) -> Iterator[None]:
    """While the block runs, PostgreSQL refuses a new connection to `database` (other than a superuser's)
    beyond `room` more: its connection limit is set to what is connected now."""
    (count,) = database.execute(
        "SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity "
        "WHERE datname = pg_catalog.current_database() AND backend_type = 'client backend'"
    )[0]  # client backends only: a worker that happens to be there now must not leave a free place later
    limit = sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}")
    database.execute(limit.format(sql.Identifier(database.name), sql.Literal(count + room)))
    try:
        yield
    finally:
        database.execute(limit.format(sql.Identifier(database.name), sql.Literal(-1)))


def query_of(database: Database, pid: int) -> str:
    """The statement PostgreSQL's backend `pid` runs (or ran last), as it arrived."""
    rows = database.execute(f"SELECT query FROM pg_catalog.pg_stat_activity WHERE pid = {int(pid)}")
    return rows[0][0] if rows else ""


def refused(held: Held, size: int) -> str:
    """Why GET / failed while no new connection could enter the database: the view wanted one of its own."""
    if not held.answered or held.answered[0] < 500:
        return ""
    status, body = held.answered
    return (
        f"with PostgreSQL letting no new connection into the database while GET / ran (the app's engine had "
        f"opened its {size} connections at startup, minsize = maxsize = {size}), GET / answered {status} "
        f"{body[:100]!r}: the view opened an engine of its own, or a connection of its own "
        "(psycopg2.connect, even one closed before the query), which PostgreSQL refused. That blocks the "
        "event loop while it connects, and costs far more than the query. Hint: only "
        "`async with request.app[db.DB_KEY].acquire() as conn:`, no connection of the view's own, not even "
        "for a check such as SELECT 1."
    )


def lock_holders(database: Database) -> set[int]:
    """The judge's connections holding a granted lock on public.question: held_in_postgres's own."""
    rows = database.execute(
        "SELECT pid FROM pg_catalog.pg_locks WHERE granted AND relation = 'public.question'::regclass "
        "AND mode = 'AccessExclusiveLock'"
    )
    return {pid for (pid,) in rows}


# --- task 3: a clear stop when the database cannot be reached --------------------------------------------


@dataclass
class Startup:
    """One start of the learner's app that must end by itself: its command and the port it would serve."""

    command: Command
    app_port: int | None  # None: the port is the judge's own socket, so serving cannot be seen there
    database: str
    where: str = ""  # the database's host:port as the config names it
    app_host: str = "127.0.0.1"
    counts_tries: bool = False  # run by RUN_COUNTING_CALLS: its output notes each create_engine call


class SilentServer:
    """A PostgreSQL port that accepts a connection and never says a word; a thread notes whether the
    client hung up before the judge did (`hang_up`). Order, not a stopwatch: see launch_startups."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.listener = stack.enter_context(socket.socket())
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.1)
        self.connected = threading.Event()
        self.client_hung_up = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        stack.callback(self.hang_up)

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]

    def _watch(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                conn, _ = self.listener.accept()
                break
        else:
            return
        self.connected.set()
        with conn:
            conn.settimeout(0.1)
            while not self._stop.is_set():
                try:
                    if not conn.recv(4096):  # its startup packet is read and ignored; b"": it hung up
                        self.client_hung_up.set()
                        return
                except TimeoutError:
                    continue
                except OSError:
                    self.client_hung_up.set()
                    return

    def hang_up(self) -> bool:
        """Close the client's connection (if it has not), and say whether the client had hung up first."""
        self._stop.set()
        self._thread.join()
        return self.client_hung_up.is_set()


Launched = tuple[dict[str, Startup], dict[str, SilentServer]]  # the starts, and the silent servers


def launch_startups(tree: Path, pg_server, folder: Path, stack: contextlib.ExitStack,
                    serving: bool = False, planted_bug: str = "",
                    count_tries: bool = False) -> Launched:  # fmt: skip
    """Start the learner's app five times, each of which must end by itself: against a closed port, a
    missing database, two servers that never answer and, with the database reachable, an app port already
    taken. With `serving`, also once with everything right, on a loopback host other than 127.0.0.1.
    With `planted_bug`, also once with aiopg.sa.create_engine raising ProgrammingError(planted_bug).
    With `count_tries`, the closed-port start counts its calls of aiopg.sa.create_engine.
    `stack` stops them all (and closes the sockets) at its end.

    The two silent servers tell db.DB_TIMEOUT from a timeout of the app's own without a stopwatch: the
    "patient" start gets DB_TIMEOUT = 300 s and connects first; only then does the "silent" one start,
    with DB_TIMEOUT = 0.5 s. The judge hangs up on the patient one once the silent one has ended. An app
    that waits DB_TIMEOUT never hangs up first; one that waits a time of its own hangs up on the patient
    server first, since that one started waiting earlier.
    """
    launched: dict[str, Startup] = {}
    silent, patient = SilentServer(stack), SilentServer(stack)
    taken = stack.enter_context(socket.socket())  # the app's own port, already in use
    taken.bind(("127.0.0.1", 0))
    taken.listen(8)
    reachable = stack.enter_context(app_database(pg_server))

    def launch(name: str, config: dict, timeout: float | None = None, watch_port: bool = True) -> None:
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        counts_tries = name == "closed" and count_tries
        if name == "bug":
            args = ("-c", RUN_WITH_A_BUG.format(message=planted_bug, path=str(path)))
        elif counts_tries:
            counting = {"module": "aiopg.sa", "name": "create_engine", "mark": TRY_MARK}
            args = ("-c", RUN_COUNTING_CALLS.format(**counting, path=str(path)))
        elif name == "taken":
            counting = {"module": "aiohttp.web", "name": "run_app", "mark": SERVE_MARK}
            args = ("-c", RUN_COUNTING_CALLS.format(**counting, path=str(path)))
        elif timeout is not None:
            args = ("-c", RUN_WITH_SHORT_TIMEOUT.format(timeout=timeout, path=str(path)))
        else:
            args = ("-m", "aiohttpdemo_polls", "--config", str(path))
        port = config["port"] if watch_port else None
        pg = config["postgres"]
        where = f"{pg['host']}:{pg['port']}"
        startup = Startup(Command(tree, *args), port, pg["database"], where, config["host"], counts_tries)
        launched[name] = startup
        stack.callback(startup.command.close)
        stack.callback(startup.command.stop, grace=2)

    def quiet(server: SilentServer) -> dict:
        config = valid_config(reachable, port=free_port())
        config["postgres"].update(host="127.0.0.1", port=server.port)
        return config

    launch("patient", quiet(patient), timeout=PATIENT_TIMEOUT)
    closed = valid_config(reachable, port=free_port())
    closed["postgres"]["port"] = reachable.closed_port()  # nothing answers there
    launch("closed", closed)
    missing = valid_config(reachable, port=free_port())
    missing["postgres"]["database"] = f"no_such_polls_db_{random.randint(100, 999)}"
    launch("missing", missing)
    launch("taken", valid_config(reachable, port=taken.getsockname()[1]), watch_port=False)
    if planted_bug:
        launch("bug", valid_config(reachable, port=free_port()))
    bad = valid_config(reachable, port=free_port())
    bad["postgres"]["port"] = random.randint(65536, 99999)  # two refused fields: step 3's one line still
    launch("bad-config", bad, watch_port=False)
    deadline = time.monotonic() + CONNECT_WAIT
    while not patient.connected.wait(0.02) and launched["patient"].command.returncode is None \
            and time.monotonic() < deadline:  # fmt: skip
        pass
    launch("silent", quiet(silent), timeout=SILENT_TIMEOUT)
    if serving:
        host = f"127.0.{random.randrange(256)}.{random.randrange(2, 255)}"  # not 127.0.0.1
        launch("serving", valid_config(reachable, host=host, port=free_port()))
    return launched, {"silent": silent, "patient": patient}


@pytest.fixture(scope="module", autouse=True)
def launched(request: pytest.FixtureRequest, pg_server, tmp_path_factory) -> Iterator[Launched]:
    """Every task-3 start, launched as the module begins; each check waits for its own."""
    with contextlib.ExitStack() as stack:
        folder = tmp_path_factory.mktemp("step5")
        yield launch_startups(step_run(request.config).tree, pg_server, folder, stack, serving=True,
                              planted_bug=PLANTED_BUG, count_tries=True)  # fmt: skip


@pytest.fixture
def startups(launched) -> dict[str, Startup]:
    return launched[0]


@pytest.fixture
def silent_servers(launched) -> dict[str, SilentServer]:
    return launched[1]


# What the judge says when a start neither ends nor fails as it should; step 10 says it in its own terms.
SERVING_HINT = "Hint: pg_context must connect while the app starts (task 1)."
HANGING_HINT = (
    "Hint: pass timeout=DB_TIMEOUT to create_engine, not a number of your own: aiopg ignores libpq's "
    "connect_timeout, and this check sets db.DB_TIMEOUT to {timeout} s."
)
TRACEBACK_HINT = "Hint: in main(), catch psycopg2.OperationalError and asyncio.TimeoutError around run_app."
LINES_HINT = "Hint: take the first line of the error's text: psycopg2's messages often span several."
REASON_HINT = (
    "Hint: end the line with the first line of psycopg2's message (str(exc).strip().splitlines()[0]): "
    "it says what went wrong."
)


def ended(startup: Startup, seconds: float = GIVE_UP, serving_hint: str = SERVING_HINT,
          hanging_hint: str = HANGING_HINT) -> tuple[int, str]:  # fmt: skip
    """(exit status, output) once the app exits; a failure if it serves or hangs instead."""
    command = startup.command
    deadline = time.monotonic() + seconds
    while command.returncode is None:
        serving = False
        if startup.app_port is not None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", startup.app_port), 0.2):
                serving = True
        if serving:
            pytest.fail(
                f"expected the app to stop because its database cannot be reached, it started serving on "
                f"port {startup.app_port}. {serving_hint}",
                pytrace=False,
            )
        if time.monotonic() > deadline:
            pytest.fail(
                f"expected the app to give up on the database within {seconds:.0f}s, it was still waiting. "
                + hanging_hint.format(timeout=SILENT_TIMEOUT),
                pytrace=False,
            )
        time.sleep(0.02)
    return command.returncode, command.output()


def check_clear_failure(status: int, output: str, database: str, where: str = "",
                        traceback_hint: str = TRACEBACK_HINT,
                        lines_hint: str = LINES_HINT, *, names: str = "", reason: str = "",
                        reason_hint: str = "", reason_last: bool = False) -> None:  # fmt: skip
    """One line, exit status 1, naming the database; with `names`, that host:port too; with `reason`,
    the line must also say it (the driver's own words, or how long the app waited); with `reason_last`,
    the line must end with it."""
    assert "Traceback" not in output, (
        f"expected one clear line, got a traceback ending in: {why_it_ended(output)}\n{traceback_hint}"
    )
    assert database in output, (
        f"expected the message{where} to name the database {database!r}, got:\n{output.strip()[-1500:]}"
    )
    assert status == 1, f"expected exit status 1, got {status}. Output:\n{output.strip()[-1500:]}"
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, (
        f"expected one line{where}, got {len(lines)}:\n{output.strip()[-1500:]}\n{lines_hint}"
    )
    host, _, port = names.rpartition(":")
    assert host in lines[0] and port in lines[0], (
        f"expected the line{where} to name the database's host {host} and port {port}, got: {lines[0]}\n"
        "Hint: cannot connect to PostgreSQL at {host}:{port} (database ..., user ...): the reason."
    )
    reasons = reason.split("|")  # any one of them, as the driver words it (over TCP, or a socket folder)
    assert any(part.lower() in lines[0].lower() for part in reasons), (
        f"expected the line{where} to give the reason, saying {' or '.join(map(repr, reasons))}, got: "
        f"{lines[0]}\n{reason_hint}"
    )
    end = lines[0].strip().rstrip(".").lower()
    assert not reason_last or any(end.endswith(part.lower()) for part in reasons), (
        f"expected the line{where} to end with the reason ({' or '.join(map(repr, reasons))}), got: "
        f"{lines[0]}\nHint: name the host, port and database first, then the first line of psycopg2's "
        "message (str(exc).strip().splitlines()[0]), last: not the whole message joined into one line, "
        "whose last words only ask whether the server is running."
    )


@pytest.mark.task(3)
def test_closed_port_stops_the_app_with_a_clear_message(startups):
    # Nothing listens there: libpq's first line ends "Connection refused" over TCP, "No such file or
    # directory" for a socket folder; its last line ("Is the server running ...?") gives no reason.
    status, output = ended(startups["closed"])
    tries, output = taken_marks(output, TRY_MARK)
    count = str(tries) if startups["closed"].counts_tries else "?"
    check_clear_failure(status, output, startups["closed"].database, names=startups["closed"].where,
                        reason="Connection refused|No such file or directory", reason_hint=REASON_HINT,
                        reason_last=True)  # fmt: skip
    assert count in ("1", "?"), (
        f"with nothing listening at the database's port, expected the app to try once and stop at once, "
        f"it called aiopg.sa.create_engine {count} times before it gave up. Hint: no retry and no loop "
        "around create_engine: a refused connection is reported at once, in one line, and the person "
        "who reads it decides what to do."
    )


@pytest.mark.task(3)
def test_missing_database_stops_the_app_with_a_clear_message(startups):
    status, output = ended(startups["missing"])
    check_clear_failure(status, output, startups["missing"].database, names=startups["missing"].where,
                        reason="does not exist", reason_hint=REASON_HINT, reason_last=True)  # fmt: skip


def check_waits_db_timeout(startups: dict[str, Startup], servers: dict[str, SilentServer],
                           hint: str) -> tuple[int, str]:  # fmt: skip
    """The silent start ended (DB_TIMEOUT 0.5 s) while the patient one (DB_TIMEOUT 300 s, connected first)
    still waited: its (exit status, output). See launch_startups for why that order proves DB_TIMEOUT."""
    status, output = ended(startups["silent"], SILENT_GIVE_UP, hanging_hint=hint)
    patient = servers["patient"]
    if not patient.connected.is_set():
        pytest.fail(
            "expected the app to connect to the configured postgres host and port (a server of the judge's "
            f"that never answers), it never did:\n{why_it_ended(startups['patient'].command.output())}"
            "\nHint: use config['postgres']['host'] and config['postgres']['port'].",
            pytrace=False,
        )
    if patient.hang_up():
        pytest.fail(
            f"with db.DB_TIMEOUT set to {PATIENT_TIMEOUT:g} s, expected the app to wait for a silent server "
            f"until the judge hung up, it gave up first (and with DB_TIMEOUT {SILENT_TIMEOUT} s, it gave up "
            "too): it waits a time of its own, not DB_TIMEOUT. "
            + hint.format(timeout=f"{SILENT_TIMEOUT} or {PATIENT_TIMEOUT:g}"),
            pytrace=False,
        )
    return status, output


@pytest.mark.task(3)
def test_silent_server_does_not_hang_the_app(startups, silent_servers):
    # The judge set db.DB_TIMEOUT: the app must wait that long for a silent server, no less and no more,
    # and say so on stderr, in one line.
    status, output = check_waits_db_timeout(startups, silent_servers, HANGING_HINT)
    check_clear_failure(status, output, startups["silent"].database, where=" on stderr",
                        names=startups["silent"].where, reason=f"{SILENT_TIMEOUT:g}",
                        reason_hint="Hint: say how long the app waited, f'no answer in {DB_TIMEOUT:g}s' "
                        "(asyncio.TimeoutError has no text of its own).")  # fmt: skip


@pytest.mark.task(3)
def test_a_bad_config_still_ends_in_one_line(startups):
    """Step 3's rule, kept by the settings.py given since: a refused config is one line, exit status 2."""
    status, output = ended(startups["bad-config"])
    refused = "postgres.port"
    lines = [line for line in output.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and refused in lines[0], (
        f"python -m aiohttpdemo_polls --config bad-config.yaml (postgres.port above 65535): expected one "
        f"line naming {refused} and exit status 2, as in step 3, got exit status {status} and "
        f"{len(lines)} lines:\n{output.strip()[-1000:]}\nHint: settings.py keeps step 3's rule: "
        "ConfigError's message is one line, its problems joined with '; '."
    )


@pytest.mark.task(3)
def test_other_errors_are_not_blamed_on_the_database(startups):
    # The database answers, but the app's own port is taken: that error must show as itself.
    command = startups["taken"].command
    deadline = time.monotonic() + GIVE_UP
    while command.returncode is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if command.returncode is None:
        pytest.fail(
            "with the database reachable and the app's port already in use, expected the app to stop with "
            f"the port's error (address already in use), it was still running after {GIVE_UP:.0f}s. Hint: "
            "serve on the configured port only, no fallback to another port and no retry: let the OSError "
            "web.run_app raises show.",
            pytrace=False,
        )
    status, output = ended(startups["taken"])
    serves, output = taken_marks(output, SERVE_MARK)
    assert serves <= 1, (
        f"with the database reachable and the app's port already in use, expected one call of web.run_app, "
        f"on the configured port, and its error to end the app; web.run_app was called {serves} times. "
        "Hint: serve on the configured port only, no fallback to another port and no retry: let the "
        "OSError web.run_app raises show."
    )
    assert status != 0, f"expected a non-zero exit status when the port is taken, got {status}"
    assert startups["taken"].database not in output and "in use" in output, (
        "with the database reachable and the app's port already in use, expected the port's error "
        f"(address already in use), not a message about the database; got:\n{output.strip()[-800:]}\n"
        "Hint: catch only psycopg2.OperationalError and asyncio.TimeoutError, not every Exception."
    )


@pytest.mark.task(3)
def test_a_bug_is_not_blamed_on_the_database(startups):
    status, output = ended(startups["bug"])
    assert "Traceback (most recent call last)" in output and "ProgrammingError" in output, (
        "python -m aiohttpdemo_polls with the database reachable and a bug planted by the judge (creating "
        f"the engine raises psycopg2.ProgrammingError: {PLANTED_BUG}): expected the bug's traceback, as any "
        f"bug shows itself, got exit status {status} and:\n{output.strip()[-800:]}\nHint: catch only "
        "psycopg2.OperationalError (cannot connect) and asyncio.TimeoutError, not psycopg2.Error: a "
        "ProgrammingError is a mistake in the code, and its traceback says where."
    )


@pytest.mark.task(3)
def test_app_serves_only_on_the_configured_host(startups):
    startup = startups["serving"]
    host, port = startup.app_host, startup.app_port
    assert port is not None
    deadline = time.monotonic() + GIVE_UP
    sent = f"python -m aiohttpdemo_polls with a reachable database (host: {host}, port: {port})"
    while not answers(host, port):
        if startup.command.returncode is not None:
            pytest.fail(f"{sent}: expected it to serve there, it exited: "
                        f"{why_it_ended(startup.command.output())}", pytrace=False)  # fmt: skip
        if time.monotonic() > deadline:
            pytest.fail(f"{sent}: expected it to serve there within {GIVE_UP:.0f}s, it did not. Hint: "
                        "web.run_app(init_app(config), host=config['host'], port=config['port']).",
                        pytrace=False)  # fmt: skip
        time.sleep(0.05)
    wrong = answers("127.0.0.1", port)
    startup.command.stop(grace=2)
    assert not wrong, (
        f"the config says host {host}, but the app also answers on 127.0.0.1:{port}: it listens on every "
        "interface. Hint: web.run_app(init_app(config), host=config['host'], port=config['port'])."
    )


def answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False
