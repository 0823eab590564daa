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
import functools
import json
import os
import re
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..grading.confinement import Confinement, proc_status
from .logs import error_text, how_it_ended, without_own_frames
from .untrusted import load_json, read_capped

HARNESS = Path(__file__).resolve().parent.parent / "learner_side" / "harness.py"
LAUNCHER = HARNESS.with_name("launcher.py")
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
        super().__init__(f"{error['name']}: {error_text(error['message'])}")  # as a learner reads it

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


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Learner-written text with its control characters (ANSI escapes, carriage returns) made visible:
    shown raw in a terminal they could repaint the judge's summary."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _check_error(error: Any) -> dict[str, str]:
    if not isinstance(error, dict):
        raise LearnerGone("the learner's process sent an error that is not an object")
    checked = {}
    for name in ERROR_FIELDS:
        value = error.get(name, "")
        if not isinstance(value, str):
            raise LearnerGone(f"the learner's process sent an error whose {name} is not text")
        checked[name] = printable(value[:8000])
    return checked


def read_line(stream: Any, pending: bytearray, timeout: float) -> bytes:
    """The next line from a learner process's pipe, without ever blocking on it: what follows the line
    stays in `pending` for the next call. LearnerGone (its message finishes "the learner's process ...")
    when the process sends more than MAX_REPLY bytes without a line, says nothing for `timeout` seconds,
    or closes the pipe."""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while b"\n" not in pending:
            if len(pending) > MAX_REPLY:
                raise LearnerGone(f"sent more than {MAX_REPLY} bytes")
            left = deadline - time.monotonic()
            if left <= 0:
                raise LearnerGone(f"gave no answer within {timeout:.0f}s")
            if selector.select(min(left, 0.5)):
                chunk = os.read(stream.fileno(), 65536)
                if not chunk:
                    raise LearnerGone("exited")
                pending += chunk
    line, _, rest = bytes(pending).partition(b"\n")
    pending[:] = rest
    return line


def parse_reply(line: bytes, expected_id: int) -> tuple[bool, Any]:
    """(True, value) or (False, error fields) from one reply line; LearnerGone if it is malformed."""
    message = load_json(line)  # None too for nesting deep enough to recurse out
    if message is None:
        raise LearnerGone("the learner's process sent a reply that is not JSON")
    if not isinstance(message, dict) or message.get("id") != expected_id:
        raise LearnerGone("the learner's process sent a reply to a request the judge did not make")
    if ("ok" in message) == ("error" in message):
        raise LearnerGone("the learner's process sent a reply that is neither a result nor an error")
    if "ok" in message:
        return True, message["ok"]
    return False, _check_error(message["error"])


def _die_with_judge(death_signal: int = signal.SIGKILL, confinement: Confinement | None = None) -> None:
    """In the child before exec (after it took the confined uid, which would clear the death signal): the
    confinement's limits; a signal when the judge dies (Linux), so no learner process outlives a judge
    that was killed (its process group is killed by the judge on a normal end); and a cap on the size of
    any file it writes, its log included, so that printing without end fills no disk. SIGINT back to its
    default: the judge stops a learner's program with it (so its cleanup runs), and a judge started in the
    background by a shell inherits SIGINT ignored, which would leave the program only SIGKILL."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if confinement is not None:
        confinement.limit()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, death_signal)
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))


_confinement: Confinement | None = None
_python: str | None = None


def use_python(python: str | None) -> None:
    """Run the learner's processes on this interpreter (the step's environment: workbook/environments.py)."""
    global _python
    _python = python


def learner_python() -> str:
    """The interpreter of a learner process: the confinement's copy, else the step's, else the judge's."""
    if _confinement is not None:
        return _confinement.python
    return _python or sys.executable


def use_confinement(confinement: Confinement | None) -> None:
    """Start every learner process of this judge so confined (the grader's choice: grading.confinement)."""
    global _confinement
    _confinement = confinement


def learner_script(path: Path) -> str:
    """Where a learner process finds one of workbook/learner_side's scripts: the confinement's copy, which
    its uid can reach, or the script itself."""
    return _confinement.script(path.name) if _confinement is not None else str(path)


PR_SET_PDEATHSIG = 1
MAX_FILE_BYTES = 64 << 20


def log_tail(fd: int, start: int = 0) -> str:
    """What a learner process wrote to the log file `fd` since offset `start`: at most the last MAX_LOG
    bytes, read through the judge's own descriptor, control characters shown escaped."""
    size = os.fstat(fd).st_size
    start = max(start, size - MAX_LOG)
    return printable(os.pread(fd, size - start, start).decode("utf-8", "replace"))


class _Process:
    """A learner process in its own process group, its output kept in a temp file the judge reads."""

    def __init__(
        self, command: list[str], cwd: Path, env: dict[str, str], stdin: Any = subprocess.DEVNULL,
        death_signal: int = signal.SIGKILL, pass_fds: tuple[int, ...] = (),
    ):  # fmt: skip
        self.log = tempfile.TemporaryFile(prefix="workbook-learner-log-")
        stdout = subprocess.PIPE if stdin == subprocess.PIPE else self.log
        confinement, credentials = _confinement, {}
        if confinement is not None:
            command, env = confinement.command(command, cwd), confinement.environment(env)
            credentials = confinement.credentials()
        self.popen = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=self.log, start_new_session=True,
            close_fds=True, preexec_fn=functools.partial(_die_with_judge, death_signal, confinement),
            pass_fds=pass_fds, **credentials,
        )  # fmt: skip

    def log_size(self) -> int:
        return os.fstat(self.log.fileno()).st_size

    def log_text(self, start: int = 0) -> str:
        """What the process printed since `start` (a log_size() taken earlier), at most MAX_LOG bytes."""
        return log_tail(self.log.fileno(), start)

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

    def __init__(self, tree: Path, preload: tuple[str, ...] = PRELOAD) -> None:
        self.tree = tree
        self.preload = preload
        self.process: _Process | None = None
        self.next_id = 1
        self.hello: dict[str, Any] | None = None
        self._pending = bytearray()
        self.launcher: Launcher | None = None  # set by Launcher.beside: the harness forks it

    def start(self) -> None:
        """Start the process: it preloads the libraries, then waits for `wait_ready` to import the package."""
        command = [learner_python(), "-I", "-B", "-u", "-W", "error", learner_script(HARNESS),
                   "--tree", str(self.tree), "--preload", ",".join(self.preload)]  # fmt: skip
        passed: tuple[int, ...] = ()
        if self.launcher is not None:
            passed = self.launcher.pipes_for_harness()
            command += ["--launcher", f"{passed[0]},{passed[1]},{self.launcher.folder}"]
        try:
            self.process = _Process(command, self.tree, learner_env(), stdin=subprocess.PIPE, pass_fds=passed)
        finally:
            for fd in passed:
                os.close(fd)
        self._pending = bytearray()
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
        try:
            line = read_line(self.process.popen.stdout, self._pending, timeout)
        except LearnerGone as exc:
            raise self._gone(f"{what}: the learner's process {exc}") from None
        return parse_reply(line, request_id)

    def _gone(self, reason: str) -> LearnerGone:
        """Kill the process (the next request starts a fresh one) and say what it left in its log."""
        process = self.process
        assert process is not None
        process.kill()
        status = process.popen.returncode
        tail = "\n".join(without_own_frames(process.log_text()).strip().splitlines()[-15:])
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
    waited: float = 0.0  # how long the check waited before it killed a command that had not exited

    @property
    def ended(self) -> str:
        """How it ended, in words for a message: never the -9 of a kill the check made itself."""
        return how_it_ended(self.status, self.waited if self.timed_out else None)


class Launcher:
    """The warm launcher (workbook/learner_side/launcher.py): forks the learner's commands with the libraries
    already imported. Used by Command when one is running; Command starts a fresh interpreter otherwise.

    `Launcher()` runs it as a process of its own; `Launcher.beside(harness)` has the harness fork it once
    it has preloaded the libraries (one warm interpreter per suite instead of two), over a pair of pipes
    made again at every start of the harness.
    """

    def __init__(self, own_process: bool = True) -> None:
        confinement = _confinement
        if confinement is None:
            self.folder = Path(tempfile.mkdtemp(prefix="workbook-commands-"))
        else:  # in root's spool: the learner's uid writes into logs the judge makes there, creates none
            self.folder = Path(tempfile.mkdtemp(prefix="workbook-commands-", dir=confinement.spool))
            if confinement.uid is not None:
                os.chown(self.folder, 0, confinement.gid or -1)
                os.chmod(self.folder, 0o750)
        self.next_id = 1
        self._pending = bytearray()
        self.process: _Process | None = None
        self.harness: Harness | None = None
        self.requests: Any = None
        self.replies: Any = None
        if own_process:
            command = [learner_python(), "-I", "-B", "-u", "-W", "error", learner_script(LAUNCHER),
                       "--preload", ",".join(PRELOAD), "--folder", str(self.folder)]  # fmt: skip
            # SIGTERM, not SIGKILL, when the judge dies: the launcher ends its commands, removes its folder.
            self.process = _Process(
                command, self.folder, learner_env(), stdin=subprocess.PIPE, death_signal=signal.SIGTERM
            )
            self.requests, self.replies = self.process.popen.stdin, self.process.popen.stdout

    @classmethod
    def beside(cls, harness: Harness) -> Launcher:
        launcher = cls(own_process=False)
        launcher.harness = harness
        harness.launcher = launcher
        return launcher

    def pipes_for_harness(self) -> tuple[int, int]:
        """A fresh pair of pipes for the launcher the harness forks: (its read end, its write end), to be
        passed to the harness; the judge keeps the other ends. The old pair goes with the old harness."""
        self._close_pipes()
        their_read, our_write = os.pipe()
        our_read, their_write = os.pipe()
        self.requests, self.replies = os.fdopen(our_write, "wb"), os.fdopen(our_read, "rb")
        self._pending = bytearray()
        return their_read, their_write

    def _close_pipes(self) -> None:
        for stream in (self.requests, self.replies):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.requests = self.replies = None

    def _alive(self) -> bool:
        if self.process is not None:
            return self.process.popen.poll() is None
        harness = self.harness
        return harness is not None and harness.exit_status() is None and harness.pid is not None

    @property
    def sandbox_pid(self) -> int | None:
        """The process the launcher's children descend from: its own, or the harness's."""
        if self.process is not None:
            return self.process.popen.pid
        return self.harness.pid if self.harness is not None else None

    def launch(
        self, tree: Path, args: tuple[str, ...], env: dict[str, str] | None
    ) -> tuple[int, Path, int] | None:
        """Fork `python ARGS` in `tree`: (pid, log path, the judge's own descriptor of that log), or None if
        the launcher cannot (then Popen). The judge reads the log through its descriptor only: the learner's
        command may replace the file at that path (by a FIFO that would block a reader, say)."""
        if not self._alive() or self.requests is None or args[:1] not in (("-m",), ("-c",)):
            return None
        log = self.folder / f"command-{self.next_id}.log"
        made = os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:  # the log and its status file, made by the judge: the launcher only writes into them
            log_fd = os.open(log, made, 0o600)
        except OSError:  # planted there by a learner's process: this Command starts a fresh interpreter
            self.next_id += 1
            return None
        try:
            status_fd = os.open(f"{log}.status", made, 0o600)
        except OSError:
            os.close(log_fd)
            self.next_id += 1
            return None
        if _confinement is not None and _confinement.uid is not None:  # the confined launcher writes them
            for fd in (log_fd, status_fd):
                os.fchown(fd, _confinement.uid, _confinement.gid or -1)
        os.close(status_fd)
        launched = self._launch(tree, args, env, log)
        if launched is not None and _confinement is not None:
            sandbox = self.sandbox_pid
            launched = host_pid(launched, sandbox, _confinement) if sandbox is not None else None
        if launched is None:
            os.close(log_fd)
            return None
        return (launched, log, log_fd)

    def _launch(self, tree: Path, args: tuple[str, ...], env: dict[str, str] | None, log: Path) -> int | None:
        request = {
            "id": self.next_id,
            "argv": list(args),
            "cwd": str(tree),
            "log": str(log),
            "env": env or {},
        }
        self.next_id += 1
        try:
            self.requests.write(json.dumps(request).encode() + b"\n")
            self.requests.flush()
            line = read_line(self.replies, self._pending, START_TIMEOUT)
        except (OSError, LearnerGone):
            return None
        reply = load_json(line)
        if (
            not isinstance(reply, dict)
            or reply.get("id") != request["id"]
            or not isinstance(reply.get("pid"), int)
        ):
            return None
        pid = reply["pid"]
        return pid if pid > 1 else None

    def close(self) -> None:
        if self.process is not None:
            self.process.close()
        else:
            self._close_pipes()  # the launcher sees the end of its input and ends its commands
        shutil.rmtree(self.folder, ignore_errors=True)


def host_pid(reported: int, sandbox: int, confinement: Confinement) -> int | None:
    """The judge's view of a pid the confined launcher reported, or None.

    The judge signals that pid as root, so the launcher (learner code could have taken it over) must not
    be able to name any process but its own children: the pid must be a descendant of the launcher's own
    process (`sandbox`, the bwrap or launcher the judge started) running under the run's uid. Inside
    bubblewrap the launcher sees its pid namespace, where pids differ: its number is looked up in the last
    field of NSpid (the pid as seen from the innermost namespace).
    """
    uid = confinement.uid if confinement.uid is not None else os.geteuid()
    for entry in Path("/proc").glob("[0-9]*"):
        fields = proc_status(int(entry.name))
        nspid = fields.get("NSpid", "").split()
        if not nspid or int(nspid[-1]) != reported or fields.get("Uid", "").split()[:1] != [str(uid)]:
            continue
        if confinement.namespaces != (len(nspid) > 1):
            continue
        pid, seen = int(entry.name), 0
        while pid > 1 and seen < 64:  # up the tree to the sandbox's process
            pid = int(proc_status(pid).get("PPid", "0") or 0)
            if pid == sandbox:
                return int(entry.name)
            seen += 1
    return None


_launcher: Launcher | None = None


def use_launcher(launcher: Launcher | None) -> None:
    """Let every Command of this process fork from `launcher` (the plugin starts one per suite)."""
    global _launcher
    _launcher = launcher


class Command:
    """One of the learner's commands (`python -m aiohttpdemo_polls ...`), run as a learner would run it.

    Forked from the warm launcher when there is one (its own session, output to a log, exit status written
    by the launcher), else a fresh `python -B -W error ARGS` in its own session.
    """

    def __init__(self, tree: Path, *args: str, env: dict[str, str] | None = None) -> None:
        """`python ARGS` in `tree`: ARGS such as ("-m", "aiohttpdemo_polls", "--config", path)."""
        launched = _launcher.launch(tree, args, env) if _launcher is not None else None
        self.process: _Process | None = None
        if launched is None:
            command = [learner_python(), "-B", "-W", "error", *args]
            self.process = _Process(command, tree, learner_env(env))
            self.pid = self.process.popen.pid
        else:
            self.pid, self.log_path, self.log_fd = launched
            self.status_path = Path(f"{self.log_path}.status")
        self._status: int | None = None

    @property
    def returncode(self) -> int | None:
        if self.process is not None:
            return self.process.popen.poll()
        if self._status is None:
            data = read_capped(self.status_path, 64)
            if data is not None:
                with contextlib.suppress(ValueError):
                    self._status = int(data)
        return self._status

    def output(self) -> str:
        if self.process is not None:
            return self.process.log_text()
        with contextlib.suppress(OSError):
            return log_tail(self.log_fd)
        return ""

    def _wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.returncode is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.returncode

    def _kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            return
        # Its group even once it has exited (or a status file says so): a child it left behind in its
        # group lives on otherwise. The group's id cannot be reused while any member is alive.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.returncode is None:  # not reaped yet, so the pid is still this command's
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)  # in case it had no group of its own yet
        self._wait(5)

    def wait(self, timeout: float) -> Finished:
        status = self._wait(timeout)
        if status is None:
            self._kill()
            return Finished(self.returncode, self.output(), timed_out=True, waited=timeout)
        return Finished(status, self.output())

    def stop(self, grace: float = 5.0) -> Finished:
        """Ctrl+C first (so the app runs its cleanup), then kill whatever is left of the group."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGINT)
            self._wait(grace)
        self._kill()
        return Finished(self.returncode, self.output())

    def close(self) -> None:
        if self.process is not None:
            self.process.close()
        else:
            self._kill()
            if self.log_fd >= 0:
                os.close(self.log_fd)
                self.log_fd = -1


def run_command(tree: Path, *args: str, timeout: float = 30.0, env: dict[str, str] | None = None) -> Finished:
    """Run `python ARGS` to completion in the learner's tree (a bad config, init_db), killed at `timeout`."""
    command = Command(tree, *args, env=env)
    try:
        return command.wait(timeout)
    finally:
        command.close()
