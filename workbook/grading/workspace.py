"""The grading run's workspace (temp folder `workbook-grade-*`), removed even when the grader was killed.

A grader ends its run by removing its workspace (snapshots, sandboxes, unpacked submissions: hundreds of
MB), but a SIGKILL or a power cut leaves no chance to. So every workspace holds, written first thing, an
owner record (owner.json: the grader's pid, its start time, the boot and the pid namespace), and the next
run removes the workspaces whose owner is provably gone, as the PostgreSQL cluster reaper does with
clusters (workbook/pg.py). The temp folder is everybody's, so nothing is believed that another user could
have made: only real folders of our own uid, writable by no one else, whose owner record is a small
regular file of ours; symlinks are never followed, and a folder without a readable record is left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..pg import SMALL_FILE, _owner_alive, _process_start_ticks

PREFIX = "workbook-grade-"
OWNER_FILE = "owner.json"
OUTSIDE_FILE = "outside.json"  # what the grader made outside its workspace (see remember)
KIND = "workbook-grade"


def _boot_id() -> str:
    """This boot's id: a pid recorded before a reboot names nobody now."""
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return ""


def _pid_namespace() -> str:
    """Our pid namespace: a pid recorded in another one (a container sharing /tmp) cannot be checked here."""
    with contextlib.suppress(OSError):
        return os.readlink("/proc/self/ns/pid")
    return ""


def write_owner(folder: Path) -> None:
    """Record who uses `folder`, as a file only we can have made (O_EXCL, never through a link)."""
    record = {
        "kind": KIND,
        "pid": os.getpid(),
        "start_ticks": _process_start_ticks(os.getpid()),
        "boot_id": _boot_id(),
        "pid_namespace": _pid_namespace(),
    }
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(folder / OWNER_FILE, flags, 0o600), "w") as out:
        out.write(json.dumps(record))


def _private(info: os.stat_result) -> bool:
    """Ours, and writable by nobody else: nobody else could have put or changed anything in it."""
    return info.st_uid == os.geteuid() and not stat.S_IMODE(info.st_mode) & 0o022


def _read_record(folder: Path, name: str) -> dict[str, Any] | None:
    """A JSON record of ours in a real, private folder of ours; None for anything else."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # a symlink (ELOOP), a file (ENOTDIR), gone
        return None
    try:
        if not _private(os.fstat(dir_fd)):
            return None
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        fd = os.open(name, flags, dir_fd=dir_fd)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or not _private(info) or info.st_size > SMALL_FILE:
                return None
            record = json.loads(os.read(fd, SMALL_FILE + 1))
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return None
    finally:
        os.close(dir_fd)
    return record if isinstance(record, dict) and record.get("kind") == KIND else None


def remember(folder: Path, made: list[str]) -> None:
    """Name, in the workspace, the folders outside it that the grader's process made and a SIGKILL would
    leave too (multiprocessing's pymp-* folder, where the fork server listens): they go with it."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(folder / OUTSIDE_FILE, flags, 0o600), "w") as out:
        out.write(json.dumps({"kind": KIND, "made": made}))


def _remove_outside(path: Path) -> None:
    """A folder a killed grader named: removed only if it is still a multiprocessing folder of ours, a real
    folder (not a link) that nobody else may enter."""
    try:
        info = os.lstat(path)
    except OSError:
        return
    closed = info.st_uid == os.geteuid() and not stat.S_IMODE(info.st_mode) & 0o077
    if path.name.startswith("pymp-") and stat.S_ISDIR(info.st_mode) and closed:
        _remove(path)


def abandoned(record: dict[str, Any]) -> bool:
    """Whether the grader that wrote `record` is provably gone: it ran before this boot, or, in our pid
    namespace, no process has its pid and start time. A record from another pid namespace proves nothing."""
    booted, recorded = _boot_id(), record.get("boot_id")
    if booted and isinstance(recorded, str) and recorded and recorded != booted:
        return True
    if recorded != booted or record.get("pid_namespace") != _pid_namespace():
        return False
    pid = record.get("pid")
    return isinstance(pid, int) and not isinstance(pid, bool) and not _owner_alive(record)


def abandoned_workspaces(parent: Path | None = None) -> list[Path]:
    """Workspaces in the temp folder (or `parent`) whose grader is gone; live or foreign ones are not."""
    parent = Path(parent or tempfile.gettempdir())
    found = []
    with contextlib.suppress(OSError), os.scandir(parent) as entries:
        for entry in entries:
            if not entry.name.startswith(PREFIX):
                continue
            record = _read_record(Path(entry.path), OWNER_FILE)
            if record is not None and abandoned(record):
                found.append(Path(entry.path))
    return found


def _remove(folder: Path) -> None:
    """rmtree (which never follows a link); for a grader that is not root, again after giving back the
    rights that learner code running under its uid may have taken from folders (mode 000 stops rmtree)."""
    shutil.rmtree(folder, ignore_errors=True)
    if not os.path.lexists(folder) or os.geteuid() == 0:
        return
    for root, dirs, _files in os.walk(folder):
        for name in dirs:  # a link among them is refused (NotImplementedError), never followed
            with contextlib.suppress(OSError, NotImplementedError):
                os.chmod(os.path.join(root, name), 0o700, follow_symlinks=False)
    shutil.rmtree(folder, ignore_errors=True)


def reap_abandoned_workspaces(parent: Path | None = None) -> list[Path]:
    """Remove the workspaces of graders that were killed; return what was removed."""
    reaped = abandoned_workspaces(parent)
    for folder in reaped:
        outside = _read_record(folder, OUTSIDE_FILE) or {}
        made = outside.get("made")
        for path in made if isinstance(made, list) else []:
            if isinstance(path, str) and os.path.isabs(path):
                _remove_outside(Path(path))
        _remove(folder)
    return reaped


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    """A fresh workspace (mode 0700) with its owner record, removed afterwards; killed graders' go first."""
    reap_abandoned_workspaces()
    folder = Path(tempfile.mkdtemp(prefix=PREFIX))
    try:
        write_owner(folder)
        yield folder
    finally:
        _remove(folder)
