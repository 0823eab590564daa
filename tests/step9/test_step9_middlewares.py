"""Step 9: an error middleware renders the site's 404 and 500 pages; other HTTP answers pass untouched."""

from __future__ import annotations

import logging

import aiohttp_jinja2
import pytest
from aiohttp import web

SECRET = "password=hunter2 in the failing query"


class Boom(RuntimeError):
    """What the test view raises: a bug, as far as the visitor is concerned."""


async def boom(request: web.Request) -> web.Response:
    raise Boom(SECRET)


@pytest.fixture
async def boom_client(polls_app, aiohttp_client):
    """The app with one extra route, /boom, whose view raises an unexpected exception."""
    polls_app.router.add_get("/boom", boom)
    return await aiohttp_client(polls_app)


def rendered(app: web.Application, name: str) -> str:
    """The template as the app's own Jinja environment renders it, for comparison."""
    return aiohttp_jinja2.get_env(app).get_template(name).render()


async def expect_page(response, status: int, app: web.Application, template: str, what: str) -> str:
    body = await response.text()
    assert response.status == status, f"expected {what} to answer {status}, got {response.status}"
    assert response.content_type == "text/html", (
        f"expected {what} to be an HTML page ({template}), got {response.content_type}: {body[:200]!r}. "
        f"Hint: the middleware must answer with aiohttp_jinja2.render_template('{template}', request, {{}}, "
        f"status={status})."
    )
    assert body == rendered(app, template), (
        f"expected {what} to show templates/{template}, got another page:\n{body[:400]}"
    )
    return body


# --- task 1: the 404 page, and everything else untouched -------------------------------------------------


@pytest.mark.task(1)
def test_setup_middlewares_installs_a_middleware(polls, polls_app):
    polls.attribute("middlewares", "setup_middlewares")
    assert len(polls_app.middlewares) >= 1, (
        "expected init_app(config) to install the error middleware, app.middlewares is empty. "
        "Hint: setup_middlewares(app) appends it: app.middlewares.append(error_middleware)."
    )


@pytest.mark.task(1)
@pytest.mark.parametrize(
    ("path", "what"),
    [("/no/such/page", "an unknown address"), ("/poll/99", "a missing poll"),
     ("/poll/99/results", "the results of a missing poll"), ("/poll/abc", "a poll id that is not a number")],
    ids=["unknown-path", "missing-poll", "missing-results", "not-a-number"],
)  # fmt: skip
async def test_not_found_shows_the_404_page(polls_client, path, what):
    response = await polls_client.get(path)
    await expect_page(response, 404, polls_client.app, "404.html", what)


@pytest.mark.task(1)
async def test_missing_static_file_shows_the_404_page(polls_client):
    response = await polls_client.get("/static/no-such-file.css")
    await expect_page(response, 404, polls_client.app, "404.html", "a missing static file")


@pytest.mark.task(1)
async def test_existing_static_file_is_untouched(polls_client):
    response = await polls_client.get("/static/style.css")
    assert (response.status, response.content_type) == (200, "text/css"), (
        f"expected the stylesheet as before (200 text/css), got {response.status} {response.content_type}. "
        "Hint: only a FileResponse whose file is missing becomes the 404 page."
    )


@pytest.mark.task(1)
async def test_bad_request_passes_through(polls_client):
    response = await polls_client.post("/poll/1/vote", data={"choice": "abc"}, allow_redirects=False)
    body = await response.text()
    assert response.status == 400, f"expected the vote view's 400 to come through, got {response.status}"
    assert response.content_type == "text/plain" and "<html" not in body.lower(), (
        f"expected the 400 to keep the view's own message, the middleware replaced it with {body[:200]!r}. "
        "Hint: re-raise every HTTP exception that is not a 404."
    )


@pytest.mark.task(1)
async def test_redirect_passes_through(polls_client):
    response = await polls_client.post("/poll/1/vote", data={"choice": "1"}, allow_redirects=False)
    assert (response.status, response.headers.get("Location")) == (302, "/poll/1/results"), (
        f"expected the vote's 302 to /poll/1/results to come through, got {response.status} "
        f"{response.headers.get('Location')}. Hint: HTTPFound is an HTTP exception too: re-raise it."
    )


@pytest.mark.task(1)
async def test_method_not_allowed_passes_through(polls_client):
    response = await polls_client.get("/poll/1/vote")
    assert response.status == 405, f"expected GET on the vote route to stay a 405, got {response.status}"


@pytest.mark.task(1)
async def test_pages_still_work(polls_client):
    for path in ("/", "/poll/2", "/poll/3/results", "/static/style.css"):
        response = await polls_client.get(path)
        assert response.status == 200, (
            f"expected {path} to answer 200 through the middleware, got {response.status}. "
            "Hint: return await handler(request) for every request."
        )


# --- task 2: the 500 page --------------------------------------------------------------------------------


@pytest.mark.task(2)
async def test_unexpected_error_shows_the_500_page(boom_client):
    response = await boom_client.get("/boom")
    body = await expect_page(response, 500, boom_client.app, "500.html", "a view that raises")
    for leak in (SECRET, "Traceback", "Boom", "hunter2"):
        assert leak not in body, (
            f"expected no detail of the error on the page, found {leak!r}: tracebacks and exception texts "
            "tell an attacker about your code and data"
        )


@pytest.mark.task(2)
async def test_unexpected_error_is_logged_with_its_traceback(boom_client, caplog):
    with caplog.at_level(logging.ERROR):
        response = await boom_client.get("/boom")
    assert response.status == 500, f"expected 500 for a view that raises, got {response.status}"
    logged = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], Boom)]
    assert logged, (
        "expected the error to be logged with its traceback (a record at ERROR with exc_info), found "
        f"{[r.getMessage() for r in caplog.records] or 'no log records'}. "
        "Hint: log.exception(...) inside the except block."
    )
    assert logged[0].levelno >= logging.ERROR, f"expected level ERROR or above, got {logged[0].levelname}"
    assert response.content_type == "text/html", (
        f"expected the 500.html page, got {response.content_type}: aiohttp's own error answer. "
        "Hint: catch Exception in the middleware and render 500.html."
    )


@pytest.mark.task(2)
async def test_the_app_keeps_serving_after_an_error(boom_client):
    await boom_client.get("/boom")
    response = await boom_client.get("/poll/1")
    assert response.status == 200, f"expected the app to keep serving after an error, got {response.status}"
    response = await boom_client.get("/boom")
    assert (response.status, response.content_type) == (500, "text/html"), (
        f"expected the 500 page again on a second error, got {response.status} {response.content_type}"
    )
