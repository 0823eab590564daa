"""Classroom 50 (GitHub Classroom's successor): an autograder for its runner, and the learner's own check.

Classroom 50 grades in GitHub Actions, in each learner's repository. Its runner fetches the assignment's
bundle (the folder CLASSROOM/autograders/ASSIGNMENT/ of the instructor's classroom50 repository, published
as a tar.gz of at most 10 MB), runs `python autograder.py` from it with the learner's checkout as the
working directory, and reads ./result.json (the classroom50/result/v1 contract: integer score and
max-score, a list of tests) and, if there is one, ./release-body.md, which it publishes with the
submission and mirrors to the job summary.

    python -m workbook classroom50 --steps 1-10   (nox -s classroom50) writes build/classroom50/:
        autograder.py      what the runner runs: a virtualenv with the pinned test dependencies, then
                           `python -m workbook.classroom50 autograde`, as root through sudo when the runner
                           allows it (GitHub's runners do), so that the confinement has its uid tiers
        requirements.txt   the `test` dependency group
        requirements-NAME.txt  a step environment's group (step 10's sqlalchemy2), made into a venv of its own
        workbook/ tests/ config/ pyproject.toml   the instructor's tooling and the steps' suites
    python -m workbook.classroom50 autograde      grades the checkout with the engine of `nox -s grade`
                                                   (grade_submissions, one submission), writes
                                                   result.json and release-body.md
    python -m workbook.classroom50 check          the learner's own feedback (.github/workflows/check.yml):
                                                   the same grading of their checkout, as a table of tasks
                                                   in the job summary

A learner controls their repository, its workflows and what runs in it: a score collected from it is
feedback, and the instructor's confined `nox -s grade` of the collected copies is the grade of record.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import catalogue
from .gradescope import bundle_files, requirement_files, step_range
from .grading import confinement
from .grading.outputs import CLASSROOM50_SCALE, classroom50_result, task_table
from .grading.running import DEFAULT_JOBS, GradingError, RunRecord, grade_submissions
from .grading.scores import LearnerGrade, format_points
from .grading.submissions import Submission
from .pg import NoPostgresAvailable

DEFAULT_OUT = Path("build") / "classroom50"
DEFAULT_TIMEOUT = 60.0  # per step: Classroom 50 stops the whole grading job after 15 minutes
PAGES_LIMIT = 10 * 1024 * 1024  # bytes: the runner refuses a larger bundle
RESULT_FILE = "result.json"
RELEASE_BODY = "release-body.md"
# What the runner hands the autograder, passed on through sudo; the identity of the submission.
IDENTITY = (
    "CLASSROOM",
    "ASSIGNMENT",
    "SUBMISSION_TAG",
    "COMMIT_URL",
    "RELEASE_URL",
    "REVIEW_URL",
    "GITHUB_SHA",
)
NAMES = ("OWNER", "USERNAME", "GITHUB_ACTOR")  # who the learner is, first found
RECORD_NOTE = (
    "This score is feedback: you control this repository. Your instructor grades the collected copies "
    "with the same suites, confined, and that grade is the one recorded."
)

AUTOGRADER_PY = '''\
#!/usr/bin/env python3
"""Classroom 50 runs this once per submission, with the learner's checkout as the working directory.

It makes a virtualenv with the workbook's pinned test dependencies (once per job), then grades the checkout
with the workbook's own grader (the code of `nox -s grade`), which writes ./result.json and
./release-body.md. Built by `nox -s classroom50`; rebuild it rather than editing it.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARGS = ["--steps", "{steps}", "--timeout", "{timeout:g}", "--scale", "{scale}"]
IDENTITY = {identity!r}


def main():
    venv = Path(os.environ.get("RUNNER_TEMP") or HERE) / "workbook-venv"
    python = make_venv(sys.executable, venv, HERE / "requirements.txt")
    env = {{"PYTHONPATH": str(HERE), "SQLALCHEMY_WARN_20": "1", "WORKBOOK_LEARNER": learner()}}
    # Steps whose apps run on packages of their own (step 10: SQLAlchemy 2, asyncpg): a venv each, on the
    # same Python, named to the grader by WORKBOOK_PYTHON_NAME.
    for wanted in sorted(HERE.glob("requirements-*.txt")):
        name = wanted.stem.removeprefix("requirements-")
        own = make_venv(str(python), venv.with_name(f"workbook-venv-{{name}}"), wanted)
        env[f"WORKBOOK_PYTHON_{{name.upper()}}"] = str(own)
    env.update({{name: os.environ[name] for name in IDENTITY if os.environ.get(name)}})
    command = [str(python), "-m", "workbook.classroom50", "autograde", "--workspace", os.getcwd(), *ARGS]
    if os.geteuid() != 0 and shutil.which("sudo") and sudo_works():
        # Root gives the grader its strongest confinement: a uid of its own for the learner's processes.
        command = ["sudo", "-n", "env", *(f"{{k}}={{v}}" for k, v in env.items()), *command]
    return subprocess.run(command, env={{**os.environ, **env}}).returncode


def make_venv(base, venv, requirements):
    """A virtualenv at `venv` on `base` with `requirements` installed (once per job); its python."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "-r", str(requirements)], check=True)
    return python


def learner():
    names = ("OWNER", "USERNAME", "GITHUB_ACTOR")
    return next((os.environ[n] for n in names if os.environ.get(n)), "learner")


def sudo_works():
    return subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0


if __name__ == "__main__":
    sys.exit(main())
'''


def build(
    out: Path,
    steps: Sequence[catalogue.Step],
    timeout: float = DEFAULT_TIMEOUT,
    scale: int = CLASSROOM50_SCALE,
    root: Path = catalogue.ROOT,
) -> int:
    """Write the autograder folder (what goes into CLASSROOM/autograders/ASSIGNMENT/); the size of its
    tar.gz, which Classroom 50's runner caps at 10 MB."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    script = AUTOGRADER_PY.format(steps=step_range(steps), timeout=timeout, scale=scale, identity=IDENTITY)
    (out / "autograder.py").write_text(script)
    for name, text in requirement_files(root, steps).items():
        (out / name).write_text(text)
    for name, path in bundle_files(root, steps):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, out / name)
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w:gz") as archive:
        archive.add(out, arcname=".")
    return len(packed.getvalue())


def _utc(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def submitted_at(workspace: Path, sha: str | None) -> str:
    """The commit's committer date (what Classroom 50 calls the submission instant), else now."""
    completed = subprocess.run(
        ["git", "-c", "safe.directory=*", "show", "-s", "--format=%cI", sha or "HEAD"],
        cwd=workspace, capture_output=True, text=True, check=False,
    )  # fmt: skip
    try:
        return _utc(datetime.datetime.fromisoformat(completed.stdout.strip()))
    except ValueError:
        return _utc(datetime.datetime.now(datetime.timezone.utc))


def _grade_one(
    name: str, workspace: Path, steps: Sequence[catalogue.Step], timeout: float, jobs: int | None,
    tier: str | None, private: Sequence[Path] = (),
) -> tuple[LearnerGrade, RunRecord]:  # fmt: skip
    """One learner's checkout through grade_submissions, confined as far as this machine allows. Where it
    allows nothing, grading goes on unconfined (said in the results): the learner's own runner is theirs."""
    strongest = confinement.detect_tier(tier)[0]
    record = RunRecord()
    [graded] = grade_submissions(
        [Submission(name, workspace)], steps, jobs=jobs or DEFAULT_JOBS, timeout=timeout, record=record,
        trusted=strongest == confinement.NONE, tier=tier, private=private,
    )  # fmt: skip
    return graded, record


def autograde(
    workspace: Path,
    steps: Sequence[catalogue.Step],
    timeout: float = DEFAULT_TIMEOUT,
    scale: int = CLASSROOM50_SCALE,
    jobs: int | None = None,
    environ: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Grade the learner's checkout and write its result.json and release-body.md, as the runner expects."""
    environ = dict(os.environ if environ is None else environ)
    missing = [name for name in IDENTITY[:5] if not environ.get(name)]
    if missing:
        raise GradingError(f"not run by Classroom 50's runner: {', '.join(missing)} not set")
    bundle = catalogue.ROOT
    if os.geteuid() == 0:  # the uid tier's wall is file permissions: the instructor's bundle is root's
        for private in (bundle, workspace):
            os.chmod(private, 0o700)
    name = environ.get("WORKBOOK_LEARNER") or next((environ[n] for n in NAMES if environ.get(n)), "learner")
    graded, record = _grade_one(name, workspace, steps, timeout, jobs, None, private=[bundle])
    commit = environ["COMMIT_URL"]
    identity = {
        "classroom": environ["CLASSROOM"], "assignment": environ["ASSIGNMENT"],
        "submission": environ["SUBMISSION_TAG"], "commit": commit, "release": environ["RELEASE_URL"],
        "review": environ.get("REVIEW_URL") or commit,
        "datetime": submitted_at(workspace, environ.get("GITHUB_SHA")),
    }  # fmt: skip
    result = classroom50_result(graded, identity, scale)
    body = task_table(graded, record.tier) + f"\n{RECORD_NOTE}\n"
    owner = workspace.stat()
    for file_name, text in ((RESULT_FILE, json.dumps(result, indent=2) + "\n"), (RELEASE_BODY, body)):
        path = workspace / file_name
        path.unlink(missing_ok=True)
        path.write_text(text, encoding="utf-8")
        if os.geteuid() == 0:  # the runner, not root, reads and rewrites them next
            os.chown(path, owner.st_uid, owner.st_gid)
    return result


def check(
    workspace: Path,
    steps: Sequence[catalogue.Step],
    timeout: float = DEFAULT_TIMEOUT,
    tier: str | None = None,
    summary: Path | None = None,
) -> LearnerGrade:
    """The learner's feedback: their checkout graded like a submission, as a table in the job summary."""
    name = next((os.environ[n] for n in NAMES if os.environ.get(n)), "your workbook")
    graded, record = _grade_one(name, workspace, steps, timeout, None, tier)
    table = task_table(graded, record.tier)
    print(table)
    if summary is not None:
        with summary.open("a", encoding="utf-8") as handle:
            handle.write(table + f"\n{RECORD_NOTE}\n")
    return graded


# --- command line ----------------------------------------------------------------------------------------


def _steps(text: str | None) -> list[catalogue.Step]:
    return catalogue.parse_step_range(text) if text else list(catalogue.steps())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m workbook classroom50`: build the autograder folder."""
    parser.add_argument("--steps", help="the steps to grade, such as 1-9 (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the folder to write ({DEFAULT_OUT})")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per step (default %(default)g)"
    )
    parser.add_argument(
        "--scale", type=int, default=CLASSROOM50_SCALE,
        help="Classroom 50's points per point of the workbook (default %(default)s: hundredths kept)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    steps = _steps(args.steps)
    size = build(args.out, steps, args.timeout, args.scale)
    points = sum(step.points for step in steps)
    print(
        f"Wrote {args.out}: steps {step_range(steps)}, {points} points ({points * args.scale} in Classroom "
        f"50, x{args.scale}); {size // 1024} KB packed.\nCopy its contents into CLASSROOM/autograders/"
        'ASSIGNMENT/ of your classroom50 repository, and give the assignment the runtime {"python": "3.12", '
        '"apt": ["bubblewrap", "postgresql"]} (README.md, "Classroom 50").'
    )
    if size > PAGES_LIMIT:
        print(f"error: {size:,} bytes packed: Classroom 50 takes at most {PAGES_LIMIT:,}", file=sys.stderr)
        return 1
    return 0


def _autograde(args: argparse.Namespace) -> int:
    try:
        result = autograde(args.workspace.resolve(), _steps(args.steps), args.timeout, args.scale, args.jobs)
    except (GradingError, NoPostgresAvailable) as exc:  # no result.json: the runner reports an error
        print(f"The autograder could not grade: {exc}", file=sys.stderr)
        return 1
    print(f"{result['score']}/{result['max-score']} (points x{args.scale}): {args.workspace / RESULT_FILE}")
    return 0


def _check(args: argparse.Namespace) -> int:
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    try:
        graded = check(args.workspace.resolve(), _steps(args.steps), args.timeout, args.tier,
                       Path(summary) if summary else None)  # fmt: skip
    except (GradingError, NoPostgresAvailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{format_points(graded.total)}/{graded.max_points} points.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workbook.classroom50", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    building = commands.add_parser("build", help="write the autograder folder")
    add_arguments(building)
    building.set_defaults(handler=run)
    for name, handler, text in (
        ("autograde", _autograde, "grade the checkout in the working directory (what autograder.py runs)"),
        ("check", _check, "the learner's feedback: a table of tasks in $GITHUB_STEP_SUMMARY"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--workspace", type=Path, default=Path.cwd(), help="the learner's checkout")
        command.add_argument("--steps", help="the steps to grade (default: all)")
        command.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
        command.set_defaults(handler=handler)
        if name == "autograde":
            command.add_argument("--scale", type=int, default=CLASSROOM50_SCALE)
            command.add_argument("--jobs", type=int, default=None, help="steps graded at once")
        else:
            command.add_argument("--tier", choices=confinement.TIERS, help="a weaker confinement (tests)")
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except KeyError as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
