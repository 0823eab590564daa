"""The hostile class (issue 11): honest learners beside one attacker per kind of attack, graded confined.

The class is graded once per tier on steps 1 and 5, every attacker at once at --jobs 8, and everything is
judged from outside: the grades, the outputs, the processes and files left behind, the canaries the
instructor's side holds. The root tiers
(bwrap+uid, uid) grade in this process; the bwrap tier is an instructor without root, played by `nobody`
running `python -m workbook grade` from a copy of the checkout, so its grades are read from the outputs.
The attackers' code is in attacks.py; each says what it achieved in its learner log, which the
judge shows beside a failing check.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from tests.workbook.attacks import ATTACKS, planted_code
from tests.workbook.conftest import copy_of_the_workbook, copy_parts, finish, of_another_live_grader, package
from workbook import catalogue, mistakes, pg
from workbook.grading import confinement, outputs, running, submissions, workspace
from workbook.grading.scores import LearnerGrade
from workbook.runner import run_step

TIERS = (confinement.BWRAP_UID, confinement.UID, confinement.BWRAP)
STEPS = [catalogue.step(1), catalogue.step(5)]
CHECKOUT_PARTS = ("tests", "workbook", "config", "pyproject.toml", "steps", "solutions")
TIMEOUT = 90.0
# Steps graded at once, every attacker beside the honest learners: the default of a 4-core machine, as the
# issue's acceptance asks (the server's connection slots and the learners' quotas are sized from it).
JOBS = 8
# The escaper: a folder name and a message with a screen clear, a fake verdict and Markdown.
ESCAPER = "x-escape\x1b[2J\x1b[H<img src=x> [link](https:x.example) | # h"
ESCAPE_MESSAGE = "\x1b[2J\x1b[HALL CHECKS PASSED 95/95\n| 1 | PASS |\n# Full marks"
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
PARTIAL_MISTAKE = "wrong-case"  # step 1, task 1: the greeting's case
# What an attacker prints when it got somewhere it must not (attacks.py writes these words in capitals).
SUCCESS_WORDS = ("SUCCEEDED", "LOGGED IN AS", "FORGED", "WROTE", "PLANTED A F", "LEAKED", "DROPPED")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the confined tiers need root (CI grades as root)"),
    pytest.mark.skipif(
        confinement.find_bwrap() is None, reason="bubblewrap is not installed (apt-get install bubblewrap)"
    ),
]


@dataclass
class HostileRun:
    """One tier's grading of the class, and everything observed around it."""

    tier: str
    out: Path
    expected: dict[str, list[Fraction]]  # honest learners: exactly this
    ceiling: dict[str, list[Fraction]]  # attackers: at most this
    grades: dict[str, list[Fraction]]
    problems: dict[str, str]
    canaries: dict[str, str]
    record: running.RunRecord
    uids: list[int]
    seconds: float
    exact: bool = True  # False when read from the outputs, which show points to two decimals
    leftovers: dict[str, list[str]] = field(default_factory=dict)
    reports: list[str] = field(default_factory=list)
    untouched: dict[str, bool] = field(default_factory=dict)


def tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*")):
        digest.update(str(file.relative_to(path)).encode())
        if file.is_file() and not file.is_symlink():
            digest.update(file.read_bytes())
    return digest.hexdigest()


def checkout_copy(into: Path, canaries: dict[str, str]) -> Path:
    """The instructor's checkout for `root=`: the parts grading reads, with a canary in each place."""
    copy_parts(into, CHECKOUT_PARTS)
    (into / "CANARY.txt").write_text(canaries["checkout"])
    (into / "tests" / "canary.txt").write_text(canaries["suite"])  # copied into the snapshot and sandboxes
    (into / "workbook" / "canary.txt").write_text(canaries["tooling"])
    return into


def expected_points(copy: Path) -> list[Fraction]:
    """What a trusted, unconfined run of the suites gives this learner's copy, step by step."""
    return [run_step(step, str(copy)).points for step in STEPS]


def build_class(subs: Path, canaries: dict[str, str], targets: dict[str, list], pwned: str, grader: int,
                checkout: Path) -> tuple[dict[str, list[Fraction]], dict[str, list[Fraction]]]:  # fmt: skip
    """Three honest learners and one attacker per kind; (exact scores, ceilings)."""
    full = [Fraction(step.points) for step in STEPS]
    ada = copy_of_the_workbook(subs / "ada")
    for step in STEPS:
        finish(ada, step.number)
    (ada / "canary.txt").write_text(canaries["classmate"])
    (ada / "steps" / "step1" / "secret.txt").write_text(canaries["classmate-step"])
    bea = copy_of_the_workbook(subs / "bea")  # step 1 with a known mistake, step 5 finished
    finish(bea, 5)
    shutil.rmtree(bea / "steps" / "step1")
    mistake = next(m for m in mistakes.load([STEPS[0]]) if m.name == PARTIAL_MISTAKE)
    mistakes.apply(mistake, bea)
    copy_of_the_workbook(subs / "sam")
    # Handed in as a zip: unpacked by the grader into its workspace, by a predictable name.
    cyd = copy_of_the_workbook(subs.parent / "cyd-unzipped" / "cyd")
    for step in STEPS:
        finish(cyd, step.number)
    (cyd / "steps" / "step1" / "secret.txt").write_text(canaries["classmate-zip"])
    shutil.make_archive(str(subs / "cyd"), "zip", root_dir=cyd.parent)
    shutil.rmtree(cyd.parent)
    expected = {"ada": full, "bea": expected_points(bea), "sam": [Fraction(0)] * len(STEPS), "cyd": full}
    assert expected["bea"][0] < full[0] and expected["bea"][1] == full[1], expected["bea"]
    ceiling: dict[str, list[Fraction]] = {}
    for kind in ATTACKS:
        copy = copy_of_the_workbook(subs / f"x-{kind}")
        for step in STEPS:
            finish(copy, step.number)
            init = package(copy, step.number) / "__init__.py"
            init.write_text(init.read_text() + planted_code(kind, targets, pwned, grader, str(checkout)))
        ceiling[f"x-{kind}"] = full
    # A name and an exception message that clear a terminal and carry Markdown: what a person reads shows
    # them as text (test_grade_escaping.py looks at each output; here it is one attacker among the rest).
    escaper = copy_of_the_workbook(subs / ESCAPER)
    for step in STEPS:
        finish(escaper, step.number)
    main = package(escaper, STEPS[0].number) / "main.py"
    main.write_text(f"raise RuntimeError({ESCAPE_MESSAGE!r})\n" + main.read_text())
    ceiling[ESCAPER] = [Fraction(0), full[1]]
    linked = copy_of_the_workbook(subs / "x-symlink")  # step 5 is a link to a classmate's
    finish(linked, 1)
    shutil.rmtree(linked / "steps" / "step5")
    (linked / "steps" / "step5").symlink_to("../../ada/steps/step5")
    ceiling["x-symlink"] = [full[0], Fraction(0)]
    return expected, ceiling


def processes_of(uids: set[int], before: frozenset[int] = frozenset(), fresh: bool = True) -> list[str]:
    """Live processes of `uids` (but the pids in `before`) and, if the run gave out `fresh` uids, of any
    learner uid; with their command lines, to tell what they are."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        if int(entry.name) in before:
            continue
        uid = confinement.process_uid(int(entry.name), zombies=False)
        learner = fresh and uid is not None and confinement.UID_RANGE[0] <= uid < confinement.UID_RANGE[1]
        if uid in uids or learner:
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                command = "?"
            if of_another_live_grader(command):
                continue
            found.append(f"{entry.name} (uid {uid}): {command[:200]}")
    return found


def settle(uid: int, before: frozenset[int], seconds: float = 5.0) -> None:
    """Give the grader's helpers a moment to go: multiprocessing's fork server and resource tracker leave on
    their own once they read EOF from a grader that has exited. Anything still there after is left over."""
    deadline = time.monotonic() + seconds
    while set(confinement.pids_of(uid)) - before and time.monotonic() < deadline:
        time.sleep(0.1)


def files_of(uids: set[int], skip: str = "//") -> list[str]:
    """What `uids` own where anyone may write, but below `skip` (the test's own folder)."""
    found = []
    for root in ("/tmp", "/var/tmp", "/dev/shm"):
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if os.path.join(folder, d) != skip]
            for name in dirs + files:
                path = os.path.join(folder, name)
                try:
                    owner = os.lstat(path).st_uid
                except OSError:
                    continue
                if owner in uids:
                    found.append(path)
    return found


def our_clusters() -> set[str]:
    """Cluster folders (of any run) in root's private folders: compared before and after."""
    found = set()
    for base in {pg.cluster_base(), Path(tempfile.gettempdir())}:
        for folder in base.glob(f"{pg.TMP_PREFIX}*/{pg.CLUSTER_PREFIX}*"):
            found.add(str(folder))
    return found


def of_another_live_run(cluster: Path) -> bool:
    """A cluster whose owner record names a live process other than this one: another run on the machine
    (a second test session, a maintainer's `nox -s step5`) made it. This run's grader is this process or
    has ended by now, so any cluster of its own still counts as left behind."""
    owner = pg._read_owner(cluster)
    return owner is not None and owner.get("pid") != os.getpid() and pg._owner_alive(owner)


def workspaces() -> set[str]:
    return {str(path) for path in Path(tempfile.gettempdir()).glob("workbook-grade-*")}


def another_live_graders(folder: Path) -> bool:
    """A workspace whose owner record names a live grader other than this process: another run on this
    machine (a second test session, a maintainer's `nox -s grade`) made it, and removes it. This run's
    grader is this process or has ended by now, so a workspace of its own still counts as left behind."""
    record = workspace._read_record(folder, workspace.OWNER_FILE)
    return record is not None and record.get("pid") != os.getpid() and not workspace.abandoned(record)


def owned_by(paths: set[str], uid: int) -> list[str]:
    """The grader's own among `paths`: a run beside ours on this machine leaves folders of its own."""
    found = []
    for path in sorted(paths):
        try:
            if os.lstat(path).st_uid == uid:
                found.append(path)
        except OSError:
            continue
    return found


def attack_reports(out: Path) -> list[str]:
    """Every line in which an attacker said what it achieved, as the outputs carry them."""
    lines = []
    for path in sorted(out.rglob("*")):
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                if "ATTACK-REPORT" in line:
                    lines.append(f"{path.relative_to(out)}: {line.strip()[:400]}")
    return lines


def alive(pid: int) -> bool:
    return confinement.process_uid(pid, zombies=False) is not None


@dataclass
class Graded:
    """One grading of the class as the checks weigh it, however the grader ran."""

    grades: dict[str, list[Fraction]]
    problems: dict[str, str]
    record: running.RunRecord
    uids: list[int]  # the fresh uids handed out (none at the bwrap tier)
    exact: bool


@dataclass
class Instructor:
    """The bwrap tier's grader: a user without root, the runtime interpreter (this one lives under /root,
    which other users cannot enter) and a copy of the checkout on PYTHONPATH."""

    user: pwd.struct_passwd
    python: str
    env: dict[str, str]
    checkout: Path

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.python, *argv], cwd=self.checkout, env=self.env, capture_output=True, text=True,
            timeout=1800, check=False, **credentials(self.user),
        )  # fmt: skip


def credentials(user: pwd.struct_passwd) -> dict[str, Any]:
    """subprocess's arguments that start a child as `user`, with no supplementary groups."""
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def grade_in_process(
    found: list[submissions.Submission], tier: str, checkout: Path, subs: Path, out: Path, canary: str
) -> Graded:
    """The root tiers: this process grades, and records every uid the pool hands out."""
    uids: list[int] = []
    take = confinement.UidPool.take

    def recording_take(pool: confinement.UidPool) -> int:
        uid = take(pool)
        uids.append(uid)
        return uid

    record = running.RunRecord()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(confinement.UidPool, "take", recording_take)
        patch.setenv("INSTRUCTOR_CANARY", canary)
        grades: list[LearnerGrade] = running.grade_submissions(
            found, STEPS, jobs=JOBS, timeout=TIMEOUT, root=checkout, tier=tier, record=record,
            private=[subs, out],
        )  # fmt: skip
        outputs.write_outputs(out, grades, STEPS, record)
    return Graded(
        grades={g.name: [s.earned for s in g.steps] for g in grades},
        problems={g.name: "\n".join(g.all_problems()) for g in grades},
        record=record, uids=uids, exact=True,
    )  # fmt: skip


def grade_as_instructor(instructor: Instructor, subs: Path, out: Path) -> Graded:
    """The bwrap tier: `python -m workbook grade` as the instructor; the grades come from its outputs."""
    completed = instructor.run(
        "-m", "workbook", "grade", str(subs), "--steps", ",".join(str(step.number) for step in STEPS),
        "--out", str(out), "--timeout", str(TIMEOUT), "--jobs", str(JOBS), "--tier", confinement.BWRAP,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = gradebook(out)
    learners = out / "learners"
    return Graded(
        grades={name: [Fraction(row[step.name]) for step in STEPS] for name, row in rows.items()},
        problems={n: json.loads((learners / n / "results.json").read_text())["output"] for n in rows},
        record=running.RunRecord(**json.loads((out / "run.json").read_text())),
        uids=[], exact=False,
    )  # fmt: skip


def give_to(user: pwd.struct_passwd, *folders: Path) -> None:
    for folder in folders:
        for path in [folder, *folder.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)


@pytest.fixture(scope="module", params=TIERS)
def hostile(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileRun]:
    """Grade the hostile class once at one tier; collect what is left and what the attackers said."""
    tier = request.param
    unprivileged = tier == confinement.BWRAP
    if unprivileged and confinement.detect_tier()[0] != confinement.BWRAP_UID:
        pytest.skip("bubblewrap is not usable here")
    if tier != confinement.UID:  # world-readable: only bubblewrap's mounts keep the learners out
        base = Path(tempfile.mkdtemp(prefix="hostile-class-"))
        os.chmod(base, 0o755)
    else:  # the uid tier asks for private folders: pytest's are (0700)
        base = tmp_path_factory.mktemp("hostile")
    # The bwrap tier's grader is `nobody`: PostgreSQL's initdb wants a user it can look up.
    grader = pwd.getpwnam("nobody") if unprivileged else pwd.getpwuid(0)
    canaries = {
        name: f"CANARY-{secrets.token_hex(12)}"
        for name in (
            "checkout",
            "suite",
            "tooling",
            "classmate",
            "classmate-step",
            "classmate-zip",
            "outputs",
            "env",
        )
    }
    subs, out, home = base / "submissions", base / "grades", base / "home"
    subs.mkdir()
    out.mkdir()
    home.mkdir()
    # --out holds only a previous run's outputs (grading refuses other files there): its gradebook is the
    # secret in it, replaced by this run's.
    (out / "gradebook.csv").write_text(f"learner,total\nprevious-run,{canaries['outputs']}\n")
    checkout = checkout_copy(base / "checkout", canaries)
    # A process of the grader's uid that a planted postmaster.pid names: the reaper runs as that uid.
    decoy = subprocess.Popen(["sleep", "900"], **(credentials(grader) if unprivileged else {}))
    tooling_mode = catalogue.ROOT.stat().st_mode
    try:
        pwned = f"/tmp/workbook-attack-pwned-{secrets.token_hex(4)}"
        targets = {
            "read": [str(checkout / "CANARY.txt"), str(checkout / "tests" / "canary.txt"),
                     str(checkout / "workbook" / "canary.txt"), str(subs / "ada" / "canary.txt"),
                     str(subs / "ada" / "steps" / "step1" / "secret.txt"),
                     str(out / "gradebook.csv"), "/work/main/README.md",
                     str(catalogue.ROOT / "README.md"), "/etc/shadow", "/root/.bash_history"],
            "list": [str(checkout), str(subs), str(out), str(catalogue.ROOT / "solutions"), str(home)],
            "outputs": [str(out)],
            "decoys": [decoy.pid],
        }  # fmt: skip
        expected, ceiling = build_class(subs, canaries, targets, pwned, grader.pw_uid, checkout)
        found, _ = submissions.discover(subs)
        instructor = None
        if unprivileged:
            pythons, _, env = confinement.build_runtime(
                base / "runtime", catalogue.ROOT / "workbook" / "learner_side"
            )
            python = pythons[""]
            give_to(grader, subs, out, home, checkout)
            instructor = Instructor(grader, python, {
                "PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(checkout),
                "PYTHONDONTWRITEBYTECODE": "1", "INSTRUCTOR_CANARY": canaries["env"], **env,
            }, checkout)  # fmt: skip
        digest_before = {"submissions": tree_digest(subs), "checkout": tree_digest(checkout)}
        before = workspaces()
        clusters_before = our_clusters()
        # At the bwrap tier the learners run as the grader's own uid: what it had before is not theirs.
        watched, skip = ({grader.pw_uid}, str(base)) if unprivileged else (set(), "//")
        pids_before = frozenset(confinement.pids_of(grader.pw_uid)) if unprivileged else frozenset()
        files_before = set(files_of(watched, skip))
        # What the uid tier's refusal asks of an instructor: the checkout this runs from, private.
        if tier == confinement.UID:
            os.chmod(catalogue.ROOT, tooling_mode & ~0o007)
        if instructor is not None:
            graded = grade_as_instructor(instructor, subs, out)
            settle(grader.pw_uid, pids_before)
        else:
            graded = grade_in_process(found, tier, checkout, subs, out, canaries["env"])
        os.chmod(catalogue.ROOT, tooling_mode)
        run = HostileRun(
            tier=tier, out=out, expected=expected, ceiling=ceiling, grades=graded.grades,
            problems=graded.problems, canaries=canaries, record=graded.record, uids=graded.uids,
            seconds=graded.record.seconds, exact=graded.exact,
        )  # fmt: skip
        watched |= set(graded.uids)
        run.leftovers = {
            "processes": processes_of(watched, pids_before, fresh=not unprivileged),
            "files": sorted(set(files_of(watched, skip)) - files_before),
            "workspaces": [
                path
                for path in owned_by(workspaces() - before, grader.pw_uid)
                if not another_live_graders(Path(path))
            ],
            "clusters": [
                path
                for path in owned_by(our_clusters() - clusters_before, grader.pw_uid)
                if not of_another_live_run(Path(path))
            ],
            "pwned": [pwned] if os.path.exists(pwned) else [],
        }
        # What the grader's next run does first: it must not take a planted folder's word.
        if instructor is not None:
            reaped = instructor.run("-c", "from workbook import pg; pg.reap_abandoned_clusters()")
            assert reaped.returncode == 0, reaped.stderr[-3000:]
        else:
            pg.reap_abandoned_clusters()
        run.leftovers["decoy killed"] = [] if alive(decoy.pid) else [str(decoy.pid)]
        run.untouched = {
            "submissions": tree_digest(subs) == digest_before["submissions"],
            "checkout": tree_digest(checkout) == digest_before["checkout"],
        }
        run.reports = attack_reports(out)
        summary = [f"{name}: {points} {run.problems[name][:300]!r}" for name, points in run.grades.items()]
        summary += [f"{what}: {left}" for what, left in run.leftovers.items()] + run.reports
        (Path(tempfile.gettempdir()) / f"hostile-class-{tier}.txt").write_text("\n".join(summary))
        yield run
    finally:
        os.chmod(catalogue.ROOT, tooling_mode)
        decoy.kill()
        decoy.wait()
        if tier != confinement.UID:
            shutil.rmtree(base, ignore_errors=True)


def gradebook(out: Path) -> dict[str, dict[str, str]]:
    with (out / "gradebook.csv").open(newline="") as handle:
        return {row["learner"]: row for row in csv.DictReader(handle)}


def shown(run: HostileRun, points: list[Fraction]) -> list[Fraction] | list[str]:
    """Points as exactly as this run knows them: read from the outputs, to their two decimals."""
    return points if run.exact else [outputs.format_points(p) for p in points]


def test_honest_learners_get_exactly_their_trusted_scores(hostile: HostileRun) -> None:
    for name, points in hostile.expected.items():
        assert shown(hostile, hostile.grades[name]) == shown(hostile, points), (name, hostile.problems[name])
    assert hostile.grades["sam"] == [0, 0]


def test_no_attacker_earns_more_than_its_own_code(hostile: HostileRun) -> None:
    for name, ceiling in hostile.ceiling.items():
        earned = hostile.grades[name]
        assert all(got <= most for got, most in zip(earned, ceiling, strict=True)), (name, earned)
    assert "steps/step5 is a link, not the learner's own folder" in hostile.problems["x-symlink"]


def test_the_run_completes_and_writes_every_output(hostile: HostileRun) -> None:
    out = hostile.out
    rows = gradebook(out)
    assert sorted(rows) == sorted(hostile.grades)
    for name, points in hostile.grades.items():
        results = json.loads((out / "learners" / name / "results.json").read_text())
        if hostile.exact:
            assert results["score"] == round(float(sum(points)), 2), name
            assert rows[name]["total"] == outputs.format_points(sum(points)), name
        else:  # steps rounded one by one add up to the total within their rounding
            assert abs(results["score"] - float(sum(points))) <= 0.005 * (len(points) + 1), name
            assert rows[name]["total"] == outputs.format_points(results["score"]), name
    assert (out / "report.html").read_text().count("<section") == len(hostile.grades)
    run = json.loads((out / "run.json").read_text())
    assert run["tier"] == hostile.tier and run["learners"] == len(hostile.grades)
    assert run["completed"] is True and not run["reason"], run
    assert f"Confinement: <b>{hostile.tier}</b>" in (out / "report.html").read_text()


def test_no_canary_reaches_any_output(hostile: HostileRun) -> None:
    assert any("ATTACK-REPORT snoop" in line for line in hostile.reports), "the snoop's channel is broken"
    for path in hostile.out.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            leaked = [name for name, canary in hostile.canaries.items() if canary in text]
            assert not leaked, f"{path.relative_to(hostile.out)} holds the {leaked} canaries"


def test_the_escapers_bytes_reach_no_log_raw(hostile: HostileRun) -> None:
    """`cat` of a step log shows the escaper's screen clear as text, beside every other attacker's."""
    log = (hostile.out / outputs.LEARNERS_DIR / ESCAPER / f"{STEPS[0].name}.log").read_text()
    assert "ALL CHECKS PASSED" in log, "the escaper's message is not in its log: the attack did not run"
    for path in hostile.out.rglob("*.log"):
        text = path.read_text(errors="replace")
        assert not RAW_CONTROL.search(text.replace("\n", "").replace("\t", "")), path.relative_to(hostile.out)


def test_no_attacker_reports_a_success(hostile: HostileRun) -> None:
    successes = [line for line in hostile.reports if any(word in line for word in SUCCESS_WORDS)]
    assert not successes, "\n".join(successes[:30])


def test_every_run_has_a_fresh_uid(hostile: HostileRun) -> None:
    if hostile.tier == confinement.BWRAP:
        pytest.skip("the bwrap tier has no uids to give: learners run as the grader's uid, in bubblewrap")
    assert hostile.uids, "no learner ran under a uid of its own"
    assert all(confinement.UID_RANGE[0] <= uid < confinement.UID_RANGE[1] for uid in hostile.uids)
    assert len(set(hostile.uids)) == len(hostile.uids), "a uid was used twice"


def test_nothing_of_the_learners_outlives_the_run(hostile: HostileRun) -> None:
    for what, left in hostile.leftovers.items():
        assert left == [], f"{what}: {left[:20]}"


def test_submissions_and_the_checkout_are_untouched(hostile: HostileRun) -> None:
    assert hostile.untouched == {"submissions": True, "checkout": True}


# --- the refusals ----------------------------------------------------------------------------------------


def test_an_unconfined_run_needs_trusted(tmp_path: Path) -> None:
    with pytest.raises(running.GradingError, match="--tier none grades learners' code unconfined"):
        running.grade_submissions([], STEPS, tier=confinement.NONE)


def test_the_uid_tier_refuses_a_checkout_others_can_read(tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="hostile-open-"))
    try:
        os.chmod(base, 0o755)
        checkout = checkout_copy(base / "checkout", {n: "x" for n in ("checkout", "suite", "tooling")})
        assert stat.S_IMODE(checkout.stat().st_mode) & 0o005
        with pytest.raises(running.GradingError, match="any user can read") as refused:
            running.grade_submissions([], STEPS, root=checkout, tier=confinement.UID, private=[tmp_path])
        assert str(checkout) in str(refused.value)
    finally:
        shutil.rmtree(base, ignore_errors=True)


EXHAUSTED_STEPS = [catalogue.step(5), catalogue.step(6)]
EXHAUSTERS = 3


def test_learners_holding_every_connection_they_may_cost_an_honest_learner_nothing(tmp_path: Path) -> None:
    """At --jobs 8, three learners hold every connection their role may have in two steps each, all at once
    with the honest learner's two steps: the server's slots are sized from --jobs, so the honest learner's
    judge and app still get theirs (a server of 200 slots, shared by roles of 50 each, did not). The
    limits are the server's, the same at every tier: graded at the strongest one."""
    if confinement.detect_tier()[0] != confinement.BWRAP_UID:
        pytest.skip("bubblewrap is not usable here")
    subs, out = tmp_path / "submissions", tmp_path / "grades"
    subs.mkdir()
    out.mkdir()
    full = [Fraction(step.points) for step in EXHAUSTED_STEPS]
    for name in ["ada", *(f"x-exhaust-{n}" for n in range(EXHAUSTERS))]:
        copy = copy_of_the_workbook(subs / name)
        for step in EXHAUSTED_STEPS:
            finish(copy, step.number)
            if name != "ada":
                init = package(copy, step.number) / "__init__.py"
                targets: dict[str, list] = {"read": [], "list": [], "outputs": [], "decoys": []}
                planted = planted_code("exhaust", targets, str(tmp_path / "pwned"), 0, str(tmp_path))
                init.write_text(init.read_text() + planted)
    found, _ = submissions.discover(subs)
    grades = running.grade_submissions(
        found, EXHAUSTED_STEPS, jobs=JOBS, timeout=TIMEOUT, tier=confinement.BWRAP_UID,
        private=[subs, out],
    )  # fmt: skip
    by_name = {grade.name: grade for grade in grades}
    ada = by_name["ada"]
    earned = [step.earned for step in ada.steps]
    assert earned == full, f"the honest learner scored {earned}, not {full}: {ada.all_problems()}"
    outputs.write_outputs(out, grades, EXHAUSTED_STEPS, running.RunRecord())
    held = [line for line in attack_reports(out) if "holding" in line]
    assert held, "the attackers' channel is broken: no attacker said how many connections it held"
