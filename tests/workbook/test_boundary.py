"""The trust boundary: the judge never loads the learner's code, and code in the learner's package that
attacks pytest cannot change a verdict (issue: suites that judge from outside)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workbook.conftest import FORGERY
from workbook import catalogue
from workbook.runner import run_step
from workbook.starter import strip_markers_into

GUARD_SCRIPT = """
import sys
from pathlib import Path
from workbook.judge import guard
tree = Path(sys.argv[1])
guard.install(tree, "aiohttpdemo_polls")
sys.path.insert(0, str(tree))
try:
    {attempt}
except guard.JudgeGuardError as exc:
    print("FIRED", exc)
    sys.exit(0)
print("NOT FIRED")
sys.exit(1)
"""

ATTEMPTS = {
    "import": "import aiohttpdemo_polls.main",
    "import-by-path": "import importlib.util as u; s = u.spec_from_file_location('x', tree / "
    "'aiohttpdemo_polls' / 'main.py'); u.module_from_spec(s); s.loader.exec_module(u.module_from_spec(s))",
    "template-render": "import jinja2; env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(tree / "
    "'aiohttpdemo_polls' / 'templates'))); env.get_template('index.html').render()",
    "exec-source": "exec(compile((tree / 'aiohttpdemo_polls' / 'db.py').read_text(), "
    "str(tree / 'aiohttpdemo_polls' / 'db.py'), 'exec'))",
    "unpickle": "import pickle; pickle.loads(b'\\x80\\x04\\x95\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00"
    "\\x8c\\x11aiohttpdemo_polls\\x94\\x8c\\x03app\\x94\\x93\\x94.')",
}


@pytest.mark.parametrize("attempt", sorted(ATTEMPTS))
def test_guard_fires(attempt):
    """Each way of loading the learner's code into the judge is stopped by the audit hook."""
    tree = catalogue.ROOT / "solutions" / "step9"
    script = GUARD_SCRIPT.format(attempt=ATTEMPTS[attempt])
    result = subprocess.run(
        [sys.executable, "-c", script, str(tree)], capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(catalogue.ROOT)},
    )  # fmt: skip
    assert result.returncode == 0 and "FIRED judge guard" in result.stdout, result.stdout + result.stderr


def test_guard_leaves_stylesheets_and_the_judge_alone(tmp_path):
    """Reading a static file of the tree (not code, not a template) is allowed; the judge still works."""
    tree = catalogue.ROOT / "solutions" / "step9"
    script = GUARD_SCRIPT.format(
        attempt="(tree / 'aiohttpdemo_polls' / 'static' / 'style.css').read_bytes(); import json, aiohttp"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tree)], capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(catalogue.ROOT)},
    )  # fmt: skip
    assert result.returncode == 1 and "NOT FIRED" in result.stdout, result.stdout + result.stderr


SNEAKY_TEST = """
import sys
import pytest

@pytest.mark.task(1)
def test_sneaks_the_learner_code_in(tree):
    sys.path.insert(0, str(tree))
    import aiohttpdemo_polls.main  # noqa: F401
"""


def test_a_suite_that_imports_the_tree_gives_no_verdict(tmp_path):
    """The guard is on in real suite runs: a test that imports the tree makes the run fail loudly."""
    root = tmp_path / "root"
    (root / "tests" / "step1").mkdir(parents=True)
    shutil.copy(catalogue.ROOT / "tests" / "conftest.py", root / "tests" / "conftest.py")
    shutil.copy(catalogue.ROOT / "pyproject.toml", root / "pyproject.toml")
    (root / "tests" / "__init__.py").write_text("")
    (root / "tests" / "step1" / "test_sneaky.py").write_text(SNEAKY_TEST)
    result = run_step(catalogue.step(1), "solutions", root=root, env={"PYTHONPATH": f"{catalogue.ROOT}"})
    assert "JUDGE GUARD" in result.output, result.output
    assert result.returncode != 0 and result.points == 0, result.output
    assert "judge guard" in result.broken


def test_every_suite_runs_with_the_guard_on():
    result = run_step(catalogue.step(1), "solutions")
    assert result.report.get("guard") is True, result.report


# --- forging a verdict from inside the learner's package ----------------------------------------------------


def task_counts(result) -> dict[str, tuple[int, int]]:
    return {str(t.number): result.task_counts(t.number) for t in result.step.tasks}


@pytest.mark.parametrize("number", [s.number for s in catalogue.steps()])
def test_forging_from_the_package_changes_nothing(number, tmp_path):
    """A starter that attacks pytest from its __init__.py fails exactly as the untouched starter does."""
    step = catalogue.step(number)
    honest, forger = tmp_path / "honest", tmp_path / "forger"
    for copy in (honest, forger):
        shutil.copytree(step.tree(catalogue.ROOT, "steps"), step.tree(copy, "steps"))
    init = step.tree(forger, "steps") / catalogue.PACKAGE / "__init__.py"
    init.write_text(init.read_text() + FORGERY)
    expected, got = run_step(step, str(honest)), run_step(step, str(forger))
    assert got.points == expected.points == 0, got.output
    assert task_counts(got) == task_counts(expected), (task_counts(expected), task_counts(got), got.output)
    written = step.tree(forger, "steps") / "conftest.py"
    assert written.exists(), "the forgery did run in the learner's process (it wrote its files)"
    assert json.dumps(got.report.get("tests"))  # a report came from the judge


# --- failures that keep teaching --------------------------------------------------------------------------


def finished_step(into: Path, number: int) -> Path:
    """A workbook copy holding step N's reference solution (markers removed) as the learner's tree."""
    tree = catalogue.step(number).tree(into, "steps")
    strip_markers_into(catalogue.ROOT / "solutions" / f"step{number}", tree, number)
    return tree / catalogue.PACKAGE


def test_an_import_error_is_reported_once_with_file_and_line(tmp_path):
    main = finished_step(tmp_path, 1) / "main.py"
    main.write_text(main.read_text() + "\nroutes = undefined_routes\n")
    line = main.read_text().splitlines().index("routes = undefined_routes") + 1
    result = run_step(catalogue.step(1), str(tmp_path))
    assert f"aiohttpdemo_polls/main.py, line {line}" in result.broken, result.output
    assert "NameError" in result.broken and result.points == 0
    assert result.output.count("main.py, line") == 1, result.output


def test_a_learner_process_that_dies_costs_only_its_check(tmp_path):
    """A view that ends its process fails that check with a clear reason; the next check gets a new one."""
    main = finished_step(tmp_path, 1) / "main.py"
    source = main.read_text()
    main.write_text(source.replace('    return web.Response(text="Hello Aiohttp!")',
                                   '    import os\n    os._exit(7)'))  # fmt: skip
    result = run_step(catalogue.step(1), str(tmp_path))
    messages = {t["nodeid"].split("::")[-1]: t for t in result.report["tests"]}
    died = messages["test_index_view_says_hello"]
    assert died["outcome"] == "failed" and "exited with status 7" in died["message"], died
    # Checks that do not reach the view still pass, each with a fresh learner process.
    assert messages["test_other_paths_are_not_found"]["outcome"] == "passed", result.output
    assert messages["test_main_passes_its_host_and_port_to_run_app"]["outcome"] == "passed", result.output


FORGED_PLUGIN = """
import pytest

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    report.outcome = "passed"
    report.longrepr = None
    return report
"""

ROOT_FORGERY = f"""
import os as _os
_root = _os.path.dirname(_os.path.dirname(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))))
for _name, _text in {{
    "conftest.py": {FORGED_PLUGIN!r},
    "forger_plugin.py": {FORGED_PLUGIN!r},
    "pytest.ini": "[pytest]\\npythonpath = .\\nasyncio_mode = auto\\naddopts = -p forger_plugin\\n",
}}.items():
    with open(_os.path.join(_root, _name), "w") as _file:
        _file.write(_text)
"""


def test_files_planted_at_the_workbooks_root_are_not_read(workbook_copy):
    """A conftest.py, pytest.ini or setup.cfg that learner code writes at the top of the workbook (it can,
    in `nox -s stepN`, which runs as the learner) is not loaded by the next judge."""
    step = catalogue.step(1)
    init = step.tree(workbook_copy, "steps") / catalogue.PACKAGE / "__init__.py"
    init.write_text(init.read_text() + ROOT_FORGERY)
    env = {"PYTHONPATH": str(workbook_copy)}
    first = run_step(step, "steps", root=workbook_copy, env=env)
    assert (workbook_copy / "pytest.ini").exists(), "the forgery did run in the learner's process"
    second = run_step(step, "steps", root=workbook_copy, env=env)
    for result in (first, second):
        assert result.points == 0 and not any(result.task_done(t.number) for t in step.tasks), result.output
