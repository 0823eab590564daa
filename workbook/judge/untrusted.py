"""Reading files that a learner's process could have written: never blocking, never unbounded, never
trusting their shape. A FIFO, a symlink, a 2 GB file or JSON nested ten thousand deep gives None."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Any

DEFAULT_LIMIT = 8 << 20


def read_capped(path: Path, limit: int = DEFAULT_LIMIT) -> bytes | None:
    """The bytes of a regular file of at most `limit` bytes, else None. O_NONBLOCK keeps a FIFO from
    blocking the open; O_NOFOLLOW refuses a symlink planted where the file should be."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        return data if len(data) <= limit else None
    except OSError:
        return None
    finally:
        os.close(fd)


def load_json(data: bytes | str) -> Any:
    """json.loads, or None for anything that is not JSON (including nesting deep enough to recurse out)."""
    with contextlib.suppress(ValueError, RecursionError, UnicodeDecodeError):
        return json.loads(data)
    return None


def read_json_object(path: Path, limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
    """A JSON object from `path`, or {} when the file is missing, special, too big or not an object."""
    data = read_capped(path, limit)
    value = load_json(data) if data is not None else None
    return value if isinstance(value, dict) else {}
