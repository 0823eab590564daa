"""The one line a failure message quotes from a learner process's log."""

from workbook.judge.logs import last_exception

SQLALCHEMY_LOG = """Traceback (most recent call last):
  File "/x/steps/step4/aiohttpdemo_polls/init_db.py", line 56, in sample_data
    conn.execute(insert(question))
sqlalchemy.exc.ProgrammingError: (psycopg2.errors.UndefinedTable) relation "question" does not exist
LINE 1: INSERT INTO question (question_text) VALUES ('x')
                    ^

[SQL: INSERT INTO question (question_text) VALUES (%(question_text)s)]
[parameters: {'question_text': 'x'}]
(Background on this error at: https://sqlalche.me/e/14/f405)
"""


def test_a_sqlalchemy_error_is_quoted_by_its_first_line_not_its_link() -> None:
    assert last_exception(SQLALCHEMY_LOG) == (
        "aiohttpdemo_polls/init_db.py, line 56: sqlalchemy.exc.ProgrammingError: "
        '(psycopg2.errors.UndefinedTable) relation "question" does not exist'
    )


def test_a_plain_error_is_its_last_line() -> None:
    log = 'Traceback (most recent call last):\n  File "/a/aiohttpdemo_polls/views.py", line 9\nNameError: x\n'
    assert last_exception(log) == "aiohttpdemo_polls/views.py, line 9: NameError: x"
