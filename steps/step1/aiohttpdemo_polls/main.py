"""Step 1: the smallest aiohttp application that answers a request."""

from aiohttp import web


# TODO (step 1, task 1): make `index` answer "Hello Aiohttp!" as plain text
async def index(request: web.Request) -> web.Response:
    """Handle GET /: every view receives the request and returns a response."""
    raise NotImplementedError("step 1, task 1: return a web.Response with the text 'Hello Aiohttp!'")


# TODO (step 1, task 2): route GET / of `app` to `index`
app = web.Application()


def main(host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve `app` until Ctrl+C."""
    # TODO (step 1, task 3): run `app` on host:port with web.run_app
    raise NotImplementedError("TODO step 1, task 3")
