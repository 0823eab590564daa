"""The starter generator: markers, stubs, and a build that never eats a learner's work."""

from __future__ import annotations

import pytest

from workbook import catalogue, starter

SOLUTION = """\
def answer() -> int:
    # >>> task 2: return the answer
    return 42
    # <<<


# >>> task 1: define LIMIT
LIMIT = 10
# ---
#: LIMIT = 0
# <<<
"""


def test_python_regions_become_todos_with_stubs():
    text, tasks = starter.render(SOLUTION, 4, "x.py")
    assert tasks == {1, 2}
    assert "return 42" not in text and "LIMIT = 10" not in text
    assert (
        '    # TODO (step 4, task 2): return the answer\n    raise NotImplementedError("TODO step 4, task 2")'
        in text
    )
    assert "# TODO (step 4, task 1): define LIMIT\nLIMIT = 0\n" in text


def test_keep_solution_only_removes_markers():
    text, _ = starter.render(SOLUTION, 4, "x.py", keep_solution=True)
    assert ">>>" not in text and "<<<" not in text and "#:" not in text
    assert "return 42" in text and "LIMIT = 10" in text and "LIMIT = 0" not in text


def test_jinja_and_css_markers():
    jinja = (
        "<ul>\n{# >>> task 1: list the polls #}\n"
        "{% for q in questions %}<li>{{ q }}</li>{% endfor %}\n{# <<< #}\n</ul>\n"
    )
    text, tasks = starter.render(jinja, 6, "index.html")
    assert tasks == {1}
    assert text == "<ul>\n{# TODO (step 6, task 1): list the polls #}\n</ul>\n"
    css = "body { margin: 0; }\n/* >>> task 2: colour the links */\na { color: teal; }\n/* <<< */\n"
    text, _ = starter.render(css, 8, "style.css")
    assert text == "body { margin: 0; }\n/* TODO (step 8, task 2): colour the links */\n"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("# >>> task 1: a\nx = 1\n", "never closed"),
        ("x = 1\n# <<<\n", "outside any task region"),
        ("# >>> task 1: a\n# >>> task 2: b\n# <<<\n", "starts inside"),
        ("# >>> task 1: a\nx = 1\n# ---\ny = 2\n# <<<\n", "only stub lines"),
    ],
)
def test_broken_markers_name_file_and_line(text, problem):
    with pytest.raises(starter.MarkerError, match=problem) as caught:
        starter.render(text, 1, "broken.py")
    assert "broken.py:" in str(caught.value)


def test_ordinary_comments_are_left_alone():
    text = "# --- a section ---\n# a comment: with a colon\nx = 1  # >>> not a marker\n"
    assert starter.render(text, 1, "x.py") == (text, set())


def test_committed_steps_are_in_sync():
    result = starter.plan()
    assert result.changes == [], "run `nox -s build` and commit steps/"
    assert not result.manifest_stale and not result.unmarked_tasks


def test_build_refuses_to_overwrite_a_learners_edit(workbook_copy):
    solution = workbook_copy / "solutions/step2/aiohttpdemo_polls/views.py"
    solution.write_text(solution.read_text().replace("Hello Aiohttp!", "Hello again!"))
    edited = workbook_copy / "steps/step2/aiohttpdemo_polls/views.py"
    edited.write_text(edited.read_text() + "\n# my own notes\n")

    result = starter.build(workbook_copy)
    assert result.learner_edits == [edited]
    assert "# my own notes" in edited.read_text(), "a refused build writes nothing"

    starter.build(workbook_copy, force=True)
    assert "# my own notes" not in edited.read_text()
    assert starter.plan(workbook_copy).changes == []


def test_build_updates_an_untouched_starter_and_removes_stale_files(workbook_copy):
    solution = workbook_copy / "solutions/step1/aiohttpdemo_polls/main.py"
    solution.write_text(solution.read_text().replace("Serve `app` until Ctrl+C.", "Serve the app."))
    (workbook_copy / "solutions/step1/aiohttpdemo_polls/__main__.py").unlink()

    result = starter.build(workbook_copy)
    assert result.learner_edits == []
    assert "Serve the app." in (workbook_copy / "steps/step1/aiohttpdemo_polls/main.py").read_text()
    assert not (workbook_copy / "steps/step1/aiohttpdemo_polls/__main__.py").exists()


def test_a_file_the_learner_added_is_not_deleted_silently(workbook_copy):
    extra = workbook_copy / "steps/step1/aiohttpdemo_polls/notes.py"
    extra.write_text("# mine\n")
    assert extra in starter.plan(workbook_copy).learner_edits


def test_readme_table_lists_every_step():
    table = starter.readme_with_step_table("<!-- steps:start -->\nold\n<!-- steps:end -->")
    for step in catalogue.steps():
        assert f"`nox -s {step.name}`" in table and step.title in table


def test_template_stub_lines_keep_no_trailing_space():
    solution = "{# >>> task 1: list #}\n<ol></ol>\n{# --- #}\n{#: <ul> #}\n{# <<< #}\n"
    text, _ = starter.render(solution, 6, "x.html")
    assert text == "{# TODO (step 6, task 1): list #}\n<ul>\n"
