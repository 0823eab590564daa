"""The app factory and the command that runs it, now with a database engine that lives as long as the app."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import psycopg2
from aiohttp import web

from .db import DB_TIMEOUT, pg_context
from .routes import setup_routes
from .settings import CONFIG_KEY, ConfigError, get_config


def init_app(config: dict[str, Any]) -> web.Application:
    """Build a new application around an already validated configuration."""
    app = web.Application()
    app[CONFIG_KEY] = config
    # TODO (step 5, task 1): let pg_context open the engine at startup and close it at cleanup
    setup_routes(app)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Read the configuration, then serve on the host and port it names."""
    try:
        config = get_config(argv)
    except ConfigError as exc:
        print(f"Cannot start the polls app: {exc}", file=sys.stderr)
        sys.exit(2)
    # TODO (step 5, task 3): an unreachable database ends the program with one clear line (exit status 1)
    web.run_app(init_app(config), host=config["host"], port=config["port"])
