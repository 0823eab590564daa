"""Benchmark: warm wall time of `nox -s stepN -- --target solutions` for every step.

Run with `nox -s benchmark`. Each step's environment is built first (not timed), then every step is timed
RUNS times in turn and the median, min and max printed. Asserts nothing: the bound (2 s per step on the
2-core machine the workbook is developed on) is read off these figures, not enforced by a flaky test.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbook import catalogue  # noqa: E402
from workbook.pg import ENV_DSN  # noqa: E402

RUNS = 3


def nox_step(step: catalogue.Step, env: dict[str, str]) -> float:
    command = [sys.executable, "-m", "nox", "-s", step.name, "--", "--target", "solutions"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{step.name} failed on its solution:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return elapsed


def main() -> None:
    env = {k: v for k, v in os.environ.items() if k != ENV_DSN}
    steps = catalogue.steps()
    for step in steps:  # warm-up: environments exist, caches are hot
        nox_step(step, env)
    timings: dict[int, list[float]] = {step.number: [] for step in steps}
    for _ in range(RUNS):
        for step in steps:
            timings[step.number].append(nox_step(step, env))
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"{'session':<10}{'median':>9}{'min':>9}{'max':>9}   (warm, reference solution, {RUNS} runs)")
    for step in steps:
        values = timings[step.number]
        print(f"{step.name:<10}{statistics.median(values):>8.2f}s{min(values):>8.2f}s{max(values):>8.2f}s")
    worst = max(statistics.median(v) for v in timings.values())
    print(f"slowest step median: {worst:.2f}s")


if __name__ == "__main__":
    main()
