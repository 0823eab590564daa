"""The learner-side harness and the judge's client: what crosses the boundary, and what is refused."""

from __future__ import annotations

import os
import signal
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from workbook.judge import learner_process
from workbook.judge.learner_process import Harness, LearnerGone, LearnerRaised, parse_reply

PACKAGE_CODE = """
import asyncio, datetime, os, time
from aiohttp import web

LOCATIONS = ["a"]

def add(a, b):
    return a + b

async def later(value):
    await asyncio.sleep(0)
    return {"value": value, "when": datetime.date(2024, 2, 29)}

def fails():
    raise ValueError("no such thing")

def huge():
    return "x" * (2 << 20)

def sleeps():
    time.sleep(60)

async def naps():
    time.sleep(0)
    return 1

async def waits():
    import select, threading
    select.select([], [], [], 0)
    threading.Event().wait(0)
    return 1

def dies():
    os._exit(9)

def forges():
    # learner code writing a reply of its own on the reply channel (fd 3 here): read with suspicion
    for fd in range(3, 10):
        try:
            os.write(fd, b'{"id": 999, "ok": "forged"}\\n')
        except OSError:
            pass
    return "real"

def floods():
    while True:
        print("spam " * 1000)

def locations():
    return [str(p) for p in LOCATIONS]

async def hello(request):
    print("a print from the view")
    return web.Response(text="hi")
"""


def started_harness(tree: Path) -> Harness:
    """A harness on a package of its own: aiohttpdemo_polls.things holds PACKAGE_CODE."""
    package = tree / "aiohttpdemo_polls"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "things.py").write_text(textwrap.dedent(PACKAGE_CODE))
    started = Harness(tree)
    started.start()
    return started


@pytest.fixture
def harness(tmp_path: Path):
    started = started_harness(tmp_path)
    yield started
    started.close()


def test_imports_are_reported(harness):
    hello = harness.wait_ready()
    assert hello["failed"] == {} and "things" in hello["imported"]


def test_calls_return_plain_json(harness):
    assert harness.request("call", target="things:add", args=[2, 3]) == 5
    assert harness.request("call", target="things:later", args=["v"]) == {"value": "v", "when": "2024-02-29"}
    assert harness.request("call", target="things:add", args=[1, 1], times=3) == [2, 2, 2]


def test_a_sleep_on_the_event_loop_is_noted_with_its_place(harness):
    assert harness.request("call", target="things:naps") == 1
    noted = harness.request("blocking")
    assert len(noted) == 1 and noted[0].startswith("time.sleep(0) at aiohttpdemo_polls/things.py, line ")
    assert harness.request("blocking") == []  # each note is handed over once


def test_sleeps_in_disguise_on_the_event_loop_are_noted(harness):
    assert harness.request("call", target="things:waits") == 1
    noted = harness.request("blocking")
    assert [note.split("(")[0] for note in noted] == ["select.select", "threading.Event.wait"]
    assert all(" at aiohttpdemo_polls/things.py, line " in note for note in noted)
    assert harness.request("blocking") == []


def test_a_watched_connection_notes_what_each_query_was_built_from():
    from sqlalchemy import column, select, text

    from workbook.learner_side.harness import WatchedConnection

    class Connection:
        closed = False

        def execute(self, statement: object) -> object:
            return statement

        def scalar(self, statement: object) -> object:
            return statement

    noted: list[str] = []
    conn = WatchedConnection(Connection(), noted)
    expression = select(column("x"))
    assert conn.execute("SELECT 1") == "SELECT 1" and conn.scalar(expression) is expression
    conn.execute(text("SELECT 2"))
    conn.execute(select(column("x")).where(text("x = 3")))
    assert noted == ["SQL text: SELECT 1", "an expression", "SQL text: text('SELECT 2')",
                     "SQL text: text('x = 3') inside a SQLAlchemy select()"]  # fmt: skip
    assert conn.closed is False  # everything else is the connection's own


def test_a_raise_comes_back_as_type_message_and_place(harness):
    with pytest.raises(LearnerRaised) as caught:
        harness.request("call", target="things:fails")
    assert caught.value.name == "ValueError" and caught.value.message == "no such thing"
    assert caught.value.where.startswith("aiohttpdemo_polls/things.py, line")


def test_a_missing_name_says_which_and_where(harness):
    with pytest.raises(LearnerRaised) as caught:
        harness.request("call", target="things:nothing")
    assert caught.value.name == "MissingName" and "aiohttpdemo_polls/things.py" in caught.value.message


def test_a_reply_over_the_cap_is_refused(harness):
    with pytest.raises(LearnerRaised, match="more than"):
        harness.request("call", target="things:huge")


def test_patches_last_until_unpatch(harness):
    harness.request("patch", target="things:LOCATIONS", value=["/x/y.yaml"], **{"as": "paths"})
    assert harness.request("call", target="things:locations") == ["/x/y.yaml"]
    harness.request("unpatch")
    assert harness.request("call", target="things:locations") == ["a"]


def test_a_stall_is_cut_off_and_a_fresh_process_follows(harness):
    started = time.monotonic()
    with pytest.raises(LearnerGone, match="no answer within 1s"):
        harness.request("call", target="things:sleeps", timeout=1)
    assert time.monotonic() - started < 5
    assert harness.request("call", target="things:add", args=[1, 2]) == 3


def test_a_death_is_reported_with_its_status(harness):
    with pytest.raises(LearnerGone, match="exit status 9"):
        harness.request("call", target="things:dies")
    assert harness.request("call", target="things:add", args=[1, 2]) == 3


def test_printing_without_end_fills_no_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(learner_process, "MAX_FILE_BYTES", 1 << 20)
    flooded = started_harness(tmp_path)
    try:
        with pytest.raises(LearnerRaised, match="File too large"):
            flooded.request("call", target="things:floods")
        assert flooded.log_size() <= 1 << 20
    finally:
        flooded.close()


def test_a_forged_reply_is_not_believed(harness):
    """Whatever the learner writes on the reply channel, a reply to another request is refused."""
    try:
        result = harness.request("call", target="things:forges")
    except LearnerGone as exc:
        assert "did not make" in str(exc)
    else:
        assert result == "real"


def test_views_are_served_and_prints_go_to_the_log(harness):
    start = harness.log_size()
    served = harness.request("serve", views={"/": "things:hello"})
    with urllib.request.urlopen(f"http://127.0.0.1:{served['port']}/", timeout=10) as response:
        assert response.read() == b"hi"
    assert harness.request("stop", app=served["app"]) == {"unraisable": []}
    assert "a print from the view" in harness.log_text(start)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"not json", "not JSON"),
        (b"[" * 50_000 + b"]" * 50_000, "not JSON"),
        (b'{"id": 2, "ok": 1}', "did not make"),
        (b'{"id": 1}', "neither"),
        (b'{"id": 1, "error": {"name": 5}}', "not text"),
        (b'{"id": 1, "error": "boom"}', "not an object"),
    ],
)
def test_malformed_replies_are_refused(line, why):
    with pytest.raises(LearnerGone, match=why):
        parse_reply(line, 1)


# --- the warm launcher of the learner's commands --------------------------------------------------------


@pytest.fixture
def launcher():
    started = learner_process.Launcher()
    learner_process.use_launcher(started)
    yield started
    learner_process.use_launcher(None)
    started.close()


def test_a_forked_command_behaves_like_python(launcher, tmp_path):
    command = learner_process.Command(
        tmp_path,
        "-c",
        "import os, sys; print('hi', os.getcwd(), os.environ['EXTRA']); sys.exit(3)",
        env={"EXTRA": "yes"},
    )
    assert command.process is None, "expected the command to be forked from the launcher"
    finished = command.wait(10)
    assert finished.status == 3 and f"hi {tmp_path} yes" in finished.output


def test_a_forked_command_reports_its_traceback_and_can_be_stopped(launcher, tmp_path):
    failing = learner_process.Command(tmp_path, "-c", "raise ValueError('bad config')").wait(10)
    assert failing.status == 1 and "ValueError: bad config" in failing.output
    server = learner_process.Command(tmp_path, "-c", "import time; print('up', flush=True); time.sleep(60)")
    deadline = time.monotonic() + 10
    while "up" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.01)
    stopped = server.stop(grace=2)
    assert stopped.status is not None and "KeyboardInterrupt" in stopped.output


# A command that swaps its log for a FIFO (a reader opening it by name would block for good), leaves a
# child in its process group and prints a terminal escape meant to repaint the judge's summary.
HOSTILE_COMMAND = """
import os, time
log = os.readlink('/proc/self/fd/1')
os.unlink(log)
os.mkfifo(log)
child = os.fork()
if child == 0:
    os.closerange(0, 3)
    time.sleep(60)
    os._exit(0)
with open('child.pid', 'w') as handle:
    handle.write(str(child))
print('\\x1b[2Jdone', flush=True)
"""


def test_a_command_cannot_block_the_judge_or_outlive_it(launcher, tmp_path):
    command = learner_process.Command(tmp_path, "-c", HOSTILE_COMMAND)
    assert command.process is None, "expected the command to be forked from the launcher"
    finished = command.wait(10)
    command.close()
    assert finished.status == 0 and "\\x1b[2Jdone" in finished.output and "\x1b" not in finished.output
    stat = Path(f"/proc/{int((tmp_path / 'child.pid').read_text())}/stat")
    deadline = time.monotonic() + 5
    while stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":  # gone, or a zombie
        assert time.monotonic() < deadline, "the command's child outlived it"
        time.sleep(0.05)


def test_a_planted_status_fifo_does_not_block_the_launcher(launcher, tmp_path):
    """A FIFO planted where the next exit status goes: the judge makes its status files itself, refuses
    that name and runs the command in a fresh interpreter; the launcher serves the next one as usual."""
    os.mkfifo(launcher.folder / f"command-{launcher.next_id}.log.status")
    first = learner_process.Command(tmp_path, "-c", "raise SystemExit(3)")
    assert first.process is not None and first.wait(10).status == 3
    first.close()
    second = learner_process.Command(tmp_path, "-c", "raise SystemExit(4)")
    assert second.process is None and second.wait(10).status == 4
    second.close()


def test_a_status_file_swapped_for_a_fifo_costs_only_its_status(launcher, tmp_path):
    """Swapped after the judge made it (the learner's command runs as the judge's user outside grading):
    the launcher's non-blocking write fails, that command shows no status and is killed at its timeout."""
    first = learner_process.Command(tmp_path, "-c", "import time; time.sleep(0.5)")
    status = Path(f"{first.log_path}.status")
    status.unlink()
    os.mkfifo(status)
    assert first.wait(2).timed_out
    first.close()
    second = learner_process.Command(tmp_path, "-c", "raise SystemExit(4)")
    assert second.process is None and second.wait(10).status == 4
    second.close()


def test_a_launcher_whose_judge_died_leaves_nothing(launcher, tmp_path):
    """The kernel sends the launcher SIGTERM when its judge dies: it ends its commands and its folder."""
    server = learner_process.Command(tmp_path, "-c", "import time; time.sleep(60)")
    os.kill(launcher.process.popen.pid, signal.SIGTERM)
    launcher.process.popen.wait(10)
    assert not launcher.folder.exists()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and os.path.exists(f"/proc/{server.pid}"):
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{server.pid}"), "the command outlived its launcher"
