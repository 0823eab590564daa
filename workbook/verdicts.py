"""Remembered verdicts, so that `nox -s status` re-runs only the steps whose inputs changed.

A verdict is kept with a key: a hash of the content (never the mtimes, which an editor or a checkout can
keep) of the step's tree and of everything that judges it (tests/, workbook/, config/, pyproject.toml),
plus the versions of Python, of every installed distribution and of PostgreSQL. Any change to any of them
gives another key, and the step runs again. Only the learner's commands use these files: grading never
reads them, since a learner's copy could carry forged ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import catalogue, environments
from .judge.untrusted import read_json_object
from .pg import ENV_BINDIR, ENV_DSN, find_bindir
from .runner import StepResult

STATE_DIR = ".workbook"  # the learner's own state: seen hints, remembered verdicts
VERDICTS_DIR = "verdicts"
FORMAT = "1"  # part of every key: bump it when what a verdict file holds changes

# What the judge reads besides the step's tree: its fixtures, its own code, the configuration. The steps'
# suites (tests/stepN) are left out here and added per step, so editing one suite re-checks one step.
JUDGE_INPUTS = ("tests", "workbook", "config", "pyproject.toml")
# Caches that tools write beside the code; they change on every run and decide nothing.
SKIPPED_DIRS = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")
# Exit statuses that are a verdict on the code: passed, failed, could not import (3, the plugin's
# BROKEN_EXIT_STATUS; importing the plugin here would load pytest and the judge's guard into status).
# Others (a timeout's kill, an interruption, a usage error) say nothing about the code and are not kept.
KEPT_RETURNCODES = frozenset({0, 1, 3})


def _hash_entry(digest: Any, path: Path, relative: str) -> None:
    """Add one path's name and content to `digest`; a symlink adds its target's name too."""
    digest.update(relative.encode("utf-8", "surrogateescape") + b"\0")
    with contextlib.suppress(OSError):
        if path.is_symlink():
            digest.update(b"link:" + os.readlink(path).encode("utf-8", "surrogateescape") + b"\0")
    try:
        info = path.stat()
    except OSError:
        digest.update(b"missing\0")
        return
    if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would block or never end: its kind is enough
        digest.update(f"kind:{stat.S_IFMT(info.st_mode)}\0".encode())
        return
    try:
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    except OSError:
        digest.update(b"unreadable\0")


def hash_tree(digest: Any, top: Path, base: Path, skip: frozenset[Path] = frozenset()) -> None:
    """Add every file under `top` (a file or a folder) but the folders in `skip`, in a fixed order, named
    relative to `base`."""
    if not top.is_dir() or top.is_symlink():
        _hash_entry(digest, top, top.relative_to(base).as_posix())
        return
    for folder, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and Path(folder, d) not in skip)
        here = Path(folder)
        for name in sorted(files) + [d for d in dirs if (here / d).is_symlink()]:
            if not name.endswith(SKIPPED_SUFFIXES):
                _hash_entry(digest, here / name, (here / name).relative_to(base).as_posix())


def postgres_version() -> str:
    """`postgres --version` of the binaries a suite would start, plus the explicit server if one is set."""
    explicit = f"dsn={os.environ.get(ENV_DSN, '')} bindir={os.environ.get(ENV_BINDIR, '')}"
    bindir = find_bindir()
    if bindir is None:
        return f"{explicit} no server binaries"
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
        version = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        version = "unknown"
    return f"{explicit} {bindir}: {version}"


def environment() -> str:
    """Python's version and every installed distribution, name==version, sorted. Not the environment's
    path: `nox -s stepN` and `nox -s status` run in two environments with the same pins."""
    installed = sorted(
        f"{dist.metadata['Name']}=={dist.version}" for dist in importlib.metadata.distributions()
    )
    return "\n".join([sys.version, *installed])


def judge_key(root: Path) -> str:
    """The hash of everything a verdict depends on besides the step's own tree: once per status call."""
    digest = hashlib.sha256(f"format {FORMAT}\n".encode())
    suites = frozenset(root / "tests" / step.name for step in catalogue.steps())
    for name in JUDGE_INPUTS:
        hash_tree(digest, root / name, root, skip=suites)
    digest.update(environment().encode() + b"\0")
    digest.update(postgres_version().encode() + b"\0")
    return digest.hexdigest()


def step_key(step: catalogue.Step, root: Path, judge: str) -> str:
    """The key of one step's verdict: the judge's key, the step's suite and the content of steps/stepN."""
    digest = hashlib.sha256(f"{judge}\n{step.name}\n".encode())
    for suite in step.suites:
        hash_tree(digest, root / "tests" / suite, root)
    digest.update(environments.fingerprint(step).encode() + b"\0")
    hash_tree(digest, step.tree(root, "steps"), root)
    return digest.hexdigest()


def _path(step: catalogue.Step, root: Path) -> Path:
    return root / STATE_DIR / VERDICTS_DIR / f"{step.name}.json"


def load(step: catalogue.Step, root: Path, key: str) -> StepResult | None:
    """The kept verdict for this key, or None: a missing, malformed or other key's file means re-run."""
    # The learner's code runs as the learner: it could have written this file, so it is read as untrusted.
    data = read_json_object(_path(step, root))
    report, returncode = data.get("report"), data.get("returncode")
    if data.get("key") != key or not isinstance(report, dict) or type(returncode) is not int:
        return None
    if not isinstance(report.get("tasks", {}), dict) or not isinstance(report.get("tests", []), list):
        return None
    return StepResult(step, "steps", returncode, report)


def store(result: StepResult, root: Path, key: str) -> None:
    """Keep a verdict of steps/ under `key` (computed before the run), atomically; a failure only costs
    a re-run later. Runs that ended without a verdict on the code are not kept."""
    if result.target != "steps" or not result.report or result.returncode not in KEPT_RETURNCODES:
        return
    path = _path(result.step, root)
    data = {"key": key, "returncode": result.returncode, "report": result.report}
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as file:
                json.dump(data, file)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
