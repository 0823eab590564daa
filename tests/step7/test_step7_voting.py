"""Step 7: an atomic vote, the vote form and its answers (302, 400, 404), and the results page.

`vote()` is called inside the learner's process on a connection of the learner's own engine; the form and
the pages are reached over HTTP; the judge counts the votes in PostgreSQL itself. Besides the seeded polls,
every test gets a poll the judge writes with ids, words and vote counts that change from run to run.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser

import aiohttp
import pytest
from psycopg2 import sql

from tests.conftest import (
    ServedApp,
    around,
    http_session,
    judge_connect,
    page_text,
    status_with_a_broken_database,
    valid_config,
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

# Votes sent at once, to vote() and over HTTP, with a pool of 10 connections. A vote that reads the count
# and writes it back loses votes as soon as two overlap (the pool's ten run side by side): in ten runs on a
# loaded machine, 60 of them lost 38 or more straight to vote() and at least two on every choice over HTTP
# (18 of 20 at best). 200 cost step 7 about 0.45 CPU-s more, for no mistake that 60 lets through.
CONCURRENT_VOTES = 60
WORDS = ["otter", "maple", "comet", "pepper", "harbor", "violet", "tundra", "cobalt", "lantern", "quartz",
         "meadow", "saffron", "glacier", "ember", "willow", "falcon"]  # fmt: skip
NOT_KEPT = (
    "the view answered as if the vote counted, but PostgreSQL does not have it: call db.vote, and let its "
    "UPDATE be committed (aiopg commits each statement by itself; SQLAlchemy's engine.connect() rolls back "
    "at the end of its block unless you commit, engine.begin() commits)"
)
WHERE_HINT = (
    "Hint: the UPDATE's WHERE needs both conditions, "
    ".where(choice.c.id == choice_id, choice.c.question_id == question_id)"
)

# --- the judge's own poll, different on every run ----------------------------------------------------------


@dataclass
class Poll:
    id: int
    text: str
    choices: list[tuple[int, str, int]]  # (id, text, votes) in id order

    @property
    def choice_ids(self) -> list[int]:
        return [choice_id for choice_id, _, _ in self.choices]


def word(rng: random.Random) -> str:
    return f"{rng.choice(WORDS)}{rng.randint(10, 99)}"


@pytest.fixture
def judge_poll(polls_db) -> Poll:
    rng = random.Random()
    a, b, c = word(rng), word(rng), word(rng)
    question_id = rng.randint(100, 99999)
    text = f'Is <b>{a}</b> & "{b}" better than {c}?'
    ids = sorted(rng.sample(range(1000, 999999), 3))
    texts = [f'<script>alert("{b}")</script>', f"{c} & {a}", f"{b} or not"]
    choices = [(choice_id, texts[n], rng.randint(1, 60)) for n, choice_id in enumerate(ids)]
    polls_db.execute(
        sql.SQL("INSERT INTO public.question (id, question_text, pub_date) VALUES ({}, {}, '2024-02-29')")
        .format(sql.Literal(question_id), sql.Literal(text))
    )  # fmt: skip
    for choice_id, choice_text, count in reversed(choices):
        polls_db.execute(
            sql.SQL("INSERT INTO public.choice (id, choice_text, votes, question_id) VALUES ({}, {}, {}, {})")
            .format(*map(sql.Literal, (choice_id, choice_text, count, question_id)))
        )  # fmt: skip
    return Poll(question_id, text, choices)


def missing(db, table: str) -> int:
    """An id that no row of `table` has, different on every run."""
    rows = db.execute(sql.SQL("SELECT id FROM {}").format(sql.Identifier("public", table)))
    taken = {row[0] for row in rows}
    return next(n for n in random.sample(range(100, 999999), 50) if n not in taken)


# --- helpers ---------------------------------------------------------------------------------------------


def votes(db) -> dict[int, int]:
    """choice id -> votes, as PostgreSQL holds them now."""
    return dict(db.execute("SELECT id, votes FROM public.choice ORDER BY id"))


def changes(before: dict[int, int], after: dict[int, int]) -> dict[int, str]:
    return {key: f"{before.get(key)} -> {after.get(key)}" for key in sorted(set(before) | set(after))
            if before.get(key) != after.get(key)}  # fmt: skip


@pytest.fixture
def busy_app(learner, polls_db, make_config):
    """The learner's app with a pool of 10 connections: room for votes to overlap."""
    config = make_config(polls_db)
    config["postgres"].update(minsize=1, maxsize=10)
    return learner.serve(config)


@pytest.fixture
async def busy_client(busy_app):
    async with http_session(busy_app.url) as session:
        yield session


@pytest.fixture(scope="module")
def layout() -> Layout:
    """Where the judge serves the app in this module (tests/moved.py): it changes from run to run."""
    return Layout()


@pytest.fixture(scope="module")
def mounted_apps() -> dict[int | None, ServedApp]:
    return {}


@pytest.fixture
def mounted_app(module_learner, mounted_apps, pg_database, polls_db, layout) -> ServedApp:
    """The learner's app served as `layout` says: addresses the router builds for a route move with it,
    written ones and ones pasted onto another route's do not. One app for the module, like polls_app."""
    pid = module_learner.harness.pid
    if pid not in mounted_apps or module_learner.harness.exit_status() is not None:
        mounted_apps.clear()
        mounted_apps[pid] = layout.serve(module_learner, valid_config(pg_database))
    return mounted_apps[pid]


@pytest.fixture
async def mounted_client(mounted_app):
    async with http_session(mounted_app.url) as session:
        yield session


async def post_vote(client, question_id, choice, **kwargs):
    data = {} if choice is None else {"choice": choice}
    return await client.post(f"/poll/{question_id}/vote", data=data, allow_redirects=False, **kwargs)


@dataclass
class Label:
    target: str | None  # its for=, None when it has none
    text: list[str] = field(default_factory=list)
    inputs: list[dict[str, str]] = field(default_factory=list)  # the <input>s inside it


class FormParts(HTMLParser):
    """The inputs, labels and submit controls of a page, read as data (nothing of it runs in the judge)."""

    def __init__(self, body: str) -> None:
        super().__init__(convert_charrefs=True)
        self.inputs: list[dict[str, str]] = []
        self.labels: list[Label] = []
        self.submits: list[str] = []  # what each submit control shows
        self._label: Label | None = None
        self._button: list[str] | None = None
        self.feed(body)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "input":
            self.inputs.append(found)
            if self._label is not None:
                self._label.inputs.append(found)
            if found.get("type", "").lower() == "submit":
                self.submits.append(found.get("value", "Submit"))  # a browser writes "Submit" without one
        elif tag == "label":
            self._label = Label(found.get("for") if "for" in found else None)
        elif tag == "button" and found.get("type", "submit").lower() not in ("button", "reset"):
            self._button = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "label" and self._label is not None:
            self.labels.append(self._label)
            self._label = None
        elif tag == "button" and self._button is not None:
            self.submits.append("".join(self._button))
            self._button = None

    def handle_data(self, data: str) -> None:
        for parts in (self._label.text if self._label else None, self._button):
            if parts is not None:
                parts.append(data)

    def labelled(self, label: Label) -> dict[str, str] | None:
        """The input a label clicks, as HTML says: the one its for= names, else the first in it."""
        if label.target is None:
            return label.inputs[0] if label.inputs else None
        return next((found for found in self.inputs if found.get("id") == label.target), None)


# --- task 1: vote() ----------------------------------------------------------------------------------------


@pytest.mark.task(1)
def test_vote_adds_one_to_that_choice_only(learner, polls_app, polls_db, judge_poll):
    choice_id = judge_poll.choice_ids[1]
    before = votes(polls_db)
    learner.call_or_fail("db:vote", judge_poll.id, choice_id, connection=polls_app)
    after = votes(polls_db)
    expected = {**before, choice_id: before[choice_id] + 1}
    others = [other for other in after if other != choice_id and after[other] != before.get(other)]
    hint = (f"the UPDATE matched other choices too. {WHERE_HINT}" if others else
            "Hint: update(choice).where(...).values(votes=choice.c.votes + 1)")  # fmt: skip
    assert after == expected, (
        f"expected vote(conn, {judge_poll.id}, {choice_id}) to add one vote to choice {choice_id} and change "
        f"nothing else; it changed (choice id: before -> after) {changes(before, after) or 'nothing'}: "
        f"{hint}."
    )


@pytest.mark.task(1)
@pytest.mark.parametrize("case", ["foreign-choice", "missing-choice", "missing-poll", "huge-id"])
def test_vote_refuses_what_is_not_the_polls_choice(learner, polls_app, polls_db, judge_poll, case):
    question_id, choice_id, what = {
        "foreign-choice": (judge_poll.id, 6, "choice 6 belongs to poll 3"),
        "missing-choice": (judge_poll.id, missing(polls_db, "choice"), "no such choice"),
        "missing-poll": (missing(polls_db, "question"), judge_poll.choice_ids[0],
                         f"no such poll; choice {judge_poll.choice_ids[0]} belongs to poll {judge_poll.id}"),
        "huge-id": (judge_poll.id, 99999999999, "an id beyond PostgreSQL's integer"),
    }[case]  # fmt: skip
    call = f"vote(conn, {question_id}, {choice_id}) ({what})"
    before = votes(polls_db)
    raised = None
    try:
        learner.call("db:vote", question_id, choice_id, connection=polls_app)
    except LearnerRaised as exc:
        raised = exc
    after = votes(polls_db)
    if after != before:
        pytest.fail(
            f"expected {call} to change no votes at all; it changed (choice id: before -> after) "
            f"{changes(before, after)}: the UPDATE matched a choice that is not this poll's. {WHERE_HINT}.",
            pytrace=False,
        )
    if raised is None:
        pytest.fail(
            f"expected {call} to raise RecordNotFound, it returned normally. Hint: when the UPDATE "
            "matched nothing, result.rowcount == 0: then raise RecordNotFound.",
            pytrace=False,
        )
    assert raised.name == "RecordNotFound", (
        f"expected {call} to raise RecordNotFound, it raised {raised.name}: {raised.message}"
    )


@pytest.mark.task(1)
@pytest.mark.parametrize("case", ["foreign-choice", "huge-id"])
def test_vote_refusal_names_the_poll_and_the_choice(learner, polls_app, judge_poll, case):
    question_id, choice_id = judge_poll.id, 6 if case == "foreign-choice" else 99999999999
    call = f"vote(conn, {question_id}, {choice_id})"
    try:
        got = learner.call("db:vote", question_id, choice_id, connection=polls_app)
    except LearnerRaised as exc:
        raised = exc
    else:
        pytest.fail(f"expected {call} (not a choice of that poll) to raise RecordNotFound, it returned "
                    f"{str(got)[:200]}", pytrace=False)  # fmt: skip
    named = all(re.search(rf"\b{n}\b", raised.message) for n in (question_id, choice_id))
    assert raised.name == "RecordNotFound" and named, (
        f"expected {call} (not a choice of that poll) to raise RecordNotFound whose message names the poll "
        f"and the choice, such as 'Poll {question_id} has no choice {choice_id}.', it raised {raised.name}: "
        f'{raised.message!r}. Hint: raise RecordNotFound(f"Poll {{question_id}} has no choice '
        '{choice_id}."): the 404 the view makes of it shows that text.'
    )


OTHER_VOTES = 5  # the votes the judge's own transaction adds while vote() runs
LOCK_WAIT = 10.0  # seconds for vote() to reach the row the judge holds (it is one UPDATE away)


def votes_of_a_vote_during_another_transaction(learner, app, db, question_id: int, choice_id: int) -> int:
    """The count of `choice_id` after vote() ran while another transaction (the judge's, as another app
    process or program would) had added OTHER_VOTES to it and not yet committed. The judge commits once
    vote() waits for that row's lock (or has returned): an UPDATE that adds 1 in PostgreSQL then adds to
    the committed count, a count read before and written back drops the other votes."""
    other = judge_connect(db.server.dsn(db.name))
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            learner.call("db:vote", question_id, choice_id, connection=app)
        except LearnerRaised as exc:
            outcome["raised"] = exc
        except BaseException as exc:  # pytest.fail from the learner's process dying: shown below
            outcome["failed"] = exc

    caller = threading.Thread(target=run, daemon=True)
    try:
        with other.cursor() as cur:
            cur.execute("UPDATE public.choice SET votes = votes + %s WHERE id = %s", (OTHER_VOTES, choice_id))
        caller.start()
        deadline = time.monotonic() + LOCK_WAIT
        while caller.is_alive() and time.monotonic() < deadline:
            waiting = db.execute(
                "SELECT count(*) FROM pg_catalog.pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )[0][0]
            if waiting:
                break
            time.sleep(0.01)
        other.commit()
        caller.join(LOCK_WAIT)
    finally:
        other.close()
    if caller.is_alive():
        pytest.fail(f"vote(conn, {question_id}, {choice_id}) did not return within {LOCK_WAIT:.0f} s after "
                    "the judge's transaction ended", pytrace=False)  # fmt: skip
    if "failed" in outcome:
        raise outcome["failed"]  # type: ignore[misc]
    if "raised" in outcome:
        exc = outcome["raised"]
        pytest.fail(f"vote(conn, {question_id}, {choice_id}) raised {exc.name}: {exc.message}",  # type: ignore[attr-defined]
                    pytrace=False)  # fmt: skip
    return votes(db)[choice_id]


@pytest.mark.task(1)
def test_a_vote_during_another_transaction_keeps_its_votes(learner, polls_app, polls_db, judge_poll):
    choice_id = judge_poll.choice_ids[0]
    before = votes(polls_db)[choice_id]
    after = votes_of_a_vote_during_another_transaction(learner, polls_app, polls_db, judge_poll.id, choice_id)
    expected = before + OTHER_VOTES + 1
    assert after == expected, (
        f"another transaction (as another process of your app would) added {OTHER_VOTES} votes to choice "
        f"{choice_id} ({before} -> {before + OTHER_VOTES}) while vote(conn, {judge_poll.id}, {choice_id}) "
        f"ran; expected {expected} once both were done, got {after}: vote() read the count before the other "
        "transaction committed and wrote its own number back, so some were lost. A lock inside your "
        "app (asyncio.Lock) cannot prevent that: other processes and programs write to the same table. "
        "Hint: one UPDATE in which PostgreSQL adds the vote, .values(votes=choice.c.votes + 1)."
    )


@pytest.mark.task(1)
def test_concurrent_votes_are_all_counted(learner, busy_app, polls_db, judge_poll):
    choice_id = judge_poll.choice_ids[2]
    before = votes(polls_db)[choice_id]
    learner.call_or_fail("db:vote", judge_poll.id, choice_id, connection=busy_app, times=CONCURRENT_VOTES)
    added = votes(polls_db)[choice_id] - before
    assert added == CONCURRENT_VOTES, (
        f"expected {CONCURRENT_VOTES} calls of vote(conn, {judge_poll.id}, {choice_id}) at the same time (a "
        f"pool of 10 connections) to add {CONCURRENT_VOTES} votes, they added {added}: some were lost. "
        "Hint: do not read the count and write it back; let PostgreSQL add 1 in one statement: "
        ".values(votes=choice.c.votes + 1)."
    )


@pytest.mark.task(1)
@pytest.mark.parametrize("which", ["choice_id", "question_id"])
def test_vote_never_runs_its_arguments_as_sql(learner, polls_app, polls_db, judge_poll, which):
    # As text: a value to compare with, never a piece of SQL. Spliced into the WHERE, "OR TRUE" matches
    # every choice of the poll (or every choice at all).
    args = {"question_id": judge_poll.id, "choice_id": missing(polls_db, "choice")}
    args[which] = f"{args[which]} OR TRUE"
    shown = f"vote(conn, {args['question_id']!r}, {args['choice_id']!r})"
    before = votes(polls_db)
    try:
        learner.call("db:vote", args["question_id"], args["choice_id"], connection=polls_app)
    except LearnerRaised:
        pass  # RecordNotFound, or PostgreSQL refusing the text as an integer: both are safe
    after = votes(polls_db)
    assert after == before, (
        f"{shown} changed the votes (choice id: before -> after) {changes(before, after)}: the text "
        f"passed as {which} became part of the SQL (SQL injection). Hint: build the UPDATE with SQLAlchemy "
        "expressions, update(choice).where(choice.c.id == choice_id, ...), never with f-strings or text()."
    )


@pytest.mark.task(1)
def test_vote_builds_its_update_as_an_expression(learner, polls_app, judge_poll):
    choice_id = judge_poll.choice_ids[0]
    texts = learner.sql_text_sent("db:vote", judge_poll.id, choice_id, connection=polls_app)
    assert not texts, (
        f"vote(conn, {judge_poll.id}, {choice_id}) gave conn.execute SQL text instead of a SQLAlchemy "
        f"expression: {texts[0]!r}. Pasting the ids into SQL (an f-string, even after "
        "int(), or text()) is what the task forbids: a visitor's value is compared with, never SQL. Hint: "
        "update(choice).where(choice.c.id == choice_id, choice.c.question_id == question_id)"
        ".values(votes=choice.c.votes + 1)."
    )


@pytest.mark.task(1)
def test_vote_is_one_statement(learner, polls_app, judge_poll):
    # A SELECT that checks the choice, then an UPDATE by its id, is read-then-write again: between the two,
    # another transaction can move or delete the choice, and the UPDATE never knows.
    choice_id = judge_poll.choice_ids[1]
    call = f"vote(conn, {judge_poll.id}, {choice_id})"
    learner.sql_statements()  # forget what earlier calls sent
    learner.call_or_fail("db:vote", judge_poll.id, choice_id, connection=polls_app, watch_sql=True)
    sent = learner.sql_statements()
    shown = ", ".join(sent) or "none"
    assert len(sent) == 1, (
        f"{call} (a choice of that poll) handed conn.execute {len(sent)} statements ({shown}), expected one "
        "UPDATE: a second statement (a SELECT that checks the choice before the UPDATE, or reads the votes "
        "after it) is read-then-write, and what it read can change before the other one runs. Hint: one "
        "update(choice).where(choice.c.id == choice_id, choice.c.question_id == question_id)"
        ".values(votes=choice.c.votes + 1); its rowcount (0: no such choice in this poll) says when to raise "
        "RecordNotFound."
    )


# --- task 2: the vote form and POST /poll/{id}/vote ---------------------------------------------------------


@pytest.mark.task(1)
def test_vote_lets_a_database_error_through(learner, polls_app, polls_db, judge_poll):
    call = f"vote(conn, {judge_poll.id}, {judge_poll.choice_ids[0]})"
    polls_db.execute("ALTER TABLE public.choice RENAME COLUMN votes TO renamed_by_the_judge")
    try:
        learner.call("db:vote", judge_poll.id, judge_poll.choice_ids[0], connection=polls_app)
    except LearnerRaised as exc:
        name, message = exc.name, exc.message
    else:
        name = message = None
    finally:
        polls_db.execute("ALTER TABLE public.choice RENAME COLUMN renamed_by_the_judge TO votes")
    shown = f"raised {name}: {message[:200]}" if name and message is not None else "returned normally"
    assert name != "RecordNotFound" and "votes" in (message or ""), (
        f"with the votes column renamed (the database is broken, the choice exists), expected {call} to let "
        f"the database's error through, it {shown}. Hint: raise "
        "RecordNotFound only when the UPDATE matched no row (rowcount 0); catching psycopg2's errors in vote "
        "turns a broken database into a missing choice (and the view into a 404)."
    )


@pytest.mark.task(2)
async def test_vote_borrows_a_connection_of_the_apps_pool(polls_client, polls_db, judge_poll):
    path, data = f"/poll/{judge_poll.id}/vote", {"choice": str(judge_poll.choice_ids[0])}
    await assert_served_by_the_pool(polls_client, polls_db, "POST", path, "choice", data=data)


@pytest.mark.task(2)
async def test_vote_gives_its_connection_back(learner, polls_db, make_config, judge_poll):
    path, data = f"/poll/{judge_poll.id}/vote", {"choice": str(judge_poll.choice_ids[0])}
    app = learner.serve(make_config(polls_db))
    await assert_connections_given_back(learner, app, "POST", path, data=data)


@pytest.mark.task(2)
async def test_vote_gives_its_connection_back_when_the_query_fails(learner, polls_db, make_config,
                                                                   judge_poll):  # fmt: skip
    path, data = f"/poll/{judge_poll.id}/vote", {"choice": str(judge_poll.choice_ids[0])}
    app = learner.serve(make_config(polls_db))
    await assert_given_back_when_the_query_fails(learner, polls_db, app, "POST", path, "choice", data=data)


@pytest.mark.task(2)
async def test_poll_page_has_a_vote_form(polls_client, judge_poll):
    path = f"/poll/{judge_poll.id}"
    body = await page(polls_client, path)
    form = re.search(r"<form[^>]*>", body)
    action = f'action="{path}/vote"'
    assert form and 'method="post"' in form.group(0).lower() and action in form.group(0), (
        f'expected {path} to hold <form {action} method="post">, found '
        f"{form.group(0) if form else 'no form'}. "
        "Hint: action=\"{{ url('vote', question_id=question.id) }}\"."
    )
    for choice_id in judge_poll.choice_ids:
        field = re.search(rf'<input[^>]*value="{choice_id}"[^>]*>', body)
        found = field.group(0) if field else ""
        hint = (
            'value="{{ choice.id }}"' if not found
            else 'name="choice": the name the vote view reads' if 'name="choice"' not in found
            else 'type="radio": radio buttons that share a name send exactly one answer, check boxes send '
            "every box ticked"
        )
        assert 'name="choice"' in found and 'type="radio"' in found, (
            f'expected a radio button name="choice" value="{choice_id}" for choice {choice_id}, found '
            f"{found or 'none'}. Hint: {hint}."
        )


@pytest.mark.task(2)
async def test_vote_form_shows_every_choice_escaped(polls_client, judge_poll):
    path = f"/poll/{judge_poll.id}"
    body = await page(polls_client, path)
    raw = judge_poll.choices[0][1]
    assert raw not in body, (
        f"expected the vote form on {path} to escape the choice {raw!r}, it came out raw: a visitor's text "
        f"became HTML. Hint: {{{{ choice.choice_text }}}}, never marked |safe. The page around it: "
        f"{around(body, raw)}"
    )
    form = re.search(r"<form\b.*?</form\s*>", body, re.S | re.I)
    text = page_text(form.group(0)) if form else ""
    for _, choice_text, _ in judge_poll.choices:
        assert choice_text in text, (
            f"expected the vote form on {path} to show every choice's text, {choice_text!r} is not in "
            f"{'the form, which reads ' + repr(text[:400]) if form else 'it: the page has no <form>'}. Hint: "
            '<label for="choice{{ choice.id }}">{{ choice.choice_text }}</label> beside each radio button, '
            "inside the <form>."
        )


@pytest.mark.task(2)
async def test_each_choice_text_is_the_label_of_its_radio_button(polls_client, judge_poll):
    path = f"/poll/{judge_poll.id}"
    body = await page(polls_client, path)
    parts = FormParts(body)
    for choice_id, choice_text, _ in judge_poll.choices:
        labels = [label for label in parts.labels if choice_text in " ".join("".join(label.text).split())]
        tied = [parts.labelled(label) for label in labels]
        if any(found and found.get("value") == str(choice_id) for found in tied):
            continue
        if not labels:
            found = "no <label> holds that text"
        else:
            found = "; ".join(
                ("its <label> (no for=)" if label.target is None else f'its <label for="{label.target}">')
                + (f" clicks the input {got}" if got else " clicks no input")
                for label, got in zip(labels, tied, strict=True)
            )
        pytest.fail(
            f"expected the text of choice {choice_id}, {choice_text!r}, on {path} to be the <label> of the "
            f'radio button value="{choice_id}" (a click on the text picks that answer); {found}. Hint: '
            'give each button an id of its own and name it in its label, <input type="radio" '
            'id="choice{{ choice.id }}" ...> <label for="choice{{ choice.id }}">...</label>, or put the '
            "button inside its label.",
            pytrace=False,
        )


@pytest.mark.task(2)
async def test_vote_form_has_a_button_that_says_what_it_does(polls_client, judge_poll):
    path = f"/poll/{judge_poll.id}"
    body = await page(polls_client, path)
    form = re.search(r"<form\b.*?</form\s*>", body, re.S | re.I)
    submits = FormParts(form.group(0)).submits if form else []
    assert any(shown.strip().lower() == "vote" for shown in submits), (
        f"expected the vote form on {path} to end with a submit button that says Vote, found "
        f"{'the buttons ' + repr(submits) if submits else 'no submit button'}. Hint: "
        '<button type="submit">Vote</button> inside the <form>.'
    )


@pytest.mark.task(2)
async def test_vote_redirects_to_the_results(polls_client, polls_db, judge_poll):
    choice_id = judge_poll.choice_ids[0]
    before = votes(polls_db)
    response = await post_vote(polls_client, judge_poll.id, str(choice_id))
    assert response.status == 302, (
        f"expected POST /poll/{judge_poll.id}/vote (choice={choice_id}) to answer a 302 redirect, got "
        f"{response.status}: {(await response.text())[:200]!r}"
    )
    location = response.headers.get("Location")
    expected = f"/poll/{judge_poll.id}/results"
    assert location == expected, (
        f"expected a vote on poll {judge_poll.id} to send the browser to {expected}, "
        f"got Location: {location}. "
        "Hint: request.app.router['results'].url_for(question_id=str(question_id))."
    )
    after = votes(polls_db)[choice_id]
    assert after == before[choice_id] + 1, (
        f"expected choice {choice_id} to get one more vote ({before[choice_id]} -> {before[choice_id] + 1}), "
        f"it has {after}" + (f". Hint: {NOT_KEPT}." if after == before[choice_id] else "")
    )


@pytest.mark.task(2)
async def test_vote_form_action_comes_from_the_router(mounted_client, layout, judge_poll):
    path = layout.url("poll", f"/poll/{judge_poll.id}")
    body = await page(mounted_client, path)
    form = re.search(r"<form[^>]*>", body)
    action = re.search(r'action="([^"]*)"', form.group(0)) if form else None
    expected = layout.url("vote", f"/poll/{judge_poll.id}/vote")
    if action and action.group(1) == expected:
        return
    if action:
        found = f'action="{layout.diagnose(action.group(1), "vote", f"/poll/{judge_poll.id}/vote")}"'
    else:
        found = form.group(0) if form else "no form"
    pytest.fail(
        f'{layout.told}; expected {path} to hold <form action="{expected}" method="post">, found {found}. '
        "Hint: ask the router for the vote route itself, "
        "action=\"{{ url('vote', question_id=question.id) }}\".",
        pytrace=False,
    )


@pytest.mark.task(2)
async def test_vote_redirect_comes_from_the_router(mounted_client, layout, polls_db, judge_poll):
    choice_id = judge_poll.choice_ids[2]
    path = layout.url("vote", f"/poll/{judge_poll.id}/vote")
    before = votes(polls_db)[choice_id]
    response = await mounted_client.post(path, data={"choice": str(choice_id)}, allow_redirects=False)
    assert response.status == 302, (
        f"{layout.told}; expected POST {path} (choice={choice_id}) to answer a 302 redirect, got "
        f"{response.status}: {(await response.text())[:200]!r}"
    )
    location = response.headers.get("Location")
    expected = layout.url("results", f"/poll/{judge_poll.id}/results")
    found = layout.diagnose(location, "results", f"/poll/{judge_poll.id}/results", where="view")
    assert location == expected, (
        f"{layout.told}; expected a vote on poll {judge_poll.id} to send the browser to {expected}, got "
        f"Location: {found}. Hint: raise web.HTTPFound(request.app.router['results'].url_for("
        "question_id=str(question_id)))."
    )
    after = votes(polls_db)[choice_id]
    assert after == before + 1, (
        f"expected choice {choice_id} to get one more vote ({before} -> {before + 1}), it has {after}"
        + (f". Hint: {NOT_KEPT}." if after == before else "")
    )


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
        f"expected 400 for {what} (choice={choice!r}), got {response.status}. Hint: raise "
        "web.HTTPBadRequest(text=...) when the form has no choice or int() refuses it (ValueError)."
    )
    assert body.strip() != "400: Bad Request" and len(body.split()) >= 3 and "Traceback" not in body, (
        f"expected a sentence of your own (three words or more, not aiohttp's default '400: Bad Request') "
        f"telling the visitor what went wrong, got {body[:200]!r}"
    )
    assert votes(polls_db) == before, f"expected {what} to count no vote, the votes changed"


# What aiohttp writes for a web.HTTPNotFound() raised without a text: it names nothing.
BARE_404 = "404: Not Found"


@pytest.mark.task(2)
@pytest.mark.parametrize(
    "case",
    ["foreign-choice", "missing-choice", "missing-poll", "huge-choice", "negative-choice", "plus-sign",
     "spaces"],
)
async def test_choice_not_in_the_poll_is_404(polls_client, polls_db, judge_poll, case):
    question_id, choice, what = {
        "foreign-choice": (judge_poll.id, "6", "a choice of another poll"),
        "missing-choice": (judge_poll.id, str(missing(polls_db, "choice")), "a missing choice"),
        "missing-poll": (missing(polls_db, "question"), str(judge_poll.choice_ids[0]), "a missing poll"),
        "huge-choice": (judge_poll.id, "99999999999", "an eleven-digit choice"),
        "negative-choice": (judge_poll.id, f"-{judge_poll.choice_ids[0]}", "a negative whole number"),
        "plus-sign": (judge_poll.id, f"+{missing(polls_db, 'choice')}", "a whole number with a plus sign"),
        "spaces": (judge_poll.id, f" {missing(polls_db, 'choice')} ", "a whole number between spaces"),
    }[case]
    before = votes(polls_db)
    response = await post_vote(polls_client, question_id, choice)
    after = votes(polls_db)
    assert after == before, (  # first: a vote counted here is db.vote's mistake, whatever the view answers
        f"expected POST /poll/{question_id}/vote with choice={choice!r} ({what}) to count no vote, it "
        f"answered {response.status} and the votes changed (choice id: before -> after) "
        f"{changes(before, after)}: "
        f"db.vote's UPDATE matched a choice that is not this poll's. {WHERE_HINT}."
    )
    hint = (
        f"{choice!r} is a whole number, which int() reads: a well-formed choice, only not one of this "
        "poll's. Keep the 400 for text int() refuses (no check of the digits, the sign or the length of "
        "your own), and let db.vote's RecordNotFound become the 404"
        if response.status == 400
        else "catch RecordNotFound from db.vote and raise web.HTTPNotFound"
    )
    assert response.status == 404, (
        f"expected POST /poll/{question_id}/vote with choice={choice!r} ({what}) to answer 404, got "
        f"{response.status}. Hint: {hint}."
    )
    body = (await response.text()).strip()
    assert body != BARE_404, (
        f"expected the 404 for POST /poll/{question_id}/vote with choice={choice!r} ({what}) to say what is "
        f"missing, got aiohttp's bare {body!r}. Hint: every whole number goes to db.vote, which finds no row "
        "for it; raise web.HTTPNotFound(text=str(exc)) from its RecordNotFound, not a 404 of your own."
    )


@pytest.mark.task(2)
async def test_a_missing_choice_is_told_apart_from_a_wrong_one(polls_client):
    answers = {}
    for choice, what in ((None, "no choice at all"), ("abc", "a word")):
        response = await post_vote(polls_client, 1, choice)
        answers[what] = (response.status, (await response.text()).strip())
    statuses = {status for status, _ in answers.values()}
    if statuses != {400}:
        pytest.fail(f"expected 400 for no choice and for a word, got {answers}", pytrace=False)
    (_, nothing), (_, wrong) = answers.values()
    assert re.search(r"\b(choose|pick|select)", nothing, re.IGNORECASE), (
        f"expected the 400 for a vote with no choice at all to ask the visitor to pick an answer (choose, "
        f"pick or select one), it says {nothing!r}: the visitor only forgot to pick one, and that sentence "
        "does not tell them what to do. Hint: raise web.HTTPBadRequest(text='Please choose one of the "
        "answers...') when form.get('choice') is None."
    )
    assert nothing != wrong, (
        "expected the 400 for a vote with no choice at all to say so (the visitor forgot to pick an "
        f"answer), and the 400 for choice='abc' to say that it is not a number; both say {nothing!r}. Hint: "
        "if form.get('choice') is None, raise web.HTTPBadRequest(text='Please choose one of the answers...') "
        "before int()."
    )


@pytest.mark.task(2)
async def test_foreign_choice_404_says_what_is_missing(polls_client, judge_poll):
    path = f"/poll/{judge_poll.id}/vote"
    response = await post_vote(polls_client, judge_poll.id, "6")
    body = await response.text()
    assert response.status == 404, (
        f"expected POST {path} with choice=6 (a choice of poll 3) to answer 404, got {response.status}. "
        "Hint: catch RecordNotFound from db.vote and raise web.HTTPNotFound."
    )
    text = page_text(body)
    assert all(re.search(rf"\b{n}\b", text) for n in (judge_poll.id, 6)), (
        f"expected the 404 for POST {path} with choice=6 (a choice of poll 3) to name the poll and the "
        f"choice that do not go together, such as 'Poll {judge_poll.id} has no choice 6.'; it says "
        f"{text[:300]!r}. "
        "Hint: raise web.HTTPNotFound(text=str(exc)), the message of db.vote's RecordNotFound."
    )


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
async def test_concurrent_votes_over_http_are_all_counted(busy_client, polls_db, judge_poll):
    before = votes(polls_db)
    ids = judge_poll.choice_ids
    responses = await asyncio.gather(
        *(post_vote(busy_client, judge_poll.id, str(ids[n % 3])) for n in range(CONCURRENT_VOTES))
    )
    statuses = sorted({response.status for response in responses})
    assert statuses == [302], f"expected every vote to be answered 302, got the statuses {statuses}"
    after = votes(polls_db)
    added = {choice: after[choice] - before[choice] for choice in ids}
    expected = {choice: len(range(n, CONCURRENT_VOTES, 3)) for n, choice in enumerate(ids)}
    if not any(added.values()):
        hint = NOT_KEPT
    else:
        hint = "votes get lost when db.vote reads the count and writes it back instead of one UPDATE"
    assert added == expected, (
        f"expected {CONCURRENT_VOTES} simultaneous votes to add {expected}, they added {added}. Hint: {hint}."
    )


@pytest.mark.task(2)
async def test_vote_of_a_broken_database_is_not_a_missing_choice(polls_client, polls_db, judge_poll):
    choice_id = judge_poll.choice_ids[1]
    path = f"/poll/{judge_poll.id}/vote"
    polls_db.execute("ALTER TABLE public.choice RENAME COLUMN votes TO renamed_by_the_judge")
    try:
        response = await post_vote(polls_client, judge_poll.id, str(choice_id))
        status, body = response.status, await response.text()
    finally:
        polls_db.execute("ALTER TABLE public.choice RENAME COLUMN renamed_by_the_judge TO votes")
    assert status != 404, (
        f"with the votes column renamed (the database is broken, choice {choice_id} of poll {judge_poll.id} "
        f"exists), expected POST {path} (choice={choice_id}) to fail as a server error, got a 404 that "
        f"blames the visitor: {body[:200]!r}. Hint: catch only db.RecordNotFound in the vote view, not "
        "every exception: a broken database is never a 404."
    )


@pytest.mark.task(2)
async def test_vote_of_a_lost_database_is_not_a_missing_choice(learner, polls_db, judge_poll):
    choice_id = judge_poll.choice_ids[0]
    path = f"/poll/{judge_poll.id}/vote"
    form = {"choice": str(choice_id)}
    status = await status_with_a_lost_connection(learner, polls_db, path, "choice", form)
    assert status is not None, (
        f"expected POST {path} (choice={choice_id}) to update the choice table in PostgreSQL (the judge held "
        "a lock on it), it answered without waiting, or never got there. Hint: db.vote's UPDATE."
    )
    assert status != 404, (
        f"POST {path} (choice={choice_id}, a choice of that poll) while the judge ended its UPDATE's "
        "connection in PostgreSQL (as a restart of the server does; the query raises "
        f"psycopg2.OperationalError): expected a server error, got {status}, a 404 that blames the visitor "
        "for the database's fault. Hint: catch only db.RecordNotFound in the vote view, not "
        "OperationalError: a broken database is never a 404."
    )


# --- task 3: the results page -------------------------------------------------------------------------------


async def results_page(client, question_id: int | str) -> str:
    """The results page of a poll (or at a path: str), which must answer 200 with HTML."""
    path = question_id if isinstance(question_id, str) else f"/poll/{question_id}/results"
    response = await client.get(path)
    body = await response.text()
    if (response.status, response.content_type) != (200, "text/html"):
        pytest.fail(f"expected {path} to answer 200 with an HTML page, got {response.status} "
                    f"{response.content_type}: {body[:200]!r}", pytrace=False)  # fmt: skip
    return body


COUNT_HINT = "{{ choice.choice_text }}: {{ choice.votes }} for every choice."


def assert_counts(text: str, question_id: int, counts: list[tuple[str, int]], what: str = "show",
                  hint: str = COUNT_HINT) -> None:  # fmt: skip
    for choice_text, count in counts:
        shown = re.search(rf"{re.escape(choice_text)}\D*(\d+)", text)
        assert shown and int(shown.group(1)) == count, (
            f"expected /poll/{question_id}/results to {what} {choice_text!r} with {count} votes (as "
            f"PostgreSQL holds them); the page reads {text[:400]!r}. Hint: {hint}"
        )


def expect_escaped(body: str) -> None:
    for raw in ("<b>", "<script>"):
        assert raw not in body, (
            f"expected the results page to escape question and choice texts, {raw!r} came through raw. "
            f"Hint: never mark them |safe. The page around it: {around(body, raw)}"
        )


@pytest.mark.task(3)
async def test_results_show_every_choice_with_its_votes(polls_client, judge_poll):
    body = await results_page(polls_client, judge_poll.id)
    expect_escaped(body)  # first: a choice that came through raw is missing from the page's text
    assert_counts(page_text(body), judge_poll.id, [(text, count) for _, text, count in judge_poll.choices])


@pytest.mark.task(3)
async def test_results_list_the_choices_in_id_order_after_a_vote(polls_client, polls_db):
    # Poll 1's choices were inserted in id order, so a SELECT without ORDER BY gives them in that order
    # until a vote: PostgreSQL writes an updated row anew, after the others, and a plain scan meets it last.
    texts = [text for (text,) in polls_db.execute(
        "SELECT choice_text FROM public.choice WHERE question_id = 1 ORDER BY id")]  # fmt: skip
    first = polls_db.execute("SELECT min(id) FROM public.choice WHERE question_id = 1")[0][0]
    # Votes for the last choice beforehand, so that an order by votes is not id order (that row stays last
    # in a plain scan).
    polls_db.execute("UPDATE public.choice SET votes = 5 WHERE id = "
                     "(SELECT max(id) FROM public.choice WHERE question_id = 1)")  # fmt: skip
    response = await post_vote(polls_client, 1, str(first))
    assert response.status == 302, f"expected a vote for choice {first} to answer 302, got {response.status}"
    body = await results_page(polls_client, 1)
    text = page_text(body)
    positions = [text.find(choice_text) for choice_text in texts]
    absent = [choice_text for choice_text, at in zip(texts, positions, strict=True) if at == -1]
    assert not absent, (
        f"after a vote for choice {first}, expected /poll/1/results to list every choice, also one nobody "
        f"voted for yet; {absent} missing, the page reads {text[:300]!r}. Hint: show each choice with its "
        "count, 0 included."
    )
    assert positions == sorted(positions), (
        f"after 5 votes for poll 1's last choice and one for choice {first}, expected /poll/1/results to "
        f"list its choices in id order, "
        f"{texts}; the page reads {text[:300]!r}. Hint: without ORDER BY, PostgreSQL returns rows in "
        "whatever order it finds them, and an update moves a row: load them with db.get_question, which "
        "orders them (.order_by(choice.c.id)), and list them as they come (not sorted by votes)."
    )


@pytest.mark.task(3)
async def test_results_say_vote_for_one_and_votes_for_the_others(polls_client, polls_db, judge_poll):
    counts = [0, 1, random.randint(2, 99)]
    random.shuffle(counts)
    for (choice_id, _, _), count in zip(judge_poll.choices, counts, strict=True):
        polls_db.execute(sql.SQL("UPDATE public.choice SET votes = {} WHERE id = {}")
                         .format(sql.Literal(count), sql.Literal(choice_id)))  # fmt: skip
    text = page_text(await results_page(polls_client, judge_poll.id))
    for (_, choice_text, _), count in zip(judge_poll.choices, counts, strict=True):
        wanted = f"{count} vote" if count == 1 else f"{count} votes"
        shown = re.search(rf"{re.escape(choice_text)}\D*?(\d+ *\w*)", text)
        assert shown and shown.group(1) == wanted, (
            f"expected /poll/{judge_poll.id}/results to show {choice_text!r} with {wanted!r}, it shows "
            f"{shown.group(1) if shown else 'no count'!r}; the page reads {text[:400]!r}. Hint: "
            '{{ choice.votes }} vote{{ "" if choice.votes == 1 else "s" }}: one vote, any other number votes.'
        )


@pytest.mark.task(3)
async def test_results_404_names_the_poll(polls_client, polls_db):
    question_id = missing(polls_db, "question")
    path = f"/poll/{question_id}/results"
    response = await polls_client.get(path)
    text = page_text(await response.text())
    assert response.status == 404, (
        f"expected GET {path} to answer 404, got {response.status}. Hint: catch RecordNotFound in the view."
    )
    assert re.search(rf"\b{question_id}\b", text), (
        f"expected the 404 for {path} (no such poll) to name the poll that was asked for, {question_id}, it "
        f"says {text[:300]!r}. Hint: raise web.HTTPNotFound(text=str(exc)), the message of "
        "db.get_question's RecordNotFound, as the poll view does."
    )


@pytest.mark.task(3)
async def test_results_follow_the_votes(polls_client, polls_db):
    count = random.randint(11, 999)
    polls_db.execute(f"UPDATE public.choice SET votes = {count} WHERE id = 3")
    text = page_text(await results_page(polls_client, 1))
    assert_counts(text, 1, [("Just hacking again", count)])


@pytest.mark.task(3)
async def test_results_escape_the_texts(polls_client, judge_poll):
    body = await results_page(polls_client, judge_poll.id)
    expect_escaped(body)
    assert judge_poll.choices[1][1].replace("&", "&amp;") in body, (
        f"expected the results page to list the choices of poll {judge_poll.id}, "
        f"{judge_poll.choices[1][1]!r} is missing"
    )


@pytest.mark.task(3)
async def test_results_list_choices_without_votes(polls_client, polls_db, judge_poll):
    nobody = random.choice(judge_poll.choice_ids)
    polls_db.execute(sql.SQL("UPDATE public.choice SET votes = 0 WHERE id = {}").format(sql.Literal(nobody)))
    counts = [(text, 0 if choice_id == nobody else count) for choice_id, text, count in judge_poll.choices]
    text = page_text(await results_page(polls_client, judge_poll.id))
    hint = "{% for choice in choices %} with no condition: a choice without votes shows 0."
    what = "list every choice, also one nobody voted for yet:"
    assert_counts(text, judge_poll.id, counts, what=what, hint=hint)


@pytest.mark.task(3)
async def test_results_link_back_to_the_poll(mounted_client, layout, judge_poll):
    path = layout.url("results", f"/poll/{judge_poll.id}/results")
    body = await results_page(mounted_client, path)
    expected = layout.url("poll", f"/poll/{judge_poll.id}")
    if f'href="{expected}"' in body:
        return
    hrefs = re.findall(r'href="([^"]*)"', body)
    back = next((href for href in hrefs if href.endswith(f"/poll/{judge_poll.id}")), None)
    if back:
        found = f"it links {layout.diagnose(back, 'poll', f'/poll/{judge_poll.id}')}"
    else:
        links = re.findall(r"<a\b[^>]*>", body)
        found = f"it has no link back to the poll (its links: {links or 'none'})"
    pytest.fail(
        f'{layout.told}; expected {path} to link back to the poll, href="{expected}", {found}. Hint: '
        "<a href=\"{{ url('poll', question_id=question.id) }}\">Vote again?</a> in results.html.",
        pytrace=False,
    )


@pytest.mark.task(3)
async def test_results_link_back_with_words(polls_client, judge_poll):
    body = await results_page(polls_client, judge_poll.id)
    back = re.search(rf'<a\b[^>]*href="/poll/{judge_poll.id}"[^>]*>(.*?)</a\s*>', body, re.S | re.I)
    shown = page_text(back.group(1)) if back else None
    found = f"a link that shows no word: {back.group(0)}" if back else "that it has no link back to the poll"
    assert shown and any(character.isalpha() for character in shown), (
        f"expected /poll/{judge_poll.id}/results to link back to the poll with words a visitor can click, "
        f"found {found}. Hint: the words go inside the link, not beside it (an arrow or other sign alone is "
        f"no word): <a href=\"{{{{ url('poll', question_id=question.id) }}}}\">Vote again?</a>."
    )


@pytest.mark.task(3)
async def test_results_borrow_a_connection_of_the_apps_pool(polls_client, polls_db, judge_poll):
    path = f"/poll/{judge_poll.id}/results"
    await assert_served_by_the_pool(polls_client, polls_db, "GET", path, "question")


@pytest.mark.task(3)
async def test_results_give_their_connection_back(learner, polls_db, make_config, judge_poll):
    app = learner.serve(make_config(polls_db))
    await assert_connections_given_back(learner, app, "GET", f"/poll/{judge_poll.id}/results")


@pytest.mark.task(3)
async def test_results_give_their_connection_back_when_the_query_fails(learner, polls_db, make_config,
                                                                      judge_poll):  # fmt: skip
    app = learner.serve(make_config(polls_db))
    path = f"/poll/{judge_poll.id}/results"
    await assert_given_back_when_the_query_fails(learner, polls_db, app, "GET", path, "choice")


@pytest.mark.task(3)
async def test_results_of_a_broken_database_are_not_a_missing_poll(polls_client, polls_db):
    working = await polls_client.get("/poll/1/results")
    assert working.status == 200, (
        "expected GET /poll/1/results to answer 200 before the judge breaks the database, got "
        f"{working.status}. Hint: make the results view work first."
    )
    status = await status_with_a_broken_database(polls_client, polls_db, "/poll/1/results")
    assert status != 404, (
        "with a column of the choice table renamed (the database is broken, the poll exists), expected "
        "GET /poll/1/results to fail as a server error, got a 404 that blames the visitor. Hint: catch only "
        "db.RecordNotFound in the results view, not every exception."
    )


@pytest.mark.task(3)
@pytest.mark.parametrize("path", ["/poll/{missing}/results", "/poll/2147483648/results", "/poll/abc/results"],
                         ids=["missing", "int32-overflow", "not-a-number"])  # fmt: skip
async def test_results_of_a_missing_poll_are_404(polls_client, polls_db, path):
    path = path.format(missing=missing(polls_db, "question"))
    response = await polls_client.get(path)
    assert response.status == 404, (
        f"expected GET {path} to answer 404, got {response.status}. Hint: catch RecordNotFound in the view."
    )
    body = (await response.text()).strip()
    assert "abc" in path or body != BARE_404, (  # /poll/abc/results matches no route: aiohttp's own 404
        f"expected the 404 for GET {path} to say which poll is missing, got aiohttp's bare {body!r}. Hint: "
        "every id the route lets through goes to get_question, which finds no row for it; raise "
        "web.HTTPNotFound(text=str(exc)) from its RecordNotFound, not a 404 of your own."
    )
