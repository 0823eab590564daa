"""Grading's progress on stderr, drawn by tqdm.

On a terminal the bar is redrawn in place, with the learner and step just graded beside it. In a log (no
terminal: a CI job, `nox -s grade 2> log`) carriage returns only make a mess, so the same line is printed
once per learner finished instead.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from typing import TextIO

from tqdm import tqdm

from .escaping import visible
from .scores import StepGrade, format_points

BAR_FORMAT = "{desc} [{bar:30}] {n_fmt}/{total_fmt} steps{postfix} ({elapsed}<{remaining})"
UNSIZED = {"ncols": 120, "nrows": 24}  # for a terminal that reports a size of 0x0


def _sized(stream: TextIO) -> bool:
    """Whether the terminal reports its size. A bare pseudo-terminal (`script`, some CI runners) says 0x0,
    which tqdm takes literally: it would draw nothing at all."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return True  # not a real terminal (a test's stand-in): tqdm asks, gets no answer, and draws
    return size.columns > 0 and size.lines > 0


class Progress:
    """A progress bar on stderr: tqdm's live bar on a terminal, a line per learner finished otherwise."""

    def __init__(self, learners: int, steps: int, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.learners, self.total = learners, learners * steps
        self.steps_per_learner = steps
        self.done = 0
        self.learners_done = 0
        self.per_learner: dict[str, int] = {}
        self.started = time.monotonic()
        self._lock = threading.Lock()
        # Off a terminal tqdm draws nothing (disable): line() formats the same bar for a log instead.
        screen = {"dynamic_ncols": True} if not self.tty or _sized(self.stream) else UNSIZED
        self.bar = tqdm(
            total=self.total,
            desc="grading",
            file=self.stream,
            bar_format=BAR_FORMAT,
            ascii=True,
            disable=not self.tty,
            **screen,
            postfix=self._learners(),
        )

    def _learners(self, note: str = "") -> str:
        return f"{self.learners_done}/{self.learners} learners" + (f"  {note}" if note else "")

    def line(self, note: str = "") -> str:
        """The bar as one line of text, for a stream that is not a terminal."""
        return tqdm.format_meter(
            self.done,
            self.total,
            time.monotonic() - self.started,
            prefix="grading",
            ascii=True,
            bar_format=BAR_FORMAT,
            postfix=self._learners(note),
        )

    def step_done(self, learner: str, graded: StepGrade) -> None:
        with self._lock:
            self.done += 1
            self.per_learner[learner] = self.per_learner.get(learner, 0) + 1
            finished = self.per_learner[learner] == self.steps_per_learner
            self.learners_done += finished
            learner = visible(learner, one_line=True)  # a folder's name: it may hold escape sequences
            note = f"{learner}: step {graded.step.number} {format_points(graded.earned)}/{graded.step.points}"
            if graded.problems:
                note += f" ({visible(graded.problems[0], one_line=True)})"
            if self.tty:
                self.bar.set_postfix_str(self._learners(note[:80]), refresh=False)
                self.bar.update(1)
            elif finished or self.done == self.total:
                self.stream.write(self.line(f"{learner} done") + "\n")
                self.stream.flush()

    def close(self) -> None:
        self.bar.close()
