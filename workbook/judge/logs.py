"""Reading what a learner process logged: the one line that says why it failed, and how it ended."""

from __future__ import annotations

import re
import signal

_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)')

# What SQLAlchemy appends to the driver's own error: the statement, its parameters and a link to its
# documentation. The driver's error comes first, on the line that names the exception.
LIBRARY_TRAILERS = ("[SQL: ", "[parameters: ", "(Background on this error at:")
MAX_ERROR_LINES = 4
MAX_ERROR_CHARS = 400


def error_text(message: str) -> str:
    """An exception's message as a learner needs it: its own lines without SQLAlchemy's trailers, at most
    MAX_ERROR_LINES lines of MAX_ERROR_CHARS characters (an SQL statement can be long)."""
    lines = [line for line in message.strip().splitlines() if not line.lstrip().startswith(LIBRARY_TRAILERS)]
    shown = [line if len(line) <= MAX_ERROR_CHARS else line[:MAX_ERROR_CHARS] + "..." for line in lines]
    return "\n".join(shown[:MAX_ERROR_LINES] + (["..."] if len(shown) > MAX_ERROR_LINES else []))


# A frame of the workbook's own learner-side scripts (harness.py, launcher.py, or their confined copies).
_OWN_FRAME = re.compile(r'^\s*File "[^"]*[\\/]learner_side[\\/][^"]+", line \d+')


def without_own_frames(text: str) -> str:
    """A learner process's output without the frames of the workbook's own scripts, whose paths and code
    are none of the learner's business: each such `File ...` line goes with the source lines under it."""
    kept, skipping = [], False
    for line in text.splitlines():
        if _OWN_FRAME.match(line):
            skipping = True
        elif not (skipping and line.startswith("    ")):
            skipping = False
            kept.append(line)
    return "\n".join(kept)


def last_exception(log: str, package: str = "aiohttpdemo_polls") -> str:
    """'aiohttpdemo_polls/views.py, line 9: NameError: ...' for the last traceback in `log`, or ''.

    The frame shown is the deepest one inside the learner's package: that is the line to fix. The error is
    the line that names the exception, with its first line of message: for a library's error that wraps
    the driver's (SQLAlchemy's), that line is the driver's own, and what follows it is the statement and a
    link. A log with no traceback gives nothing.
    """
    if "Traceback (most recent call last)" not in log:
        return ""
    tail = log.rsplit("Traceback (most recent call last)", 1)[1].splitlines()[1:]
    place = ""
    for line in tail:
        match = _FRAME.match(line)
        if match and f"/{package}/" in match["file"].replace("\\", "/"):
            relative = package + match["file"].replace("\\", "/").split(f"/{package}", 1)[1]
            place = f"{relative}, line {match['line']}"
    errors = [line.strip() for line in tail if line.strip() and not line.startswith((" ", "\t"))]
    first = error_text(errors[0]) if errors else ""
    return f"{place}: {first}" if place and first else first


def how_it_ended(status: int | None, killed_after: float | None = None) -> str:
    """A learner process's end in words, never a bare sentinel such as -9: 'it exited with status 1',
    'it was still running after 30 s, so the check killed it', 'it was killed by SIGSEGV'."""
    if killed_after is not None:
        return f"it was still running after {killed_after:g} s, so the check killed it"
    if status is None:
        return "it has not exited"
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"it was killed by {name}"
    return f"it exited with status {status}"
