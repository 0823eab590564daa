"""Every entry point of the workbook. `nox -l` lists them; `nox -s step3` checks step 3.

The sessions only prepare an environment and call `python -m workbook ...`: the logic lives in the
workbook/ package, where the tests and the grader use the same code.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from workbook import catalogue, environments  # noqa: E402 - needs ROOT on sys.path first

# uv builds environments in about a second; virtualenv is the fallback where uv is missing. Environments
# are reused between runs, and uv compiles bytecode once at install time instead of on first import.
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = False
nox.options.sessions = ["status"]
os.environ.setdefault("UV_COMPILE_BYTECODE", "1")

PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")

# The Pythons the workbook supports: `nox -s pythons` checks the solutions, integrity and grading on each.
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
# Under CI a supported Python that cannot be found fails the run; elsewhere nox skips it and says so. Never
# a downloaded one instead: the versions tested are the machine's own.
nox.options.error_on_missing_interpreters = bool(os.environ.get("CI"))
nox.options.download_python = "never"


def pyenv_pythons_on_path(folder: Path = ROOT / ".nox" / "pythons") -> None:
    """Let nox find every Python pyenv holds, by name (python3.12), as it finds any other.

    pyenv's shims run only the versions pyenv has selected (here the global one): `python3.12` is found
    on PATH and then refuses to run. So each supported version pyenv has gets a link of that name in a
    folder put first on PATH; a python3.X that runs from PATH already is left alone.
    """
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    links = {}
    for version in PYTHONS:
        name = f"python{version}"
        found = shutil.which(name)
        if found and Path(found).parent != pyenv / "shims":
            continue
        # Final releases only (3.12.1, not 3.13.0rc1 or a free-threaded 3.13.0t), the newest by number.
        releases = [
            (tuple(int(part) for part in folder.name.split(".")), folder / "bin" / name)
            for folder in (pyenv / "versions").glob(f"{version}.*")
            if folder.name.replace(".", "").isdigit() and (folder / "bin" / name).exists()
        ]
        if releases:
            links[name] = max(releases)[1]
    if not links:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for name, target in links.items():
        link = folder / name
        if not (link.is_symlink() and link.resolve() == target.resolve()):
            link.unlink(missing_ok=True)
            link.symlink_to(target)
    os.environ["PATH"] = os.pathsep.join([str(folder), os.environ.get("PATH", "")])


pyenv_pythons_on_path()


# What every install prints unless `nox -v` asks for the installer's own command and output.
INSTALLING = "installing the workbook's packages (first run only)..."
STAMP = ".workbook-requirements"

# The learner-facing sessions, and the maintainer ones that need nothing more, share one environment with
# the union of their groups installed once: a learner's first session pays for it and no other session
# builds its own. nox has no setting for where a session's environment lives, so these sessions ask nox for
# none (venv_backend="none") and shared_env() keeps this one.
SHARED_ENV = "workbook"
SHARED_GROUPS = ("test", "learner")


def verbose(session: nox.Session) -> bool:
    """Whether `nox -v` was given: nox keeps the flag in its global config and offers no public getter."""
    return bool(session._runner.global_config.verbose)


def workbook_env(session: nox.Session) -> None:
    """The workbook runs from the checkout, not installed, and SQLAlchemy warns of anything not 2.0-style."""
    session.env["PYTHONPATH"] = str(ROOT)
    session.env["SQLALCHEMY_WARN_20"] = "1"


def install(session: nox.Session, *groups: str) -> None:
    """Install the pinned dependency groups of pyproject.toml in a session's own environment.

    A reused environment that already holds exactly these pins is left alone: asking the installer again
    costs a fifth of a second on every run, for nothing.
    """
    requirements = nox.project.dependency_groups(PYPROJECT, *groups)
    stamp = Path(session.virtualenv.location) / STAMP
    wanted = "\n".join(requirements)
    if not (stamp.is_file() and stamp.read_text() == wanted):
        loud = verbose(session)
        if not loud:
            session.log(INSTALLING)
        session.install(*requirements, silent=not loud, log=loud)
        stamp.write_text(wanted)
    workbook_env(session)


def _uv() -> str | None:
    """uv as nox finds it: the `uv` package beside nox first, then PATH."""
    try:
        from uv import find_uv_bin
    except ImportError:
        return shutil.which("uv")
    return find_uv_bin()


def _shared_python(session: nox.Session) -> Path:
    """In nox's envdir beside its own environments: `--envdir` moves it too, `rm -rf .nox` clears it."""
    return environments.interpreter(session.cache_dir.parent / SHARED_ENV)


def ready_env(session: nox.Session, location: Path, base: str, requirements: list[str]) -> Path:
    """A virtual environment at `location` on interpreter `base` with exactly `requirements`, made or
    installed only when its stamp says otherwise; its python.

    The stamp records the interpreter and the pins: a new Python rebuilds the environment, new pins
    reinstall into it, and anything else costs nothing.
    """
    python = environments.interpreter(location)
    stamp = location / STAMP
    wanted = "\n".join([base, *requirements])
    current = stamp.read_text() if stamp.is_file() else ""
    if current != wanted:
        loud = verbose(session)
        if not loud:
            session.log(INSTALLING)
        quietly = {"silent": not loud, "log": loud, "external": True}
        uv = _uv()
        if not python.exists() or not current.startswith(base + "\n"):
            shutil.rmtree(location, ignore_errors=True)
            if uv:
                session.run_install(uv, "venv", "--python", base, str(location), **quietly)
            else:
                session.run_install(base, "-m", "venv", str(location), **quietly)
        if uv:
            session.run_install(uv, "pip", "install", "--python", str(python), *requirements, **quietly)
        else:
            session.run_install(str(python), "-m", "pip", "install", "--quiet", *requirements, **quietly)
        stamp.write_text(wanted)
    return python


def step_envs(session: nox.Session, base: str = sys.executable, suffix: str = "") -> None:
    """The environments some steps' apps run on (catalogue.toml's `environment`, e.g. step 10's SQLAlchemy 2),
    on the judge's own Python, and an environment variable that tells the workbook where each is."""
    for name in catalogue.environments():
        location = (session.cache_dir.parent / f"{environments.folder(name).name}{suffix}").absolute()
        requirements = nox.project.dependency_groups(PYPROJECT, name)
        session.env[environments.variable(name)] = str(ready_env(session, location, base, requirements))


def shared_env(session: nox.Session) -> None:
    """Make the shared environment ready (created and installed on first use only) and run in it."""
    location = _shared_python(session).parent.parent
    requirements = nox.project.dependency_groups(PYPROJECT, *SHARED_GROUPS)
    python = ready_env(session, location, sys.executable, requirements)
    step_envs(session)
    session.env["VIRTUAL_ENV"] = str(location)
    session.env["PATH"] = os.pathsep.join([str(python.parent), os.environ.get("PATH", "")])
    workbook_env(session)


def python_of(session: nox.Session) -> str:
    """The interpreter to run: the shared environment's for a session nox gave no environment of its own."""
    return str(_shared_python(session)) if session.venv_backend == "none" else "python"


def workbook(session: nox.Session, *args: str) -> None:
    session.run(python_of(session), "-m", "workbook", *args)


def _make_step_session(step: catalogue.Step) -> None:
    def run_step(session: nox.Session) -> None:
        shared_env(session)
        workbook(session, "check", str(step.number), *session.posargs)

    run_step.__doc__ = (
        f"Check step {step.number} ({step.title}) in steps/{step.name}. `-- -v` for tracebacks."
    )
    nox.session(name=step.name, default=False, venv_backend="none")(run_step)


for _step in catalogue.steps():
    _make_step_session(_step)


@nox.session(venv_backend="none")
def status(session: nox.Session) -> None:
    """Where you are: every step's tasks (done, failing, not started), a progress bar, what to do next."""
    shared_env(session)
    workbook(session, "status")


@nox.session(default=False, venv_backend="none")
def hint(session: nox.Session) -> None:
    """The next hint for the first failing task of step N: `nox -s hint -- N` (`-- N --all` for all)."""
    shared_env(session)
    workbook(session, "hint", *session.posargs)


@nox.session(default=False, venv_backend="none")
def watch(session: nox.Session) -> None:
    """Re-check step N each time you save one of its files: `nox -s watch -- N`."""
    shared_env(session)
    workbook(session, "watch", *session.posargs)


@nox.session(default=False, venv_backend="none")
def reset(session: nox.Session) -> None:
    """Put steps/stepN back to its starter, keeping your version in backups/: `nox -s reset -- N`."""
    shared_env(session)
    workbook(session, "reset", *session.posargs)


@nox.session(default=False, venv_backend="none")
def solution(session: nox.Session) -> None:
    """The reference solution of step N as a diff against yours, once yours passes: `nox -s solution -- N`."""
    shared_env(session)
    workbook(session, "solution", *session.posargs)


@nox.session(default=False, venv_backend="none")
def solutions(session: nox.Session) -> None:
    """Run every step's suite against the reference solutions."""
    shared_env(session)
    workbook(session, "solutions", *session.posargs)


@nox.session(default=False, venv_backend="none")
def integrity(session: nox.Session) -> None:
    """Every task fails on its starter, every solution passes, steps/ matches the generator."""
    shared_env(session)
    workbook(session, "integrity", *session.posargs)


@nox.session(default=False, venv_backend="none")
def grade(session: nox.Session) -> None:
    """Grade a class: `nox -s grade -- SUBMISSIONS [--steps 1-10] [--out DIR] [--jobs N] [--timeout S]`.

    `--shard K/N` grades one slice of the class (merge with grade-merge); `--format classroom50` adds
    Classroom 50's result.json per learner."""
    shared_env(session)
    workbook(session, "grade", *session.posargs)


@nox.session(name="grade-merge", default=False, venv_backend="none")
def grade_merge(session: nox.Session) -> None:
    """Merge the outputs of `grade --shard K/N`: `nox -s grade-merge -- OUT1 OUT2 ... [--out grades]`."""
    shared_env(session)
    workbook(session, "grade-merge", *session.posargs)


@nox.session(default=False, venv_backend="none")
def classroom50(session: nox.Session) -> None:
    """Build build/classroom50/, a Classroom 50 autograder: `nox -s classroom50 -- --steps 1-10`."""
    shared_env(session)
    workbook(session, "classroom50", *session.posargs)


@nox.session(default=False, venv_backend="none")
def gradescope(session: nox.Session) -> None:
    """Build build/gradescope-autograder.zip for Gradescope: `nox -s gradescope -- --steps 1-10`."""
    shared_env(session)
    workbook(session, "gradescope", *session.posargs)


@nox.session(name="benchmark-grade", default=False, venv_backend="none")
def benchmark_grade(session: nox.Session) -> None:
    """Grade a seeded class of 30 distinct learners over every step: wall time and CPU per step run.

    `-- --learners 6 --steps 1-3` for a quick run; also `--seed S`, `--jobs N`, `--keep DIR`.
    """
    shared_env(session)
    session.run(python_of(session), "bench/grade.py", *session.posargs)


@nox.session(default=False, venv_backend="none")
def flakes(session: nox.Session) -> None:
    """Run every suite N times on the solution, the starter and every mistake; fail on a changed verdict:
    `nox -s flakes -- [1-3] [--runs 20] [--load]`."""
    shared_env(session)
    workbook(session, "flakes", *session.posargs)


@nox.session(default=False, venv_backend="none")
def build(session: nox.Session) -> None:
    """Regenerate steps/ from solutions/ (refuses to overwrite your edits without `-- --force`)."""
    shared_env(session)
    workbook(session, "build", *session.posargs)


@nox.session(default=False, venv_backend="none")
def serve(session: nox.Session) -> None:
    """Run the finished app at http://127.0.0.1:8080 on a throwaway PostgreSQL (`-- N`, `-- --learner N`)."""
    shared_env(session)
    workbook(session, "serve", *session.posargs)


def run_ruff(session: nox.Session) -> None:
    session.run("ruff", "check", ".")
    session.run(
        "ruff", "format", "--check", "workbook", "noxfile.py", "tests/workbook", "tests/browser", "bench"
    )


@nox.session(default=False)
def mutants(session: nox.Session) -> None:
    """Mutation testing: every task region of the solutions mutated, each mutant judged as a learner's tree.

    `-- 3` or `-- 3-5` for some steps; also `--sample K --seed S`, `--list`, `--jobs J`, `--out FILE`."""
    install(session, "mutants")
    step_envs(session)
    workbook(session, "mutants", *session.posargs)


@nox.session(default=False)
def notebooks(session: nox.Session) -> None:
    """Execute every companion notebook against the solutions (`-- --tree steps` for yours)."""
    install(session, "notebooks")
    step_envs(session)
    workbook(session, "notebooks", *session.posargs)


@nox.session(default=False)
def lab(session: nox.Session) -> None:
    """Open the companion notebooks in JupyterLab, in an environment of their own."""
    install(session, "lab")
    step_envs(session)
    as_root = ["--allow-root"] if os.geteuid() == 0 else []  # Jupyter refuses root unless told
    # Through workbook.lifetime: killed alone, nox would leave JupyterLab and its kernels running.
    lab_command = ["jupyter", "lab", "--notebook-dir", str(ROOT / "notebooks"), *as_root, *session.posargs]
    session.run("python", "-m", "workbook.lifetime", "--parent", str(os.getpid()), *lab_command)


@nox.session(default=False)
def lint(session: nox.Session) -> None:
    """ruff: style and common bugs, everywhere but the generated starters' intentional gaps."""
    install(session, "lint")
    run_ruff(session)


@nox.session
def tests(session: nox.Session) -> None:
    """What CI runs: lint, the tooling's own tests, sampled mutants, the integrity matrix, every notebook."""
    install(session, "notebooks", "lint", "learner", "mutants")
    step_envs(session)
    run_ruff(session)
    session.run("python", "-m", "pytest", "tests/workbook", "-q")
    # At most 10 mutants per step, the same seeded draw every run (about 2 minutes): a survivor not recorded
    # in tests/mutants/equivalent.toml, or a mutant that runs into the timeout, fails the run, so a weakened
    # check or one without its own deadline shows here, not only in the full run.
    workbook(session, "mutants", "--sample", "10")
    workbook(session, "integrity")
    workbook(session, "notebooks")


@nox.session(python=list(PYTHONS), default=False)
def pythons(session: nox.Session) -> None:
    """On one supported Python (`nox -s pythons` runs them all): every solution, the integrity matrix, and a
    seeded class of 3 learners graded over every step, solutions full and starters 0."""
    install(session, "test")
    # The real interpreter under the session's venv (3.10's sys._base_executable is the venv's own python).
    find_base = "import sys; v = sys.version_info; print(f'{sys.base_prefix}/bin/python{v.major}.{v.minor}')"
    base = session.run("python", "-c", find_base, silent=True).strip()
    step_envs(session, base=base, suffix=f"-{session.python}")
    session.run("python", "-c", "import sys; print('Python', sys.version.split()[0], 'at', sys.executable)")
    workbook(session, "solutions")
    workbook(session, "integrity")
    session.run("python", "bench/grade.py", "--learners", "3")


@nox.session(default=False)
def benchmark(session: nox.Session) -> None:
    """Print the provider's start-to-ready time, the warm wall time of `nox -s stepN` for every step, the
    time from a save to `nox -s watch`'s verdict, `nox -s status` cold, warm and after one change, and the
    size of the environments."""
    install(session, "test", "learner")
    step_envs(session)
    session.install("nox==2026.10.20", "uv==0.13.9")
    session.run("python", "bench/startup.py")
    session.run("python", "bench/steps.py")
    session.run("python", "bench/watch.py")
    session.run("python", "bench/envs.py")


@nox.session(default=False, venv_backend="none")
def bench(session: nox.Session) -> None:
    """Load-test the finished app: req/s, p50/p99, lost votes; `-- --compare 9 10` runs two side by side."""
    shared_env(session)
    session.run(python_of(session), "bench/load.py", *session.posargs)


CHROMIUM = Path("/usr/bin/chromium")


@nox.session(default=False)
def browser(session: nox.Session) -> None:
    """Click through the finished app in Chromium; writes docs/screenshots/{index,poll,results,404}.png."""
    # Playwright cannot download its own browser here: the tests drive the system's Chromium.
    if not CHROMIUM.exists() and os.geteuid() == 0 and shutil.which("apt-get"):
        session.log(f"No Chromium at {CHROMIUM}: trying `apt-get install -y chromium`")
        apt_env = {"DEBIAN_FRONTEND": "noninteractive"}
        for apt_args in (["update", "-qq"], ["install", "-y", "-qq", "chromium"]):
            # A failed apt-get (no network, no such package) is reported and leads to the skip below.
            session.run("apt-get", *apt_args, env=apt_env, external=True, success_codes=range(256))
    if not CHROMIUM.exists():
        session.skip(
            f"no Chromium at {CHROMIUM}, so no browser tests: install it (Debian/Ubuntu, as root: "
            "`apt-get install chromium`) and run `nox -s browser` again"
        )
    install(session, "browser")
    step_envs(session)
    session.run("python", "-m", "pytest", "tests/browser", *session.posargs)
