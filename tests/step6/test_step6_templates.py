"""Step 6: Jinja2 templates through aiohttp-jinja2; the index and poll pages; 404 for any missing poll."""

from __future__ import annotations

import html

import aiohttp_jinja2
import jinja2
import markupsafe
import pytest

# --- helpers ---------------------------------------------------------------------------------------------


async def page(client, path: str) -> str:
    """The HTML of a page that must answer 200, or a failure showing what came instead."""
    response = await client.get(path)
    body = await response.text()
    if response.status != 200 or response.content_type != "text/html":
        if response.status >= 500:
            hint = "a 500 means the view or its template raised; `-- -v` shows the server's log."
        elif response.content_type != "text/html":
            hint = "render a template: @aiohttp_jinja2.template('...') on a view that returns a dict."
        else:
            hint = "check the route and the view."
        pytest.fail(
            f"expected GET {path} to answer 200 with an HTML page, got {response.status} "
            f"{response.content_type}: {body[:200]!r}. Hint: {hint}",
            pytrace=False,
        )
    return body


def escaped_forms(text: str) -> set[str]:
    """How an escaped text may appear: as Jinja writes it (&#34; &#39;) or html.escape (&quot; &#x27;)."""
    return {str(markupsafe.escape(text)), html.escape(text), html.escape(text, quote=False)}


def assert_shows(body: str, text: str, where: str) -> None:
    assert any(form in body for form in escaped_forms(text)), (
        f"expected {where} to show {text!r} (HTML-escaped), it is not in the page:\n{body[:800]}"
    )


def assert_escaped(body: str, raw: str, where: str) -> None:
    assert raw not in body, (
        f"expected {where} to escape {raw!r}, it came out raw: a visitor's text became HTML. "
        "Hint: let Jinja's autoescape do its work and never mark user text |safe."
    )


def questions(db) -> list[tuple[int, str]]:
    return db.execute("SELECT id, question_text FROM question ORDER BY id")


def choices_of(db, question_id: int) -> list[str]:
    rows = db.execute(f"SELECT choice_text FROM choice WHERE question_id = {question_id} ORDER BY id")
    return [text for (text,) in rows]


# --- task 1: aiohttp-jinja2 and the index page -----------------------------------------------------------


@pytest.mark.task(1)
def test_templates_load_from_the_package(polls_app):
    env = polls_app.get(aiohttp_jinja2.APP_KEY)
    assert env is not None, (
        "expected init_app to set up aiohttp-jinja2, the app has no template environment. "
        "Hint: aiohttp_jinja2.setup(app, loader=...)."
    )
    assert isinstance(env.loader, jinja2.PackageLoader), (
        f"expected a jinja2.PackageLoader, got {type(env.loader).__name__}. Hint: "
        "jinja2.PackageLoader('aiohttpdemo_polls', 'templates') finds the templates wherever the package is."
    )
    assert env.autoescape, "expected autoescaping on, it is off: every question would become raw HTML"
    env.get_template("index.html")  # raises TemplateNotFound with the name if it is missing


@pytest.mark.task(1)
async def test_index_page_links_every_poll(polls_client, polls_db):
    body = await page(polls_client, "/")
    for question_id, text in questions(polls_db):
        assert_shows(body, text, "the index page")
        assert f'href="/poll/{question_id}"' in body, (
            f"expected the index to link poll {question_id} to /poll/{question_id}, found no such link. "
            "Hint: <a href=\"{{ url('poll', question_id=question.id) }}\">."
        )


@pytest.mark.task(1)
async def test_index_page_escapes_question_text(polls_client):
    body = await page(polls_client, "/")
    assert_shows(body, "Is <b>bold</b> & \"quoted\" 'text' shown as typed?", "the index page")
    assert_escaped(body, "<b>bold</b>", "the index page")


@pytest.mark.task(1)
async def test_index_page_follows_the_database(polls_client, polls_db):
    polls_db.execute("DELETE FROM question WHERE id = 1")
    polls_db.execute("INSERT INTO question (question_text, pub_date) VALUES ('Tabs or spaces?', '2024-1-1')")
    body = await page(polls_client, "/")
    assert_shows(body, "Tabs or spaces?", "the index page")
    assert 'href="/poll/1"' not in body, "expected a deleted poll to leave the index, its link stayed"


@pytest.mark.task(1)
async def test_index_page_without_polls(polls_client, polls_db):
    polls_db.execute("TRUNCATE question CASCADE")
    body = await page(polls_client, "/")
    assert "/poll/" not in body, f"expected no poll links for an empty database, got:\n{body[:800]}"


# --- task 2: get_question and the poll page --------------------------------------------------------------


@pytest.mark.task(2)
async def test_get_question_returns_the_question_and_its_choices(polls, polls_client, polls_db):
    get_question = polls.attribute("db", "get_question")
    engine = polls_client.app[polls.attribute("db", "DB_KEY")]
    async with engine.acquire() as conn:
        question, choices = await get_question(conn, 3)
    assert (question.id, question.question_text) == (3, "Which colour do you like best?"), (
        f"expected get_question(conn, 3) to return question 3 first, got {tuple(question)}"
    )
    got = [c.choice_text for c in choices]
    assert got == choices_of(polls_db, 3), (
        f"expected question 3's choices in id order, {choices_of(polls_db, 3)}, got {got}. "
        "Hint: where(choice.c.question_id == question_id).order_by(choice.c.id)."
    )


@pytest.mark.task(2)
async def test_get_question_raises_record_not_found(polls, polls_client):
    get_question = polls.attribute("db", "get_question")
    record_not_found = polls.attribute("db", "RecordNotFound")
    engine = polls_client.app[polls.attribute("db", "DB_KEY")]
    async with engine.acquire() as conn:
        try:
            got = await get_question(conn, 99)
        except record_not_found:
            return
    pytest.fail(f"expected get_question(conn, 99) to raise RecordNotFound, got {got!r}", pytrace=False)


@pytest.mark.task(2)
@pytest.mark.parametrize("question_id", [1, 3])
async def test_poll_page_shows_the_question_and_its_choices(polls_client, polls_db, question_id):
    body = await page(polls_client, f"/poll/{question_id}")
    text = dict(questions(polls_db))[question_id]
    assert_shows(body, text, f"/poll/{question_id}")
    for choice_text in choices_of(polls_db, question_id):
        assert_shows(body, choice_text, f"/poll/{question_id}")
    other = "Red" if question_id == 1 else "Not much"
    assert other not in body, f"expected /poll/{question_id} to list only its own choices, it shows {other!r}"


@pytest.mark.task(2)
async def test_poll_page_escapes_question_and_choices(polls_client):
    body = await page(polls_client, "/poll/2")
    assert_shows(body, '<script>alert("gotcha")</script>', "/poll/2")
    assert_escaped(body, "<script>", "/poll/2")
    assert_escaped(body, "<b>bold</b>", "/poll/2")


# --- task 3: 404, never 500 ------------------------------------------------------------------------------


@pytest.mark.task(3)
@pytest.mark.parametrize(
    "path",
    ["/poll/99", "/poll/0", "/poll/abc", "/poll/-1", "/poll/1.5", "/poll/2147483648", "/poll/99999999999",
     "/poll/" + "9" * 5000],
    ids=["missing", "zero", "not-a-number", "negative", "decimal", "int32-overflow", "eleven-digits",
         "5000-digits"],
)  # fmt: skip
async def test_impossible_polls_are_404(polls_client, path):
    response = await polls_client.get(path)
    shown = path if len(path) < 40 else path[:20] + "..."
    assert response.status == 404, (
        f"expected GET {shown} to answer 404, got {response.status}. Hint: catch RecordNotFound in the view "
        "and raise web.HTTPNotFound; Python's int() refuses strings over 4300 digits, so let the route "
        "accept only ids that can exist ({question_id:[0-9]{1,10}})."
    )


@pytest.mark.task(3)
async def test_deleted_poll_is_404(polls_client, polls_db):
    polls_db.execute("DELETE FROM question WHERE id = 3")
    response = await polls_client.get("/poll/3")
    assert response.status == 404, f"expected a deleted poll to answer 404, got {response.status}"
    assert "3" in await response.text(), "expected the 404 message to name the poll that was asked for"
