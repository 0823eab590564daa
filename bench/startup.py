"""Benchmark: how long the throwaway PostgreSQL takes to be ready, and `nox -s step3` warm.

Run with `nox -s benchmark` (or `python bench/startup.py --provider-only` to skip the nox part). Prints
figures; asserts nothing (timings vary by machine). The provider is measured cold: every run makes a new
cluster and stops it, nothing is kept running in between. The first run builds the cluster template in an
empty cache of its own; it is reported apart, as the one-off cost it is.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbook.pg import ENV_DSN, cluster_base, describe, throwaway_postgres  # noqa: E402

RUNS = 5


def start_to_ready(show: bool = False) -> float:
    """Seconds from entering throwaway_postgres() to the first answered query."""
    started = time.perf_counter()
    with throwaway_postgres() as server:
        server.execute("SELECT 1")
        elapsed = time.perf_counter() - started
        if show:
            print(f"provider: {describe(server)}, clusters under {cluster_base()}")
    return elapsed


def provider_cold_starts() -> tuple[float, list[float]]:
    """The first run (it builds the template, in a fresh cache) and RUNS cold starts after it."""
    previous = os.environ.get("XDG_CACHE_HOME")
    with tempfile.TemporaryDirectory(prefix="bench-pg-cache-") as cache:
        os.environ["XDG_CACHE_HOME"] = cache
        try:
            first = start_to_ready(show=True)
            return first, [start_to_ready() for _ in range(RUNS)]
        finally:
            if previous is None:
                os.environ.pop("XDG_CACHE_HOME", None)
            else:
                os.environ["XDG_CACHE_HOME"] = previous


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
    first, cold = provider_cold_starts()
    print(f"throwaway PostgreSQL first run, building the template (one-off): {first:.2f}s")
    report("throwaway PostgreSQL cold start-to-ready (template built)", cold)
    if "--provider-only" not in sys.argv[1:]:
        report("nox -s step3 (warm, reference solution)", nox_step3_warm())
