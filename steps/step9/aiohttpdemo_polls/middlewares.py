"""Error pages: one middleware turns a 404 and any unexpected exception into the site's own pages."""

from __future__ import annotations

import logging

import aiohttp_jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger(__name__)


def error_page(request: web.Request, status: int) -> web.Response:
    """The site's page for an error status, rendered from templates/<status>.html."""
    return aiohttp_jinja2.render_template(f"{status}.html", request, {}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Pass every request on; replace a 404 and any unexpected exception with a page of the site."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        # TODO (step 9, task 1): a 404 becomes the 404.html page; other HTTP exceptions (400, 302...) go on unchanged
        raise
    except Exception:
        # TODO (step 9, task 2): log the error with its traceback, then answer with the 500.html page
        raise


def setup_middlewares(app: web.Application) -> None:
    """Install the error middleware, so every handler of the app is covered."""
    # TODO (step 9, task 1): append error_middleware to app.middlewares
