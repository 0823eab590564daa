"""The URL map, kept apart from the views so the whole site reads in one place."""

from aiohttp import web

from .views import index


def setup_routes(app: web.Application) -> None:
    """Register every route of the app."""
    app.router.add_get("/", index, name="index")
