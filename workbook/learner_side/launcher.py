"""A warm launcher for the learner's commands: libraries preloaded, none of the learner's code.

`python -m aiohttpdemo_polls --config FILE` costs a fresh interpreter about 0.4 s of CPU to import aiohttp,
SQLAlchemy, aiopg and Jinja2 before the learner's first line runs, and a step's suite starts several. This
process, exec'd fresh by the judge with a scrubbed environment and warnings as errors, imports those
libraries once and then forks one child per command. The child is what `python -B -W error ARGS` run in
the learner's folder would be: its own session, its folder as sys.path[0] and working directory, its output
in a log file, its argv, then the learner's module run as __main__. It never imports the learner's package
itself, so no learner state is shared between commands.

Protocol: one JSON request per line on stdin ({"id", "argv", "cwd", "log", "env"}), one JSON reply per line
on stdout ({"id", "pid"} or {"id", "error"}). A child's exit status is written next to its log, as
LOG.status, when the launcher reaps it: that is how the judge learns it ended.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import json
import os
import runpy
import shutil
import signal
import sys
import traceback
from typing import Any

PR_SET_PDEATHSIG = 1
status_files: dict[int, str] = {}


def reap(signum: int, frame: Any) -> None:
    """SIGCHLD: record the exit status of every child that ended (a status file written whole)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        path = status_files.pop(pid, None)
        if path:
            write_status(path, os.waitstatus_to_exitcode(status))


def write_status(path: str, code: int) -> None:
    """LOG.status: into the empty file the judge made for it (a confined launcher may create no file),
    never blocking and never through a link, whatever was planted there (then the judge sees no status,
    waits out its timeout and kills the command's group)."""
    flags = os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK
    with contextlib.suppress(OSError):
        fd = os.open(path, flags)
        try:
            os.write(fd, str(code).encode())
        finally:
            os.close(fd)


def run_child(request: dict[str, Any]) -> None:
    """In the forked child: become `python ARGS` in the learner's folder, then leave with its status."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # Ctrl+C is how the judge stops the program (its cleanup runs): a launcher started in the background
        # by a shell inherits SIGINT ignored, and the program must not.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.setsid()
        if sys.platform.startswith("linux"):  # die with the launcher, which dies with the judge
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)  # made by the judge
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.environ.update(request.get("env", {}))
        os.chdir(request["cwd"])
        argv = list(request["argv"])
        sys.path[0:0] = [request["cwd"]]
        # The command line `python ARGS` would have had, not the launcher's own (its options, its path).
        sys.orig_argv = [sys.executable, "-B", "-W", "error", *argv]
        try:
            if argv[0] == "-m":
                sys.argv = [argv[1], *argv[2:]]
                runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
            elif argv[0] == "-c":
                sys.argv = ["-c", *argv[2:]]
                exec(
                    compile(argv[1], "<string>", "exec"),
                    {"__name__": "__main__", "__builtins__": __builtins__},
                )
            else:
                raise SystemExit(f"the launcher runs -m MODULE or -c CODE, not {argv[0]!r}")
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException as exc:
            # From the learner's first frame, as `python -m` shows it: this file's own frame is not theirs.
            if exc.__traceback__ is not None:
                exc.__traceback__ = exc.__traceback__.tb_next
            traceback.print_exception(exc)
            code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preload", default="")
    parser.add_argument("--folder", default="", help="the judge's folder for this launcher's logs")
    args = parser.parse_args()
    for name in filter(None, args.preload.split(",")):
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    serve(args.folder)


def serve(folder: str) -> None:
    """Answer the judge's requests on stdin until it closes them. Also entered by the harness, which forks
    its launcher once it has preloaded the libraries (one warm interpreter for both, not two)."""

    def shut_down(*_: Any) -> None:
        """The judge is gone (SIGTERM from the kernel, or end of input): end every command, leave no trace."""
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for pid in list(status_files):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGCHLD, reap)
    replies = sys.stdout
    for line in sys.stdin:
        request: dict[str, Any] = {}
        try:
            request = json.loads(line)
            status_path = str(request["log"]) + ".status"
            # SIGCHLD waits until the child is known, or a child quick to exit would be reaped unrecorded.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
            try:
                pid = os.fork()
                if pid == 0:
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
                    run_child(request)
                status_files[pid] = status_path
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
            reply: dict[str, Any] = {"id": request.get("id"), "pid": pid}
        except Exception as exc:
            reply = {"id": request.get("id"), "error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    shut_down()


if __name__ == "__main__":
    main()
