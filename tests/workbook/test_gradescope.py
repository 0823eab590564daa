"""The Gradescope autograder: its bundle, and its run_autograder against a fake /autograder tree."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile

from tests.workbook.conftest import recorded_checks
from tests.workbook.test_grade import copy_of_the_workbook, finish, package, points, zip_folder
from workbook import catalogue, environments, gradescope
from workbook.starter import strip_markers_into

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = catalogue.ROOT
STEPS = [catalogue.step(1), catalogue.step(2)]


def test_requirements_are_the_pinned_test_group_with_its_includes():
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]
    wanted = [e for name in ("web", "app", "test") for e in groups[name] if isinstance(e, str)]
    assert gradescope.requirements(ROOT / "pyproject.toml") == wanted
    assert all("==" in requirement for requirement in wanted)


def test_step_ranges_are_written_compactly():
    steps = [catalogue.step(n) for n in (1, 2, 3, 5)]
    assert gradescope.step_range(steps) == "1-3,5"
    assert gradescope.step_range([catalogue.step(2)]) == "2"
    assert catalogue.parse_step_range(gradescope.step_range(steps)) == steps


def test_bundle_holds_the_scripts_suites_and_tooling_but_no_solutions(tmp_path):
    first = gradescope.build_bundle(tmp_path / "a.zip", STEPS, timeout=45)
    second = gradescope.build_bundle(tmp_path / "b.zip", STEPS, timeout=45)
    assert first.read_bytes() == second.read_bytes(), "the same checkout must give the same zip"
    with zipfile.ZipFile(first) as bundle:
        names = bundle.namelist()
        modes = {info.filename: info.external_attr >> 16 for info in bundle.infolist()}
        run_autograder = bundle.read("run_autograder").decode()
        setup = bundle.read("setup.sh").decode()
        bundle.extractall(tmp_path / "source")
    assert {"setup.sh", "run_autograder", "requirements.txt", "pyproject.toml"} <= set(names)
    assert {"workbook/grading/running.py", "workbook/catalogue.toml"} <= set(names)
    assert {"tests/conftest.py", "config/polls.yaml"} <= set(names)
    assert "tests/step1/test_step1_hello.py" in names and "tests/step2/test_step2_routes.py" in names
    assert not [n for n in names if n.startswith(("solutions/", "steps/", "tests/workbook/", "tests/step3/"))]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert modes["setup.sh"] & stat.S_IXUSR and modes["run_autograder"] & stat.S_IXUSR
    assert "--steps 1-2 --timeout 45" in run_autograder
    assert (
        "apt-get install" in setup and "postgresql" in setup and "pgserver" in setup and "docker" not in setup
    )
    for script in ("setup.sh", "run_autograder"):
        check = subprocess.run(
            ["bash", "-n", str(tmp_path / "source" / script)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr


def test_run_autograder_grades_the_submission_into_results_json(tmp_path):
    """Gradescope's layout, rooted in a temp folder: source/ (the unzipped bundle), submission/, venv/."""
    root = tmp_path / "autograder"
    bundle = gradescope.build_bundle(tmp_path / "autograder.zip", STEPS)
    with zipfile.ZipFile(bundle) as unzip:
        unzip.extractall(root / "source")
    shutil.copy2(root / "source" / "run_autograder", root / "run_autograder")
    os.chmod(root / "run_autograder", 0o755)
    python = root / "venv" / "bin" / "python"  # setup.sh's virtualenv, played by this interpreter
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)

    # The learner uploaded a zip of their copy: step 1 finished, step 2 with only its first task done.
    copy = copy_of_the_workbook(tmp_path / "learner")
    finish(copy, 1)
    strip_markers_into(ROOT / "solutions/step2", tmp_path / "step2-solution", 2)
    shutil.copy2(tmp_path / "step2-solution" / catalogue.PACKAGE / "views.py", package(copy, 2) / "views.py")
    (root / "submission").mkdir()
    zip_folder(copy, root / "submission" / "polls.zip", prefix="polls/")

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    completed = subprocess.run(
        ["bash", str(root / "run_autograder")],
        env={**env, gradescope.ENV_ROOT: str(root)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == points(1) + points(2, 1)
    tests = {test["number"]: test for test in results["tests"]}
    assert list(tests) == [f"{s.number}.{t.number}" for s in STEPS for t in s.tasks]
    statuses = [tests[n]["status"] for n in ("1.1", "1.2", "1.3", "2.1", "2.2", "2.3")]
    assert statuses == ["passed"] * 4 + ["failed"] * 2
    assert tests["2.2"]["score"] == 0 and tests["2.2"]["max_score"] == points(2, 2)
    assert (
        f"0/{recorded_checks(2, 2)} checks pass" in tests["2.2"]["output"]
        and "NotImplementedError" in tests["2.2"]["output"]
    )
    assert not (root / "submission" / "polls").exists(), "grading must not unpack into the submission"
    # Confined as `nox -s grade` is, at the strongest tier the machine allows (a uid of its own as root).
    if os.geteuid() == 0:
        assert "Confinement: bwrap+uid" in results["output"] or "Confinement: uid" in results["output"]


def test_a_step_with_an_environment_of_its_own_gets_one_on_gradescope(tmp_path):
    """Step 10's app runs on SQLAlchemy 2 and asyncpg: the bundle carries that group's pins, setup.sh makes
    a venv of them, and run_autograder tells the grader where it is."""
    step10 = catalogue.step(10)
    bundle = gradescope.build_bundle(tmp_path / "autograder.zip", [step10])
    with zipfile.ZipFile(bundle) as unzip:
        pins = unzip.read(f"requirements-{step10.environment}.txt").decode().split()
        run_script = unzip.read("run_autograder").decode()
        setup = unzip.read("setup.sh").decode()
        names = set(unzip.namelist())
    assert any(pin.startswith("sqlalchemy==2.") for pin in pins) and any(
        p.startswith("asyncpg==") for p in pins
    )
    assert not any(pin.startswith(("aiopg", "psycopg2")) for pin in pins)
    variable = environments.variable(step10.environment)
    assert f'export {variable}="$ROOT/venv-{step10.environment}/bin/python"' in run_script
    assert "requirements-*.txt" in setup
    assert {f"tests/step{n}/" for n in step10.carries} <= {
        name[: name.index("/", 6) + 1] for name in names if name.startswith("tests/step")
    }
