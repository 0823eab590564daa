"""`nox -s status` remembers verdicts, and must never show one that an edit has made stale.

Each test finishes steps 1 and 2 in a private copy and counts which steps status really runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.workbook.conftest import finish, run_workbook
from workbook import learner


@pytest.fixture
def finished(workbook_copy: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy with steps 1 and 2 done; its judge imports the copy's own workbook package."""
    finish(workbook_copy, 1)
    finish(workbook_copy, 2)
    monkeypatch.setenv("PYTHONPATH", str(workbook_copy))
    return workbook_copy


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[set[int]]:
    """The step numbers each status call really ran, one set per call."""
    calls: list[set[int]] = []
    real = learner.run_many

    def counted(jobs, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls[-1].update(step.number for step, _ in jobs)
        return real(jobs, *args, **kwargs)

    monkeypatch.setattr(learner, "run_many", counted)
    return calls


def status(copy: Path, runs: list[set[int]]) -> dict[str, str]:
    """Run status in the copy; its table's lines by step number."""
    runs.append(set())
    text = learner.status(root=copy)
    return {line.split()[0]: line for line in text.splitlines() if line[:1].isdigit()}


def edit_keeping_size_and_mtime(path: Path, old: str, new: str) -> None:
    """The edit an mtime-based cache would miss: same size, and the old times put back."""
    assert len(old) == len(new)
    before = path.stat()
    path.write_text(path.read_text().replace(old, new))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size


def test_a_warm_status_runs_nothing_and_a_same_size_edit_is_still_seen(finished, runs):
    first = status(finished, runs)
    assert runs[-1] == {1, 2} and "failing" not in first["1"] + first["2"], first
    assert status(finished, runs) == first and runs[-1] == set(), "nothing changed: nothing should run"

    main = finished / "steps/step1/aiohttpdemo_polls/main.py"
    edit_keeping_size_and_mtime(main, "Hello Aiohttp!", "Hello Aiohttq!")
    after = status(finished, runs)
    assert runs[-1] == {1}, "only the edited step runs again"
    assert "1:failing" in after["1"], after

    (finished / ".workbook/verdicts/step2.json").write_text('{"key": "forged", "report": []}')
    status(finished, runs)
    assert runs[-1] == {2}, "a malformed remembered verdict means running the step again"


@pytest.mark.parametrize(
    ("edited", "rerun"),
    [("steps/step2/aiohttpdemo_polls/views.py", {2}), ("tests/step2", {2}), ("config/polls.yaml", {1, 2})],
)
def test_an_edit_of_what_a_step_depends_on_runs_it_again(finished, runs, edited, rerun):
    status(finished, runs)
    path = finished / edited
    if path.is_dir():  # a new check in a suite
        path = path / "test_step2_extra.py"
        path.write_text("def test_one_more_check():\n    assert True\n")
    else:
        path.write_text(path.read_text() + "\n# edited\n")
    status(finished, runs)
    assert runs[-1] == rerun


def test_a_check_remembers_its_verdict_for_status(finished, runs):
    result = run_workbook(finished, "check", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    status(finished, runs)
    assert runs[-1] == {2}, "step 1 was just checked: status reuses that verdict"
