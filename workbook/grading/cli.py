"""Grades a class: every learner's steps against the instructor's own suites, into a gradebook.

`nox -s grade -- SUBMISSIONS` (`python -m workbook grade SUBMISSIONS`) takes a folder holding one copy of
the workbook, or a .zip of one, per learner, and writes the outputs that outputs.py lists.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

from .. import catalogue
from ..pg import NoPostgresAvailable
from . import confinement, shards
from .escaping import visible
from .outputs import CLASSROOM50_SCALE, RUN_FILE, OutputError, check_replaceable, write_outputs
from .running import (
    DEFAULT_JOBS,
    DEFAULT_TIMEOUT,
    GradingError,
    RunRecord,
    grade_submissions,
    unfinished_grades,
    utc_now,
)
from .sandbox import fingerprint, take_snapshot
from .scores import StepGrade, format_points
from .submissions import SubmissionError, discover

DEFAULT_OUT = "grades"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m workbook grade` (shared with this module's own entry point)."""
    parser.add_argument(
        "submissions", type=Path, help="a folder with one workbook copy (or .zip) per learner"
    )
    parser.add_argument("--steps", help="which steps to grade, such as 1-3 or 1,4-9 (default: all)")
    parser.add_argument(
        "--out", type=Path, default=Path(DEFAULT_OUT), help="where to write (default: grades)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=DEFAULT_JOBS,
        help=f"steps graded at once (default {DEFAULT_JOBS}: twice the CPUs)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds one step of one learner may take (default {DEFAULT_TIMEOUT:.0f})",
    )
    parser.add_argument(
        "--trusted",
        action="store_true",
        help="grade even where learners' code cannot be confined (no root, no bubblewrap), or on a "
        "server other than a private local cluster: only for a class you trust",
    )
    parser.add_argument(
        "--tier",
        choices=confinement.TIERS,
        help="a weaker confinement than the strongest this machine allows (to compare, or to test)",
    )
    parser.add_argument(
        "--shard",
        metavar="K/N",
        help="grade only shard K of N of the class (learners sorted by name, every N-th from the K-th); "
        "merge the N outputs with `grade-merge`",
    )
    parser.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=("classroom50",),
        default=[],
        help="also write learners/NAME/result.json in Classroom 50's result/v1 format (beside the CSV, "
        "HTML and Gradescope outputs, which are always written)",
    )
    parser.add_argument("--classroom", default="workbook", help="Classroom 50's classroom, for --format")
    parser.add_argument("--assignment", default="polls", help="Classroom 50's assignment, for --format")


def _empty_shard(record: RunRecord, args: argparse.Namespace, steps: list[catalogue.Step]) -> None:
    """A shard with no learner in it (more shards than learners) still says what it is, for grade-merge."""
    record.tier = confinement.detect_tier(args.tier)[0]
    record.database = "none"
    record.steps = [step.number for step in steps]
    with tempfile.TemporaryDirectory(prefix="workbook-snapshot-") as folder:
        record.snapshot = fingerprint(take_snapshot(catalogue.ROOT, Path(folder) / "instructor", steps))


def run(args: argparse.Namespace) -> int:
    """Grade a class and write the outputs; the exit status is 0 even when learners fail (that is data)."""
    steps = catalogue.parse_step_range(args.steps) if args.steps else list(catalogue.steps())
    try:
        submissions, skipped = discover(args.submissions)
    except SubmissionError as exc:
        print(f"error: {visible(str(exc))}", file=sys.stderr)
        return 2
    for name in skipped:
        shown = visible(name, one_line=True)
        print(f"note: {shown} is neither a folder nor a .zip: not graded", file=sys.stderr)
    if not submissions:
        print(f"error: no submissions (folders or .zip files) in {args.submissions}", file=sys.stderr)
        return 2
    try:
        check_replaceable(args.out.resolve())
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    record = RunRecord(roster=shards.roster_of([s.name for s in submissions]))
    if args.formats:
        record.classroom50 = {
            "classroom": args.classroom, "assignment": args.assignment, "scale": CLASSROOM50_SCALE,
            "datetime": utc_now(),
        }  # fmt: skip
    if args.shard:
        try:
            index, count = shards.parse_shard(args.shard)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        record.shard = {"index": index, "count": count}
        submissions = shards.shard_of(submissions, index, count)
        if not submissions:
            record.started = utc_now()
            _empty_shard(record, args, steps)
            record.ended, record.completed = utc_now(), True
            write_outputs(args.out, [], steps, record)
            size = record.roster["size"]
            print(f"Shard {args.shard} of a class of {size} is empty: wrote {args.out / RUN_FILE}.")
            return 0
    print(
        f"Grading {len(submissions)} learners on steps {', '.join(str(s.number) for s in steps)} "
        f"({args.jobs} at a time, {args.timeout:.0f}s per step)...",
        file=sys.stderr,
    )
    from .progress import Progress  # tqdm: installed for grading, not needed by the learner's commands

    progress = Progress(len(submissions), len(steps))
    graded: dict[tuple[str, int], StepGrade] = {}
    names = [submission.name for submission in submissions]
    _say_under_way(args.out, names, steps, record)
    try:
        grades = grade_submissions(
            submissions, steps, jobs=args.jobs, timeout=args.timeout, progress=progress, record=record,
            trusted=args.trusted, tier=args.tier, private=[args.submissions.resolve(), args.out.resolve()],
            graded=graded,
        )  # fmt: skip
    except BaseException as exc:
        # Whatever stopped the run (a refusal before it began, the grader's own error, Ctrl+C, SIGTERM),
        # its outputs take the place of the last run's, saying so: an older gradebook must not look current.
        write_outputs(args.out, unfinished_grades(names, steps, graded, record.reason), steps, record)
        where = args.out / RUN_FILE
        if isinstance(exc, KeyboardInterrupt):
            print(f"\nInterrupted: the test processes and the database are gone; {where} says so.",
                  file=sys.stderr)  # fmt: skip
            return 130
        if isinstance(exc, (GradingError, NoPostgresAvailable)):
            print(f"error: {exc}\n(The outputs in {args.out} say that it did not grade.)", file=sys.stderr)
            return 2
        print(f"error: grading failed ({record.reason}); what it graded is in {args.out}", file=sys.stderr)
        raise
    write_outputs(args.out, grades, steps, record)
    names = {grade.name: visible(grade.name, one_line=True) for grade in grades}  # a name may hold escapes
    width = max(len(name) for name in names.values())
    for grade in grades:
        problems = grade.all_problems()
        note = f"  ({len(problems)} problem{'s' * (len(problems) != 1)})" if problems else ""
        print(f"  {names[grade.name]:<{width}}  {format_points(grade.total):>6}/{grade.max_points}{note}")
    print(
        f"Wrote {args.out / 'gradebook.csv'}, {args.out / 'report.html'}, {args.out / RUN_FILE} "
        "and a results.json per learner."
    )
    return 0


def _say_under_way(out: Path, names: list[str], steps: list[catalogue.Step], record: RunRecord) -> None:
    """Before any grading, --out's outputs say that a run is under way, every learner not graded yet: a
    grader killed outright (SIGKILL, a machine that went down) writes nothing at its end, and the last run's
    gradebook must not look current meanwhile. The run's own outputs replace these, whole, when it ends."""
    started = utc_now()
    reason = (
        f"a grading run started at {started} and has not finished; if no grader is running now, it was "
        "stopped before it could write its outputs: run it again"
    )
    under_way = dataclasses.replace(record, started=started, completed=False, reason=reason)
    write_outputs(out, unfinished_grades(names, steps, {}, reason), steps, under_way)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbook grade", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KeyError as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
