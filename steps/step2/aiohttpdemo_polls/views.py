"""Views: the functions that turn a request into a response."""

from aiohttp import web


async def index(request: web.Request) -> web.Response:
    """Handle GET /."""
    # TODO (step 2, task 1): answer "Hello Aiohttp!" as plain text, as the step 1 view did
    raise NotImplementedError("TODO step 2, task 1")
