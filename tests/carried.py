"""Checks of earlier steps, carried unchanged into a later step's suite.

Step 10 ports the finished app to another database library, and what a visitor or PostgreSQL can observe
must not change: so its suite runs the HTTP- and database-observable checks of steps 5 to 9 as they are.
A carried check keeps its code, its parameters and its messages; only its task mark changes, to the task
of the later step that now owns the behaviour. Whatever fixtures the earlier module defines come along
(named ones can be left behind, such as an autouse fixture for checks that are not carried).
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Iterable
from typing import Any

import pytest

# pytest has no public test for "this module attribute is a fixture"; its own collector uses this class.
from _pytest.fixtures import FixtureFunctionDefinition


def carry(
    origin: str,
    tasks: dict[int, int],
    into: dict[str, Any],
    *,
    leave: Iterable[str] = (),
    needs: dict[str, int] | None = None,
) -> list[str]:
    """Copy into the module namespace `into` every check of module `origin` whose task is a key of `tasks`
    (re-marked with the task it maps to) and every fixture of `origin` not named in `leave`; the names of
    the carried checks. `needs` gives a check the later task it depends on instead (a check of error pages
    that asks for a poll page needs the task that writes that page: under its origin's mapping it would
    fail a finished task with the TODO of another one)."""
    module = importlib.import_module(origin)
    left = set(leave)
    carried = []
    for name, value in vars(module).items():
        if name in left or name in into:
            continue
        if isinstance(value, FixtureFunctionDefinition):
            into[name] = value
        elif name.startswith("test_") and isinstance(value, types.FunctionType):
            marks = list(getattr(value, "pytestmark", []))
            origin_tasks = [mark.args[0] for mark in marks if mark.name == "task"]
            if len(origin_tasks) != 1 or origin_tasks[0] not in tasks:
                continue
            task = (needs or {}).get(name, tasks[origin_tasks[0]])
            into[name] = _remarked(value, task, into["__name__"])
            carried.append(name)
    return carried


def _remarked(check: types.FunctionType, task: int, module: str) -> types.FunctionType:
    """A copy of `check` (coroutine functions stay coroutine functions) whose only task mark is `task`."""
    copy = types.FunctionType(check.__code__, check.__globals__, check.__name__, check.__defaults__,
                              check.__closure__)  # fmt: skip
    copy.__kwdefaults__ = check.__kwdefaults__
    copy.__dict__.update(check.__dict__)
    copy.__doc__, copy.__qualname__, copy.__module__ = check.__doc__, check.__qualname__, module
    copy.pytestmark = [mark for mark in check.pytestmark if mark.name != "task"] + [
        pytest.mark.task(task).mark
    ]
    return copy
