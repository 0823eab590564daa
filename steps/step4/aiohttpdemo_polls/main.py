"""Step 3: the application starts from a validated configuration."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from .routes import setup_routes
from .settings import CONFIG_KEY, ConfigError, get_config


def init_app(config: dict[str, Any]) -> web.Application:
    """Build a new application around an already validated configuration."""
    app = web.Application()
    app[CONFIG_KEY] = config
    setup_routes(app)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Read the configuration, then serve on the host and port it names."""
    try:
        config = get_config(argv)
    except ConfigError as exc:
        print(f"Cannot start the polls app: {exc}", file=sys.stderr)
        sys.exit(2)
    web.run_app(init_app(config), host=config["host"], port=config["port"])
