"""`python -m workbook COMMAND`: what the nox sessions run. See `python -m workbook --help`."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import catalogue, learner, scoring, starter, verdicts
from .environments import EnvironmentMissing
from .judge.untrusted import read_json_object
from .lifetime import end_with_parent
from .runner import JUDGE_ENV, STEP_TIMEOUT, StepResult, pytest_command, run_many


def _check(args: argparse.Namespace) -> int:
    step = catalogue.step(args.step)
    # `-v` after the step number lands in pytest's arguments (REMAINDER takes the rest): honour it there.
    verbose = args.verbose or any(arg in ("-v", "--verbose") for arg in args.pytest_args)
    passed_on = [arg for arg in args.pytest_args if arg not in ("-v", "--verbose")]
    timeout, passed_on = _option_value(passed_on, "--timeout", args.timeout)
    extra = ["-v", "--tb=short"] if verbose else ["-q", "--tb=no", "--no-header", "-rN"]
    env = {**os.environ, **JUDGE_ENV}
    if args.target != "steps" or passed_on:  # another tree, or a partial run: no verdict to remember
        with tempfile.TemporaryDirectory(prefix="workbook-check-", ignore_cleanup_errors=True) as tmp:
            command = pytest_command(step, args.target, None, extra + passed_on, Path(tmp) / "pytest")
            return _run_suite(command, env, step, timeout) or 0
    # A whole run of steps/stepN: remember its verdict, so that the next `nox -s status` need not re-run it.
    key = verdicts.step_key(step, catalogue.ROOT, verdicts.judge_key(catalogue.ROOT))
    with tempfile.TemporaryDirectory(prefix="workbook-report-", ignore_cleanup_errors=True) as tmp:
        report_path = Path(tmp) / "report.json"
        command = pytest_command(step, args.target, report_path, extra, Path(tmp) / "pytest")
        returncode = _run_suite(command, env, step, timeout)
        report = read_json_object(report_path)  # written beside a learner's process: untrusted
    if returncode is None:  # cut short: no verdict to remember
        return 1
    verdicts.store(StepResult(step, "steps", returncode, report), catalogue.ROOT, key)
    return returncode


def _option_value(args: list[str], name: str, default: float) -> tuple[float, list[str]]:
    """`name S` or `name=S` taken out of `args` (what REMAINDER gathered after the step), as a number."""
    rest, value, index = [], default, 0
    while index < len(args):
        arg = args[index]
        if arg == name and index + 1 < len(args):
            value, index = float(args[index + 1]), index + 2
            continue
        if arg.startswith(name + "="):
            value = float(arg.partition("=")[2])
        else:
            rest.append(arg)
        index += 1
    return value, rest


# How long a suite cut short at its timeout may take to stop as after Ctrl+C (its summary, its cleanup).
STOP_GRACE = 15.0


def _run_suite(command: list[str], env: dict[str, str], step: catalogue.Step, timeout: float) -> int | None:
    """Run a suite with its output shown as it comes; its exit status, or None once `timeout` has passed.

    The suite stays in the terminal's process group, so Ctrl+C reaches it as before. At the timeout it gets
    what Ctrl+C would send (pytest stops, prints what it found and cleans up), then a kill.
    """
    process = subprocess.Popen(command, cwd=catalogue.ROOT, env=env)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(
            f"\nstep {step.number}'s checks did not finish within {timeout:.0f} s, so they were stopped: "
            "is there an endless loop? (`--timeout S` gives them longer)",
            file=sys.stderr,
        )
        return None
    except KeyboardInterrupt:  # the suite heard Ctrl+C too: let it stop as it does
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_GRACE)
        raise
    finally:
        if process.poll() is None:  # a signal ended this command first
            process.kill()
            process.wait()


def _solutions(args: argparse.Namespace) -> int:
    steps = catalogue.parse_step_range(args.steps) if args.steps else catalogue.steps()
    results = run_many([(step, "solutions") for step in steps])
    failed = [r for r in results if r.returncode != 0]
    for result in results:
        state = "passes" if result.returncode == 0 else f"FAILS (exit {result.returncode})"
        earned = scoring.format_points(result.points)
        print(f"step {result.step.number}: solution {state}, {earned}/{result.step.points} points")
    for result in failed:
        print(f"\n--- step {result.step.number} ---\n{result.output[-4000:]}")
    return 1 if failed else 0


def _integrity(args: argparse.Namespace) -> int:
    from . import integrity

    steps = catalogue.parse_step_range(args.steps) if args.steps else None
    problems = integrity.check(steps, record=args.record)
    if problems:
        print("\nIntegrity problems:\n- " + "\n- ".join(problems))
        return 1
    print("\nIntegrity: every task fails on its starter and passes on its solution; steps/ is in sync.")
    return 0


def _mutants(args: argparse.Namespace) -> int:
    from . import mutants  # needs libcst, installed by the mutants and tests sessions only

    return mutants.main(args)


def _flakes(args: argparse.Namespace) -> int:
    from . import flakes

    steps = catalogue.parse_step_range(args.steps) if args.steps else catalogue.steps()
    load = flakes.default_load() if args.load else 0
    kinds = args.only.split(",") if args.only else flakes.KINDS
    problems = flakes.run(steps, args.runs, load=load, workers=args.workers, kinds=kinds)
    if problems:
        print("\nVerdicts that changed between runs of the same code:\n- " + "\n- ".join(problems))
        return 1
    print("No verdict changed between runs.")
    return 0


def _build(args: argparse.Namespace) -> int:
    result = starter.build(force=args.force)
    if result.learner_edits and not args.force:
        listing = "\n  ".join(str(p.relative_to(catalogue.ROOT)) for p in result.learner_edits)
        print(
            f"Not rebuilding: these starter files were edited since they were generated:\n  {listing}\n"
            "Keep your work somewhere else first, or run `nox -s build -- --force` to overwrite it."
        )
        return 1
    changed = result.changes
    print(
        f"steps/ regenerated: {len(changed)} file(s) changed."
        if changed
        else "steps/ was already up to date."
    )
    for path in changed:
        print(f"  {path.relative_to(catalogue.ROOT)}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .serve import DEFAULT_PORT, newest_finished_step, serve

    if args.learner is not None:
        step, learner = catalogue.step(args.learner), True
    else:
        step, learner = (catalogue.step(args.step) if args.step else newest_finished_step()), False
    return serve(step, learner=learner, port=args.port or DEFAULT_PORT)


def _status(args: argparse.Namespace) -> int:
    learner.print_lines(learner.status())
    return 0


def _hint(args: argparse.Namespace) -> int:
    learner.print_lines(learner.hint(catalogue.step(args.step), show_all=args.all))
    return 0


def _watch(args: argparse.Namespace) -> int:
    try:
        learner.watch(catalogue.step(args.step))
    except KeyboardInterrupt:
        print("\nStopped watching.")
    return 0


def _reset(args: argparse.Namespace) -> int:
    learner.print_lines(learner.reset(catalogue.step(args.step), assume_yes=args.yes))
    return 0


def _solution(args: argparse.Namespace) -> int:
    shown, text = learner.solution_diff(catalogue.step(args.step), force=args.force)
    learner.print_lines(text)
    return 0 if shown else 1


def _notebooks(args: argparse.Namespace) -> int:
    from . import notebook_runner  # needs nbclient, installed by the notebooks session only

    problems = notebook_runner.run_all(args.tree)
    if problems:
        print("\nNotebook problems:\n- " + "\n- ".join(problems))
    return 1 if problems else 0


def _new_step(args: argparse.Namespace) -> int:
    step = int(args.step)
    previous = catalogue.ROOT / "solutions" / f"step{step - 1}"
    starter.strip_markers_into(previous, catalogue.ROOT / "solutions" / f"step{step}", step - 1)
    print(f"solutions/step{step} starts as solutions/step{step - 1} without its markers.")
    return 0


def _add_grading_commands(commands: Any) -> None:
    from . import classroom50, gradescope
    from .grading import cli as grade_cli
    from .grading import shards

    grading = commands.add_parser("grade", help="grade a folder of learners' workbooks (nox -s grade)")
    grade_cli.add_arguments(grading)
    grading.set_defaults(handler=grade_cli.run)

    merging = commands.add_parser("grade-merge", help="merge the outputs of grade --shard K/N into one")
    shards.add_arguments(merging)
    merging.set_defaults(handler=shards.run)

    bundle = commands.add_parser("gradescope", help="build a Gradescope autograder zip (nox -s gradescope)")
    gradescope.add_arguments(bundle)
    bundle.set_defaults(handler=gradescope.run)

    autograder = commands.add_parser(
        "classroom50", help="build a Classroom 50 autograder (nox -s classroom50)"
    )
    classroom50.add_arguments(autograder)
    autograder.set_defaults(handler=classroom50.run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbook", description="The polls workbook's tooling.")
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check", help="run one step's suite (nox -s stepN)")
    check.add_argument("step")
    check.add_argument(
        "--target", default="steps", help="steps (default), solutions, or a workbook copy's path"
    )
    check.add_argument(
        "-v", "--verbose", action="store_true", help="show pytest's full output and tracebacks"
    )
    check.add_argument(
        "--timeout", type=float, default=STEP_TIMEOUT, help="seconds the whole suite may take (a backstop)"
    )
    check.add_argument("pytest_args", nargs=argparse.REMAINDER, help="passed on to pytest")
    check.set_defaults(handler=_check)

    solutions = commands.add_parser("solutions", help="every step's suite against solutions/")
    solutions.add_argument("--steps", help="a range such as 1-3")
    solutions.set_defaults(handler=_solutions)

    # The graders' modules are a third of this process's start-up CPU: `check`, which every `nox -s stepN`
    # runs, parses without them (argparse reads only the chosen command's own arguments).
    if (sys.argv[1:] if argv is None else argv)[:1] != ["check"]:
        _add_grading_commands(commands)

    check_all = commands.add_parser("integrity", help="starters fail, solutions pass, steps/ in sync")
    check_all.add_argument("--steps", help="a range such as 1-3")
    check_all.add_argument(
        "--record",
        action="store_true",
        help="rewrite tests/baseline.json from this run (after a deliberate change)",
    )
    check_all.set_defaults(handler=_integrity)

    mutating = commands.add_parser("mutants", help="mutation-test the suites (nox -s mutants)")
    mutating.add_argument("steps", nargs="?", help="a step or a range such as 3 or 3-5 (default: all)")
    mutating.add_argument("--sample", type=int, metavar="K", help="judge at most K mutants per step")
    mutating.add_argument("--seed", type=int, default=19, help="the seed of --sample's draw (default 19)")
    mutating.add_argument("--list", action="store_true", help="list the mutants, judge none")
    mutating.add_argument("--id", action="append", help="judge only this mutant (repeatable)")
    mutating.add_argument("--jobs", type=int, default=2, help="mutants judged at once (default 2)")
    mutating.add_argument(
        "--timeout", type=float, help="seconds a mutant's run may take before it counts as timed out (60)"
    )
    mutating.add_argument("--out", type=Path, help="write the run as JSON to this file")
    mutating.set_defaults(handler=_mutants)

    flaky = commands.add_parser(
        "flakes",
        help="maintainers: run every suite N times (solution, starter, mistakes), list changed verdicts",
    )
    flaky.add_argument("steps", nargs="?", help="a range such as 1-3 (default: every step)")
    flaky.add_argument("--runs", type=int, default=20, help="runs of each suite (default 20)")
    flaky.add_argument("--load", action="store_true", help="keep every core busy with a CPU burner meanwhile")
    flaky.add_argument("--only", help="some of solution,starter,mistakes (default: all three)")
    flaky.add_argument("--workers", type=int, default=2, help="suites run at once (default 2)")
    flaky.set_defaults(handler=_flakes)

    build = commands.add_parser("build", help="regenerate steps/ from solutions/")
    build.add_argument("--force", action="store_true", help="overwrite starters a learner has edited")
    build.set_defaults(handler=_build)

    serve = commands.add_parser("serve", help="run a step's app on a throwaway PostgreSQL")
    serve.add_argument("step", nargs="?", help="the step whose solution to run (default: the newest)")
    serve.add_argument("--learner", metavar="N", help="run your own steps/stepN instead")
    serve.add_argument("--port", type=int, help="listen on this port (default 8080)")
    serve.set_defaults(handler=_serve)

    status = commands.add_parser("status", help="every step's tasks, a progress bar and what to do next")
    status.set_defaults(handler=_status)

    hint = commands.add_parser("hint", help="the next hint for the first failing task of a step")
    hint.add_argument("step")
    hint.add_argument("--all", action="store_true", help="show every hint of the task at once")
    hint.set_defaults(handler=_hint)

    watch = commands.add_parser("watch", help="re-check a step whenever one of its files changes")
    watch.add_argument("step")
    watch.set_defaults(handler=_watch)

    reset = commands.add_parser("reset", help="put steps/stepN back to its starter (keeps a backup)")
    reset.add_argument("step")
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    reset.set_defaults(handler=_reset)

    solution = commands.add_parser("solution", help="the reference solution as a diff, once your step passes")
    solution.add_argument("step")
    solution.add_argument("--force", action="store_true", help="show it even though your step fails")
    solution.set_defaults(handler=_solution)

    notebooks = commands.add_parser("notebooks", help="execute every notebook (nbclient)")
    notebooks.add_argument("--tree", default="solutions", choices=("solutions", "steps"))
    notebooks.set_defaults(handler=_notebooks)

    new_step = commands.add_parser("new-step", help="maintainers: start solutions/stepN from step N-1")
    new_step.add_argument("step")
    new_step.set_defaults(handler=_new_step)

    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (KeyError, FileExistsError, EnvironmentMissing) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    end_with_parent()
    sys.exit(main())
