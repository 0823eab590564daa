"""The learner's commands, driven as a learner would, in private copies of the workbook."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from tests.workbook.conftest import run_workbook
from workbook import catalogue, learner
from workbook.pg import free_port


def copy_solution(copy: Path, number: int) -> None:
    """Finish step N the honest way: put its reference solution (markers removed) in steps/."""
    target = copy / "steps" / f"step{number}"
    shutil.rmtree(target)
    from workbook.starter import strip_markers_into

    strip_markers_into(copy / "solutions" / f"step{number}", target, number)


def test_status_of_an_untouched_workbook(workbook_copy):
    result = run_workbook(workbook_copy, "status")
    assert result.returncode == 0, result.stderr
    total = sum(len(step.tasks) for step in catalogue.steps())
    assert f"0/{total} tasks" in result.stdout
    assert "Next: step 1, task 1" in result.stdout
    assert "done" not in result.stdout


def test_status_after_finishing_steps_1_and_2(workbook_copy):
    copy_solution(workbook_copy, 1)
    copy_solution(workbook_copy, 2)
    result = run_workbook(workbook_copy, "status")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line[:1].isdigit()}
    assert lines["1"].count(":done") == 3 and lines["2"].count(":done") == 3, result.stdout
    assert "not started" in lines["3"]
    assert "Next: step 3, task 1" in result.stdout
    assert "6/" in result.stdout


def test_status_tells_a_started_task_from_an_untouched_one(workbook_copy):
    views = workbook_copy / "steps/step2/aiohttpdemo_polls/views.py"
    views.write_text(
        views.read_text().replace('raise NotImplementedError("TODO step 2, task 1")', "return None")
    )
    result = run_workbook(workbook_copy, "status")
    line = next(line for line in result.stdout.splitlines() if line.startswith("2 "))
    assert "1:failing" in line, result.stdout


def test_hint_twice_gives_the_next_hint(workbook_copy):
    first = run_workbook(workbook_copy, "hint", "3")
    second = run_workbook(workbook_copy, "hint", "3")
    task = catalogue.step(3).task(1)
    assert task.hints[0] in first.stdout and task.hints[1] in second.stdout
    assert first.stdout != second.stdout
    everything = run_workbook(workbook_copy, "hint", "3", "--all")
    assert all(hint in everything.stdout for hint in task.hints)


def test_hint_follows_the_first_failing_task(workbook_copy):
    copy_solution(workbook_copy, 2)
    routes = workbook_copy / "steps/step2/aiohttpdemo_polls/routes.py"
    routes.write_text(routes.read_text().replace('name="index"', 'name="home"'))
    result = run_workbook(workbook_copy, "hint", "2")
    assert "task 2" in result.stdout and "expected a route named 'index'" in result.stdout, result.stdout


def test_a_syntax_error_is_one_short_message(workbook_copy):
    views = workbook_copy / "steps/step2/aiohttpdemo_polls/views.py"
    views.write_text(views.read_text() + "\ndef oops(:\n")
    result = run_workbook(workbook_copy, "check", "2")
    output = result.stdout + result.stderr
    assert result.returncode == 3
    assert "steps/step2/aiohttpdemo_polls/views.py, line" in output
    assert "Traceback" not in output and len(output.splitlines()) < 12, output


def test_reset_asks_and_keeps_a_backup(workbook_copy):
    main = workbook_copy / "steps/step1/aiohttpdemo_polls/main.py"
    main.write_text(main.read_text() + "\n# my attempt\n")
    refused = run_workbook(workbook_copy, "reset", "1", stdin="n\n")
    assert "Nothing changed" in refused.stdout and "# my attempt" in main.read_text()
    no_terminal = run_workbook(workbook_copy, "reset", "1", stdin="")  # end of input: a no, not a crash
    assert no_terminal.returncode == 0 and "EOFError" not in no_terminal.stderr, no_terminal.stderr
    assert "Nothing changed" in no_terminal.stdout and "--yes" in no_terminal.stdout

    accepted = run_workbook(workbook_copy, "reset", "1", stdin="yes\n")
    assert accepted.returncode == 0, accepted.stderr
    assert "# my attempt" not in main.read_text()
    assert learner.untouched(catalogue.step(1), workbook_copy)
    (backup,) = (workbook_copy / "backups").iterdir()
    assert "# my attempt" in (backup / "aiohttpdemo_polls/main.py").read_text()


def test_solution_stays_hidden_until_the_step_passes(workbook_copy):
    hidden = run_workbook(workbook_copy, "solution", "1")
    assert hidden.returncode == 1 and "does not pass yet" in hidden.stdout
    assert "Hello Aiohttp!" not in hidden.stdout

    forced = run_workbook(workbook_copy, "solution", "1", "--force")
    assert forced.returncode == 0 and '+    return web.Response(text="Hello Aiohttp!")' in forced.stdout

    copy_solution(workbook_copy, 1)
    main = workbook_copy / "steps/step1/aiohttpdemo_polls/main.py"
    main.write_text(main.read_text().replace('"""Step 1: the smallest', '"""My step 1: the smallest'))
    shown = run_workbook(workbook_copy, "solution", "1")
    assert shown.returncode == 0
    assert (
        '-"""My step 1: the smallest' in shown.stdout
        and "+++ solution/step1/aiohttpdemo_polls/main.py" in shown.stdout
    )


def test_watch_reruns_on_each_change(workbook_copy, capsys):
    step = catalogue.step(1)
    copy_solution(workbook_copy, 1)
    main = workbook_copy / "steps/step1/aiohttpdemo_polls/main.py"

    def edits():
        main.write_text(main.read_text().replace("Hello Aiohttp!", "Hello!"))
        yield {"changed"}

    learner.watch(step, root=workbook_copy, changes=edits())
    output = capsys.readouterr().out
    runs = output.split("--- step 1")
    assert len(runs) == 3, output  # the first run, then one per change
    assert "Step 1 passes" in runs[1]
    assert "FAIL  task 1" in runs[2] and "First failure, task 1" in runs[2]


def test_an_endless_loop_is_stopped_and_named(workbook_copy):
    views = workbook_copy / "steps/step2/aiohttpdemo_polls/views.py"
    views.write_text(views.read_text() + "\nwhile True:\n    pass\n")
    from workbook import runner

    result = runner.run_step(catalogue.step(2), "steps", root=workbook_copy, timeout=5)
    assert "did not finish within 5s" in result.broken
    assert learner.summary_lines(result)[0] == "step 2 could not be checked:"


def test_serving_an_untouched_step_says_there_is_no_server_yet(workbook_copy):
    # A free port: whatever else runs on 8080 (a learner's own serve) must not decide this check.
    result = run_workbook(workbook_copy, "serve", "--learner", "4", "--port", str(free_port()))
    assert result.returncode != 0
    assert "no server yet" in result.stderr and "nox -s step4" in result.stderr, result.stderr


def test_check_output_names_the_apps_error_and_skips_unselected_tasks(workbook_copy):
    result = run_workbook(workbook_copy, "check", "7", "-k", "redirects")
    logged = "(the app logged: aiohttpdemo_polls/views.py, line "
    assert logged in result.stdout and "NotImplementedError: TODO step 7, task 2)" in result.stdout, (
        result.stdout
    )
    assert (
        "task 1: `vote()` adds one vote atomically, only to the poll's own choice  (not run this time)"
        in (result.stdout)
    )


def test_verbose_after_the_step_number_reaches_pytest(workbook_copy):
    result = run_workbook(workbook_copy, "check", "1", "-v")
    assert "tests/step1/test_step1_hello.py::test_index_view_says_hello FAILED" in result.stdout, (
        result.stdout
    )


def test_a_suite_that_cannot_load_is_no_success(workbook_copy):
    suite = workbook_copy / "tests/step1/test_step1_hello.py"
    suite.write_text("import no_such_module\n" + suite.read_text())
    result = run_workbook(workbook_copy, "check", "1", "--target", "solutions")
    assert result.returncode != 0
    assert "No verdict for step 1" in result.stdout and "is done" not in result.stdout, result.stdout


def test_serve_on_a_busy_port_says_so_and_blames_no_one(workbook_copy):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = run_workbook(workbook_copy, "serve", "9", "--port", str(port))
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert f"Port {port} is already in use" in result.stderr
    assert f"nox -s serve -- 9 --port {port + 1}" in result.stderr


def test_suites_keep_their_temp_folders_out_of_the_one_pytest_shares(tmp_path, monkeypatch):
    """By default every pytest of a user shares TMPDIR/pytest-of-USER and removes the older folders there,
    so suites run at once (integrity, mutants, `check` beside them) could remove each other's, and the
    judge died without a report. Here that shared place is a file, where no folder can be made: a suite
    that still used it could not start; each run keeps its temp folders in a folder of its own."""
    import getpass

    from workbook.runner import run_step

    trap = tmp_path / "tmp"
    trap.mkdir()
    for user in (getpass.getuser(), "unknown"):  # pytest tries pytest-of-unknown when the first fails
        (trap / f"pytest-of-{user}").write_text("not a folder\n")
    monkeypatch.setenv("TMPDIR", str(trap))
    result = run_step(catalogue.step(3), "solutions", env={"TMPDIR": str(trap)})  # its checks use tmp_path
    assert not result.broken and result.returncode == 0, result.output[-2000:]
    checked = run_workbook(catalogue.ROOT, "check", "3", "--target", "solutions")
    assert checked.returncode == 0, checked.stdout[-2000:]
