"""Sharded grading: a class graded whole and in 3 shards gives the same outputs; grade-merge refuses a shard
that is missing, doubled or foreign (another snapshot of the tests, another tier), saying which."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from tests.workbook.conftest import copy_of_the_workbook, copy_parts, finish, package
from workbook import catalogue
from workbook.grading import contract, shards

ROOT = catalogue.ROOT
STEPS = "1-2"


def grade(args: list[str], root: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`python -m workbook ARGS` from the checkout `root`, as `nox -s grade` runs it."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    command = [sys.executable, "-m", "workbook", *args]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)


def build_class(folder: Path) -> None:
    """Five learners whose failures read the same on every run (no random port in a message)."""
    for name in ("ada", "Ben", "cleo", "dan", "eve"):
        copy = copy_of_the_workbook(folder / name)
        finish(copy, 1)
    for name in ("ada", "cleo"):
        finish(folder / name, 2)  # a starter's failures name a random port: none is left in this class
    shutil.rmtree(folder / "Ben" / "steps" / "step2")  # step 2 not handed in
    (package(folder / "cleo", 1) / "main.py").write_text("def main(:\n")  # step 1 does not parse
    shutil.rmtree(package(folder / "dan", 2))  # a step 2 without its package
    (package(folder / "eve", 2) / "views.py").write_text("import os\n\nos._exit(3)\n")  # dies at import


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("shards")
    build_class(base / "class")
    common = ["--steps", STEPS, "--tier", "none", "--trusted", "--format", "classroom50"]
    outs = {"whole": base / "whole"} | {f"{k}/3": base / f"shard-{k}" for k in (1, 2, 3)}
    for shard, out in outs.items():
        extra = [] if shard == "whole" else ["--shard", shard]
        completed = grade(["grade", str(base / "class"), "--out", str(out), *common, *extra])
        assert completed.returncode == 0, completed.stderr[-3000:]
    merged = grade(["grade-merge", *(str(outs[f"{k}/3"]) for k in (1, 2, 3)), "--out", str(base / "merged")])
    assert merged.returncode == 0, merged.stderr
    return {**outs, "merged": base / "merged", "base": base}


def merge(*folders: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return grade(["grade-merge", *map(str, folders), "--out", str(out)])


def test_a_class_graded_whole_and_in_three_shards_gives_the_same_outputs(graded):
    whole, merged = graded["whole"], graded["merged"]
    assert (whole / "gradebook.csv").read_bytes() == (merged / "gradebook.csv").read_bytes()
    assert (whole / "report.html").read_text() == (merged / "report.html").read_text()  # it shows no timing
    names = sorted(p.name for p in (whole / "learners").iterdir())
    assert names == ["Ben", "ada", "cleo", "dan", "eve"]
    assert sorted(p.name for p in (merged / "learners").iterdir()) == names
    for name in names:
        a, b = whole / "learners" / name, merged / "learners" / name
        assert (a / "results.json").read_bytes() == (b / "results.json").read_bytes(), name
        ours, theirs = (json.loads((folder / "result.json").read_text()) for folder in (a, b))
        assert {**ours, "datetime": ""} == {**theirs, "datetime": ""}, name  # the run's time differs
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    rows = (whole / "gradebook.csv").read_text().splitlines()
    assert rows[0] == "learner,step1,step2,total" and [r.split(",")[0] for r in rows[1:]] == [
        "ada", "Ben", "cleo", "dan", "eve",
    ]  # fmt: skip
    full = [catalogue.step(1).points, catalogue.step(2).points]
    assert rows[1] == f"ada,{full[0]},{full[1]},{sum(full)}" and rows[2] == f"Ben,{full[0]},0,{full[0]}"


def test_run_json_identifies_each_shard_and_the_merge_is_the_whole_class(graded):
    runs = {key: json.loads((graded[key] / "run.json").read_text()) for key in ("whole", "1/3", "2/3", "3/3")}
    merged = json.loads((graded["merged"] / "run.json").read_text())
    # Round robin over the names sorted as the gradebook sorts them: ada, Ben, cleo, dan, eve.
    assert [runs[k]["graded"] for k in ("1/3", "2/3", "3/3")] == [["ada", "dan"], ["Ben", "eve"], ["cleo"]]
    assert [runs[k]["shard"] for k in ("1/3", "2/3", "3/3")] == [{"index": k, "count": 3} for k in (1, 2, 3)]
    assert len({run["snapshot"] for run in runs.values()}) == 1 and len(runs["whole"]["snapshot"]) == 64
    assert all(
        run["roster"] == shards.roster_of(["ada", "Ben", "cleo", "dan", "eve"]) for run in runs.values()
    )
    for key in ("tier", "steps", "snapshot", "roster", "graded", "learners", "shard"):
        assert merged[key] == runs["whole"][key], key
    for document in [*runs.values(), merged]:
        jsonschema.validate(document, contract.schema(contract.SHARD_RUN))


def test_every_classroom50_result_keeps_the_v1_contract(graded):
    for path in sorted((graded["merged"] / "learners").glob("*/result.json")):
        result = json.loads(path.read_text())
        jsonschema.validate(result, contract.schema(contract.RESULT_V1))
        assert result["score"] == sum(t["score"] for t in result["tests"]) <= result["max-score"]
        assert result["max-score"] == 100 * (catalogue.step(1).points + catalogue.step(2).points)


def test_merging_refuses_a_missing_shard(graded, tmp_path):
    completed = merge(graded["1/3"], graded["3/3"], out=tmp_path / "out")
    assert completed.returncode == 2 and "shard 2/3 missing: only 1/3, 3/3 given" in completed.stderr
    assert not (tmp_path / "out").exists()


def test_merging_refuses_a_doubled_shard(graded, tmp_path):
    again = merge(graded["1/3"], graded["2/3"], graded["2/3"], graded["3/3"], out=tmp_path / "out")
    assert again.returncode == 2 and f"shard {graded['2/3']} is given twice" in again.stderr
    copy = shutil.copytree(graded["2/3"], tmp_path / "copy-of-2")
    completed = merge(graded["1/3"], graded["2/3"], copy, graded["3/3"], out=tmp_path / "out")
    assert completed.returncode == 2
    assert f"shard 2/3 is given twice: {graded['2/3']} and {copy}" in completed.stderr


def test_merging_refuses_a_shard_graded_from_another_snapshot_of_the_tests(graded, tmp_path):
    """Shard 3 graded for real from a checkout whose step 1 suite differs by one comment."""
    checkout = copy_parts(tmp_path / "checkout", ("workbook", "tests", "config", "pyproject.toml"))
    suite = next((checkout / "tests" / "step1").glob("test_*.py"))
    suite.write_text(suite.read_text() + "\n# edited after the other shards were graded\n")
    other = tmp_path / "other-3"
    args = ["--steps", STEPS, "--tier", "none", "--trusted", "--format", "classroom50", "--shard", "3/3"]
    completed = grade(["grade", str(graded["base"] / "class"), "--out", str(other), *args], root=checkout)
    assert completed.returncode == 0, completed.stderr[-3000:]
    refused = merge(graded["1/3"], graded["2/3"], other, out=tmp_path / "out")
    assert refused.returncode == 2
    assert f"foreign shard: {other / 'run.json'} has snapshot = " in refused.stderr
    assert "graded with another snapshot of the tests and tooling" in refused.stderr


def test_merging_refuses_a_shard_graded_at_another_tier(graded, tmp_path):
    """The tier as another machine would record it (grading at the uid tier for real needs root)."""
    other = shutil.copytree(graded["3/3"], tmp_path / "uid-3")
    run = json.loads((other / "run.json").read_text())
    (other / "run.json").write_text(json.dumps({**run, "tier": "uid"}))
    refused = merge(graded["1/3"], graded["2/3"], other, out=tmp_path / "out")
    assert refused.returncode == 2
    assert f"foreign shard: {other / 'run.json'} has tier = 'uid'" in refused.stderr
    assert "graded at another confinement tier" in refused.stderr


def test_merging_refuses_a_shard_whose_run_did_not_complete(graded, tmp_path):
    """A shard that failed half-way writes its outputs too, but a merge of it is no class's gradebook."""
    other = shutil.copytree(graded["3/3"], tmp_path / "failed-3")
    run = json.loads((other / "run.json").read_text())
    (other / "run.json").write_text(json.dumps({**run, "completed": False, "reason": "grader error: X"}))
    refused = merge(graded["1/3"], graded["2/3"], other, out=tmp_path / "out")
    assert refused.returncode == 2
    assert f"{other / 'run.json'}: that shard's run did not complete (grader error: X)" in refused.stderr
    assert not (tmp_path / "out").exists()


def test_merging_refuses_a_shard_that_breaks_its_schema_naming_the_file_and_field(graded, tmp_path):
    other = shutil.copytree(graded["3/3"], tmp_path / "bad-3")
    run = json.loads((other / "run.json").read_text())
    (other / "run.json").write_text(json.dumps({**run, "shard": {"index": "3", "count": 3}}))
    refused = merge(graded["1/3"], graded["2/3"], other, out=tmp_path / "out")
    assert refused.returncode == 2 and f"{other / 'run.json'}: shard.index: must be integer" in refused.stderr
    (other / "run.json").write_text(json.dumps(run))
    (other / "grades.json").write_text(json.dumps({"learners": [{"name": "cleo"}]}))
    refused = merge(graded["1/3"], graded["2/3"], other, out=tmp_path / "out")
    assert f"{other / 'grades.json'}: learners[0].problems: missing" in refused.stderr
    with (other / "grades.json").open("w") as handle:  # past the cap, without reading it whole
        handle.truncate(shards.GRADES_LIMIT + 1)
    refused = merge(graded["1/3"], graded["2/3"], other, out=tmp_path / "out")
    assert f"{other / 'grades.json'}: not a regular file of at most" in refused.stderr


def test_an_empty_shard_still_says_what_it_is(graded, tmp_path):
    completed = grade([
        "grade", str(graded["base"] / "class"), "--steps", STEPS, "--tier", "none", "--trusted",
        "--shard", "6/6", "--out", str(tmp_path / "empty"),
    ])  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    run = json.loads((tmp_path / "empty" / "run.json").read_text())
    assert run["graded"] == [] and run["shard"] == {"index": 6, "count": 6}
    assert run["snapshot"] == json.loads((graded["whole"] / "run.json").read_text())["snapshot"]


def test_the_slice_is_round_robin_over_names_sorted_case_folded():
    names = ["eve", "Ben", "ada", "dan", "cleo", "Finn", "gus"]
    assert shards.shard_of(names, 1, 3, name=str) == ["ada", "dan", "gus"]
    assert shards.shard_of(names, 2, 3, name=str) == ["Ben", "eve"]
    assert shards.shard_of(names, 3, 3, name=str) == ["cleo", "Finn"]
    assert shards.class_hash(names) == shards.class_hash(sorted(names))
    assert shards.parse_shard("2/3") == (2, 3)
    for wrong in ("0/3", "4/3", "3", "a/b"):
        with pytest.raises(ValueError, match="K"):
            shards.parse_shard(wrong)
