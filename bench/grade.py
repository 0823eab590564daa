"""Benchmark: grade a class of distinct learners, the way an instructor would, and time it.

Run with `nox -s benchmark-grade -- [--learners 30] [--steps 1-9] [--jobs N] [--seed S] [--keep DIR]`.
Options it does not know go on to `python -m workbook grade` as they are.

A class of identical copies would let a grader that caches by content look fast for the wrong reason, and
would only ever exercise the full-marks path. So each step of each learner is dealt, from a seeded random
generator, one of four kinds of work:

    solution   the reference solution, markers removed          expected: the step's full points
    starter    the step as handed out (steps/stepN)             expected: 0
    mistake    the solution with one known mistake applied      (tests/mistakes/stepN/*.patch)
    broken     the solution with a syntax error in one module

and every step folder gets a comment naming its learner, so no two learners hand in the same bytes.

The grader runs as a subprocess, through its command line only (its internals are being reorganised), and
this script reads what it wrote: gradebook.csv for the scores and run.json, when the grader writes one,
for the confinement tier and the database. CPU time is that of every process the run left behind to reap,
PostgreSQL included (this process makes itself their subreaper), divided by the step runs. Timing is
printed, never asserted: it varies by machine. Solutions and starters that do not score as expected are
a grader bug or a flaky test, and make the exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbook import catalogue, mistakes  # noqa: E402 - needs ROOT on sys.path first
from workbook.starter import (  # noqa: E402
    IGNORED_PARTS,
    MARKED_SUFFIXES,
    MarkerError,
    render,
    source_files,
    strip_markers_into,
)

GOAL_SECONDS = 150  # a class of 30 over steps 1-9 on the 2-core reference machine
KINDS = ("solution", "starter", "mistake", "broken")
# The order kinds are dealt in before shuffling: in ten steps, four solutions, three mistakes, two starters
# and one broken step, roughly a real class. The first four differ, so any class of 4+ steps has them all.
DEAL = ("solution", "mistake", "starter", "broken", "solution", "mistake", "solution", "mistake", "starter",
        "solution")  # fmt: skip
PACKAGE = catalogue.PACKAGE
NAME_FILE = f"{PACKAGE}/__init__.py"  # every step has it, so every step can carry its learner's name
RUN_INFO = "run.json"  # written by the grader next to gradebook.csv: {"tier": ..., "database": ...}


@dataclass(frozen=True)
class Piece:
    """One step of one learner: what kind of work it is and, for a mistake or a break, which one."""

    learner: str
    step: catalogue.Step
    kind: str
    detail: str = ""

    @property
    def expected(self) -> int | None:
        """The points it must get, where that is known without running it."""
        return {"solution": self.step.points, "starter": 0}.get(self.kind)


def learner_name(number: int) -> str:
    return f"learner-{number:02d}"


def plan_class(learners: int, steps: Sequence[catalogue.Step], seed: int) -> list[Piece]:
    """Deal a kind of work to every step of every learner; the same seed deals the same class."""
    rng = random.Random(seed)
    kinds = [DEAL[i % len(DEAL)] for i in range(learners * len(steps))]
    rng.shuffle(kinds)
    known = {step.number: mistakes.load([step]) for step in steps}
    pieces = []
    for index, kind in enumerate(kinds):
        learner, step = learner_name(index // len(steps) + 1), steps[index % len(steps)]
        if kind == "mistake" and not known[step.number]:
            kind = "broken"  # a step without known mistakes still gets a partial hand-in
        detail = ""
        if kind == "mistake":
            detail = rng.choice(known[step.number]).name
        elif kind == "broken":
            modules = [p for p in source_files(step.tree(ROOT, "solutions")) if p.suffix == ".py"]
            detail = rng.choice(modules).relative_to(step.tree(ROOT, "solutions")).as_posix()
        pieces.append(Piece(learner, step, kind, detail))
    return pieces


def _strip_markers_in_place(tree: Path, step: int) -> None:
    """A patched solution as a learner would hand it in: no markers (left as they are if the patch
    touched one, since they are comments and the code runs the same)."""
    for path in source_files(tree):
        if path.suffix in MARKED_SUFFIXES:
            try:
                text, _ = render(path.read_text(), step, str(path), keep_solution=True)
            except MarkerError:
                continue
            path.write_text(text)


def write_piece(piece: Piece, workbook: Path) -> Path:
    """Write one learner's step folder into their workbook copy; returns the folder."""
    tree = piece.step.tree(workbook, "steps")
    if piece.kind == "starter":
        ignore = shutil.ignore_patterns(*IGNORED_PARTS, "*.pyc")
        shutil.copytree(piece.step.tree(ROOT, "steps"), tree, ignore=ignore)
    elif piece.kind == "mistake":
        found = [m for m in mistakes.load([piece.step]) if m.name == piece.detail]
        mistakes.apply(found[0], workbook)
        _strip_markers_in_place(tree, piece.step.number)
    else:
        strip_markers_into(piece.step.tree(ROOT, "solutions"), tree, piece.step.number)
    if piece.kind == "broken":
        with (tree / piece.detail).open("a") as module:
            module.write(f"\ndef half_typed(:  # {piece.learner} stopped typing here\n")
    with (tree / NAME_FILE).open("a") as module:
        module.write(f"\n# {piece.learner}'s copy of {piece.step.name}\n")
    return tree


def build_class(into: Path, pieces: Sequence[Piece]) -> dict[str, Path]:
    """Write every learner's workbook copy under `into`; the copies by learner name."""
    workbooks: dict[str, Path] = {}
    for piece in pieces:
        workbook = workbooks.get(piece.learner)
        if workbook is None:
            workbook = workbooks[piece.learner] = into / piece.learner
            workbook.mkdir(parents=True)
            shutil.copytree(ROOT / "config", workbook / "config")
            for name in ("README.md", "pyproject.toml"):
                shutil.copy2(ROOT / name, workbook / name)
        write_piece(piece, workbook)
    return workbooks


def tree_digest(tree: Path) -> str:
    """A digest of a step folder's paths and bytes: equal digests mean a grader could reuse a result."""
    digest = hashlib.sha256()
    for path in source_files(tree):
        digest.update(path.relative_to(tree).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def duplicate_trees(workbooks: dict[str, Path], steps: Sequence[catalogue.Step]) -> list[str]:
    """Step folders whose bytes equal another learner's, as 'learner/stepN'; empty when all differ."""
    seen: dict[str, str] = {}
    duplicates = []
    for name, workbook in workbooks.items():
        for step in steps:
            digest = tree_digest(step.tree(workbook, "steps"))
            if digest in seen:
                duplicates.append(f"{name}/{step.name} (same as {seen[digest]})")
            seen.setdefault(digest, f"{name}/{step.name}")
    return duplicates


# --- running the grader ----------------------------------------------------------------------------------

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Orphans of the grader (the PostgreSQL server pg_ctl started, the fork server) become our children,
    so their CPU time reaches RUSAGE_CHILDREN once we reap them. Linux only; False elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_orphans(patience: float = 15.0) -> tuple[int, int]:
    """Wait for the processes the grader left to us: how many were reaped, and how many still ran after
    `patience` seconds (left alone: their CPU time is then missing from the figure)."""
    deadline, reaped = time.monotonic() + patience, 0
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped, 0
        if pid:
            reaped += 1
        elif time.monotonic() > deadline:
            tasks = Path(f"/proc/{os.getpid()}/task").glob("*/children")
            return reaped, sum(len(task.read_text().split()) for task in tasks)
        else:
            time.sleep(0.05)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class GraderRun:
    returncode: int
    wall: float
    cpu: float
    subreaper: bool
    orphans: int
    left_running: int


def run_grader(
    submissions: Path, out: Path, steps: Sequence[catalogue.Step], jobs: int | None, extra: Sequence[str]
) -> GraderRun:
    """`python -m workbook grade` on the class, timed by the wall clock and by the CPU its processes used."""
    command = [
        sys.executable,
        "-m",
        "workbook",
        "grade",
        str(submissions),
        "--out",
        str(out),
        "--steps",
        ",".join(str(step.number) for step in steps),
    ]
    if jobs is not None:
        command += ["--jobs", str(jobs)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    subreaper = become_subreaper()
    cpu_before, started = cpu_seconds(), time.perf_counter()
    done = subprocess.run([*command, *extra], cwd=ROOT, env=env, check=False)
    wall = time.perf_counter() - started
    orphans, left = reap_orphans() if subreaper else (0, 0)
    return GraderRun(done.returncode, wall, cpu_seconds() - cpu_before, subreaper, orphans, left)


def read_run_info(out: Path) -> dict[str, str]:
    """The tier and database the grader recorded, or 'unknown' for what it did not (or could not) say."""
    info: dict[str, object] = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads((out / RUN_INFO).read_text())
        info = loaded if isinstance(loaded, dict) else {}
    return {key: str(info.get(key) or "unknown") for key in ("tier", "database")}


def read_gradebook(path: Path) -> dict[str, dict[str, float]]:
    """gradebook.csv as {learner: {'stepN': points, ..., 'total': points}}."""
    with path.open(newline="", encoding="utf-8") as handle:
        return {row.pop("learner"): {k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)}


# --- the report ------------------------------------------------------------------------------------------


def report(
    pieces: Sequence[Piece], steps: Sequence[catalogue.Step], book: dict[str, dict[str, float]]
) -> list[str]:
    """Print each learner's kinds and points (expected/got); return the mismatches that matter."""
    problems = []
    by_learner: dict[str, list[Piece]] = {}
    for piece in pieces:
        by_learner.setdefault(piece.learner, []).append(piece)
    full = sum(step.points for step in steps)
    print("kinds: so = solution, st = starter, mi = known mistake, br = broken; != marks a wrong score")
    print("learner     expected  got     / max   steps (kind: got, expected when known)")
    for name, own in by_learner.items():
        row = book.get(name)
        if row is None:
            problems.append(f"{name}: not in the gradebook")
            continue
        known = [p.expected for p in own]
        expected = f"{sum(e for e in known if e is not None)}" + ("+?" if None in known else "")
        cells = []
        for piece in own:
            got = row[piece.step.name]
            cell = f"{piece.step.number}{piece.kind[:2]}:{got:g}"
            if piece.expected is not None and abs(got - piece.expected) > 0.005:
                cell += f"!={piece.expected}"
                what = f"{piece.kind} of {piece.step.name}"
                problems.append(f"{name}: the {what} got {got:g}, expected {piece.expected}")
            cells.append(cell)
        print(f"{name:<11} {expected:>8}  {row['total']:<7g} / {full:<5} {' '.join(cells)}")
    return problems


def kind_counts(pieces: Sequence[Piece]) -> str:
    return ", ".join(f"{sum(p.kind == kind for p in pieces)} {kind}" for kind in KINDS)


@contextlib.contextmanager
def workspace(keep: Path | None) -> Iterator[Path]:
    """Where the class and the grades go: a temp folder, or `keep` (which must not hold an old class)."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="workbook-bench-grade-") as tmp:
            yield Path(tmp)
        return
    if (keep / "submissions").exists():
        raise SystemExit(f"error: {keep / 'submissions'} already exists: remove it or --keep elsewhere")
    keep.mkdir(parents=True, exist_ok=True)
    yield keep


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learners", type=int, default=30)
    every = f"1-{len(catalogue.steps())}"
    parser.add_argument("--steps", default=every, help=f"a range such as 1-3 (default: {every})")
    parser.add_argument("--jobs", type=int, help="steps graded at once (default: the grader's)")
    parser.add_argument("--seed", type=int, default=11, help="which class to deal (default 11)")
    parser.add_argument("--keep", type=Path, help="build the class and write the grades here, and keep them")
    args, extra = parser.parse_known_args(argv)
    steps = catalogue.parse_step_range(args.steps)

    pieces = plan_class(args.learners, steps, args.seed)
    with workspace(args.keep) as work:
        submissions, out = work / "submissions", work / "grades"
        workbooks = build_class(submissions, pieces)
        duplicates = duplicate_trees(workbooks, steps)
        print(
            f"class: {args.learners} learners x steps {args.steps}, seed {args.seed}: {kind_counts(pieces)}"
        )
        if duplicates:
            print("identical step folders (the class must not repeat itself):\n  " + "\n  ".join(duplicates))
            return 1
        ran = run_grader(submissions, out, steps, args.jobs, extra)
        if ran.returncode != 0 or not (out / "gradebook.csv").is_file():
            print(f"the grader failed (exit {ran.returncode}); no figures")
            return ran.returncode or 1
        info = read_run_info(out)
        problems = report(pieces, steps, read_gradebook(out / "gradebook.csv"))
        if args.keep:
            print(f"kept the class in {submissions} and the grades in {out}")

    runs = len(pieces)
    print(f"machine: {os.cpu_count()} cores; confinement tier: {info['tier']}; database: {info['database']}")
    verdict = "met" if ran.wall <= GOAL_SECONDS else "NOT met"
    goal = f"goal: at most {GOAL_SECONDS} s on 2 cores, {verdict}"
    print(f"wall time: {ran.wall:.1f} s for {runs} step runs ({goal})")
    reaped = f"{ran.orphans} orphans of the grader reaped" if ran.subreaper else "orphans not counted"
    print(f"CPU: {ran.cpu:.1f} s in all, {ran.cpu / runs:.2f} s per step run ({reaped})")
    if ran.left_running:
        print(f"note: {ran.left_running} process(es) the grader left were still running after 15 s")
    if problems:
        print(f"{len(problems)} solutions or starters scored other than expected (grader bug or flaky test):")
        print("  " + "\n  ".join(problems))
        return 1
    print("every solution got full points and every starter 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
