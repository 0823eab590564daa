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


PORT = t.Int(gte=1, lte=65535)
CONFIG_SCHEMA = t.Dict(
    {
        t.Key("postgres"): t.Dict(
            {
                t.Key("database"): t.String(),
                t.Key("user"): t.String(),
                t.Key("password"): t.String(allow_blank=True),
                t.Key("host"): t.String(),
                t.Key("port"): PORT,
                t.Key("minsize"): t.Int(gte=0),
                t.Key("maxsize"): t.Int(gte=1),
            }
        ),
        t.Key("host"): t.String() & t.IP,  # a string first: t.IP alone raises TypeError for !!binary bytes
        t.Key("port"): PORT,
    }
)


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
    try:
        with path.open(encoding="utf-8") as handle:  # a stream lets YAML errors name the file and line
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: this is not a UTF-8 text file") from None
    # Whatever else safe_load raises, the text is not YAML the app can read: YAMLError when malformed,
    # ValueError for a date that does not exist (2020-02-30), RecursionError when nested too deep.
    except Exception as exc:  # its message spans lines: fold it into one
        raise ConfigError(f"{path}: this is not valid YAML: {' '.join(str(exc).split())}") from None
    try:
        return CONFIG_SCHEMA.check(data)
    except t.DataError as exc:  # as_dict(value=True): each refused field with the value it got
        problems = "; ".join(_describe_errors(exc.as_dict(value=True)))
        raise ConfigError(f"{path}: invalid configuration: {problems}") from None


def get_config(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The configuration the command line asks for: --config PATH, else the first predefined location."""
    parser = argparse.ArgumentParser(prog="python -m aiohttpdemo_polls", description="Run the polls app.")
    parser.add_argument("-c", "--config", type=Path, help="the YAML configuration file to use")
    options = parser.parse_args(argv)
    if options.config is not None:
        return load_config(options.config)
    for location in CONFIG_LOCATIONS:
        if location.is_file():
            return load_config(location)
    searched = ", ".join(str(location) for location in CONFIG_LOCATIONS)
    raise ConfigError(f"no configuration file found (looked in {searched}); pass --config PATH to name one")
