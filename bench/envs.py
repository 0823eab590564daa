"""Benchmark: the disk the workbook's environments take, as `du -L` counts it (links followed).

Every learner-facing session (stepN, status, hint, watch, reset, solution, serve) shares `.nox/workbook`;
the bound is 300 MB for all a learner's runs create. Maintainer sessions (tests, lint, browser, notebooks,
benchmark) have their own and are listed apart. Run with `python bench/envs.py`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEARNER_ENVS = ("workbook", ".cache")  # the shared environment and uv's small cache beside it
GOAL_MB = 300


def megabytes(path: Path) -> int:
    """`du -sLm`: coreutils counts each file once, following links, which is what the bound means."""
    done = subprocess.run(["du", "-sLm", str(path)], capture_output=True, text=True, check=False)
    return int(done.stdout.split()[0]) if done.returncode == 0 and done.stdout else 0


def main() -> None:
    envs = ROOT / ".nox"
    if not envs.is_dir():
        print("environments: none yet (run a nox session first)")
        return
    sizes = {entry.name: megabytes(entry) for entry in sorted(envs.iterdir()) if entry.is_dir()}
    if "workbook" not in sizes:
        print("learner environment (.nox/workbook): not created yet (run `nox -s status` first)")
    learner = sum(size for name, size in sizes.items() if name in LEARNER_ENVS)
    verdict = "met" if learner <= GOAL_MB else "NOT met"
    print(f"learner environments (.nox/workbook): {learner} MB (goal: at most {GOAL_MB} MB, {verdict})")
    others = ", ".join(f"{name} {size} MB" for name, size in sizes.items() if name not in LEARNER_ENVS)
    print(f"maintainer environments: {others or 'none'}")


if __name__ == "__main__":
    main()
