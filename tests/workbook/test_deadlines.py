"""Every check has its own deadline: a learner's view that never answers fails the checks that call it, each
within seconds and with a message naming the request, and the step's points do not depend on the step's
timeout (a grader's `--timeout`, 60 s on Gradescope, 300 s for `nox -s stepN`)."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from tests.workbook.conftest import finish, package, run_workbook
from workbook import catalogue, verdicts
from workbook.__main__ import STOP_GRACE
from workbook.runner import run_step

HANGING_INDEX = '''
import asyncio

from aiohttp import web


async def index(request: web.Request) -> web.Response:
    """Waits for an event nobody sets: the answer never comes."""
    await asyncio.Event().wait()
    return web.Response(text="Hello Aiohttp!")
'''


def hanging_copy(root: Path) -> Path:
    """A workbook copy whose step 2 is the solution with a view that never answers."""
    step = catalogue.step("2")
    tree = step.tree(root, "steps")
    shutil.copytree(step.tree(catalogue.ROOT, "solutions"), tree)
    (tree / catalogue.PACKAGE / "views.py").write_text(HANGING_INDEX)
    return root


def test_a_view_that_never_answers_costs_its_checks_not_the_step(tmp_path):
    copy = hanging_copy(tmp_path)
    step = catalogue.step("2")
    results = []
    for timeout in (90.0, 300.0):
        started = time.monotonic()
        results.append((run_step(step, str(copy), timeout=timeout), time.monotonic() - started))
    (short, short_took), (long, _) = results
    assert not short.broken and not long.broken, (short.broken, long.broken)
    assert short.points == long.points > 0, (short.points, long.points)
    assert short_took < 90, f"the suite took {short_took:.0f}s"
    messages = [test["message"] for test in short.report["tests"] if test["outcome"] == "failed"]
    # GET / or, where the app is mounted under a prefix, GET /PREFIX/
    others = [
        message for message in messages if not re.search(r"GET /\S* got no answer within 10 s", message)
    ]
    assert messages and not others, others


def test_nox_s_step_stops_a_suite_at_its_timeout(workbook_copy):
    """`nox -s stepN -- --timeout S` (300 s unless told): a learner's package whose import never ends keeps
    the suite waiting 30 s for it; a 3 s backstop stops the suite first, says so, and remembers no verdict."""
    finish(workbook_copy, 1)
    main = package(workbook_copy, 1) / "main.py"
    main.write_text("import time\ntime.sleep(600)\n" + main.read_text())
    started = time.monotonic()
    result = run_workbook(workbook_copy, "check", "1", "--timeout", "3")
    took = time.monotonic() - started
    assert result.returncode != 0, result.stdout
    assert "step 1's checks did not finish within 3 s" in result.stderr, result.stderr
    assert took < 3 + STOP_GRACE + 10, f"took {took:.0f}s"
    kept = workbook_copy / verdicts.STATE_DIR / verdicts.VERDICTS_DIR / "step1.json"
    assert not kept.exists(), "a run cut short left a verdict for `nox -s status`"
