"""The grading benchmark's class builder: a class that repeated itself or held one kind of work would make
the benchmark measure a cache or the full-marks path only, and nothing else would notice."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from workbook import catalogue

STEPS = [catalogue.step(1), catalogue.step(2)]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """bench/grade.py is a script, not a package: load it by path."""
    spec = importlib.util.spec_from_file_location("bench_grade", catalogue.ROOT / "bench" / "grade.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


def parses(tree: Path) -> bool:
    """Whether every module of a step folder is valid Python (parsed, never run)."""
    try:
        for path in tree.rglob("*.py"):
            ast.parse(path.read_text(), str(path))
    except SyntaxError:
        return False
    return True


def test_a_small_class_is_distinct_and_mixed(bench: ModuleType, tmp_path: Path) -> None:
    pieces = bench.plan_class(3, STEPS, seed=0)
    workbooks = bench.build_class(tmp_path / "class", pieces)

    assert sorted(workbooks) == ["learner-01", "learner-02", "learner-03"]
    assert len(pieces) == 6
    assert {p.kind for p in pieces} == set(bench.KINDS), "six steps dealt fewer kinds than there are"
    assert bench.duplicate_trees(workbooks, STEPS) == []
    digests = {bench.tree_digest(p.step.tree(workbooks[p.learner])) for p in pieces}
    assert len(digests) == 6
    for piece in pieces:
        tree = piece.step.tree(workbooks[piece.learner])
        assert piece.learner in (tree / bench.NAME_FILE).read_text()
        assert parses(tree) == (piece.kind != "broken"), f"{piece} parses: {parses(tree)}"
        if piece.kind in ("solution", "mistake"):
            assert ">>> task" not in "".join(p.read_text() for p in tree.rglob("*.py")), "markers left in"
        if piece.kind == "starter":
            assert "TODO (step" in "".join(p.read_text() for p in tree.rglob("*.py"))
    assert [p.expected for p in pieces if p.kind == "solution"] == [
        p.step.points for p in pieces if p.kind == "solution"
    ]
    assert all(p.expected == 0 for p in pieces if p.kind == "starter")


def test_the_same_seed_deals_the_same_class(bench: ModuleType) -> None:
    assert bench.plan_class(3, STEPS, seed=5) == bench.plan_class(3, STEPS, seed=5)
    assert bench.plan_class(30, STEPS, seed=5) != bench.plan_class(30, STEPS, seed=6)
