"""How a command started by nox ends when nox is told to stop.

nox passes neither SIGTERM nor SIGHUP on to the command it runs: killed alone (a process manager, an
editor's stop button, a closed terminal), it would leave that command running, and with it whatever the
command started (test processes, the database server, temp folders, a served app, JupyterLab).
`end_with_parent` turns both signals, and the parent's death, into a clean exit.
`python -m workbook.lifetime [--parent PID] COMMAND ...` runs a program that is not ours (JupyterLab) the
same way: it ends that program when it must end itself. Kept free of the package's heavier imports, so any
environment can run it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

from . import STARTED_BY

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
ENDING_SIGNALS = ("SIGTERM", "SIGHUP")
_ending: list[int] = []  # the signal that is ending this command, once one came
_held: list[bool] = []  # non-empty while a child is being started: the signal waits until it is known


def _exit_on_signal(signum: int, _frame: object) -> None:
    """End the command as SystemExit(128 + signal), so `finally` blocks and context managers clean up (test
    processes, the database server, temp folders); a second signal does not cut that cleanup short."""
    if not _ending:
        _ending.append(signum)
        if not _held:
            raise SystemExit(128 + signum)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold an ending signal while the block runs, and act on it when the block ends.

    For a block that starts a child: raised inside `subprocess.Popen`, after the fork but before Popen has
    returned, the exit would leave the caller without the child's handle, so nothing could end the child.
    """
    _held.append(True)
    try:
        yield
    finally:
        _held.pop()
    if _ending and not _held:
        raise SystemExit(128 + _ending[0])


def end_with_parent(parent: int | None = None) -> None:
    """SIGTERM and SIGHUP end a command cleanly, and so does its parent's death (Linux): PR_SET_PDEATHSIG
    makes the kernel send SIGTERM here when the parent dies. Elsewhere, or without prctl, a no-op.

    `parent` is the pid the caller started us from, when it said so: a parent that died while this
    interpreter was still starting is only noticed that way (STARTED_BY is then already the reaper)."""
    for name in ENDING_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _exit_on_signal)
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != (parent or STARTED_BY):  # it died before the kernel was asked: no signal will come
        _exit_on_signal(signal.SIGTERM, None)


def run_until_told(command: list[str], grace: float = 10.0, parent: int | None = None) -> int:
    """Run `command` and wait; when this process must end, end the command too (SIGTERM, then SIGKILL)."""
    end_with_parent(parent)
    process = None
    try:
        with signals_held():  # the signal that comes while the program starts ends it once it has started
            process = subprocess.Popen(command)
        return process.wait()
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main(argv: list[str]) -> int:
    """`python -m workbook.lifetime [--parent PID] COMMAND ...`: hand-parsed, since everything after the
    option is the command's own, options included."""
    if argv[:1] == ["--parent"] and len(argv) > 2 and argv[1].isdigit():
        return run_until_told(argv[2:], parent=int(argv[1]))
    return run_until_told(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
