"""Benchmark: grade a class of 30 learners who all hand in the finished solutions, over every step.

Run with `python bench/grade.py [--learners 30] [--steps 1-9] [--jobs N]`. Prints the wall time, the time
per learner and the slowest steps; it checks that every learner got full marks (anything else is a bug in
the grader or a flaky test) but asserts nothing about time, which varies by machine. The goal on the
2-core reference machine is a class of 30 over all steps in under 3 minutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbook import catalogue  # noqa: E402 - needs ROOT on sys.path first
from workbook.grading.outputs import write_outputs  # noqa: E402
from workbook.grading.progress import Progress  # noqa: E402
from workbook.grading.running import DEFAULT_JOBS, DEFAULT_TIMEOUT, grade_submissions  # noqa: E402
from workbook.grading.scores import format_points  # noqa: E402
from workbook.grading.submissions import discover  # noqa: E402
from workbook.starter import strip_markers_into  # noqa: E402


def finished_workbook(into: Path, steps: list[catalogue.Step]) -> Path:
    """A learner's copy with every chosen step finished the honest way: its solution, markers removed."""
    into.mkdir(parents=True)
    for step in steps:
        strip_markers_into(step.tree(ROOT, "solutions"), step.tree(into, "steps"), step.number)
    for name in ("config", "README.md", "pyproject.toml"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name)
        elif source.is_file():
            shutil.copy2(source, into / name)
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learners", type=int, default=30)
    parser.add_argument("--steps", help="a range such as 1-3 (default: every step)")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    args = parser.parse_args()
    steps = catalogue.parse_step_range(args.steps) if args.steps else list(catalogue.steps())

    with tempfile.TemporaryDirectory(prefix="workbook-bench-grade-") as tmp:
        submissions = Path(tmp) / "submissions"
        first = finished_workbook(submissions / "learner-01", steps)
        for number in range(2, args.learners + 1):
            shutil.copytree(first, submissions / f"learner-{number:02d}")
        found, _ = discover(submissions)
        progress = Progress(len(found), len(steps))
        started = time.perf_counter()
        grades = grade_submissions(found, steps, jobs=args.jobs, timeout=args.timeout, progress=progress)
        wall = time.perf_counter() - started
        write_outputs(Path(tmp) / "grades", grades, steps)

    full = sum(step.points for step in steps)
    wrong = [g for g in grades if g.total != full]
    per_learner = [sum(s.seconds for s in g.steps) for g in grades]
    per_step = {step.number: statistics.median(s.seconds for g in grades for s in g.steps if s.step == step)
                for step in steps}  # fmt: skip
    print(f"machine: {os.cpu_count()} cores, {args.jobs} steps at a time")
    print(f"class: {len(grades)} learners x steps {', '.join(str(s.number) for s in steps)}")
    print(f"wall time: {wall:.1f}s ({wall / len(grades):.2f}s per learner of the class)")
    print(
        f"one learner, all steps in a row: median {statistics.median(per_learner):.1f}s, "
        f"max {max(per_learner):.1f}s"
    )
    print("median seconds per step: " + ", ".join(f"{n}: {t:.2f}" for n, t in per_step.items()))
    if wrong:
        print(f"NOT FULL MARKS for {len(wrong)} learners (a grader bug or a flaky test):")
        for g in wrong:
            print(f"  {g.name}: {format_points(g.total)}/{full} {g.all_problems()}")
        return 1
    print(f"every learner got {full}/{full}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
