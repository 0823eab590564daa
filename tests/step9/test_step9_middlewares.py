"""Step 9: an error middleware renders the site's 404 and 500 pages; other HTTP answers pass untouched.

The learner's app runs in its own process, with routes added by the judge whose views raise an exception
carrying a random secret; the judge reads the pages over HTTP and what the learner's process logged.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from tests.conftest import Learner, ServedApp, around, http_session, served_once, valid_config

# What identifies the site's error pages (templates/404.html and 500.html, both given, extend base.html).
PAGES = {404: ("404.html", "Page not found"), 500: ("500.html", "Something went wrong")}
RAISING = ["RuntimeError", "KeyError", "ZeroDivisionError"]
# Views' own answers besides 404 that the middleware must pass on as they are: status, and what it means.
ANSWERING = {"HTTPForbidden": (403, "forbidden"), "HTTPGone": (410, "gone for good"),
             "HTTPServiceUnavailable": (503, "down for maintenance")}  # fmt: skip


@dataclass
class Site:
    app: ServedApp
    learner: Learner
    booms: dict[str, tuple[str, str]]  # exception name -> (path, secret message)
    cancelled: str  # a route whose view raises asyncio.CancelledError, as a cancelled request's view does
    answers: dict[str, tuple[str, str]]  # aiohttp exception name -> (path, the view's own text)


@pytest.fixture(scope="module")
def sites() -> dict[int | None, Site]:
    return {}


@pytest.fixture
def site(module_learner: Learner, sites, pg_database) -> Site:
    """One app from the learner's init_app(config) for the module, with routes whose views raise."""
    return served_once(module_learner, sites, lambda: serve_site(module_learner, pg_database))


def serve_site(module_learner: Learner, pg_database) -> Site:
    pg_database.run_sql_file("schema.sql", "seed.sql")
    booms = {
        name: (f"/boom-{secrets.token_hex(4)}", f"password=hunter{secrets.token_hex(6)} in the failing query")
        for name in RAISING
    }  # fmt: skip
    routes = [{"path": path, "exception": name, "message": secret} for name, (path, secret) in booms.items()]
    cancelled = f"/cancelled-{secrets.token_hex(4)}"
    routes.append({"path": cancelled, "exception": "CancelledError", "message": "judge"})
    answers = {name: (f"/{status}-{secrets.token_hex(4)}",
                      f"This page is {meaning} ({secrets.token_hex(3)}).")
               for name, (status, meaning) in ANSWERING.items()}  # fmt: skip
    routes += [{"path": path, "exception": name, "message": text} for name, (path, text) in answers.items()]
    app = module_learner.serve(valid_config(pg_database), raising_routes=routes)
    return Site(app, module_learner, booms, cancelled, answers)


@pytest.fixture
async def client(site: Site) -> AsyncIterator[aiohttp.ClientSession]:
    async with http_session(site.app.url) as session:
        yield session


@dataclass
class Answer:
    status: int
    content_type: str
    body: str
    location: str | None
    headers: str  # every header of the answer, one "Name: value" a line
    reason: str  # the status line's words after the number ("Internal Server Error")


async def fetch(client: aiohttp.ClientSession, method: str, path: str, **kwargs) -> Answer:
    async with client.request(method, path, allow_redirects=False, **kwargs) as response:
        body = (await response.read()).decode("utf-8", "replace")
        headers = "\n".join(f"{name}: {value}" for name, value in response.headers.items())
        return Answer(response.status, response.content_type, body, response.headers.get("Location"), headers,
                      response.reason or "")  # fmt: skip


def is_page(answer: Answer, status: int) -> bool:
    heading = PAGES[status][1]
    return (
        answer.content_type == "text/html"
        and re.search(rf"<title>\s*{heading}\s*</title>", answer.body) is not None
        and re.search(rf"<h1>\s*{heading}\s*</h1>", answer.body) is not None
    )


def expect_page(answer: Answer, status: int, what: str, hint: str = "") -> None:
    template, _ = PAGES[status]
    hint = hint or f"return error_page(request, {status}), which renders templates/{template}."
    assert answer.status == status, (
        f"expected {what} to answer {status}, got {answer.status}: {answer.body[:200]!r}. Hint: {hint}"
    )
    assert is_page(answer, status), (
        f"expected {what} to show templates/{template} (an HTML page titled {PAGES[status][1]!r}), got "
        f"{answer.content_type}: {answer.body[:300]!r}. Hint: {hint}"
    )


# The logger of middlewares.py, logging.getLogger(__name__): the one the lesson's log.exception uses.
MODULE_LOGGER = "aiohttpdemo_polls.middlewares"


# What only a traceback or an exception's text would put on a page: its header, a frame's file line, a
# module file, the package's name.
CODE_MARKS = ("Traceback", 'File "', ".py", "aiohttpdemo_polls")


def assert_nothing_of_the_code(answer: Answer, what: str) -> None:
    for mark in CODE_MARKS:
        assert mark not in answer.body, (
            f"expected no traceback or server path on {what}, found {mark!r}: "
            f"{around(answer.body, mark)}. An error page shows strangers nothing of your code, its files "
            "or its data. Hint: return error_page(request, 404) as it is; log what you need with log."
        )


# What a 404's exception carries as text: aiohttp's own "404: Not Found", the views' "There is no poll 99."
EXCEPTION_TEXTS = ("Not Found", "There is no poll")


# --- task 1: the 404 page, and everything else untouched -------------------------------------------------


@pytest.mark.task(1)
def test_setup_middlewares_installs_a_middleware(site):
    site.learner.require("middlewares:setup_middlewares")
    middlewares = site.learner.app_info(site.app)["middlewares"]
    assert len(middlewares) >= 1, (
        "expected init_app(config) to install the error middleware, app.middlewares is empty. "
        "Hint: setup_middlewares(app) appends it: app.middlewares.append(error_middleware)."
    )


@pytest.mark.task(1)
@pytest.mark.parametrize(
    ("method", "path", "what"),
    [("GET", "/no/such/page", "an unknown address"), ("GET", "/poll/99", "a missing poll"),
     ("GET", "/poll/99/results", "the results of a missing poll"),
     ("GET", "/poll/abc", "a poll id that is not a number"),
     ("POST", "/poll/99/vote", "a vote for a missing poll")],
    ids=["unknown-path", "missing-poll", "missing-results", "not-a-number", "vote-missing-poll"],
)  # fmt: skip
async def test_not_found_shows_the_404_page(client, method, path, what):
    data = {"choice": "1"} if method == "POST" else None
    answer = await fetch(client, method, path, data=data)
    hint = ""
    if answer.status == 500:
        hint = ("the 404 became a 500: check that the `web.HTTPException` clause comes before "
                "`except Exception`, and that error_page(request, 404) works.")  # fmt: skip
    elif answer.status == 404 and answer.content_type != "text/html":
        hint = "in the `web.HTTPException` clause, return error_page(request, 404) when exc.status == 404."
    path = f"{method} {path}"
    expect_page(answer, 404, f"{path} ({what})", hint)
    assert answer.reason == "Not Found", (
        f"expected the 404 page of {path} ({what}) with the status line as aiohttp writes it, '404 Not "
        f"Found', got '{answer.status} {answer.reason}': the status line reaches the visitor as surely as "
        "the page. Hint: return error_page(request, 404) as it is, with nothing of the exception (exc.text, "
        "exc.reason) in its status."
    )
    assert_nothing_of_the_code(answer, f"the 404 page of {path} ({what})")
    for text in EXCEPTION_TEXTS:
        assert text not in answer.body, (
            f"expected the 404 page of {path} ({what}) as it is, found the exception's text on it: "
            f"{around(answer.body, text)}. Hint: return error_page(request, 404) and pass nothing of the "
            "exception (exc.text, exc.reason) to the page."
        )
    for text in (*EXCEPTION_TEXTS, "Traceback"):
        assert text not in answer.headers, (
            f"expected the 404 of {path} ({what}) as error_page makes it, found the exception's text in "
            f"its headers: {around(answer.headers, text)}. A header reaches the visitor as surely as the "
            "page. Hint: return error_page(request, 404) as it is, with no header of your own from the "
            "exception (exc.text, exc.reason)."
        )


@pytest.mark.task(1)
async def test_missing_static_file_shows_the_404_page(client):
    path = f"/static/no-such-file-{secrets.token_hex(4)}.css"
    answer = await fetch(client, "GET", path)
    expect_page(answer, 404, f"GET {path} (a missing static file)", (
        "a missing static file raises no exception: the static route returns a file response that fails "
        "only later, while it is sent. After `response = await handler(request)`, return "
        "error_page(request, 404) when `missing_static_file(request, response)` is true."
    ))  # fmt: skip


@pytest.mark.task(1)
async def test_existing_static_file_is_untouched(client):
    answer = await fetch(client, "GET", "/static/style.css")
    assert (answer.status, answer.content_type) == (200, "text/css"), (
        f"expected the stylesheet as before (200 text/css), got {answer.status} {answer.content_type}. "
        "Hint: only a FileResponse whose file is missing becomes the 404 page."
    )


@pytest.mark.task(1)
async def test_bad_request_passes_through(client):
    answer = await fetch(client, "POST", "/poll/1/vote", data={"choice": "abc"})
    assert answer.status == 400, (
        f"expected the vote view's 400 (choice=abc) to come through, got {answer.status}. "
        "Hint: re-raise every HTTP exception that is not a 404."
    )
    assert answer.content_type == "text/plain" and "<html" not in answer.body.lower(), (
        f"expected the 400 to keep the view's own message, the middleware replaced it with "
        f"{answer.body[:200]!r}. Hint: re-raise every HTTP exception that is not a 404."
    )
    empty = await fetch(client, "POST", "/poll/1/vote", data={})
    assert empty.body != answer.body, (
        f"expected the vote view's two different 400 messages (no choice, and choice=abc) to come through, "
        f"both answered {answer.body[:200]!r}: the middleware replaced them with one text of its own, which "
        "hides what the visitor must fix. Hint: `raise` every HTTP exception that is not a 404 as it is."
    )


@pytest.mark.task(1)
async def test_redirect_passes_through(client):
    answer = await fetch(client, "POST", "/poll/1/vote", data={"choice": "1"})
    assert (answer.status, answer.location) == (302, "/poll/1/results"), (
        f"expected the vote's 302 to /poll/1/results to come through, got {answer.status} "
        f"{answer.location}. Hint: HTTPFound is an HTTP exception too: re-raise it."
    )


@pytest.mark.task(1)
async def test_method_not_allowed_passes_through(client):
    answer = await fetch(client, "GET", "/poll/1/vote")
    assert answer.status == 405, (
        f"expected GET on the vote route to stay a 405, got {answer.status}. "
        "Hint: re-raise every HTTP exception that is not a 404."
    )


@pytest.mark.task(1)
@pytest.mark.parametrize("exception", list(ANSWERING))
async def test_other_http_answers_pass_through(site, client, exception):
    path, text = site.answers[exception]
    status = ANSWERING[exception][0]
    answer = await fetch(client, "GET", path)
    assert (answer.status, answer.body) == (status, text), (
        f"expected the judge's route {path}, whose view raises web.{exception}(text={text!r}), to come "
        f"through as the view made it ({status}, that text), got {answer.status}: {answer.body[:200]!r}. "
        "Hint: only a 404 becomes the 404 page (exc.status == 404); `raise` every other HTTP exception, "
        "a 403, a 410 or a 503 too, as it is: only an exception that is no HTTP answer is a bug."
    )


@pytest.mark.task(1)
async def test_pages_still_work(client):
    for path in ("/", "/poll/2", "/poll/3/results", "/static/style.css"):
        answer = await fetch(client, "GET", path)
        assert answer.status == 200, (
            f"expected {path} to answer 200 through the middleware, got {answer.status}. "
            "Hint: return await handler(request) for every request."
        )


# --- task 2: the 500 page --------------------------------------------------------------------------------


@pytest.mark.task(2)
@pytest.mark.parametrize("exception", RAISING)
async def test_unexpected_error_shows_the_500_page(site, client, exception):
    path, secret = site.booms[exception]
    answer = await fetch(client, "GET", path)
    what = f"a view that raises {exception}({secret!r}) (the judge's route {path})"
    hint = ""
    if answer.status == 500 and answer.content_type != "text/html":
        hint = "that is aiohttp's own 500: catch `Exception` in the middleware, return error_page(..., 500)."
    expect_page(answer, 500, what, hint)
    for leak in (secret, "hunter", "Traceback", exception, "aiohttpdemo_polls"):
        assert leak not in answer.body, (
            f"expected no detail of the error on the 500 page, found {leak!r}: the exception text and the "
            "traceback tell an attacker about your code and data. Hint: log them with log.exception(...) "
            "and show only error_page(request, 500)."
        )
        assert leak not in answer.headers, (
            f"expected no detail of the error in the 500's headers, found {leak!r}: "
            f"{around(answer.headers, leak)}. A header reaches the visitor as surely as the page. "
            "Hint: the details go to the log with log.exception(...); return error_page(request, 500) as "
            "it is."
        )
    assert answer.reason == "Internal Server Error", (
        f"expected the 500's status line as aiohttp writes it, '500 Internal Server Error', got "
        f"'{answer.status} {answer.reason}': the status line reaches the visitor as surely as the page, "
        "and an exception's type or text in it tells a stranger about your code. Hint: return "
        "error_page(request, 500) as it is, with no reason= of your own."
    )


@pytest.mark.task(2)
async def test_unexpected_error_is_logged_with_its_traceback(site, client):
    path, secret = site.booms["RuntimeError"]
    start = site.learner.log_size()
    answer = await fetch(client, "GET", path)
    logged = site.learner.log_text(start)
    assert answer.status == 500, f"expected 500 for a view that raises, got {answer.status}"
    ours = [m for m in re.finditer(r"^(ERROR|CRITICAL) (\S+): ", logged, re.M)
            if m.group(2).split(".")[0] != "aiohttp"]  # aiohttp's own "Error handling request"  # fmt: skip
    shown = "\n".join(logged.strip().splitlines()[:6]) or "nothing"
    assert ours, (
        "expected your middleware to log the error at level ERROR with its traceback; the app's log "
        f"showed {shown!r}. Hint: log.exception(...) inside the `except Exception` clause."
    )
    levels = sorted({m.group(1) for m in ours})
    assert levels == ["ERROR"], (
        f"expected the error logged at level ERROR, your middleware logged it at {', '.join(levels)}: "
        f"{ours[0].group(0).strip()!r}. Hint: log.exception(...) logs at ERROR with the traceback; "
        "log.critical(..., exc_info=True) is a different level."
    )
    names = sorted({m.group(2) for m in ours})
    hint = (
        "log = logging.getLogger(__name__) at the top of middlewares.py, the module's own logger: a "
        "logger named by hand for the whole package does not say which part of the app failed"
        if any(name.split(".")[0] == "aiohttpdemo_polls" for name in names)
        else "log.exception(...), not logging.exception(...): the module function writes to the root "
        "logger, where nothing says which part of the app the error came from"
    )
    assert MODULE_LOGGER in names, (
        f"expected the error logged by your app's own logger ({MODULE_LOGGER}, the module's `log`), it "
        f"was logged by {', '.join(repr(n) for n in names)}: {ours[0].group(0).strip()!r}. Hint: {hint}."
    )
    after = logged[ours[0].start():]
    assert "Traceback (most recent call last)" in after and secret in after, (
        f"expected the log line {after.splitlines()[0]!r} to carry the traceback and the exception's "
        "message, found no traceback. Hint: log.exception(...) (or exc_info=True) records both; "
        "log.error(str(exc)) does not."
    )
    assert is_page(answer, 500), (
        f"expected the 500.html page, got {answer.content_type}: {answer.body[:200]!r}. "
        "Hint: catch Exception in the middleware and return error_page(request, 500)."
    )


@pytest.mark.task(2)
async def test_the_app_keeps_serving_after_an_error(site, client):
    path, _ = site.booms["RuntimeError"]
    await fetch(client, "GET", path)
    answer = await fetch(client, "GET", "/poll/1")
    assert answer.status == 200, f"expected the app to keep serving after an error, got {answer.status}"
    answer = await fetch(client, "GET", path)
    assert answer.status == 500 and is_page(answer, 500), (
        f"expected the 500 page again on a second error, got {answer.status} {answer.content_type}"
    )


@pytest.mark.task(2)
async def test_cancellation_is_not_caught(site, client):
    path, _ = site.booms["RuntimeError"]
    answer = await fetch(client, "GET", path)
    assert answer.status == 500 and is_page(answer, 500), (
        f"expected the 500 page for a view that raises (see the first check of this task), "
        f"got {answer.status}"
    )
    got = None
    with contextlib.suppress(aiohttp.ClientConnectionError):  # aiohttp closes the connection, no answer
        got = await fetch(client, "GET", site.cancelled)
    assert got is None, (
        f"the judge's route {site.cancelled} raises asyncio.CancelledError, as the view of a cancelled "
        "request does (a client that hung up, a server shutting down); expected no answer, your middleware "
        f"answered {got.status} {got.body[:80]!r}. Hint: catch `Exception`, never `BaseException` or a bare "
        "`except:`: CancelledError is no error of the view and must pass through."
    )
