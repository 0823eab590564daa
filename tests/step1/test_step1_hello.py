"""Step 1: a first application answering GET / with "Hello Aiohttp!".

The learner's code runs in its own process: the view and the module's `app` are served there and reached
over HTTP, and `main()` is started as a process of its own on a port the judge picks.
"""

import contextlib
import random
import socket
import time

import pytest

from tests.conftest import assert_a_taken_port_ends_main, http_session, recorded_run_app, why_it_ended
from workbook.judge.logs import how_it_ended
from workbook.pg import free_port

HELLO = "Hello Aiohttp!"
OTHER_METHODS = ("POST", "PUT", "DELETE", "PATCH", "OPTIONS")


async def get(url: str, method: str = "GET") -> tuple[int, str, str]:
    async with http_session() as session, session.request(method, url) as response:
        return response.status, response.content_type, await response.text()


def loopback_host() -> str:
    """A loopback address that changes every run (all of 127.0.0.0/8 reaches this machine)."""
    return f"127.0.{random.randrange(256)}.{random.randrange(2, 255)}"


@pytest.mark.task(1)
async def test_index_view_says_hello(learner):
    app = learner.serve(views={"/": "main:index"})
    status, content_type, body = await get(app.url + "/")
    assert status == 200, (
        f"GET / on an app whose only route is your `index` view: expected 200, got {status}. "
        "Hint: a view is `async def index(request)` and returns web.Response(text=...)."
    )
    assert body == HELLO, f"expected index() to answer the body {HELLO!r}, got {body!r}"
    assert content_type == "text/plain", (
        f"expected a text/plain response, got {content_type!r}. Hint: pass text=, not body=."
    )


@pytest.mark.task(2)
async def test_get_root_over_http(learner):
    app = learner.serve(attribute="main:app", reload=("main",))  # a new module-level app for every test
    status, _, body = await get(app.url + "/")
    hint = (
        "the route exists but the view raised: finish task 1 first"
        if status == 500
        else "add the route web.get('/', index) to app"
    )
    assert status == 200, f"expected GET / to answer 200, got {status}. Hint: {hint}."
    assert body == HELLO, f"expected GET / to answer {HELLO!r}, got {body!r}"


@pytest.mark.task(2)
async def test_other_paths_are_not_found(learner):
    app = learner.serve(attribute="main:app", reload=("main",))
    status, _, _ = await get(app.url + "/nothing-here")
    assert status == 404, (
        f"expected 404 for a path with no route, got {status}. Hint: route only '/', not a catch-all."
    )


@pytest.mark.task(2)
async def test_root_answers_only_get(learner):
    app = learner.serve(attribute="main:app", reload=("main",))
    status, _, _ = await get(app.url + "/")
    assert status == 200, f"expected GET / to answer 200 (see the first check of this task), got {status}"
    answered = []
    for method in OTHER_METHODS:  # every one, each run: a route added for one of them fails every time
        status, _, body = await get(app.url + "/", method=method)
        if status != 405:
            answered.append(f"{method} / got {status} {body[:60]!r}")
    assert not answered, (
        f"expected 405 Method Not Allowed for every method but GET (the index is for GET only): "
        f"{'; '.join(answered)}. "
        "Hint: only web.get('/', index) (or app.router.add_get): no route for another method, and not "
        "add_route('*', ...)."
    )


# Runs in the learner's process: web.run_app is replaced by a recorder before main.py is imported (so
# `from aiohttp.web import run_app` gets it too), then main() is called with the judge's host and port.
RECORD_RUN_APP = """
import json, sys
from aiohttp import web
calls = []
web.run_app = lambda app, **kwargs: calls.append((app, kwargs))
from aiohttpdemo_polls import main as module
module.main(host={host!r}, port={port})
print("RUN_APP " + json.dumps({{"calls": len(calls), "same_app": bool(calls) and calls[0][0] is module.app,
      "host": calls[0][1].get("host") if calls else None,
      "port": calls[0][1].get("port") if calls else None}}))
"""


@pytest.mark.task(3)
def test_main_passes_its_host_and_port_to_run_app(polls_process):
    host, port = loopback_host(), free_port()  # new every run: main() must pass on what it receives
    seen = recorded_run_app(polls_process, RECORD_RUN_APP.format(host=host, port=port), host, port)
    assert seen.get("calls") == 1, (
        f"expected main() to call web.run_app once, it was called {seen.get('calls')} times"
    )
    assert seen.get("same_app") is True, (
        "expected main() to serve the module's own `app`, it passed another object to web.run_app"
    )
    assert (seen.get("host"), seen.get("port")) == (host, port), (
        f"main(host={host!r}, port={port}) should pass both on: web.run_app(app, host=host, port=port); "
        f"it passed host={seen.get('host')!r}, port={seen.get('port')!r}"
    )


@pytest.mark.task(3)
def test_main_lets_a_taken_port_end_it(polls_process):
    host, port = loopback_host(), free_port()
    call = f"main(host={host!r}, port={port})"
    assert_a_taken_port_ends_main(polls_process, call, port)


def wait_for_address(command, host: str, port: int, timeout: float = 20) -> None:
    """Until the server listens on host:port; fails at once if it exits, listens on 127.0.0.1 instead, or
    says (as web.run_app does once it serves) that it runs somewhere else."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [line.strip("= ") for line in command.output().splitlines() if "Running on" in line]
        if command.returncode is not None:
            ended = why_it_ended(command.output())
            pytest.fail(f"expected main(host={host!r}, port={port}) to keep serving, but "
                        f"{how_it_ended(command.returncode)}: {ended}", pytrace=False)  # fmt: skip
        for address in (host, "127.0.0.1"):
            with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.5):
                assert address == host, (
                    f"main(host={host!r}, port={port}) should listen on {host}, it listens on 127.0.0.1 "
                    "instead. Hint: pass main's own `host` on: web.run_app(app, host=host, port=port)."
                )
                return
        if running and f"{host}:{port}" not in running[0]:
            pytest.fail(f"expected main(host={host!r}, port={port}) to serve there, the server says: "
                        f"{running[0]}. Hint: web.run_app(app, host=host, port=port).",
                        pytrace=False)  # fmt: skip
        time.sleep(0.05)
    pytest.fail(f"expected main(host={host!r}, port={port}) to listen there within {timeout:.0f}s, "
                "it did not", pytrace=False)  # fmt: skip


@pytest.mark.task(3)
async def test_main_serves_on_the_port_it_is_given(polls_process):
    host, port = loopback_host(), free_port()
    command = polls_process.start_python(
        f"from aiohttpdemo_polls.main import main; main(host={host!r}, port={port})"
    )
    wait_for_address(command, host, port)
    status, _, body = await get(f"http://{host}:{port}/")
    assert (status, body) == (200, HELLO), (
        f"expected the server main(host={host!r}, port={port}) started to answer GET / with {HELLO!r}, "
        f"got {status} {body!r}"
    )
