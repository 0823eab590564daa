"""Step 7: an atomic vote, the vote form and its answers (302, 400, 404), and the results page."""

from __future__ import annotations

import asyncio
import html
import re

import aiohttp
import pytest

CONCURRENT_VOTES = 200

# --- helpers ---------------------------------------------------------------------------------------------


def votes(db) -> dict[int, int]:
    """choice id -> votes, as PostgreSQL holds them now."""
    return dict(db.execute("SELECT id, votes FROM choice ORDER BY id"))


@pytest.fixture
def busy_config(polls_db, make_config):
    """A config with a pool of 10 connections: room for votes to overlap."""
    config = make_config(polls_db)
    config["postgres"].update(minsize=1, maxsize=10)
    return config


@pytest.fixture
async def busy_client(polls, busy_config, aiohttp_client):
    return await aiohttp_client(polls.attribute("main", "init_app")(busy_config))


def engine_of(polls, client):
    return client.app[polls.attribute("db", "DB_KEY")]


async def call_vote(polls, client, question_id, choice_id) -> None:
    vote = polls.attribute("db", "vote")
    async with engine_of(polls, client).acquire() as conn:
        await vote(conn, question_id, choice_id)


async def expect_not_found(polls, client, question_id, choice_id) -> None:
    record_not_found = polls.attribute("db", "RecordNotFound")
    try:
        await call_vote(polls, client, question_id, choice_id)
    except record_not_found:
        return
    except Exception as exc:
        pytest.fail(
            f"expected vote(conn, {question_id}, {choice_id}) to raise RecordNotFound, it raised "
            f"{type(exc).__name__}: {exc}",
            pytrace=False,
        )
    pytest.fail(
        f"expected vote(conn, {question_id}, {choice_id}) to raise RecordNotFound, it returned normally. "
        "Hint: when result.rowcount == 0 the UPDATE matched nothing.",
        pytrace=False,
    )


async def post_vote(client, question_id, choice, **kwargs):
    data = {} if choice is None else {"choice": choice}
    return await client.post(f"/poll/{question_id}/vote", data=data, allow_redirects=False, **kwargs)


def page_text(body: str) -> str:
    """What a reader sees: tags removed, entities decoded, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


# --- task 1: vote() ----------------------------------------------------------------------------------------


@pytest.mark.task(1)
async def test_vote_adds_one_to_that_choice_only(polls, polls_client, polls_db):
    before = votes(polls_db)
    await call_vote(polls, polls_client, 3, 6)
    after = votes(polls_db)
    expected = {**before, 6: before[6] + 1}
    assert after == expected, (
        f"expected vote(conn, 3, 6) to add one vote to choice 6 and change nothing else:\n"
        f"  expected {expected}\n  got      {after}"
    )


@pytest.mark.task(1)
@pytest.mark.parametrize(
    ("question_id", "choice_id", "what"),
    [(1, 6, "a choice of another poll"), (1, 99, "a missing choice"), (99, 1, "a missing poll"),
     (1, 99999999999, "an id beyond PostgreSQL's integer")],
    ids=["foreign-choice", "missing-choice", "missing-poll", "huge-id"],
)  # fmt: skip
async def test_vote_refuses_what_is_not_the_polls_choice(polls, polls_client, polls_db, question_id,
                                                         choice_id, what):  # fmt: skip
    before = votes(polls_db)
    await expect_not_found(polls, polls_client, question_id, choice_id)
    assert votes(polls_db) == before, (
        f"expected {what} to change no votes at all, got {votes(polls_db)} (before: {before}). "
        "Hint: put both conditions in the UPDATE's WHERE: choice.c.id == ... and choice.c.question_id == ..."
    )


@pytest.mark.task(1)
async def test_concurrent_votes_are_all_counted(polls, busy_client, polls_db):
    before = votes(polls_db)[7]
    await asyncio.gather(*(call_vote(polls, busy_client, 3, 7) for _ in range(CONCURRENT_VOTES)))
    after = votes(polls_db)[7]
    assert after == before + CONCURRENT_VOTES, (
        f"expected {CONCURRENT_VOTES} concurrent votes to add {CONCURRENT_VOTES}, got {after - before}: "
        "some were lost. Hint: do not read the count and write it back; let PostgreSQL add 1 in one "
        "statement: .values(votes=choice.c.votes + 1)."
    )


# --- task 2: the vote form and POST /poll/{id}/vote ---------------------------------------------------------


@pytest.mark.task(2)
async def test_poll_page_has_a_vote_form(polls_client):
    body = await (await polls_client.get("/poll/1")).text()
    form = re.search(r"<form[^>]*>", body)
    assert form and 'method="post"' in form.group(0).lower() and 'action="/poll/1/vote"' in form.group(0), (
        f'expected /poll/1 to hold <form action="/poll/1/vote" method="post">, found '
        f"{form.group(0) if form else 'no form'}. "
        "Hint: action=\"{{ url('vote', question_id=question.id) }}\"."
    )
    for choice_id in (1, 2, 3):
        field = re.search(rf'<input[^>]*value="{choice_id}"[^>]*>', body)
        assert field and 'name="choice"' in field.group(0) and 'type="radio"' in field.group(0), (
            f'expected a radio button name="choice" value="{choice_id}" for choice {choice_id}, '
            f"found {field.group(0) if field else 'none'}"
        )


@pytest.mark.task(2)
async def test_vote_redirects_to_the_results(polls_client, polls_db):
    response = await post_vote(polls_client, 1, "2")
    assert response.status == 302, f"expected a 302 redirect after a vote, got {response.status}"
    location = response.headers.get("Location")
    assert location == "/poll/1/results", (
        f"expected to be sent to /poll/1/results, got Location: {location}. "
        "Hint: request.app.router['results'].url_for(question_id=str(question_id))."
    )
    assert votes(polls_db)[2] == 1, f"expected choice 2 to have 1 vote, it has {votes(polls_db)[2]}"


@pytest.mark.task(2)
@pytest.mark.parametrize(
    ("choice", "what"),
    [(None, "no choice at all"), ("", "an empty choice"), ("abc", "a word"), ("1.5", "a decimal")],
    ids=["missing", "empty", "word", "decimal"],
)
async def test_bad_choice_is_400_with_a_message(polls_client, polls_db, choice, what):
    before = votes(polls_db)
    response = await post_vote(polls_client, 1, choice)
    body = await response.text()
    assert response.status == 400, (
        f"expected 400 for {what}, got {response.status}. Hint: raise web.HTTPBadRequest(text=...) "
        "when the form has no choice or int() refuses it."
    )
    assert body.strip() != "400: Bad Request" and len(body.strip()) > 15 and "Traceback" not in body, (
        f"expected a sentence telling the visitor what went wrong, got {body!r}"
    )
    assert votes(polls_db) == before, f"expected {what} to count no vote, the votes changed"


@pytest.mark.task(2)
@pytest.mark.parametrize(
    ("question_id", "choice", "what"),
    [(1, "6", "a choice of another poll"), (1, "99", "a missing choice"), (99, "1", "a missing poll"),
     (1, "99999999999", "an eleven-digit choice")],
    ids=["foreign-choice", "missing-choice", "missing-poll", "huge-choice"],
)  # fmt: skip
async def test_choice_not_in_the_poll_is_404(polls_client, polls_db, question_id, choice, what):
    before = votes(polls_db)
    response = await post_vote(polls_client, question_id, choice)
    assert response.status == 404, (
        f"expected 404 for {what}, got {response.status}. Hint: catch RecordNotFound from db.vote and "
        "raise web.HTTPNotFound."
    )
    assert votes(polls_db) == before, f"expected {what} to count no vote, the votes changed"


@pytest.mark.task(2)
@pytest.mark.parametrize(
    "choice",
    ["-1", "0", "9" * 5000, " 2 ", "\u0661", "2\x00"],
    ids=["negative", "zero", "5000-digits", "spaces", "arabic-digit", "nul-byte"],
)
async def test_odd_choices_are_never_a_server_error(polls_client, choice):
    response = await post_vote(polls_client, 1, choice)
    assert response.status < 500, (
        f"expected a client error or a redirect for the choice {choice[:20]!r}, got {response.status}. "
        "Hint: int() raises ValueError for text that is not a number (and for over 4300 digits): "
        "turn every such error into a 400."
    )


@pytest.mark.task(2)
async def test_uploaded_file_as_choice_is_400(polls_client):
    form = aiohttp.FormData()
    form.add_field("choice", b"1", filename="choice.txt", content_type="text/plain")
    response = await polls_client.post("/poll/1/vote", data=form, allow_redirects=False)
    assert response.status == 400, (
        f"expected 400 when `choice` is an uploaded file, got {response.status}. Hint: request.post() gives "
        "a web.FileField for a file; int() of it raises TypeError: catch that too."
    )


@pytest.mark.task(2)
@pytest.mark.parametrize(
    ("body", "content_type", "what"),
    [
        (b"choice=\xff", "application/x-www-form-urlencoded", "a body that is not UTF-8"),
        (b"choice=1", "application/x-www-form-urlencoded; charset=no-such-charset", "an unknown charset"),
    ],
    ids=["not-utf8", "unknown-charset"],
)
async def test_undecodable_form_is_400(polls_client, polls_db, body, content_type, what):
    before = votes(polls_db)
    response = await polls_client.post(
        "/poll/1/vote", data=body, headers={"Content-Type": content_type}, allow_redirects=False
    )
    assert response.status == 400, (
        f"expected 400 for {what}, got {response.status}. Hint: read the form with read_form(request), "
        "which turns a body it cannot decode into a 400."
    )
    assert votes(polls_db) == before, f"expected {what} to count no vote, the votes changed"


@pytest.mark.task(2)
async def test_concurrent_votes_over_http_are_all_counted(busy_client, polls_db):
    before = votes(polls_db)
    responses = await asyncio.gather(
        *(post_vote(busy_client, 3, str(6 + n % 3)) for n in range(CONCURRENT_VOTES))
    )
    statuses = sorted({response.status for response in responses})
    assert statuses == [302], f"expected every vote to be answered 302, got the statuses {statuses}"
    after = votes(polls_db)
    added = {choice: after[choice] - before[choice] for choice in (6, 7, 8)}
    expected = {6: 67, 7: 67, 8: 66}
    assert added == expected, (
        f"expected {CONCURRENT_VOTES} simultaneous votes to add {expected}, they added {added}. "
        "Hint: votes get lost when db.vote reads the count and writes it back (task 1)."
    )


# --- task 3: the results page -------------------------------------------------------------------------------


@pytest.mark.task(3)
async def test_results_show_every_choice_with_its_votes(polls_client, polls_db):
    response = await polls_client.get("/poll/3/results")
    body = await response.text()
    assert (response.status, response.content_type) == (200, "text/html"), (
        f"expected /poll/3/results to answer 200 with an HTML page, got {response.status} "
        f"{response.content_type}: {body[:200]!r}"
    )
    text = page_text(body)
    for choice_text, count in polls_db.execute(
        "SELECT choice_text, votes FROM choice WHERE question_id = 3 ORDER BY id"
    ):
        shown = re.search(rf"{re.escape(choice_text)}\D*(\d+)", text)
        assert shown and int(shown.group(1)) == count, (
            f"expected the results to show {choice_text!r} with {count} votes; page: {text[:300]!r}. "
            "Hint: {{ choice.choice_text }}: {{ choice.votes }} for every choice."
        )


@pytest.mark.task(3)
async def test_results_follow_the_votes(polls_client, polls_db):
    polls_db.execute("UPDATE choice SET votes = 41 WHERE id = 3")
    text = page_text(await (await polls_client.get("/poll/1/results")).text())
    assert re.search(r"Just hacking again\D*41\b", text), (
        f"expected the results to read the votes from the database (41 for 'Just hacking again'), got "
        f"{text[:300]!r}"
    )


@pytest.mark.task(3)
async def test_results_escape_the_texts(polls_client):
    body = await (await polls_client.get("/poll/2/results")).text()
    assert "<script>" not in body and "<b>bold" not in body, (
        "expected the results page to escape question and choice texts, raw HTML came through. "
        "Hint: never mark them |safe."
    )
    assert "gotcha" in body, "expected the results page to list the choices of poll 2"


@pytest.mark.task(3)
@pytest.mark.parametrize("path", ["/poll/99/results", "/poll/2147483648/results", "/poll/abc/results"])
async def test_results_of_a_missing_poll_are_404(polls_client, path):
    response = await polls_client.get(path)
    assert response.status == 404, (
        f"expected GET {path} to answer 404, got {response.status}. Hint: catch RecordNotFound in the view."
    )
