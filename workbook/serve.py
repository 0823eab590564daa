"""`nox -s serve`: run one step's app for a person to click through, on a throwaway PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import catalogue, environments
from .learner import untouched
from .pg import PostgresServer, describe, throwaway_postgres

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


@dataclass
class PreparedApp:
    """A step's app, ready to start: its tree, its config file and the database behind it."""

    tree: Path
    python: str = sys.executable  # the step's interpreter (environments.learner_python)
    config: Path | None = None
    server: PostgresServer | None = None
    database: str | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.tree), "PYTHONUNBUFFERED": "1"}

    def command(self, module: str = catalogue.PACKAGE) -> list[str]:
        """`python -m MODULE [--config FILE]`, as a person would type it in the step's folder."""
        return [self.python, "-m", module] + (["--config", str(self.config)] if self.config else [])

    def start(self) -> subprocess.Popen[bytes]:
        """The app in the background, for benchmarks and browser tests; the caller stops it."""
        return subprocess.Popen(
            self.command(), cwd=self.tree, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )


def stop_process(process: subprocess.Popen, grace: float = 15) -> None:
    """Stop a background server: SIGTERM lets the app run its cleanup; SIGKILL after `grace` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def port_in_use(port: int, host: str = "127.0.0.1") -> str:
    """Why the app could not listen on host:port ('' when it can): checked before anything starts, so a
    busy port is reported as such and not blamed on the learner's code."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return ""


@contextlib.contextmanager
def prepared_app(
    step: catalogue.Step,
    tree: Path,
    port: int,
    pool_size: int | None = None,
    database: str = "aiohttpdemo_polls",
) -> Iterator[PreparedApp]:
    """A database (named `database`: two apps on one server need two names) and a config file for the step's
    app, as far as that step uses them."""
    python = environments.learner_python(step)
    if step.serve == "plain":
        yield PreparedApp(tree, python)
        return
    with throwaway_postgres() as server, tempfile.TemporaryDirectory(prefix="workbook-serve-") as tmp:
        database = server.create_database(database)
        print(f"Database: {describe(server)}, database {database!r}")
        postgres = server.params(database) | ({"maxsize": pool_size} if pool_size else {})
        prepared = PreparedApp(tree, python, write_config(Path(tmp), postgres, port), server, database)
        if step.serve == "database":
            init_db = subprocess.run(
                prepared.command(f"{catalogue.PACKAGE}.init_db"), cwd=tree, env=prepared.env, check=False
            )
            if init_db.returncode != 0:
                raise SystemExit(f"init_db failed with exit status {init_db.returncode}: see above")
        yield prepared


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
    taken = port_in_use(port)
    if taken:
        which = f"--learner {step.number}" if learner else str(step.number)
        way_out = (
            f"stop it (step {step.number}'s app always uses port {DEFAULT_PORT})"
            if step.serve == "plain"
            else f"stop it, or choose another port: `nox -s serve -- {which} --port {port + 1}`"
        )
        raise SystemExit(
            f"Port {port} is already in use ({taken}): another server runs there. To go on, {way_out}."
        )
    if learner and untouched(step):
        raise SystemExit(
            f"Your step {step.number} is still the untouched starter, so it has no server yet. Start with "
            f"its lesson (steps/{step.name}/README.md) and `nox -s {step.name}`; meanwhile "
            f"`nox -s serve -- {step.number}` runs the reference solution."
        )
    with prepared_app(step, tree, port) as prepared:
        print(f"Serving {whose} step {step.number} app ({step.title}) from {tree}")
        print(f"Open http://127.0.0.1:{port}/ - press Ctrl+C to stop.", flush=True)
        try:
            code = subprocess.run(prepared.command(), cwd=tree, env=prepared.env, check=False).returncode
            if code != 0 and learner:
                print(
                    f"\nYour app stopped with exit status {code}. "
                    f"`nox -s {step.name}` shows which task is not done."
                )
            return code
        except KeyboardInterrupt:
            print("\nStopped; the throwaway database is being removed.")
            return 0
