"""Step 2: views and routes in their own modules, and an application factory."""

import pytest
from aiohttp import web

HELLO = "Hello Aiohttp!"


@pytest.mark.task(1)
async def test_index_lives_in_views(polls):
    index = polls.attribute("views", "index")
    response = await index(None)
    assert isinstance(response, web.Response), (
        f"expected views.index to return a web.Response, got {type(response).__name__}"
    )
    assert response.text == HELLO, f"expected the body {HELLO!r}, got {response.text!r}"


@pytest.mark.task(2)
def test_setup_routes_adds_named_index_route(polls):
    setup_routes = polls.attribute("routes", "setup_routes")
    index = polls.attribute("views", "index")
    app = web.Application()
    setup_routes(app)
    found = {(route.method, route.resource.canonical, route.handler) for route in app.router.routes()}
    assert ("GET", "/", index) in found, (
        f"expected setup_routes to add GET / -> views.index, found {sorted((m, p) for m, p, _ in found)}. "
        "Hint: app.router.add_get('/', index, name='index')."
    )
    assert "index" in app.router.named_resources(), (
        f"expected a route named 'index', found the names {list(app.router.named_resources())}. "
        "Hint: pass name='index' so other code can build the URL."
    )


@pytest.mark.task(3)
async def test_init_app_serves_hello(polls, aiohttp_client):
    init_app = polls.attribute("main", "init_app")
    app = init_app()
    assert isinstance(app, web.Application), f"expected init_app() to return a web.Application, got {app!r}"
    client = await aiohttp_client(app)
    response = await client.get("/")
    assert response.status == 200, f"expected GET / to answer 200, got {response.status}"
    assert await response.text() == HELLO


@pytest.mark.task(3)
def test_init_app_builds_a_new_app_each_time(polls):
    init_app = polls.attribute("main", "init_app")
    first, second = init_app(), init_app()
    assert first is not second, (
        "expected a new application from every init_app() call, got the same object twice. "
        "Hint: create web.Application() inside the function, not at module level."
    )


@pytest.mark.task(3)
def test_main_runs_a_factory_app(polls, monkeypatch):
    calls = []
    # Patched before the import, so `from aiohttp.web import run_app` in main.py gets the recorder too.
    monkeypatch.setattr(web, "run_app", lambda app, **kwargs: calls.append((app, kwargs)))
    main = polls.module("main", fresh=True)
    main.main(host="127.0.0.1", port=8099)
    assert len(calls) == 1, f"expected main() to call web.run_app once, it was called {len(calls)} times"
    app, kwargs = calls[0]
    assert isinstance(app, web.Application) and "index" in app.router.named_resources(), (
        "expected main() to serve the app that init_app() builds (with its 'index' route)"
    )
    assert (kwargs.get("host"), kwargs.get("port")) == ("127.0.0.1", 8099), (
        f"expected host and port passed through to web.run_app, got {kwargs}"
    )
