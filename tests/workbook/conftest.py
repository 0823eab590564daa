"""Fixtures for the tooling's own tests."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from workbook import catalogue
from workbook.grading import workspace
from workbook.starter import strip_markers_into

COPIED = ("workbook", "tests", "steps", "solutions", "config", "pyproject.toml", "README.md")


def copy_parts(into: Path, names: tuple[str, ...] = COPIED, ignore: tuple[str, ...] = ()) -> Path:
    """Copy these top-level files and folders of the workbook into `into` (made if missing)."""
    into.mkdir(parents=True, exist_ok=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".nox", ".workbook", *ignore)
    for name in names:
        source = catalogue.ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=skip)
        else:
            shutil.copy2(source, into / name)
    return into


@pytest.fixture
def workbook_copy(tmp_path: Path) -> Path:
    """A private copy of the whole workbook, for commands that change files."""
    return copy_parts(tmp_path / "workbook-copy", ignore=("backups",))


def copy_of_the_workbook(into: Path) -> Path:
    """What a learner hands in: the workbook as given out, starters and all, without solutions."""
    into.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("steps", "tests", "config"):
        shutil.copytree(catalogue.ROOT / name, into / name, ignore=ignore)
    for name in ("README.md", "pyproject.toml"):
        shutil.copy2(catalogue.ROOT / name, into / name)
    return into


def finish(copy: Path, number: int) -> None:
    """Finish step N the honest way: its reference solution, markers removed."""
    tree = copy / "steps" / f"step{number}"
    shutil.rmtree(tree)
    strip_markers_into(catalogue.ROOT / "solutions" / f"step{number}", tree, number)


def package(copy: Path, number: int) -> Path:
    return copy / "steps" / f"step{number}" / catalogue.PACKAGE


def recorded_checks(step: int, task: int) -> int:
    """How many checks a task has, as tests/baseline.json records them: tests that quote a task's count
    follow the suite as it grows, and integrity keeps the record true."""
    baseline = json.loads((catalogue.ROOT / "tests" / "baseline.json").read_text())
    return baseline[str(step)][str(task)]["checks"]


def run_workbook(copy: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`python -m workbook ARGS` inside a copy, as a learner's nox session would run it."""
    env = {**os.environ, "PYTHONPATH": str(copy)}
    return subprocess.run(
        [sys.executable, "-m", "workbook", *args],
        cwd=copy,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


# --- killing a command's parent (test_grade_signals.py, test_learner_signals.py) ---------------------------

# nox's part: run the command, wait for it, pass no signal on.
STAND_IN = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"
TOKEN_VARIABLE = "WORKBOOK_SIGNAL_TEST"


def processes() -> dict[int, tuple[int, str, int]]:
    """Every process: pid -> (parent pid, state, start time in clock ticks), read from /proc/PID/stat."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
        found[int(entry.name)] = (int(fields[1]), fields[0], int(fields[19]))
    return found


def descendants(root: int, table: dict[int, tuple[int, str, int]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def environ(pid: int) -> dict[str, str]:
    try:
        data = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in data.split(b"\0") if b"=" in item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return "(gone while we looked)"


def live(table: dict[int, tuple[int, str, int]], pid: int) -> bool:
    return pid in table and table[pid][1] not in ("Z", "X")


# Appended to a starter's aiohttpdemo_polls/__init__.py: three ways learner code used to forge a verdict
# when the suites imported it into the judge. In its own process, they can only fool that process.
FORGERY = textwrap.dedent("""

    # --- forgery attempts (the workbook's boundary test) ---
    import os as _os
    import sys as _sys
    try:  # 1. make every pytest report say "passed"
        import _pytest.reports as _reports
        _original = _reports.TestReport.__init__
        def _always_passed(self, *args, **kwargs):
            _original(self, *args, **kwargs)
            self.outcome = "passed"
            self.longrepr = None
        _reports.TestReport.__init__ = _always_passed
    except Exception:
        pass
    try:  # 2. register a plugin on every pytest config in this process, rewriting outcomes
        import gc as _gc
        import pytest as _pytest
        class _Forger:
            @_pytest.hookimpl(wrapper=True)
            def pytest_runtest_makereport(self, item, call):
                report = yield
                report.outcome = "passed"
                return report
        for _object in _gc.get_objects():
            if type(_object).__name__ == "Config" and hasattr(_object, "pluginmanager"):
                _object.pluginmanager.register(_Forger(), "forger")
    except Exception:
        pass
    # 3. write files beside the package that pytest or Python might load in the judge
    _here = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    for _name, _text in {
        "conftest.py": "import _pytest.reports as r\\nr.TestReport.outcome = 'passed'\\n",
        "sitecustomize.py": "import _pytest.reports as r\\nr.TestReport.outcome = 'passed'\\n",
        "pytest_forger.py": "def pytest_runtest_logreport(report):\\n    report.outcome = 'passed'\\n",
        "forger.pth": "import sys; sys.stderr.write('pth loaded')\\n",
    }.items():
        try:
            with open(_os.path.join(_here, _name), "w") as _file:
                _file.write(_text)
        except OSError:
            pass
""")


WORKSPACE_IN_COMMAND = re.compile(r"/[^\s\0]*?/" + re.escape(workspace.PREFIX) + r"[^/\s\0]+")


def of_another_live_grader(command: str) -> bool:
    """Whether a process belongs to another grading run on this machine (a second test session, a
    maintainer's `nox -s grade`): its command line names a workspace whose owner record shows a live grader
    other than this process. A leftover of this test's own run names a workspace that is gone by now."""
    for path in WORKSPACE_IN_COMMAND.findall(command):
        record = workspace._read_record(Path(path), workspace.OWNER_FILE)
        if record is not None and record.get("pid") != os.getpid() and not workspace.abandoned(record):
            return True
    return False
