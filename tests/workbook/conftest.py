"""Fixtures for the tooling's own tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from workbook import catalogue

COPIED = ("workbook", "tests", "steps", "solutions", "config", "pyproject.toml", "README.md")


@pytest.fixture
def workbook_copy(tmp_path: Path) -> Path:
    """A private copy of the whole workbook, for commands that change files."""
    copy = tmp_path / "workbook-copy"
    copy.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", ".nox", ".workbook", "backups")
    for name in COPIED:
        source = catalogue.ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=ignore)
        else:
            shutil.copy(source, copy / name)
    return copy


def run_workbook(copy: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`python -m workbook ARGS` inside a copy, as a learner's nox session would run it."""
    env = {**os.environ, "PYTHONPATH": str(copy)}
    return subprocess.run(
        [sys.executable, "-m", "workbook", *args],
        cwd=copy,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
