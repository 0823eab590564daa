"""Error pages: one middleware turns a 404 and any unexpected exception into the site's own pages."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp_jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger(__name__)


def error_page(request: web.Request, status: int) -> web.Response:
    """The site's page for an error status, rendered from templates/<status>.html."""
    return aiohttp_jinja2.render_template(f"{status}.html", request, {}, status=status)


def missing_static_file(request: web.Request, response: web.StreamResponse) -> bool:
    """True for the answer of the static route to a file that does not exist.

    aiohttp's static route returns a FileResponse without looking at the disk; the file is only opened
    while the response is sent, after every middleware has returned, and a missing one then becomes an
    empty 404 that no middleware sees. So we look first. (Traversal attempts never get this far: the
    route refuses them itself.)
    """
    if not isinstance(response, web.FileResponse):
        return False
    directory = request.match_info.route.resource.get_info().get("directory")
    filename = request.match_info.get("filename")
    return directory is not None and filename is not None and not (Path(directory) / filename).is_file()


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Pass every request on; replace a 404 and any unexpected exception with a page of the site."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status == 404:
            return error_page(request, 404)
        raise
    except Exception:
        log.exception("Unhandled error while serving %s %s", request.method, request.path)
        return error_page(request, 500)
    if missing_static_file(request, response):
        return error_page(request, 404)
    return response


def setup_middlewares(app: web.Application) -> None:
    """Install the error middleware, so every handler of the app is covered."""
    app.middlewares.append(error_middleware)
