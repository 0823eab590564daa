"""Classroom 50: the autograder folder, its autograder.py run as Classroom 50's runner runs it (in a fake
runner: RUNNER_TEMP, the learner's checkout as working directory, the runner's variables), the learner's own
check writing its table to GITHUB_STEP_SUMMARY, and the result/v1 schema that both are checked against."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from tests.workbook.conftest import copy_of_the_workbook, copy_parts, finish, package, recorded_checks
from workbook import catalogue, classroom50
from workbook.grading import contract
from workbook.starter import strip_markers_into

ROOT = catalogue.ROOT
STEPS = [catalogue.step(1), catalogue.step(2)]
COMMITTED = "2026-09-01T10:30:00+02:00"  # the learner's commit, in their time zone


def points(step: int, task: int | None = None) -> int:
    chosen = catalogue.step(step)
    return chosen.points if task is None else chosen.task(task).points


def learner_checkout(into: Path) -> Path:
    """A learner's repository: step 1 finished, step 2 with only its first task done, committed."""
    checkout = copy_of_the_workbook(into)
    finish(checkout, 1)
    strip_markers_into(ROOT / "solutions/step2", into.parent / "step2-solution", 2)
    shutil.copy2(into.parent / "step2-solution" / catalogue.PACKAGE / "views.py", package(checkout, 2))
    git = ["git", "-c", "user.name=Ada", "-c", "user.email=ada@example.org"]
    subprocess.run([*git, "init", "-q"], cwd=checkout, check=True)
    subprocess.run([*git, "add", "-A"], cwd=checkout, check=True)
    dates = {"GIT_COMMITTER_DATE": COMMITTED, "GIT_AUTHOR_DATE": COMMITTED}
    subprocess.run([*git, "commit", "-qm", "work"], cwd=checkout, check=True, env={**os.environ, **dates})
    return checkout


VALID = {
    "schema": "classroom50/result/v1", "classroom": "cs", "assignment": "polls", "submission": "submit/x",
    "commit": "https://example.org/c", "release": "https://example.org/r", "review": "https://example.org/v",
    "datetime": "2026-09-01T08:30:00Z", "score": 1, "max-score": 2,
    "tests": [{"test-name": "a", "passed": False, "score": 1, "max-score": 2, "checks": "1/2"}],
}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.update(schema="classroom50/result/v2"), "schema: must be"),
        (lambda r: r.update(score=1.5), "score: must be integer"),
        (lambda r: r.pop("review"), "review: missing"),
        (lambda r: r.update(datetime="2026-09-01 08:30"), "datetime:"),
        (lambda r: r["tests"][0].update(passed="no"), "tests[0].passed: must be boolean"),
        (lambda r: r["tests"][0].update(score=True), "tests[0].score: must be integer"),
        (lambda r: r.update(classroom=""), "classroom: must not be empty"),
    ],
)
def test_the_v1_schema_and_its_validator_agree_with_jsonschema(change, field):
    rules = contract.schema(contract.RESULT_V1)
    jsonschema.Draft202012Validator.check_schema(rules)
    jsonschema.validate(VALID, rules)
    assert contract.problems(VALID, rules) == []
    broken = copy.deepcopy(VALID)
    change(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, rules)
    with pytest.raises(contract.ContractError, match=rf"^the result: .*{field}".replace("[", r"\[")):
        contract.check(broken, contract.RESULT_V1, "the result")


def test_every_schema_is_valid_json_schema():
    for path in contract.SCHEMAS.glob("*.json"):
        jsonschema.Draft202012Validator.check_schema(json.loads(path.read_text()))


def test_the_autograder_folder_holds_the_script_suites_and_tooling_but_no_solutions(tmp_path):
    size = classroom50.build(tmp_path / "autograder", STEPS, timeout=45)
    names = {p.relative_to(tmp_path / "autograder").as_posix() for p in (tmp_path / "autograder").rglob("*")}
    assert {"autograder.py", "requirements.txt", "pyproject.toml", "workbook/grading/running.py"} <= names
    assert {"tests/conftest.py", "tests/step1", "tests/step2", "config/polls.yaml"} <= names
    assert not [n for n in names if n.startswith(("solutions", "steps", "tests/workbook", "tests/step3"))]
    assert 0 < size < classroom50.PAGES_LIMIT
    script = (tmp_path / "autograder" / "autograder.py").read_text()
    compile(script, "autograder.py", "exec")
    assert '"--steps", "1-2", "--timeout", "45", "--scale", "100"' in script


def test_the_autograder_grades_the_checkout_as_classroom50s_runner_runs_it(tmp_path):
    runner_temp = tmp_path / "_temp"
    bundle = runner_temp / "classroom50-runtime" / "polls"  # where the runner unpacks the assignment's bundle
    classroom50.build(bundle, STEPS)
    python = runner_temp / "workbook-venv" / "bin" / "python"  # the autograder's virtualenv, played by ours
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    checkout = learner_checkout(tmp_path / "work" / "polls-ada")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True).stdout
    summary = tmp_path / "summary.md"
    runner_env = {
        "CLASSROOM": "cs-2026", "ASSIGNMENT": "polls", "SUBMISSION_TAG": "submit/2026-09-01T08-30Z-abc1234",
        "USERNAME": "ada", "OWNER": "ada", "ASSIGNMENT_TYPE": "individual", "GITHUB_SHA": sha.strip(),
        "COMMIT_URL": "https://github.com/org/polls-ada/commit/abc1234", "GITHUB_ACTIONS": "true",
        "RELEASE_URL": "https://github.com/org/polls-ada/releases/tag/submit%2F2026", "REVIEW_URL": "",
        "RUNNER_TEMP": str(runner_temp), "GITHUB_STEP_SUMMARY": str(summary),
        "CLASSROOM50_BUNDLE_DIR": str(bundle), "GITHUB_WORKSPACE": str(checkout),
    }  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | runner_env
    completed = subprocess.run(  # exactly the runner's call: its interpreter, the script, cwd the checkout
        [sys.executable, str(bundle / "autograder.py")], cwd=checkout, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    result = json.loads((checkout / "result.json").read_text())
    jsonschema.validate(result, contract.schema(contract.RESULT_V1))
    assert result["classroom"] == "cs-2026" and result["submission"] == runner_env["SUBMISSION_TAG"]
    assert result["review"] == result["commit"] == runner_env["COMMIT_URL"]  # no review link: the commit
    assert result["datetime"] == "2026-09-01T08:30:00Z"  # the commit's time, in UTC
    assert result["score"] == 100 * (points(1) + points(2, 1)) == sum(t["score"] for t in result["tests"])
    assert result["max-score"] == 100 * (points(1) + points(2))
    tests = result["tests"]
    assert [t["passed"] for t in tests] == [True] * 4 + [False] * 2
    assert tests[4]["test-name"] == f"Step 2, task 2: {catalogue.step(2).task(2).title}"
    assert all(0 <= t["score"] <= t["max-score"] for t in tests)
    body = (checkout / "release-body.md").read_text()  # the runner publishes it and mirrors it to the summary
    assert "| task | result | checks | points |" in body and f"| FAIL | 0/{recorded_checks(2, 2)} |" in body
    assert "NotImplementedError" in body and classroom50.RECORD_NOTE in body
    if os.geteuid() == 0:  # confined as `nox -s grade` is; its files left to the runner's user
        assert "Confinement: bwrap+uid" in body or "Confinement: uid" in body
        assert (checkout / "result.json").stat().st_uid == checkout.stat().st_uid
    assert not summary.exists(), "the runner, not the autograder, writes the job summary"


def test_the_autograder_without_the_runners_variables_fails_as_an_infrastructure_error(tmp_path):
    checkout = copy_of_the_workbook(tmp_path / "checkout")
    env = {k: v for k, v in os.environ.items() if k not in classroom50.IDENTITY}
    command = ["-m", "workbook.classroom50", "autograde", "--workspace", str(checkout), "--steps", "1"]
    completed = subprocess.run(
        [sys.executable, *command],
        env={**env, "PYTHONPATH": str(copy_parts(tmp_path / "bundle", ("workbook", "tests", "config")))},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 1 and "CLASSROOM, ASSIGNMENT" in completed.stderr
    assert not (checkout / "result.json").exists()


def test_the_learners_check_writes_a_table_of_tasks_to_the_job_summary(tmp_path):
    checkout = learner_checkout(tmp_path / "polls-ada")
    copy_parts(checkout, ("workbook",))  # the learner's copy of the workbook has its tooling
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step's summary\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"GITHUB_STEP_SUMMARY": str(summary), "GITHUB_ACTOR": "ada", "GITHUB_WORKSPACE": str(checkout)}
    completed = subprocess.run(
        [sys.executable, "-m", "workbook.classroom50", "check", "--steps", "1-2", "--tier", "none"],
        cwd=checkout, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    text = summary.read_text()
    assert text.startswith("earlier step's summary\n")  # appended, as GitHub expects
    assert f"### ` ada `: {points(1) + points(2, 1)}/{points(1) + points(2)} points" in text
    title = catalogue.step(1).task(1).title.replace("|", "\\|")
    assert f"| Step 1, task 1: {title} | PASS |" in text
    assert text.count("| PASS |") == 4 and text.count("| FAIL |") == 2
    assert "<details><summary>What failed, and why</summary>" in text
    assert "you control this repository" in text
    assert f"{points(1) + points(2, 1)}/{points(1) + points(2)} points." in completed.stdout
