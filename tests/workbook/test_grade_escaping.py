"""Learner bytes that reach a person: escaped in the logs, the terminal and Markdown (issue 20, item 7).

One learner, one step, graded once by `python -m workbook grade` in this process: its folder's name holds
escape sequences and Markdown, and its code raises, when imported, an exception whose message clears the
screen and prints a fake "ALL CHECKS PASSED" line, then a table row, an image, a link and a heading.
Every output a person reads is looked at from outside for a raw control character or for markup outside
a code span.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.workbook.conftest import copy_of_the_workbook, finish, package
from workbook import catalogue, classroom50, gradescope
from workbook.grading import cli, confinement, outputs, progress
from workbook.grading.escaping import markdown_code, visible
from workbook.grading.running import RunRecord
from workbook.grading.scores import LearnerGrade, StepGrade

STEP = catalogue.step(1)
CLEAR = "\x1b[2J\x1b[H"  # clear the screen, cursor home
MARKUP = "<img src=x onerror=alert(1)> ![pixel](https:x.example) [click](https:x.example) | x |"
NAME = f"eve{CLEAR}{MARKUP} # h"  # a folder's name: no slash, anything else
MESSAGE = f"{CLEAR}ALL CHECKS PASSED 95/95\n| 1 | PASS |\n{MARKUP}\n# Full marks"
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@dataclass
class Graded:
    out: Path
    stdout: str
    stderr: str
    grade: LearnerGrade
    record: RunRecord


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> Graded:
    """The hostile learner graded by the command line, its printed output and its grade kept."""
    root = tmp_path_factory.mktemp("escaping")
    copy = copy_of_the_workbook(root / "subs" / NAME)
    finish(copy, STEP.number)
    main = package(copy, STEP.number) / "main.py"  # fails at import: the judge quotes the exception
    main.write_text(f"raise RuntimeError({MESSAGE!r})\n" + main.read_text())
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    tier = [] if confinement.detect_tier()[0] != confinement.NONE else ["--trusted"]
    options = ["--steps", "1", "--out", str(root / "out"), "--jobs", "1", "--timeout", "60", *tier]
    args = parser.parse_args([str(root / "subs"), *options])
    kept: list[tuple[list[LearnerGrade], RunRecord]] = []

    def keeping(*positional, **named):
        grades = cli_grade(*positional, **named)
        kept.append((grades, named["record"]))
        return grades

    stdout, stderr = io.StringIO(), io.StringIO()
    cli_grade = cli.grade_submissions
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "grade_submissions", keeping)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            assert cli.run(args) == 0, stderr.getvalue()
    [([grade], record)] = kept
    assert grade.name == NAME and grade.total < STEP.points
    return Graded(root / "out", stdout.getvalue(), stderr.getvalue(), grade, record)


def outside_code(markdown: str) -> str:
    """The Markdown that is not code: fenced blocks and inline code spans cut out."""
    text = re.sub(r"^(`{3,})\n.*?^\1$", "", markdown, flags=re.S | re.M)
    return re.sub(r"(`+) .*? \1", "", text)


def assert_no_injection(markdown: str) -> None:
    """No raw control character anywhere; outside code, no markup of the learner's and no extra row."""
    assert not RAW_CONTROL.search(markdown.replace("\n", "").replace("\t", "")), repr(markdown[:3000])
    prose = outside_code(markdown)
    for markup in ("<img", "](", "ALL CHECKS PASSED", "# h", "# Full marks", "| 1 | PASS |"):
        assert markup not in prose, f"{markup!r} outside a code span:\n{prose}"
    headings = [line for line in prose.splitlines() if line.startswith("#")]
    assert len(headings) == 1 and headings[0].startswith("### "), headings
    rows = [line for line in prose.splitlines() if line.startswith("|")]
    assert len(rows) == 2 + len(STEP.tasks), rows  # the header, its rule, a row per task


def test_the_step_log_shows_escape_sequences_as_text(graded):
    """`cat learners/NAME/step1.log` must not clear the screen: ESC is written as the text \\x1b."""
    log = (graded.out / outputs.LEARNERS_DIR / NAME / f"{STEP.name}.log").read_text()
    assert "ALL CHECKS PASSED" in log, "the learner's message should be in its log: the attack did not run"
    assert not RAW_CONTROL.search(log.replace("\n", "").replace("\t", "")), repr(log[:2000])
    assert "\\x1b[2J\\x1b[HALL CHECKS PASSED 95/95" in log


def test_the_progress_line_and_the_summary_show_the_name_escaped(graded):
    """The folder's name reaches the terminal in the progress line (stderr) and the summary (stdout)."""
    for printed in (graded.stderr, graded.stdout):
        assert not RAW_CONTROL.search(printed.replace("\n", "")), repr(printed)
        assert "eve\\x1b[2J\\x1b[H<img" in printed, printed


def test_classroom50s_release_body_and_job_summary_carry_no_learner_markup(graded, tmp_path, monkeypatch):
    """release-body.md (autograde) and the job summary (check) are the same table: the learner's name and
    messages are code in it, whatever Markdown or HTML they hold, and the terminal gets no escape."""
    monkeypatch.setattr(classroom50, "_grade_one", lambda *args, **kwargs: (graded.grade, graded.record))
    workspace, bundle = tmp_path / "checkout", tmp_path / "bundle"
    workspace.mkdir()
    bundle.mkdir()
    environ = {name: "x" for name in classroom50.IDENTITY[:5]} | {"COMMIT_URL": "c", "RELEASE_URL": "r"}
    monkeypatch.setattr(classroom50, "submitted_at", lambda *args: "2026-09-01T08:30:00Z")
    monkeypatch.setattr(classroom50.catalogue, "ROOT", tmp_path / "bundle")  # made private when root
    classroom50.autograde(workspace, [STEP], environ=environ)
    assert_no_injection((workspace / classroom50.RELEASE_BODY).read_text())
    summary = tmp_path / "summary.md"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        classroom50.check(workspace, [STEP], summary=summary)
    assert_no_injection(summary.read_text())
    assert_no_injection(printed.getvalue())


def test_the_live_bar_on_a_terminal_shows_the_name_and_the_problem_escaped():
    """On a terminal, the bar is redrawn with the learner and step just graded, and its first problem."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    bar = progress.Progress(learners=1, steps=1, stream=stream)
    bar.step_done(f"eve{CLEAR}", StepGrade.zero(STEP, f"{CLEAR}ALL CHECKS PASSED"))
    bar.close()
    assert "\x1b" not in stream.getvalue(), repr(stream.getvalue())
    shown = f"eve\\x1b[2J\\x1b[H: step 1 0/{STEP.points} (\\x1b[2J\\x1b[HALL CHECKS PASSED)"
    assert shown in stream.getvalue(), repr(stream.getvalue())


def test_a_skipped_file_is_named_escaped(tmp_path, capsys):
    """A file among the submissions is skipped with a note naming it, before anything is graded."""
    (tmp_path / f"notes{CLEAR}ALL CHECKS PASSED.txt").write_text("")
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.run(parser.parse_args([str(tmp_path)])) == 2  # and nothing to grade
    printed = capsys.readouterr().err
    assert "\x1b" not in printed and "notes\\x1b[2J\\x1b[HALL CHECKS PASSED.txt is neither" in printed


def test_a_problem_and_a_message_with_markup_stay_code_in_the_table():
    """What a step's problem or a check's message says (an exception's text) is the learner's too."""
    grade = LearnerGrade("eve", [StepGrade.zero(STEP, f"cannot be imported: {MESSAGE}")])
    assert_no_injection(outputs.task_table(grade, confinement.NONE))


def test_gradescopes_autograder_prints_the_learners_problems_escaped(monkeypatch, capsys):
    """Its log on Gradescope's side shows the results' output, which names the step's problems."""
    grade = LearnerGrade("x", [StepGrade.zero(STEP, f"cannot be imported: {CLEAR}ALL CHECKS PASSED")])
    monkeypatch.setattr(gradescope, "autograde", lambda *args: outputs.gradescope_results(grade))
    args = argparse.Namespace(root=Path("/nowhere"), steps="1", timeout=1.0, jobs=1)
    assert gradescope._autograde(args) == 0
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "\\x1b[2J\\x1b[HALL CHECKS PASSED" in printed


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain\ttext\n", "plain\ttext\n"),
        ("\x1b[31mred\x07\r", "\\x1b[31mred\\x07\\x0d"),
        ("\x9b2J\x7f", "\\x9b2J\\x7f"),  # C1's one-byte CSI, DEL
        ("abc\u202edcba", "abc\\u202edcba"),  # a right-to-left override
    ],
)
def test_visible_writes_out_control_characters(text, shown):
    assert visible(text) == shown


def test_one_line_and_markdown_code_keep_a_line_and_a_span_whole():
    assert visible("a\nb\tc", one_line=True) == "a\\x0ab\\x09c"
    assert markdown_code("a `b` ``c``") == "``` a `b` ``c`` ```"
    assert markdown_code("x | y\nz") == "` x | y\\x0az `"
    assert markdown_code("x | y", in_table=True) == "` x \\| y `"
