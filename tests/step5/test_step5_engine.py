"""Step 5: one aiopg engine per app, opened at startup and closed at cleanup; the index reads PostgreSQL."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import aiopg.sa
import pytest
import yaml
from aiohttp import web

from workbook.pg import free_port

# --- helpers ---------------------------------------------------------------------------------------------


def engine_of(polls, app: web.Application) -> aiopg.sa.Engine:
    db_key = polls.attribute("db", "DB_KEY")
    engine = app.get(db_key)
    assert engine is not None, (
        "expected app[DB_KEY] to hold the engine once the app has started, found nothing. "
        "Hint: pg_context stores it before its `yield`, and init_app appends pg_context to app.cleanup_ctx."
    )
    assert isinstance(engine, aiopg.sa.Engine), (
        f"expected app[DB_KEY] to be an aiopg.sa.Engine, got {type(engine).__name__}. "
        "Hint: engine = await aiopg.sa.create_engine(...)."
    )
    return engine


def app_connections(database) -> int:
    """Client connections to the test database, not counting the one asking."""
    rows = database.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    )
    return rows[0][0]


def wait_for_connections(database, wanted: int, seconds: float = 3.0) -> int:
    """PostgreSQL removes a backend a moment after its client hung up: poll briefly."""
    deadline = time.monotonic() + seconds
    count = app_connections(database)
    while count != wanted and time.monotonic() < deadline:
        time.sleep(0.05)
        count = app_connections(database)
    return count


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def run_until_exit(polls_process, config_path: Path, app_port: int, seconds: float) -> tuple[int, str]:
    """Start the app; return (exit status, output) once it exits. Fail if it serves or hangs instead."""
    process = polls_process.start("aiohttpdemo_polls", "--config", str(config_path))
    deadline = time.monotonic() + seconds
    while process.poll() is None:
        serving = False
        try:
            with socket.create_connection(("127.0.0.1", app_port), timeout=0.2):
                serving = True
        except OSError:
            pass
        if serving:
            pytest.fail(
                f"expected the app to stop because its database cannot be reached, it started serving on "
                f"port {app_port}. Hint: pg_context must connect while the app starts (step 5, task 1).",
                pytrace=False,
            )
        if time.monotonic() > deadline:
            pytest.fail(
                f"expected the app to give up on an unreachable database within {seconds:.0f}s, it was still "
                "waiting. Hint: aiopg ignores libpq's connect_timeout; pass timeout=... to create_engine.",
                pytrace=False,
            )
        time.sleep(0.1)
    output = process.stdout.read() if process.stdout else ""
    return process.returncode, output


def check_clear_failure(status: int, output: str, database: str) -> None:
    assert status not in (0, None), f"expected a non-zero exit status, got {status}. Output:\n{output}"
    assert "Traceback" not in output, (
        f"expected one clear message, got a traceback:\n{output.strip()[-1500:]}\n"
        "Hint: in main(), catch psycopg2.OperationalError (and asyncio.TimeoutError) around web.run_app."
    )
    assert database in output, (
        f"expected the message to name the database {database!r}, got:\n{output.strip()[-1500:]}"
    )


async def json_of(response) -> dict:
    """The JSON body of a 200 response, or a failure that shows what came instead."""
    if response.status != 200 or response.content_type != "application/json":
        body = (await response.text())[:300]
        pytest.fail(
            f"expected GET {response.url.path} to answer 200 with JSON, got {response.status} "
            f"{response.content_type}: {body!r}. Hint: return web.json_response({{'questions': [...]}}); "
            "a 500 means the view raised (the server log of `-- -v` shows why).",
            pytrace=False,
        )
    return await response.json()


def expected_questions(database) -> list[dict]:
    rows = database.execute("SELECT id, question_text, pub_date FROM question ORDER BY id")
    return [{"id": i, "question_text": text, "pub_date": day.isoformat()} for i, text, day in rows]


# --- task 1: the engine's life ---------------------------------------------------------------------------


@pytest.mark.task(1)
async def test_engine_is_open_while_the_app_runs(polls, polls_app, polls_db, aiohttp_client):
    db_key = polls.attribute("db", "DB_KEY")
    assert isinstance(db_key, web.AppKey), f"expected db.DB_KEY to be a web.AppKey, got {db_key!r}"
    await aiohttp_client(polls_app)
    engine = engine_of(polls, polls_app)
    async with engine.acquire() as conn:
        name = await conn.scalar("SELECT current_database()")
    assert name == polls_db.name, (
        f"expected the engine to connect to the configured database {polls_db.name!r}, got {name!r}. "
        "Hint: pass database, user, password, host and port from app[CONFIG_KEY]['postgres']."
    )


@pytest.mark.task(1)
async def test_engine_uses_the_configured_pool_size(polls, polls_db, make_config, aiohttp_client):
    config = make_config(polls_db)
    config["postgres"].update(minsize=2, maxsize=3)
    app = polls.attribute("main", "init_app")(config)
    await aiohttp_client(app)
    engine = engine_of(polls, app)
    assert (engine.minsize, engine.maxsize) == (2, 3), (
        f"expected the pool sizes from the config (minsize 2, maxsize 3), got ({engine.minsize}, "
        f"{engine.maxsize}). Hint: pass minsize= and maxsize= to create_engine."
    )


@pytest.mark.task(1)
async def test_engine_is_closed_when_the_app_stops(polls, polls_app, polls_db, aiohttp_client):
    client = await aiohttp_client(polls_app)
    engine = engine_of(polls, polls_app)
    open_connections = await asyncio.to_thread(wait_for_connections, polls_db, 1)
    assert open_connections >= 1, "expected the running app to hold a connection to the test database"
    await client.close()  # runs the app's cleanup, as Ctrl+C would
    assert engine.closed, (
        "expected the engine to be closed after the app stopped. "
        "Hint: after `yield` in pg_context, engine.close() then await engine.wait_closed()."
    )
    left = await asyncio.to_thread(wait_for_connections, polls_db, 0)
    assert left == 0, (
        f"expected no connection of the app in pg_stat_activity after shutdown, found {left}. "
        "Hint: await engine.wait_closed() after engine.close()."
    )


@pytest.mark.task(1)
async def test_each_app_has_its_own_engine(polls, polls_db, make_config, aiohttp_client):
    init_app = polls.attribute("main", "init_app")
    first, second = init_app(make_config(polls_db)), init_app(make_config(polls_db))
    await aiohttp_client(first)
    await aiohttp_client(second)
    assert engine_of(polls, first) is not engine_of(polls, second), (
        "expected every app to open its own engine, two apps shared one. "
        "Hint: create it inside pg_context, not at module level."
    )


# --- task 2: the index reads the database ----------------------------------------------------------------


@pytest.mark.task(2)
async def test_index_lists_the_questions_as_json(polls_client, polls_db):
    got = await json_of(await polls_client.get("/"))
    expected = {"questions": expected_questions(polls_db)}
    assert got == expected, (
        f"expected GET / to list the questions in the database, oldest first:\n  {expected}\ngot:\n  {got}"
    )


@pytest.mark.task(2)
async def test_index_follows_the_database(polls_client, polls_db):
    polls_db.execute("DELETE FROM question WHERE id = 3")
    polls_db.execute("INSERT INTO question (question_text, pub_date) VALUES ('Brand new?', '2024-02-29')")
    got = await json_of(await polls_client.get("/"))
    texts = [q.get("question_text") for q in got.get("questions", [])]
    assert "Brand new?" in texts and "Which colour do you like best?" not in texts, (
        f"expected GET / to show the database as it is now (one question added, one gone), got {texts}. "
        "Hint: query the database on every request; do not keep the rows in a variable."
    )


@pytest.mark.task(2)
async def test_index_with_no_questions(polls_client, polls_db):
    polls_db.execute("TRUNCATE question CASCADE")
    got = await json_of(await polls_client.get("/"))
    assert got == {"questions": []}, f"expected {{'questions': []}} for an empty database, got {got}"


# --- task 3: a clear stop when the database cannot be reached --------------------------------------------


@pytest.mark.task(3)
def test_closed_port_stops_the_app_with_a_clear_message(polls_process, polls_db, make_config, tmp_path):
    config = make_config(polls_db, port=free_port())
    config["postgres"]["port"] = free_port()  # nothing listens there
    path = write_config(tmp_path / "polls.yaml", config)
    status, output = run_until_exit(polls_process, path, config["port"], seconds=20)
    check_clear_failure(status, output, config["postgres"]["database"])


@pytest.mark.task(3)
def test_missing_database_stops_the_app_with_a_clear_message(polls_process, polls_db, make_config, tmp_path):
    config = make_config(polls_db, port=free_port())
    config["postgres"]["database"] = "no_such_polls_db"
    path = write_config(tmp_path / "polls.yaml", config)
    status, output = run_until_exit(polls_process, path, config["port"], seconds=20)
    check_clear_failure(status, output, "no_such_polls_db")


@pytest.mark.task(3)
def test_silent_server_does_not_hang_the_app(polls_process, polls_db, make_config, tmp_path):
    # A socket that accepts TCP connections and never answers: what a firewalled or frozen host looks like.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        config = make_config(polls_db, port=free_port())
        config["postgres"].update(host="127.0.0.1", port=silent.getsockname()[1])
        path = write_config(tmp_path / "polls.yaml", config)
        status, output = run_until_exit(polls_process, path, config["port"], seconds=25)
    check_clear_failure(status, output, config["postgres"]["database"])
