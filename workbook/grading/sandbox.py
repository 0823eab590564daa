"""The folders a step is graded in: the instructor's files, snapshotted once, plus one step of the learner.

Learner code is untrusted and may hang, crash, print without end or delete files. Each step of each
learner runs in a sandbox: a temp folder with copies of the instructor's tests/, workbook/, config/ and
pyproject.toml (snapshotted once when grading starts, so an edit mid-run changes nobody's grade) plus
that one step of the learner. Neither the submission nor this checkout is touched, and a step that
deletes its sandbox's tests cannot spoil the next one.
"""

from __future__ import annotations

import compileall
import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path

from .. import catalogue
from .submissions import IGNORED

INSTRUCTOR_FILES = ("pyproject.toml", "workbook", "config")  # and the suite's part of tests/
INSTRUCTOR_IGNORED = shutil.ignore_patterns(".pytest_cache", ".ipynb_checkpoints")


def suite_files(root: Path, steps: Sequence[catalogue.Step]) -> list[Path]:
    """What of tests/ the suites of `steps` need: their own folders and those of the steps they carry, the
    top-level files (conftest.py, carried.py) and support folders holding no tests (sql/). Never other
    suites, such as the tooling's own tests."""
    tests = root / "tests"
    wanted = {suite for step in steps for suite in step.suites}
    every_step = {step.name for step in catalogue.steps()}
    chosen = []
    for entry in sorted(tests.iterdir()):
        if entry.name in ("__pycache__", ".pytest_cache"):
            continue
        if entry.is_file() or entry.name in wanted:
            chosen.append(entry)
        elif entry.name not in every_step and not any(entry.rglob("test_*.py")):
            chosen.append(entry)
    return chosen


def _copy_instructor_files(root: Path, into: Path, steps: Sequence[catalogue.Step]) -> None:
    (into / "tests").mkdir(parents=True)
    for source in [root / name for name in INSTRUCTOR_FILES] + suite_files(root, steps):
        target = into / source.relative_to(root)
        if source.is_dir():
            shutil.copytree(source, target, ignore=INSTRUCTOR_IGNORED, dirs_exist_ok=True)
        elif source.is_file():
            shutil.copy2(source, target)


def take_snapshot(root: Path, into: Path, steps: Sequence[catalogue.Step]) -> Path:
    """The instructor's suites and tooling as they are when grading starts, compiled once: every learner
    is graded by the same tests even if the checkout is edited during the run."""
    _copy_instructor_files(root, into, steps)
    compileall.compile_dir(into / "workbook", quiet=2)
    return into


def fingerprint(snapshot: Path) -> str:
    """A SHA-256 of the snapshot's files (paths and bytes, compiled files left out): shards graded from
    another version of the suites or the tooling have another fingerprint, so grade-merge can refuse them."""
    digest = hashlib.sha256()
    for path in sorted(p for p in snapshot.rglob("*") if p.is_file()):
        relative = path.relative_to(snapshot)
        if "__pycache__" in relative.parts or path.suffix == ".pyc":
            continue
        data = path.read_bytes()
        digest.update(f"{relative.as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def make_sandbox(sandbox: Path, learner_tree: Path, step: catalogue.Step, snapshot: Path) -> None:
    """The instructor's suite and tooling plus one step of the learner (vetted by vet_tree), all copies."""
    _copy_instructor_files(snapshot, sandbox, [step])
    shutil.copytree(learner_tree, step.tree(sandbox, "steps"), symlinks=False, ignore=IGNORED)


def sandbox_damage(sandbox: Path, step: catalogue.Step) -> list[str]:
    """Which of the instructor's files in the sandbox the learner's code removed (it cannot reach others)."""
    wanted = [sandbox / "tests" / step.name, sandbox / "tests" / "conftest.py", sandbox / "workbook"]
    gone = [p.relative_to(sandbox).as_posix() for p in wanted if not p.exists()]
    return (
        [f"the code deleted {', '.join(gone)} (in its sandbox copy; nothing else was touched)"]
        if gone
        else []
    )
