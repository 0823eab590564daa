"""Step 2: an application factory, with views and routes in their own modules."""

from aiohttp import web

from .routes import setup_routes


def init_app() -> web.Application:
    """Build a new, fully wired application: tests call this to get a fresh app each time."""
    # TODO (step 2, task 3): create the application, set up its routes and return it
    raise NotImplementedError("TODO step 2, task 3")


def main(host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve a new application until Ctrl+C."""
    # TODO (step 2, task 3): run the app that init_app() builds
    raise NotImplementedError("TODO step 2, task 3")
