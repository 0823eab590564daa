"""Views: the functions that turn a request into a response (or into a template's context)."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web
from sqlalchemy import select

from . import db


# >>> task 1: render index.html with the questions instead of answering JSON
@aiohttp_jinja2.template("index.html")
async def index(request: web.Request) -> dict[str, Any]:
    """Handle GET /: the page listing every poll, oldest first."""
    async with request.app[db.DB_KEY].acquire() as conn:
        cursor = await conn.execute(select(db.question).order_by(db.question.c.id))
        questions = await cursor.fetchall()
    return {"questions": questions}
# ---
#: async def index(request: web.Request) -> web.Response:
#:     """Handle GET /: every question in the database, oldest first, as JSON."""
#:     async with request.app[db.DB_KEY].acquire() as conn:
#:         cursor = await conn.execute(select(db.question).order_by(db.question.c.id))
#:         records = await cursor.fetchall()
#:     questions = [
#:         {"id": row.id, "question_text": row.question_text, "pub_date": row.pub_date.isoformat()}
#:         for row in records
#:     ]
#:     return web.json_response({"questions": questions})
# <<<


@aiohttp_jinja2.template("detail.html")
async def poll(request: web.Request) -> dict[str, Any]:
    """Handle GET /poll/{question_id}: one question and its choices."""
    question_id = int(request.match_info["question_id"])
    async with request.app[db.DB_KEY].acquire() as conn:
        # >>> task 3: a poll that does not exist is a 404 page, never a 500
        try:
            question, choices = await db.get_question(conn, question_id)
        except db.RecordNotFound as exc:
            raise web.HTTPNotFound(text=str(exc)) from None
        # ---
        #: question, choices = await db.get_question(conn, question_id)
        # <<<
    return {"question": question, "choices": choices}
