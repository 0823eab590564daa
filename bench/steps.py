"""Benchmark: warm wall time of `nox -s stepN -- --target solutions` for every step, and its CPU time.

Run with `nox -s benchmark`. Each step's environment is built first (not timed), then every step is timed
RUNS times in turn and the median, min and max printed. Asserts nothing: the bounds (2 s per step, 3 s for
step 10, on an idle 2-core machine) are read off these figures, not enforced by a flaky test. The CPU time
is that of every process of the run (nox, the judge, the learner's processes, PostgreSQL): on a machine
busy with other work the wall time grows, the CPU time barely, so it is what compares two runs there.
"""

from __future__ import annotations

import os
import resource
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


def children_cpu() -> float:
    """CPU seconds (user and system) of every child process waited for so far, and of theirs."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def nox_step(step: catalogue.Step, env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run. The CPU time is of the processes their parents waited for (PostgreSQL's
    backends by the postmaster, the postmaster and the harness by the judge): all but a process whose parent
    was killed first, such as the learner's launcher, a few hundredths of a second."""
    command = [sys.executable, "-m", "nox", "-s", step.name, "--", "--target", "solutions"]
    cpu, started = children_cpu(), time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    elapsed, cpu = time.perf_counter() - started, children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"{step.name} failed on its solution:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return elapsed, cpu


def main() -> None:
    env = {k: v for k, v in os.environ.items() if k != ENV_DSN}
    steps = catalogue.steps()
    for step in steps:  # warm-up: environments exist, caches are hot
        nox_step(step, env)
    timings: dict[int, list[float]] = {step.number: [] for step in steps}
    cpu: dict[int, list[float]] = {step.number: [] for step in steps}
    load = os.getloadavg()[0]
    for _ in range(RUNS):
        for step in steps:
            elapsed, used = nox_step(step, env)
            timings[step.number].append(elapsed)
            cpu[step.number].append(used)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, load average (1 min) "
          f"{load:.2f} at the start and {os.getloadavg()[0]:.2f} at the end")  # fmt: skip
    print(f"{'session':<10}{'median':>9}{'min':>9}{'max':>9}{'CPU':>9}   (warm, reference solution, {RUNS} "
          "runs; CPU: median, every process)")  # fmt: skip
    for step in steps:
        values = timings[step.number]
        print(f"{step.name:<10}{statistics.median(values):>8.2f}s{min(values):>8.2f}s{max(values):>8.2f}s"
              f"{statistics.median(cpu[step.number]):>8.2f}s")  # fmt: skip
    worst = max(statistics.median(v) for v in timings.values())
    print(f"slowest step median: {worst:.2f}s")


if __name__ == "__main__":
    main()
