"""The flake run (`nox -s flakes`): every suite run many times on the same code, to find a check whose
verdict changes between runs.

A verdict must depend on the code only, never on a random draw, the machine's load or the order in which
processes happen to be scheduled. So each step's suite runs N times on the solution, on the starter and on
every known mistake (its patched copy, judged on its task as the integrity check judges it), all through
runner.run_many, optionally while a CPU burner keeps every core busy (`--load`). Any check with two
different outcomes over the runs is listed, with what each outcome said; any is a defect.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import catalogue, mistakes
from .runner import StepResult, run_many


@dataclass(frozen=True)
class Subject:
    """One tree a suite is run on: the solution, the starter or a mistake's patched copy."""

    step: catalogue.Step
    label: str  # "solution", "starter" or "mistake NAME"
    target: str
    extra: tuple[str, ...] = ()


@dataclass
class Changes:
    """Every check's outcomes over the runs of one subject: {nodeid: Counter(outcome)}, and a message each."""

    subject: Subject
    runs: int = 0
    outcomes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    messages: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, result: StepResult) -> None:
        self.runs += 1
        if result.broken:  # the whole suite could not give a verdict (a timeout, an import error)
            self.outcomes["(the whole suite)"][f"broken: {result.broken[:120]}"] += 1
            return
        self.outcomes["(the whole suite)"]["ran"] += 1
        for test in result.report.get("tests", []):
            if isinstance(test, dict):
                nodeid, outcome = str(test.get("nodeid")), str(test.get("outcome"))
                self.outcomes[nodeid][outcome] += 1
                self.messages.setdefault((nodeid, outcome), str(test.get("message", ""))[:300])

    def changed(self) -> list[str]:
        """One paragraph per check whose outcome was not the same in every run."""
        found = []
        for nodeid, counts in sorted(self.outcomes.items()):
            if len(counts) > 1 or sum(counts.values()) != self.runs:
                missing = self.runs - sum(counts.values())
                seen = ", ".join(f"{outcome} {count}x" for outcome, count in counts.most_common())
                seen += f", absent {missing}x" if missing else ""
                said = [
                    f"{o}: {self.messages[(nodeid, o)]}" for o in counts if self.messages.get((nodeid, o))
                ]
                found.append(f"{self.subject.label}: {nodeid}: {seen}" + "".join(f"\n    {m}" for m in said))
        return found


KINDS = ("solution", "starter", "mistakes")


def subjects(steps: Sequence[catalogue.Step], copies: Path, kinds: Sequence[str] = KINDS) -> list[Subject]:
    """The solution, the starter and every mistake of each step (or those `kinds` of them); each mistake
    applied once into `copies`."""
    found = []
    for step in steps:
        found += [Subject(step, "solution", "solutions")] if "solution" in kinds else []
        found += [Subject(step, "starter", "steps")] if "starter" in kinds else []
        for mistake in mistakes.load([step]) if "mistakes" in kinds else []:
            copy = copies / f"{step.name}-{mistake.name}"
            mistakes.apply(mistake, copy)
            found.append(
                Subject(step, f"mistake {mistake.name}", str(copy), ("-q", "--task", str(mistake.task)))
            )
    return found


@contextlib.contextmanager
def cpu_load(burners: int) -> Iterator[None]:
    """`burners` processes that each keep a core busy while the block runs."""
    started = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(burners)
    ]
    try:
        yield
    finally:
        for process in started:
            process.kill()
            process.wait()


def run(
    steps: Sequence[catalogue.Step], runs: int, load: int = 0, workers: int = 2, kinds: Sequence[str] = KINDS
) -> list[str]:
    """Run every subject of `steps` `runs` times; the checks whose verdict changed, as paragraphs."""
    with tempfile.TemporaryDirectory(prefix="workbook-flakes-") as tmp:
        chosen = subjects(steps, Path(tmp), kinds)
        jobs = [(s.step, s.target, s.extra) for _ in range(runs) for s in chosen]
        print(f"{len(chosen)} suites x {runs} runs = {len(jobs)} suite runs, {workers} at a time"
              + (f", {load} CPU burner(s) running" if load else "") + "...", flush=True)  # fmt: skip
        started = time.monotonic()
        with cpu_load(load):
            results = run_many(jobs, workers)
    changes = {subject: Changes(subject) for subject in chosen}
    for index, result in enumerate(results):
        changes[chosen[index % len(chosen)]].add(result)
    problems = [paragraph for change in changes.values() for paragraph in change.changed()]
    for step in steps:  # the counts a closing note gives, step by step
        mine = [change for subject, change in changes.items() if subject.step == step]
        print(f"step {step.number}: {len(mine)} suites x {runs} runs, "
              f"{sum(len(c.outcomes) - 1 for c in mine)} checks, "
              f"{sum(len(c.changed()) for c in mine)} changed")  # fmt: skip
    checks = sum(len(change.outcomes) - 1 for change in changes.values())
    print(f"{len(jobs)} suite runs in {time.monotonic() - started:.0f} s: {checks} checks over "
          f"{len(chosen)} suites, {len(problems)} whose verdict changed.")  # fmt: skip
    return problems


def default_load() -> int:
    return os.cpu_count() or 2
