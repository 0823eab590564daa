"""Benchmark: how long the throwaway PostgreSQL takes to be ready, and `nox -s step3` warm.

Run with `nox -s benchmark`. Prints figures; asserts nothing (timings vary by machine).
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

from workbook.pg import ENV_DSN, describe, throwaway_postgres  # noqa: E402

RUNS = 5


def provider_start_to_ready() -> list[float]:
    """Seconds from entering throwaway_postgres() to the first answered query."""
    timings = []
    for _ in range(RUNS):
        started = time.perf_counter()
        with throwaway_postgres() as server:
            server.execute("SELECT 1")
            timings.append(time.perf_counter() - started)
            where = describe(server)
    print(f"provider: {where}")
    return timings


def nox_step3_warm() -> list[float]:
    """Wall time of `nox -s step3 -- --target solutions` once its environment exists."""
    command = [sys.executable, "-m", "nox", "-s", "step3", "--", "--target", "solutions"]
    env = {k: v for k, v in os.environ.items() if k != ENV_DSN}
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)  # warm-up: builds the venv
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
        timings.append(time.perf_counter() - started)
    return timings


def report(name: str, timings: list[float]) -> None:
    print(
        f"{name}: median {statistics.median(timings):.2f}s, min {min(timings):.2f}s, "
        f"max {max(timings):.2f}s over {len(timings)} runs"
    )


if __name__ == "__main__":
    print(f"machine: {os.cpu_count()} cores")
    report("throwaway PostgreSQL start-to-ready", provider_start_to_ready())
    report("nox -s step3 (warm, reference solution)", nox_step3_warm())
