"""Views: the functions that turn a request into a response."""

from aiohttp import web


async def index(request: web.Request) -> web.Response:
    """Handle GET /."""
    return web.Response(text="Hello Aiohttp!")
