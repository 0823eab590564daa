"""A run is never lost: a grading run that fails replaces the last run's outputs with its own, saying so;
Gradescope gets a results.json whatever happens; a database server that dies is started again on freed
storage, and every step that ran during the outage is graded again."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.workbook.conftest import copy_of_the_workbook, finish
from workbook import catalogue, gradescope
from workbook.grading import cli, outputs, running, scores
from workbook.grading.submissions import Submission

STEP1 = catalogue.step(1)


def full_marks(task: catalogue.Task) -> scores.TaskScore:
    return scores.TaskScore(task, 1, 1, [scores.Check("check", task.number, "passed")])


def previous_outputs(out: Path) -> None:
    """What an earlier, complete run left in --out: a learner this run will not grade, among others."""
    grade = scores.LearnerGrade(
        "old-learner", [scores.StepGrade(STEP1, [full_marks(t) for t in STEP1.tasks])]
    )
    record = running.RunRecord(steps=[1], learners=1, started="2020-01-01T00:00:00Z", completed=True)
    outputs.write_outputs(out, [grade], [STEP1], record)
    assert (out / "learners" / "old-learner" / "results.json").is_file()


def two_learners(submissions: Path) -> None:
    finish(copy_of_the_workbook(submissions / "ann"), 1)
    finish(copy_of_the_workbook(submissions / "bob"), 1)


def gradebook(out: Path) -> dict[str, list[str]]:
    rows = list(csv.reader((out / "gradebook.csv").read_text().splitlines()))
    return {row[0]: row[1:] for row in rows[1:]}


def test_a_run_that_fails_midway_replaces_the_old_outputs_and_says_so(tmp_path, monkeypatch):
    """The grader's own error while grading bob: ann's grade is kept, bob's step says it was not graded,
    run.json says the run did not complete and why, and nothing of the previous run is left to look
    current."""
    out, submissions = tmp_path / "grades", tmp_path / "class"
    previous_outputs(out)
    two_learners(submissions)
    once = running._grade_unit_once

    def failing(run, step, workbook, workdir):
        if workdir.parent.name == "learner-0001":  # bob
            raise RuntimeError("the grader broke")
        return once(run, step, workbook, workdir)

    monkeypatch.setattr(running, "_grade_unit_once", failing)
    with pytest.raises(RuntimeError, match="the grader broke"):  # the error is not swallowed either
        cli.main(
            [
                str(submissions),
                "--steps",
                "1",
                "--out",
                str(out),
                "--jobs",
                "1",
                "--tier",
                "none",
                "--trusted",
            ]
        )
    run = json.loads((out / "run.json").read_text())
    assert run["completed"] is False and "RuntimeError: the grader broke" in run["reason"], run
    assert run["started"] and run["ended"] and run["started"] <= run["ended"]
    assert not (out / "learners" / "old-learner").exists(), "the previous run's outputs are left"
    book = gradebook(out)
    assert set(book) == {"ann", "bob"}, book
    assert book["ann"] == [str(STEP1.points)] * 2 and book["bob"] == ["0", "0"], book
    bob = json.loads((out / "learners" / "bob" / "results.json").read_text())
    assert "not graded: grader error: RuntimeError: the grader broke" in bob["output"], bob["output"]
    assert "This run did not complete" in (out / "report.html").read_text()
    assert not list(tmp_path.glob(".grades.*")), "a staging folder is left beside --out"


def test_a_run_refused_before_grading_still_replaces_the_old_outputs(tmp_path, capsys):
    """A run that could not start (here: unconfined without --trusted) is a run that failed too."""
    out, submissions = tmp_path / "grades", tmp_path / "class"
    previous_outputs(out)
    two_learners(submissions)
    status = cli.main([str(submissions), "--steps", "1", "--out", str(out), "--tier", "none"])
    assert status == 2
    assert "say that it did not grade" in capsys.readouterr().err
    run = json.loads((out / "run.json").read_text())
    assert run["completed"] is False and "--trusted" in run["reason"], run
    assert not (out / "learners" / "old-learner").exists()
    book = gradebook(out)
    assert book == {"ann": ["0", "0"], "bob": ["0", "0"]}, book
    ann = json.loads((out / "learners" / "ann" / "results.json").read_text())
    assert "not graded: --tier none grades learners' code unconfined" in ann["output"], ann["output"]


def test_an_out_folder_with_other_files_is_refused_before_grading(tmp_path, capsys):
    out, submissions = tmp_path / "grades", tmp_path / "class"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    two_learners(submissions)
    assert cli.main([str(submissions), "--steps", "1", "--out", str(out)]) == 2
    assert "holds files that grading did not write (notes.txt)" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["notes.txt"]


def test_outputs_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """A failure while writing (a full disk, say) leaves no mix: --out holds run.json alone, saying so."""
    out = tmp_path / "grades"
    previous_outputs(out)
    grade = scores.LearnerGrade("zed", [scores.StepGrade(STEP1, [full_marks(t) for t in STEP1.tasks])])

    def full_disk(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "write_learner", full_disk)
    record = running.RunRecord(steps=[1], learners=1, completed=True)
    with pytest.raises(OSError):
        outputs.write_outputs(out, [grade], [STEP1], record)
    assert os.listdir(out) == ["run.json"]
    run = json.loads((out / "run.json").read_text())
    assert run["completed"] is False and "No space left on device" in run["reason"], run


def test_a_killed_writers_staging_folder_goes_with_the_next_write(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = tmp_path / f".grades.new-{dead.pid}-abc"
    left.mkdir()
    alive = tmp_path / f".grades.new-{os.getpid()}-abc"
    alive.mkdir()
    outputs.write_outputs(tmp_path / "grades", [], [STEP1])
    assert not left.exists() and alive.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name, "grades"]


def test_an_out_whose_parent_is_not_writable_gets_its_outputs_all_the_same(tmp_path, monkeypatch):
    """An instructor who owns --out and nothing around it (the hostile class's unprivileged grader): the
    outputs are staged inside --out and replace the old ones there; nothing of the old run stays."""
    out = tmp_path / "grades"
    previous_outputs(out)
    staged_beside = tempfile.mkdtemp

    def parent_not_writable(*args, **kwargs):
        if Path(kwargs.get("dir", "")) == out.parent:
            raise PermissionError(13, "Permission denied", str(out.parent))
        return staged_beside(*args, **kwargs)

    monkeypatch.setattr(outputs.tempfile, "mkdtemp", parent_not_writable)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / f"{outputs.INNER_STAGING}{dead.pid}-abc").mkdir()  # a writer killed outright left it
    grade = scores.LearnerGrade("zed", [scores.StepGrade(STEP1, [full_marks(t) for t in STEP1.tasks])])
    outputs.write_outputs(out, [grade], [STEP1], running.RunRecord(steps=[1], learners=1, completed=True))
    assert sorted(os.listdir(out)) == sorted(outputs.OUTPUT_NAMES)
    assert sorted(os.listdir(out / "learners")) == ["zed"] and list(gradebook(out)) == ["zed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grades"]


def test_gradescope_gets_results_json_when_grading_fails(tmp_path, monkeypatch):
    root = tmp_path / "autograder"
    finish(copy_of_the_workbook(root / "submission"), 1)

    def broken(_steps: object) -> dict:
        raise running.GradingError("the autograder's environment is broken")

    monkeypatch.setattr(running, "step_environments", broken)
    status = gradescope.main(["autograde", "--root", str(root), "--steps", "1"])
    assert status == 1  # Gradescope marks the run failed, and shows the learner why
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == 0
    assert results["output"].startswith(
        "The autograder could not finish grading this submission: the autograder's environment is broken."
    )
    assert "This is not a verdict on your code" in results["output"]
    assert len(results["tests"]) == len(STEP1.tasks)
    assert all("not graded" in test["output"] for test in results["tests"])


# --- the database server dies -----------------------------------------------------------------------------


def postmaster_of(port: int) -> int:
    return next(
        int(entry.name) for entry in Path("/proc").glob("[0-9]*")
        if (entry / "cmdline").exists()
        and f"\0-p\0{port}\0".encode() in (entry / "cmdline").read_bytes()
    )  # fmt: skip


def test_revival_frees_the_dead_clusters_storage_before_starting_another(tmp_path, monkeypatch):
    """On a full file system the fresh cluster's copy of the template needs the dead one's room."""
    step = STEP1
    learner = copy_of_the_workbook(tmp_path / "ann")
    finish(learner, 1)
    with running.grading_run([step], 60.0, trusted=True, tier="none") as run:
        assert run.server is not None and run.server.kind == "local"
        dead_folder = Path(run.server.socket).parent  # unconfined: the socket is in the cluster's folder
        assert dead_folder.is_dir()
        seen = []
        start = running.local_postgres

        def watched(*args, **kwargs):
            seen.append(dead_folder.exists())
            return start(*args, **kwargs)

        monkeypatch.setattr(running, "local_postgres", watched)
        os.kill(postmaster_of(run.server.port), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while run.database_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        graded = running.grade_unit(run, step, learner, run.workspace / "ann-step1")
        assert seen == [False], "the dead cluster's folder was still there when the new one started"
        assert run.generation == 1 and run.database_alive()
        assert graded.earned == step.points and not graded.problems, graded.problems


def descends_from_us(pid: int) -> bool:
    while pid > 1:
        try:
            pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid == os.getpid():
            return True
    return False


def test_a_database_killed_while_two_steps_run_regrades_both(tmp_path, monkeypatch):
    """The server dies while two learners' step 4 run at once: ann's thread notices and starts it again;
    bob's checks failed on the dead server too, though his run ends when the server is alive again, so
    both are graded again, and both honest learners keep every point."""
    step = catalogue.step(4)
    submissions = tmp_path / "class"
    for name in ("ann", "bob"):
        copy = copy_of_the_workbook(submissions / name)
        finish(copy, step.number)
    attempts: list[str] = []
    once = running._grade_unit_once
    killed = threading.Event()

    def counted(run, step, workbook, workdir):
        attempts.append(workdir.parent.name)
        graded = once(run, step, workbook, workdir)
        if workdir.parent.name == "learner-0001" and attempts.count("learner-0001") == 1:
            # bob's first run ends only once ann's thread has started a fresh server: as a longer step
            # would, so that bob's thread finds a live server and only the generation tells of the outage
            killed.wait(60)
            deadline = time.monotonic() + 60
            while run.generation == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
        return graded

    monkeypatch.setattr(running, "_grade_unit_once", counted)

    def kill_when_both_run() -> None:
        """Once two step runs are under way (two markers), SIGKILL the postmaster this process started."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed.is_set():
            markers, postmaster = set(), None
            for entry in Path("/proc").glob("[0-9]*"):
                try:
                    environ = (entry / "environ").read_bytes().split(b"\0")
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                fields = stat.rsplit(")", 1)[1].split()
                if descends_from_us(int(entry.name)):  # other graders on this machine have markers too
                    markers.update(v for v in environ if v.startswith(running.RUN_MARKER.encode() + b"="))
                if "(postgres)" in stat and int(fields[1]) == os.getpid():
                    postmaster = int(entry.name)
            if len(markers) >= 2 and postmaster is not None:
                time.sleep(0.5)  # into the checks, past the start of both processes
                os.kill(postmaster, signal.SIGKILL)
                killed.set()
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_when_both_run, daemon=True)
    killer.start()
    record = running.RunRecord()
    grades = running.grade_submissions(
        [Submission(n, submissions / n) for n in ("ann", "bob")], [step], jobs=2, timeout=120,
        record=record,
    )  # fmt: skip
    killer.join(5)
    assert killed.is_set(), "the server was never killed while both steps ran"
    assert sorted(attempts) == ["learner-0000", "learner-0000", "learner-0001", "learner-0001"], attempts
    for grade in grades:
        assert grade.total == step.points and not grade.all_problems(), (grade.name, grade.all_problems())
    assert record.completed


@pytest.mark.parametrize("refusals", [1, running.MAX_ATTEMPTS])
def test_a_role_the_server_refuses_the_grader_is_its_fault_not_the_learners(tmp_path, monkeypatch, refusals):
    """The server refuses the grader this step's database role (before any learner code runs: out of slots
    for a moment, a lock): the step is graded again after a pause, and an honest learner keeps every point;
    refused at every attempt, the step says it was not graded and that this is no fault of the code."""
    import psycopg2

    step = catalogue.step(4)
    submissions = tmp_path / "class"
    finish(copy_of_the_workbook(submissions / "ann"), step.number)
    refused: list[str] = []
    entered: list[str] = []

    class RefusedRole(running.LearnerRole):
        def __enter__(self):
            entered.append(self.name)
            if len(entered) > 1 and len(refused) < refusals:  # the first is the run's own check of the server
                refused.append(self.name)
                raise psycopg2.OperationalError("FATAL:  sorry, too many clients already\n(detail)")
            return super().__enter__()

    monkeypatch.setattr(running, "LearnerRole", RefusedRole)
    monkeypatch.setattr(running, "REFUSAL_PAUSE", 0.01)
    [grade] = running.grade_submissions(
        [Submission("ann", submissions / "ann")], [step], jobs=1, timeout=120, record=running.RunRecord()
    )
    assert len(refused) == refusals, refused
    if refusals < running.MAX_ATTEMPTS:
        assert grade.total == step.points and not grade.all_problems(), grade.all_problems()
        return
    assert grade.total == 0, grade.total
    [problem] = grade.all_problems()
    assert "too many clients" in problem and "no fault of your code" in problem and "(detail)" not in problem
