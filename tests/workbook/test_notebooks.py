"""The companion notebooks: one per step, committed clean, each driving its app for real."""

from __future__ import annotations

import json

from workbook import catalogue, notebook_runner


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
