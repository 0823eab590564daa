"""A local judge keeps the suites' rewritten bytecode in a private cache folder, never beside the suites, and
a graded judge keeps none (workbook/pytest_plugin.py: cache_rewritten_suites)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from workbook import catalogue
from workbook.runner import JUDGE_ENV

ASK = (
    "import sys; from workbook import pytest_plugin; pytest_plugin.cache_rewritten_suites(); "
    "print(sys.pycache_prefix, sys.dont_write_bytecode)"
)


def python(code: str, cache: Path) -> str:
    """What `code` prints, run as the judge runs (JUDGE_ENV) with its cache folder under `cache`."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=catalogue.ROOT,
        env={**os.environ, **JUDGE_ENV, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(catalogue.ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_the_cache_folder_is_private(tmp_path: Path) -> None:
    folder = tmp_path / "workbook" / "judge-bytecode"
    assert python(ASK, tmp_path) == f"{folder} False"
    assert oct(folder.stat().st_mode & 0o777) == oct(0o700)


def test_a_folder_others_may_write_is_not_used(tmp_path: Path) -> None:
    folder = tmp_path / "workbook" / "judge-bytecode"
    folder.mkdir(parents=True, mode=0o700)
    folder.chmod(0o777)  # anyone could plant bytecode there: the judge rewrites the suites instead
    assert python(ASK, tmp_path) == "None True"


def test_a_local_run_caches_the_suite_and_a_graded_one_does_not(tmp_path: Path) -> None:
    """Step 1's suite on its solution: its modules' rewritten bytecode lands in the cache folder, none
    beside them; with grading's marker in the environment, nothing is written at all."""
    suite = catalogue.ROOT / "tests" / "step1"
    command = [sys.executable, "-m", "workbook", "check", "1", "--target", "solutions"]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "graded"), "WORKBOOK_GRADE_RUN": "test"}
    subprocess.run(command, cwd=catalogue.ROOT, env=env, capture_output=True, check=True)
    assert not list((tmp_path / "graded").rglob("*.pyc"))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "local")}
    subprocess.run(command, cwd=catalogue.ROOT, env=env, capture_output=True, check=True)
    cached = {path.name.split(".")[0] for path in (tmp_path / "local").rglob("*-pytest-*.pyc")}
    assert {path.stem for path in suite.glob("test_*.py")} <= cached
    assert not (suite / "__pycache__").exists()
