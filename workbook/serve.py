"""`nox -s serve`: run one step's app for a person to click through, on a throwaway PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from . import catalogue
from .pg import describe, throwaway_postgres

DEFAULT_PORT = 8080


def newest_finished_step() -> catalogue.Step:
    """The highest step whose solution exists: what the workbook builds so far."""
    finished = [
        s for s in catalogue.steps() if (s.tree(catalogue.ROOT, "solutions") / catalogue.PACKAGE).is_dir()
    ]
    return finished[-1]


def write_config(directory: Path, postgres: dict[str, Any], port: int) -> Path:
    """config/polls.yaml with the database and port of this run, in a temp file."""
    config = yaml.safe_load((catalogue.ROOT / "config" / "polls.yaml").read_text())
    config["postgres"].update(postgres)
    config["port"] = port
    path = directory / "polls.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _python(tree: Path, *args: str, check: bool = True) -> int:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1"}
    completed = subprocess.run([sys.executable, "-m", *args], cwd=tree, env=env, check=False)
    if check and completed.returncode != 0:
        raise SystemExit(f"`python -m {' '.join(args)}` failed with exit status {completed.returncode}")
    return completed.returncode


@contextlib.contextmanager
def prepared_config(step: catalogue.Step, tree: Path, port: int) -> Iterator[Path | None]:
    """A database and a config file for the step's app, as far as that step uses them."""
    if step.serve == "plain":
        yield None
        return
    with throwaway_postgres() as server, tempfile.TemporaryDirectory(prefix="workbook-serve-") as tmp:
        database = server.create_database("aiohttpdemo_polls")
        print(f"Database: {describe(server)}, database {database!r}")
        config = write_config(Path(tmp), server.params(database), port)
        if step.serve == "database":
            _python(tree, f"{catalogue.PACKAGE}.init_db", "--config", str(config))
        yield config


def serve(step: catalogue.Step, learner: bool = False, port: int = DEFAULT_PORT) -> int:
    """Run the app in the foreground until Ctrl+C; everything it started is removed afterwards."""
    tree = step.tree(catalogue.ROOT, "steps" if learner else "solutions")
    whose = "your" if learner else "the reference"
    if not (tree / catalogue.PACKAGE).is_dir():
        raise SystemExit(f"{tree} has no {catalogue.PACKAGE} package to serve.")
    if step.serve == "plain" and port != DEFAULT_PORT:
        raise SystemExit(
            f"Step {step.number}'s app has no configuration yet: it always listens on {DEFAULT_PORT}."
        )
    with prepared_config(step, tree, port) as config:
        print(f"Serving {whose} step {step.number} app ({step.title}) from {tree}")
        print(f"Open http://127.0.0.1:{port}/ - press Ctrl+C to stop.", flush=True)
        args = [catalogue.PACKAGE] + (["--config", str(config)] if config else [])
        try:
            return _python(tree, *args, check=False)
        except KeyboardInterrupt:
            print("\nStopped; the throwaway database is being removed.")
            return 0
