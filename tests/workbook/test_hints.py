"""What a learner reads first: a known mistake's phrase in the first message, a library's error by its own
line, and none of the workbook's internals (its arguments, a kill's -9, its own files) in a message."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from workbook import catalogue, mistakes, pytest_plugin
from workbook.judge import learner_process
from workbook.judge.learner_process import Command, Harness
from workbook.judge.logs import error_text, how_it_ended, last_exception, without_own_frames
from workbook.runner import StepResult, run_step

# --- the first-message rule (mistakes.verdict_of) ---------------------------------------------------------


def mistake(task: int, phrase: str) -> mistakes.Mistake:
    step = catalogue.step(3)
    return mistakes.Mistake(Path("tests/mistakes/step3/x.patch"), step, task, phrase, "a made-up mistake")


def result_of(*tests: tuple[int, str, str]) -> StepResult:
    """A step-3 run whose report holds these (task, outcome, message) checks in this order, and a passing
    one for each task not named."""
    report: dict[str, Any] = {"broken": "", "tasks": {}, "tests": []}
    named = {task for task, _, _ in tests}
    others = [(task.number, "passed", "") for task in catalogue.step(3).tasks if task.number not in named]
    for index, (task, outcome, message) in enumerate([*tests, *others]):
        nodeid = f"tests/step3/test_x.py::test_{index}"
        report["tests"].append({"nodeid": nodeid, "task": task, "outcome": outcome, "message": message})
        counts = report["tasks"].setdefault(str(task), {"passed": 0, "total": 0})
        counts["total"] += 1
        counts["passed"] += outcome == "passed"
    return StepResult(catalogue.step(3), "copy", 1, report)


def test_a_phrase_in_the_first_message_is_caught():
    result = result_of((2, "failed", "expected X. Hint: Parse ARGV"), (2, "failed", "other"))
    assert mistakes.verdict_of(mistake(2, "parse argv"), result).caught


def test_a_phrase_only_in_a_later_message_of_the_task_is_refused():
    result = result_of((2, "failed", "expected port 1, got 2"), (2, "failed", "Hint: parse argv"))
    verdict = mistakes.verdict_of(mistake(2, "parse argv"), result)
    assert not verdict.caught
    assert "first message (task 2, test_0)" in verdict.detail and "a later message says it" in verdict.detail


def test_an_earlier_task_that_fails_too_must_name_the_mistake():
    # The mistake is task 3's, but task 1 fails first: that is the message the learner reads.
    result = result_of((1, "failed", "expected a ConfigError"), (3, "failed", "Hint: catch ConfigError"))
    verdict = mistakes.verdict_of(mistake(3, "catch ConfigError"), result)
    assert not verdict.caught and "task 1" in verdict.detail
    named = result_of((1, "failed", "Hint: catch ConfigError"), (3, "failed", "something else"))
    assert mistakes.verdict_of(mistake(3, "catch ConfigError"), named).caught


def test_a_task_that_still_passes_is_refused_whatever_the_messages():
    result = result_of((1, "failed", "parse argv"), (2, "passed", ""))
    assert not mistakes.verdict_of(mistake(2, "parse argv"), result).caught


def test_the_test_name_is_not_the_message():
    result = result_of((2, "failed", "expected port 1, got 2"))
    assert not mistakes.verdict_of(mistake(2, "test_0"), result).caught


# --- a library's error, by its meaningful line ------------------------------------------------------------

SQLALCHEMY_LOG = """\
ERROR aiohttp.server: Error handling request
Traceback (most recent call last):
  File "/venv/site-packages/sqlalchemy/engine/base.py", line 1900, in _execute_context
    self.dialect.do_execute(
psycopg2.errors.UndefinedTable: relation "questions" does not exist
LINE 1: SELECT id, question_text FROM questions
                                      ^


The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/tree/aiohttpdemo_polls/views.py", line 12, in index
    rows = await conn.execute(question.select())
  File "/venv/site-packages/sqlalchemy/engine/base.py", line 1900, in _execute_context
    self.dialect.do_execute(
sqlalchemy.exc.ProgrammingError: (psycopg2.errors.UndefinedTable) relation "questions" does not exist
LINE 1: SELECT id, question_text FROM questions
                                      ^

[SQL: SELECT id, question_text FROM questions]
(Background on this error at: https://sqlalche.me/e/14/f405)
INFO aiohttp.access: 127.0.0.1 "GET / HTTP/1.1" 500 -
"""


def test_a_sqlalchemy_error_shows_the_drivers_line_not_the_link():
    shown = last_exception(SQLALCHEMY_LOG)
    assert shown == (
        "aiohttpdemo_polls/views.py, line 12: sqlalchemy.exc.ProgrammingError: "
        '(psycopg2.errors.UndefinedTable) relation "questions" does not exist'
    )
    assert "sqlalche.me" not in shown


def test_an_error_message_loses_sqlalchemys_trailers_and_is_capped():
    trailers = "[SQL: SELECT 1]\n[parameters: {}]\n(Background on this error at: u)"
    message = "x" * 1000 + "\nLINE 1: SELECT\n" + trailers
    shown = error_text(message)
    assert shown.splitlines()[0] == "x" * 400 + "..." and "SQL:" not in shown and "Background" not in shown
    assert error_text("\n".join(f"line {n}" for n in range(10))).splitlines()[-1] == "..."


def test_a_plain_traceback_still_gives_its_error_line():
    log = 'Traceback (most recent call last):\n  File "/t/aiohttpdemo_polls/main.py", line 3, in <module>\n' \
          '    x()\nNameError: name \'x\' is not defined\n'  # fmt: skip
    assert last_exception(log) == "aiohttpdemo_polls/main.py, line 3: NameError: name 'x' is not defined"
    assert last_exception("just a line") == ""


# --- the learner's programs see none of the workbook's internals -----------------------------------------

PACKAGE_MAIN = """
import json, sys
print("ARGV " + json.dumps({"argv": sys.argv[1:], "orig": sys.orig_argv}), flush=True)
if "--fail" in sys.argv:
    raise ValueError("bad config")
"""

ARGS_MODULE = """
import sys

def seen():
    return list(sys.argv), list(sys.orig_argv)
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    package = tmp_path / "aiohttpdemo_polls"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(textwrap.dedent(PACKAGE_MAIN))
    (package / "args.py").write_text(textwrap.dedent(ARGS_MODULE))
    return tmp_path


@pytest.fixture
def launcher():
    started = learner_process.Launcher()
    learner_process.use_launcher(started)
    yield started
    learner_process.use_launcher(None)
    started.close()


INTERNALS = ("--tree", "--preload", "--launcher", "--folder", "harness.py", "launcher.py", "workbook-")


def argv_of(output: str) -> dict[str, Any]:
    line = next(line for line in output.splitlines() if line.startswith("ARGV "))
    return json.loads(line[len("ARGV ") :])


def test_a_command_sees_only_the_arguments_the_check_gave_it(launcher, tree):
    finished = Command(tree, "-m", "aiohttpdemo_polls", "--config", "x.yaml").wait(10)
    seen = argv_of(finished.output)
    assert seen["argv"] == ["--config", "x.yaml"], seen
    assert not [word for word in INTERNALS for arg in seen["orig"] if word in arg], seen


def test_a_commands_traceback_starts_in_the_learners_code(launcher, tree):
    finished = Command(tree, "-m", "aiohttpdemo_polls", "--fail").wait(10)
    assert finished.status == 1 and "ValueError: bad config" in finished.output
    traceback = finished.output.split("Traceback", 1)[1]
    assert "learner_side" not in traceback and "aiohttpdemo_polls/__main__.py" in traceback, traceback


def test_a_function_called_by_a_check_sees_no_harness_argument(tree):
    harness = Harness(tree)
    harness.start()
    try:
        argv, orig = harness.request("call", target="args:seen")
    finally:
        harness.close()
    assert argv == ["aiohttpdemo_polls"], argv
    assert not [word for word in INTERNALS for arg in orig if word in arg], orig


# --- how a learner's process ended, in words -------------------------------------------------------------


def test_a_server_the_check_kills_is_said_to_be_killed_not_minus_9(launcher, tmp_path):
    finished = Command(tmp_path, "-c", "import time; time.sleep(60)").wait(0.5)
    assert finished.timed_out and finished.status == -9
    assert finished.ended == "it was still running after 0.5 s, so the check killed it"


@pytest.mark.parametrize(
    ("status", "words"),
    [(0, "it exited with status 0"), (2, "it exited with status 2"), (-11, "it was killed by SIGSEGV"),
     (None, "it has not exited")],
)  # fmt: skip
def test_an_ending_in_words(status, words):
    assert how_it_ended(status) == words


def test_the_workbooks_own_frames_leave_a_log_and_the_learners_stay():
    log = (
        "Traceback (most recent call last):\n"
        '  File "/w/workbook/learner_side/harness.py", line 270, in once\n'
        "    result = function(*args)\n"
        "             ^^^^^^^^^^^^^^^\n"
        '  File "/tree/aiohttpdemo_polls/db.py", line 5, in vote\n'
        "    raise ValueError('x')\n"
        "ValueError: x"
    )
    shown = without_own_frames(log)
    assert "learner_side" not in shown and "function(*args)" not in shown and "^^^" not in shown
    assert 'File "/tree/aiohttpdemo_polls/db.py", line 5' in shown and shown.endswith("ValueError: x")


def report_of(crash: str, exit_status: int | None = None, log: str = "") -> SimpleNamespace:
    """What pytest_plugin._short_message reads of a failed check's report."""
    longrepr = SimpleNamespace(reprcrash=SimpleNamespace(message=crash))
    return SimpleNamespace(longrepr=longrepr, learner_exit=exit_status, learner_log=log)


def test_a_checks_message_names_no_internal_class_and_no_sentinel():
    crash = 'workbook.judge.learner_process.LearnerRaised: ProgrammingError: relation "x" does not exist'
    message = pytest_plugin._short_message(report_of(crash, exit_status=-9, log=SQLALCHEMY_LOG))
    assert message.startswith('ProgrammingError: relation "x" does not exist'), message
    assert "workbook." not in message and "-9" not in message and "killed by SIGKILL" in message
    assert 'relation "questions" does not exist' in message and "sqlalche.me" not in message


def test_a_mistake_is_judged_on_the_steps_run_up_to_its_task():
    # Step 1's checks in the order they run: tasks 1, 2, 3. Up to task 2, task 3's checks are left out.
    result = run_step(catalogue.step(1), "solutions", extra=["-q", "--up-to-task", "2"])
    assert result.task_done(1) and result.task_done(2) and result.task_counts(3) == (0, 0), result.output
