"""Views: the functions that turn a request into a response."""

from aiohttp import web
from sqlalchemy import select

from . import db


async def index(request: web.Request) -> web.Response:
    """Handle GET /: every question in the database, ordered by id, as JSON."""
    # >>> task 2: read the questions with select(db.question) on a connection from the engine
    async with request.app[db.DB_KEY].acquire() as conn:
        cursor = await conn.execute(select(db.question).order_by(db.question.c.id))
        records = await cursor.fetchall()
    questions = [
        {"id": row.id, "question_text": row.question_text, "pub_date": row.pub_date.isoformat()}
        for row in records
    ]
    return web.json_response({"questions": questions})
    # <<<
