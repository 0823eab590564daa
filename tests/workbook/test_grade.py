"""Classroom grading: a class of learners who finish, half-finish, hang, mistype, sabotage and crash."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from fractions import Fraction
from pathlib import Path

import psycopg2
import pytest

from tests.workbook.conftest import FORGERY, copy_of_the_workbook, finish, of_another_live_grader, package
from workbook import catalogue
from workbook.grading import database, outputs, progress, running, scores, submissions
from workbook.pg import ENV_DSN, PostgresServer, throwaway_postgres
from workbook.runner import run_step
from workbook.starter import strip_markers_into

ROOT = catalogue.ROOT
STEPS = [catalogue.step(n) for n in (1, 2, 3)]
HANGS_AFTER = 20  # seconds: the --timeout of the class run
# What grade-merge reads (test_shards.py), besides the run's own description.
SHARD_FIELDS = {
    "snapshot",
    "shard",
    "graded",
    "roster",
    "classroom50",
    "started",
    "ended",
    "completed",
    "reason",
}
NASTY = "ivy <img src=x onerror=alert(1)>"  # a learner name (a folder name) that must not become markup


def points(step: int, task: int | None = None) -> int:
    chosen = catalogue.step(step)
    return chosen.points if task is None else chosen.task(task).points


def finished_copy(into: Path) -> Path:
    copy = copy_of_the_workbook(into)
    for step in STEPS:
        finish(copy, step.number)
    return copy


SABOTAGE = """

# --- below: what a careless (or nasty) learner might run at import time ---
import os as _os
import shutil as _shutil
from pathlib import Path as _Path

import psycopg2 as _pg

# The learner's process gets a scrubbed environment: the grader's DSN is not in it any more.
_dsn = _os.environ.get("WORKBOOK_PG_DSN")
if _dsn:
    _conn = _pg.connect(_dsn)
    _conn.autocommit = True
    with _conn.cursor() as _cur:
        _cur.execute("CREATE DATABASE eve_scratch")
        _cur.execute("SELECT datname FROM pg_database WHERE NOT datistemplate")
        for (_name,) in _cur.fetchall():  # the current one, its own, and everybody else's
            try:
                _cur.execute(f'DROP DATABASE "{_name}" WITH (FORCE)')
            except _pg.Error:
                pass
    _conn.close()
_shutil.rmtree(_Path(__file__).resolve().parents[3] / "tests", ignore_errors=True)
"""


def zip_folder(folder: Path, archive: Path, prefix: str = "") -> None:
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                bundle.write(path, prefix + path.relative_to(folder).as_posix())


def build_class(submissions: Path, scratch: Path) -> dict[str, list[Fraction]]:
    """Every kind of learner, and the points each must get for steps 1, 2 and 3."""
    expected: dict[str, list[Fraction]] = {}
    full = [Fraction(points(1)), Fraction(points(2)), Fraction(points(3))]

    finished_copy(submissions / "ada")  # complete
    expected["ada"] = full

    ben = copy_of_the_workbook(submissions / "ben")  # step 1 done, step 2 task 1 only, step 3 untouched
    finish(ben, 1)
    strip_markers_into(ROOT / "solutions/step2", scratch / "ben-step2", 2)
    shutil.copy2(scratch / "ben-step2" / catalogue.PACKAGE / "views.py", package(ben, 2) / "views.py")
    expected["ben"] = [full[0], Fraction(points(2, 1)), starter_points(catalogue.step(3))]

    cleo = finished_copy(submissions / "cleo")  # step 2's setup_routes never returns
    routes = package(cleo, 2) / "routes.py"
    routes.write_text(
        routes.read_text().replace(
            '    app.router.add_get("/"', '    while True:\n        pass\n    app.router.add_get("/"'
        )
    )
    expected["cleo"] = [full[0], Fraction(points(2, 1)), full[2]]

    dan = finished_copy(submissions / "dan")  # a syntax error on line 3 of step 2's views.py
    (package(dan, 2) / "views.py").write_text('"""Views."""\n\ndef index(request)\n    return None\n')
    expected["dan"] = [full[0], Fraction(0), full[2]]

    eve = finished_copy(submissions / "eve")  # drops every database it can reach and deletes its tests
    views = package(eve, 2) / "views.py"
    views.write_text(views.read_text() + SABOTAGE)
    # Her code deletes the sandbox's tests once the suite is collected, so the judge cannot set its checks
    # up: she loses her own step 2, recorded as such, and nobody else is touched.
    expected["eve"] = [full[0], Fraction(0), full[2]]

    finn = finished_copy(submissions / "finn")  # step 1's main.py ends the interpreter when imported
    main = package(finn, 1) / "main.py"
    main.write_text("import os\n\nos._exit(0)\n" + main.read_text())
    expected["finn"] = [Fraction(0), full[1], full[2]]

    finished_copy(scratch / "gus")  # a zip with the workbook inside one top folder
    zip_folder(scratch / "gus", submissions / "gus.zip", prefix="polls-workbook/")
    expected["gus"] = full

    finished_copy(scratch / "hal")  # a zip with the workbook at its top
    zip_folder(scratch / "hal", submissions / "hal.zip")
    expected["hal"] = full

    # prints 2 MB and fails step 1 task 3, with markup in its name and in the failure's message
    ivy = finished_copy(submissions / NASTY)
    main = package(ivy, 1) / "main.py"
    main.write_text(
        main.read_text()
        .replace(
            "def main(",
            "def _noisy():\n    print('spam ' * 400_000)\n"
            "    raise RuntimeError('<script>alert(1)</script>')\n\n\ndef main(",
        )
        .replace("    web.run_app(app", "    _noisy()\n    web.run_app(app")
    )
    assert "_noisy()\n    web.run_app" in main.read_text(), (
        "the step 1 solution changed shape: update this test"
    )
    expected[NASTY] = [full[0] - points(1, 3), full[1], full[2]]

    lee = finished_copy(submissions / "lee")  # hands in step 1 as a link to a classmate's (ada's) work
    shutil.rmtree(lee / "steps" / "step1")
    (lee / "steps" / "step1").symlink_to(submissions / "ada" / "steps" / "step1")
    expected["lee"] = [Fraction(0), full[1], full[2]]

    copy_of_the_workbook(submissions / "sam")  # hands in the starters untouched
    mallory = copy_of_the_workbook(submissions / "mallory")  # the starters, plus forgery from the package
    for step in STEPS:
        init = package(mallory, step.number) / "__init__.py"
        init.write_text(init.read_text() + FORGERY)
    expected["sam"] = expected["mallory"] = [starter_points(step) for step in STEPS]

    (submissions / "notes.txt").write_text("not a submission")
    (submissions / ".DS_Store").write_text("")
    return expected


def starter_points(step: catalogue.Step) -> Fraction:
    """What the untouched starter earns, from a plain run of the suite: nothing (workbook/scoring.py)."""
    earned = run_step(step, "steps").points
    assert earned == 0, f"the untouched starter of step {step.number} earns {earned} points"
    return earned


def full_marks(task: catalogue.Task) -> scores.TaskScore:
    """A task whose every check passed (one earning check is enough for full marks)."""
    earning = [scores.Check(f"check{n}", task.number, "passed") for n in range(3)]
    return scores.TaskScore(task, 3, 3, earning)


def tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*"))
    for file in files:
        digest.update(str(file.relative_to(path.parent)).encode())
        if file.is_file():
            digest.update(file.read_bytes())
    return digest.hexdigest()


def marked_processes() -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if running.RUN_MARKER.encode() + b"=" in (entry / "environ").read_bytes():
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if not of_another_live_grader(command):
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Grade the class once (steps 1-3, 2 at a time) on a server that also holds an instructor's database.

    An instructor's own server (WORKBOOK_PG_DSN) is graded on only with --trusted: confined learners reach
    nothing but a private cluster's socket (tests/workbook/test_grade_attacks.py grades confined)."""
    base = tmp_path_factory.mktemp("class")
    submissions, out = base / "submissions", base / "grades"
    submissions.mkdir()
    expected = build_class(submissions, base / "scratch")
    before = {p.name: tree_digest(p) for p in submissions.iterdir()}
    instructor_tests = sorted(p.relative_to(ROOT) for p in (ROOT / "tests").rglob("*.py"))
    with throwaway_postgres() as server:
        server.execute("CREATE DATABASE instructor_sentinel")
        databases_before = {row[0] for row in server.execute("SELECT datname FROM pg_database")}
        command = [
            sys.executable, "-c", "import sys, workbook.grading.cli as c; sys.exit(c.main(sys.argv[1:]))",
            str(submissions), "--steps", "1-3", "--out", str(out), "--jobs", "2",
            "--timeout", str(HANGS_AFTER), "--trusted",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT), ENV_DSN: server.dsn()}
        completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        databases = {row[0] for row in server.execute("SELECT datname FROM pg_database")}
        roles = {
            row[0] for row in server.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'wb_grade%'")
        }
        server.drop_database("instructor_sentinel")
    return {
        "completed": completed,
        "expected": expected,
        "out": out,
        "submissions": submissions,
        "before": before,
        "after": {p.name: tree_digest(p) for p in submissions.iterdir()},
        "instructor_tests": instructor_tests,
        "databases": databases,
        "databases_before": databases_before,
        "roles": roles,
        "leftover_processes": marked_processes(),
    }


def gradebook(out: Path) -> list[dict[str, str]]:
    with (out / "gradebook.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def results_of(out: Path, learner: str) -> dict:
    return json.loads((out / "learners" / learner / "results.json").read_text())


def test_every_learner_gets_exactly_the_expected_scores(graded_class):
    completed = graded_class["completed"]
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = gradebook(graded_class["out"])
    expected = graded_class["expected"]
    assert [row["learner"] for row in rows] == sorted(expected, key=submissions.sort_key)
    for row in rows:
        steps = expected[row["learner"]]
        assert [row["step1"], row["step2"], row["step3"]] == [scores.format_points(s) for s in steps], row
        assert row["total"] == scores.format_points(sum(steps)), row
    assert list(rows[0]) == ["learner", "step1", "step2", "step3", "total"]


def test_each_problem_is_recorded_with_a_short_reason(graded_class):
    out = graded_class["out"]

    def problems(learner: str) -> str:
        return results_of(out, learner)["output"]

    assert f"step 2: timed out after {HANGS_AFTER}s" in problems("cleo")
    assert "step 2: SyntaxError in steps/step2/aiohttpdemo_polls/views.py, line 3" in problems("dan")
    assert "step 2: the code deleted tests/step2" in problems("eve")
    assert "step 1: steps/step1 is a link, not the learner's own folder" in problems("lee")
    assert "step 1: importing aiohttpdemo_polls: the learner's process exited (exit status 0)" in problems(
        "finn"
    )
    # Her 2 MB of prints stay in her own process's log: the judge shows only the failing line of it.
    assert "output truncated" not in problems(NASTY)
    for learner in ("ada", "gus", "hal"):
        assert (
            problems(learner).strip()
            == f"{sum(s.points for s in STEPS)}/{sum(s.points for s in STEPS)} points."
        )
    log = (out / "learners" / NASTY / "step1.log").read_bytes()
    assert len(log) < 100_000 and b"spam spam" not in log


def test_results_json_is_gradescopes_format_per_task(graded_class):
    out, expected = graded_class["out"], graded_class["expected"]
    for learner, steps in expected.items():
        results = results_of(out, learner)
        assert results["score"] == round(float(sum(steps)), 2)
        assert [t["number"] for t in results["tests"]] == [
            f"{s.number}.{t.number}" for s in STEPS for t in s.tasks
        ]
        for test in results["tests"]:
            assert set(test) >= {"name", "score", "max_score", "status", "output"}
            assert test["status"] in ("passed", "failed")
            assert 0 <= test["score"] <= test["max_score"]
        assert sum(t["score"] for t in results["tests"]) == pytest.approx(results["score"], abs=0.05)
    cleo = {t["number"]: t for t in results_of(out, "cleo")["tests"]}
    assert cleo["2.1"]["status"] == "passed" and cleo["2.2"]["status"] == "failed"
    assert "timed out" in cleo["2.2"]["output"]


def test_submissions_and_the_instructors_checkout_are_untouched(graded_class):
    assert graded_class["after"] == graded_class["before"]
    assert (
        sorted(p.relative_to(ROOT) for p in (ROOT / "tests").rglob("*.py"))
        == graded_class["instructor_tests"]
    )


def test_learners_cannot_touch_each_other_or_the_instructors_databases(graded_class):
    assert "instructor_sentinel" in graded_class["databases"], "a learner dropped the instructor's database"
    assert graded_class["databases"] == graded_class["databases_before"], "grading must leave no database"
    assert graded_class["roles"] == set(), "the learners' roles must be dropped after grading"


def test_nothing_is_left_running(graded_class):
    assert graded_class["leftover_processes"] == []


def test_report_is_escaped_and_self_contained(graded_class):
    report = (graded_class["out"] / "report.html").read_text()
    assert "<img src=x" not in report and "&lt;img src=x onerror=alert(1)&gt;" in report
    assert "<script>" not in report and "&lt;script&gt;alert(1)&lt;/script&gt;" in report
    assert "http://" not in report and "https://" not in report and "<script" not in report
    assert report.count("<section") == len(graded_class["expected"])
    assert 'class="bar"' in report


def test_run_json_says_how_the_class_was_graded(graded_class):
    out = graded_class["out"]
    run = json.loads((out / "run.json").read_text())
    assert set(run) == {"tier", "database", "learners", "steps", "seconds"} | SHARD_FIELDS
    assert run["completed"] is True and run["reason"] == "" and run["started"] <= run["ended"]
    assert run["tier"] == "none" and run["database"] == "dsn"  # --trusted, on the fixture's server by DSN
    assert run["learners"] == len(graded_class["expected"]) and run["steps"] == [1, 2, 3]
    assert 0 < run["seconds"] < 600
    header = "Confinement: <b>none</b> (not confined: the class was declared trusted); database: <b>dsn</b>"
    assert header in (out / "report.html").read_text()


def test_progress_goes_to_stderr_without_a_tty(graded_class):
    completed = graded_class["completed"]
    assert "grading [" in completed.stderr and "\r" not in completed.stderr
    assert "notes.txt is neither a folder nor a .zip" in completed.stderr
    assert "grading [" not in completed.stdout
    lines = [line for line in completed.stderr.splitlines() if line.startswith("grading [")]
    assert len(lines) == len(graded_class["expected"]), "one line per learner"
    assert lines[-1].startswith("grading [##############################]")


# --- the parts, one at a time ----------------------------------------------------------------------------


def test_discover_names_learners_by_folder_or_zip_and_sorts_them(tmp_path):
    for name in ("bob", "Alice", "carol"):
        (tmp_path / name / "steps").mkdir(parents=True)
    for name in ("dave.zip", "bob.zip", "Eve.ZIP"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "readme.txt").write_text("")
    (tmp_path / ".hidden").mkdir()
    found, skipped = submissions.discover(tmp_path)
    assert [s.name for s in found] == ["Alice", "bob", "bob.zip", "carol", "dave", "Eve"]
    assert skipped == ["readme.txt"]


def test_discover_refuses_a_single_workbook(tmp_path):
    (tmp_path / "steps").mkdir()
    with pytest.raises(submissions.SubmissionError, match="one workbook, not a folder of submissions"):
        submissions.discover(tmp_path)


def test_unpack_finds_the_workbook_in_every_usual_layout(tmp_path):
    (tmp_path / "book" / "steps" / "step1").mkdir(parents=True)
    (tmp_path / "book" / "steps" / "step1" / "main.py").write_text("")
    zip_folder(tmp_path / "book", tmp_path / "top.zip")
    zip_folder(tmp_path / "book", tmp_path / "nested.zip", prefix="my-copy/")
    (tmp_path / "gradescope").mkdir()
    shutil.copy(tmp_path / "nested.zip", tmp_path / "gradescope" / "upload.zip")
    (tmp_path / "wrapped" / "inner").mkdir(parents=True)
    shutil.copytree(tmp_path / "book", tmp_path / "wrapped" / "inner", dirs_exist_ok=True)
    for name, path in [("top", "top.zip"), ("nested", "nested.zip"), ("gs", "gradescope"), ("w", "wrapped")]:
        root = submissions.unpack(submissions.Submission(name, tmp_path / path), tmp_path / f"out-{name}")
        assert (root / "steps" / "step1").is_dir(), name
    assert not any((tmp_path / "gradescope").glob("*/"))  # the zip was unpacked elsewhere


def test_unpack_explains_what_it_cannot_grade(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(submissions.SubmissionError, match="no steps/ folder"):
        submissions.unpack(submissions.Submission("empty", tmp_path / "empty"), tmp_path / "x")
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(submissions.SubmissionError, match="not a readable zip"):
        submissions.unpack(submissions.Submission("broken", tmp_path / "broken.zip"), tmp_path / "y")
    (tmp_path / "book" / "steps").mkdir(parents=True)
    (tmp_path / "book" / "steps" / "big.txt").write_text("x" * 5000)
    zip_folder(tmp_path / "book", tmp_path / "bomb.zip")
    monkeypatch.setattr(submissions, "ZIP_MAX_BYTES", 1000)
    with pytest.raises(submissions.SubmissionError, match="too big to grade"):
        submissions.unpack(submissions.Submission("bomb", tmp_path / "bomb.zip"), tmp_path / "z")


def test_partial_credit_and_its_format():
    task = catalogue.step(1).task(1)  # one check, which fails on the starter
    passing = [scores.Check("test_index_view_says_hello", 1, "passed")]
    assert scores.TaskScore(task, passed=1, total=1, checks=passing).earned == task.points
    assert scores.TaskScore(task, passed=0, total=0).earned == 0
    assert scores.TaskScore(task, passed=3, total=3).done
    assert [scores.format_points(x) for x in (Fraction(8), Fraction(5, 2), Fraction(8, 3), Fraction(0))] == [
        "8", "2.5", "2.67", "0",
    ]  # fmt: skip


def as_role(server: PostgresServer, role: database.LearnerRole) -> PostgresServer:
    return PostgresServer(host=server.host, port=server.port, user=role.name, password=role.password,
                          admin_database=role.admin_database)  # fmt: skip


def test_a_role_can_drop_only_its_own_databases(monkeypatch):
    with (
        throwaway_postgres() as server,
        database.LearnerRole(server) as mine,
        database.LearnerRole(server) as theirs,
    ):
        server.create_database("instructor_db")
        # the provider's DSN path works for such a role: the suites' fixtures create and drop through it
        monkeypatch.setenv(ENV_DSN, mine.dsn())
        with throwaway_postgres() as own:
            name = own.create_database()
            own.execute("CREATE TABLE secret (x int)", name)
            other = as_role(server, theirs)
            for victim in (name, "instructor_db"):
                with pytest.raises(psycopg2.Error, match="must be owner"):
                    other.execute(f'DROP DATABASE "{victim}" WITH (FORCE)')
                with pytest.raises(psycopg2.Error, match="must be owner"):
                    own.execute('DROP DATABASE "instructor_db" WITH (FORCE)')
            with pytest.raises(psycopg2.Error, match="permission denied"):
                other.execute("SELECT * FROM secret", name)
            assert mine.databases() == [name]
            mine.clear()
            assert mine.databases() == [] and theirs.databases() == []
        monkeypatch.delenv(ENV_DSN)
        server.drop_database("instructor_db")
    with throwaway_postgres() as server:
        before = {row[0] for row in server.execute("SELECT datname FROM pg_database")}
        with database.LearnerRole(server) as role:
            as_role(server, role).create_database()  # left behind on purpose: the role's exit drops it
        assert server.execute(f"SELECT count(*) FROM pg_roles WHERE rolname = '{role.name}'") == [(0,)]
        assert {row[0] for row in server.execute("SELECT datname FROM pg_database")} == before


def test_capture_keeps_the_head_and_the_tail():
    read, write = os.pipe()
    capture = running._Capture(read, limit=1000)
    capture.start()
    with os.fdopen(write, "wb") as pipe:
        pipe.write(b"HEAD" + b"x" * 100_000 + b"TAIL")
    capture.join(5)
    text = capture.text()
    assert capture.truncated and capture.total == 100_008
    assert text.startswith("HEAD") and text.endswith("TAIL") and "bytes of output cut" in text
    assert len(text) < 1100


def test_progress_bar_on_a_terminal_and_off_it():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    step = catalogue.step(1)
    for stream in (io.StringIO(), Terminal()):
        bar = progress.Progress(learners=2, steps=1, stream=stream)
        bar.step_done("a", scores.StepGrade.zero(step, "timed out after 5s"))
        bar.step_done("b", scores.StepGrade.zero(step, "x"))
        bar.close()
        text = stream.getvalue()
        assert "2/2 steps, 2/2 learners" in text
        assert ("\r" in text) == isinstance(stream, Terminal)  # redrawn in place only on a terminal
        if isinstance(stream, Terminal):
            assert f"b: step 1 0/{step.points} (x)" in text  # the step just graded, beside the bar
        else:  # a line per learner finished, no more
            assert text.count("\n") == 2 and "grading [###############               ] 1/2 steps" in text


def test_outputs_are_the_same_for_the_same_grades(tmp_path):
    step = catalogue.step(1)
    grades = [
        scores.LearnerGrade("=cmd", [scores.StepGrade.zero(step, "no steps/step1 folder in the submission")]),
        scores.LearnerGrade("zed", [scores.StepGrade(step, [full_marks(t) for t in step.tasks])]),
    ]
    outputs.write_outputs(tmp_path / "a", grades, [step])
    outputs.write_outputs(tmp_path / "b", grades, [step])
    for name in ("gradebook.csv", "report.html", "learners/zed/results.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    rows = (tmp_path / "a" / "gradebook.csv").read_text().splitlines()
    assert rows == ["learner,step1,total", "'=cmd,0,0", f"zed,{step.points},{step.points}"]


def test_run_json_is_written_with_a_record_of_the_run_and_only_then(tmp_path):
    step = catalogue.step(1)
    grades = [scores.LearnerGrade("zed", [scores.StepGrade(step, [full_marks(t) for t in step.tasks])])]
    record = running.RunRecord(tier="uid", database="local", learners=1, steps=[1], seconds=12.5)
    outputs.write_outputs(tmp_path, grades, [step], record)
    assert json.loads((tmp_path / "run.json").read_text()) == {
        "tier": "uid", "database": "local", "learners": 1, "steps": [1], "seconds": 12.5, "snapshot": "",
        "shard": {"index": 1, "count": 1}, "graded": [], "roster": {}, "classroom50": None,
        "started": "", "ended": "", "completed": False, "reason": "",
    }  # fmt: skip
    report = (tmp_path / "report.html").read_text()
    assert "Confinement: <b>uid</b> (a fresh uid per learner and step" in report
    outputs.write_outputs(tmp_path, grades, [step])  # grades without a run: no run.json tells of another
    assert not (tmp_path / "run.json").exists()
    assert "ran <b>" not in (tmp_path / "report.html").read_text()


# --- submissions that are not the learner's own plain files -----------------------------------------------


def test_a_linked_step_folder_is_refused(tmp_path):
    classmate = copy_of_the_workbook(tmp_path / "classmate")
    cheat = copy_of_the_workbook(tmp_path / "cheat")
    shutil.rmtree(cheat / "steps" / "step1")
    (cheat / "steps" / "step1").symlink_to(classmate / "steps" / "step1")
    with pytest.raises(submissions.SubmissionError, match="steps/step1 is a link"):
        submissions.vet_tree(cheat / "steps" / "step1", cheat)
    shutil.rmtree(cheat / "steps")
    (cheat / "steps").symlink_to(ROOT / "solutions")
    with pytest.raises(submissions.SubmissionError, match="steps is a link"):
        submissions.vet_tree(cheat / "steps" / "step1", cheat)


def test_links_inside_the_step_are_followed_only_within_the_submission(tmp_path):
    copy = copy_of_the_workbook(tmp_path / "ann")
    views = package(copy, 2) / "views.py"
    views.unlink()
    views.symlink_to(ROOT / "solutions" / "step2" / catalogue.PACKAGE / "views.py")
    with pytest.raises(submissions.SubmissionError, match="leads out of the submission"):
        submissions.vet_tree(copy / "steps" / "step2", copy)
    views.unlink()
    (copy / "my-views.py").write_text("# mine\n")
    views.symlink_to(copy / "my-views.py")
    submissions.vet_tree(copy / "steps" / "step2", copy)  # inside the submission: followed
    (package(copy, 2) / "inner").symlink_to(copy / "steps")
    with pytest.raises(submissions.SubmissionError, match="link to a folder"):
        submissions.vet_tree(copy / "steps" / "step2", copy)


def test_special_files_and_oversized_steps_are_refused(tmp_path, monkeypatch):
    copy = copy_of_the_workbook(tmp_path / "bo")
    os.mkfifo(package(copy, 1) / "pipe")
    with pytest.raises(submissions.SubmissionError, match="not a plain file"):
        submissions.vet_tree(copy / "steps" / "step1", copy)
    monkeypatch.setattr(submissions, "FOLDER_MAX_FILES", 3)
    with pytest.raises(submissions.SubmissionError, match="too big to grade"):
        submissions.vet_tree(copy / "steps" / "step2", copy)


def test_an_instructors_server_is_refused_for_an_untrusted_class(tmp_path, monkeypatch):
    """A server named by WORKBOOK_PG_DSN is not a private cluster: confined learners could not reach it by
    socket, and its superuser is the instructor's. Grading says so and stops, unless told --trusted."""
    if os.geteuid() != 0 and not shutil.which("bwrap"):
        pytest.skip("no confinement here: grading refuses for that reason first")
    with throwaway_postgres() as server:
        monkeypatch.setenv(ENV_DSN, server.dsn())
        with (
            pytest.raises(running.GradingError, match=r"private PostgreSQL cluster.*--trusted"),
            running.grading_run([catalogue.step(1)], 10.0),
        ):
            pass


def test_a_dead_database_server_is_started_again_and_the_step_graded_once_more(tmp_path):
    """The server dies between steps (the memory killer, say): the next step's first try fails on it, the
    grader starts a fresh cluster and grades that step again, in full."""
    step = catalogue.step(1)
    learner = tmp_path / "ann"
    strip_markers_into(step.tree(ROOT, "solutions"), step.tree(learner, "steps"), step.number)
    with running.grading_run([step], 60.0, trusted=True) as run:
        dead = run.server
        assert dead is not None and dead.kind == "local"
        postmaster = next(
            int(entry.name) for entry in Path("/proc").glob("[0-9]*")
            if (entry / "cmdline").exists()
            and f"\0-p\0{dead.port}\0".encode() in (entry / "cmdline").read_bytes()
        )  # fmt: skip
        os.kill(postmaster, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while run.database_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        graded = running.grade_unit(run, step, learner, run.workspace / "ann-step1")
        assert run.server is not dead and run.database_alive()
        assert graded.earned == step.points and not graded.problems, graded.problems


def test_a_step_the_judge_could_not_check_scores_nothing_whatever_passed():
    """A guard stop or an import failure reports `broken`: no verdict, 0, as `nox -s stepN` shows it."""
    step = catalogue.step(1)
    tests = [
        {"nodeid": f"tests/step1/test_x.py::check_{task.number}", "task": task.number, "outcome": "passed"}
        for task in step.tasks
    ]
    completed = scores.Completed(1, "", 0, False, False, 1.0)
    whole = scores.score_step(step, completed, {"tests": tests, "tasks": {}}, ([], ""))
    broken = scores.score_step(step, completed, {"tests": tests, "broken": "JUDGE GUARD: ..."}, ([], ""))
    assert whole.earned > 0 and broken.earned == 0 and broken.problems
