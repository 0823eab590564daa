"""The companion notebooks: one per step, committed clean, each driving its app for real."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

from workbook import catalogue, environments, notebook_runner
from workbook.notebook import StepPythonFailed, Workbench
from workbook.pg import abandoned_clusters


def test_one_notebook_per_step_named_after_it():
    present = {path.name for path in notebook_runner.notebook_paths()}
    assert present == set(notebook_runner.expected_names())


def test_notebooks_are_committed_without_outputs():
    assert notebook_runner.with_outputs(notebook_runner.notebook_paths()) == []


def test_every_notebook_has_the_tree_parameter_and_closes_its_bench():
    for path in notebook_runner.notebook_paths():
        cells = json.loads(path.read_text())["cells"]
        parameters = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(parameters) == 1, f"{path.name}: expected one cell tagged 'parameters'"
        assert notebook_runner.PARAMETER.search("".join(parameters[0]["source"])), path.name
        code = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert "await bench.close()" in code, f"{path.name} must stop what it started"
        step = int(path.name[:2])
        assert f"Workbench(step={step}," in code, f"{path.name} must drive step {step}'s app"


def test_a_dirty_notebook_is_caught(tmp_path):
    source = notebook_runner.notebook_paths()[0]
    data = json.loads(source.read_text())
    code = next(c for c in data["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}]
    dirty = tmp_path / source.name
    dirty.write_text(json.dumps(data))
    assert notebook_runner.with_outputs([dirty]) == [source.name]


def test_expected_names_follow_the_catalogue():
    assert notebook_runner.expected_names()[0] == f"01-{catalogue.step(1).slug}.ipynb"


def notebook_of(cells: list[tuple[str, list[str]]]) -> dict:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [
            {
                "cell_type": "code",
                "id": f"c{i}",
                "metadata": {"tags": tags},
                "source": source,
                "outputs": [],
                "execution_count": None,
            }
            for i, (source, tags) in enumerate(cells)
        ],
    }


def test_a_failing_cell_is_named_and_the_database_still_goes(tmp_path):
    """The kernel's exit closes what a notebook opened, even when a cell fails before `bench.close()`."""
    root = str(catalogue.ROOT)
    cells = [
        ('TREE = "steps"', ["parameters"]),
        (
            f"import sys\nsys.path.insert(0, {root!r})\nfrom workbook.notebook import Workbench\n"
            "bench = Workbench(step=5, tree=TREE)\nconfig = bench.config()",
            [],
        ),
        ("raise ValueError('boom')", []),
    ]
    notebook = notebook_of(cells)
    path = tmp_path / "broken.ipynb"
    path.write_text(json.dumps(notebook))
    before = set(abandoned_clusters())
    failure = notebook_runner.execute(path, tree="solutions")
    assert failure is not None and failure.cell == 2 and "boom" in failure.error, failure
    assert set(abandoned_clusters()) - before == set(), "the notebook's PostgreSQL was left behind"


CONNECTIONS = (
    "SELECT count(*) AS n FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


async def test_a_step_with_its_own_environment_runs_its_code_and_its_app_on_that_python(monkeypatch, capsys):
    """Step 10's app cannot be imported by the kernel (SQLAlchemy 1.4 there): it runs on the step's Python."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # the Workbench puts the step's tree on it
    bench = Workbench(step=10, tree="solutions")
    assert bench.python == environments.learner_python(catalogue.step(10)) != sys.executable
    with pytest.raises(RuntimeError, match=r"bench\.serve"):
        bench.module("main")
    with pytest.raises(RuntimeError, match=r"bench.config\(\) first"):
        bench.run_python("print('hello')")
    try:
        config = bench.config()
        capsys.readouterr()
        bench.run_python(
            "import sqlalchemy\n"
            "from aiohttpdemo_polls.settings import get_config\n"
            "print(sqlalchemy.__version__, get_config()['postgres']['database'])"
        )
        version, database = capsys.readouterr().out.split()
        assert version.startswith("2.") and database == config["postgres"]["database"]
        with pytest.raises(StepPythonFailed, match=r"^ZeroDivisionError: division by zero \(exit status 1"):
            bench.run_python("1 / 0")
        with pytest.raises(StepPythonFailed, match="DeprecationWarning: warnings are errors"):
            bench.run_python("import warnings\nwarnings.warn('warnings are errors', DeprecationWarning)")

        client = await bench.serve(config)
        async with client.get("/poll/1") as response:
            assert response.status == 200 and "What&#39;s new?" in await response.text()
        assert bench.rows(CONNECTIONS)[0]["n"] == config["postgres"]["minsize"]
        await client.close()
        assert client.process.returncode is not None
        # The app has exited; PostgreSQL ends each backend of its closed connections a moment later.
        for _ in range(200):
            if not bench.rows(CONNECTIONS)[0]["n"]:
                break
            await asyncio.sleep(0.05)
        assert bench.rows(CONNECTIONS)[0]["n"] == 0, "the app's cleanup disposes of its engine"
    finally:
        await bench.close()


def test_a_failing_step_python_cell_is_named_and_the_app_and_database_still_go(tmp_path):
    """%%step_python runs a cell on the step's Python; the kernel's exit stops the app's process too."""
    root = str(catalogue.ROOT)
    pid_file = tmp_path / "app.pid"
    notebook = notebook_of([
        ('TREE = "steps"', ["parameters"]),
        (
            f"import sys\nsys.path.insert(0, {root!r})\nfrom workbook.notebook import Workbench\n"
            "bench = Workbench(step=10, tree=TREE)\nconfig = bench.config()\n"
            "client = await bench.serve(config)\n"
            f"open({str(pid_file)!r}, 'w').write(str(client.process.pid))",
            [],
        ),
        ("%%step_python\nimport sqlalchemy\nprint(sqlalchemy.__version__)", []),
        ("%%step_python\nraise SystemExit('stopped on purpose')", []),
    ])  # fmt: skip
    path = tmp_path / "step10.ipynb"
    path.write_text(json.dumps(notebook))
    before = set(abandoned_clusters())
    failure = notebook_runner.execute(path, tree="solutions")
    assert failure is not None and failure.cell == 3, failure
    assert "StepPythonFailed" in failure.error, failure
    assert "stopped on purpose (exit status 1)" in failure.error, failure
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)
    assert set(abandoned_clusters()) - before == set(), "the notebook's PostgreSQL was left behind"
