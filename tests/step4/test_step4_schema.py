"""Step 4: the question and choice tables in SQLAlchemy Core, and the init_db script.

The judge reads PostgreSQL itself (information_schema, pg_catalog) after the learner's code built the
tables in a process of its own: the learner's `init_db` builds them, with the question and choice ids
moved to random starting points and a row of the same text slipped in just before and just after every
sample question (as other sessions inserting at the same moment would), so that only ids taken from
RETURNING tie the choices right: not max(id), nor a SELECT by the text, whichever row it finds first. If
init_db cannot build the tables yet (task 3 not done), tasks 1 and 2 are judged on the learner's
`meta.create_all()` instead. Checks that write to the tables run in a transaction that is rolled back.
"""

from __future__ import annotations

import contextlib
import datetime
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
import yaml

from tests.conftest import Database, judge_connect, step_run, valid_config, why_it_ended
from workbook.judge.learner_process import Command, Finished

INIT_DB = ("-m", "aiohttpdemo_polls.init_db", "--config")
# Other sessions ask each of the learner's questions again at the same moment: same text, this date.
INTERLOPER_DATE = datetime.date(2000, 1, 1)
TIMEOUT = 30.0

# Runs in the learner's process: the learner's init_db.main(), with create_tables wrapped so that once the
# learner's tables exist their ids start at random values and every insert into question is preceded and
# followed by one more question (other sessions', with the same text), the way a busy database would behave.
# The one before lies first in the table, so a SELECT by text finds it first; the one after has max(id).
INIT_DB_WITH_BUSY_IDS = """
from sqlalchemy import text
from aiohttpdemo_polls import init_db
learners_create_tables = init_db.create_tables
def create_tables(engine):
    learners_create_tables(engine)
    with engine.begin() as conn:
        conn.execute(text({sql!r}))
init_db.create_tables = create_tables
init_db.main(["--config", {path!r}])
"""
BUSY_IDS_SQL = """
SELECT setval(pg_get_serial_sequence('question', 'id'), {question_start});
SELECT setval(pg_get_serial_sequence('choice', 'id'), {choice_start});
CREATE OR REPLACE FUNCTION judge_interloper() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO question (question_text, pub_date) VALUES (NEW.question_text, DATE '{interloper}');
    RETURN NEW;
END $$;
CREATE TRIGGER judge_interloper_before BEFORE INSERT ON question FOR EACH ROW WHEN (pg_trigger_depth() < 1)
    EXECUTE FUNCTION judge_interloper();
CREATE TRIGGER judge_interloper AFTER INSERT ON question FOR EACH ROW WHEN (pg_trigger_depth() < 1)
    EXECUTE FUNCTION judge_interloper();
"""
# Runs in the learner's process: the learner's create_tables, on tables that hold rows, with create_all made
# to fail once it has created every table (as a full disk or a lost connection would). In one transaction
# the drop is rolled back with it and the old tables stay.
CREATE_FAILS = """
from sqlalchemy import event
from aiohttpdemo_polls import db, init_db
from aiohttpdemo_polls.settings import load_config
class JudgeStop(Exception):
    pass
def stop(target, connection, **kw):
    raise JudgeStop("the judge makes create_all fail here")
event.listen(db.meta, "after_create", stop)
engine = init_db.make_engine(load_config({path!r})["postgres"])
try:
    init_db.create_tables(engine)
    print("JUDGE: create_tables returned without calling meta.create_all")
except JudgeStop:
    pass
finally:
    engine.dispose()
"""
# Runs in the learner's process: a table added to the learner's meta later (as step N+1 would), given a row,
# then create_tables once more. meta.drop_all drops every table on meta, so the row goes; a DROP TABLE that
# names question and choice leaves the new table and its row, and create_all skips a table that exists.
TABLE_ADDED_LATER = """
from sqlalchemy import Column, Integer, String, Table, func, insert, select
from aiohttpdemo_polls import db, init_db
from aiohttpdemo_polls.settings import load_config
added = Table({table!r}, db.meta, Column("id", Integer, primary_key=True), Column("word", String(20)))
engine = init_db.make_engine(load_config({path!r})["postgres"])
try:
    init_db.create_tables(engine)
    with engine.begin() as conn:
        conn.execute(insert(added).values(word="stale"))
    init_db.create_tables(engine)
    with engine.begin() as conn:
        print("JUDGE ROWS", conn.execute(select(func.count()).select_from(added)).scalar_one())
finally:
    engine.dispose()
"""
# Runs in the learner's process when init_db could not build the tables: the learner's meta, created.
CREATE_ALL = """
from sqlalchemy import create_engine
from aiohttpdemo_polls.db import meta
engine = create_engine("postgresql+psycopg2://", connect_args={dsn!r}, future=True)
with engine.begin() as conn:
    meta.create_all(conn)
engine.dispose()
"""


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def finish(command: Command) -> Finished:
    try:
        return command.wait(TIMEOUT)
    finally:
        command.close()


@dataclass
class Built:
    """What the module's first init_db run left in PostgreSQL, and how the tables came to be."""

    db: Database
    config_path: Path
    init_db: Finished
    question_start: int
    choice_start: int
    init_db_built_tables: bool
    fallback: Finished | None
    questions: list[tuple]
    choices: list[tuple]
    unreachable: Finished
    unreachable_config: dict
    # The last id each table's sequence handed out when init_db had run (None: no sequence found).
    sequence_ends: dict[str, int | None]


def tables(db: Database) -> set[str]:
    rows = db.execute("SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = 'public'")
    return {name for (name,) in rows}


def sequence_end(db: Database, table: str) -> int | None:
    """The last value the id sequence of `table` handed out, or None if it has none."""
    [(name,)] = db.execute(f"SELECT pg_catalog.pg_get_serial_sequence('public.{table}', 'id')")
    return db.execute(f"SELECT last_value FROM {name}")[0][0] if name else None


def table_rows(db: Database) -> tuple[list[tuple], list[tuple]]:
    questions = db.execute("SELECT id, question_text, pub_date FROM public.question ORDER BY id")
    choices = db.execute("SELECT id, choice_text, votes, question_id FROM public.choice ORDER BY id")
    return questions, choices


@pytest.fixture(scope="module")
def built(request: pytest.FixtureRequest, pg_database: Database,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:  # fmt: skip
    """Run the learner's init_db (ids moved, a busy table) and, at once, init_db against a closed port."""
    tree = step_run(request.config).tree
    folder = tmp_path_factory.mktemp("step4")
    path = write_config(folder / "polls.yaml", valid_config(pg_database))
    unreachable_config = valid_config(pg_database)
    unreachable_config["postgres"]["port"] = pg_database.closed_port()  # nothing answers there
    unreachable_path = write_config(folder / "unreachable.yaml", unreachable_config)
    question_start, choice_start = random.randint(100, 400), random.randint(600, 900)
    sql = BUSY_IDS_SQL.format(question_start=question_start, choice_start=choice_start,
                              interloper=INTERLOPER_DATE.isoformat())  # fmt: skip
    busy = Command(tree, "-c", INIT_DB_WITH_BUSY_IDS.format(sql=sql, path=str(path)))
    unreachable = Command(tree, *INIT_DB, str(unreachable_path))
    finished = finish(busy)
    built_tables = {"question", "choice"} <= tables(pg_database)
    questions, choices = table_rows(pg_database) if built_tables else ([], [])
    ends = {name: sequence_end(pg_database, name) for name in ("question", "choice")} if built_tables else {}
    fallback = None
    if built_tables:  # the judge's own extras go; the learner's rows stay as init_db left them
        pg_database.execute("DROP TRIGGER IF EXISTS judge_interloper_before ON public.question")
        pg_database.execute("DROP TRIGGER IF EXISTS judge_interloper ON public.question")
        pg_database.execute(f"DELETE FROM public.question WHERE pub_date = DATE '{INTERLOPER_DATE}'")
    else:
        pg_database.empty_schema()
        params = pg_database.params
        dsn = {key: params[key] for key in ("host", "port", "user", "password") if params[key]}
        dsn["dbname"] = params["database"]
        fallback = finish(Command(tree, "-c", CREATE_ALL.format(dsn=dsn)))
    yield Built(pg_database, path, finished, question_start + 1, choice_start + 1, built_tables, fallback,
                questions, choices, finish(unreachable), unreachable_config, ends)  # fmt: skip


@pytest.fixture
def schema(built: Built) -> Database:
    """The database holding the learner's tables; fails the check if they could not be created at all."""
    if not {"question", "choice"} <= tables(built.db):
        why = why_it_ended(built.fallback.output) if built.fallback else "(nothing ran)"
        pytest.fail(
            f"expected db.meta to create the tables question and choice, found {sorted(tables(built.db))}; "
            f"meta.create_all() said: {why}. Hint: check each Column and the ForeignKey's target.",
            pytrace=False,
        )
    return built.db


@contextlib.contextmanager
def rolled_back(db: Database) -> Iterator[psycopg2.extensions.cursor]:
    """A cursor in a transaction that is rolled back at the end: the tables stay as init_db left them."""
    conn = judge_connect(db.server.dsn(db.name))
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.rollback()
        conn.close()


def columns(db: Database, table: str) -> dict[str, tuple]:
    """column name -> (type, max length, nullable, default) as PostgreSQL reports them."""
    rows = db.execute(
        "SELECT column_name, data_type, character_maximum_length, is_nullable, column_default "
        f"FROM information_schema.columns WHERE table_schema = 'public' AND table_name = '{table}' "
        "ORDER BY ordinal_position"
    )
    return {name: (kind, length, nullable == "YES", default) for name, kind, length, nullable, default
            in rows}  # fmt: skip


def describe(column: tuple | None) -> str:
    if column is None:
        return "missing"
    kind, length, nullable, _ = column
    return f"{kind}{f'({length})' if length else ''} {'NULL allowed' if nullable else 'NOT NULL'}"


def check_columns(db: Database, table: str, expected: dict[str, str], hint: str) -> None:
    found = columns(db, table)
    wrong = [
        f"  {name}: expected {want}, found {describe(found.get(name))}"
        for name, want in expected.items()
        if describe(found.get(name)) != want
    ]
    # A column the lesson does not ask for is a mistake too: it has to be filled in, or given a default.
    wrong += [f"  {name}: not asked for (remove it), found {describe(found[name])}"
              for name in found if name not in expected]
    assert not wrong, (
        f"the {table} table in PostgreSQL does not match:\n" + "\n".join(wrong) + f"\nHint: {hint}"
    )


def check_defaults(db: Database, table: str, allowed: dict[str, str | None]) -> None:
    """Columns the lesson gives no default must have none: PostgreSQL should refuse a row without them."""
    found = columns(db, table)
    extra = [f"{name} DEFAULT {found[name][3]}" for name, want in allowed.items()
             if name in found and found[name][3] != want]  # fmt: skip
    assert not extra, (
        f"expected no default in {table} for a value the row must be given, PostgreSQL has: "
        f"{', '.join(extra)}. "
        "Hint: a required column gets nullable=False and no server_default, so a row without it is refused."
    )


def refuse_missing(db: Database, insert: str, what: str, hint: str) -> None:
    with rolled_back(db) as cur:
        try:
            cur.execute(insert)
        except psycopg2.errors.NotNullViolation:
            return
        except psycopg2.Error as exc:
            pytest.fail(f"expected {what} to be refused as NULL, PostgreSQL said: {str(exc).strip()}",
                        pytrace=False)  # fmt: skip
    pytest.fail(f"expected PostgreSQL to refuse {what}, it stored one. Hint: {hint}", pytrace=False)


def init_db_failure(finished: Finished, what: str) -> str:
    return (f"expected `python -m aiohttpdemo_polls.init_db --config FILE` to {what}; "
            f"{finished.ended}: {why_it_ended(finished.output)}")  # fmt: skip


def nothing_committed(built: Built) -> str:
    """Why the tables are empty although init_db exited 0 and said it was done."""
    said = built.init_db.output.strip().splitlines()[-1:] or ["nothing"]
    return (
        f"`python -m aiohttpdemo_polls.init_db` exited 0 and said {said[0]!r}, but the question table is "
        "empty: nothing was committed, so PostgreSQL rolled the inserts back when the connection closed. "
        "Hint: insert inside `with engine.begin() as conn:`, which commits when the block ends; "
        "`engine.connect()` commits nothing unless you call conn.commit()."
    )


def sample_polls(questions: list[tuple], choices: list[tuple]) -> list[tuple]:
    """The sample data without ids: (question text, date, ((choice text, votes), ...)), sorted."""
    polls = []
    for qid, text, day in questions:
        answers = sorted((c_text, votes) for _, c_text, votes, c_qid in choices if c_qid == qid)
        polls.append((text, day.isoformat(), tuple(answers)))
    return sorted(polls)


# --- task 1: the question table --------------------------------------------------------------------------


@pytest.mark.task(1)
def test_question_is_a_table_on_meta(learner):
    meta = learner.require("db:meta")
    assert "sqlalchemy.sql.schema.MetaData" in meta["mro"], (
        f"expected db.meta to be a sqlalchemy.MetaData, got {meta['type']}. Hint: meta = MetaData()."
    )
    question = learner.require("db:question")
    assert "sqlalchemy.sql.schema.Table" in question["mro"], (
        f"expected db.question to be a sqlalchemy Table, got {question['type']}. "
        "Hint: question = Table('question', meta, Column(...), ...)."
    )
    name = learner.describe("db:question.name").get("value")
    on_meta = learner.describe("db:question.metadata").get("id") == meta["id"]
    assert name == "question" and on_meta, (
        f"expected db.question to be Table('question', meta, ...) registered on db.meta, got a table named "
        f"{name!r}{'' if on_meta else ' on another MetaData'}"
    )


@pytest.mark.task(1)
def test_question_columns_in_postgres(schema):
    check_columns(
        schema,
        "question",
        {
            "id": "integer NOT NULL",
            "question_text": "character varying(200) NOT NULL",
            "pub_date": "date NOT NULL",
        },
        "Column('question_text', String(200), nullable=False), Column('pub_date', Date, nullable=False).",
    )


@pytest.mark.task(1)
def test_question_id_is_a_generated_primary_key(schema):
    primary = schema.execute(
        "SELECT a.attname FROM pg_catalog.pg_constraint c "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) "
        "WHERE c.conrelid = 'public.question'::regclass AND c.contype = 'p'"
    )
    assert primary == [("id",)], f"expected the primary key of question to be (id), got {primary}"
    default = columns(schema, "question")["id"][3] or ""
    assert default.startswith("nextval("), (
        f"expected PostgreSQL to number new questions itself (a SERIAL id), got the default {default!r}. "
        "Hint: Column('id', Integer, primary_key=True)."
    )


@pytest.mark.task(1)
def test_question_refuses_a_missing_date_or_text(schema):
    check_defaults(schema, "question", {"question_text": None, "pub_date": None})
    refuse_missing(schema, "INSERT INTO public.question (question_text) VALUES ('When?')",
                   "a question without pub_date", "nullable=False makes the column NOT NULL.")  # fmt: skip
    refuse_missing(schema, "INSERT INTO public.question (pub_date) VALUES ('2020-01-01')",
                   "a question without question_text", "nullable=False makes it NOT NULL.")  # fmt: skip


def check_no_python_default(learner, table: str, names: tuple[str, ...], hint: str = "") -> None:
    """PostgreSQL cannot see a SQLAlchemy-side default (default=...): the table looks right to the database,
    yet every insert made through SQLAlchemy without the column quietly gets a value."""
    for name in names:
        found = learner.describe(f"db:{table}.c.{name}.default")
        if not found.get("exists"):
            pytest.fail(f"expected db.{table} to have a column {name}, found none. Hint: Column('{name}', "
                        f"...) in {table} = Table('{table}', meta, ...).", pytrace=False)  # fmt: skip
        assert "builtins.NoneType" in found.get("mro", []), (
            f"db.{table}.c.{name}.default: expected None (a required column has no default), got "
            f"{found.get('type')} {found.get('value')!r}\n" + (hint or f"Hint: Column('{name}', ..., "
            "nullable=False) and no default=: a row without it must be refused, never filled in.")
        )


@pytest.mark.task(1)
def test_question_required_columns_have_no_python_default(learner):
    check_no_python_default(learner, "question", ("question_text", "pub_date"))


@pytest.mark.task(1)
def test_two_questions_may_share_a_text(schema):
    text = f"Tea or coffee {random.randint(1000, 9999)}?"  # the judge's own question, never the sample's
    with rolled_back(schema) as cur:
        try:
            cur.execute("INSERT INTO public.question (question_text, pub_date) VALUES (%s, '2020-01-01'), "
                        "(%s, '2021-01-01'), (%s, '2022-01-01')", (text, text, text.upper()))  # fmt: skip
        except psycopg2.Error as exc:
            pytest.fail(
                f"expected PostgreSQL to store three questions {text!r}, {text!r} and {text.upper()!r}, it "
                f"said: {str(exc).strip()}\nHint: two questions may share a text: no unique=True on "
                "question_text, and no unique Index on it.",
                pytrace=False,
            )


# --- task 2: the choice table ----------------------------------------------------------------------------


@pytest.mark.task(2)
def test_choice_columns_in_postgres(learner, schema):
    choice = learner.require("db:choice")
    name = learner.describe("db:choice.name").get("value")
    on_meta = learner.describe("db:choice.metadata").get("id") == learner.require("db:meta")["id"]
    assert "sqlalchemy.sql.schema.Table" in choice["mro"] and name == "choice" and on_meta, (
        "expected db.choice to be Table('choice', meta, ...) registered on db.meta, "
        f"got {choice['type']} named {name!r}"
    )
    check_columns(
        schema,
        "choice",
        {
            "id": "integer NOT NULL",
            "choice_text": "character varying(200) NOT NULL",
            "votes": "integer NOT NULL",
            "question_id": "integer NOT NULL",
        },
        "every column of choice is required: pass nullable=False.",
    )


@pytest.mark.task(2)
def test_votes_default_to_zero_in_the_database(schema):
    default = columns(schema, "choice").get("votes", (None,) * 4)[3]
    assert default == "0", (
        f"expected PostgreSQL to know the default of choice.votes (DEFAULT 0), got {default!r}. "
        "Hint: server_default='0' puts the default in the table; default=0 only lives in Python."
    )
    check_defaults(schema, "choice", {"choice_text": None, "question_id": None})


@pytest.mark.task(2)
def test_choice_required_columns_have_no_python_default(learner):
    check_no_python_default(learner, "choice", ("choice_text", "question_id"))
    check_no_python_default(learner, "choice", ("votes",), hint=(
        "Hint: votes has its default in the database only, server_default='0': a default= in Python as "
        "well overrides it for every insert SQLAlchemy makes."))  # fmt: skip


@pytest.mark.task(2)
def test_question_id_references_question_with_cascade(schema):
    keys = schema.execute(
        "SELECT a.attname, c.confrelid::regclass::text, c.confdeltype FROM pg_catalog.pg_constraint c "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) "
        "WHERE c.conrelid = 'public.choice'::regclass AND c.contype = 'f'"
    )
    assert [key[:2] for key in keys] == [("question_id", "question")], (
        f"expected one foreign key, choice.question_id -> question, got {[key[:2] for key in keys]}. "
        "Hint: ForeignKey('question.id', ...)."
    )
    assert keys[0][2] == "c", (
        f"expected ON DELETE CASCADE on choice.question_id, PostgreSQL says confdeltype={keys[0][2]!r} "
        "('a' means NO ACTION). Hint: ForeignKey('question.id', ondelete='CASCADE')."
    )


@pytest.mark.task(2)
def test_deleting_a_question_deletes_its_choices(schema):
    text = f"Tea or coffee {random.randint(1000, 9999)}?"  # the judge's own question, never the sample's
    with rolled_back(schema) as cur:
        try:
            cur.execute(
                "WITH q AS (INSERT INTO public.question (question_text, pub_date) "
                "VALUES (%s, '2020-01-01') RETURNING id) "
                "INSERT INTO public.choice (choice_text, question_id) SELECT answer, q.id FROM q, "
                "(VALUES ('Yes'), ('No')) AS answers (answer) RETURNING question_id",
                (text,),
            )
            (question_id,) = cur.fetchone()
            cur.execute("SELECT votes FROM public.choice WHERE question_id = %s", (question_id,))
            votes = cur.fetchall()
            assert votes == [(0,), (0,)], f"expected new choices to start with 0 votes, got {votes}"
            cur.execute("DELETE FROM public.question WHERE id = %s", (question_id,))
            cur.execute("SELECT choice_text FROM public.choice WHERE question_id = %s", (question_id,))
            left = cur.fetchall()
        except psycopg2.Error as exc:
            no_votes = isinstance(exc, psycopg2.errors.NotNullViolation) and "votes" in str(exc)
            hint = ("server_default='0' gives votes its default in PostgreSQL" if no_votes
                    else "ForeignKey('question.id', ondelete='CASCADE')")  # fmt: skip
            pytest.fail(
                f"expected a question with two choices (no votes given) to be inserted and deleted, "
                f"PostgreSQL said: {str(exc).strip()}. Hint: {hint}.",
                pytrace=False,
            )
    assert left == [], f"expected a question's choices to go with it, these stayed: {left}"
    refuse_missing(schema, "INSERT INTO public.choice (choice_text) VALUES ('Nobody''s')",
                   "a choice without question_id", "Column('question_id', ..., nullable=False).")  # fmt: skip


# --- task 3: the init_db script --------------------------------------------------------------------------


@pytest.mark.task(3)
def test_init_db_script_creates_tables_and_sample_data(built):
    if built.init_db.status != 0 and built.init_db_built_tables:
        pytest.fail(init_db_failure(built.init_db, "succeed") + " (the question ids started at "
                    f"{built.question_start}, not 1, and another session asked each of your questions again "
                    "at once: take each id from RETURNING, never assume it or look it up by its text)",
                    pytrace=False)  # fmt: skip
    assert built.init_db_built_tables, (
        init_db_failure(built.init_db, "create the tables question and choice") + "\nHint: in create_tables, "
        "meta.drop_all(conn) then meta.create_all(conn) inside `with engine.begin() as conn:` (it commits; "
        "engine.connect() does not)."
    )
    assert built.init_db.status == 0, init_db_failure(built.init_db, "succeed")
    sample = [q for q in built.questions if q[2] != INTERLOPER_DATE]
    assert sample, nothing_committed(built)
    ids = {row[0] for row in sample}
    strays = [row for row in built.choices if row[3] not in ids]
    assert not strays, (
        "expected every sample choice to belong to the sample question it was inserted for; with a question "
        f"of the same text inserted right before and right after each of yours, these went to a wrong one: "
        f"{strays[:4]}. Hint: take the id from insert(question)...returning(question.c.id), not max(id), a "
        "SELECT by its text (two questions may share one), a count or 1."
    )
    per_question = {qid: sum(row[3] == qid for row in built.choices) for qid in ids}
    assert min(per_question.values()) >= 2, (
        f"expected every sample question to have at least two choices to vote on, got choices per question "
        f"{per_question}"
    )
    assert all(row[2] == 0 for row in built.choices), (
        f"expected every sample choice to start with 0 votes, got {[(r[1], r[2]) for r in built.choices]}"
    )


@pytest.mark.task(3)
def test_sample_data_uses_the_ids_postgres_returns(built):
    if not built.init_db_built_tables:
        pytest.fail(init_db_failure(built.init_db, "create the tables first"), pytrace=False)
    sample = [q for q in built.questions if q[2] != INTERLOPER_DATE]
    assert built.init_db.status != 0 or sample, nothing_committed(built)
    assert built.init_db.status == 0, init_db_failure(built.init_db, "succeed") + (
        f"\nWith question ids starting at {built.question_start}, not 1. Hint: "
        "insert(question).values(...).returning(question.c.id) tells you the id; never assume 1."
    )
    for table, rows, start in (("question", sample, built.question_start),
                               ("choice", built.choices, built.choice_start)):  # fmt: skip
        ids, end = sorted(row[0] for row in rows), built.sequence_ends.get(table)
        assert end is not None and all(start <= row_id <= end for row_id in ids), (
            f"expected every sample {table} to get its id from PostgreSQL's sequence (from {start} on in "
            f"this run; it stood at {end} after init_db), got the ids {ids}: ids of your own leave the "
            f"sequence behind, and the next "
            f"{table} inserted without an id collides with one of yours. Hint: do not insert ids yourself; "
            "leave id out of insert(...).values(...) and take it from RETURNING."
        )


@pytest.mark.task(3)
def test_init_db_reports_an_unreachable_database(built):
    result, database = built.unreachable, built.unreachable_config["postgres"]["database"]
    assert result.status not in (0, None), (
        f"expected init_db to fail when PostgreSQL cannot be reached (port "
        f"{built.unreachable_config['postgres']['port']} is closed), but {result.ended}"
    )
    assert database in result.output and "Traceback" not in result.output, (
        f"expected one clear line naming the database {database!r} and no traceback, got:\n"
        f"{why_it_ended(result.output)}\nHint: catch sqlalchemy.exc.OperationalError in main()."
    )


@pytest.mark.task(3)
def test_create_tables_drops_and_creates_in_one_transaction(built, tree):
    """A failure while creating must leave the old tables: drop and create commit together or not at all."""
    if not built.init_db_built_tables or built.init_db.status != 0:
        pytest.fail(init_db_failure(built.init_db, "succeed a first time"), pytrace=False)
    before = table_rows(built.db)
    failed = finish(Command(tree, "-c", CREATE_FAILS.format(path=str(built.config_path))))
    if "without calling meta.create_all" in failed.output:
        pytest.fail("expected create_tables to build the tables with meta.create_all(conn), it returned "
                    "without calling it", pytrace=False)  # fmt: skip
    left = sorted(tables(built.db) & {"question", "choice"})
    after = table_rows(built.db) if len(left) == 2 else None
    assert after == before, (
        "the judge made meta.create_all() fail once it had created the tables (as a lost connection "
        f"would), while create_tables rebuilt tables that held rows: expected the drop to be rolled back "
        f"with it and the old rows to stay, found {f'the tables {left}' if left else 'no tables'}"
        f"{' with other rows' if after is not None else ''}; it printed: {why_it_ended(failed.output)}. "
        "Hint: drop and create in one transaction: meta.drop_all(conn) and meta.create_all(conn) inside "
        "one `with engine.begin() as conn:`, never on the engine or in two blocks."
    )


@pytest.mark.task(3)
def test_init_db_twice_gives_the_same_database(built, tree):
    """After the checks that read init_db's first rows: it changes them and runs init_db again."""
    if not built.init_db_built_tables or built.init_db.status != 0:
        pytest.fail(init_db_failure(built.init_db, "succeed a first time"), pytrace=False)
    first = sample_polls([q for q in built.questions if q[2] != INTERLOPER_DATE], built.choices)
    built.db.execute("UPDATE public.choice SET votes = 7")
    built.db.execute(
        "INSERT INTO public.question (question_text, pub_date) VALUES ('Left over?', '2020-01-01')"
    )
    again = finish(Command(tree, *INIT_DB, str(built.config_path)))
    gone = "UndefinedTable" in again.output or "does not exist" in again.output
    assert again.status == 0, init_db_failure(again, "succeed a second time, on the database it built") + (
        "\nHint: after create_tables the tables were gone: the drop was committed, while the create ran on "
        "another connection, found the old tables still there (the drop not yet committed) and skipped "
        "them. meta.drop_all(conn) and meta.create_all(conn) on the same conn of one engine.begin() block: "
        "never the engine (nor conn.engine)." if gone else "")  # fmt: skip
    second = sample_polls(*table_rows(built.db))
    assert second == first, (
        "expected a second run of init_db to rebuild exactly the same rows (votes back to 0, no leftovers), "
        f"got before:\n  {first}\nafter:\n  {second}\n"
        "Hint: drop the tables (meta.drop_all) before creating them (meta.create_all)."
    )


@pytest.mark.task(3)
def test_create_tables_drops_every_table_on_meta(built, tree):
    """Last in the module: it rebuilds the tables without sample data."""
    if not built.init_db_built_tables or built.init_db.status != 0:
        pytest.fail(init_db_failure(built.init_db, "succeed a first time"), pytrace=False)
    table = f"judge_added_{random.randint(1000, 9999)}"
    try:
        code = TABLE_ADDED_LATER.format(table=table, path=str(built.config_path))
        result = finish(Command(tree, "-c", code))
    finally:
        built.db.execute(f"DROP TABLE IF EXISTS public.{table}")
    assert "JUDGE ROWS 0" in result.output, (
        f"the judge added a table {table} to db.meta, gave it a row and called create_tables again: expected "
        f"the table dropped and created afresh (0 rows), but {result.ended}: {why_it_ended(result.output)}\n"
        "Hint: meta.drop_all(conn) drops every table on meta, the ones later steps add too; a DROP TABLE "
        "written by hand names only today's tables."
    )
