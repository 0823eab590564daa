"""An audit hook that makes the judge fail loudly if it ever loads the learner's code.

The suites reach the learner's code only through other processes. A slip (a test that imports the
package, a helper that renders one of its templates with Jinja2, a pickle naming one of its classes)
would put learner code back into the process that decides the verdict, where it could rewrite pytest.
PEP 578 audit hooks see every import, compile, exec, open and unpickle, and cannot be removed once added.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

# Opening these from the tree means loading code or templates; reading a stylesheet or an image is fine.
_LOADABLE_SUFFIXES = (".py", ".pyc", ".pyo", ".pth", ".so", ".html", ".htm", ".jinja", ".jinja2", ".j2")

violations: list[str] = []
_state: dict[str, Any] = {}


class JudgeGuardError(RuntimeError):
    """The judge tried to load the learner's code."""


def _inside(path: Any, root: str) -> bool:
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str) or not path:
        return False
    full = os.path.abspath(path)
    return full == root or full.startswith(root + os.sep)


def _violation(what: str) -> None:
    message = f"judge guard: the judge tried to {what}; the learner's code must run in its own process"
    violations.append(message)
    raise JudgeGuardError(message)


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event not in ("import", "open", "compile", "exec", "pickle.find_class"):
        return
    root, package = _state.get("root"), _state.get("package")
    if root is None:
        return
    if event == "import":
        name, filename = args[0], args[1]
        if name == package or str(name).startswith(package + "."):
            _violation(f"import {name}")
        if filename and _inside(filename, root):
            _violation(f"import {name} from {filename}")
    elif event == "open":
        path = args[0]
        if _inside(path, root):
            text = os.fsdecode(path) if isinstance(path, bytes) else str(path)
            if text.endswith(_LOADABLE_SUFFIXES) or f"{os.sep}templates{os.sep}" in text:
                _violation(f"open {text} (code or a template of the tree under test)")
    elif event == "compile":
        filename = args[1]
        if isinstance(filename, (str, bytes)) and _inside(filename, root):
            _violation(f"compile {os.fsdecode(filename)}")
    elif event == "exec":
        code = args[0]
        filename = getattr(code, "co_filename", "")
        if filename and _inside(filename, root):
            _violation(f"execute code from {filename}")
    elif event == "pickle.find_class":
        if str(args[0]) == package or str(args[0]).startswith(package + "."):
            _violation(f"unpickle {args[0]}.{args[1]}")


def install(tree: Path, package: str) -> None:
    """Guard this process against loading anything from `tree` or the module `package`, for good."""
    _state.update(root=os.path.abspath(tree.resolve()), package=package)
    if not _state.get("installed"):
        sys.addaudithook(_hook)
        _state["installed"] = True


def installed() -> bool:
    return bool(_state.get("installed"))
