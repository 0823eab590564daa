"""A graded step receives only part of tests/ (its suites, those it carries, the top-level helpers): every
module its suites import must be in that part, or the step does not even collect in the grader's sandbox
while it passes everywhere else (CI once graded step 7's solution 0 for importing a helper of step 6)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from workbook import catalogue
from workbook.grading.sandbox import suite_files

MODULE_NAME = re.compile(r"tests(\.\w+)+")


def modules_named(source: Path) -> set[str]:
    """The tests.* modules a file imports, by statement or by name (carried checks import a string)."""
    named = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            named.add(node.module)
        elif isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and MODULE_NAME.fullmatch(node.value)
        ):
            named.add(node.value)
    return {name for name in named if name.split(".")[0] == "tests"}


@pytest.mark.parametrize("step", catalogue.steps(), ids=lambda step: step.name)
def test_a_steps_suites_import_only_what_its_sandbox_holds(step):
    shipped = suite_files(catalogue.ROOT, [step])
    tests = catalogue.ROOT / "tests"
    sources = [
        p
        for entry in shipped
        for p in ([entry] if entry.is_file() else entry.rglob("*.py"))
        if p.suffix == ".py"
    ]
    missing = {}
    for source in sources:
        for module in modules_named(source):
            parts = module.split(".")[1:]
            if not parts:
                continue
            top = tests / parts[0]
            if top.with_suffix(".py").exists():
                top = top.with_suffix(".py")
            if top not in shipped:
                missing.setdefault(module, []).append(str(source.relative_to(catalogue.ROOT)))
    assert not missing, (
        f"the sandbox of {step.name} lacks modules its suites import: {missing}. Move shared helpers to a "
        "top-level module of tests/ (as tests/pages.py), or list the suite among the step's carried suites."
    )


def test_the_check_sees_an_import_of_another_steps_suite(tmp_path):
    source = tmp_path / "test_x.py"
    source.write_text(
        "from tests.step6.test_step6_templates import page\nCARRIED = 'tests.step5.test_step5_x'\n"
    )
    assert modules_named(source) == {"tests.step6.test_step6_templates", "tests.step5.test_step5_x"}
