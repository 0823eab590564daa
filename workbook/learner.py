"""The learner's side: status, progressive hints, watch mode, reset and the reference solution.

Nothing here keeps state that the tests could not recompute, except which hints a learner has already
seen (`.workbook/hints.json`, so that asking again shows the next one). Status also remembers verdicts
(`.workbook/verdicts/`, workbook/verdicts.py), but only under a key that any change of their inputs breaks.
"""

from __future__ import annotations

import difflib
import json
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from . import catalogue, starter, verdicts
from .runner import StepResult, run_many, run_step
from .scoring import format_points
from .verdicts import STATE_DIR

HINTS_FILE = "hints.json"
BACKUP_DIR = "backups"
BAR_WIDTH = 30


# --- reading results -------------------------------------------------------------------------------------


def untouched(step: catalogue.Step, root: Path = catalogue.ROOT) -> bool:
    """True when steps/stepN is exactly its generated starter: every task is then known to fail."""
    generated, _ = starter.generate_step(step.tree(root, "solutions"), step.number)
    tree = step.tree(root, "steps")
    present = {p.relative_to(tree).as_posix(): p for p in starter.source_files(tree)} if tree.exists() else {}
    return set(present) == set(generated) and all(present[k].read_bytes() == v for k, v in generated.items())


@dataclass
class TaskState:
    task: catalogue.Task
    state: str  # "done", "failing" or "not started"
    passed: int = 0
    total: int = 0


def task_states(step: catalogue.Step, result: StepResult | None) -> list[TaskState]:
    """Per task: done, failing, or not started (the step's files are still the untouched starter)."""
    if result is None:
        return [TaskState(task, "not started") for task in step.tasks]
    states = []
    for task in step.tasks:
        passed, total = result.task_counts(task.number)
        state = "done" if result.task_done(task.number) else "failing"
        states.append(TaskState(task, state, passed, total))
    return states


def first_failing_check(result: StepResult) -> tuple[catalogue.Task, dict[str, Any] | None] | None:
    """The first failing task of a run and its first check that did not pass (None: no check of it ran).

    The order is the one `nox -s stepN` prints (workbook/pytest_plugin.py's summary): tasks in the
    catalogue's order, each task's checks in the order pytest ran them. So this check's message is the first
    one a learner reads, and the one the integrity check holds to a known mistake's phrase (mistakes.py).
    """
    for task in result.step.tasks:
        if result.task_done(task.number):
            continue
        for test in result.report.get("tests", []):
            if test.get("task") == task.number and test.get("outcome") != "passed":
                return task, test
        return task, None
    return None


def first_failure(result: StepResult) -> tuple[catalogue.Task, str] | None:
    """The first failing task of a run and the message of its first failing check."""
    found = first_failing_check(result)
    if found is None:
        return None
    task, test = found
    if test is None:
        return task, result.broken or "no check of this task ran"
    return task, f"{str(test.get('nodeid', '')).split('::')[-1]}: {test.get('message', '')}"


def summary_lines(result: StepResult) -> list[str]:
    """A compact report: one line per task, then the first failure only."""
    if result.broken:
        return [f"step {result.step.number} could not be checked:", *result.broken.splitlines()]
    lines = []
    for state in task_states(result.step, result):
        mark = "PASS" if state.state == "done" else "FAIL"
        lines.append(f"  {mark}  task {state.task.number}: {state.task.title} ({state.passed}/{state.total})")
    failure = first_failure(result)
    if failure:
        task, message = failure
        lines.append(f"  First failure, task {task.number}: {message}")
    else:
        lines.append(
            f"  Step {result.step.number} passes: {format_points(result.points)}/{result.step.points} points."
        )
    return lines


# --- status ----------------------------------------------------------------------------------------------


def progress_bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    filled = round(width * done / total) if total else 0
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total} tasks"


def remembered_or_run(to_run: list[catalogue.Step], root: Path) -> dict[int, StepResult]:
    """Each step's verdict: the remembered one when nothing it depends on changed, else a fresh run.

    Keys are computed before the runs, so an edit made while a suite runs is seen by the next status.
    """
    if not to_run:
        return {}
    judge = verdicts.judge_key(root)
    keys = {step.number: verdicts.step_key(step, root, judge) for step in to_run}
    results = {}
    for step in to_run:
        kept = verdicts.load(step, root, keys[step.number])
        if kept is not None:
            results[step.number] = kept
    stale = [(step, "steps") for step in to_run if step.number not in results]
    for result in run_many(stale, root=root) if stale else []:
        verdicts.store(result, root, keys[result.step.number])
        results[result.step.number] = result
    return results


def status(root: Path = catalogue.ROOT) -> str:
    """The whole workbook at a glance; untouched steps are not even run (their starters fail by design)."""
    steps = catalogue.steps()
    to_run = [step for step in steps if not untouched(step, root)]
    results = remembered_or_run(to_run, root)
    lines = [f"{'step':<5}{'title':<24}{'points':<9}tasks"]
    done = total = 0
    earned = Fraction(0)
    next_up: TaskState | None = None
    for step in steps:
        states = task_states(step, results.get(step.number))
        marks = "  ".join(f"{s.task.number}:{s.state}" for s in states)
        result = results.get(step.number)
        if result and result.broken:
            marks = f"cannot check it: {result.broken.splitlines()[0]} (`nox -s {step.name}` says more)"
        # The grader's own scoring: an untouched starter scores 0 by construction, so it need not run.
        points = result.points if result else Fraction(0)
        earned += points
        shown = f"{format_points(points)}/{step.points}"
        lines.append(f"{step.number:<5}{step.title[:23]:<24}{shown:<9}{marks}")
        done += sum(s.state == "done" for s in states)
        total += len(states)
        if next_up is None:
            next_up = next((s for s in states if s.state != "done"), None)
    max_points = sum(step.points for step in steps)
    lines += ["", f"{progress_bar(done, total)}, {format_points(earned)}/{max_points} points"]
    if next_up is None:
        lines.append("Every task of every step passes. Well done!")
    else:
        step = catalogue.step(next_up.task.step)
        lines.append(
            f"Next: step {step.number}, task {next_up.task.number}: {next_up.task.title}\n"
            f"      read steps/{step.name}/README.md, then run `nox -s {step.name}` "
            f"(`nox -s hint -- {step.number}` if stuck)."
        )
    return "\n".join(lines)


# --- hints -----------------------------------------------------------------------------------------------


def _hints_path(root: Path) -> Path:
    return root / STATE_DIR / HINTS_FILE


def hint(step: catalogue.Step, show_all: bool = False, root: Path = catalogue.ROOT) -> str:
    """The next unseen hint for the first failing task of the step; every hint with show_all."""
    result = None if untouched(step, root) else run_step(step, "steps", root=root)
    failure = (step.tasks[0], "") if result is None else first_failure(result)
    if failure is None:
        last = step.number == max(other.number for other in catalogue.steps())
        follow = "That was the last step: the polls app is finished." if last else "On to the next step!"
        return f"Step {step.number} passes already: no hint needed. {follow}"
    task, message = failure
    header = f"Step {step.number}, task {task.number}: {task.title}"
    if message:
        header += f"\n  failing: {message.splitlines()[0]}"
    if show_all:
        return header + "\n" + "\n".join(f"  hint {i}: {h}" for i, h in enumerate(task.hints, start=1))
    path = _hints_path(root)
    seen = json.loads(path.read_text()) if path.exists() else {}
    key = f"{step.number}.{task.number}"
    shown = min(seen.get(key, 0) + 1, len(task.hints))
    seen[key] = shown
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(seen, indent=1, sort_keys=True))
    text = f"{header}\n  hint {shown} of {len(task.hints)}: {task.hints[shown - 1]}"
    if shown == len(task.hints):
        text += f"\n  That was the last hint. The lesson, steps/{step.name}/README.md, has the background."
    else:
        text += f"\n  Ask again (`nox -s hint -- {step.number}`) for the next one."
    return text


# --- watch -----------------------------------------------------------------------------------------------


def watch(step: catalogue.Step, root: Path = catalogue.ROOT, changes: Iterable[object] | None = None) -> None:
    """Re-run the step's suite whenever a file of steps/stepN changes, printing the summary only."""
    import watchfiles  # only the watch session installs it

    tree = step.tree(root, "steps")

    def run_once() -> None:
        started = time.monotonic()
        result = run_step(step, "steps", root=root)
        print(
            f"\n--- step {step.number}, {time.strftime('%H:%M:%S')} ({time.monotonic() - started:.1f}s) ---"
        )
        print("\n".join(summary_lines(result)), flush=True)

    run_once()
    print(f"Watching {tree} for changes; Ctrl+C to stop.", flush=True)
    source = changes if changes is not None else watchfiles.watch(tree, watch_filter=watchfiles.PythonFilter(
        extra_extensions=(".html", ".css", ".yaml")))  # fmt: skip
    for _ in source:
        run_once()


# --- reset and solution ----------------------------------------------------------------------------------


def reset(step: catalogue.Step, root: Path = catalogue.ROOT, assume_yes: bool = False) -> str:
    """Put steps/stepN back to its starter, after a confirmation, keeping a copy of the learner's version."""
    if untouched(step, root):
        return f"steps/{step.name} is already the untouched starter: nothing to reset."
    if not assume_yes:
        try:
            answer = input(
                f"Reset steps/{step.name} to its starter? Your version is kept in {BACKUP_DIR}/. [y/N] "
            )
        except EOFError:  # no terminal to answer from (a script, an editor's task): that is a no
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            return f"Nothing changed. (`nox -s reset -- {step.number} --yes` resets without asking.)"
    tree = step.tree(root, "steps")
    backup = root / BACKUP_DIR / f"{step.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    shutil.copytree(tree, backup, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(tree)
    generated, _ = starter.generate_step(step.tree(root, "solutions"), step.number)
    for relative, data in generated.items():
        (tree / relative).parent.mkdir(parents=True, exist_ok=True)
        (tree / relative).write_bytes(data)
    return f"steps/{step.name} is the starter again; your version is in {backup.relative_to(root)}/."


def solution_diff(step: catalogue.Step, root: Path = catalogue.ROOT, force: bool = False) -> tuple[bool, str]:
    """The reference solution as a diff against the learner's code, once the learner's step passes."""
    if not force:
        result = run_step(step, "steps", root=root)
        if result.returncode != 0 or not all(result.task_done(t.number) for t in step.tasks):
            done = sum(result.task_done(t.number) for t in step.tasks)
            return False, (
                f"Step {step.number} does not pass yet ({done}/{len(step.tasks)} tasks): the solution stays "
                f"hidden so you can still find it yourself. `nox -s hint -- {step.number}` helps; "
                f"`nox -s solution -- {step.number} --force` shows it anyway."
            )
    mine, reference = step.tree(root, "steps"), step.tree(root, "solutions")
    names = sorted(
        {p.relative_to(reference).as_posix() for p in starter.source_files(reference)}
        | {p.relative_to(mine).as_posix() for p in starter.source_files(mine)}
    )
    chunks = []
    for name in names:
        ours = (mine / name).read_text().splitlines(keepends=True) if (mine / name).exists() else []
        theirs = []
        if (reference / name).exists():
            text, _ = starter.render((reference / name).read_text(), step.number, name, keep_solution=True)
            theirs = text.splitlines(keepends=True)
        chunks += difflib.unified_diff(
            ours, theirs, f"yours/{step.name}/{name}", f"solution/{step.name}/{name}"
        )
    if not chunks:
        return True, f"Your step {step.number} is identical to the reference solution."
    return True, "".join(chunks)


def print_lines(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
