"""Executes the companion notebooks (nbclient) and checks they are committed without outputs."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from . import catalogue
from .pg import abandoned_clusters

NOTEBOOK_DIR = catalogue.ROOT / "notebooks"
PARAMETER = re.compile(r'^TREE = "steps"', re.MULTILINE)
CELL_TIMEOUT = 300


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def expected_names() -> list[str]:
    """One notebook per step, named after its number and slug: 05-connection-engine.ipynb."""
    return [f"{step.number:02d}-{step.slug}.ipynb" for step in catalogue.steps()]


def with_outputs(paths: list[Path]) -> list[str]:
    """Notebooks that carry outputs or execution counts: they must be committed clean."""
    dirty = []
    for path in paths:
        cells = json.loads(path.read_text())["cells"]
        if any(c.get("outputs") or c.get("execution_count") for c in cells if c["cell_type"] == "code"):
            dirty.append(path.name)
    return dirty


@dataclass
class NotebookFailure:
    notebook: str
    cell: int
    error: str

    def __str__(self) -> str:
        return f"{self.notebook}, cell {self.cell}: {self.error}"


def _leftover_clusters() -> set[Path]:
    """Clusters whose owner has exited: a notebook's kernel is gone once it ran, so anything it left is here.

    Clusters of other live runs (a test suite, a grader) are not counted.
    """
    return set(abandoned_clusters())


def execute(path: Path, tree: str = "solutions") -> NotebookFailure | None:
    """Run every cell of one notebook in a fresh kernel; the first failing cell is reported."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(path, as_version=4)
    parameters = next((c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])), None)
    if parameters is None or not PARAMETER.search(parameters.source):
        return NotebookFailure(path.name, 0, 'no cell tagged "parameters" with the line TREE = "steps"')
    parameters.source = PARAMETER.sub(f'TREE = "{tree}"', parameters.source)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        extra_arguments=["--IPKernelApp.log_level=ERROR"],  # not its warning about TCP on localhost
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute()
    except CellExecutionError as exc:
        index = next((i for i, c in enumerate(notebook.cells) if _cell_failed(c)), -1)
        return NotebookFailure(path.name, index, str(exc).strip().splitlines()[-1])
    return None


def _cell_failed(cell: dict) -> bool:
    return any(output.get("output_type") == "error" for output in cell.get("outputs", []))


def run_all(tree: str = "solutions") -> list[str]:
    """Execute every notebook; return the problems (missing, dirty, failing, or leaving PostgreSQL behind)."""
    paths = notebook_paths()
    problems = [
        f"missing notebook: notebooks/{n}" for n in expected_names() if not (NOTEBOOK_DIR / n).exists()
    ]
    problems += [
        f"{name} is committed with outputs: clear them before committing" for name in with_outputs(paths)
    ]
    before = _leftover_clusters()
    failed: set[str] = set()
    for path in paths:
        print(f"executing {path.name} against {tree}/ ...", flush=True)
        failure = execute(path, tree)
        left = _leftover_clusters() - before
        if left:
            failure = failure or NotebookFailure(
                path.name, -1, f"left PostgreSQL behind: {sorted(map(str, left))}"
            )
        if failure:
            problems.append(str(failure))
            failed.add(path.name)
    print(f"notebooks: {len(paths) - len(failed)} passed, {len(failed)} failed")
    return problems
