"""Step 1: the smallest aiohttp application that answers a request."""

from aiohttp import web


# >>> task 1: make `index` answer "Hello Aiohttp!" as plain text
async def index(request: web.Request) -> web.Response:
    """Handle GET /: every view receives the request and returns a response."""
    return web.Response(text="Hello Aiohttp!")
# ---
#: async def index(request: web.Request) -> web.Response:
#:     """Handle GET /: every view receives the request and returns a response."""
#:     raise NotImplementedError("step 1, task 1: return a web.Response with the text 'Hello Aiohttp!'")
# <<<


# >>> task 2: route GET / of `app` to `index`
app = web.Application()
app.add_routes([web.get("/", index)])
# ---
#: app = web.Application()
# <<<


def main(host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve `app` until Ctrl+C."""
    # >>> task 3: run `app` on host:port with web.run_app
    web.run_app(app, host=host, port=port)
    # <<<
