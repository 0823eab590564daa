"""Step 8: the static folder served under /static/ (and nothing outside it); pages link the stylesheet."""

from __future__ import annotations

import asyncio
import re

import jinja2
import pytest

# Requests that try to climb out of static/, sent byte for byte (an HTTP client would tidy them up first).
ESCAPES = [
    "/static/../routes.py",
    "/static/../__init__.py",
    "/static/%2e%2e/routes.py",
    "/static/%2E%2E/routes.py",
    "/static/..%2froutes.py",
    "/static/..%2Froutes.py",
    "/static/%2e%2e%2froutes.py",
    "/static/..%5croutes.py",
    "/static/.%2e/routes.py",
    "/static/../../../../config/polls.yaml",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/config/polls.yaml",
    "/static/..%2f..%2f..%2f..%2fconfig%2fpolls.yaml",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/../../../../../../../../etc/passwd",
]

# What the protected files contain: none of it may come back.
SECRETS = [b"def setup_routes", b'"""The polls app', b"aiohttpdemo_pass", b"root:x:0:0"]


async def raw_get(client, target: str) -> tuple[int, bytes]:
    """Send `GET target` exactly as written and return (status, whole response)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        request = f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        writer.write(request.encode("ascii"))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    return int(data.split(b" ", 2)[1]), data


def stylesheet(polls) -> bytes:
    return (polls.tree / "aiohttpdemo_polls" / "static" / "style.css").read_bytes()


# --- task 1: the static route ----------------------------------------------------------------------------


@pytest.mark.task(1)
async def test_stylesheet_is_served_as_css(polls, polls_client):
    response = await polls_client.get("/static/style.css")
    assert response.status == 200, (
        f"expected GET /static/style.css to answer 200, got {response.status}. "
        "Hint: app.router.add_static('/static/', path=PROJECT_ROOT / 'static', name='static')."
    )
    assert response.content_type == "text/css", (
        f"expected the content type text/css, got {response.content_type}: browsers ignore a stylesheet "
        "served as anything else"
    )
    assert await response.read() == stylesheet(polls), "expected the body to be static/style.css, unchanged"


@pytest.mark.task(1)
def test_static_route_is_named_static(polls_app):
    resource = polls_app.router.named_resources().get("static")
    assert resource is not None, (
        f"expected a route named 'static', found the names {sorted(polls_app.router.named_resources())}. "
        "Hint: add_static(..., name='static') lets templates ask the router for file addresses."
    )
    url = str(resource.url_for(filename="style.css"))
    assert url == "/static/style.css", (
        f"expected url_for(filename='style.css') to give /static/style.css, got {url}"
    )


@pytest.mark.task(1)
async def test_missing_static_file_is_404(polls_client):
    status, _ = await raw_get(polls_client, "/static/no-such-file.css")
    assert status == 404, f"expected 404 for a file that static/ does not have, got {status}"
    response = await polls_client.get("/static/style.css")
    assert response.status == 200, (
        "expected /static/style.css to be served (see the first check of this task)"
    )


@pytest.mark.task(1)
@pytest.mark.parametrize("target", ESCAPES)
async def test_nothing_outside_static_is_served(polls_client, target):
    response = await polls_client.get("/static/style.css")
    assert response.status == 200, (
        "expected /static/style.css to be served (see the first check of this task)"
    )
    status, data = await raw_get(polls_client, target)
    leaked = [secret.decode() for secret in SECRETS if secret in data]
    assert status in (400, 403, 404) and not leaked, (
        f"expected GET {target} to be refused (400, 403 or 404), got {status}"
        + (f" with the content of a file outside static/ ({leaked[0]!r} ...)" if leaked else "")
        + ". Hint: serve the folder with add_static and keep follow_symlinks off; never join request paths "
        "to a folder yourself."
    )


# --- task 2: the stylesheet link -------------------------------------------------------------------------


@pytest.mark.task(2)
@pytest.mark.parametrize("path", ["/", "/poll/1", "/poll/3/results"])
async def test_every_page_links_the_stylesheet(polls_client, path):
    body = await (await polls_client.get(path)).text()
    links = re.findall(r"<link\b[^>]*>", body)
    sheets = [link for link in links if re.search(r"rel=[\"']?stylesheet", link)]
    hrefs = [m.group(1) for link in sheets for m in [re.search(r"href=[\"']([^\"']+)", link)] if m]
    assert "/static/style.css" in hrefs, (
        f'expected {path} to link the stylesheet (<link rel="stylesheet" href="/static/style.css">), found '
        f"{links or 'no <link> at all'}. Hint: put the link in the <head> of base.html."
    )
    response = await polls_client.get("/static/style.css")
    assert response.status == 200, f"expected the linked stylesheet to be served, got {response.status}"


@pytest.mark.task(2)
def test_stylesheet_address_comes_from_the_router(polls):
    """Render base.html with a `url` that records its calls: a hard-coded address never calls it."""
    calls = []

    def url(name, **parts):
        calls.append((name, parts))
        return f"/via-router/{name}/{parts.get('filename', '')}"

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(polls.tree / "aiohttpdemo_polls" / "templates"),
                             autoescape=True)  # fmt: skip
    env.globals["url"] = url
    page = env.get_template("base.html").render()
    assert ("static", {"filename": "style.css"}) in calls and "/via-router/static/style.css" in page, (
        "expected base.html to ask the router for the address, {{ url('static', filename='style.css') }}; "
        f"it called url() with {calls or 'nothing'}"
    )
