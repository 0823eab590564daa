"""The app factory and the command that runs it: the finished polls app, on SQLAlchemy 2 and asyncpg."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from .db import DatabaseUnavailable, pg_context
from .middlewares import setup_middlewares
from .routes import setup_routes, setup_static_routes
from .settings import CONFIG_KEY, ConfigError, get_config


def init_app(config: dict[str, Any]) -> web.Application:
    """Build a new application around an already validated configuration."""
    app = web.Application()
    app[CONFIG_KEY] = config
    app.cleanup_ctx.append(pg_context)
    aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("aiohttpdemo_polls", "templates"))
    setup_routes(app)
    setup_static_routes(app)
    setup_middlewares(app)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Read the configuration, then serve on the host and port it names."""
    try:
        config = get_config(argv)
    except ConfigError as exc:
        print(f"Cannot start the polls app: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        web.run_app(init_app(config), host=config["host"], port=config["port"])
    # >>> task 4: DatabaseUnavailable (only that): one line on stderr naming the database, exit status 1
    except DatabaseUnavailable as exc:
        pg = config["postgres"]
        print(
            f"Cannot start the polls app: cannot connect to PostgreSQL at {pg['host']}:{pg['port']} "
            f"(database {pg['database']!r}, user {pg['user']!r}): {exc}",
            file=sys.stderr,
        )
        sys.exit(1)
    # ---
    #: except DatabaseUnavailable:
    #:     raise
    # <<<
