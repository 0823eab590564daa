"""Step 6: Jinja2 templates through aiohttp-jinja2; the index and poll pages; 404 for any missing poll.

The pages are rendered by the learner's app, in the learner's process, and read over HTTP. Besides the
seeded polls, every test gets a poll the judge writes with words, ids and HTML-special characters that
change from run to run, so a page written by hand cannot pass.
"""

from __future__ import annotations

import html
import json
import random
import re
from dataclasses import dataclass
from urllib.parse import unquote

import markupsafe
import pytest
import yarl
from psycopg2 import sql

from tests.conftest import (
    around,
    http_session,
    page_text,
    status_with_a_broken_database,
    valid_config,
    why_it_ended,
)
from tests.lost_connection import status_with_a_lost_connection
from tests.moved import Layout
from tests.pages import page
from tests.pooled import (
    assert_connections_given_back,
    assert_given_back_when_the_query_fails,
    assert_served_by_the_pool,
)
from workbook.judge.learner_process import LearnerRaised
from workbook.pg import free_port

WORDS = ["otter", "maple", "comet", "pepper", "harbor", "violet", "tundra", "cobalt", "lantern", "quartz",
         "meadow", "saffron", "glacier", "ember", "willow", "falcon"]  # fmt: skip

# --- the judge's own poll, different on every run ----------------------------------------------------------


@dataclass
class Poll:
    id: int
    text: str
    raw: str  # a fragment of `text` that is HTML and must never reach the page unescaped
    choices: list[tuple[int, str]]  # (id, text) in id order


def word(rng: random.Random) -> str:
    return f"{rng.choice(WORDS)}{rng.randint(10, 99)}"


def insert_poll(db, rng: random.Random | None = None) -> Poll:
    """A question with three choices, random ids and texts; the choices are inserted in reverse id order
    so that a SELECT without ORDER BY gives them in the wrong order."""
    rng = rng or random.Random()
    a, b, c = word(rng), word(rng), word(rng)
    question_id = rng.randint(100, 99999)
    text = f"Is <b>{a}</b> & \"{b}\" '{c}' shown as typed?"
    ids = sorted(rng.sample(range(1000, 999999), 3))
    texts = [f'<script>alert("{b}")</script>', f"{c} & {a}", f"<i>{a}</i> or {b}"]
    choices = list(zip(ids, texts, strict=True))
    db.execute(sql.SQL("INSERT INTO public.question (id, question_text, pub_date) "
                       "VALUES ({}, {}, '2024-02-29')")
               .format(sql.Literal(question_id), sql.Literal(text)))  # fmt: skip
    for choice_id, choice_text in reversed(choices):
        db.execute(sql.SQL("INSERT INTO public.choice (id, choice_text, question_id) VALUES ({}, {}, {})")
                   .format(sql.Literal(choice_id), sql.Literal(choice_text), sql.Literal(question_id)))
    return Poll(question_id, text, f"<b>{a}</b>", choices)


@pytest.fixture
def judge_poll(polls_db) -> Poll:
    return insert_poll(polls_db)


def missing_id(db) -> int:
    """An id no question has, different on every run."""
    taken = {row[0] for row in db.execute("SELECT id FROM public.question")}
    return random.choice([n for n in random.sample(range(100, 999999), 20) if n not in taken])


# --- helpers ---------------------------------------------------------------------------------------------


def escaped_forms(text: str) -> set[str]:
    """How an escaped text may appear: as Jinja writes it (&#34; &#39;) or html.escape (&quot; &#x27;)."""
    return {str(markupsafe.escape(text)), html.escape(text), html.escape(text, quote=False)}


def assert_shows(body: str, text: str, where: str, judge_escaping: bool = True) -> None:
    """`text` must be on the page, escaped; with judge_escaping=False, as written is enough too (a check
    about something else leaves the escaping to test_index_page_escapes_question_text, named after it)."""
    if not any(form in body for form in escaped_forms(text)):
        if text in body and not judge_escaping:
            return
        if text in body:  # there, but as written: the cause is the escaping, not the data or the query
            assert_escaped(body, text, where)
        seen = page_text(body)
        empty = ("\nHint: the page says there are no polls although the database holds some: the template "
                 "got no questions. The view returns {'questions': rows}, the very name index.html loops "
                 "over; a name of its own is undefined in the template, which Jinja treats as empty."
                 if "no polls" in seen.lower() else "")  # fmt: skip
        pytest.fail(
            f"expected {where} to show {text!r} (HTML-escaped, as autoescaping writes it), it is not in the "
            f"page. What the page shows: {seen[:600]!r}{empty}",
            pytrace=False,
        )


def assert_escaped(body: str, raw: str, where: str) -> None:
    if raw in body:
        pytest.fail(
            f"expected {where} to escape {raw!r}, it came out raw: a visitor's text became HTML. "
            "Hint: leave Jinja's autoescape on (no autoescape=False in aiohttp_jinja2.setup) and never mark "
            "user text |safe. "
            f"The page around it: {around(body, raw)}",
            pytrace=False,
        )


def questions(db) -> list[tuple[int, str]]:
    return db.execute("SELECT id, question_text FROM public.question ORDER BY id")


def choices_of(db, question_id: int) -> list[str]:
    rows = db.execute(sql.SQL("SELECT choice_text FROM public.choice WHERE question_id = {} ORDER BY id")
                      .format(sql.Literal(question_id)))  # fmt: skip
    return [text for (text,) in rows]


# --- task 1: aiohttp-jinja2 and the index page -----------------------------------------------------------

# Runs in a process of its own: the app is built and served after a change of directory, as when it is
# started from anywhere else than the step folder. A loader with a relative path finds no template then.
FROM_ANOTHER_DIRECTORY = """
import json, os, sys
sys.path.insert(0, {tree!r})
from aiohttp import web
from aiohttpdemo_polls.main import init_app
os.chdir("/")
web.run_app(init_app(json.loads({config!r})), host="127.0.0.1", port={port}, print=None)
"""


@pytest.mark.task(1)
async def test_templates_are_found_from_another_directory(polls_process, polls_db, make_config, tree,
                                                          judge_poll):  # fmt: skip
    port = free_port()
    config = json.dumps(make_config(polls_db))
    code = FROM_ANOTHER_DIRECTORY.format(tree=str(tree), config=config, port=port)
    command = polls_process.start_python(code)
    polls_process.wait_for_port(command, port)
    async with http_session() as session, session.get(f"http://127.0.0.1:{port}/") as response:
        status, content_type, body = response.status, response.content_type, await response.text()
    if status == 200 and content_type != "text/html":
        pytest.fail(f"expected GET / to answer an HTML page, got {content_type}: {body[:200]!r}. Hint: "
                    "render index.html with @aiohttp_jinja2.template('index.html'), returning a dict.",
                    pytrace=False)  # fmt: skip
    if status != 200:
        logged = why_it_ended(command.output())
        pytest.fail(
            f"started from the folder / (not the step folder), the app answered GET / with {status} instead "
            f"of an HTML page: {body[:200]!r}\n(the app logged: {logged})\nHint: load templates with "
            "jinja2.PackageLoader('aiohttpdemo_polls', 'templates'), which finds them inside the package "
            "wherever the app is started; a FileSystemLoader with a relative path does not.",
            pytrace=False,
        )
    assert_shows(body, judge_poll.text, "the index page", judge_escaping=False)


@pytest.mark.task(1)
async def test_index_page_links_every_poll(polls_client, polls_db, judge_poll):
    body = await page(polls_client, "/")
    for question_id, text in questions(polls_db):
        assert_shows(body, text, "the index page", judge_escaping=False)
        assert f'href="/poll/{question_id}"' in body, (
            f"expected the index to link poll {question_id} to /poll/{question_id}, found no such link. "
            "Hint: <a href=\"{{ url('poll', question_id=question.id) }}\">. The page around its question: "
            + around(body, str(markupsafe.escape(text)))
        )
    text = page_text(body)
    assert "no polls" not in text.lower(), (
        f"expected an index that lists polls not to say there are none, it shows {text[:300]!r}. Hint: the "
        "words No polls belong in the {% else %} of {% if questions %}, shown only for an empty list."
    )


@pytest.mark.task(1)
async def test_index_links_come_from_the_router(learner, polls_db, judge_poll):
    """The app served where only the router's addresses lead (tests/moved.py): a link written by hand, or
    pasted onto the index's address, does not follow."""
    layout = Layout()
    app = layout.serve(learner, valid_config(polls_db))
    async with http_session(app.url) as client:
        body = await page(client, layout.url("index", "/"))
    hrefs = re.findall(r'href="([^"]*)"', body)
    for question_id, text in questions(polls_db):
        expected = layout.url("poll", f"/poll/{question_id}")
        if f'href="{expected}"' in body:
            continue
        found = next((href for href in hrefs if href.endswith(f"/poll/{question_id}")), None)
        if found:
            found = f"it links {layout.diagnose(found, 'poll', f'/poll/{question_id}')}"
        else:
            found = "it has no such link. The page around its question: "
            found += around(body, str(markupsafe.escape(text)))
        pytest.fail(
            f"{layout.told}; expected the index to link poll {question_id} to {expected}, {found}. "
            "Hint: ask the router for that route, <a href=\"{{ url('poll', question_id=question.id) }}\">.",
            pytrace=False,
        )


@pytest.mark.task(1)
async def test_index_borrows_a_connection_of_the_apps_pool(polls_client, polls_db):
    await assert_served_by_the_pool(polls_client, polls_db, "GET", "/", "question")


@pytest.mark.task(1)
async def test_index_gives_its_connection_back(learner, polls_db, make_config):
    await assert_connections_given_back(learner, learner.serve(make_config(polls_db)), "GET", "/")


@pytest.mark.task(1)
async def test_index_gives_its_connection_back_when_the_query_fails(learner, polls_db, make_config):
    app = learner.serve(make_config(polls_db))
    await assert_given_back_when_the_query_fails(learner, polls_db, app, "GET", "/", "question")


@pytest.mark.task(1)
async def test_index_makes_no_blocking_call(learner, polls_client):
    learner.blocking_calls()  # forget what came before this request
    await page(polls_client, "/")
    slept = learner.blocking_calls()
    assert not slept, (
        f"GET / called {slept[0]} on the event loop, expected no blocking call in the view: while it waits "
        "(for the clock, or the disk) no other visitor is served, as in step 5. Hint: no time.sleep (nor "
        "its disguises, select.select or threading.Event().wait) or blocking file read in a view; await "
        "asyncio.sleep(...) if it must wait, better not wait at all."
    )


@pytest.mark.task(1)
async def test_index_page_escapes_question_text(polls_client, judge_poll):
    body = await page(polls_client, "/")
    assert_escaped(body, judge_poll.raw, "the index page")
    assert_shows(body, judge_poll.text, "the index page")


@pytest.mark.task(1)
async def test_index_page_follows_the_database(polls_client, polls_db):
    polls_db.execute("DELETE FROM public.question WHERE id = 1")
    text = f"Tabs or spaces, {word(random.Random())}?"
    polls_db.execute(sql.SQL("INSERT INTO public.question (question_text, pub_date) VALUES ({}, '2024-1-1')")
                     .format(sql.Literal(text)))  # fmt: skip
    body = await page(polls_client, "/")
    assert_shows(body, text, "the index page")
    assert 'href="/poll/1"' not in body, (
        "expected a deleted poll to leave the index, its link stayed. Hint: read the questions from the "
        "database on every request."
    )


@pytest.mark.task(1)
async def test_index_page_lists_the_polls_in_id_order(polls_client, polls_db, judge_poll):
    # Question 1 rewritten: PostgreSQL writes the new version after the other rows, so a SELECT without
    # ORDER BY meets it last.
    # Its date moved after every other poll's, so an order by date is not id order either.
    text = f"Still the first poll, {word(random.Random())}?"
    polls_db.execute(sql.SQL("UPDATE public.question SET question_text = {}, pub_date = '2099-12-31' "
                             "WHERE id = 1").format(sql.Literal(text)))  # fmt: skip
    body = await page(polls_client, "/")
    expected = [question_id for question_id, _ in questions(polls_db)]
    listed = list(dict.fromkeys(int(found) for found in re.findall(r'href="/poll/(\d+)"', body)))
    assert [question_id for question_id in listed if question_id in expected] == expected, (
        f"after the judge changed the text of poll 1 and made it the newest, expected the index to list the "
        f"polls in id order, {expected}; its links lead to the polls {listed}. Hint: as in step 5, "
        "select(db.question).order_by(db.question.c.id) and nothing else: without ORDER BY, PostgreSQL "
        "returns rows in whatever order it finds them, and an update moves a row; an order by date is "
        "not id order."
    )


@pytest.mark.task(1)
async def test_index_page_lists_every_poll(polls_client, polls_db):
    count = random.randint(200, 250)  # more than any page size a view might cut the list to
    polls_db.execute("INSERT INTO public.question (question_text, pub_date) "
                     f"SELECT 'Poll ' || n, DATE '2020-01-01' FROM generate_series(1, {count}) AS n")
    expected = [question_id for question_id, _ in questions(polls_db)]
    body = await page(polls_client, "/")
    listed = list(dict.fromkeys(int(found) for found in re.findall(r'href="/poll/(\d+)"', body)))
    missing = [question_id for question_id in expected if question_id not in listed]
    assert not missing, (
        f"with {len(expected)} polls in the database, expected the index to link every one, it links "
        f"{len(listed)}; missing: /poll/{missing[0]} and {len(missing) - 1} more. Hint: as in step 5, "
        "every question: no .limit() on the select."
    )


@pytest.mark.task(1)
async def test_index_page_without_polls_has_no_links(polls_client, polls_db):
    polls_db.execute("TRUNCATE public.question CASCADE")
    body = await page(polls_client, "/")
    assert "/poll/" not in body, (
        f"expected no poll links for an empty database, got: {around(body, '/poll/')}"
    )


@pytest.mark.task(1)
async def test_index_page_without_polls_says_so(polls_client, polls_db):
    polls_db.execute("TRUNCATE public.question CASCADE")
    text = page_text(await page(polls_client, "/"))
    assert "no polls" in text.lower(), (
        f"expected the index of an empty database to say so (\"No polls are available yet.\"), it shows "
        f"{text[:300]!r}. Hint: {{% if questions %}} ... {{% else %}}<p>No polls are available yet.</p>"
        "{% endif %}."
    )


# --- task 2: get_question and the poll page --------------------------------------------------------------


@pytest.mark.task(2)
def test_get_question_returns_the_question_and_its_choices(learner, polls_app, judge_poll):
    got = learner.call_or_fail("db:get_question", judge_poll.id, connection=polls_app)
    shaped = isinstance(got, list) and len(got) == 2 and isinstance(got[0], dict) and isinstance(got[1], list)
    if not shaped:
        pytest.fail(f"expected get_question(conn, {judge_poll.id}) to return (question, choices), got "
                    f"{str(got)[:300]}", pytrace=False)  # fmt: skip
    question, choices = got
    seen = (question.get("id"), question.get("question_text"))
    assert seen == (judge_poll.id, judge_poll.text), (
        f"expected get_question(conn, {judge_poll.id}) to return question {judge_poll.id} first, "
        f"got {str(question)[:300]}. Hint: select(question).where(question.c.id == question_id)."
    )
    expected = [text for _, text in judge_poll.choices]
    texts = [c.get("choice_text") if isinstance(c, dict) else c for c in choices]
    if sorted(map(str, texts)) == sorted(expected) and texts != expected:
        hint = "they are the right choices in the wrong order: add .order_by(choice.c.id)"
    elif texts and len(texts) < len(expected) and texts == expected[: len(texts)]:
        hint = ("those are the first of them only: read every row of the choices' result, "
                ".all() (fetchall() on aiopg), not .first() or fetchone()")
    elif set(expected) < set(map(str, texts)):
        hint = ("those are other polls' choices too, and a poll shows only its own choices: "
                "where(choice.c.question_id == question_id)")
    else:
        hint = "where(choice.c.question_id == question_id).order_by(choice.c.id)"
    assert texts == expected, (
        f"expected question {judge_poll.id}'s choices in id order, {expected}, got {texts}. Hint: {hint}."
    )


@pytest.mark.task(2)
def test_get_question_raises_record_not_found(learner, polls_app, polls_db):
    question_id = missing_id(polls_db)
    try:
        got = learner.call("db:get_question", question_id, connection=polls_app)
    except LearnerRaised as exc:
        if exc.name == "RecordNotFound":
            return
        pytest.fail(f"expected get_question(conn, {question_id}) (no such poll) to raise RecordNotFound, it "
                    f"raised {exc.name}: {exc.message}", pytrace=False)  # fmt: skip
    pytest.fail(
        f"expected get_question(conn, {question_id}) (no such poll) to raise RecordNotFound, it returned "
        f"{str(got)[:200]}. Hint: when cursor.first() gives None, raise RecordNotFound(...).",
        pytrace=False,
    )


@pytest.mark.task(2)
@pytest.mark.parametrize("case", ["missing", "int32-overflow"])
def test_get_question_says_which_poll_is_missing(learner, polls_app, polls_db, case):
    question_id = missing_id(polls_db) if case == "missing" else 2147483648  # one past PostgreSQL's integer
    call = f"get_question(conn, {question_id}) (no such poll)"
    try:
        got = learner.call("db:get_question", question_id, connection=polls_app)
    except LearnerRaised as exc:
        raised = exc
    else:
        pytest.fail(f"expected {call} to raise RecordNotFound, it returned {str(got)[:200]}", pytrace=False)
    if raised.name != "RecordNotFound":
        pytest.fail(f"expected {call} to raise RecordNotFound, which the poll view turns into a 404, it "
                    f"raised {raised.name}: {raised.message[:300]}", pytrace=False)  # fmt: skip
    assert re.search(rf"\b{question_id}\b", raised.message), (
        f"expected {call} to raise RecordNotFound whose message names the poll, such as 'There is no poll "
        f"{question_id}.', its message is {raised.message!r}. Hint: "
        "raise RecordNotFound(f\"There is no poll {question_id}.\")."
    )


@pytest.mark.task(2)
def test_get_question_never_runs_its_argument_as_sql(learner, polls_app, polls_db):
    question_id = missing_id(polls_db)
    probe = f"{question_id} OR TRUE"  # as text: a value to compare with, never a piece of SQL
    try:
        got = learner.call("db:get_question", probe, connection=polls_app)
    except LearnerRaised:
        return  # RecordNotFound, or PostgreSQL refusing the text as an integer: both are safe
    pytest.fail(
        f"get_question(conn, {probe!r}) returned {str(got)[:120]}...: the text became part of the SQL "
        "(SQL injection). Hint: build queries with SQLAlchemy expressions, "
        "select(question).where(question.c.id == question_id), never with f-strings.",
        pytrace=False,
    )


@pytest.mark.task(2)
def test_get_question_returns_a_poll_without_choices(learner, polls_app, polls_db):
    question_id = missing_id(polls_db)
    text = f"Nothing to choose yet, {word(random.Random())}?"
    polls_db.execute(sql.SQL("INSERT INTO public.question (id, question_text, pub_date) "
                             "VALUES ({}, {}, '2024-03-01')")
                     .format(sql.Literal(question_id), sql.Literal(text)))  # fmt: skip
    try:
        got = learner.call("db:get_question", question_id, connection=polls_app)
    except LearnerRaised as exc:
        got, shown = None, f"raised {exc.name}: {exc.message}"
    else:
        shown = f"returned {str(got)[:200]}"
    choices = got[1] if isinstance(got, list) and len(got) == 2 else None
    assert choices == [], (
        f"expected get_question(conn, {question_id}) for a poll that exists but has no choices yet to return "
        f"(question, []), it {shown}. Hint: RecordNotFound is for a missing question: look the question up "
        "first, and raise only when that finds nothing; an empty list of choices is no reason."
    )


@pytest.mark.task(2)
def test_get_question_builds_its_queries_as_expressions(learner, polls_app, judge_poll):
    texts = learner.sql_text_sent("db:get_question", judge_poll.id, connection=polls_app)
    assert not texts, (
        f"get_question(conn, {judge_poll.id}) gave conn.execute SQL text instead of a SQLAlchemy expression: "
        f"{texts[0]!r}. Pasting values into SQL (an f-string, even after int(), or "
        "text()) is how injection starts once one value is not checked. Hint: "
        "select(question).where(question.c.id == question_id), and the same for the choices."
    )


@pytest.mark.task(2)
def test_get_question_lets_a_database_error_through(learner, polls_app, polls_db, judge_poll):
    polls_db.execute("ALTER TABLE public.question RENAME TO question_renamed_by_the_judge")
    try:
        got = learner.call("db:get_question", judge_poll.id, connection=polls_app)
    except LearnerRaised as exc:
        got, name, message = None, exc.name, exc.message
    else:
        name = message = None
    finally:
        polls_db.execute("ALTER TABLE public.question_renamed_by_the_judge RENAME TO question")
    shown = f"returned {str(got)[:200]}"
    if name and message is not None:
        shown = f"raised {name}: {message[:200]}"
    assert name != "RecordNotFound" and "does not exist" in (message or ""), (
        f"with the question table renamed (the database is broken, poll {judge_poll.id} exists), "
        f"expected get_question(conn, {judge_poll.id}) to let the database's error through, it {shown}. "
        "Hint: raise RecordNotFound only when the query found no question; catching psycopg2's errors in "
        "get_question turns a broken database into a missing poll (and the view into a 404)."
    )


@pytest.mark.task(2)
@pytest.mark.parametrize("which", ["seeded", "judge's"])
async def test_poll_page_shows_the_question_and_its_choices(polls_client, polls_db, judge_poll, which):
    question_id = 1 if which == "seeded" else judge_poll.id
    body = await page(polls_client, f"/poll/{question_id}")
    assert_shows(body, dict(questions(polls_db))[question_id], f"/poll/{question_id}")
    for choice_text in choices_of(polls_db, question_id):
        assert_shows(body, choice_text, f"/poll/{question_id}")
    other = "Fish & chips"  # a choice of poll 2, which neither page may show
    assert not any(form in body for form in escaped_forms(other)), (
        f"expected /poll/{question_id} to list only its own choices, it shows 'Fish & chips' of poll 2. "
        "Hint: .where(choice.c.question_id == question_id)."
    )


@pytest.mark.task(2)
async def test_poll_page_shows_the_question_as_a_heading(polls_client, judge_poll):
    path = f"/poll/{judge_poll.id}"
    body = await page(polls_client, path)
    assert_shows(body, judge_poll.text, path)
    headings = re.findall(r"<(h[1-6])\b[^>]*>(.*?)</\1\s*>", body, re.S | re.I)
    if any(form in inner for _, inner in headings for form in escaped_forms(judge_poll.text)):
        return
    outside_title = re.sub(r"<title\b.*?</title\s*>", "", body, flags=re.S | re.I)
    shown_outside = any(form in outside_title for form in escaped_forms(judge_poll.text))
    where = "in the page but not in a heading" if shown_outside else "only in the <title>"
    if headings and not shown_outside:
        where = "only in the <title>: the heading shows other text (cut short, or its case changed)"
    shown = [f"<{tag}>{page_text(inner)[:80]}</{tag}>" for tag, inner in headings] or "no heading at all"
    pytest.fail(
        f"expected {path} to show its question as a heading (<h1>...</h1>), the question is {where}; the "
        f"page's headings: {shown}. Hint: <h1>{{{{ question.question_text }}}}</h1> in detail.html: the "
        "<title> names the browser tab, the page itself needs the question too.",
        pytrace=False,
    )


@pytest.mark.task(2)
async def test_poll_page_lists_the_choices_in_id_order(polls_client, polls_db, judge_poll):
    # Votes that put the choices in another order, most first or fewest first.
    for (choice_id, _), count in zip(judge_poll.choices, (2, 1, 3), strict=True):
        polls_db.execute(sql.SQL("UPDATE public.choice SET votes = {} WHERE id = {}")
                         .format(sql.Literal(count), sql.Literal(choice_id)))  # fmt: skip
    body = await page(polls_client, f"/poll/{judge_poll.id}")
    for _, text in judge_poll.choices:
        assert_shows(body, text, f"/poll/{judge_poll.id}")
    positions = [min((body.find(f) for f in escaped_forms(text) if f in body), default=-1)
                 for _, text in judge_poll.choices]  # fmt: skip
    assert -1 not in positions and positions == sorted(positions), (
        f"expected /poll/{judge_poll.id} to list its choices in id order, "
        f"{[text for _, text in judge_poll.choices]}; the page shows {page_text(body)[:400]!r}. "
        "Hint: .order_by(choice.c.id) in get_question, and detail.html lists them as they come (not sorted "
        "by votes)."
    )


@pytest.mark.task(2)
async def test_poll_page_borrows_a_connection_of_the_apps_pool(polls_client, polls_db, judge_poll):
    await assert_served_by_the_pool(polls_client, polls_db, "GET", f"/poll/{judge_poll.id}", "question")


@pytest.mark.task(2)
async def test_poll_page_gives_its_connection_back(learner, polls_db, make_config, judge_poll):
    app = learner.serve(make_config(polls_db))
    await assert_connections_given_back(learner, app, "GET", f"/poll/{judge_poll.id}")


@pytest.mark.task(2)
async def test_poll_page_escapes_question_and_choices(polls_client, judge_poll):
    body = await page(polls_client, f"/poll/{judge_poll.id}")
    for raw in (judge_poll.raw, judge_poll.choices[0][1], judge_poll.choices[2][1]):
        assert_escaped(body, raw, f"/poll/{judge_poll.id}")
    for _, text in judge_poll.choices:
        assert_shows(body, text, f"/poll/{judge_poll.id}")


# --- task 3: 404, never 500 ------------------------------------------------------------------------------

NOT_FOUND_HINT = (
    "Hint: catch RecordNotFound in the view and raise web.HTTPNotFound; Python's int() refuses strings over "
    "4300 digits, so let the route accept only ids that can exist ({question_id:[0-9]{1,10}})."
)
# An id longer than 10 digits that is not a 404 has gone through the route: that is where it must stop.
ROUTE_HINT = (
    "No poll has an id of more than 10 digits, and this one reached the view: the route let it through "
    "(Python's int() refuses strings over 4300 digits; PostgreSQL's integer ends at 2147483647). Hint: "
    "let the route accept only ids that can exist, {question_id:[0-9]{1,10}}."
)


@pytest.mark.task(3)
@pytest.mark.parametrize(
    "path",
    ["/poll/0", "/poll/abc", "/poll/-1", "/poll/1.5", "/poll/2147483648", "/poll/99999999999",
     "/poll/00000000001", "/poll/" + "9" * 5000, "/poll/"],
    ids=["zero", "not-a-number", "negative", "decimal", "int32-overflow", "eleven-digits",
         "eleven-digits-of-poll-1", "5000-digits", "no-digits"],
)  # fmt: skip
async def test_impossible_polls_are_404(polls_client, path):
    response = await polls_client.get(path)
    shown = path if len(path) < 40 else path[:20] + "..."
    digits = path.rpartition("/")[2]
    hint = ROUTE_HINT if digits.isdigit() and len(digits) > 10 else NOT_FOUND_HINT
    if response.status == 200 and digits.isdigit() and len(digits) > 10:
        hint = (f"int() reads {digits!r} as {int(digits)}, a poll that exists, so the view showed it. "
                f"{ROUTE_HINT} Let the route match digits only, one to 10 of them: a check of the id in the "
                "view lets such addresses through.")  # fmt: skip
    if response.status == 500 and digits.isdigit() and int(digits) > 2**31 - 1 and len(digits) <= 10:
        hint = (f"A 500: PostgreSQL could not read {digits} as an integer, so get_question was given the id "
                "as a string (sent as text, which PostgreSQL must turn into an integer first). Hint: "
                "question_id = int(request.match_info['question_id']) in the view; a number past the "
                "integer's range then simply finds no row: RecordNotFound, a 404.")  # fmt: skip
    assert response.status == 404, f"expected GET {shown} to answer 404, got {response.status}. {hint}"


@pytest.mark.task(3)
@pytest.mark.parametrize("digits", ["0", "2147483648"], ids=["zero", "int32-overflow"])
async def test_an_id_no_poll_can_have_gets_the_views_404(polls_client, digits):
    # The route lets these through (digits, at most 10): get_question finds no row and the view's 404 names
    # the id. Step 9's 404 page replaces that text, so steps 9 and 10 leave this check behind.
    response = await polls_client.get(f"/poll/{digits}")
    body = await response.text()
    shown = f"/poll/{digits}"
    got = response.status
    assert got == 404, f"expected GET {shown} to answer 404, got {got}. {NOT_FOUND_HINT}"
    assert digits in page_text(body), (
        f"expected the 404 for GET {shown} to name the poll that was asked for, {digits}, it says "
        f"{page_text(body)[:300]!r}. Hint: an id of ten digits must reach the view (the route must "
        "accept them all, {question_id:[0-9]{1,10}}), where get_question looks for it and raises "
        "RecordNotFound, and the view answers web.HTTPNotFound(text=str(exc)): no bare 404 of the "
        "view's own for an id too large to exist."
    )


# Addresses that are not plain digits, though int() reads each as 1 (poll 1 exists): only the route's
# pattern keeps them from the view. %20 is a space, which aiohttp decodes before matching; so are the
# Arabic-Indic one (%D9%A1) and the fullwidth one (%EF%BC%91), digits to a regular expression's \d.
NOT_DIGITS = {"plus-sign": "/poll/+1", "underscore": "/poll/0_1", "space": "/poll/%201",
              "arabic-indic-digit": "/poll/%D9%A1", "fullwidth-digit": "/poll/%EF%BC%91"}


@pytest.mark.task(3)
@pytest.mark.parametrize("case", list(NOT_DIGITS))
async def test_ids_that_are_not_plain_digits_are_404(polls_client, case):
    path = NOT_DIGITS[case]
    async with polls_client.get(yarl.URL(path, encoded=True)) as response:
        status = response.status
    shown = f"int() reads {unquote(path.rpartition('/')[2])!r} as 1, so the view showed poll 1. " \
        if status == 200 else ""  # fmt: skip
    assert status == 404, (
        f"expected GET {path} ({case.replace('-', ' ')} in the id) to answer 404, got {status}: {shown}Hint: "
        "let the route match digits only, {question_id:[0-9]{1,10}} (\\d also matches other scripts' "
        "digits); checking the id with int() in the view lets such addresses through."
    )


@pytest.mark.task(3)
async def test_a_poll_with_a_ten_digit_id_is_shown(polls_client, polls_db):
    question_id = random.randint(10**9, 2**31 - 1)  # ten digits, and still a PostgreSQL INTEGER
    text = f"Ten digits {word(random.Random())}?"
    polls_db.execute(sql.SQL("INSERT INTO public.question (id, question_text, pub_date) "
                             "VALUES ({}, {}, '2024-02-29')")
                     .format(sql.Literal(question_id), sql.Literal(text)))  # fmt: skip
    async with polls_client.get(f"/poll/{question_id}") as response:
        status, body = response.status, await response.text()
    assert status == 200 and text in page_text(body), (
        f"expected GET /poll/{question_id} (a poll that exists, its id ten digits long) to show {text!r}, "
        f"got {status}: {page_text(body)[:200]!r}. Hint: ids go up to 2147483647, ten digits: the route "
        "must accept them all, {question_id:[0-9]{1,10}}, not fewer digits."
    )


async def assert_404_names(client, question_id: int, what: str) -> None:
    response = await client.get(f"/poll/{question_id}")
    body = await response.text()
    assert response.status == 404, (
        f"expected GET /poll/{question_id} ({what}) to answer 404, got {response.status}. {NOT_FOUND_HINT}"
    )
    assert str(question_id) in page_text(body), (
        f"expected the 404 for /poll/{question_id} ({what}) to name the poll that was asked for, "
        f"{question_id}, it says {page_text(body)[:300]!r}. Hint: RecordNotFound(f\"There is no poll "
        "{question_id}.\") in get_question, and web.HTTPNotFound(text=str(exc)) in the view."
    )


@pytest.mark.task(3)
async def test_missing_poll_is_404_naming_it(polls_client, polls_db):
    await assert_404_names(polls_client, missing_id(polls_db), "no such poll")


@pytest.mark.task(3)
async def test_deleted_poll_is_404_naming_it(polls_client, polls_db, judge_poll):
    polls_db.execute(sql.SQL("DELETE FROM public.question WHERE id = {}").format(sql.Literal(judge_poll.id)))
    await assert_404_names(polls_client, judge_poll.id, "a poll that was just deleted")


@pytest.mark.task(3)
async def test_a_broken_database_is_not_a_missing_poll(polls_client, polls_db):
    working = await polls_client.get("/poll/1")
    assert working.status == 200, (
        f"expected GET /poll/1 to answer 200 before the judge breaks the database, got {working.status}. "
        "Hint: make the poll view work first."
    )
    status = await status_with_a_broken_database(polls_client, polls_db, "/poll/1")
    assert status != 404, (
        "with a column of the choice table renamed (the database is broken, the poll exists), expected "
        "GET /poll/1 to fail as a server error, got a 404 that blames the visitor. Hint: catch only "
        "db.RecordNotFound in the view, not every exception."
    )


@pytest.mark.task(3)
async def test_a_lost_database_is_not_a_missing_poll(learner, polls_db):
    status = await status_with_a_lost_connection(learner, polls_db, "/poll/1", "question")
    assert status is not None, (
        "expected GET /poll/1 to read the question table in PostgreSQL (the judge held a lock on it), it "
        "answered without waiting, or never got there. Hint: get_question queries the database each time."
    )
    assert status != 404, (
        "GET /poll/1 (a poll that exists) while the judge ended its query's connection in PostgreSQL (as a "
        "restart of the server does; the query raises psycopg2.OperationalError): "
        f"expected a server error, got {status}, a 404 that blames the visitor for the database's fault. "
        "Hint: catch only db.RecordNotFound in the view, not OperationalError nor asyncio.TimeoutError."
    )
