"""Grading a large class on several machines: `nox -s grade -- DIR --shard K/N` grades a slice of the class,
`nox -s grade-merge -- OUT...` merges the slices' outputs into one gradebook, report and results.

The slice is deterministic and the same on every machine: the class's learners (every submission in DIR)
sorted by name as the gradebook sorts them (case-folded, then as written), and the learner at position
i (counting from 0) goes to shard i mod N + 1; round robin keeps the shards' sizes within one.

Each shard's run.json says what it is: the fingerprint of the instructor's suites and tooling it was
graded with (sandbox.fingerprint), the confinement tier, the steps, K/N, the learners it graded, and the
size and hash of the whole class's list of names. grade-merge refuses, naming the file and the field, a
shard that is missing or given twice, and a foreign one (another snapshot of the tests, another tier,
other steps, another class, another N). Shard outputs come from the instructor's own machines, but they
are still read with a schema and a size cap (contract.py).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from .. import catalogue
from ..judge.untrusted import read_capped
from . import contract
from .escaping import visible
from .outputs import GRADES_FILE, LEARNERS_DIR, RUN_FILE, write_outputs
from .running import RunRecord
from .scores import MAX_OUTPUT, Check, LearnerGrade, StepGrade, TaskScore, format_points
from .submissions import sort_key

RUN_LIMIT = 16 << 20  # bytes of run.json: a class of 100,000 names fits
GRADES_LIMIT = 512 << 20  # bytes of grades.json: every check and message of a large class
LOG_LIMIT = 2 * MAX_OUTPUT  # bytes of one stepN.log (grading keeps at most MAX_OUTPUT and a note)

T = TypeVar("T")


class MergeError(Exception):
    """The shards cannot be merged; the message names the shard folder or file and what is wrong."""


def parse_shard(text: str) -> tuple[int, int]:
    """'2/3' -> (2, 3); anything else (0/3, 4/3, 2, a/b) is a ValueError that says what is expected."""
    index, slash, count = text.partition("/")
    if not slash or not index.strip().isdigit() or not count.strip().isdigit():
        raise ValueError(f"--shard takes K/N, such as 2/3, not {text!r}")
    k, n = int(index), int(count)
    if not 1 <= k <= n:
        raise ValueError(f"--shard {text}: K must be between 1 and N")
    return k, n


def shard_of(items: Sequence[T], index: int, count: int, name: Any = None) -> list[T]:
    """Shard `index` of `count` of `items`: sorted by name (sort_key), every count-th one from index-1."""
    key = name or (lambda item: item.name)
    ordered = sorted(items, key=lambda item: sort_key(key(item)))
    return ordered[index - 1 :: count]


def class_hash(names: Sequence[str]) -> str:
    """SHA-256 of the class's learner names, sorted, one per line: the same class gives the same hash."""
    return hashlib.sha256("\n".join(sorted(names, key=sort_key)).encode()).hexdigest()


def roster_of(names: Sequence[str]) -> dict[str, Any]:
    return {"size": len(names), "sha256": class_hash(names)}


# --- merging ----------------------------------------------------------------------------------------------


def _safe_name(name: str, source: Path) -> str:
    if name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise MergeError(f"{source}: learner name {name!r} cannot be a folder name")
    return name


def _rebuild(
    learner: dict[str, Any], steps: Sequence[catalogue.Step], folder: Path, source: Path
) -> LearnerGrade:
    """One learner's grade from grades.json, checked against the catalogue; logs from learners/NAME/."""
    name = _safe_name(learner["name"], source)
    if [s["step"] for s in learner["steps"]] != [step.number for step in steps]:
        raise MergeError(f"{source}: learners[{name}].steps are not the steps of run.json")
    graded = []
    for step, entry in zip(steps, learner["steps"], strict=True):
        if [t["task"] for t in entry["tasks"]] != [task.number for task in step.tasks]:
            raise MergeError(
                f"{source}: learners[{name}] step {step.number}: the tasks are not the catalogue's"
            )
        tasks = []
        for task, scored in zip(step.tasks, entry["tasks"], strict=True):
            checks = [Check(**check) for check in scored["checks"]]
            passed = sum(check.outcome == "passed" for check in checks)
            tasks.append(TaskScore(task, passed, len(checks), checks))
        log = read_capped(folder / LEARNERS_DIR / name / f"{step.name}.log", LOG_LIMIT)
        text = log.decode("utf-8", "replace") if log is not None else ""
        graded.append(StepGrade(step, tasks, list(entry["problems"]), text, entry["seconds"]))
    return LearnerGrade(name, graded, list(learner["problems"]))


# What every shard of one class must agree on, and what it means when one does not.
AGREED = {
    "snapshot": "graded with another snapshot of the tests and tooling",
    "tier": "graded at another confinement tier",
    "steps": "graded on other steps",
    "shard.count": "cut into another number of shards",
    "roster": "cut from another class (another list of learners)",
    "classroom50": "written with other --format classroom50 settings",
}


def _field(run: dict[str, Any], key: str) -> Any:
    if key == "shard.count":
        return run["shard"]["count"]
    if key == "classroom50" and run["classroom50"] is not None:
        return {k: v for k, v in run["classroom50"].items() if k != "datetime"}  # each shard's own time
    return run[key]


def _refuse_foreign(runs: dict[Path, dict[str, Any]]) -> None:
    for key, meaning in AGREED.items():
        values = Counter(repr(_field(run, key)) for run in runs.values())
        if len(values) == 1:
            continue
        usual = values.most_common(1)[0][0]
        odd = [folder for folder, run in runs.items() if repr(_field(run, key)) != usual]
        others = next(folder for folder, run in runs.items() if repr(_field(run, key)) == usual)
        shown = ", ".join(f"{folder / RUN_FILE} has {key} = {_field(runs[folder], key)!r}" for folder in odd)
        raise MergeError(
            f"foreign shard: {shown}, but {others / RUN_FILE} has {key} = {_field(runs[others], key)!r}: "
            f"{meaning}. Grade every shard from the same checkout, with the same options."
        )


def _refuse_gaps(runs: dict[Path, dict[str, Any]]) -> None:
    count = next(iter(runs.values()))["shard"]["count"]
    by_index: dict[int, list[Path]] = {}
    for folder, run in runs.items():
        if run["shard"]["index"] > count:
            raise MergeError(f"{folder / RUN_FILE}: shard.index {run['shard']['index']} is past {count}")
        by_index.setdefault(run["shard"]["index"], []).append(folder)
    for index, folders in sorted(by_index.items()):
        if len(folders) > 1:
            raise MergeError(f"shard {index}/{count} is given twice: {' and '.join(str(f) for f in folders)}")
    missing = [f"{index}/{count}" for index in range(1, count + 1) if index not in by_index]
    if missing:
        raise MergeError(
            f"shard {', '.join(missing)} missing: only {', '.join(f'{i}/{count}' for i in sorted(by_index))} "
            "given. Merge every shard of the class."
        )


def _refuse_wrong_learners(runs: dict[Path, dict[str, Any]]) -> list[str]:
    names = [name for run in runs.values() for name in run["graded"]]
    first = next(iter(runs.values()))
    roster = first["roster"]
    if len(set(names)) != len(names) or roster_of(names) != roster:
        raise MergeError(
            f"the shards graded {len(set(names))} learners, which are not the class of {roster['size']} "
            f"they were cut from (roster.sha256 {roster['sha256'][:12]}...)"
        )
    for folder, run in runs.items():
        index, count = run["shard"]["index"], run["shard"]["count"]
        if run["graded"] != shard_of(names, index, count, name=str) or run["learners"] != len(run["graded"]):
            raise MergeError(f"{folder / RUN_FILE}: graded is not shard {index}/{count} of the class")
    return names


def merge(folders: Sequence[Path], out: Path) -> tuple[list[LearnerGrade], RunRecord]:
    """Check the shards' outputs in `folders`, then write one set of outputs to `out` from all of them."""
    if not folders:
        raise MergeError("give the output folder of every shard")
    folders = [Path(folder) for folder in folders]
    if out.resolve() in {folder.resolve() for folder in folders}:
        raise MergeError(f"{out} is one of the shards: merge into another folder")
    doubled = [folder for folder, n in Counter(f.resolve() for f in folders).items() if n > 1]
    if doubled:
        raise MergeError(f"shard {doubled[0]} is given twice")
    try:
        runs = {folder: contract.read(folder / RUN_FILE, contract.SHARD_RUN, RUN_LIMIT) for folder in folders}
    except contract.ContractError as exc:
        raise MergeError(str(exc)) from None
    unfinished = [folder for folder, run in runs.items() if not run["completed"]]
    if unfinished:
        reason = runs[unfinished[0]]["reason"] or "no reason given"
        raise MergeError(
            f"{unfinished[0] / RUN_FILE}: that shard's run did not complete ({reason}): grade it again"
        )
    _refuse_foreign(runs)
    _refuse_gaps(runs)
    _refuse_wrong_learners(runs)
    first = next(iter(runs.values()))
    try:
        steps = [catalogue.step(number) for number in first["steps"]]
    except KeyError as exc:
        raise MergeError(f"{folders[0] / RUN_FILE}: steps: {exc.args[0]}") from None
    grades: list[LearnerGrade] = []
    for folder, run in runs.items():
        source = folder / GRADES_FILE
        try:
            document = contract.read(source, contract.GRADES, GRADES_LIMIT)
        except contract.ContractError as exc:
            raise MergeError(str(exc)) from None
        learners = [learner["name"] for learner in document["learners"]]
        if learners != run["graded"]:
            raise MergeError(f"{source}: learners are not the ones {folder / RUN_FILE} says it graded")
        grades += [_rebuild(learner, steps, folder, source) for learner in document["learners"]]
    grades.sort(key=lambda grade: sort_key(grade.name))
    classroom50 = first["classroom50"]
    if classroom50 is not None:  # the class's time: when its first shard was graded
        classroom50 = {
            **classroom50,
            "datetime": min(run["classroom50"]["datetime"] for run in runs.values()),
        }
    record = RunRecord(
        tier=first["tier"],
        database=", ".join(sorted({run["database"] for run in runs.values()})),
        learners=len(grades),
        steps=first["steps"],
        seconds=max(run["seconds"] for run in runs.values()),
        snapshot=first["snapshot"],
        graded=[grade.name for grade in grades],
        roster=first["roster"],
        classroom50=classroom50,
        started=min(run["started"] for run in runs.values()),
        ended=max(run["ended"] for run in runs.values()),
        completed=True,
    )
    write_outputs(out, grades, steps, record)
    return grades, record


# --- command line -----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m workbook grade-merge` (nox -s grade-merge)."""
    parser.add_argument("shards", type=Path, nargs="+", help="the output folder of every shard")
    parser.add_argument("--out", type=Path, default=Path("grades"), help="where to write (default: grades)")


def run(args: argparse.Namespace) -> int:
    try:
        grades, record = merge(args.shards, args.out)
    except MergeError as exc:
        print(f"error: cannot merge: {visible(str(exc))}", file=sys.stderr)  # may quote a shard's names
        return 2
    total = sum((grade.total for grade in grades), Fraction(0))
    average = format_points(total / len(grades)) if grades else "0"
    print(
        f"Merged {len(args.shards)} shards: {record.learners} learners, steps "
        f"{', '.join(map(str, record.steps))}, {average} points on average. Wrote {args.out}."
    )
    return 0
