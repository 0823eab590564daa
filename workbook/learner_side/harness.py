"""The learner-side harness: serves the learner's apps and makes the calls the judge asks for.

It runs in a process of its own (`python -I -B -u -W error harness.py --tree TREE`), started by the
judge (workbook/judge/learner_process.py). It knows no expected value: it imports the learner's package,
builds apps with the learner's factory, serves them on loopback, calls the learner's functions and reports
plain results (JSON values, or an exception's type and message). The judge decides what they mean.

Protocol: one JSON request per line on stdin, one JSON reply per line on the file descriptor that was
stdout when the process started. Everything the learner's code prints (stdout and stderr) and every log
record goes to stderr, which the judge keeps as "what the learner's process logged".

Anything the learner's code can do, it can also do to this harness; its replies are therefore believed
only as "what the learner's code said", never as a verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime
import decimal
import gc
import importlib
import importlib.util
import inspect
import json
import logging
import os
import pkgutil
import select
import signal
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

PACKAGE = "aiohttpdemo_polls"
MAX_REPLY = 1 << 20  # a reply larger than this is refused here, and again by the judge
MAX_TEXT = 4000
# Where the standard library's code lives (frozen modules included): a file it opens for the learner's
# code is the learner's blocking call.
STDLIB = (sysconfig.get_paths()["stdlib"], "<frozen ")


class HarnessError(Exception):
    """A request the harness itself cannot carry out (an unknown app id, a name that is missing, ...)."""

    kind = "HarnessError"


class MissingName(HarnessError):
    """The learner's package lacks a module or name the judge asked for."""

    kind = "MissingName"


# --- replies ---------------------------------------------------------------------------------------------


def to_json(value: Any, depth: int = 0) -> Any:
    """A JSON-able copy of what the learner's code returned: rows become dicts, dates ISO strings."""
    if depth > 20:
        return {"__repr__": "...", "__type__": type(value).__name__}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (datetime.date, datetime.datetime, datetime.time)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    mapping = getattr(value, "_mapping", None)  # SQLAlchemy 1.4/2 Row
    if isinstance(mapping, Mapping):
        value = mapping
    if isinstance(value, Mapping) or (hasattr(value, "keys") and hasattr(value, "__getitem__")):
        with contextlib.suppress(Exception):
            return {str(key): to_json(value[key], depth + 1) for key in list(value.keys())}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(item, depth + 1) for item in value]
    return {"__repr__": repr(value)[:MAX_TEXT], "__type__": qualified_type(value)}


def qualified_type(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def tree_frame(tb: Any, tree: Path) -> str:
    """'aiohttpdemo_polls/views.py, line 12: <code>' for the deepest frame inside the learner's tree."""
    found = ""
    for frame in traceback.extract_tb(tb):
        with contextlib.suppress(ValueError):
            relative = Path(frame.filename).resolve().relative_to(tree)
            found = f"{relative}, line {frame.lineno}: {(frame.line or '').strip()}"
    return found


def describe_exception(exc: BaseException, tree: Path) -> dict[str, Any]:
    message = str(exc)
    if isinstance(exc, SyntaxError) and exc.filename:
        with contextlib.suppress(ValueError):
            where = f"{Path(exc.filename).resolve().relative_to(tree)}, line {exc.lineno}"
            return {"type": qualified_type(exc), "name": type(exc).__name__, "message": str(exc.msg),
                    "where": f"{where}: {(exc.text or '').strip()}",
                    "traceback": ""}  # fmt: skip
    subs = getattr(exc, "exceptions", None)
    if isinstance(subs, (list, tuple)):  # an ExceptionGroup: the causes matter more than the wrapper
        message += "".join(f"\n  {type(sub).__name__}: {sub}" for sub in subs[:5])
    return {
        "type": qualified_type(exc),
        "name": type(exc).__name__,
        "message": message[:MAX_TEXT],
        "where": tree_frame(exc.__traceback__, tree),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-MAX_TEXT:],
    }


def harness_error(exc: HarnessError) -> dict[str, str]:
    return {"type": exc.kind, "name": exc.kind, "message": str(exc), "where": "", "traceback": ""}


def text_inside(statement: Any) -> Any:
    """The first text() piece inside an expression (update(...).where(text(...))), or None: SQL text
    pasted together from values is the same mistake when an expression carries it to execute()."""
    try:
        from sqlalchemy.sql import visitors  # the learner's own SQLAlchemy, 1.4 or 2

        for element in visitors.iterate(statement):
            if type(element).__name__ == "TextClause":
                return element
    except Exception:  # not an expression SQLAlchemy can walk: nothing to say about it
        return None
    return None


class WatchedConnection:
    """A connection whose query methods note what they were given: SQL text (a str, or SQLAlchemy's
    text()) or an expression. Results cannot tell a value pasted into SQL text from one sent as a value
    once int() has made it safe; what the learner's function hands to execute() can (op "sql")."""

    QUERIES = ("execute", "scalar", "scalars", "stream", "exec_driver_sql")  # aiopg.sa and SQLAlchemy 2

    def __init__(self, conn: Any, noted: list[str]) -> None:
        self._conn, self._noted = conn, noted

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._conn, name)
        if name not in self.QUERIES:
            return method

        def noting(statement: Any, *args: Any, **kwargs: Any) -> Any:
            text = statement if isinstance(statement, str) else None
            if text is None and type(statement).__name__ == "TextClause":
                text = f"text({str(statement)!r})"
            elif text is None and (inner := text_inside(statement)) is not None:
                text = f"text({str(inner)!r}) inside a SQLAlchemy {type(statement).__name__.lower()}()"
            if len(self._noted) < 20:
                self._noted.append(f"SQL text: {text[:200]}" if text is not None else "an expression")
            return method(statement, *args, **kwargs)

        return noting


# --- the harness ------------------------------------------------------------------------------------------


class Harness:
    def __init__(self, tree: Path, reply_fd: int) -> None:
        self.tree = tree
        self.reply_fd = reply_fd
        self.runners: dict[int, Any] = {}
        self.apps: dict[int, Any] = {}
        self.patches: list[tuple[Any, str, Any]] = []
        self.unraisable: list[str] = []
        self.blocking: list[str] = []
        self.statements: list[str] = []  # what conn.execute() was given by a watched call
        self.next_app = 1

    # -- plumbing --

    def reply(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\n"
        if len(data) > MAX_REPLY:
            too_big = HarnessError(f"the result was {len(data)} bytes, more than the {MAX_REPLY} allowed")
            data = json.dumps({"id": message.get("id"), "error": harness_error(too_big)}).encode() + b"\n"
        view = memoryview(data)
        while view:
            written = os.write(self.reply_fd, view)
            view = view[written:]

    def on_unraisable(self, info: Any) -> None:
        """Warnings raised in __del__ (an unclosed connection, say) cannot propagate: keep them to report."""
        text = f"{type(info.exc_value).__name__}: {info.exc_value}"
        self.unraisable.append(text[:MAX_TEXT])
        print(f"Exception ignored in {info.object!r}: {text}", file=sys.stderr)

    def watch_sleep(self, sleep: Callable[[float], None]) -> Callable[[float], None]:
        """time.sleep that notes each call made while an event loop runs on this thread: such a call stops
        the loop, and every other request waits, for as long as it sleeps (asked for with op "blocking")."""

        def watched(seconds: float) -> None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:
                if len(self.blocking) < 20:
                    self.blocking.append(f"time.sleep({seconds!r}){self.learner_place()}")
            sleep(seconds)

        return watched

    def watch_call(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        """`call` (a blocking call other than time.sleep: select.select, os.fsync, ...) noting each time the
        learner's own code calls it while an event loop runs on this thread, as watch_sleep does. Only a
        direct call from the learner's tree counts: libraries may use these off the loop's path."""

        def watched(*args: Any, **kwargs: Any) -> Any:
            frame = sys._getframe(1)
            path = Path(frame.f_code.co_filename)
            if len(self.blocking) < 20 and path.is_relative_to(self.tree):
                try:
                    asyncio.get_running_loop()
                except RuntimeError:
                    pass
                else:
                    self.blocking.append(f"{name}() at {path.relative_to(self.tree)}, line {frame.f_lineno}")
            return call(*args, **kwargs)

        return watched

    def watch_opens(self, event: str, args: tuple[Any, ...]) -> None:
        """An audit hook noting each file the learner's code opens (itself, or through the standard library,
        such as pathlib's read_text) while an event loop runs on this thread: the loop, and every other
        request, waits for the disk meanwhile (asked for with op "blocking", as time.sleep is)."""
        if event != "open" or len(self.blocking) >= 20:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        frame: Any = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.startswith(STDLIB):
            frame = frame.f_back
        path = Path(frame.f_code.co_filename) if frame is not None else None
        if path is not None and path.is_relative_to(self.tree):  # not a library's own (jinja2's templates)
            opened = Path(str(args[0] if args else "?"))
            name = str(opened.relative_to(self.tree) if opened.is_relative_to(self.tree) else opened)[:200]
            self.blocking.append(f"open({name!r}) at {path.relative_to(self.tree)}, line {frame.f_lineno}")

    def learner_place(self) -> str:
        """' at aiohttpdemo_polls/views.py, line 9': the innermost frame of the learner's tree, if any."""
        frame = sys._getframe(1)
        while frame is not None:
            path = Path(frame.f_code.co_filename)
            if path.is_relative_to(self.tree):
                return f" at {path.relative_to(self.tree)}, line {frame.f_lineno}"
            frame = frame.f_back
        return ""

    def resolve(self, target: str) -> Any:
        """'main:init_app' -> aiohttpdemo_polls.main.init_app; 'db:meta.tables' follows attributes."""
        module_name, _, attribute = target.partition(":")
        full = f"{PACKAGE}.{module_name}" if module_name else PACKAGE
        try:
            value: Any = importlib.import_module(full)
        except ModuleNotFoundError as exc:
            if exc.name in (full, PACKAGE):
                raise MissingName(
                    f"expected a module {full} ({PACKAGE}/{module_name}.py), found none"
                ) from None
            raise
        for part in filter(None, attribute.split(".")):
            if not hasattr(value, part):
                raise MissingName(f"expected `{part}` in {PACKAGE}/{module_name}.py, found no such name")
            value = getattr(value, part)
        return value

    def app(self, app_id: Any) -> Any:
        if app_id not in self.apps:
            raise HarnessError(f"no running app {app_id}")
        return self.apps[app_id]

    # -- operations --

    def op_hello(self) -> dict[str, Any]:
        """Import the package and every module in it, so an error at import is reported once."""
        failed: dict[str, Any] = {}
        imported = []
        for path in sorted((self.tree / PACKAGE).rglob("*.py")):  # __main__.py too, which nothing imports
            try:
                compile(path.read_bytes(), str(path), "exec")
            except SyntaxError as exc:
                failed[str(path.relative_to(self.tree))] = describe_exception(exc, self.tree)
        if failed:
            return {"imported": [], "failed": failed}
        try:
            package = importlib.import_module(PACKAGE)
        except Exception as exc:
            return {"imported": [], "failed": {PACKAGE: describe_exception(exc, self.tree)}}
        for info in pkgutil.iter_modules(package.__path__):
            if info.name == "__main__":
                continue
            try:
                importlib.import_module(f"{PACKAGE}.{info.name}")
                imported.append(info.name)
            except Exception as exc:
                failed[info.name] = describe_exception(exc, self.tree)
        return {"imported": imported, "failed": failed, "python": sys.version.split()[0]}

    async def op_serve(self, request: dict[str, Any]) -> dict[str, Any]:
        from aiohttp import web

        for name in request.get("reload", []):
            importlib.reload(self.resolve(name))
        if "views" in request or "setup" in request:  # a bare app around the learner's views or setups
            app = web.Application()
            for path, target in request.get("views", {}).items():
                app.router.add_get(path, self.resolve(target))
            for target in request.get("setup", []):  # e.g. routes:setup_routes, called with the app
                result = self.resolve(target)(app)
                if inspect.isawaitable(result):
                    await result
        elif "factory" in request:
            app = self.resolve(request["factory"])(*request.get("args", []), **request.get("kwargs", {}))
            if inspect.isawaitable(app):
                app = await app
        else:
            app = self.resolve(request["attribute"])
        if not isinstance(app, web.Application):
            raise HarnessError(f"expected a web.Application, got {qualified_type(app)}")
        for route in request.get("raising_routes", []):
            app.router.add_get(route["path"], raising_view(route["exception"], route.get("message", "")))
        for name, extra in request.get("apart", {}).items():  # each named route under a prefix of its own
            move_apart(app.router, str(name), str(extra))
        served = app
        if request.get("mount"):  # the app under a prefix, as a sub-application: its URLs must follow
            served = web.Application()
            served.add_subapp(str(request["mount"]), app)
        runner = web.AppRunner(served, handle_signals=False, access_log=None)
        app_id = self.next_app
        self.next_app += 1
        self.apps[app_id] = app
        try:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
        except BaseException:
            self.apps.pop(app_id)
            with contextlib.suppress(Exception):
                await runner.cleanup()
            raise
        self.runners[app_id] = runner
        return {"app": app_id, "port": runner.addresses[0][1], "routes": routes_of(app)}

    async def op_stop(self, request: dict[str, Any]) -> dict[str, Any]:
        app_id = request["app"]
        runner = self.runners.pop(app_id, None)
        self.apps.pop(app_id, None)
        before = len(self.unraisable)
        if runner is not None:
            await runner.cleanup()
        await asyncio.sleep(0)
        gc.collect()
        return {"unraisable": self.unraisable[before:]}

    def watched(self, conn: Any) -> WatchedConnection:
        return WatchedConnection(conn, self.statements)

    async def op_call(self, request: dict[str, Any]) -> Any:
        function = self.resolve(request["target"])
        args, kwargs = request.get("args", []), request.get("kwargs", {})
        times = int(request.get("times", 1))

        async def once() -> Any:
            if "connection" not in request:
                result = function(*args, **kwargs)
                return await result if inspect.isawaitable(result) else result
            engine = self.app(request["connection"]["app"])[self.resolve(request["connection"]["key"])]
            watch = bool(request["connection"].get("watch"))
            if hasattr(engine, "acquire"):  # aiopg.sa
                async with engine.acquire() as conn:
                    result = function(self.watched(conn) if watch else conn, *args, **kwargs)
                    return await result if inspect.isawaitable(result) else result
            async with engine.begin() as conn:  # SQLAlchemy's asyncio engine: commit on success
                given = self.watched(conn) if watch else conn
                if "probe" not in request:
                    result = function(given, *args, **kwargs)
                    return await result if inspect.isawaitable(result) else result
                # The judge's own query, on the same connection and in the same transaction, before and
                # after the learner's function: what the function made PostgreSQL do
                # (pg_stat_get_xact_*) is only seen from there.
                probe = str(request["probe"])
                probes = [[list(row) for row in (await conn.exec_driver_sql(probe)).all()]]
                result = function(given, *args, **kwargs)
                result = await result if inspect.isawaitable(result) else result
                probes.append([list(row) for row in (await conn.exec_driver_sql(probe)).all()])
                return {"result": result, "probe": probes}

        # "describe": what the result is (type, id, ...) rather than its value, e.g. an app from a factory
        convert = self.describe if request.get("describe") else to_json
        if "times" not in request:
            return convert(await once())
        results = await asyncio.gather(*(once() for _ in range(times)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return [convert(result) for result in results]

    def op_describe(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            value = self.resolve(request["target"])
        except MissingName as exc:
            return {"exists": False, "message": str(exc)}
        return self.describe(value)

    def describe(self, value: Any) -> dict[str, Any]:
        kinds = [f"{k.__module__}.{k.__qualname__}" for k in type(value).__mro__]
        attrs = {}
        for name in ("minsize", "maxsize", "closed", "size", "freesize", "timeout"):
            with contextlib.suppress(Exception):
                attr = getattr(value, name)
                if isinstance(attr, (bool, int, float)):
                    attrs[name] = attr
        attrs.update(pool_attrs(value))
        return {
            "exists": True,
            "type": qualified_type(value),
            "mro": kinds,
            "id": id(value),
            "coroutine_function": inspect.iscoroutinefunction(value),
            "value": to_json(value),
            "attrs": attrs,
        }

    def op_app_info(self, request: dict[str, Any]) -> dict[str, Any]:
        """What a running app is made of: its resources (name, kind, canonical path, info) and middlewares."""
        app = self.app(request["app"])
        resources = []
        for resource in app.router.resources():
            info = {key: str(value) for key, value in resource.get_info().items() if key != "routes"}
            resources.append({"name": resource.name, "kind": type(resource).__name__,
                              "canonical": resource.canonical, "info": info})  # fmt: skip
        middlewares = [f"{getattr(m, '__module__', '?')}.{getattr(m, '__qualname__', repr(m))}"
                       for m in app.middlewares]  # fmt: skip
        return {"resources": resources, "middlewares": middlewares}

    def op_app_item(self, request: dict[str, Any]) -> dict[str, Any]:
        app = self.app(request["app"])
        key = self.resolve(request["key"])
        if key not in app:
            return {"exists": False}
        return self.describe(app[key])

    def op_patch(self, request: dict[str, Any]) -> None:
        """Set a module attribute (a config location, a timeout) until the judge asks for `unpatch`."""
        module_name, _, path = request["target"].partition(":")
        owner_path, _, attribute = path.rpartition(".")
        owner = self.resolve(f"{module_name}:{owner_path}")
        value = request.get("value")
        if request.get("as") == "paths":
            value = [Path(item) for item in value]
        elif request.get("as") == "path":
            value = Path(value)
        self.patches.append((owner, attribute, getattr(owner, attribute, _MISSING)))
        setattr(owner, attribute, value)

    def op_unpatch(self) -> None:
        while self.patches:
            owner, attribute, old = self.patches.pop()
            if old is _MISSING:
                with contextlib.suppress(AttributeError):
                    delattr(owner, attribute)
            else:
                setattr(owner, attribute, old)

    async def handle(self, request: dict[str, Any]) -> Any:
        op = request.get("op")
        if op == "hello":
            return self.op_hello()
        if op == "serve":
            return await self.op_serve(request)
        if op == "stop":
            return await self.op_stop(request)
        if op == "call":
            return await self.op_call(request)
        if op == "describe":
            return self.op_describe(request)
        if op == "app_item":
            return self.op_app_item(request)
        if op == "app_info":
            return self.op_app_info(request)
        if op == "patch":
            return self.op_patch(request)
        if op == "unpatch":
            return self.op_unpatch()
        if op == "blocking":
            noted, self.blocking = self.blocking, []
            return noted
        if op == "sql":
            noted, self.statements = self.statements, []
            return noted
        raise HarnessError(f"unknown operation {op!r}")

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.buffer.readline)
            if not line:
                break
            request: dict[str, Any] = {}
            try:
                request = json.loads(line)
                self.reply({"id": request.get("id"), "ok": await self.handle(request)})
            except HarnessError as exc:
                self.reply({"id": request.get("id"), "error": harness_error(exc)})
            except Exception as exc:
                logging.getLogger("harness").debug("request failed", exc_info=True)
                self.reply({"id": request.get("id"), "error": describe_exception(exc, self.tree)})
        for app_id in list(self.runners):
            with contextlib.suppress(Exception):
                await self.op_stop({"app": app_id})


_MISSING = object()


def pool_attrs(engine: Any) -> dict[str, Any]:
    """What a SQLAlchemy engine's pool is made of (empty for anything else): its driver, its size, the
    overflow it allows beyond that, how long a request waits for a free connection, the driver's timeouts
    for connecting and for each query, and the connections it holds now (in use, and idle)."""
    pool = getattr(getattr(engine, "sync_engine", engine), "pool", None)
    attrs: dict[str, Any] = {}
    readers = {
        "driver": lambda: engine.dialect.driver,
        "pool_size": lambda: pool.size(),
        "max_overflow": lambda: pool._max_overflow,  # no public reader; QueuePool keeps what it was given
        "pool_timeout": lambda: pool.timeout(),
        "connect_timeout": lambda: connect_params(pool).get("timeout"),
        "command_timeout": lambda: connect_params(pool).get("command_timeout"),
        "checked_out": lambda: pool.checkedout(),
        "checked_in": lambda: pool.checkedin(),
    }
    if pool is not None:
        for name, read in readers.items():
            with contextlib.suppress(Exception):
                value = read()
                if isinstance(value, (int, float, str)):
                    attrs[name] = value
    return attrs


def connect_params(pool: Any) -> dict[str, Any]:
    """The keyword arguments a SQLAlchemy pool hands the driver for each new connection (its URL's and
    connect_args'), read from the closure create_engine gives the pool: SQLAlchemy keeps them nowhere
    public. Only the timeouts are reported; the password is among them too."""
    return dict(inspect.getclosurevars(pool._creator).nonlocals.get("cparams") or {})


def move_apart(router: Any, name: str, extra: str) -> None:
    """Put the resource named `name` (if the app has one) under the prefix `extra` of its own, so that its
    address shares no beginning with any other route's: an address pasted onto another route's URL, or
    made by editing request.path, then misses it. add_prefix is what add_subapp does to every resource;
    the router's lookup table is keyed by path, hence the unindex and index around it."""
    if name not in router:
        return
    resource = router[name]
    router.unindex_resource(resource)
    resource.add_prefix(extra)
    router.index_resource(resource)


def routes_of(app: Any) -> list[dict[str, Any]]:
    """The app's router as plain data: method, path (canonical), route name and handler of each route."""
    found = []
    for route in list(app.router.routes())[:200]:
        resource = route.resource
        handler = route.handler
        found.append({
            "method": str(route.method),
            "path": str(resource.canonical) if resource is not None else "",
            "name": resource.name if resource is not None else None,
            "handler": f"{getattr(handler, '__module__', '')}.{getattr(handler, '__qualname__', '')}"[:500],
        })  # fmt: skip
    return found


def raising_view(exception: str, message: str) -> Any:
    """A view that raises the named built-in exception (or aiohttp's web.HTTPGone...: an answer of the
    view's own, with `message` as its text): how the judge sees the app's error handling.

    "CancelledError" raises asyncio.CancelledError, what a cancelled request's view raises: the app must let
    it through (aiohttp then closes the connection without an answer), not turn it into a page.
    """
    import builtins

    from aiohttp import web

    answer = getattr(web, exception, None) if exception.startswith("HTTP") else None
    if isinstance(answer, type) and issubclass(answer, web.HTTPException):  # a view's own HTTP answer

        async def answering(request: Any) -> Any:
            raise answer(text=message)

        return answering
    kind = asyncio.CancelledError if exception == "CancelledError" else getattr(builtins, exception, None)
    if not (isinstance(kind, type) and issubclass(kind, (Exception, asyncio.CancelledError))):
        kind = RuntimeError

    async def view(request: Any) -> Any:
        raise kind(message)

    return view


def fork_launcher(spec: str) -> None:
    """Fork the launcher of the learner's commands (learner_side/launcher.py) from this warm interpreter,
    before any of the learner's code or the harness's own set-up (sys.path, logging, the working folder):
    the child is what a fresh launcher would be, without a second 0.3 s of imports. It speaks to the judge
    over the two pipe ends it was given, and ends with this process."""
    reader, writer, folder = spec.split(",", 2)
    source = Path(__file__).with_name("launcher.py")
    loaded = importlib.util.spec_from_file_location("workbook_launcher", source)
    assert loaded is not None and loaded.loader is not None
    launcher = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(launcher)
    if os.fork() == 0:
        try:
            os.dup2(int(reader), 0)
            os.dup2(int(writer), 1)
            for fd in (int(reader), int(writer)):
                os.close(fd)
            if sys.platform.startswith("linux"):  # SIGTERM when the harness dies: it ends its commands
                ctypes.CDLL(None).prctl(launcher.PR_SET_PDEATHSIG, signal.SIGTERM)
            launcher.serve(folder)
        finally:
            os._exit(0)
    for fd in (int(reader), int(writer)):
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", required=True, type=Path)
    parser.add_argument("--preload", default="", help="libraries to import while the judge collects")
    parser.add_argument("--launcher", default="", help="READ_FD,WRITE_FD,FOLDER: fork the judge's launcher")
    args = parser.parse_args()
    # The learner's code sees no argument of the harness's own: a `parse_args()` that reads sys.argv
    # instead of the argv a check passes finds nothing, as in a program started with no arguments.
    sys.argv, sys.orig_argv = [PACKAGE], [sys.executable]
    tree = args.tree.resolve()
    # The libraries first, none of the learner's code: the judge is still loading its suite meanwhile.
    for name in filter(None, args.preload.split(",")):
        with contextlib.suppress(Exception):  # the learner's own import of it will say what is wrong
            importlib.import_module(name)
    # The libraries' objects live as long as the process: out of the collector's sight, the full collection
    # that every stopped app gets (so that its objects' dying warnings come now) scans only what was made
    # since, 2 ms instead of 25. The learner's package, imported later, stays in sight.
    gc.freeze()
    if args.launcher:
        fork_launcher(args.launcher)
    # Replies keep the original stdout; the learner's prints join the log on stderr.
    reply_fd = os.dup(1)
    os.dup2(2, 1)
    os.set_inheritable(reply_fd, False)
    sys.path.insert(0, str(tree))
    os.chdir(tree)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    harness = Harness(tree, reply_fd)
    sys.unraisablehook = harness.on_unraisable
    time.sleep = harness.watch_sleep(time.sleep)  # before the learner's modules bind it by name
    select.select = harness.watch_call("select.select", select.select)  # a sleep in disguise, or a wait
    os.fsync = harness.watch_call("os.fsync", os.fsync)  # waits for the disk
    threading.Event.wait = harness.watch_call("threading.Event.wait", threading.Event.wait)
    sys.addaudithook(harness.watch_opens)
    # Then the judge's first request, "hello", imports the learner's package, outside any event loop as
    # `python -m aiohttpdemo_polls` would.
    first = sys.stdin.buffer.readline()
    if not first:
        return
    request: dict[str, Any] = {}
    try:
        request = json.loads(first)
        if request.get("op") != "hello":
            raise HarnessError("the first request must be hello")
        harness.reply({"id": request.get("id"), "ok": harness.op_hello()})
    except HarnessError as exc:
        harness.reply({"id": request.get("id"), "error": harness_error(exc)})
        return
    asyncio.run(harness.serve_forever())


if __name__ == "__main__":
    main()
