"""The URL map, kept apart from the views so the whole site reads in one place."""

from aiohttp import web

from . import views


def setup_routes(app: web.Application) -> None:
    """Register every route of the app."""
    app.router.add_get("/", views.index, name="index")
    # TODO (step 6, task 3): accept only ids that can exist: at most 10 digits (PostgreSQL's integer, and int() is safe)
    app.router.add_get(r"/poll/{question_id:\d+}", views.poll, name="poll")
