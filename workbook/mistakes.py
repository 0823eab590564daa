"""Known mistakes: small patches against a solution, each of which must fail its task with a given phrase.

tests/mistakes/stepN/NAME.patch starts with header lines, then a unified diff whose paths are relative to
solutions/stepN (`git apply -p1` inside a copy of it):

    # task: 2
    # phrase: what the failure of that task must say (case-insensitive)
    # mistake: what the learner did wrong, in one sentence

The integrity check applies each patch to a fresh copy of the solution, runs that task's checks, and
requires the task to fail with the phrase in one of its failure messages. A patch that no longer applies
is a problem too, so the list cannot silently rot.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import catalogue
from .runner import StepResult, run_step, shared_server

MISTAKES_DIR = catalogue.ROOT / "tests" / "mistakes"
FIELDS = ("task", "phrase", "mistake")


class MistakeError(ValueError):
    """A mistake file that is malformed or no longer applies; the message names the file."""


@dataclass(frozen=True)
class Mistake:
    path: Path
    step: catalogue.Step
    task: int
    phrase: str
    description: str

    @property
    def name(self) -> str:
        return self.path.stem


def parse(path: Path, step: catalogue.Step) -> Mistake:
    """Read a patch's header; MistakeError when a field is missing or names an unknown task."""
    header: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith(("--- ", "diff ")):
            break
        key, sep, value = line.lstrip("# ").partition(":")
        if sep and key.strip() in FIELDS:
            header[key.strip()] = value.strip()
    missing = [name for name in FIELDS if not header.get(name) or header[name].upper() == "TODO"]
    if missing:
        raise MistakeError(f"{path.relative_to(catalogue.ROOT)}: the header lacks {', '.join(missing)}")
    try:
        task = step.task(int(header["task"])).number
    except (KeyError, ValueError):
        raise MistakeError(
            f"{path.relative_to(catalogue.ROOT)}: step {step.number} has no task {header['task']}"
        ) from None
    return Mistake(path, step, task, header["phrase"], header["mistake"])


def load(steps: Sequence[catalogue.Step] | None = None) -> list[Mistake]:
    """Every known mistake of these steps, in file order."""
    found = []
    for step in steps or catalogue.steps():
        folder = MISTAKES_DIR / step.name
        found += [parse(path, step) for path in sorted(folder.glob("*.patch"))] if folder.is_dir() else []
    return sorted(found, key=lambda m: (m.step.number, m.task, m.name))


def solution_copy(step: catalogue.Step, workbook_copy: Path) -> Path:
    """Copy the step's solution into workbook_copy/steps/stepN, beside the workbook's config/ as in a
    learner's copy; the step folder."""
    tree = step.tree(workbook_copy, "steps")
    shutil.copytree(
        step.tree(catalogue.ROOT, "solutions"), tree, ignore=shutil.ignore_patterns("__pycache__")
    )
    if not (workbook_copy / "config").exists():
        shutil.copytree(catalogue.ROOT / "config", workbook_copy / "config")
    return tree


def apply(mistake: Mistake, workbook_copy: Path) -> Path:
    """Copy the step's solution into workbook_copy/steps/stepN and apply the patch; the step folder."""
    tree = solution_copy(mistake.step, workbook_copy)
    # `git apply` works outside a repository too; it ignores the header lines before the diff.
    done = subprocess.run(
        ["git", "apply", "-p1", "--whitespace=nowarn", str(mistake.path)],
        cwd=tree, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise MistakeError(
            f"{mistake.path.relative_to(catalogue.ROOT)} no longer applies to solutions/{mistake.step.name}: "
            f"{done.stderr.strip()}"
        )
    return tree


@dataclass
class Verdict:
    mistake: Mistake
    caught: bool
    detail: str


def judge(mistake: Mistake, env: dict[str, str]) -> Verdict:
    """Run the mistake's task against a patched copy of the solution."""
    with tempfile.TemporaryDirectory(prefix="workbook-mistake-") as tmp:
        try:
            apply(mistake, Path(tmp))
        except MistakeError as exc:
            return Verdict(mistake, False, str(exc))
        result = run_step(mistake.step, tmp, extra=["-q", "--task", str(mistake.task)], env=env)
    return verdict_of(mistake, result)


def verdict_of(mistake: Mistake, result: StepResult) -> Verdict:
    if result.broken:
        return Verdict(mistake, False, f"the patched solution could not be checked: {result.broken[:300]}")
    passed, total = result.task_counts(mistake.task)
    if total == 0 or passed == total:
        return Verdict(mistake, False, f"task {mistake.task} still passes ({passed}/{total} checks)")
    messages = [t.get("message", "") for t in result.report.get("tests", []) if t.get("task") == mistake.task]
    if not any(mistake.phrase.lower() in str(message).lower() for message in messages):
        shown = "\n    ".join(str(m)[:300] for m in messages if m)
        return Verdict(
            mistake, False, f"task {mistake.task} fails, but no message says {mistake.phrase!r}:\n    {shown}"
        )
    return Verdict(mistake, True, f"{total - passed}/{total} checks fail")


def check_all(mistakes: Sequence[Mistake], workers: int = 2) -> list[Verdict]:
    """Judge every mistake, `workers` at a time, on one shared PostgreSQL server."""
    with shared_server() as env, ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda m: judge(m, env), mistakes))
