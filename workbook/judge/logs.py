"""Reading what a learner process logged: the one line that says why it failed."""

from __future__ import annotations

import re

_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)')


def last_exception(log: str, package: str = "aiohttpdemo_polls") -> str:
    """'aiohttpdemo_polls/views.py, line 9: NameError: ...' for the last traceback in `log`, or ''.

    The frame shown is the deepest one inside the learner's package: that is the line to fix. A log with no
    traceback gives its last non-blank line only when that line names an error.
    """
    if "Traceback (most recent call last)" not in log:
        return ""
    tail = log.rsplit("Traceback (most recent call last)", 1)[1].splitlines()
    place = ""
    for line in tail:
        match = _FRAME.match(line)
        if match and f"/{package}/" in match["file"].replace("\\", "/"):
            relative = package + match["file"].replace("\\", "/").split(f"/{package}", 1)[1]
            place = f"{relative}, line {match['line']}"
    errors = [line.strip() for line in tail if line.strip() and not line.startswith((" ", "\t"))]
    last = errors[-1] if errors else ""
    if last.startswith("(Background on this error at:"):  # SQLAlchemy ends on a link; its first line says why
        last = next((line for line in reversed(errors) if line.startswith("sqlalchemy.")), last)
    return f"{place}: {last}" if place and last else last
