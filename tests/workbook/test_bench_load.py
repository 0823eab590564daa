"""bench/load.py --compare end to end, at a size that only proves the plumbing: both apps are served and
driven, every kind gets a ratio, no vote goes missing, and RESULTS.md keeps the sections measured by hand.
The figures themselves mean nothing at twenty requests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from workbook import catalogue, environments

KINDS = ("GET /", "GET /poll/{id}", "POST /poll/{id}/vote")
RATIO = re.compile(r"\d+\.\d\dx")


def test_compare_drives_both_steps_and_prints_a_ratio_per_kind(tmp_path: Path) -> None:
    try:
        environments.learner_python(catalogue.step(10))
    except environments.EnvironmentMissing as exc:
        pytest.skip(f"step 10's app cannot run here: {exc}")
    results = tmp_path / "RESULTS.md"  # never the real one: a test must not rewrite the recorded figures
    shutil.copy(catalogue.ROOT / "bench" / "RESULTS.md", results)
    small = ["--rounds", "1", "--requests", "20", "--warmup", "5", "--concurrency", "4"]
    run = subprocess.run(
        [sys.executable, "bench/load.py", "--compare", "9", "10", *small, "--results", str(results)],
        cwd=catalogue.ROOT,
        env={**os.environ, "PYTHONPATH": str(catalogue.ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, f"exit status {run.returncode}\n{run.stdout}\n{run.stderr}"

    rows: dict[tuple[str, str], list[str]] = {}
    for line in run.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in KINDS:
            rows[cells[0], cells[1]] = cells[2:]
    for kind in KINDS:
        for app in ("step9", "step10"):
            count, errors = rows[kind, app][:2]
            assert (count, errors) == ("20", "0"), f"{kind} on {app}: {rows[kind, app]}"
        ratios = rows[kind, "step10/step9"][2:]
        assert len(ratios) == 3 and all(RATIO.fullmatch(r) for r in ratios), f"{kind}: {ratios}"
    for app in ("step9", "step10"):  # twenty measured votes and five warm-up ones, every one counted
        votes = (
            rf"^Votes {app}, warm-up included: accepted \(302\) 25; counted by PostgreSQL 25; lost votes: 0$"
        )
        assert re.search(votes, run.stdout, re.M), run.stdout

    recorded = results.read_text()
    assert recorded.count("# Load comparison\n") == 1
    assert "| GET / | step10/step9 |" in recorded
    for kept in ("# Load benchmark\n", "# Grading benchmark\n", "# Watch and status\n"):
        assert kept in recorded, f"{kept.strip()!r} was dropped from RESULTS.md"
