"""Views: the functions that turn a request into a response (or into a template's context)."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDictProxy
from sqlalchemy import select

from . import db


@aiohttp_jinja2.template("index.html")
async def index(request: web.Request) -> dict[str, Any]:
    """Handle GET /: the page listing every poll, oldest first."""
    # TODO (step 10, task 2): borrow a connection with `async with engine.connect() as conn:`; .all() reads the rows
    questions = []
    return {"questions": questions}


@aiohttp_jinja2.template("detail.html")
async def poll(request: web.Request) -> dict[str, Any]:
    """Handle GET /poll/{question_id}: one question and its choices."""
    question_id = int(request.match_info["question_id"])
    # TODO (step 10, task 2): the same with get_question, on a connection from engine.connect()
    raise web.HTTPNotImplemented(text="TODO: step 10, task 2")


async def read_form(request: web.Request) -> MultiDictProxy[str | bytes | web.FileField]:
    """The posted form. A body in a broken or unknown encoding is the sender's mistake: a 400, not a 500."""
    try:
        return await request.post()
    except (UnicodeDecodeError, LookupError):
        raise web.HTTPBadRequest(text="The form could not be read: send it as UTF-8 text.") from None


def chosen_choice(form: MultiDictProxy[str | bytes | web.FileField]) -> int:
    """The choice id the vote form sent, or a 400 whose text tells the visitor what went wrong."""
    raw = form.get("choice")
    if raw is None:
        raise web.HTTPBadRequest(text="Please choose one of the answers before voting.")
    try:
        return int(raw)  # type: ignore[arg-type]  # a file upload is not a number either: TypeError
    except (TypeError, ValueError):
        raise web.HTTPBadRequest(text="The choice must be the number of one of the answers.") from None


async def vote(request: web.Request) -> web.Response:
    """Handle POST /poll/{question_id}/vote: count the vote, then send the browser to the results."""
    question_id = int(request.match_info["question_id"])
    choice_id = chosen_choice(await read_form(request))
    # TODO (step 10, task 3): vote inside `async with engine.begin() as conn:`, which commits when the block ends
    raise web.HTTPNotImplemented(text="TODO: step 10, task 3")
    raise web.HTTPFound(request.app.router["results"].url_for(question_id=str(question_id)))


@aiohttp_jinja2.template("results.html")
async def results(request: web.Request) -> dict[str, Any]:
    """Handle GET /poll/{question_id}/results: every choice of the poll with its votes."""
    question_id = int(request.match_info["question_id"])
    # TODO (step 10, task 2): as in poll()
    raise web.HTTPNotImplemented(text="TODO: step 10, task 2")
