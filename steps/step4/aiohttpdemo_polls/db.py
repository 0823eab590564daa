"""Step 4: the polls tables, described once in SQLAlchemy Core and shared by every part of the app."""

from sqlalchemy import Column, Date, ForeignKey, Integer, MetaData, String, Table

# Every table registers itself on this one MetaData, so `meta.create_all()` and `meta.drop_all()` see
# the whole schema and create (or drop) the tables in the order their foreign keys need.
meta = MetaData()

# TODO (step 4, task 1): the question table: id, question_text and pub_date, all required
question = Table(
    "question",
    meta,
    Column("id", Integer, primary_key=True),
)

# TODO (step 4, task 2): the choice table: id, choice_text, votes (0 by default, in the database) and question_id
choice = Table(
    "choice",
    meta,
    Column("id", Integer, primary_key=True),
)
