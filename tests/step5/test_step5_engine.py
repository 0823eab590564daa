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
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.conftest import Database, step_run, valid_config, why_it_ended
from workbook.judge.learner_process import Command
from workbook.pg import free_port

ENGINE = "aiopg.sa.engine.Engine"
APP_KEY = "aiohttp.helpers.AppKey"
SILENT_TIMEOUT = 0.5  # the judge's db.DB_TIMEOUT for the silent server: no one waits 5 s for a verdict
GIVE_UP = 8.0  # how long a startup that should fail may take before the judge calls it hung
SILENT_GIVE_UP = 4.0  # with DB_TIMEOUT lowered to SILENT_TIMEOUT: an app with a 5 s timeout of its own fails

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
    engine_of(learner, app)
    count = wait_for_connections(polls_db, base + 1) - base
    assert count == 1, (
        f"expected the running app (minsize 1) to hold one connection to the configured database "
        f"{polls_db.name!r}, PostgreSQL shows {count}. "
        "Hint: pass database, user, password, host and port from app[CONFIG_KEY]['postgres']."
    )


def two_pool_sizes() -> list[tuple[int, int]]:
    """Two (minsize, maxsize) pairs that differ in both numbers, in an order that changes every run: a
    number written into the code instead of read from the config fails with one of them, whatever the draw."""
    minsizes, maxsizes = random.sample([2, 3], 2), random.sample([4, 5, 6], 2)
    return list(zip(minsizes, maxsizes, strict=True))


@pytest.mark.task(1)
def test_engine_uses_the_configured_pool_size(learner, polls_db):
    for minsize, maxsize in two_pool_sizes():
        base = settled(polls_db)
        app = learner.serve(pool_config(polls_db, minsize, maxsize))
        attrs = engine_of(learner, app).get("attrs", {})
        assert (attrs.get("minsize"), attrs.get("maxsize")) == (minsize, maxsize), (
            f"expected the pool sizes from the config (minsize {minsize}, maxsize {maxsize}), got "
            f"({attrs.get('minsize')}, {attrs.get('maxsize')}). "
            "Hint: pass minsize= and maxsize= to create_engine."
        )
        count = wait_for_connections(polls_db, base + minsize) - base
        assert count == minsize, (
            f"expected the app to open minsize={minsize} connections at startup, PostgreSQL shows {count}"
        )
        learner.stop(app)


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
def test_engine_connects_whatever_the_names(learner, pg_server):
    # A database name with a space and a quote: a DSN built by hand with an f-string breaks on it.
    name = f"polls o'poll {random.randint(100, 999)}"
    hint = "Hint: pass database=, user=, password=, host=, port= to create_engine, not a DSN string."
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
        f"expected the app to connect to the database {name!r}, PostgreSQL shows {count} connections there. "
        + hint
    )


# --- task 2: the index reads the database ----------------------------------------------------------------


@pytest.mark.task(2)
async def test_index_lists_the_questions_ordered_by_id(polls_client, polls_db):
    # A question the learner cannot know, and question 1 rewritten so that PostgreSQL stores it last:
    # without ORDER BY it would come out last.
    polls_db.execute(f"INSERT INTO public.question (question_text, pub_date) VALUES ('{random_text('Tea')}', "
                     "'2024-02-29')")  # fmt: skip
    polls_db.execute(f"UPDATE public.question SET question_text = '{random_text('Still new')}' WHERE id = 1")
    got = await json_of(await polls_client.get("/"))
    expected = {"questions": expected_questions(polls_db)}
    assert got == expected, (
        f"expected GET / to list the questions in the database, ordered by id:\n  {expected}\ngot:\n  {got}\n"
        "Hint: select(db.question).order_by(db.question.c.id); without ORDER BY, rows come in any order."
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
    count = app_connections(polls_db) - before
    assert count <= maxsize, f"expected at most maxsize={maxsize} connections under load, found {count}"


# --- task 3: a clear stop when the database cannot be reached --------------------------------------------


@dataclass
class Startup:
    """One start of the learner's app that must end by itself: its command and the port it would serve."""

    command: Command
    app_port: int | None  # None: the port is the judge's own socket, so serving cannot be seen there
    database: str


def launch_startups(tree: Path, pg_server, folder: Path, stack: contextlib.ExitStack) -> dict[str, Startup]:
    """Start the learner's app four times at once, each of which must end by itself: against a closed
    port, a missing database, a server that never answers (db.DB_TIMEOUT lowered) and, with the database
    reachable, an app port already taken. `stack` stops them all (and closes the sockets) at its end."""
    launched: dict[str, Startup] = {}
    silent = stack.enter_context(socket.socket())  # accepts connections, never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    taken = stack.enter_context(socket.socket())  # the app's own port, already in use
    taken.bind(("127.0.0.1", 0))
    taken.listen(8)
    reachable = Database(pg_server, stack.enter_context(pg_server.database()))
    stack.callback(reachable.close)

    def launch(name: str, config: dict, short_timeout: bool = False, watch_port: bool = True) -> None:
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        if short_timeout:
            args = ("-c", RUN_WITH_SHORT_TIMEOUT.format(timeout=SILENT_TIMEOUT, path=str(path)))
        else:
            args = ("-m", "aiohttpdemo_polls", "--config", str(path))
        port = config["port"] if watch_port else None
        startup = Startup(Command(tree, *args), port, config["postgres"]["database"])
        launched[name] = startup
        stack.callback(startup.command.close)
        stack.callback(startup.command.stop, grace=2)

    closed = valid_config(reachable, port=free_port())
    closed["postgres"]["port"] = free_port()  # nothing listens there
    launch("closed", closed)
    missing = valid_config(reachable, port=free_port())
    missing["postgres"]["database"] = f"no_such_polls_db_{random.randint(100, 999)}"
    launch("missing", missing)
    quiet = valid_config(reachable, port=free_port())
    quiet["postgres"].update(host="127.0.0.1", port=silent.getsockname()[1])
    launch("silent", quiet, short_timeout=True)
    launch("taken", valid_config(reachable, port=taken.getsockname()[1]), watch_port=False)
    return launched


@pytest.fixture(scope="module", autouse=True)
def startups(request: pytest.FixtureRequest, pg_server, tmp_path_factory) -> Iterator[dict[str, Startup]]:
    """Every task-3 start, launched together as the module begins; each check waits for its own."""
    with contextlib.ExitStack() as stack:
        folder = tmp_path_factory.mktemp("step5")
        yield launch_startups(step_run(request.config).tree, pg_server, folder, stack)


# What the judge says when a start neither ends nor fails as it should; step 10 says it in its own terms.
SERVING_HINT = "Hint: pg_context must connect while the app starts (task 1)."
HANGING_HINT = (
    "Hint: pass timeout=DB_TIMEOUT to create_engine, not a number of your own: aiopg ignores libpq's "
    "connect_timeout, and this check sets db.DB_TIMEOUT to {timeout} s."
)
TRACEBACK_HINT = "Hint: in main(), catch psycopg2.OperationalError and asyncio.TimeoutError around run_app."
LINES_HINT = "Hint: take the first line of the error's text: psycopg2's messages often span several."


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
                        lines_hint: str = LINES_HINT) -> None:  # fmt: skip
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


@pytest.mark.task(3)
def test_closed_port_stops_the_app_with_a_clear_message(startups):
    status, output = ended(startups["closed"])
    check_clear_failure(status, output, startups["closed"].database)


@pytest.mark.task(3)
def test_missing_database_stops_the_app_with_a_clear_message(startups):
    status, output = ended(startups["missing"])
    check_clear_failure(status, output, startups["missing"].database)


@pytest.mark.task(3)
def test_silent_server_does_not_hang_the_app(startups):
    # The judge lowered db.DB_TIMEOUT to 0.5 s: the app must use it (so it gives up well within SILENT_GIVE_UP
    # seconds, imports included), and say so on stderr, in one line.
    status, output = ended(startups["silent"], SILENT_GIVE_UP)
    check_clear_failure(status, output, startups["silent"].database, where=" on stderr")


@pytest.mark.task(3)
def test_other_errors_are_not_blamed_on_the_database(startups):
    # The database answers, but the app's own port is taken: that error must show as itself.
    status, output = ended(startups["taken"])
    assert status != 0, f"expected a non-zero exit status when the port is taken, got {status}"
    assert startups["taken"].database not in output and "in use" in output, (
        "with the database reachable and the app's port already in use, expected the port's error "
        f"(address already in use), not a message about the database; got:\n{output.strip()[-800:]}\n"
        "Hint: catch only psycopg2.OperationalError and asyncio.TimeoutError, not every Exception."
    )
