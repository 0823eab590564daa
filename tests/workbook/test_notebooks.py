"""The companion notebooks: one per step, committed clean, each driving its app for real."""

from __future__ import annotations

import json

from workbook import catalogue, notebook_runner
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
    notebook = {
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
    path = tmp_path / "broken.ipynb"
    path.write_text(json.dumps(notebook))
    before = set(abandoned_clusters())
    failure = notebook_runner.execute(path, tree="solutions")
    assert failure is not None and failure.cell == 2 and "boom" in failure.error, failure
    assert set(abandoned_clusters()) - before == set(), "the notebook's PostgreSQL was left behind"
