"""Step 2: views and routes in their own modules, and an application factory.

The learner's code runs in its own process: the view, an app wired by `setup_routes` and the app built by
`init_app()` are served there and reached over HTTP; `main()` runs as a process of its own.
"""

import random
import secrets

import pytest

from tests.conftest import assert_a_taken_port_ends_main, http_session, recorded_run_app
from workbook.pg import free_port

HELLO = "Hello Aiohttp!"
INDEX = "aiohttpdemo_polls.views.index"
OTHER_METHODS = ("POST", "PUT", "DELETE", "PATCH", "OPTIONS")


async def fetch(url: str, method: str = "GET") -> tuple[int, str, str]:
    async with http_session() as session, session.request(method, url) as response:
        return response.status, response.content_type, await response.text()


def shown(routes: list[dict]) -> str:
    """'GET / -> aiohttpdemo_polls.views.index (name 'index')' per route, for failure messages."""
    return "; ".join(
        f"{r.get('method')} {r.get('path')} -> {r.get('handler')} (name {r.get('name')!r})" for r in routes
        if r.get("method") != "HEAD"  # add_get adds a HEAD route beside each GET
    ) or "no routes at all"  # fmt: skip


def view_hint(status: int, body: str, no_route_hint: str) -> str:
    """The real cause of a wrong answer to GET /: the route (404, 405) or the view behind it (task 1)."""
    if status in (404, 405):
        return no_route_hint
    if status == 500:
        return "the route exists but the view failed: finish task 1 first"
    if status != 200:
        return (f"the route reaches a view, but views.index answers {status}, not 200: fix the view "
                "(task 1); web.Response(text=...) answers 200 unless you pass another status")  # fmt: skip
    return f"the route reaches a view, but views.index answers {body[:80]!r}: fix the view (task 1)"


# --- task 1: the view -----------------------------------------------------------------------------------


@pytest.mark.task(1)
async def test_index_lives_in_views(learner):
    app = learner.serve(views={"/": "views:index"})
    status, content_type, body = await fetch(app.url + "/")
    hint = (
        "the view failed or gave something that is not a response: return web.Response(text=...)"
        if status == 500
        else "web.Response(text=...) answers 200 unless you pass another status"
    )
    assert status == 200, (
        f"GET / on an app whose only route is views.index: expected 200, got {status}. Hint: {hint}."
    )
    assert body == HELLO, f"expected views.index to answer the body {HELLO!r}, got {body!r}"
    assert content_type == "text/plain", (
        f"expected views.index to answer text/plain, got {content_type!r}. "
        "Hint: web.Response(text=...) without content_type."
    )


# --- task 2: setup_routes -------------------------------------------------------------------------------


@pytest.mark.task(2)
async def test_setup_routes_adds_named_index_route(learner):
    app = learner.serve(setup=("routes:setup_routes",))
    gets = [r for r in app.routes if r.get("method") == "GET" and r.get("path") == "/"]
    every_method = any(r.get("method") == "*" and r.get("handler") == INDEX for r in app.routes)
    hint = (
        "a route for every method ('*') answers POST / too, where it must be 405 Method Not Allowed: "
        "add_get, not add_route('*', ...)"
        if every_method
        else "app.router.add_get('/', index, name='index')"
    )
    assert any(r.get("handler") == INDEX for r in gets), (
        f"expected setup_routes(app) to add GET / -> views.index, the app has: {shown(app.routes)}. "
        f"Hint: {hint}."
    )
    named = {r.get("name"): r.get("path") for r in app.routes if r.get("name")}
    assert named.get("index") == "/", (
        f"expected a route named 'index' for GET /, the route names are {sorted(named) or 'none'}. "
        "Hint: pass name='index' so other code can build the URL with app.router['index'].url_for()."
    )


@pytest.mark.task(2)
async def test_setup_routes_serves_hello_on_get(learner):
    app = learner.serve(setup=("routes:setup_routes",))
    status, _, body = await fetch(app.url + "/")
    hint = view_hint(status, body, "setup_routes must add GET / -> index")
    assert (status, body) == (200, HELLO), (
        f"GET / on a new app passed to setup_routes: expected 200 {HELLO!r}, got {status} {body!r}. "
        f"Hint: {hint}."
    )


@pytest.mark.task(2)
async def test_index_moves_with_a_prefix(learner):
    """Served under a random prefix, a route registered as '/' answers PREFIX/; one of '' answers PREFIX."""
    prefix = f"/polls-{secrets.token_hex(3)}"
    app = learner.serve(setup=("routes:setup_routes",), mount=prefix)
    status, _, body = await fetch(app.url + prefix + "/")
    if (status, body) == (200, HELLO):
        return
    bare, _, _ = await fetch(app.url + prefix)
    hint = (
        'the route\'s path is "" (empty): at the root aiohttp turns it into "/" when the app starts, but the '
        f'router builds "" for url_for() and, under a prefix, {prefix} instead of {prefix}/. Register the '
        "path \"/\": app.router.add_get('/', index, name='index')"
        if bare == 200
        else view_hint(status, body, "setup_routes must add GET / -> index")
    )
    pytest.fail(
        f"the judge served a new app passed to setup_routes under {prefix} (as a sub-application, as later "
        f"steps do); expected GET {prefix}/ to answer 200 {HELLO!r}, got {status} {body[:80]!r}. The app "
        f"has: {shown(app.routes)}. Hint: {hint}.",
        pytrace=False,
    )


@pytest.mark.task(2)
async def test_only_get_root_is_routed(learner):
    app = learner.serve(setup=("routes:setup_routes",))
    path = f"/nothing-here-{random.randrange(10**6)}"
    status, _, _ = await fetch(app.url + path)
    assert status == 404, (
        f"GET {path}: expected 404 for a path with no route, got {status}. "
        f"Hint: route only '/', not a catch-all. The app has: {shown(app.routes)}"
    )
    answered = []
    for method in OTHER_METHODS:  # every one, each run: a route added for one of them fails every time
        status, _, body = await fetch(app.url + "/", method=method)
        if status != 405:
            answered.append(f"{method} / got {status} {body[:60]!r}")
    assert not answered, (
        f"expected 405 Method Not Allowed for every method but GET on / (the index is for GET only): "
        f"{'; '.join(answered)}. Hint: app.router.add_get(...) alone: no route for another method, and not "
        f"add_route('*', ...). The app has: {shown(app.routes)}"
    )


# --- task 3: init_app and main --------------------------------------------------------------------------


@pytest.mark.task(3)
async def test_init_app_serves_hello(learner):
    app = learner.serve(factory="main:init_app")
    status, _, body = await fetch(app.url + "/")
    hint = view_hint(status, body, "init_app() must call setup_routes(app) before returning the app")
    assert (status, body) == (200, HELLO), (
        f"GET / on the app init_app() built: expected 200 {HELLO!r}, got {status} {body!r}. Hint: {hint}."
    )


@pytest.mark.task(3)
def test_init_app_builds_a_new_app_each_time(learner):
    # Two calls alive at the same time, so a new app cannot reuse the address of the first one.
    first, second = learner.call_or_fail("main:init_app", times=2, describe_result=True)
    for app in (first, second):
        assert "aiohttp.web_app.Application" in app.get("mro", []), (
            f"expected init_app() to return a web.Application, got {app.get('type')}"
        )
    assert first.get("id") != second.get("id"), (
        "expected a new application from every init_app() call, got the same object twice. "
        "Hint: create web.Application() inside the function, not at module level."
    )


# Runs in the learner's process: web.run_app is replaced by a recorder and routes.setup_routes wrapped before
# main.py is imported (so `from ... import` gets them too), init_app is wrapped to see what it returns, then
# main() is called with the judge's host and port.
RECORD_RUN_APP = """
import json
from aiohttp import web
calls, built, wired = [], [], []
web.run_app = lambda app, *args, **kwargs: calls.append((app, args, kwargs))
from aiohttpdemo_polls import routes
setup = routes.setup_routes
routes.setup_routes = lambda app, *a, **k: wired.append(app) or setup(app, *a, **k)
from aiohttpdemo_polls import main as module
factory = module.init_app
module.init_app = lambda *a, **k: built.append(factory(*a, **k)) or built[-1]
module.main(host={host!r}, port={port})
app, args, kwargs = calls[0] if calls else (None, (), {{}})
print("RUN_APP " + json.dumps({{"calls": len(calls), "built": len(built),
      "from_init_app": any(app is b for b in built), "args": [repr(a) for a in args],
      "wired": any(app is w for w in wired),
      "host": kwargs.get("host"), "port": kwargs.get("port")}}))
"""


@pytest.mark.task(3)
def test_main_runs_a_factory_app(polls_process):
    host, port = f"127.0.{random.randrange(256)}.{random.randrange(2, 255)}", free_port()  # new every run
    seen = recorded_run_app(polls_process, RECORD_RUN_APP.format(host=host, port=port), host, port)
    assert seen.get("calls") == 1, (
        f"expected main() to call web.run_app once, it was called {seen.get('calls')} times"
    )
    assert seen.get("from_init_app") is True, (
        f"expected main() to serve the app that init_app() builds; init_app() was called "
        f"{seen.get('built')} times and web.run_app got another object. Hint: web.run_app(init_app(), ...)."
    )
    assert (seen.get("host"), seen.get("port")) == (host, port), (
        f"main(host={host!r}, port={port}) should pass both on: "
        "web.run_app(init_app(), host=host, port=port); "
        f"it passed host={seen.get('host')!r}, port={seen.get('port')!r}"
        + (f" and the positional arguments {seen.get('args')}" if seen.get("args") else "")
    )
    assert seen.get("wired") is True, (
        "main() served the app init_app() built, but init_app() never passed it to routes.setup_routes: "
        "expected init_app() to call setup_routes(app), the one place that lists the site's routes. "
        "Hint: app = web.Application(); setup_routes(app); return app (no add_get of its own)."
    )


@pytest.mark.task(3)
def test_main_lets_a_taken_port_end_it(polls_process):
    port = free_port()
    call = f"main(host='127.0.0.1', port={port})"
    assert_a_taken_port_ends_main(polls_process, call, port)


@pytest.mark.task(3)
async def test_main_serves_on_the_port_it_is_given(polls_process):
    port = free_port()
    command = polls_process.start_python(
        f"from aiohttpdemo_polls.main import main; main(host='127.0.0.1', port={port})"
    )
    polls_process.wait_for_port(command, port)
    status, _, body = await fetch(f"http://127.0.0.1:{port}/")
    no_route = "main() must serve the app init_app() builds, which calls setup_routes(app)"
    assert (status, body) == (200, HELLO), (
        f"expected the server main() started on port {port} to answer GET / with {HELLO!r}, "
        f"got {status} {body!r}. Hint: {view_hint(status, body, no_route)}."
    )
