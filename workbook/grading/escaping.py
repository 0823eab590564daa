"""Learner bytes, made harmless for the person who reads them.

A learner chooses the bytes of their folder's name, of what their code prints and of the exceptions it
raises, and grading shows those bytes to the instructor in a terminal (the progress line, the summary, a
`cat` of learners/NAME/stepN.log) and to the learner in Markdown (Classroom 50's release-body.md, the job
summary). Raw, an escape sequence clears the instructor's screen and prints a fake "ALL CHECKS PASSED",
and a pipe, a link or an HTML tag rewrites the learner's page. Every such output goes through one of the
two functions here; CSV, HTML and JSON have their own escaping (outputs.py, Jinja2, json.dumps).
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls (a terminal takes U+009B as ESC [), and the Unicode
# marks that reorder text on screen (a line that reads differently from what it holds).
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile("[\n\t\u2028\u2029\x85]")


def _shown(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, *, one_line: bool = False) -> str:
    """`text` with every control character written out (ESC as the four characters \\x1b): printed to a
    terminal it moves no cursor, clears nothing, colours nothing. Newlines and tabs stay, a log being
    lines, unless `one_line` (a progress line, a row of the summary), where they are written out too."""
    if one_line:
        text = _LINE_BREAKS.sub(_shown, text)
    return _CONTROLS.sub(_shown, text)


def markdown_code(text: str, *, in_table: bool = False) -> str:
    """`text` as one inline code span, for a Markdown paragraph, heading or list item: nothing in a code
    span is a link, an image, an HTML tag, emphasis or a heading, and its fence is longer than any run of
    backticks inside. `in_table` escapes pipes too, which GitHub takes for cell borders even there."""
    text = visible(text, one_line=True)
    if in_table:
        text = text.replace("|", "\\|")
    fence = "`" * (1 + max((len(run) for run in re.findall("`+", text)), default=0))
    return f"{fence} {text} {fence}"
