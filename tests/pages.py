"""Fetching a page the way a visitor does, shared by the suites of steps 6 and 7 (and step 10, which carries
them). It lives at the top of tests/ because a graded step receives only its own suites and these top-level
files: a suite that imported another step's module would not even collect in the grader's sandbox."""

from __future__ import annotations

import pytest


async def page(client, path: str) -> str:
    """The HTML of a page that must answer 200, or a failure showing what came instead."""
    response = await client.get(path)
    body = await response.text()
    if response.status != 200 or response.content_type != "text/html":
        if response.status >= 500:
            hint = "a 500 means the view or its template raised; `-- -v` shows the server's log."
        elif response.content_type != "text/html":
            hint = "render a template: @aiohttp_jinja2.template('...') on a view that returns a dict."
        else:
            hint = "check the route and the view."
        pytest.fail(
            f"expected GET {path} to answer 200 with an HTML page, got {response.status} "
            f"{response.content_type}: {body[:300]!r}. Hint: {hint}",
            pytrace=False,
        )
    return body
