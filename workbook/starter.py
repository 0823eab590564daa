"""Makes each starter in steps/ from its solution in solutions/.

The solutions are the single source of truth. In a solution, the step's own work sits between markers
written as comments of the file's language (``#`` for Python, ``{# ... #}`` for Jinja, ``/* ... */`` for CSS):

    # >>> task 2: read the file with yaml.safe_load and check it against CONFIG_SCHEMA
    ...the finished code...
    # ---
    #: return {}
    # <<<

The starter gets a TODO comment in place of the region, followed by the stub lines (the ``#:`` lines,
uncommented) or, for Python without a stub, ``raise NotImplementedError(...)``. The section from ``---``
is optional.

steps/.manifest.json records what was generated last, so `build` can tell a learner's edit (the file
differs from what we wrote) from a stale starter (the file is what we wrote, the solution moved on).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from . import catalogue

MANIFEST = ".manifest.json"
IGNORED_PARTS = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints"}
IGNORED_SUFFIXES = {".pyc", ".pyo"}
MARKED_SUFFIXES = {".py", ".html", ".jinja2", ".css", ".yaml", ".yml", ".txt"}

_MARKER = re.compile(r"^(?P<indent>[ \t]*)(?P<open>#|\{#|/\*)(?P<body>.*?)(?P<close>#\}|\*/)?[ \t]*$")
_CLOSERS = {"#": "", "{#": " #}", "/*": " */"}
_START = re.compile(r"^\s*>>>\s*task\s+(?P<task>\d+)\s*:\s*(?P<todo>.+?)\s*$")


class MarkerError(ValueError):
    """A solution file's markers do not pair up; the message gives file and line."""


@dataclass
class _Region:
    task: int
    todo: str
    indent: str
    opener: str
    line: int
    stub: list[str] | None = None


def _classify(line: str) -> tuple[str, re.Match[str] | None]:
    match = _MARKER.match(line.rstrip("\n"))
    if not match:
        return "code", None
    body = match["body"]
    if match["open"] == "#" and match["close"]:  # '# something #}' is not a Jinja comment in Python
        return "code", None
    if _START.match(body):
        return "start", match
    if body.strip() == "---":
        return "stub", match
    if body.strip() == "<<<":
        return "end", match
    if body.startswith(":"):
        return "stubline", match
    return "code", None


def render(text: str, step: int, where: str, *, keep_solution: bool = False) -> tuple[str, set[int]]:
    """The starter version of one solution file, and the task numbers it marks.

    With keep_solution=True the markers are removed and the finished code kept (used to begin the next
    step's solution from this one).
    """
    out: list[str] = []
    region: _Region | None = None
    in_stub = False
    tasks: set[int] = set()
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        kind, match = _classify(line)
        if kind == "start":
            if region is not None:
                raise MarkerError(
                    f"{where}:{number}: a task region starts inside the one from line {region.line}"
                )
            assert match is not None
            start = _START.match(match["body"])
            assert start is not None
            region = _Region(int(start["task"]), start["todo"], match["indent"], match["open"], number)
            tasks.add(region.task)
            in_stub = False
        elif region is None:
            if kind in ("stub", "end", "stubline"):
                raise MarkerError(f"{where}:{number}: a '{line.strip()}' marker outside any task region")
            out.append(line)
        elif kind == "stub":
            in_stub, region.stub = True, []
        elif kind == "stubline" and in_stub:
            assert match is not None and region.stub is not None
            stub_text = match["body"][1:]
            stub_text = stub_text.rstrip()  # the space before a closing '#}' or '*/' is not part of the stub
            region.stub.append(stub_text[1:] if stub_text.startswith(" ") else stub_text)
        elif kind == "end":
            if not keep_solution:
                out.extend(_starter_lines(region, step))
            region, in_stub = None, False
        elif in_stub:
            raise MarkerError(f"{where}:{number}: only stub lines ('#: ...') may follow '---'")
        elif keep_solution:
            out.append(line)
    if region is not None:
        raise MarkerError(f"{where}:{region.line}: the task region is never closed with '<<<'")
    return "".join(out), tasks


@dataclass(frozen=True)
class TaskRegion:
    """The finished code of one task region: lines `first` to `last` of its file (1-based, inclusive), the
    markers and the stub section left out. workbook/mutants.py mutates these lines and no others."""

    task: int
    first: int
    last: int


def task_regions(text: str, where: str) -> list[TaskRegion]:
    """Every task region of a solution file, in file order; MarkerError when its markers do not pair up."""
    render(text, 0, where)  # the one place that validates markers
    found: list[TaskRegion] = []
    task = start = 0
    code_end: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        kind, match = _classify(line)
        if kind == "start":
            assert match is not None
            opened = _START.match(match["body"])
            assert opened is not None
            task, start, code_end = int(opened["task"]), number, None
        elif kind == "stub" and start:
            code_end = number - 1
        elif kind == "end" and start:
            found.append(TaskRegion(task, start + 1, number - 1 if code_end is None else code_end))
            start = 0
    return found


def _starter_lines(region: _Region, step: int) -> list[str]:
    todo = f"TODO (step {step}, task {region.task}): {region.todo}"
    lines = [f"{region.indent}{region.opener} {todo}{_CLOSERS[region.opener]}\n"]
    if region.stub is not None:
        lines.extend(f"{region.indent}{stub}\n" if stub else "\n" for stub in region.stub)
    elif region.opener == "#":
        lines.append(f'{region.indent}raise NotImplementedError("TODO step {step}, task {region.task}")\n')
    return lines


def source_files(tree: Path) -> list[Path]:
    return sorted(
        path
        for path in tree.rglob("*")
        if path.is_file()
        and not IGNORED_PARTS.intersection(path.relative_to(tree).parts)
        and path.suffix not in IGNORED_SUFFIXES
    )


def generate_step(solution_tree: Path, step: int) -> tuple[dict[str, bytes], set[int]]:
    """Every file of one starter, by path relative to the step directory, and the tasks marked."""
    files: dict[str, bytes] = {}
    marked: set[int] = set()
    for path in source_files(solution_tree):
        relative = path.relative_to(solution_tree).as_posix()
        data = path.read_bytes()
        if path.suffix in MARKED_SUFFIXES:
            text, tasks = render(data.decode("utf-8"), step, str(path))
            data, marked = text.encode("utf-8"), marked | tasks
        files[relative] = data
    return files, marked


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class BuildPlan:
    """What `build` would write and what stands in its way."""

    writes: dict[Path, bytes] = field(default_factory=dict)
    deletes: list[Path] = field(default_factory=list)
    learner_edits: list[Path] = field(default_factory=list)
    manifest: dict[str, str] = field(default_factory=dict)
    unmarked_tasks: list[str] = field(default_factory=list)
    manifest_stale: bool = False

    @property
    def changes(self) -> list[Path]:
        return sorted(self.writes) + sorted(self.deletes)


README_TABLE = re.compile(r"(<!-- steps:start[^>]*-->\n).*?(<!-- steps:end -->)", re.DOTALL)


def readme_with_step_table(text: str) -> str:
    """README.md with its table of steps rewritten from the catalogue."""
    rows = ["| step | topic | tasks | points | check it |", "|---|---|---|---|---|"]
    rows += [
        f"| {s.number} | [{s.title}](steps/{s.name}/README.md) | {len(s.tasks)} | {s.points} "
        f"| `nox -s {s.name}` |"
        for s in catalogue.steps()
    ]
    return README_TABLE.sub(lambda m: m.group(1) + "\n".join(rows) + "\n" + m.group(2), text)


def plan(root: Path = catalogue.ROOT) -> BuildPlan:
    """Compare steps/ (and README.md's table of steps) with what the solutions and catalogue generate."""
    steps_dir = root / "steps"
    manifest_path = steps_dir / MANIFEST
    old_manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    result = BuildPlan()
    readme = root / "README.md"
    if readme.exists():
        current_readme = readme.read_text()
        if readme_with_step_table(current_readme) != current_readme:
            result.writes[readme] = readme_with_step_table(current_readme).encode()
    for step in catalogue.steps():
        solution = step.tree(root, "solutions")
        target = step.tree(root, "steps")
        generated, marked = generate_step(solution, step.number)
        result.unmarked_tasks += [t.label for t in step.tasks if t.number not in marked]
        for relative, data in generated.items():
            key = f"{step.name}/{relative}"
            result.manifest[key] = _digest(data)
            path = target / relative
            current = path.read_bytes() if path.exists() else None
            if current == data:
                continue
            result.writes[path] = data
            if current is not None and old_manifest.get(key) != _digest(current):
                result.learner_edits.append(path)
        if target.exists():
            for path in source_files(target):
                key = f"{step.name}/{path.relative_to(target).as_posix()}"
                if key in result.manifest:
                    continue
                result.deletes.append(path)
                if old_manifest.get(key) != _digest(path.read_bytes()):
                    result.learner_edits.append(path)
    result.manifest_stale = old_manifest != result.manifest
    return result


def build(root: Path = catalogue.ROOT, force: bool = False) -> BuildPlan:
    """Regenerate steps/ from solutions/. Refuses (and writes nothing) if a learner edited a starter."""
    result = plan(root)
    if result.learner_edits and not force:
        return result
    for path, data in result.writes.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for path in result.deletes:
        path.unlink()
    steps_dir = root / "steps"
    steps_dir.mkdir(exist_ok=True)
    (steps_dir / MANIFEST).write_text(json.dumps(result.manifest, indent=1, sort_keys=True) + "\n")
    return result


def strip_markers_into(solution_tree: Path, destination: Path, step: int) -> None:
    """Copy a finished solution with its markers removed: the starting point of the next step's solution."""
    if destination.exists():
        raise FileExistsError(f"{destination} already exists")
    shutil.copytree(solution_tree, destination, ignore=shutil.ignore_patterns(*IGNORED_PARTS, "*.pyc"))
    for path in source_files(destination):
        if path.suffix in MARKED_SUFFIXES:
            text, _ = render(path.read_text(), step, str(path), keep_solution=True)
            path.write_text(text)
