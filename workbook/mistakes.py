"""Known mistakes: small patches against a solution, each of which must fail its task with a given phrase.

tests/mistakes/stepN/NAME.patch starts with header lines, then a unified diff whose paths are relative to
solutions/stepN (`git apply -p1` inside a copy of it):

    # task: 2
    # phrase: what the failure of that task must say (case-insensitive)
    # mistake: what the learner did wrong, in one sentence

The integrity check applies each patch to a fresh copy of the solution and runs the step's suite on it as
`nox -s stepN` runs it for a learner (one pytest process, in the same order), until the last check of the
mistake's task or an earlier one: what comes after runs after every message the rule reads. The mistake is
caught when
  1. its task fails (at least one of its checks does not pass), and
  2. the phrase is in the FIRST failure message the learner reads: that of the first check that does not
     pass in the first task that does not pass, tasks in the catalogue's order and each task's checks in
     the order pytest ran them (learner.first_failing_check, the order of pytest_plugin's summary and of
     `nox -s hint`), as the report keeps it (at most pytest_plugin.MAX_LINES lines).
So when one mistake fails several tasks, the first message must name it, not a later one, and a task
before the mistake's own that fails too must say the phrase. The test name is not part of the message.
A patch that no longer applies is a problem too, so the list cannot silently rot.
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
from .learner import first_failing_check
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
    """Run the whole step, as a learner does, against a patched copy of the solution."""
    with tempfile.TemporaryDirectory(prefix="workbook-mistake-") as tmp:
        try:
            apply(mistake, Path(tmp))
        except MistakeError as exc:
            return Verdict(mistake, False, str(exc))
        # What runs after the last check of this task or an earlier one cannot change the first message.
        extra = ["-q", "--up-to-task", str(mistake.task)]
        result = run_step(mistake.step, tmp, extra=extra, env=env)
        if not result.report:  # the judge died before it wrote anything: no verdict yet, so once more
            first = verdict_of(mistake, result).detail
            result = run_step(mistake.step, tmp, extra=extra, env=env)
            if result.report:
                print(f"note: {mistake.step.name}/{mistake.name} was judged again after: {first}", flush=True)
    return verdict_of(mistake, result)


def verdict_of(mistake: Mistake, result: StepResult) -> Verdict:
    """Caught when the mistake's task fails and the first message of the step names the phrase."""
    if result.broken:
        # The exit code and the output's end: a suite that left no report once (a judge that died) says why.
        tail = " ".join(result.output.split())[-300:]
        detail = f"{result.broken[:300]} (exit code {result.returncode}; its output ended: {tail!r})"
        return Verdict(mistake, False, f"the patched solution could not be checked: {detail}")
    passed, total = result.task_counts(mistake.task)
    if total == 0 or passed == total:
        return Verdict(mistake, False, f"task {mistake.task} still passes ({passed}/{total} checks)")
    found = first_failing_check(result)
    task, test = found if found is not None else (mistake.step.task(mistake.task), None)
    first = str(test.get("message", "")) if test is not None else ""
    if mistake.phrase.lower() in first.lower():
        return Verdict(mistake, True, f"{total - passed}/{total} checks of task {mistake.task} fail")
    name = str(test.get("nodeid", "")).split("::")[-1] if test is not None else "no check ran"
    later = any(
        mistake.phrase.lower() in str(other.get("message", "")).lower()
        for other in result.report.get("tests", [])
        if other.get("outcome") != "passed"
    )
    shown = first[:300].replace("\n", "\n    ")
    return Verdict(
        mistake,
        False,
        f"the first message (task {task.number}, {name}) does not say {mistake.phrase!r}"
        f"{' (a later message says it)' if later else ''}:\n    {shown}",
    )


def check_all(mistakes: Sequence[Mistake], workers: int = 2) -> list[Verdict]:
    """Judge every mistake, `workers` at a time, on one shared PostgreSQL server."""
    with shared_server() as env, ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda m: judge(m, env), mistakes))
