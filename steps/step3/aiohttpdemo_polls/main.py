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
    # TODO (step 3, task 3): keep the configuration on the app under CONFIG_KEY
    setup_routes(app)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Read the configuration, then serve on the host and port it names."""
    # TODO (step 3, task 3): report a bad configuration in one clear line (exit status 2), else serve the app
    raise NotImplementedError("TODO step 3, task 3")
