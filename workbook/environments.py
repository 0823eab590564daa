"""Which Python runs a step's app: the judge's own environment, or one of the step's own.

Steps 1 to 9 run on aiopg, which needs SQLAlchemy 1.4; step 10 runs on SQLAlchemy 2 and asyncpg, which
cannot share an environment with them. catalogue.toml names such a step's `environment`, a dependency
group of pyproject.toml. The noxfile builds it beside the shared one and says where in an environment
variable; without nox, the conventional folder is tried, then a message says how to make one.

Only the learner's processes use it: the judge (pytest, PostgreSQL through psycopg2) always runs in its
own environment and never imports the step's packages.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import catalogue


class EnvironmentMissing(RuntimeError):
    """A step's own environment does not exist yet; the message says how to make it."""


def variable(name: str) -> str:
    """The environment variable that holds the interpreter of environment `name`."""
    return f"WORKBOOK_PYTHON_{name.upper()}"


def folder(name: str, root: Path = catalogue.ROOT) -> Path:
    """Where nox keeps environment `name` for the interpreter nox runs on, beside the shared one."""
    return root / ".nox" / f"workbook-{name}"


def interpreter(location: Path) -> Path:
    """The python of the virtual environment at `location` (the noxfile's environments use it too)."""
    return location / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def learner_python(step: catalogue.Step) -> str:
    """The interpreter of the step's app: the judge's own unless the step names an environment."""
    if not step.environment:
        return sys.executable
    name = variable(step.environment)
    given = os.environ.get(name)
    python = Path(given) if given else interpreter(folder(step.environment))
    if not python.is_file():
        where = f"{name}={given}" if given else str(python)
        raise EnvironmentMissing(
            f"Step {step.number}'s app runs on packages of its own (the `{step.environment}` group of "
            f"pyproject.toml), and there is no such environment at {where}. `nox -s {step.name}` builds "
            f"it; without nox, make a virtual environment with those packages and set {name} to its python."
        )
    return str(python)


def same_version(python: str) -> bool:
    """Whether `python` (a virtual environment's) is the judge's Python version, read from pyvenv.cfg.

    Grading hard-links one interpreter for the learners' uids to reach and puts each environment's
    packages beside it, so they must all be for the same version.
    """
    config = Path(python).parent.parent / "pyvenv.cfg"
    wanted = "{}.{}".format(*sys.version_info[:2])
    try:
        lines = config.read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        key, _, value = line.partition("=")
        if key.strip() in ("version_info", "version"):
            return value.strip() == wanted or value.strip().startswith(wanted + ".")
    return False


def fingerprint(step: catalogue.Step) -> str:
    """What a verdict on the step depends on in its own environment: the interpreter, its pyvenv.cfg and
    the installed distributions (name and version, from their .dist-info folders); "" for the judge's own."""
    if not step.environment:
        return ""
    try:
        python = Path(learner_python(step))
    except EnvironmentMissing:
        return "missing"
    prefix = python.parent.parent
    installed = sorted(p.name for p in prefix.glob("lib/python*/site-packages/*.dist-info"))
    config = prefix / "pyvenv.cfg"  # the base interpreter and its exact version
    return "\n".join([str(python), config.read_text() if config.is_file() else "", *installed])
