"""Reads catalogue.toml: the steps, their tasks, hints and points.

Standard library only, because the noxfile imports it before any session environment exists.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - nox itself depends on tomli on 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE_FILE = Path(__file__).with_name("catalogue.toml")
PACKAGE = "aiohttpdemo_polls"
SERVE_MODES = ("plain", "config", "database")


@dataclass(frozen=True)
class Task:
    step: int
    number: int
    title: str
    points: int
    hints: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"step {self.step}, task {self.number}"


@dataclass(frozen=True)
class Step:
    number: int
    slug: str
    title: str
    serve: str
    tasks: tuple[Task, ...]
    libraries: tuple[str, ...] = ()  # what its app imports: preloaded in the learner's process
    # A dependency group of pyproject.toml that the step's app runs on, in an environment of its own;
    # "" for the judge's own environment (see workbook/environments.py).
    environment: str = ""
    # Earlier steps whose suites this step's suite imports (step 10 carries the checks of steps 6 to 9):
    # grading copies them into its sandbox, and a change to them re-checks this step too.
    carries: tuple[int, ...] = ()

    @property
    def suites(self) -> tuple[str, ...]:
        """The folders of tests/ that judge this step: its own, then those of the steps it carries."""
        return (self.name, *(f"step{number}" for number in self.carries))

    @property
    def name(self) -> str:
        """The directory and nox session name: step1, step2, ..."""
        return f"step{self.number}"

    @property
    def points(self) -> int:
        return sum(task.points for task in self.tasks)

    def task(self, number: int) -> Task:
        for task in self.tasks:
            if task.number == number:
                return task
        raise KeyError(f"step {self.number} has no task {number}")

    def tree(self, root: Path, kind: str = "steps") -> Path:
        """This step's app directory inside a workbook copy: ROOT/steps/stepN or ROOT/solutions/stepN."""
        return Path(root) / kind / self.name


class CatalogueError(ValueError):
    """catalogue.toml is malformed; the message names the entry."""


def _parse(data: dict) -> tuple[Step, ...]:
    steps = []
    for expected_number, raw in enumerate(data.get("step", []), start=1):
        where = f"{CATALOGUE_FILE.name}: step #{expected_number}"
        if raw.get("number") != expected_number:
            raise CatalogueError(
                f"{where}: steps must be numbered 1, 2, 3... in order, got {raw.get('number')}"
            )
        if raw.get("serve") not in SERVE_MODES:
            raise CatalogueError(f"{where}: serve must be one of {SERVE_MODES}")
        tasks = []
        for expected_task, task in enumerate(raw.get("task", []), start=1):
            if task.get("number") != expected_task or not task.get("hints") or task.get("points", 0) <= 0:
                raise CatalogueError(f"{where}, task #{expected_task}: needs number, points > 0 and hints")
            tasks.append(
                Task(
                    step=expected_number,
                    number=task["number"],
                    title=task["title"],
                    points=task["points"],
                    hints=tuple(task["hints"]),
                )
            )
        if not tasks:
            raise CatalogueError(f"{where}: a step needs at least one task")
        steps.append(Step(expected_number, raw["slug"], raw["title"], raw["serve"], tuple(tasks),
                          tuple(raw.get("libraries", ())), str(raw.get("environment", "")),
                          tuple(raw.get("carries", ()))))  # fmt: skip
        if any(not 1 <= number < expected_number for number in steps[-1].carries):
            raise CatalogueError(f"{where}: carries may name earlier steps only")
    return tuple(steps)


@cache
def steps() -> tuple[Step, ...]:
    """Every step, in order."""
    with CATALOGUE_FILE.open("rb") as handle:
        return _parse(tomllib.load(handle))


def step(number: int | str) -> Step:
    """One step by number ("3", 3 or "step3")."""
    text = str(number).removeprefix("step")
    if not text.isdigit() or not 1 <= int(text) <= len(steps()):
        raise KeyError(f"there is no step {number!r}; the steps are 1 to {len(steps())}")
    return steps()[int(text) - 1]


def environments() -> tuple[str, ...]:
    """The environments of their own that some steps' apps run on, each named once."""
    return tuple(dict.fromkeys(step.environment for step in steps() if step.environment))


def parse_step_range(text: str) -> list[Step]:
    """'1-3,5' -> steps 1, 2, 3 and 5."""
    chosen: list[Step] = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        for number in range(int(first), int(last or first) + 1):
            if step(number) not in chosen:
                chosen.append(step(number))
    return chosen
