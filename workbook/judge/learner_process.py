"""The judge's side of the boundary: starts learner processes and reads what they say, with suspicion.

Two kinds of learner process:
- the harness (workbook/learner_side/harness.py), one per suite, restarted if the learner's code kills it:
  it serves apps built by the learner's factory and makes calls into the learner's package;
- the learner's own commands (`python -m aiohttpdemo_polls ...`), run as a learner would run them.

Both are exec'd fresh, with the judge's file descriptors closed, a scrubbed environment, warnings turned
into errors, and a process group of their own so that everything they start can be killed. A reply is
believed only as "what the learner's code said": it is read without blocking, size-capped and
schema-checked, and a process that dies or stalls is reported, never waited on forever.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HARNESS = Path(__file__).resolve().parent.parent / "learner_side" / "harness.py"
MAX_REPLY = 1 << 20
MAX_LOG = 1 << 20
REQUEST_TIMEOUT = 30.0
START_TIMEOUT = 30.0
# What a learner process inherits from the judge's environment; everything else (a DSN with the
# superuser's password, CI tokens, the report path) stays out. WORKBOOK_GRADE_RUN is the grader's marker,
# by which it finds and kills whatever a step's processes left running.
KEPT_VARIABLES = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "SYSTEMROOT",
    "WORKBOOK_GRADE_RUN",
)
ERROR_FIELDS = ("type", "name", "message", "where", "traceback")
# What the steps' apps import, loaded by the harness before any of the learner's code, while the judge
# collects its suite: about 0.3 s of a fresh interpreter's start that no longer waits on anything.
PRELOAD = (
    "aiohttp.web",
    "aiohttp_jinja2",
    "jinja2",
    "yaml",
    "trafaret",
    "psycopg2",
    "sqlalchemy",
    "aiopg.sa",
)


def learner_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A scrubbed environment: warnings as errors, SQLAlchemy's 2.0 warnings on, no bytecode written."""
    env = {name: os.environ[name] for name in KEPT_VARIABLES if name in os.environ}
    env.update(
        SQLALCHEMY_WARN_20="1", PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1", PYTHONWARNINGS="error"
    )
    env.update(extra or {})
    return env


class LearnerRaised(Exception):
    """The learner's code raised: its exception's type, message and where, as the harness saw it."""

    def __init__(self, error: dict[str, str]) -> None:
        self.error = error
        super().__init__(f"{error['name']}: {error['message']}")

    @property
    def name(self) -> str:
        return self.error["name"]

    @property
    def message(self) -> str:
        return self.error["message"]

    @property
    def where(self) -> str:
        return self.error["where"]


class LearnerGone(Exception):
    """The learner's process died, stalled, or answered something the judge cannot read."""


def _check_error(error: Any) -> dict[str, str]:
    if not isinstance(error, dict):
        raise LearnerGone("the learner's process sent an error that is not an object")
    checked = {}
    for name in ERROR_FIELDS:
        value = error.get(name, "")
        if not isinstance(value, str):
            raise LearnerGone(f"the learner's process sent an error whose {name} is not text")
        checked[name] = value[:8000]
    return checked


def parse_reply(line: bytes, expected_id: int) -> tuple[bool, Any]:
    """(True, value) or (False, error fields) from one reply line; LearnerGone if it is malformed."""
    try:
        message = json.loads(line)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise LearnerGone(
            f"the learner's process sent a reply that is not JSON ({type(exc).__name__})"
        ) from None
    if not isinstance(message, dict) or message.get("id") != expected_id:
        raise LearnerGone("the learner's process sent a reply to a request the judge did not make")
    if ("ok" in message) == ("error" in message):
        raise LearnerGone("the learner's process sent a reply that is neither a result nor an error")
    if "ok" in message:
        return True, message["ok"]
    return False, _check_error(message["error"])


def _die_with_judge() -> None:
    """In the child before exec: SIGKILL it when the judge dies (Linux), so no learner process outlives a
    judge that was killed (its process group is killed by the judge on a normal end); and cap the size of
    any file it writes, its log included, so that printing without end fills no disk."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))


PR_SET_PDEATHSIG = 1
MAX_FILE_BYTES = 64 << 20


class _Process:
    """A learner process in its own process group, its output kept in a temp file the judge reads."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str], stdin: Any = subprocess.DEVNULL):
        self.log = tempfile.TemporaryFile(prefix="workbook-learner-log-")
        stdout = subprocess.PIPE if stdin == subprocess.PIPE else self.log
        self.popen = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=self.log, start_new_session=True,
            close_fds=True, preexec_fn=_die_with_judge,
        )  # fmt: skip

    def log_size(self) -> int:
        return os.fstat(self.log.fileno()).st_size

    def log_text(self, start: int = 0) -> str:
        """What the process printed since `start` (a log_size() taken earlier), at most MAX_LOG bytes."""
        size = self.log_size()
        start = max(start, size - MAX_LOG)
        return os.pread(self.log.fileno(), size - start, start).decode("utf-8", "replace")

    def kill(self, grace: float = 0.0) -> None:
        """End the process and everything in its group (its children, a server it started)."""
        if self.popen.poll() is None and grace:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)

    def close(self) -> None:
        self.kill()
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                stream.close()
        self.log.close()


class Harness:
    """One harness process for the tree under test. `request()` sends one operation and returns its result."""

    def __init__(self, tree: Path) -> None:
        self.tree = tree
        self.process: _Process | None = None
        self.next_id = 1
        self.hello: dict[str, Any] | None = None
        self._buffer = b""

    def start(self) -> None:
        """Start the process: it preloads the libraries, then waits for `wait_ready` to import the package."""
        command = [sys.executable, "-I", "-B", "-u", "-W", "error", str(HARNESS), "--tree", str(self.tree),
                   "--preload", ",".join(PRELOAD)]  # fmt: skip
        self.process = _Process(command, self.tree, learner_env(), stdin=subprocess.PIPE)
        self._buffer = b""
        self.hello = None

    def wait_ready(self) -> dict[str, Any]:
        """The import report: {'imported': [...], 'failed': {module: error}}; starts the process if needed."""
        if self.process is None or self.process.popen.poll() is not None:
            self.close()
            self.start()
        if self.hello is None:
            ok, value = self._exchange("hello", START_TIMEOUT, {}, what="importing aiohttpdemo_polls")
            if not ok or not isinstance(value, dict) or not isinstance(value.get("failed"), dict):
                raise LearnerGone("the learner's process did not report its imports")
            self.hello = value
        return self.hello

    def exit_status(self) -> int | None:
        """The harness's exit status if it has died (killed by the learner's code, say), else None."""
        return self.process.popen.poll() if self.process else None

    @property
    def pid(self) -> int | None:
        return self.process.popen.pid if self.process else None

    def log_size(self) -> int:
        return self.process.log_size() if self.process else 0

    def log_text(self, start: int = 0) -> str:
        return self.process.log_text(start) if self.process else ""

    def request(self, op: str, timeout: float = REQUEST_TIMEOUT, **fields: Any) -> Any:
        """Run one operation in the learner's process; LearnerRaised if the learner's code raised."""
        self.wait_ready()
        ok, value = self._exchange(op, timeout, fields)
        if not ok:
            raise LearnerRaised(value)
        return value

    def _exchange(self, op: str, timeout: float, fields: dict[str, Any], what: str = "") -> tuple[bool, Any]:
        assert self.process is not None and self.process.popen.stdin is not None
        request_id = self.next_id
        self.next_id += 1
        try:
            self.process.popen.stdin.write(
                json.dumps({"id": request_id, "op": op, **fields}).encode() + b"\n"
            )
            self.process.popen.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._gone(f"{what or op}: the learner's process had already exited") from None
        return self._read(request_id, timeout, what or op)

    def _read(self, request_id: int, timeout: float, what: str) -> tuple[bool, Any]:
        assert self.process is not None and self.process.popen.stdout is not None
        stream = self.process.popen.stdout
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(stream, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                if len(self._buffer) > MAX_REPLY:
                    raise self._gone(f"{what}: the learner's process sent more than {MAX_REPLY} bytes")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._gone(f"{what}: the learner's process gave no answer within {timeout:.0f}s")
                if not selector.select(min(left, 0.5)):
                    continue
                chunk = os.read(stream.fileno(), 65536)
                if not chunk:
                    raise self._gone(f"{what}: the learner's process exited")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return parse_reply(line, request_id)

    def _gone(self, reason: str) -> LearnerGone:
        """Kill the process (the next request starts a fresh one) and say what it left in its log."""
        process = self.process
        assert process is not None
        process.kill()
        status = process.popen.returncode
        tail = "\n".join(process.log_text().strip().splitlines()[-15:])
        self.close()
        detail = f" (exit status {status})" if status is not None and status >= 0 else ""
        return LearnerGone(f"{reason}{detail}." + (f" It logged:\n{tail}" if tail else ""))

    def close(self) -> None:
        if self.process is not None:
            self.process.close()
            self.process = None
            self.hello = None


@dataclass
class Finished:
    status: int
    output: str
    timed_out: bool = False


class Command:
    """One of the learner's commands (`python -m aiohttpdemo_polls ...`), run as a learner would run it."""

    def __init__(self, tree: Path, *args: str, env: dict[str, str] | None = None) -> None:
        """`python ARGS` in `tree`: ARGS such as ("-m", "aiohttpdemo_polls", "--config", path)."""
        command = [sys.executable, "-B", "-W", "error", *args]
        self.process = _Process(command, tree, learner_env(env))

    @property
    def returncode(self) -> int | None:
        return self.process.popen.poll()

    def output(self) -> str:
        return self.process.log_text()

    def wait(self, timeout: float) -> Finished:
        try:
            status = self.process.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return Finished(self.process.popen.returncode, self.output(), timed_out=True)
        return Finished(status, self.output())

    def stop(self, grace: float = 5.0) -> Finished:
        """Ctrl+C first (so the app runs its cleanup), then kill whatever is left of the group."""
        if self.process.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.popen.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.popen.wait(grace)
        self.process.kill()
        return Finished(self.process.popen.returncode, self.output())

    def close(self) -> None:
        self.process.close()


def run_command(tree: Path, *args: str, timeout: float = 30.0, env: dict[str, str] | None = None) -> Finished:
    """Run `python ARGS` to completion in the learner's tree (a bad config, init_db), killed at `timeout`."""
    command = Command(tree, *args, env=env)
    try:
        return command.wait(timeout)
    finally:
        command.close()
