"""Step 10's app runs on an environment of its own (SQLAlchemy 2, asyncpg): found, fingerprinted, carried
into grading's sandbox and runtime, and refused with a clear message when missing or for another Python."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from tests.workbook.conftest import copy_of_the_workbook, copy_parts, finish
from workbook import catalogue, environments, verdicts
from workbook.grading import confinement
from workbook.grading.running import GradingError, grade_submissions, step_environments
from workbook.grading.sandbox import suite_files
from workbook.grading.submissions import discover

STEP10 = catalogue.step(10)


def test_only_step10_has_an_environment_of_its_own():
    assert [step.number for step in catalogue.steps() if step.environment] == [10]
    assert catalogue.environments() == ("sqlalchemy2",)
    assert environments.learner_python(catalogue.step(9)) == sys.executable


def test_the_step10_environment_has_sqlalchemy2_and_asyncpg_and_no_aiopg():
    python = Path(environments.learner_python(STEP10))
    installed = {
        p.name.split("-")[0].lower()
        for p in python.parent.parent.glob("lib/python*/site-packages/*.dist-info")
    }
    assert {"sqlalchemy", "asyncpg", "aiohttp"} <= installed
    assert not installed & {"aiopg", "psycopg2_binary", "psycopg2"}
    version = next(
        p.name for p in python.parent.parent.glob("lib/python*/site-packages/sqlalchemy-*.dist-info")
    )
    assert version.startswith("sqlalchemy-2."), version


def test_a_missing_environment_says_how_to_make_one(monkeypatch, tmp_path):
    monkeypatch.setenv(environments.variable("sqlalchemy2"), str(tmp_path / "nowhere" / "python"))
    with pytest.raises(environments.EnvironmentMissing) as caught:
        environments.learner_python(STEP10)
    message = str(caught.value)
    assert "nox -s step10" in message and "WORKBOOK_PYTHON_SQLALCHEMY2" in message and "nowhere" in message
    with pytest.raises(GradingError, match="nox -s step10"):
        step_environments([STEP10])


def test_grading_refuses_an_environment_for_another_python(monkeypatch, tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\nversion_info = 3.9.18\n")
    monkeypatch.setenv(environments.variable("sqlalchemy2"), str(venv / "bin" / "python"))
    assert not environments.same_version(str(venv / "bin" / "python"))
    with pytest.raises(GradingError, match="not for this Python"):
        step_environments([STEP10])


def test_the_sandbox_of_step10_holds_the_suites_it_carries():
    names = {path.name for path in suite_files(catalogue.ROOT, [STEP10])}
    assert {"step10", "step4", "step5", "step6", "step7", "step8", "step9", "carried.py"} <= names
    assert not names & {"step1", "step2", "step3", "workbook"}


def test_a_change_to_a_carried_suite_or_the_environment_changes_step10s_verdict_key(tmp_path, monkeypatch):
    copy = copy_parts(tmp_path / "copy")
    judge = verdicts.judge_key(copy)
    before = verdicts.step_key(STEP10, copy, judge)
    step9_before = verdicts.step_key(catalogue.step(9), copy, judge)
    carried = copy / "tests" / "step7" / "test_step7_voting.py"
    carried.write_text(carried.read_text() + "\n# an edit\n")
    assert verdicts.step_key(STEP10, copy, judge) != before
    assert verdicts.step_key(catalogue.step(9), copy, judge) == step9_before
    # Another environment (here: none found) is another verdict.
    edited = verdicts.step_key(STEP10, copy, judge)
    monkeypatch.setenv(environments.variable("sqlalchemy2"), str(tmp_path / "gone" / "python"))
    assert verdicts.step_key(STEP10, copy, judge) != edited


# Appended to a finished step 10's db.py: as the learner's app is imported (in the harness, under the
# step environment's interpreter), try to plant code where later runs or the grader would load it.
PLANTING = """

def _plant():
    import os, site, sys
    import sqlalchemy
    targets = [sqlalchemy.__file__, sys.argv[0]]  # a hard-linked module of the runtime; the harness script
    targets += [os.path.join(folder, "zz_planted.pth") for folder in site.getsitepackages()]
    targets += {real!r}  # the step environment and the checkout as they are on the grader's disk
    for target in targets:
        try:
            with open(target, "a") as handle:
                handle.write("\\nimport os; os.environ['PLANTED'] = '1'\\n")
        except OSError:
            pass


_plant()
"""


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0 and not shutil.which("bwrap"), reason="no confinement on this machine")
def test_step10_is_graded_confined_on_its_own_environment(tmp_path):
    """A finished step 10 gets every point and the untouched one none, at the strongest tier here: the
    runtime holds the step environment's packages beside the judge's, on the one linked interpreter.

    A third learner's finished step 10 also tries, as it is imported, to write into the runtime's
    hard-linked packages (the same files as the step environment's, on the grader's disk), a .pth in its
    site-packages, the harness script, and the step environment and checkout by their real paths. It gets
    its code's points and no more, and nothing of the grader's changed.
    """
    tier, _ = confinement.detect_tier(None)
    prefix = Path(environments.learner_python(STEP10)).parent.parent
    site_packages = next(prefix.glob("lib/python*/site-packages"))
    real = [str(site_packages / "sqlalchemy" / "__init__.py"), str(site_packages / "zz_planted.pth"),
            str(catalogue.ROOT / "workbook" / "learner_side" / "harness.py")]  # fmt: skip
    watched = {
        "sqlalchemy": site_packages / "sqlalchemy",
        "learner_side": catalogue.ROOT / "workbook" / "learner_side",
    }
    before = {name: tree_digest(folder) for name, folder in watched.items()}
    listing = sorted(p.name for p in site_packages.iterdir())
    submissions = tmp_path / "class"
    finish(copy_of_the_workbook(submissions / "done"), 10)
    copy_of_the_workbook(submissions / "untouched")
    planter = copy_of_the_workbook(submissions / "planter")
    finish(planter, 10)
    db = planter / "steps" / "step10" / catalogue.PACKAGE / "db.py"
    db.write_text(db.read_text() + PLANTING.format(real=real))
    found, _ = discover(submissions)
    grades = grade_submissions(found, [STEP10], jobs=2, timeout=120, private=[submissions])
    totals = {grade.name: grade.total for grade in grades}
    problems = {grade.name: grade.all_problems() for grade in grades}
    full = Fraction(STEP10.points)
    assert totals == {"done": full, "untouched": 0, "planter": full}, (tier, problems)
    assert {name: tree_digest(folder) for name, folder in watched.items()} == before
    assert sorted(p.name for p in site_packages.iterdir()) == listing
