"""What grading writes to ``--out`` (default ``grades/``):

    gradebook.csv                one row per learner: a column per step and the total
    learners/NAME/results.json   the learner's results in Gradescope's autograder format, one test per task
    learners/NAME/result.json    with `--format classroom50`: the same in Classroom 50's result/v1 format
    learners/NAME/stepN.log      what pytest printed for that step (capped)
    report.html                  the class overview, pass rates per task and a section per learner
    grades.json                  every check of every learner: what `grade-merge` merges shards from
    run.json                     how the run went: confinement tier, database, learners, steps, wall time,
                                 when it started and ended, whether it completed (if not, why), and what
                                 identifies it as a shard (the snapshot, the shard, the class)

A run's outputs replace the folder as a whole (write_outputs): never a mix of two runs. A run that fails
writes them too, with what it graded and, for the rest, why not; run.json says it did not complete.

The same grades always give the same bytes in all but result.json (its datetime is the run's) and run.json,
which describes this one run.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import markupsafe

from .. import catalogue
from . import confinement, contract
from .escaping import markdown_code, visible
from .scores import LearnerGrade, StepGrade, TaskScore, format_points

if TYPE_CHECKING:
    from .running import RunRecord

LEARNERS_DIR = "learners"
RUN_FILE = "run.json"
GRADES_FILE = "grades.json"
CLASSROOM50_FILE = "result.json"
CLASSROOM50_SCHEMA = "classroom50/result/v1"
# Classroom 50 wants whole numbers; partial credit is in fractions of a point. Every point becomes SCALE
# of Classroom 50's, and each task's share is rounded down: never more than was earned, two decimals kept.
CLASSROOM50_SCALE = 100

MAX_MESSAGE = 2000  # characters of one failing check's message in results.json and the report


def _csv_cell(text: str) -> str:
    """Keep a spreadsheet from reading a learner's name as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def write_gradebook(path: Path, grades: Sequence[LearnerGrade], steps: Sequence[catalogue.Step]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["learner", *(step.name for step in steps), "total"])
        for grade in grades:
            by_step = {s.step.number: s for s in grade.steps}
            writer.writerow(
                [
                    _csv_cell(grade.name),
                    *(format_points(by_step[s.number].earned) for s in steps),
                    format_points(grade.total),
                ]
            )


def _clip(text: str, limit: int = MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[:limit] + " [...]"


def task_feedback(score: TaskScore, step: StepGrade) -> str:
    """What a learner reads under one task: how many checks pass, what failed and why, step problems."""
    lines = [f"{score.passed}/{score.total} checks pass." if score.total else "No check of this task ran."]
    for check in score.checks:
        if check.outcome != "passed":
            message = _clip(check.message.strip()) or check.outcome
            lines.append(f"- {check.name}: {message}")
    if not score.done:  # why the checks may not have run at all
        lines += [f"Problem with step {step.step.number}: {problem}" for problem in step.problems]
    return "\n".join(lines)


def gradescope_results(grade: LearnerGrade) -> dict[str, Any]:
    """Gradescope's autograder results: one test per task, partial credit, feedback as its output."""
    tests = []
    for step in grade.steps:
        for score in step.tasks:
            tests.append(
                {
                    "name": f"Step {step.step.number}, task {score.task.number}: {score.task.title}",
                    "number": f"{step.step.number}.{score.task.number}",
                    "score": round(float(score.earned), 2),
                    "max_score": score.task.points,
                    "status": "passed" if score.done else "failed",
                    "output": task_feedback(score, step),
                    "visibility": "visible",
                }
            )
    summary = [f"{format_points(grade.total)}/{grade.max_points} points."]
    summary += [f"- {problem}" for problem in grade.all_problems()]
    return {
        "score": round(float(grade.total), 2),
        "output": "\n".join(summary),
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def task_name(step: StepGrade, score: TaskScore) -> str:
    return f"Step {step.step.number}, task {score.task.number}: {score.task.title}"


def classroom50_result(grade: LearnerGrade, identity: dict[str, str], scale: int) -> dict[str, Any]:
    """Classroom 50's result.json (classroom50/result/v1): one test per task, in whole numbers.

    A task worth P points that earned the fraction E of them scores floor(E * scale) of P * scale: with
    the default scale of 100, the learner sees hundredths of a point and never more than was earned.
    `identity` gives the fields that say which submission it was (classroom, assignment, submission,
    commit, release, review, datetime); Classroom 50's runner stamps owner and the times itself.
    """
    tests = []
    for step in grade.steps:
        for score in step.tasks:
            tests.append({
                "test-name": task_name(step, score),
                "passed": score.done,
                "score": math.floor(score.earned * scale),
                "max-score": score.task.points * scale,
                "checks": f"{score.passed}/{score.total}",
            })  # fmt: skip
    keys = ("classroom", "assignment", "submission", "commit", "release", "review", "datetime")
    result = {"schema": CLASSROOM50_SCHEMA, **{key: identity[key] for key in keys}}
    result["score"] = sum(test["score"] for test in tests)
    result["max-score"] = sum(test["max-score"] for test in tests)
    result["tests"] = tests
    contract.check(result, contract.RESULT_V1, f"the result.json of {grade.name}")
    return result


def task_table(grade: LearnerGrade, tier: str = "") -> str:
    """Markdown for a GitHub job summary or release: a row per task, then what failed and why. The
    learner's bytes (their name, problems, check messages) are code: none becomes a link, an image, markup
    or a table cell, and no control character reaches the terminal that `classroom50 check` prints to."""
    lines = [
        f"### {markdown_code(grade.name)}: {format_points(grade.total)}/{grade.max_points} points",
        "",
        "| task | result | checks | points |",
        "|---|---|---|---|",
    ]
    failing = []
    for step in grade.steps:
        for score in step.tasks:
            title = task_name(step, score).replace("|", "\\|")
            result = "PASS" if score.done else "FAIL"
            points = f"{format_points(score.earned)}/{score.task.points}"
            lines.append(f"| {title} | {result} | {score.passed}/{score.total} | {points} |")
            if not score.done:
                failing.append((title, task_feedback(score, step)))
    lines.append("")
    for problem in grade.all_problems():
        lines.append(f"- {markdown_code(problem)}")
    if failing:
        lines += ["", "<details><summary>What failed, and why</summary>", ""]
        for title, feedback in failing:
            feedback = visible(feedback)  # literal inside the fence, but a terminal shows it too (check)
            fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", feedback)), default=0))
            lines += [f"**{title}**", "", fence, feedback, fence, ""]
        lines.append("</details>")
    if tier:
        lines += ["", f"Confinement: {tier} ({confinement.DESCRIPTIONS.get(tier, 'unknown')})."]
    return "\n".join(lines) + "\n"


def write_learner(folder: Path, grade: LearnerGrade, classroom50: dict[str, Any] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(gradescope_results(grade), indent=1) + "\n")
    if classroom50 is not None:
        local = f"local:{grade.name}"  # graded here: no submit tag, commit or release to point at
        identity = {"submission": local, "commit": local, "release": local, "review": local, **classroom50}
        result = classroom50_result(grade, identity, classroom50["scale"])
        (folder / CLASSROOM50_FILE).write_text(json.dumps(result, indent=1) + "\n")
    for step in grade.steps:
        if step.log:
            # Read with `cat` or `less`: what the learner printed may hold escape sequences, shown as text.
            (folder / f"{step.step.name}.log").write_text(visible(step.log), errors="replace")


TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def _code_spans(text: str) -> markupsafe.Markup:
    """A catalogue title as HTML: escaped, with `code` spans."""
    escaped = str(markupsafe.escape(text))
    return markupsafe.Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped))


def _task_rows(grade: LearnerGrade) -> list[dict[str, Any]]:
    rows = []
    for graded in grade.steps:
        for score in graded.tasks:
            failing = [c for c in score.checks if c.outcome != "passed"]
            rows.append({
                "label": f"{graded.step.number}.{score.task.number}",
                "title": score.task.title,
                "state": "done" if score.done else "failing",
                "passed": score.passed,
                "total": score.total,
                "points": format_points(score.earned),
                "max_points": score.task.points,
                "failing": [f"{c.name}: {_clip(c.message.strip()) or c.outcome}" for c in failing],
            })  # fmt: skip
    return rows


def _pass_rates(grades: Sequence[LearnerGrade], steps: Sequence[catalogue.Step]) -> list[dict[str, Any]]:
    rates = []
    for step in steps:
        for task in step.tasks:
            scores = [
                score
                for grade in grades
                for graded in grade.steps
                if graded.step.number == step.number
                for score in graded.tasks
                if score.task.number == task.number
            ]
            done = sum(score.done for score in scores)
            shares = [score.passed / score.total for score in scores if score.total]
            rates.append({
                "label": f"{step.number}.{task.number}",
                "title": task.title,
                "done": done,
                "count": len(scores),
                "share_done": done / len(scores) if scores else 0.0,
                "share_checks": sum(shares) / len(scores) if scores else 0.0,
            })  # fmt: skip
    return rates


def render_report(
    grades: Sequence[LearnerGrade], steps: Sequence[catalogue.Step], record: RunRecord | None = None
) -> str:
    """The class at a glance, pass rates per task, then every learner's details, from
    workbook/templates/report.html; its header names the confinement tier and the database when a
    `record` of the run is given. Jinja2 escapes every value: a submission's name, messages and output
    cannot inject markup into the instructor's page."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    environment.filters["code_spans"] = _code_spans
    overview = []
    for grade in grades:
        by_step = {s.step.number: s for s in grade.steps}
        overview.append({
            "name": grade.name,
            "steps": [format_points(by_step[s.number].earned) for s in steps],
            "total": format_points(grade.total),
            "problems": len(grade.all_problems()),
        })  # fmt: skip
    learners = [
        {"name": grade.name, "total": format_points(grade.total), "max_points": grade.max_points,
         "problems": grade.all_problems(), "tasks": _task_rows(grade)}
        for grade in grades
    ]  # fmt: skip
    return environment.get_template("report.html").render(
        grades=grades,
        steps=steps,
        max_points=sum(step.points for step in steps),
        overview=overview,
        rates=_pass_rates(grades, steps),
        learners=learners,
        run=record,
        tiers=confinement.DESCRIPTIONS,
    )


def write_run(path: Path, record: RunRecord) -> None:
    """run.json: the facts about the run that the grades alone do not show (tier, database, wall time)."""
    path.write_text(json.dumps(dataclasses.asdict(record), indent=1) + "\n", encoding="utf-8")


def grades_document(grades: Sequence[LearnerGrade]) -> dict[str, Any]:
    """grades.json's content: every check of every step of every learner, as grade-merge reads it back."""
    return {
        "learners": [
            {
                "name": grade.name,
                "problems": grade.problems,
                "steps": [
                    {
                        "step": step.step.number,
                        "problems": step.problems,
                        "seconds": round(step.seconds, 3),
                        "tasks": [
                            {
                                "task": score.task.number,
                                "checks": [dataclasses.asdict(c) for c in score.checks],
                            }
                            for score in step.tasks
                        ],
                    }
                    for step in grade.steps
                ],
            }
            for grade in grades
        ]
    }


OUTPUT_NAMES = {"gradebook.csv", "report.html", GRADES_FILE, RUN_FILE, LEARNERS_DIR}


class OutputError(RuntimeError):
    """--out names a folder that is not ours to replace; the message says which and what to do."""


def check_replaceable(out: Path) -> None:
    """Refuse, before any grading, an --out that holds anything but a previous run's outputs: the whole
    folder is replaced (write_outputs), and an instructor's own files must not go with it."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is not a folder: name a folder for the outputs")
    if not out.is_dir():
        return
    foreign = sorted(
        entry.name
        for entry in out.iterdir()
        if entry.name not in OUTPUT_NAMES and not entry.name.startswith(INNER_STAGING)
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise OutputError(
            f"--out {out} holds files that grading did not write ({shown}): the outputs of a run replace "
            "the whole folder, so name an empty or new folder, or one a previous run wrote"
        )


def _default_mode() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return 0o777 & ~mask


def replace_folder(out: Path, fresh: Path) -> None:
    """Put the folder `fresh` (beside `out`, so on the same file system) in the place of `out`.

    Two renames, each atomic: whoever reads `out` sees the old outputs whole, for an instant none, then
    the new ones whole; never the old gradebook beside new learners' files, as writing file by file into
    `out` could leave after a crash or a full disk. Linux's renameat2(RENAME_EXCHANGE) would close the
    instant too, but it is not in Python's os module, and a missing folder cannot pass for a current one.
    """
    mode = out.stat().st_mode & 0o7777 if out.is_dir() else _default_mode()
    os.chmod(fresh, mode)
    old = None
    if out.is_dir():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
        os.rename(out, old)  # onto an empty folder of ours: Linux replaces it
    os.rename(fresh, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


INNER_STAGING = ".workbook-new-"  # a staging folder inside --out, where its parent is not ours to write


def replace_contents(out: Path, fresh: Path) -> None:
    """Where the folder above `out` is not writable (an instructor who owns --out and nothing around it),
    the new outputs are staged inside `out` (`fresh`) and moved into place entry by entry. Not atomic, so
    run.json marks the set: the old one goes first and the new one comes last, and a run.json present
    always describes every other file beside it."""
    for name in [RUN_FILE, *sorted(OUTPUT_NAMES - {RUN_FILE})]:
        old = out / name
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()
    entries = sorted(fresh.iterdir(), key=lambda entry: entry.name == RUN_FILE)
    for entry in entries:
        os.rename(entry, out / entry.name)
    fresh.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True  # another user's process, or a number no process can have: not ours to judge
    return True


def remove_abandoned_staging(out: Path) -> None:
    """Remove the folders beside `out` that a writer killed outright (SIGKILL) left: named after its pid,
    they go once no such process is alive (another run writing the same --out keeps its own)."""
    for inner in out.glob(f"{INNER_STAGING}*-*") if out.is_dir() else []:
        pid = inner.name[len(INNER_STAGING) :].partition("-")[0]
        if pid.isdigit() and inner.is_dir() and not inner.is_symlink() and not _alive(int(pid)):
            shutil.rmtree(inner, ignore_errors=True)
    for folder in out.parent.glob(f".{glob.escape(out.name)}.*-*-*"):
        kind, _, rest = folder.name[len(out.name) + 2 :].partition("-")
        pid = rest.partition("-")[0]
        if kind not in ("new", "old") or not pid.isdigit() or not folder.is_dir() or folder.is_symlink():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (OSError, OverflowError):
            continue


def write_outputs(
    out: Path,
    grades: Sequence[LearnerGrade],
    steps: Sequence[catalogue.Step],
    record: RunRecord | None = None,
) -> None:
    """gradebook.csv, report.html and learners/NAME/ with results.json and the step logs; run.json too
    when there is a `record` of the run (an older one never stays beside grades it does not describe).

    Everything is written into a fresh folder beside `out` that then takes its place whole
    (replace_folder): a run that fails half-way through writing, or a full disk, leaves the previous
    outputs as they were, and nothing of them survives beside the new ones."""
    out = out.resolve()  # a link to the folder stays a link to it; the folder it names is replaced
    check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_staging(out)
    try:
        fresh = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-{os.getpid()}-", dir=out.parent))
        swap = replace_folder
    except PermissionError:
        if not out.is_dir():
            raise
        fresh = Path(tempfile.mkdtemp(prefix=f"{INNER_STAGING}{os.getpid()}-", dir=out))
        swap = replace_contents
    try:
        try:
            _write_into(fresh, grades, steps, record)
        except OSError as exc:  # a full disk, say: run.json alone still tells that this run did not finish
            if record is None:
                raise
            shutil.rmtree(fresh, ignore_errors=True)
            fresh.mkdir(mode=0o700)
            failed = dataclasses.replace(record, completed=False)
            failed.reason = (
                f"{record.reason + '; ' if record.reason else ''}its outputs could not be written: {exc}"
            )
            write_run(fresh / RUN_FILE, failed)
            swap(out, fresh)
            raise
        swap(out, fresh)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)  # gone already, unless something failed


def _write_into(
    out: Path, grades: Sequence[LearnerGrade], steps: Sequence[catalogue.Step], record: RunRecord | None
) -> None:
    learners = out / LEARNERS_DIR
    write_gradebook(out / "gradebook.csv", grades, steps)
    (out / "report.html").write_text(render_report(grades, steps, record), encoding="utf-8")
    (out / GRADES_FILE).write_text(json.dumps(grades_document(grades), indent=1) + "\n", encoding="utf-8")
    if record is not None:
        write_run(out / RUN_FILE, record)
    for grade in grades:
        write_learner(learners / grade.name, grade, record.classroom50 if record is not None else None)
