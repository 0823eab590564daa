"""Step 1: a first application answering GET / with "Hello Aiohttp!"."""

import pytest
from aiohttp import web

HELLO = "Hello Aiohttp!"


@pytest.mark.task(1)
async def test_index_view_says_hello(polls):
    index = polls.attribute("main", "index")
    response = await index(None)
    assert isinstance(response, web.Response), (
        f"expected index() to return a web.Response, got {type(response).__name__}. "
        "Hint: return web.Response(text=...)."
    )
    assert response.text == HELLO, f"expected the body {HELLO!r}, got {response.text!r}"
    assert response.content_type == "text/plain", (
        f"expected a text/plain response, got {response.content_type!r}. Hint: pass text=, not body=."
    )


@pytest.mark.task(2)
async def test_get_root_over_http(polls, aiohttp_client):
    main = polls.module("main", fresh=True)  # a new module-level app for every test
    assert isinstance(getattr(main, "app", None), web.Application), (
        "expected main.app to be a web.Application, got "
        f"{type(getattr(main, 'app', None)).__name__}. Hint: app = web.Application()"
    )
    client = await aiohttp_client(main.app)
    response = await client.get("/")
    body = await response.text()
    hint = (
        "the route exists but the view raised: finish task 1 first"
        if response.status == 500
        else "add the route web.get('/', index)"
    )
    assert response.status == 200, f"expected GET / to answer 200, got {response.status}. Hint: {hint}."
    assert body == HELLO, f"expected GET / to answer {HELLO!r}, got {body!r}"


@pytest.mark.task(2)
async def test_other_paths_are_not_found(polls, aiohttp_client):
    main = polls.module("main", fresh=True)
    client = await aiohttp_client(main.app)
    response = await client.get("/nothing-here")
    assert response.status == 404, (
        f"expected 404 for a path with no route, got {response.status}. "
        "Hint: route only '/', not a catch-all."
    )


@pytest.mark.task(3)
def test_main_runs_the_app(polls, monkeypatch):
    calls = []
    # Patched before the import, so `from aiohttp.web import run_app` in main.py gets the recorder too.
    monkeypatch.setattr(web, "run_app", lambda app, **kwargs: calls.append((app, kwargs)))
    main = polls.module("main", fresh=True)
    main.main(host="127.0.0.1", port=8099)
    assert len(calls) == 1, f"expected main() to call web.run_app once, it was called {len(calls)} times"
    app, kwargs = calls[0]
    assert app is main.app, "expected main() to serve the module's own `app`, got another object"
    assert (kwargs.get("host"), kwargs.get("port")) == ("127.0.0.1", 8099), (
        f"main(host='127.0.0.1', port=8099) should call web.run_app(app, host=host, port=port), it passed "
        f"the keyword arguments {kwargs}. Hint: pass main's own host and port through."
    )
