"""The GitHub Actions workflows the workbook ships: they pass actionlint, and the README shows exactly the
sharded-grading workflow that is checked."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from workbook import catalogue

ROOT = catalogue.ROOT
WORKFLOWS = [ROOT / ".github" / "workflows" / "check.yml", ROOT / "docs" / "ci" / "grade-shards.yml"]


def actionlint() -> str:
    """The actionlint binary of the `lint` dependency group: beside this interpreter, else on PATH."""
    found = Path(sys.executable).with_name("actionlint")
    if found.is_file():
        return str(found)
    on_path = shutil.which("actionlint")
    assert on_path, "actionlint is missing: install the lint dependency group (nox -s tests does)"
    return on_path


def test_every_workflow_passes_actionlint():
    completed = subprocess.run(
        [actionlint(), "-no-color", *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_the_readme_shows_the_sharded_grading_workflow_as_it_is_checked():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    assert (ROOT / "docs" / "ci" / "grade-shards.yml").read_text() in blocks
