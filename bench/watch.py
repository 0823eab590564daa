"""Benchmark: how soon `nox -s watch` shows a verdict after a save, and what `nox -s status` costs.

Run with `nox -s benchmark` (or `python bench/watch.py --steps 1,9`). Everything runs on a private copy of
the workbook whose steps are finished, so the learner's steps/ are never touched.

watch: `python -m workbook watch N` runs as a subprocess; each save appends a comment to a module of the
step, and the figure is the time from that write to the verdict's last line on the watcher's output
(median of SAVES saves). The goal is at most WATCH_GOAL seconds. The suite's own time, which the watcher
prints, is shown beside it: the rest is the time to notice the save and start the suite.

status: `nox -s status` on the same copy (its noxfile, the workbook's environments): cold (no verdict
remembered), warm (every verdict remembered), and after one step's file changed (that step runs again),
each as a person waits for it: nox's own start included.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbook import catalogue  # noqa: E402
from workbook.pg import ENV_DSN  # noqa: E402
from workbook.starter import strip_markers_into  # noqa: E402

SAVES = 5
STATUS_RUNS = 3
WATCH_GOAL = 2.0  # seconds from a save to the whole verdict, on the 2-core machine the workbook is made on
VERDICT_DEADLINE = 120.0
COPIED = ("workbook", "tests", "steps", "solutions", "config", "pyproject.toml", "README.md", "noxfile.py")
SUITE_TIME = re.compile(r"^--- step \d+, [\d:]+ \(([\d.]+)s\) ---$")


def finished_copy(into: Path, numbers: list[int]) -> Path:
    """The workbook with these steps finished (their solutions, markers removed), the others untouched."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".nox", ".workbook", "backups")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=skip)
        else:
            shutil.copy2(source, into / name)
    for number in numbers:
        tree = into / "steps" / f"step{number}"
        shutil.rmtree(tree)
        strip_markers_into(ROOT / "solutions" / f"step{number}", tree, number)
    return into


def clean_env(copy: Path) -> dict[str, str]:
    """The copy's code first on the path; no explicit server, so each run starts its own as a learner's
    would."""
    env = {k: v for k, v in os.environ.items() if k != ENV_DSN}
    return {**env, "PYTHONPATH": str(copy), "PYTHONUNBUFFERED": "1"}


class Watcher:
    """`python -m workbook watch N` with its output read line by line, each line stamped on arrival."""

    def __init__(self, copy: Path, number: int) -> None:
        self.number = number
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "workbook", "watch", str(number)],
            cwd=copy,
            env=clean_env(copy),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put((time.perf_counter(), line.rstrip("\n")))

    def wait_for(self, pattern: str) -> tuple[float, list[str]]:
        """When the first line holding `pattern` arrived, and every line up to it."""
        seen: list[str] = []
        deadline = time.monotonic() + VERDICT_DEADLINE
        while time.monotonic() < deadline:
            try:
                stamp, line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            seen.append(line)
            if pattern in line:
                return stamp, seen
        shown = "\n".join(seen[-30:])
        raise SystemExit(f"watch {self.number}: no {pattern!r} within {VERDICT_DEADLINE:.0f}s:\n{shown}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)  # ends cleanly: the suite, its server, its temp folders
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def save_to_verdict(copy: Path, number: int) -> tuple[list[float], list[float]]:
    """SAVES saves of step N's main module: the seconds to each verdict, and the suite's share of each."""
    watcher = Watcher(copy, number)
    verdict = f"Step {number} passes"
    module = copy / "steps" / f"step{number}" / catalogue.PACKAGE / "main.py"
    latencies, suites = [], []
    try:
        watcher.wait_for("Watching")
        for save in range(SAVES):
            time.sleep(0.5)  # a person does not save twice within a verdict; let the last one settle
            while not watcher.lines.empty():  # a verdict left over must not pass for this save's
                watcher.lines.get()
            saved = time.perf_counter()
            with module.open("a") as file:
                file.write(f"# save {save}\n")
            arrived, lines = watcher.wait_for(verdict)
            latencies.append(arrived - saved)
            suites += [float(m.group(1)) for line in lines if (m := SUITE_TIME.match(line))][-1:]
    finally:
        watcher.stop()
    return latencies, suites


def nox_status(copy: Path) -> float:
    """One warm-environment `nox -s status` on the copy; the seconds it took."""
    command = [sys.executable, "-m", "nox", "-f", str(copy / "noxfile.py"), "--envdir", str(ROOT / ".nox")]
    started = time.perf_counter()
    done = subprocess.run([*command, "-s", "status"], cwd=copy, env=clean_env(copy), capture_output=True)
    elapsed = time.perf_counter() - started
    output = done.stdout.decode(errors="replace")
    if done.returncode != 0 or "Every task of every step passes" not in output:
        raise SystemExit(f"nox -s status did not pass every step:\n{output[-3000:]}{done.stderr[-3000:]!r}")
    return elapsed


def status_figures(copy: Path, numbers: list[int]) -> None:
    nox_status(copy)  # the environment exists and its pins are checked; not timed
    verdicts = copy / ".workbook" / "verdicts"
    shutil.rmtree(verdicts, ignore_errors=True)
    cold = nox_status(copy)
    warm = [nox_status(copy) for _ in range(STATUS_RUNS)]
    changed = []
    for run in range(STATUS_RUNS):
        module = copy / "steps" / f"step{numbers[run % len(numbers)]}" / catalogue.PACKAGE / "main.py"
        with module.open("a") as file:
            file.write(f"# status change {run}\n")
        changed.append(nox_status(copy))
    print("nox -s status, every step finished:")
    print(f"  cold (no verdict remembered):    {cold:5.2f}s")
    print(f"  warm (every verdict remembered): {statistics.median(warm):5.2f}s median of {STATUS_RUNS}")
    print(f"  one step's file changed:         {statistics.median(changed):5.2f}s median of {STATUS_RUNS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="1,9", help="the steps to watch, e.g. 1,9 (default)")
    parser.add_argument("--no-status", action="store_true", help="skip the `nox -s status` figures")
    args = parser.parse_args()
    numbers = [catalogue.step(part.strip()).number for part in args.steps.split(",")]
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp:
        copy = finished_copy(Path(tmp) / "workbook", [step.number for step in catalogue.steps()])
        print(f"watch: time from a save to the verdict's last line, median of {SAVES} saves")
        for number in numbers:
            latencies, suites = save_to_verdict(copy, number)
            median = statistics.median(latencies)
            verdict = "met" if median <= WATCH_GOAL else "NOT met"
            suite = statistics.median(suites)
            print(
                f"  step {number}: {median:.2f}s (min {min(latencies):.2f}s, max {max(latencies):.2f}s; "
                f"the suite itself {suite:.1f}s); goal at most {WATCH_GOAL:.0f}s: {verdict}"
            )
        if not args.no_status:
            status_figures(copy, numbers)


if __name__ == "__main__":
    main()
