"""Load benchmark of the finished polls app (`nox -s bench`).

Serves the newest finished step's solution in its own process (`python -m aiohttpdemo_polls --config ...`,
on the step's own interpreter) on a throwaway PostgreSQL, then drives it from this process with many
concurrent clients for a fixed number of requests of each kind: GET /, GET /poll/{id}, POST
/poll/{id}/vote. Each app is warmed with a shorter pass first. Prints requests per second and p50/p99
latency per kind, then checks that the database counted exactly the votes that were sent.

`--compare A B` serves solutions/stepA and solutions/stepB side by side, each on a database of its own,
and drives them in alternating rounds (A, B, A, B, ...), so that drift on a small shared machine touches
both alike; it prints each app's figures pooled over its rounds and the ratio B/A per kind.

Results also go to bench/RESULTS.md with the date, the command and the machine's core count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbook import catalogue  # noqa: E402
from workbook.pg import PostgresServer, describe, free_port  # noqa: E402
from workbook.serve import newest_finished_step, prepared_app, stop_process  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
ALONE_SECTION = "# Load benchmark"
COMPARE_SECTION = "# Load comparison"


@dataclass
class Sample:
    kind: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    @classmethod
    def pooled(cls, samples: list[Sample]) -> Sample:
        """Several rounds of one kind as one sample: every latency kept, the rounds' durations added up."""
        return cls(
            samples[0].kind,
            [latency for sample in samples for latency in sample.latencies],
            sum(sample.errors for sample in samples),
            sum(sample.seconds for sample in samples),
        )

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) * 1000

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000

    def cells(self) -> str:
        return f"{len(self.latencies)} | {self.errors} | {self.rate:,.0f} | {self.p50:.1f} | {self.p99:.1f}"


async def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"the app exited with status {process.returncode} before answering")
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    raise SystemExit(f"the app did not answer {url} within {timeout:.0f}s")


Sender = Callable[[aiohttp.ClientSession, int], Awaitable[bool]]


async def hammer(kind: str, count: int, concurrency: int, send: Sender) -> Sample:
    """`count` requests made by `concurrency` clients at once; each client loops until the work is done."""
    sample = Sample(kind)
    remaining = iter(range(count))

    async def client(session: aiohttp.ClientSession) -> None:
        for number in remaining:
            started = time.perf_counter()
            ok = await send(session, number)
            sample.latencies.append(time.perf_counter() - started)
            sample.errors += not ok

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        sample.seconds = time.perf_counter() - started
    return sample


async def drive(
    base: str, poll_ids: list[int], choices: dict[int, list[int]], count: int, concurrency: int
) -> list[Sample]:
    async def get_index(session: aiohttp.ClientSession, _number: int) -> bool:
        async with session.get(f"{base}/") as response:
            await response.read()
            return response.status == 200

    async def get_poll(session: aiohttp.ClientSession, number: int) -> bool:
        async with session.get(f"{base}/poll/{poll_ids[number % len(poll_ids)]}") as response:
            await response.read()
            return response.status == 200

    async def vote(session: aiohttp.ClientSession, number: int) -> bool:
        poll = poll_ids[number % len(poll_ids)]
        choice = choices[poll][number % len(choices[poll])]
        url = f"{base}/poll/{poll}/vote"
        async with session.post(url, data={"choice": str(choice)}, allow_redirects=False) as response:
            await response.read()
            return response.status == 302

    return [
        await hammer("GET /", count, concurrency, get_index),
        await hammer("GET /poll/{id}", count, concurrency, get_poll),
        await hammer("POST /poll/{id}/vote", count, concurrency, vote),
    ]


@dataclass
class Served:
    """One step's app, running on its own database, with what was measured on it so far."""

    step: catalogue.Step
    base: str
    server: PostgresServer
    database: str
    choices: dict[int, list[int]]
    rounds: list[list[Sample]] = field(default_factory=list)
    accepted: int = 0  # votes answered with 302, warm-up included
    counted: int = 0  # what PostgreSQL's vote counts grew by meanwhile

    @property
    def name(self) -> str:
        return self.step.name

    @property
    def lost(self) -> int:
        return self.accepted - self.counted

    def total_votes(self) -> int:
        (total,) = self.server.execute("SELECT coalesce(sum(votes), 0) FROM choice", self.database)[0]
        return int(total)

    def run(self, count: int, concurrency: int) -> list[Sample]:
        """One pass over every kind, the only way this script drives an app; votes are checked after it."""
        before = self.total_votes()
        polls = sorted(self.choices)
        samples = asyncio.run(drive(self.base, polls, self.choices, count, concurrency))
        votes = samples[-1]
        self.accepted += len(votes.latencies) - votes.errors
        self.counted += self.total_votes() - before
        return samples

    def warm(self, count: int, concurrency: int) -> None:
        """A pass left out of the figures: the app's pool, the caches and the code paths are hot after it.

        A kind that fails here would fail in every round, so the run stops and says which.
        """
        for sample in self.run(count, concurrency):
            if sample.errors:
                raise SystemExit(
                    f"solutions/{self.name} answered {sample.errors} of {count} warm-up {sample.kind} "
                    "requests wrongly: this benchmark needs the finished app's routes"
                )

    def measure(self, count: int, concurrency: int) -> None:
        self.rounds.append(self.run(count, concurrency))

    def pooled(self) -> list[Sample]:
        """Each kind over every round."""
        return [Sample.pooled(list(kind)) for kind in zip(*self.rounds, strict=True)]

    def round_rates(self) -> str:
        """Requests per second of each round, every kind together: the spread that pooling hides."""
        rates = (sum(len(s.latencies) for s in r) / sum(s.seconds for s in r) for r in self.rounds)
        return ", ".join(f"{rate:,.0f}" for rate in rates)


@contextlib.contextmanager
def serving(step: catalogue.Step, pool: int) -> Iterator[Served]:
    """The step's solution answering on a free port, on a throwaway database of its own; stopped after."""
    tree = step.tree(catalogue.ROOT, "solutions")
    port = free_port()
    with prepared_app(
        step, tree, port, pool_size=pool, database=f"aiohttpdemo_polls_{step.name}"
    ) as prepared:
        server, database = prepared.server, prepared.database
        if server is None or database is None:
            raise SystemExit(f"step {step.number}'s app has no database: nothing to load-test")
        app = prepared.start()
        try:
            base = f"http://127.0.0.1:{port}"
            asyncio.run(wait_for(base + "/", app))
            rows = server.execute("SELECT question_id, id FROM choice ORDER BY question_id, id", database)
            choices: dict[int, list[int]] = {}
            for poll, choice in rows:
                choices.setdefault(poll, []).append(choice)
            yield Served(step, base, server, database, choices)
        finally:
            stop_process(app, grace=30)


def finished_step(number: int) -> catalogue.Step:
    try:
        step = catalogue.step(number)
    except KeyError as exc:
        raise SystemExit(exc.args[0]) from None
    if not (step.tree(catalogue.ROOT, "solutions") / catalogue.PACKAGE).is_dir():
        raise SystemExit(f"solutions/{step.name} has no {catalogue.PACKAGE} package to load-test")
    return step


def ratio(new: float, old: float) -> str:
    return f"{new / old:.2f}x" if old else "n/a"


def table(apps: list[Served]) -> list[str]:
    """A row per kind; comparing, per kind a row for each app and one for the second's over the first's."""
    if len(apps) == 1:
        rows = [f"| {sample.kind} | {sample.cells()} |" for sample in apps[0].pooled()]
        return [
            "| request | count | errors | requests/s | p50 ms | p99 ms |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    old, new = apps
    rows = []
    for before, after in zip(old.pooled(), new.pooled(), strict=True):
        rows += [
            f"| {before.kind} | {old.name} | {before.cells()} |",
            f"| {after.kind} | {new.name} | {after.cells()} |",
            f"| {after.kind} | {new.name}/{old.name} | | | {ratio(after.rate, before.rate)} | "
            f"{ratio(after.p50, before.p50)} | {ratio(after.p99, before.p99)} |",
        ]
    return [
        "| request | app | count | errors | requests/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]


def report(apps: list[Served], options: argparse.Namespace, where: str, load: tuple[float, float]) -> str:
    rounds = len(apps[0].rounds)
    names = " and ".join(f"solutions/{app.name}" for app in apps)
    served = "the apps" if len(apps) > 1 else "the app"
    lines = [
        f"Load benchmark of {names} on {os.cpu_count()} cores, Python {platform.python_version()} "
        f"(this client); {served}, {where} and this client share the machine, whose load average "
        f"(1 min) was {load[0]:.2f} at the start and {load[1]:.2f} at the end.",
        f"{datetime.date.today().isoformat()}, `{command(options.argv)}`.",
        f"{options.requests} requests of each kind"
        + (f" per round, {rounds} rounds per app," if rounds > 1 else "")
        + f" after a warm-up of {options.warmup} of each kind, {options.concurrency} concurrent clients, "
        f"app pool maxsize {options.pool}.",
    ]
    if len(apps) > 1:
        old, new = apps
        lines += [
            f"Rounds alternate ({old.name}, {new.name}, {old.name}, ...), each app on a database of its own. "
            "Pooled over an app's rounds: requests/s is all its requests of a kind over the time those "
            "rounds took; p50 and p99 are of every latency of every round together.",
            f"{new.name}/{old.name}: above 1x, {new.name} serves more requests/s, "
            "or its requests wait longer at p50/p99.",
        ]
    lines += ["", *table(apps), ""]
    if len(apps) > 1:
        spread = "; ".join(f"{app.name} {app.round_rates()}" for app in apps)
        lines += [f"Requests/s of each round, all kinds together: {spread}.", ""]
    lines += [
        f"Votes {app.name}, warm-up included: accepted (302) {app.accepted}; "
        f"counted by PostgreSQL {app.counted}; lost votes: {app.lost}"
        for app in apps
    ]
    return "\n".join(lines)


def command(argv: list[str]) -> str:
    """The nox command that makes this run: the session hands its arguments to this script unchanged."""
    return "nox -s bench" + (f" -- {shlex.join(argv)}" if argv else "")


def record(path: Path, title: str, body: str) -> None:
    """Rewrite this run's own section of RESULTS.md, keeping every other one (some are measured by hand)."""
    text = path.read_text() if path.is_file() else ""
    sections = re.split(r"(?m)^(?=# )", text)
    heading = re.compile(rf"{re.escape(title)}\n")
    new = f"{title}\n\nMade by `nox -s bench`.\n\n{body}\n\n"
    for index, section in enumerate(sections):
        if heading.match(section):
            sections[index] = new
            break
    else:  # a new section goes after the load benchmark's, before the figures measured by hand
        after = next((i + 1 for i, s in enumerate(sections) if s.startswith(ALONE_SECTION + "\n")), 0)
        sections.insert(after, new)
    path.write_text("".join(sections).rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", nargs=2, type=int, metavar=("A", "B"), help="two steps, e.g. 9 10")
    parser.add_argument("--requests", type=int, default=3000, help="requests of each kind per round (3000)")
    parser.add_argument("--rounds", type=int, help="rounds per app (default 1 alone, 4 with --compare)")
    parser.add_argument("--warmup", type=int, default=500, help="warm-up requests of each kind (500)")
    parser.add_argument("--concurrency", type=int, default=100, help="clients at once (default 100)")
    parser.add_argument("--pool", type=int, default=10, help="each app's connection pool maxsize (10)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the file results go to")
    options = parser.parse_args(argv)
    options.argv = sys.argv[1:] if argv is None else argv
    rounds = options.rounds or (4 if options.compare else 1)

    if options.compare:
        steps = [finished_step(number) for number in options.compare]
    else:
        steps = [newest_finished_step()]

    load_before = os.getloadavg()[0]  # another job on the machine skews every figure: say so
    with contextlib.ExitStack() as stack:
        apps = [stack.enter_context(serving(step, options.pool)) for step in steps]
        for app in apps:
            app.warm(options.warmup, options.concurrency)
        for _ in range(rounds):
            for app in apps:
                app.measure(options.requests, options.concurrency)
        where = " and ".join(describe(app.server) for app in apps)

    text = report(apps, options, where, (load_before, os.getloadavg()[0]))
    print(text)
    record(options.results, COMPARE_SECTION if options.compare else ALONE_SECTION, text)
    failed = any(app.lost or any(sample.errors for sample in app.pooled()) for app in apps)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
