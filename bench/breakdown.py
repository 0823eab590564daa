"""Where a step run's CPU goes: a pytest plugin for the judge that splits it by process and by check.

    python -m workbook check 10 --target solutions -p bench.breakdown   (BREAKDOWN=out.json to keep it)

On a machine busy with other work the wall time of a run says little; the CPU seconds of each process do
(see bench/steps.py). Before and after every check it reads, from /proc, the CPU of the judge (this
process), of the learner's harness, of everything the harness forked (its launcher and the learner's
commands, which the launcher reaps) and of PostgreSQL (the postmaster and its backends, reaped or alive),
and counts what the check asked for: harness operations, commands, databases, the judge's connections.
At the end it prints the totals, the split per test module and the checks that cost most. The judge's own
figure includes this plugin's reading of /proc, about 1 ms a check. Linux only; not used by any run.
"""

from __future__ import annotations

import collections
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from workbook import pg
from workbook.judge import learner_process

TICK = os.sysconf("SC_CLK_TCK")
KINDS = ("judge", "harness", "commands", "postgres")


def _cpu(pid: int, reaped: bool = True) -> float:
    """CPU seconds of a process, with those of the children it has waited for when `reaped`."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rfind(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if reaped else 0)
    return ticks / TICK


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _tree_cpu(pid: int) -> float:
    """A process and its descendants alive now, each with what it reaped."""
    return _cpu(pid) + sum(_tree_cpu(child) for child in _children(pid))


class Breakdown:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.current = "(start-up)"
        self.counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.cpu: dict[str, dict[str, float]] = {}
        self.walls: dict[str, float] = {}
        self.started = time.perf_counter()

    def harness_pid(self) -> int | None:
        recorder = self.config.pluginmanager.get_plugin("workbook-recorder")
        harness = recorder.run.harness if recorder is not None and recorder.run is not None else None
        return harness.pid if harness is not None else None

    def snapshot(self) -> dict[str, float]:
        used = dict.fromkeys(KINDS, 0.0)
        used["judge"] = time.process_time()
        harness = self.harness_pid()
        for child in _children(os.getpid()):
            if Path(f"/proc/{child}/comm").read_text().strip() == "postgres":
                used["postgres"] += _tree_cpu(child)
            elif child == harness:
                used["harness"] += _cpu(child, reaped=False)
                used["commands"] += _tree_cpu(child) - _cpu(child, reaped=False)
            else:  # a learner's command started without the launcher
                used["commands"] += _tree_cpu(child)
        return used

    def count(self, what: str) -> None:
        self.counts[self.current][what] += 1

    def wrap(self) -> None:
        """Count what each check asks for, by wrapping the judge's entry points for it."""
        breakdown = self
        recorder = self.config.pluginmanager.get_plugin("workbook-recorder")
        harness = recorder.run.harness
        request = harness.request

        def counted_request(op: str, timeout: float = learner_process.REQUEST_TIMEOUT, **fields: Any) -> Any:
            breakdown.count(f"op {op}")
            return request(op, timeout, **fields)

        harness.request = counted_request  # type: ignore[method-assign]
        for owner, name, label in (
            (learner_process.Command, "__init__", "command"),
            (pg.PostgresServer, "create_database", "database"),
            (psycopg2, "connect", "judge connection"),
        ):
            original = getattr(owner, name)

            def counted(*args: Any, _original: Any = original, _label: str = label, **kwargs: Any) -> Any:
                breakdown.count(_label)
                return _original(*args, **kwargs)

            setattr(owner, name, counted)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self) -> None:
        if self.harness_pid() is not None:
            self.wrap()
        self.cpu["(start-up)"] = self.snapshot()
        self.walls["(start-up)"] = time.perf_counter() - self.started

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Iterator[None]:
        self.current = item.nodeid
        before, started = self.snapshot(), time.perf_counter()
        try:
            return (yield)
        finally:
            after = self.snapshot()
            self.cpu[item.nodeid] = {kind: max(0.0, after[kind] - before[kind]) for kind in KINDS}
            self.walls[item.nodeid] = time.perf_counter() - started
            self.current = "(teardown)"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        end = self.snapshot()
        write = terminalreporter.write_line
        total = sum(end.values())
        write("")
        write(f"CPU seconds, every process of the run: {total:.2f} ("
              + ", ".join(f"{kind} {end[kind]:.2f}" for kind in KINDS)
              + f"); wall {time.perf_counter() - self.started:.2f} s, "
              f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
        start = self.cpu.get("(start-up)", {})
        write(
            "  start-up (to the end of collection): " + ", ".join(f"{k} {start.get(k, 0):.2f}" for k in KINDS)
        )
        counts: collections.Counter[str] = collections.Counter()
        for counter in self.counts.values():
            counts.update(counter)
        write("  asked for: " + ", ".join(f"{what} {n}" for what, n in counts.most_common()))
        modules: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for nodeid, used in self.cpu.items():
            if "::" in nodeid:
                module = modules[nodeid.split("::")[0]]
                module.update(used)
                module["checks"] += 1
                module["wall"] += self.walls[nodeid]
        for name, module in modules.items():
            write(f"  {name}: {module['checks']:.0f} checks, wall {module['wall']:.2f}, "
                  + ", ".join(f"{kind} {module[kind]:.2f}" for kind in KINDS))  # fmt: skip
        write("  the checks that cost most (CPU of every process, s):")
        ranked = sorted(
            (item for item in self.cpu.items() if "::" in item[0]), key=lambda i: -sum(i[1].values())
        )
        for nodeid, used in ranked[:12]:
            asked = ", ".join(f"{what} {n}" for what, n in self.counts[nodeid].most_common(4))
            name = nodeid.split("::")[-1][:70]
            write(f"    {sum(used.values()):.2f} (wall {self.walls[nodeid]:.2f}) {name}  [{asked}]")
        out = os.environ.get("BREAKDOWN")
        if out:
            kept = {"end": end, "cpu": self.cpu, "walls": self.walls, "counts": self.counts}
            Path(out).write_text(json.dumps(kept, indent=1))


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(Breakdown(config), "bench-breakdown")
