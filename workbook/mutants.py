"""Mutation testing of the solutions: how many plausible wrong solutions does each step's suite let through?

Every task region of every solution file (the lines between `>>> task N` and `---`/`<<<`, see
workbook/starter.py) is mutated, one small change at a time: an operator or a constant swapped, an argument
or a chained call dropped, `async with` or `finally` undone, a statement deleted; in templates an escape
turned off, an address changed, a condition removed, an output dropped. Each mutant is written to disk in
a copy of the step, exactly where a learner's tree would be, and judged by the one engine
(`runner.run_step(step, COPY)`): the region's task first with `-x`, then, only if every check of that
task passed, the whole step. A failing check kills it; a run stopped by `timeout` is "timed out" (and fails
the run: a check waited without a deadline of its own); a mutant that passes everything survived, unless
tests/mutants/equivalent.toml records it, with a reason, as equivalent (it behaves as the solution does for
every input).

Why mutants on disk, and why libcst: mutmut 3 and similar tools put every mutant into the code at once
behind trampolines, and pick the active one through an environment variable read in the process under test.
Here the code under test never runs in pytest's process: the judge starts the learner's processes
isolated, with a scrubbed environment (DESIGN.md, "Tests that teach"), so the variable would not reach
them, the original code would run, and every mutant would look killed or survived at random. A mutant must
be a tree a learner could have written. libcst parses and prints Python losslessly (comments, layout and
markers kept), so a mutant differs from the solution by its one change and the diff shown is that change.
No tool ships the operators this workbook needs (dropped arguments, `.where(...)`, `async with`,
`finally`, `begin()`/`connect()`, Jinja), so they are written here.

A mutant's id names where it is, not its line: `step7:aiohttpdemo_polls/views.py:task2.1:compare:0` is the
first `compare` mutant of the first region of task 2 in that file, so records survive edits elsewhere.
"""

from __future__ import annotations

import difflib
import json
import random
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import libcst as cst
from libcst.metadata import MetadataWrapper, ParentNodeProvider, PositionProvider

from . import catalogue, starter
from .mistakes import solution_copy
from .runner import RunningSuites, run_step, shared_server

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - pytest depends on tomli on 3.10
    import tomli as tomllib

EQUIVALENT_FILE = catalogue.ROOT / "tests" / "mutants" / "equivalent.toml"
# A mutant that is still running after this is stopped and counted as timed out: a step takes seconds, and
# without a deadline of its own per check a hanging mutant would cost the step's full 300 s.
MUTANT_TIMEOUT = 60.0
TEMPLATE_SUFFIXES = {".html", ".jinja2"}
ID_PATTERN = re.compile(r"^step\d+:[\w./-]+:task\d+\.\d+:[\w-]+:\d+$")


class EquivalentsError(ValueError):
    """tests/mutants/equivalent.toml is malformed; the message names the entry."""


@dataclass(frozen=True)
class Mutant:
    id: str
    step: catalogue.Step
    file: str  # relative to the step's folder
    task: int
    operator: str
    line: int  # the first line it changes, in the solution file
    text: str  # the whole mutated file
    diff: str  # the changed lines, `-` solution and `+` mutant


# --- Python: libcst -----------------------------------------------------------------------------------------

COMPARISONS: dict[type[cst.BaseCompOp], type[cst.BaseCompOp]] = {
    cst.Equal: cst.NotEqual,
    cst.NotEqual: cst.Equal,
    cst.LessThan: cst.GreaterThanEqual,
    cst.GreaterThanEqual: cst.LessThan,
    cst.GreaterThan: cst.LessThanEqual,
    cst.LessThanEqual: cst.GreaterThan,
    cst.Is: cst.IsNot,
    cst.IsNot: cst.Is,
    cst.In: cst.NotIn,
    cst.NotIn: cst.In,
}
ARITHMETIC: dict[type[cst.BaseBinaryOp], type[cst.BaseBinaryOp]] = {
    cst.Add: cst.Subtract,
    cst.Subtract: cst.Add,
    cst.Multiply: cst.Divide,
    cst.Divide: cst.Multiply,
    cst.FloorDivide: cst.Multiply,
    cst.Modulo: cst.Multiply,
    cst.Power: cst.Multiply,
}
SWAPPED_CALLS = {"begin": "connect", "connect": "begin"}

# One candidate change: (operator, node to replace, what replaces it).
Change = tuple[str, cst.CSTNode, "cst.CSTNode | cst.FlattenSentinel[cst.BaseStatement]"]


def _body(block: cst.BaseSuite) -> list[cst.BaseStatement]:
    """The statements of a block (an indented one, or `...: stmt` on one line)."""
    if isinstance(block, cst.IndentedBlock):
        return list(block.body)
    assert isinstance(block, cst.SimpleStatementSuite)
    return [cst.SimpleStatementLine(body=block.body)]


def _is_docstring(node: cst.SimpleStatementLine) -> bool:
    return (
        len(node.body) == 1
        and isinstance(node.body[0], cst.Expr)
        and isinstance(node.body[0].value, (cst.SimpleString, cst.ConcatenatedString))
    )


class _Changes(cst.CSTVisitor):
    """Collects every change the operators can make, in source order, with the node's lines."""

    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[int, int, Change]] = []

    def _add(self, operator: str, node: cst.CSTNode, new: Any) -> None:
        where = self.get_metadata(PositionProvider, node)
        self.found.append((where.start.line, where.end.line, (operator, node, new)))

    # Neither annotations nor docstrings change what the code does.
    def visit_Annotation(self, node: cst.Annotation) -> bool:
        return False

    def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> bool:
        if _is_docstring(node):
            return False
        for statement in node.body:
            if not isinstance(statement, cst.Pass):
                self._add("statement", statement, cst.Pass())
        return True

    def visit_Comparison(self, node: cst.Comparison) -> None:
        for index, target in enumerate(node.comparisons):
            swapped = COMPARISONS.get(type(target.operator))
            if swapped is not None:
                targets = list(node.comparisons)
                targets[index] = target.with_changes(operator=swapped())
                self._add("compare", node, node.with_changes(comparisons=targets))

    def visit_BooleanOperation(self, node: cst.BooleanOperation) -> None:
        other = cst.Or() if isinstance(node.operator, cst.And) else cst.And()
        self._add("boolean", node, node.with_changes(operator=other))

    def visit_UnaryOperation(self, node: cst.UnaryOperation) -> None:
        if isinstance(node.operator, cst.Not):
            self._add("boolean", node, node.expression)

    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        swapped = ARITHMETIC.get(type(node.operator))
        if swapped is not None:
            self._add("arithmetic", node, node.with_changes(operator=swapped()))

    def visit_Integer(self, node: cst.Integer) -> None:
        value = int(node.value, 0)
        self._add("number", node, cst.Integer(str(value + 1)))
        if value != 0:
            self._add("number", node, cst.Integer("0"))

    def visit_Float(self, node: cst.Float) -> None:
        self._add("number", node, cst.Float(repr(float(node.value) + 1)))
        if float(node.value) != 0:
            self._add("number", node, cst.Float("0.0"))

    def visit_SimpleString(self, node: cst.SimpleString) -> None:
        prefix = node.prefix
        quote = node.quote
        emptied = f"{prefix}{quote}{quote}" if node.evaluated_value else f"{prefix}{quote}mutant{quote}"
        self._add("string", node, cst.SimpleString(emptied))

    def visit_FormattedString(self, node: cst.FormattedString) -> bool:
        self._add("string", node, cst.SimpleString('""'))
        return True

    def visit_Name(self, node: cst.Name) -> None:
        if node.value in ("True", "False"):
            self._add("constant", node, cst.Name("False" if node.value == "True" else "True"))

    def visit_Call(self, node: cst.Call) -> None:
        for arg in node.args:
            kind = "keyword" if arg.keyword is not None else "argument"
            self._add(kind, node, node.with_changes(args=[a for a in node.args if a is not arg]))
        if isinstance(node.func, cst.Attribute):
            # `q.where(...).order_by(...)` loses its last link (the call before it stands in), or the one
            # before (`q.order_by(...)`).
            inner = node.func.value
            if isinstance(inner, cst.Call):
                self._add("chain", node, inner)
                if isinstance(inner.func, cst.Attribute):
                    skipped = node.func.with_changes(value=inner.func.value)
                    self._add("chain", node, node.with_changes(func=skipped))
            swapped = SWAPPED_CALLS.get(node.func.attr.value)
            if swapped is not None:
                func = node.func.with_changes(attr=cst.Name(swapped))
                self._add("begin-connect", node, node.with_changes(func=func))

    def visit_Await(self, node: cst.Await) -> None:
        self._add("await", node, node.expression)

    def visit_Return(self, node: cst.Return) -> None:
        if node.value is not None and not (isinstance(node.value, cst.Name) and node.value.value == "None"):
            self._add("return-none", node, node.with_changes(value=cst.Name("None")))

    def visit_With(self, node: cst.With) -> None:
        """`async with X as y:` becomes `y = await X` and the body: never entered, never left."""
        if len(node.items) != 1:
            return
        item = node.items[0]
        value: cst.BaseExpression = item.item
        if node.asynchronous is not None:
            value = cst.Await(expression=value)
        if item.asname is not None:
            opened: cst.BaseSmallStatement = cst.Assign(
                targets=[cst.AssignTarget(target=item.asname.name)], value=value
            )
        else:
            opened = cst.Expr(value=value)
        first = cst.SimpleStatementLine(body=[opened], leading_lines=node.leading_lines)
        self._add("with", node, cst.FlattenSentinel([first, *_body(node.body)]))

    def visit_Try(self, node: cst.Try) -> None:
        if node.finalbody is not None:
            body, final = _body(node.body), _body(node.finalbody.body)
            if node.handlers:
                kept = node.with_changes(finalbody=None)
                self._add("finally-drop", node, kept)
                self._add("finally-move", node, cst.FlattenSentinel([kept, *final]))
            else:
                self._add("finally-drop", node, cst.FlattenSentinel(body))
                self._add("finally-move", node, cst.FlattenSentinel([*body, *final]))

    def visit_ExceptHandler(self, node: cst.ExceptHandler) -> None:
        """Errors caught more broadly than the lesson allows."""
        if not (isinstance(node.type, cst.Name) and node.type.value == "Exception"):
            self._add("except-broad", node, node.with_changes(type=cst.Name("Exception")))


class _Replace(cst.CSTTransformer):
    """Puts `new` in the place of `old`, entering only the nodes on the way to it."""

    def __init__(self, old: cst.CSTNode, new: Any, path: set[int]) -> None:
        super().__init__()
        self.old, self.new, self.path = old, new, path

    def on_visit(self, node: cst.CSTNode) -> bool:
        return id(node) in self.path

    def on_leave(self, original_node: cst.CSTNode, updated_node: cst.CSTNode) -> Any:
        return self.new if original_node is self.old else updated_node


def python_changes(text: str, regions: Sequence[starter.TaskRegion]) -> Iterator[tuple[int, str, str]]:
    """(index of the region, operator, mutated text) of every change inside a region, in source order.

    Only the nodes on the way from the top-level statement that holds the change down to it are rebuilt,
    and only that statement is printed again; the rest is the solution's text as it was (several times
    faster than rebuilding and printing the whole module for every mutant)."""
    wrapper = MetadataWrapper(cst.parse_module(text))
    collector = _Changes()
    wrapper.visit(collector)
    module = wrapper.module
    parts = [module.code_for_node(statement) for statement in module.body]
    head = text.index("".join(parts)) if parts else 0  # libcst prints the module back as `text`
    lines = [wrapper.resolve(PositionProvider)[statement] for statement in module.body]
    parents = wrapper.resolve(ParentNodeProvider)
    for start, end, (operator, node, new) in collector.found:
        inside = [i for i, r in enumerate(regions) if r.first <= start and end <= r.last]
        if not inside:
            continue
        # The first statement that ends at or after the change holds it (a decorator's line comes before
        # its function's own first line, so starts are no guide).
        top = next(i for i, where in enumerate(lines) if end <= where.end.line)
        path, ancestor = set(), node
        while ancestor is not None:
            path.add(id(ancestor))
            ancestor = parents.get(ancestor)
        try:
            changed = module.body[top].visit(_Replace(node, new, path))
        except cst.CSTValidationError:
            yield inside[0], operator, ""
            continue
        nodes = changed.nodes if isinstance(changed, cst.FlattenSentinel) else [changed]
        code = "".join(module.code_for_node(statement) for statement in nodes)
        before, after = "".join(parts[:top]), "".join(parts[top + 1 :])
        rest = text[head + len(before) + len(parts[top]) + len(after) :]
        yield inside[0], operator, text[:head] + before + code + after + rest


def python_is_valid(text: str) -> bool:
    """Compiles, without running anything: a mutant that does not is no wrong solution, only a typo."""
    try:
        compile(text, "<mutant>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True


# --- Jinja templates: text, checked with jinja2's parser ----------------------------------------------------

OUTPUT = re.compile(r"\{\{-?\s*(?P<expr>.*?)\s*-?\}\}")
IF_TAG = re.compile(r"\{%-?\s*(?:el)?if\s+(?P<cond>.*?)\s*-?%\}")
FOR_TAG = re.compile(r"\{%-?\s*for\s+\w+(?:\s*,\s*\w+)*\s+in\s+(?P<seq>.*?)\s*-?%\}")
URL_CALL = re.compile(r"url\((?P<args>[^()]*)\)")
URL_NAME = re.compile(r"""^\s*(?P<q>['"])(?P<name>[^'"]*)(?P=q)""")
URL_KEYWORD_VALUE = re.compile(r"\b\w+\s*=\s*(?P<value>[^,()]+?)\s*(?=,|$)")
FILTER = re.compile(r"\s*\|\s*\w+(?:\([^()]*\))?")
JINJA_COMPARE = re.compile(r"==|!=")
ATTRIBUTE = re.compile(r"""\s(?P<name>[\w-]+)=(?P<q>["'])(?P<value>[^"'{}]+)(?P=q)""")
TEXT = re.compile(r">(?P<text>[^<>{}]*[^<>{}\s][^<>{}]*)<")


def _spans(pattern: re.Pattern[str], text: str, group: str) -> Iterator[tuple[int, int]]:
    """Where one group of each match of `pattern` lies in `text`."""
    for match in pattern.finditer(text):
        yield match.start(group), match.end(group)


def template_changes(text: str, regions: Sequence[starter.TaskRegion]) -> Iterator[tuple[int, str, str]]:
    """(index of the region, operator, mutated text) of every change inside a region, in source order."""
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    for index, region in enumerate(regions):
        begin, end = offsets[region.first - 1], offsets[region.last]
        code = text[begin:end]

        def edit(a: int, b: int, new: str, code: str = code, begin: int = begin, end: int = end) -> str:
            return text[:begin] + code[:a] + new + code[b:] + text[end:]

        edits: list[tuple[int, str, str]] = []  # (position, operator, mutated text)
        for match in OUTPUT.finditer(code):
            expr_start, expr_end = match.span("expr")
            expr = match["expr"]
            edits.append((match.start(), "output-drop", edit(*match.span(), "")))
            # An address the router built holds no text of a visitor's: escaping it or not is the same.
            if "|safe" not in expr.replace(" ", "") and not expr.startswith("url("):
                edits.append((expr_end, "escape-off", edit(expr_end, expr_end, "|safe")))
            for filtered in FILTER.finditer(expr):
                edits.append(
                    (
                        expr_start + filtered.start(),
                        "filter-drop",
                        edit(expr_start + filtered.start(), expr_start + filtered.end(), ""),
                    )
                )
        for match in URL_CALL.finditer(code):
            args_start = match.start("args")
            name = URL_NAME.match(match["args"])
            if name:
                other = "poll" if name["name"] == "index" else "index"
                a, b = args_start + name.start("name"), args_start + name.end("name")
                edits.append((a, "url-name", edit(a, b, other)))
            for keyword in URL_KEYWORD_VALUE.finditer(match["args"]):
                a, b = args_start + keyword.start("value"), args_start + keyword.end("value")
                edits.append((a, "url-argument", edit(a, b, "2" if keyword["value"] == "1" else "1")))
        for a, b in _spans(IF_TAG, code, "cond"):
            edits.append((a, "if-true", edit(a, b, "true")))
            edits.append((a, "if-false", edit(a, b, "false")))
        for a, b in _spans(FOR_TAG, code, "seq"):
            edits.append((a, "for-first", edit(a, b, f"({code[a:b]})[:1]")))
            edits.append((a, "for-rest", edit(a, b, f"({code[a:b]})[1:]")))
        for tag in re.finditer(r"\{\{.*?\}\}|\{%.*?%\}", code):
            for compared in JINJA_COMPARE.finditer(tag[0]):
                a, b = tag.start() + compared.start(), tag.start() + compared.end()
                edits.append((a, "compare", edit(a, b, "!=" if compared[0] == "==" else "==")))
        outside = re.sub(r"\{\{.*?\}\}|\{%.*?%\}", lambda m: "\0" * len(m[0]), code)  # tags hidden
        for match in ATTRIBUTE.finditer(outside):
            a, b = match.span("value")
            edits.append((a, "attribute", edit(a, b, "")))
        for match in TEXT.finditer(outside):
            a, b = match.span("text")
            if "\0" not in match["text"]:
                edits.append((a, "text", edit(a, b, "")))
        for _, operator, mutated in sorted(edits, key=lambda e: e[0]):
            yield index, operator, mutated


def template_is_valid(text: str) -> bool:
    """Parses as Jinja (nothing rendered): a broken tag is a typo the learner sees at once, not a mistake."""
    try:
        jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError:
        return False
    return True


# --- generating every mutant --------------------------------------------------------------------------------


def diff_of(before: str, after: str) -> tuple[int, str]:
    """The first changed line of `before` and the changed lines, as `-`/`+` lines."""
    matcher = difflib.SequenceMatcher(None, before.splitlines(), after.splitlines(), autojunk=False)
    first, shown = 0, []
    for tag, a1, a2, b1, b2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        first = first or a1 + 1
        shown += [f"- {line}" for line in before.splitlines()[a1:a2]]
        shown += [f"+ {line}" for line in after.splitlines()[b1:b2]]
    return first, "\n".join(shown)


@dataclass
class Generated:
    """The mutants of some steps, and how many changes were dropped for not parsing or for repeating one."""

    mutants: list[Mutant] = field(default_factory=list)
    invalid: dict[int, int] = field(default_factory=dict)  # step -> mutants that do not compile or parse


def file_mutants(step: catalogue.Step, relative: str, text: str, generated: Generated) -> None:
    """Add the mutants of one solution file (path relative to the step folder) to `generated`."""
    regions = starter.task_regions(text, f"solutions/{step.name}/{relative}")
    if not regions:
        return
    suffix = Path(relative).suffix
    if suffix == ".py":
        changes, valid = python_changes(text, regions), python_is_valid
    elif suffix in TEMPLATE_SUFFIXES:
        changes, valid = template_changes(text, regions), template_is_valid
    else:
        return
    # A region's id is its task and its place among that task's regions of this file.
    labels, seen_per_task = [], {}
    for region in regions:
        seen_per_task[region.task] = seen_per_task.get(region.task, 0) + 1
        labels.append(f"task{region.task}.{seen_per_task[region.task]}")
    occurrences: dict[tuple[int, str], int] = {}
    seen = {text}
    for index, operator, mutated in changes:
        occurrence = occurrences.get((index, operator), 0)
        occurrences[(index, operator)] = occurrence + 1
        if mutated in seen:  # the same file as the solution or as an earlier mutant: nothing new to judge
            continue
        seen.add(mutated)
        if not mutated or not valid(mutated):
            generated.invalid[step.number] = generated.invalid.get(step.number, 0) + 1
            continue
        line, diff = diff_of(text, mutated)
        mutant_id = f"{step.name}:{relative}:{labels[index]}:{operator}:{occurrence}"
        generated.mutants.append(
            Mutant(mutant_id, step, relative, regions[index].task, operator, line, mutated, diff)
        )


def generate(steps: Sequence[catalogue.Step]) -> Generated:
    """Every mutant of every task region of these steps' solutions."""
    generated = Generated()
    for step in steps:
        generated.invalid.setdefault(step.number, 0)
        tree = step.tree(catalogue.ROOT, "solutions")
        for path in starter.source_files(tree):
            if path.suffix == ".py" or path.suffix in TEMPLATE_SUFFIXES:
                file_mutants(step, path.relative_to(tree).as_posix(), path.read_text("utf-8"), generated)
    return generated


def sample(mutants: Sequence[Mutant], size: int, seed: int) -> list[Mutant]:
    """At most `size` mutants of each step, drawn with `seed`: the same draw on every run of the same code."""
    chosen: list[Mutant] = []
    for number in sorted({m.step.number for m in mutants}):
        of_step = sorted((m for m in mutants if m.step.number == number), key=lambda m: m.id)
        chosen += sorted(
            random.Random(f"{seed}:{number}").sample(of_step, min(size, len(of_step))), key=lambda m: m.id
        )
    return chosen


# --- the reviewed equivalents -------------------------------------------------------------------------------


def load_equivalents(path: Path = EQUIVALENT_FILE) -> dict[str, str]:
    """id -> reason, from the reviewed file; EquivalentsError naming the entry when one is malformed."""
    if not path.exists():
        return {}
    name = path.relative_to(catalogue.ROOT) if path.is_relative_to(catalogue.ROOT) else path
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise EquivalentsError(f"{name}: not valid TOML: {exc}") from None
    for mutant_id, reason in data.items():
        if not ID_PATTERN.match(mutant_id):
            raise EquivalentsError(
                f"{name}: {mutant_id!r} is not a mutant id (stepN:FILE:taskN.K:OPERATOR:K)"
            )
        if not isinstance(reason, str) or not reason.strip() or "\n" in reason:
            raise EquivalentsError(f"{name}: {mutant_id}: the reason must be one line of text")
    return dict(data)


def stale_entries(
    equivalents: dict[str, str], mutants: Sequence[Mutant], steps: Sequence[catalogue.Step]
) -> list[str]:
    """The recorded ids of these steps that name no mutant any more: the code they described has changed."""
    names = {step.name for step in steps}
    existing = {m.id for m in mutants}
    return sorted(i for i in equivalents if i.split(":")[0] in names and i not in existing)


# --- judging ------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    mutant: Mutant
    state: str  # killed, survived, equivalent, timed out
    detail: str
    seconds: float


def first_failure(report: dict[str, Any]) -> str:
    """The node id of the first check that did not pass: which check killed the mutant."""
    for test in report.get("tests", []):
        if test.get("outcome") not in ("passed", "skipped", "not run"):
            return str(test.get("nodeid", ""))
    return ""


def judge(
    mutant: Mutant, env: dict[str, str], timeout: float = MUTANT_TIMEOUT, suites: RunningSuites | None = None
) -> Outcome:
    """Run the mutant as a learner's tree: its task with -x first, then (if that passed) the whole step."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="workbook-mutant-") as tmp:
        tree = solution_copy(mutant.step, Path(tmp))
        (tree / mutant.file).write_text(mutant.text, encoding="utf-8")
        for only in (["--task", str(mutant.task)], []):
            begun = time.monotonic()
            result = run_step(
                mutant.step,
                tmp,
                extra=["-q", "-x", "--tb=no", *only],
                timeout=timeout,
                env=env,
                suites=suites,
            )
            spent = time.monotonic() - started
            if time.monotonic() - begun >= timeout:
                return Outcome(mutant, "timed out", f"stopped after {timeout:.0f}s", spent)
            if result.broken:
                return Outcome(
                    mutant, "killed", f"the step could not be checked: {result.broken[:200]}", spent
                )
            if result.returncode != 0:
                failed = first_failure(result.report) or f"pytest exited {result.returncode}"
                return Outcome(mutant, "killed", failed, spent)
    return Outcome(mutant, "survived", "every check passed", time.monotonic() - started)


@dataclass
class Run:
    outcomes: list[Outcome]
    generated: Generated
    equivalents: dict[str, str]
    stale: list[str]
    seconds: float

    def unrecorded(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.state == "survived"]


def judge_all(
    mutants: Sequence[Mutant],
    equivalents: dict[str, str],
    jobs: int = 2,
    timeout: float = MUTANT_TIMEOUT,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Judge every mutant, `jobs` at a time, on one shared PostgreSQL server; results in the given order."""
    suites = RunningSuites()
    lock = threading.Lock()

    def one(mutant: Mutant) -> Outcome:
        outcome = judge(mutant, env, timeout, suites)
        if outcome.state == "survived" and mutant.id in equivalents:
            outcome.state, outcome.detail = "equivalent", equivalents[mutant.id]
        if on_outcome is not None:
            with lock:
                on_outcome(outcome)
        return outcome

    with shared_server() as env, ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(one, mutant) for mutant in mutants]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            suites.kill_all()
            raise


# --- the command --------------------------------------------------------------------------------------------

STATES = ("killed", "survived", "equivalent", "timed out")
HEADER = (
    f"{'step':<6}{'mutants':>8}{'killed':>8}{'survived':>10}{'equivalent':>12}{'timed out':>11}{'score':>8}"
)


def table_row(label: object, outcomes: Sequence[Outcome]) -> str:
    counts = {state: sum(o.state == state for o in outcomes) for state in STATES}
    total = len(outcomes)
    score = f"{100 * (counts['killed'] + counts['equivalent']) / total:.0f}%" if total else "-"
    return (
        f"{label!s:<6}{total:>8}{counts['killed']:>8}{counts['survived']:>10}{counts['equivalent']:>12}"
        f"{counts['timed out']:>11}{score:>8}"
    )


def describe(outcome: Outcome) -> str:
    mutant = outcome.mutant
    where = f"solutions/{mutant.step.name}/{mutant.file}:{mutant.line}"
    diff = "\n".join(f"      {line}" for line in mutant.diff.splitlines())
    return f"  {mutant.id}\n    {where}  ({outcome.state}: {outcome.detail})\n{diff}"


def record(run: Run) -> dict[str, Any]:
    """The run as JSON: per step the counts, per mutant its verdict."""
    return {
        "seconds": round(run.seconds, 1),
        "invalid": run.generated.invalid,
        "stale": run.stale,
        "mutants": [
            {
                "id": o.mutant.id,
                "step": o.mutant.step.number,
                "task": o.mutant.task,
                "file": f"solutions/{o.mutant.step.name}/{o.mutant.file}",
                "line": o.mutant.line,
                "operator": o.mutant.operator,
                "state": o.state,
                "detail": o.detail,
                "seconds": round(o.seconds, 2),
                "diff": o.mutant.diff,
            }
            for o in run.outcomes
        ],
    }


def main(args: Any) -> int:
    """`python -m workbook mutants`: judge the mutants, print the table, exit 1 on an unrecorded survivor or a
    mutant that timed out."""
    steps = catalogue.parse_step_range(args.steps) if args.steps else list(catalogue.steps())
    try:
        equivalents = load_equivalents()
    except EquivalentsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    generated = generate(steps)
    stale = stale_entries(equivalents, generated.mutants, steps)
    mutants = sample(generated.mutants, args.sample, args.seed) if args.sample else generated.mutants
    if args.id:
        unknown = sorted(set(args.id) - {m.id for m in mutants})
        if unknown:
            print(f"error: no such mutant: {', '.join(unknown)}", file=sys.stderr)
            return 2
        mutants = [m for m in mutants if m.id in args.id]
    if args.list:
        for mutant in mutants:
            print(
                f"{mutant.id}  solutions/{mutant.step.name}/{mutant.file}:{mutant.line}\n"
                + "\n".join(f"    {line}" for line in mutant.diff.splitlines())
            )
        for step in steps:
            count = sum(m.step.number == step.number for m in mutants)
            print(
                f"step {step.number}: {count} mutants ({generated.invalid[step.number]} invalid, not counted)"
            )
        return 0

    timeout = args.timeout or MUTANT_TIMEOUT
    started = time.monotonic()
    left = {step.number: sum(m.step.number == step.number for m in mutants) for step in steps}
    done: dict[int, list[Outcome]] = {number: [] for number in left}
    print(
        f"{len(mutants)} mutants over {len(steps)} step(s), {args.jobs} at a time, "
        f"each run stopped after {timeout:.0f}s",
        flush=True,
    )

    def progress(outcome: Outcome) -> None:
        number = outcome.mutant.step.number
        done[number].append(outcome)
        print(f"  {outcome.state:<10} {outcome.seconds:5.1f}s  {outcome.mutant.id}", flush=True)
        if len(done[number]) == left[number]:
            survivors = [describe(o) for o in done[number] if o.state == "survived"]
            print(f"{HEADER}\n{table_row(number, done[number])}\n" + "\n".join(survivors), flush=True)
            if args.out:
                partial = Run(
                    [o for n in sorted(done) for o in done[n]],
                    generated,
                    equivalents,
                    stale,
                    time.monotonic() - started,
                )
                args.out.write_text(json.dumps(record(partial), indent=1) + "\n")

    outcomes = judge_all(mutants, equivalents, args.jobs, timeout, progress)
    run = Run(outcomes, generated, equivalents, stale, time.monotonic() - started)
    if args.out:
        args.out.write_text(json.dumps(record(run), indent=1) + "\n")
    return report(run, [step.number for step in steps], args.jobs)


def report(run: Run, steps: Sequence[int], jobs: int = 2) -> int:
    """Print the table, the survivors and the timed-out mutants; 1 when a survivor is not recorded or a mutant
    timed out."""
    outcomes, equivalents, stale = run.outcomes, run.equivalents, run.stale
    print(f"\n{HEADER}")
    for number in steps:
        print(table_row(number, [o for o in outcomes if o.mutant.step.number == number]))
    if len(steps) > 1:
        print(table_row("all", outcomes))
    invalid = sum(run.generated.invalid.values())
    print(
        f"\n{invalid} changes discarded because they do not compile or parse (not counted above); "
        f"{run.seconds:.0f}s in all, {run.seconds * jobs / max(len(outcomes), 1):.1f}s per mutant"
    )
    problems = 0
    survivors = run.unrecorded()
    if survivors:
        problems += 1
        print(
            f"\n{len(survivors)} survivor(s): kill each with a check, or record it in "
            f"{EQUIVALENT_FILE.relative_to(catalogue.ROOT)} with the reason it is equivalent:"
        )
        print("\n".join(describe(o) for o in survivors))
    timed_out = [o for o in outcomes if o.state == "timed out"]
    if timed_out:
        # Every check has a deadline of its own, so a step run ends in seconds: one stopped by the mutant's
        # timeout is a check that can wait without end, a defect of the suite like a survivor.
        problems += 1
        print(f"\n{len(timed_out)} mutant(s) timed out (a check without a deadline of its own waited):")
        print("\n".join(describe(o) for o in timed_out))
    wrongly_recorded = [o for o in outcomes if o.state == "killed" and o.mutant.id in equivalents]
    if wrongly_recorded:
        problems += 1
        print(
            f"\nRecorded as equivalent but killed (remove them from {EQUIVALENT_FILE.name}):\n  "
            + "\n  ".join(o.mutant.id for o in wrongly_recorded)
        )
    if stale:
        problems += 1
        print(
            f"\nStale entries in {EQUIVALENT_FILE.relative_to(catalogue.ROOT)} (no such mutant any more):\n  "
            + "\n  ".join(stale)
        )
    return 1 if problems else 0
