"""Step 4: the question and choice tables in SQLAlchemy Core, and the init_db script.

The tables are checked where it matters: in PostgreSQL itself, by reading information_schema and
pg_catalog after the learner's `meta.create_all()` has run.
"""

from __future__ import annotations

from pathlib import Path

import psycopg2
import pytest
import sqlalchemy
import yaml

from workbook.pg import free_port


@pytest.fixture
def empty_db(pg_database):
    """The module's database with nothing in it: every test builds the schema it inspects."""
    pg_database.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    return pg_database


@pytest.fixture
def engine(empty_db):
    """A synchronous SQLAlchemy engine on the empty database."""
    dsn = empty_db.server.dsn(empty_db.name)
    engine = sqlalchemy.create_engine("postgresql+psycopg2://", creator=lambda: psycopg2.connect(dsn),
                                      future=True)  # fmt: skip
    yield engine
    engine.dispose()


def create_schema(polls, engine) -> None:
    """Run the learner's meta.create_all() on the empty database."""
    meta = polls.attribute("db", "meta")
    try:
        with engine.begin() as conn:
            meta.create_all(conn)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        pytest.fail(
            f"expected meta.create_all() to create the tables, it raised {type(exc).__name__}: "
            f"{str(exc).splitlines()[0]}. Hint: check each Column and the ForeignKey's target.",
            pytrace=False,
        )


def columns(db, table: str) -> dict[str, tuple]:
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


def check_columns(db, table: str, expected: dict[str, str], hint: str) -> None:
    found = columns(db, table)
    wrong = [
        f"  {name}: expected {want}, found {describe(found.get(name))}"
        for name, want in expected.items()
        if describe(found.get(name)) != want
    ]
    assert not wrong, (
        f"the {table} table in PostgreSQL does not match:\n" + "\n".join(wrong) + f"\nHint: {hint}"
    )


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def table_rows(db) -> tuple[list[tuple], list[tuple]]:
    questions = db.execute("SELECT id, question_text, pub_date FROM question ORDER BY id")
    choices = db.execute("SELECT id, choice_text, votes, question_id FROM choice ORDER BY id")
    return questions, choices


def check_sample_data(db) -> None:
    questions, choices = table_rows(db)
    assert questions, "expected init_db to insert at least one sample question, the question table is empty"
    question_ids = {row[0] for row in questions}
    orphans = [row for row in choices if row[3] not in question_ids]
    assert not orphans, f"expected every sample choice to belong to a sample question, not these: {orphans}"
    per_question = {qid: sum(row[3] == qid for row in choices) for qid in question_ids}
    assert max(per_question.values()) >= 2, (
        f"expected a sample question with at least two choices to vote on, got choices per question "
        f"{per_question}"
    )
    assert all(row[2] == 0 for row in choices), (
        f"expected every sample choice to start with 0 votes, got {[(r[1], r[2]) for r in choices]}"
    )


# --- task 1: the question table --------------------------------------------------------------------------


@pytest.mark.task(1)
def test_question_is_a_table_on_meta(polls):
    meta = polls.attribute("db", "meta")
    question = polls.attribute("db", "question")
    assert isinstance(meta, sqlalchemy.MetaData), (
        f"expected db.meta to be a sqlalchemy.MetaData, got {type(meta).__name__}"
    )
    assert isinstance(question, sqlalchemy.Table) and meta.tables.get("question") is question, (
        "expected db.question to be Table('question', meta, ...) registered on db.meta"
    )


@pytest.mark.task(1)
def test_question_columns_in_postgres(polls, engine, empty_db):
    create_schema(polls, engine)
    check_columns(
        empty_db,
        "question",
        {
            "id": "integer NOT NULL",
            "question_text": "character varying(200) NOT NULL",
            "pub_date": "date NOT NULL",
        },
        "Column('question_text', String(200), nullable=False), Column('pub_date', Date, nullable=False).",
    )


@pytest.mark.task(1)
def test_question_id_is_a_generated_primary_key(polls, engine, empty_db):
    create_schema(polls, engine)
    primary = empty_db.execute(
        "SELECT a.attname FROM pg_constraint c "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) "
        "WHERE c.conrelid = 'question'::regclass AND c.contype = 'p'"
    )
    assert primary == [("id",)], f"expected the primary key of question to be (id), got {primary}"
    default = columns(empty_db, "question")["id"][3] or ""
    assert default.startswith("nextval("), (
        f"expected PostgreSQL to number new questions itself (a SERIAL id), got the default {default!r}. "
        "Hint: Column('id', Integer, primary_key=True)."
    )


@pytest.mark.task(1)
def test_question_refuses_a_missing_date(polls, engine, empty_db):
    create_schema(polls, engine)
    try:
        empty_db.execute("INSERT INTO question (question_text) VALUES ('When?')")
    except psycopg2.errors.NotNullViolation:
        return
    except psycopg2.Error as exc:
        pytest.fail(f"expected a question without pub_date to be refused as NULL, got: {exc}".strip(),
                    pytrace=False)  # fmt: skip
    pytest.fail(
        "expected PostgreSQL to refuse a question without pub_date, it stored one. "
        "Hint: nullable=False makes the column NOT NULL.",
        pytrace=False,
    )


# --- task 2: the choice table ----------------------------------------------------------------------------


@pytest.mark.task(2)
def test_choice_columns_in_postgres(polls, engine, empty_db):
    choice = polls.attribute("db", "choice")
    assert polls.attribute("db", "meta").tables.get("choice") is choice, (
        "expected db.choice to be Table('choice', meta, ...) registered on db.meta"
    )
    create_schema(polls, engine)
    check_columns(
        empty_db,
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
def test_votes_default_to_zero_in_the_database(polls, engine, empty_db):
    create_schema(polls, engine)
    default = columns(empty_db, "choice").get("votes", (None,) * 4)[3]
    assert default == "0", (
        f"expected PostgreSQL to know the default of choice.votes (DEFAULT 0), got {default!r}. "
        "Hint: server_default='0' puts the default in the table; default=0 only lives in Python."
    )


@pytest.mark.task(2)
def test_question_id_references_question_with_cascade(polls, engine, empty_db):
    create_schema(polls, engine)
    keys = empty_db.execute(
        "SELECT a.attname, c.confrelid::regclass::text, c.confdeltype FROM pg_constraint c "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) "
        "WHERE c.conrelid = 'choice'::regclass AND c.contype = 'f'"
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
def test_deleting_a_question_deletes_its_choices(polls, engine, empty_db):
    create_schema(polls, engine)
    empty_db.execute(
        "WITH q AS (INSERT INTO question (question_text, pub_date) VALUES ('Tea?', '2020-01-01') "
        "RETURNING id) "
        "INSERT INTO choice (choice_text, question_id) SELECT answer, q.id FROM q, "
        "(VALUES ('Yes'), ('No')) AS answers (answer)"
    )
    votes = empty_db.execute("SELECT votes FROM choice")
    assert votes == [(0,), (0,)], f"expected new choices to start with 0 votes, got {votes}"
    empty_db.execute("DELETE FROM question")
    left = empty_db.execute("SELECT choice_text FROM choice")
    assert left == [], f"expected a question's choices to go with it, these stayed: {left}"


# --- task 3: the init_db script --------------------------------------------------------------------------


@pytest.mark.task(3)
def test_init_db_script_creates_tables_and_sample_data(polls_process, empty_db, make_config, tmp_path,
                                                       monkeypatch):  # fmt: skip
    monkeypatch.setenv("PYTHONWARNINGS", "error")  # SQLAlchemy 1.x habits would warn (SQLALCHEMY_WARN_20)
    path = write_config(tmp_path / "polls.yaml", make_config(empty_db))
    result = polls_process.run("aiohttpdemo_polls.init_db", "--config", str(path))
    assert result.returncode == 0, (
        f"expected `python -m aiohttpdemo_polls.init_db --config ...` to succeed, it exited "
        f"{result.returncode}:\n{result.stderr.strip()[-1500:]}"
    )
    tables = {
        name for (name,) in empty_db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    assert {"question", "choice"} <= tables, f"expected tables question and choice, found {sorted(tables)}"
    check_sample_data(empty_db)


@pytest.mark.task(3)
def test_init_db_twice_gives_the_same_database(polls, empty_db, make_config, tmp_path):
    main = polls.attribute("init_db", "main")
    path = write_config(tmp_path / "polls.yaml", make_config(empty_db))
    main(["--config", str(path)])
    first = table_rows(empty_db)
    empty_db.execute("UPDATE choice SET votes = 7")
    empty_db.execute("INSERT INTO question (question_text, pub_date) VALUES ('Left over?', '2020-01-01')")
    main(["--config", str(path)])
    second = table_rows(empty_db)
    assert second == first, (
        "expected a second run of init_db to rebuild exactly the same rows (votes back to 0, no leftovers), "
        f"got before:\n  {first}\nafter:\n  {second}\n"
        "Hint: drop the tables (meta.drop_all) before creating them (meta.create_all)."
    )
    check_sample_data(empty_db)


@pytest.mark.task(3)
def test_sample_data_uses_the_ids_postgres_returns(polls, engine, empty_db):
    create_tables = polls.attribute("init_db", "create_tables")
    sample_data = polls.attribute("init_db", "sample_data")
    create_tables(engine)
    empty_db.execute("SELECT setval(pg_get_serial_sequence('question', 'id'), 41)")  # next id: 42, not 1
    try:
        sample_data(engine)
    except sqlalchemy.exc.IntegrityError as exc:
        pytest.fail(
            f"expected sample_data to work whatever ids the questions get; with ids from 42 it failed: "
            f"{str(exc.orig).strip().splitlines()[0]}. Hint: insert(...).returning(question.c.id) tells you "
            "the id; never assume 1.",
            pytrace=False,
        )
    check_sample_data(empty_db)
    questions, _ = table_rows(empty_db)
    assert questions[0][0] == 42, f"expected the first sample question to get id 42, got {questions[0][0]}"


@pytest.mark.task(3)
def test_init_db_reports_an_unreachable_database(polls_process, make_config, empty_db, tmp_path):
    config = make_config(empty_db)
    config["postgres"]["port"] = free_port()  # nothing listens there
    path = write_config(tmp_path / "polls.yaml", config)
    result = polls_process.run("aiohttpdemo_polls.init_db", "--config", str(path))
    database = config["postgres"]["database"]
    assert result.returncode != 0, "expected init_db to fail when PostgreSQL cannot be reached, it exited 0"
    assert database in result.stderr and "Traceback" not in result.stderr, (
        f"expected one clear line naming the database {database!r} and no traceback, got:\n"
        f"{result.stderr.strip()[-1500:]}\nHint: catch sqlalchemy.exc.OperationalError in main()."
    )
