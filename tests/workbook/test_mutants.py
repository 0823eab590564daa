"""Mutation testing of the solutions (workbook/mutants.py): the operators, the ids, the reviewed
equivalents, and one run of real mutants through the real engine."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from workbook import catalogue, mutants

STEP = catalogue.step(1)

PYTHON = '''\
LIMIT = 3 == 4


async def view(request, engine):
    """Docstrings and annotations are never mutated."""
    # >>> task 2: the view
    async with engine.begin() as conn:
        rows = await conn.execute(query.where(a < b).order_by(c), timeout=5)
    if not ready and rows:
        return total + 1
    try:
        await check(True)
    finally:
        await engine.dispose()
    # ---
    #: pass
    # <<<
'''


def diffs(text: str, name: str = "aiohttpdemo_polls/views.py") -> dict[str, str]:
    generated = mutants.Generated()
    mutants.file_mutants(STEP, name, text, generated)
    assert generated.invalid.get(STEP.number, 0) == 0
    return {m.id.removeprefix(f"step1:{name}:"): m.diff for m in generated.mutants}


def changed(diff: str) -> tuple[str, str]:
    """The one changed line of a diff, before and after, stripped."""
    before = [line[2:].strip() for line in diff.splitlines() if line.startswith("- ")]
    after = [line[2:].strip() for line in diff.splitlines() if line.startswith("+ ")]
    return " / ".join(before), " / ".join(after)


def test_each_python_operator_makes_the_expected_mutants():
    found = {key: changed(diff) for key, diff in diffs(PYTHON).items()}
    where = "rows = await conn.execute(query.where(a < b).order_by(c), timeout=5)"
    expected = {
        "task2.1:compare:0": (where, where.replace("a < b", "a >= b")),
        "task2.1:boolean:0": ("if not ready and rows:", "if not ready or rows:"),
        "task2.1:boolean:1": ("if not ready and rows:", "if ready and rows:"),
        "task2.1:arithmetic:0": ("return total + 1", "return total - 1"),
        "task2.1:number:0": (where, where.replace("=5", "=6")),
        "task2.1:number:1": (where, where.replace("=5", "=0")),
        "task2.1:number:2": ("return total + 1", "return total + 2"),
        "task2.1:number:3": ("return total + 1", "return total + 0"),
        "task2.1:constant:0": ("await check(True)", "await check(False)"),
        "task2.1:argument:0": (where, "rows = await conn.execute(timeout=5)"),
        "task2.1:keyword:0": (where, "rows = await conn.execute(query.where(a < b).order_by(c), )"),
        "task2.1:chain:0": (where, where.replace(".order_by(c)", "")),
        "task2.1:chain:1": (where, where.replace(".where(a < b)", "")),
        "task2.1:begin-connect:0": (
            "async with engine.begin() as conn:",
            "async with engine.connect() as conn:",
        ),
        "task2.1:await:0": (where, where.replace("await ", "")),
        "task2.1:return-none:0": ("return total + 1", "return None"),
        "task2.1:statement:0": (where, "pass"),
    }
    for key, pair in expected.items():
        assert found.get(key) == pair, key
    # Docstrings, annotations and code outside the region are left alone.
    assert not any("LIMIT" in before or "Docstrings" in before for before, _ in found.values())


def test_async_with_and_finally_are_undone_keeping_their_bodies():
    found = diffs(PYTHON)
    with_mutant = found["task2.1:with:0"]
    assert "+     conn = await engine.begin()" in with_mutant
    assert "+     rows = await conn.execute(query.where(a < b).order_by(c), timeout=5)" in with_mutant
    dropped, moved = found["task2.1:finally-drop:0"], found["task2.1:finally-move:0"]
    assert "- finally:" in dropped.replace("    ", "") and "+     await engine.dispose()" not in dropped
    assert "+     await check(True)" in moved and "+     await engine.dispose()" in moved


def test_only_lines_inside_a_task_region_are_mutated():
    lines = PYTHON.splitlines()
    inside = range(lines.index("    # >>> task 2: the view") + 2, lines.index("    # ---") + 1)
    generated = mutants.Generated()
    mutants.file_mutants(STEP, "aiohttpdemo_polls/views.py", PYTHON, generated)
    assert generated.mutants
    assert all(m.line in inside for m in generated.mutants)
    assert all(m.task == 2 for m in generated.mutants)


def test_ids_do_not_move_when_lines_above_change():
    before = diffs(PYTHON)
    after = diffs("import os\nSPARE = 1 + 2  # a new line above, with mutable code of its own\n" + PYTHON)
    assert before == after


def test_a_region_is_named_by_its_task_and_its_place_among_that_tasks_regions():
    text = "# >>> task 1: a\nA = 1\n# <<<\n# >>> task 2: b\nB = 2\n# <<<\n# >>> task 1: c\nC = 3\n# <<<\n"
    ids = set(diffs(text))
    assert {"task1.1:number:0", "task2.1:number:0", "task1.2:number:0"} <= ids


TEMPLATE = """\
{% extends "base.html" %}
<p class="lead">{{ outside }}</p>
{# >>> task 1: list the polls #}
{% if questions %}
<ul class="polls">
  {% for question in questions %}
  <li><a href="{{ url('poll', question_id=question.id) }}">{{ question.question_text }}</a></li>
  {% endfor %}
</ul>
{% else %}
<p>No polls yet.</p>
{% endif %}
{{ count }} vote{{ "" if count == 1 else "s" }}
{# <<< #}
"""


def test_each_template_operator_makes_the_expected_mutants():
    found = {
        key: changed(diff) for key, diff in diffs(TEMPLATE, "aiohttpdemo_polls/templates/x.html").items()
    }
    link = (
        """<li><a href="{{ url('poll', question_id=question.id) }}">{{ question.question_text }}</a></li>"""
    )
    expected = {
        "task1.1:if-true:0": ("{% if questions %}", "{% if true %}"),
        "task1.1:if-false:0": ("{% if questions %}", "{% if false %}"),
        "task1.1:for-first:0": ("{% for question in questions %}", "{% for question in (questions)[:1] %}"),
        "task1.1:for-rest:0": ("{% for question in questions %}", "{% for question in (questions)[1:] %}"),
        "task1.1:url-name:0": (link, link.replace("url('poll'", "url('index'")),
        "task1.1:url-argument:0": (link, link.replace("question_id=question.id", "question_id=1")),
        "task1.1:escape-off:0": (link, link.replace("question_text }}", "question_text|safe }}")),
        "task1.1:output-drop:1": (link, link.replace("{{ question.question_text }}", "")),
        "task1.1:attribute:0": ('<ul class="polls">', '<ul class="">'),
        "task1.1:text:0": ("<p>No polls yet.</p>", "<p></p>"),
    }
    for key, pair in expected.items():
        assert found.get(key) == pair, key
    plural = '{{ count }} vote{{ "" if count == 1 else "s" }}'
    assert (plural, plural.replace("==", "!=")) in found.values()
    # The address the router builds is never given |safe: escaping it changes nothing.
    assert not any("url('poll', question_id=question.id)|safe" in after for _, after in found.values())
    assert not any("outside" in before for before, _ in found.values())


def test_a_change_that_does_not_parse_is_discarded_and_counted():
    generated = mutants.Generated()
    text = "{# >>> task 1: x #}\n{% for a in b %}{{ a }}{% endfor %}\n{# <<< #}\n"
    mutants.file_mutants(STEP, "aiohttpdemo_polls/templates/x.html", text, generated)
    assert all(mutants.template_is_valid(m.text) for m in generated.mutants)
    assert not mutants.python_is_valid("def f(:\n")
    assert not mutants.template_is_valid("{% for a in %}")


@pytest.fixture(scope="module")
def every_mutant() -> mutants.Generated:
    return mutants.generate(catalogue.steps())


def test_every_solution_has_mutants_in_every_step(every_mutant: mutants.Generated):
    generated = every_mutant
    steps = {m.step.number for m in generated.mutants}
    assert steps == {step.number for step in catalogue.steps()}
    assert len({m.id for m in generated.mutants}) == len(generated.mutants)


def test_the_reviewed_equivalents_name_existing_mutants(every_mutant: mutants.Generated):
    """A record that names no mutant any more describes code that has changed: it must be reviewed again."""
    recorded = mutants.load_equivalents()
    assert mutants.stale_entries(recorded, every_mutant.mutants, catalogue.steps()) == []


def test_the_sample_is_the_same_draw_every_time_and_at_most_k_per_step(every_mutant: mutants.Generated):
    generated = every_mutant
    first = [m.id for m in mutants.sample(generated.mutants, 10, seed=19)]
    assert first == [m.id for m in mutants.sample(list(reversed(generated.mutants)), 10, seed=19)]
    assert len(first) == 10 * len(catalogue.steps())
    assert first != [m.id for m in mutants.sample(generated.mutants, 10, seed=20)]


GOOD_ID = "step1:aiohttpdemo_polls/main.py:task2.1:string:0"


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        (f'"{GOOD_ID}" = ""', f"{GOOD_ID}: the reason must be one line of text"),
        (f'"{GOOD_ID}" = 3', f"{GOOD_ID}: the reason must be one line of text"),
        ('"step1:main.py:line 19" = "a reason"', "'step1:main.py:line 19' is not a mutant id"),
        (f'"{GOOD_ID}" = "a reason', "not valid TOML"),
    ],
)
def test_a_malformed_equivalents_entry_is_refused_by_name(tmp_path: Path, entry: str, complaint: str):
    path = tmp_path / "equivalent.toml"
    path.write_text(f"# reviewed\n{entry}\n")
    with pytest.raises(mutants.EquivalentsError, match=r"equivalent\.toml") as refused:
        mutants.load_equivalents(path)
    assert complaint in str(refused.value)


def test_a_recorded_id_that_names_no_mutant_is_stale(tmp_path: Path):
    path = tmp_path / "equivalent.toml"
    gone = "step1:aiohttpdemo_polls/main.py:task2.1:string:9"
    other_step = "step2:aiohttpdemo_polls/views.py:task1.1:string:9"
    path.write_text(f'"{GOOD_ID}" = "the same route"\n"{gone}" = "was there once"\n"{other_step}" = "x"\n')
    equivalents = mutants.load_equivalents(path)
    generated = mutants.generate([STEP])
    # Only the steps that were generated can say what is stale.
    assert mutants.stale_entries(equivalents, generated.mutants, [STEP]) == [gone]


def test_real_mutants_through_the_real_engine(capsys: pytest.CaptureFixture[str]):
    """One mutant every suite kills, and one that changes only a comment: it survives, fails the run while
    unrecorded (or when it timed out), and passes it once recorded as equivalent."""
    generated = mutants.generate([STEP])
    killed = next(m for m in generated.mutants if m.id.endswith("main.py:task1.1:return-none:0"))
    comment = "    # a comment changes nothing\n"
    text = killed.text.replace(
        "    return None\n", '    return web.Response(text="Hello Aiohttp!")\n' + comment
    )
    line, diff = mutants.diff_of((STEP.tree(catalogue.ROOT, "solutions") / killed.file).read_text(), text)
    harmless_id = killed.id.replace("return-none", "comment")
    harmless = replace(killed, id=harmless_id, text=text, line=line, diff=diff)

    recorded = {harmless.id: "only a comment differs"}
    outcomes = mutants.judge_all([killed, harmless], recorded, jobs=2)
    assert [o.state for o in outcomes] == ["killed", "equivalent"], [o.detail for o in outcomes]
    assert "test_" in outcomes[0].detail  # the check that killed it
    assert mutants.report(mutants.Run(outcomes, generated, recorded, [], 1.0), [1]) == 0
    capsys.readouterr()

    # Unrecorded, the same mutant is a survivor: the run fails and shows where it is and what changed.
    unrecorded = [replace(o, state="survived") if o.mutant is harmless else o for o in outcomes]
    assert mutants.report(mutants.Run(unrecorded, generated, {}, [], 1.0), [1]) == 1
    shown = capsys.readouterr().out
    assert "1 survivor(s)" in shown and harmless.id in shown
    assert "solutions/step1/aiohttpdemo_polls/main.py:10" in shown
    assert "+     # a comment changes nothing" in shown

    # A mutant stopped by the timeout fails the run too: some check waited without a deadline of its own.
    stopped = [replace(o, state="timed out") if o.mutant is harmless else o for o in outcomes]
    assert mutants.report(mutants.Run(stopped, generated, {}, [], 1.0), [1]) == 1
    assert "1 mutant(s) timed out" in capsys.readouterr().out


def test_the_command_lists_a_steps_mutants_and_refuses_an_unknown_id(capsys: pytest.CaptureFixture[str]):
    from workbook.__main__ import main

    assert main(["mutants", "1", "--list"]) == 0
    listed = capsys.readouterr().out
    assert f"{GOOD_ID}  solutions/step1/aiohttpdemo_polls/main.py:19" in listed
    assert '+ app.add_routes([web.get("", index)])' in listed
    assert "step 1: " in listed and "step 2: " not in listed
    assert main(["mutants", "1", "--id", "step1:nowhere.py:task1.1:string:0"]) == 2
    assert "no such mutant: step1:nowhere.py:task1.1:string:0" in capsys.readouterr().err
