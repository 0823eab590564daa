"""The URL map, kept apart from the views so the whole site reads in one place."""

from pathlib import Path

from aiohttp import web

from . import views

# The package's own folder: templates/ and static/ live next to the code.
PROJECT_ROOT = Path(__file__).resolve().parent


def setup_routes(app: web.Application) -> None:
    """Register every route of the app."""
    app.router.add_get("/", views.index, name="index")
    app.router.add_get(r"/poll/{question_id:[0-9]{1,10}}", views.poll, name="poll")
    app.router.add_post(r"/poll/{question_id:[0-9]{1,10}}/vote", views.vote, name="vote")
    app.router.add_get(r"/poll/{question_id:[0-9]{1,10}}/results", views.results, name="results")


def setup_static_routes(app: web.Application) -> None:
    """Serve the files of static/ (stylesheets, images) under /static/, and nothing outside that folder."""
    app.router.add_static("/static/", path=PROJECT_ROOT / "static", name="static")
