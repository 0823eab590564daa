"""Scores that depend on the code only (issue 20): the same class graded with a step timeout of 60 s, of
120 s, and with both cores kept busy by a CPU burner gives the same gradebook.

The class: an honest learner, a partial one (a known mistake in two steps), a starter, one whose steps hang
(at import in step 5, in a view in step 6) and two attackers (one holds every database connection its role
may open, one fills its database without end). Every check has its own deadline, so a hang
fails its check in seconds whatever the step timeout, which stays a backstop far above what a step needs.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from fractions import Fraction
from pathlib import Path

import pytest

from tests.workbook.attacks import planted_code
from tests.workbook.conftest import copy_of_the_workbook, finish, package
from workbook import catalogue, mistakes
from workbook.grading import confinement, running, submissions

STEPS = [catalogue.step(n) for n in (4, 5, 6, 7)]
PARTIAL = {5: "hard-coded-pool-size", 7: "results-unordered"}  # step: a known mistake of that step
ATTACKERS = ("x-exhaust", "x-fill")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="confined grading needs root here (CI grades as root)"
)


def build_class(subs: Path) -> None:
    honest = copy_of_the_workbook(subs / "honest")
    for step in STEPS:
        finish(honest, step.number)
    partial = copy_of_the_workbook(subs / "partial")
    for step in STEPS:
        finish(partial, step.number)
    known = {(m.step.number, m.name): m for m in mistakes.load([catalogue.step(n) for n in PARTIAL])}
    for number, name in PARTIAL.items():
        shutil.rmtree(partial / "steps" / f"step{number}")
        mistakes.apply(known[number, name], partial)
    copy_of_the_workbook(subs / "starter")
    hanging = copy_of_the_workbook(subs / "hanging")
    for step in STEPS:
        finish(hanging, step.number)
    init = package(hanging, 5) / "__init__.py"
    init.write_text(init.read_text() + "\nimport time\ntime.sleep(3600)\n")
    views = package(hanging, 6) / "views.py"
    text = views.read_text()
    marker = "async def index(request"
    assert marker in text, "step 6's views.py changed: find another view to hang"
    head, _, tail = text.partition(marker)
    body_start = tail.index(":\n") + 2
    views.write_text(f"{head}{marker}{tail[:body_start]}    await asyncio.sleep(3600)\n{tail[body_start:]}")
    if "import asyncio" not in views.read_text():
        views.write_text("import asyncio\n" + views.read_text())
    for kind in ATTACKERS:
        attacker = copy_of_the_workbook(subs / kind)
        for step in STEPS:
            finish(attacker, step.number)
            init = package(attacker, step.number) / "__init__.py"
            planted = planted_code(kind.removeprefix("x-"), {}, "/nonexistent", 0, "/nonexistent")
            init.write_text(init.read_text() + planted)


def burn(stop: multiprocessing.synchronize.Event) -> None:
    while not stop.is_set():
        sum(range(10_000))


def grade(found: list[submissions.Submission], timeout: float) -> dict[str, list[Fraction]]:
    grades = running.grade_submissions(
        found, STEPS, jobs=2, timeout=timeout, tier=confinement.detect_tier()[0]
    )
    return {g.name: [s.earned for s in g.steps] for g in grades}


def test_the_same_class_scores_the_same_at_60_s_120_s_and_under_load(tmp_path):
    if confinement.detect_tier()[0] == confinement.NONE:
        pytest.skip("this machine can confine nothing")
    subs = tmp_path / "submissions"
    subs.mkdir()
    build_class(subs)
    found, _ = submissions.discover(subs)
    at_60 = grade(found, 60)
    at_120 = grade(found, 120)
    stop = multiprocessing.get_context("fork").Event()
    burners = [
        multiprocessing.get_context("fork").Process(target=burn, args=(stop,))
        for _ in range(os.cpu_count() or 2)
    ]
    for burner in burners:
        burner.start()
    try:
        loaded = grade(found, 60)
    finally:
        stop.set()
        for burner in burners:
            burner.join(10)
    assert at_60["honest"] == [Fraction(step.points) for step in STEPS], at_60
    assert at_60["starter"] == [Fraction(0)] * len(STEPS), at_60
    assert at_60["partial"][0] == STEPS[0].points and at_60["partial"][1] < STEPS[1].points, at_60
    assert at_60["hanging"][1] < STEPS[1].points and at_60["hanging"][2] < STEPS[2].points, at_60
    # The attackers' own scores are left out: their attacks race their own checks (a thread that grabs
    # every connection while the app starts), so their code itself behaves differently run to run.
    for grades in (at_60, at_120, loaded):
        for name in ATTACKERS:
            assert all(got <= step.points for got, step in zip(grades.pop(name), STEPS, strict=True)), name
    assert at_60 == at_120, f"the step timeout changed scores:\n60 s:  {at_60}\n120 s: {at_120}"
    assert at_60 == loaded, f"load changed scores:\nidle:   {at_60}\nloaded: {loaded}"
