"""What learners hand in: finding the submissions in a folder, unpacking them, and refusing what is not
the learner's own plain files.

A learner is known by the name of their folder or .zip. A zip is unpacked only after its size is checked,
and never outside the folder it is unpacked into; a step folder handed in as files is vetted (vet_tree)
before it is copied, against links to a classmate's work, special files and sizes past the caps below.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

ZIP_MAX_BYTES = 500 * 1024 * 1024
ZIP_MAX_FILES = 50_000
# The same bounds for one step folder handed in as files (a zip's are checked before it is unpacked).
FOLDER_MAX_BYTES = 100 * 1024 * 1024
FOLDER_MAX_FILES = 5_000

IGNORED = shutil.ignore_patterns(
    "__pycache__",
    "*.pyc",
    ".git",
    ".venv",
    "venv",
    ".nox",
    ".pytest_cache",
    ".ipynb_checkpoints",
    ".workbook",
)


class SubmissionError(Exception):
    """A submission cannot be graded at all; the message says why in a few words."""


@dataclass(frozen=True)
class Submission:
    """One learner's hand-in: a folder or a .zip; the learner is known by its name."""

    name: str
    path: Path


def sort_key(name: str) -> tuple[str, str]:
    return name.casefold(), name


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name != "__MACOSX"


def discover(folder: Path) -> tuple[list[Submission], list[str]]:
    """The submissions in `folder`, sorted by learner name, and the names of entries that are neither."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SubmissionError(f"{folder} is not a folder of submissions")
    if (folder / "steps").is_dir():
        raise SubmissionError(
            f"{folder} is one workbook, not a folder of submissions: put each learner's copy in it"
        )
    entries = sorted((p for p in folder.iterdir() if _visible(p)), key=lambda p: sort_key(p.name))
    folders = {p.name for p in entries if p.is_dir()}
    found: list[Submission] = []
    skipped: list[str] = []
    for path in entries:
        if path.is_dir():
            found.append(Submission(path.name, path))
        elif path.suffix.lower() == ".zip":
            found.append(Submission(path.stem if path.stem not in folders else path.name, path))
        else:
            skipped.append(path.name)
    return sorted(found, key=lambda s: sort_key(s.name)), skipped


def extract_zip(archive: Path, into: Path) -> Path:
    """Unpack a learner's zip (never outside `into`; zipfile drops absolute and `..` paths)."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
            size = sum(member.file_size for member in members)
            if len(members) > ZIP_MAX_FILES or size > ZIP_MAX_BYTES:
                raise SubmissionError(
                    f"{archive.name} is too big to grade ({len(members)} files, {size // 2**20} MB unpacked)"
                )
            bundle.extractall(into)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, NotImplementedError, EOFError) as exc:
        raise SubmissionError(f"{archive.name} is not a readable zip file ({exc})") from None
    return into


def find_workbook(base: Path) -> Path:
    """The workbook inside a submission: at its top, or inside its only top folder."""
    if (base / "steps").is_dir():
        return base
    children = [p for p in base.iterdir() if p.is_dir() and _visible(p)]
    if len(children) == 1 and (children[0] / "steps").is_dir():
        return children[0]
    raise SubmissionError("no steps/ folder, neither at the top of the submission nor in its only folder")


def unpack(submission: Submission, into: Path) -> Path:
    """The workbook root of a submission; a zip (or a folder with just one zip) is extracted into `into`."""
    archive = submission.path
    if archive.is_dir():
        try:
            return find_workbook(archive)
        except SubmissionError:
            zips = [p for p in archive.iterdir() if p.is_file() and p.suffix.lower() == ".zip"]
            folders = [p for p in archive.iterdir() if p.is_dir() and _visible(p)]
            if len(zips) != 1 or folders:  # Gradescope keeps an uploaded zip as it is: look inside that
                raise
            archive = zips[0]
    # Root's alone before anything is unpacked into it: zip members keep modes such as 0644, and the
    # workspace lets learner uids traverse it to reach their own sandboxes, by predictable names.
    into.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(into, 0o700)
    try:
        return find_workbook(extract_zip(archive, into))
    except OSError as exc:
        raise SubmissionError(f"{archive.name} cannot be unpacked ({exc.strerror or exc})") from None


def vet_tree(tree: Path, root: Path) -> None:
    """Refuse a step folder that is not the learner's own plain files: SubmissionError says why.

    A steps/stepN that is a link (to a classmate's copy, to solutions/), a folder link anywhere inside it,
    a file link that leads out of the submission, a FIFO, socket or device, or more than FOLDER_MAX_FILES
    files or FOLDER_MAX_BYTES bytes. A file link that stays inside the submission is followed (copied as
    the file it names); so are links a zip cannot hold anyway.
    """
    root = root.resolve()
    where = tree.relative_to(tree.parents[1]).as_posix()  # steps/stepN
    for part in (tree.parent, tree):
        if part.is_symlink():
            raise SubmissionError(
                f"{part.relative_to(part.parents[1]).as_posix()} is a link, not the learner's own folder"
            )
    if not tree.exists():
        return
    count = size = 0
    for folder, dirs, files in os.walk(tree):
        skipped = IGNORED(folder, dirs + files)  # caches and checkouts are not copied: not counted either
        dirs[:] = [name for name in dirs if name not in skipped]
        for name in dirs + [name for name in files if name not in skipped]:
            path = Path(folder) / name
            shown = f"{where}/{path.relative_to(tree).as_posix()}"
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                target = path.resolve()
                if name in dirs or target.is_dir():
                    raise SubmissionError(f"{shown} is a link to a folder")
                if not target.is_relative_to(root) or not target.is_file():
                    raise SubmissionError(f"{shown} is a link that leads out of the submission")
                info = target.stat()
            elif not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                raise SubmissionError(f"{shown} is not a plain file or folder")
            count += 1
            size += info.st_size if stat.S_ISREG(info.st_mode) else 0
            if count > FOLDER_MAX_FILES or size > FOLDER_MAX_BYTES:
                raise SubmissionError(f"{where} is too big to grade (over {FOLDER_MAX_FILES} files or "
                                      f"{FOLDER_MAX_BYTES // 2**20} MB)")  # fmt: skip
