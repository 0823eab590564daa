"""Step 3: the app's settings, read from a YAML file and checked before anything starts."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trafaret as t
import yaml
from aiohttp import web

PACKAGE_DIR = Path(__file__).resolve().parent
WORKBOOK_ROOT = PACKAGE_DIR.parents[2]  # <root>/steps/stepN/aiohttpdemo_polls -> <root>

# Where get_config() looks when no --config is given, first match wins: the current directory, the
# workbook's config/ folder, then per-user and system-wide places as a deployed app would use.
CONFIG_LOCATIONS: list[Path] = [
    Path("polls.yaml"),
    WORKBOOK_ROOT / "config" / "polls.yaml",
    Path.home() / ".config" / "aiohttpdemo_polls" / "polls.yaml",
    Path("/etc/aiohttpdemo_polls/polls.yaml"),
]

# The application's configuration, stored on the app. A typed AppKey replaces the old string key
# app["config"], which aiohttp now warns about.
CONFIG_KEY = web.AppKey("config", dict)


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the field."""


# TODO (step 3, task 1): describe the expected shape of the YAML file with trafaret
CONFIG_SCHEMA = t.Dict({})


def _describe_errors(errors: dict[str, Any] | str, prefix: str = "") -> list[str]:
    """Flatten trafaret's nested error dict into 'postgres.port: value is greater than 65535'."""
    if not isinstance(errors, dict):
        return [f"{prefix or 'the whole file'}: {errors}"]
    lines = []
    for field, problem in errors.items():
        lines += _describe_errors(problem, f"{prefix}.{field}" if prefix else str(field))
    return lines


def load_config(path: Path | str) -> dict[str, Any]:
    """Read one YAML file and return it validated, or raise ConfigError saying what is wrong where."""
    path = Path(path)
    # TODO (step 3, task 1): read with yaml.safe_load, check with CONFIG_SCHEMA, raise ConfigError on any problem
    raise NotImplementedError("TODO step 3, task 1")


def get_config(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The configuration the command line asks for: --config PATH, else the first predefined location."""
    # TODO (step 3, task 2): honour --config, else load the first of CONFIG_LOCATIONS that exists
    raise NotImplementedError("TODO step 3, task 2")
