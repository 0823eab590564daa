"""The judge's SQL cannot be fooled by the learner's schema.

The learner's app owns its module's database, so it may create objects named like what the judge reads (a
view `pg_stat_activity` in public, a `count` aggregate, a schema named after the judge's role holding a
fake `question`) and move `pg_catalog` behind `public` for new sessions (ALTER ROLE / ALTER DATABASE ...
SET search_path). The judge pins its own search_path and names catalog objects with `pg_catalog.`, so what
it reads is always the real catalog and the real `public` tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import Database
from tests.step5.test_step5_engine import expected_questions, wait_for_connections
from workbook import catalogue
from workbook.runner import run_step
from workbook.starter import strip_markers_into

# Run by the learner's app. Every statement is one a database owner may run; none needs a superuser.
# Written without '%' so that no driver mistakes it for a parameter.
SHADOWS = """
DO $shadow$
DECLARE judge text;
BEGIN
  -- "$user" comes first in a default search_path: a schema named after a judge's role shadows public.
  FOR judge IN SELECT rolname FROM pg_catalog.pg_roles WHERE rolsuper OR rolname = current_user LOOP
    EXECUTE 'CREATE SCHEMA IF NOT EXISTS ' || quote_ident(judge);
    EXECUTE 'CREATE OR REPLACE VIEW ' || quote_ident(judge) || '.question AS '
         || 'SELECT * FROM public.question WHERE false';
  END LOOP;
  -- pg_catalog after public, for every new session of this database.
  EXECUTE 'ALTER DATABASE ' || quote_ident(current_database()) || ' SET search_path = public, pg_catalog';
END
$shadow$;
ALTER ROLE CURRENT_USER SET search_path = public, pg_catalog;
CREATE OR REPLACE VIEW public.pg_stat_activity AS SELECT * FROM pg_catalog.pg_stat_activity WHERE false;
CREATE OR REPLACE FUNCTION public.stays_zero(bigint) RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint';
DO $count$ BEGIN
  CREATE AGGREGATE public.count(*) (SFUNC = public.stays_zero, STYPE = bigint, INITCOND = '0');
EXCEPTION WHEN duplicate_function THEN NULL;
END $count$;
"""

# The planted app: its index lists nothing (a real mistake), and it shadows the judge's reads at startup
# and on every request, so that the judge's own count of questions would also say "none".
PLANTED_DB = f"""

SHADOWS = {SHADOWS!r}


async def plant_shadows(engine: aiopg.sa.Engine) -> None:
    async with engine.acquire() as conn:
        await conn.execute(SHADOWS)
"""

PLANTED_INDEX = """
async def index(request: web.Request) -> web.Response:
    await db.plant_shadows(request.app[db.DB_KEY])
    return web.json_response({"questions": []})
"""

CHECK = "test_index_lists_the_questions_ordered_by_id"


def planted_step5(into: Path) -> Path:
    """A workbook copy whose step 5 is the finished solution, with the shadowing mistake planted."""
    tree = catalogue.step(5).tree(into, "steps")
    strip_markers_into(catalogue.ROOT / "solutions" / "step5", tree, 5)
    package = tree / catalogue.PACKAGE
    db_module = package / "db.py"
    source = db_module.read_text()
    anchor = "    app[DB_KEY] = engine\n"
    assert anchor in source
    db_module.write_text(source.replace(anchor, anchor + "    await plant_shadows(engine)\n") + PLANTED_DB)
    views = package / "views.py"
    source = views.read_text()
    start = source.index("async def index(")
    end = source.index("\nasync def ", start + 1) if "\nasync def " in source[start + 1 :] else len(source)
    views.write_text(source[:start] + PLANTED_INDEX.lstrip() + source[end:])
    return tree


def test_a_learner_schema_does_not_fake_the_index_check(tmp_path):
    """The planted app lists no question and hides them all from a judge that trusts its search_path;
    the check still fails, with its usual message."""
    planted_step5(tmp_path)
    result = run_step(catalogue.step(5), str(tmp_path), extra=["-k", CHECK])
    outcomes = {t["nodeid"].split("::")[-1]: t for t in result.report.get("tests", [])}
    assert CHECK in outcomes, result.output
    assert outcomes[CHECK]["outcome"] == "failed", ("the shadowing app fooled the judge", result.output)
    assert (
        "expected GET / to list the questions in the database, ordered by id" in outcomes[CHECK]["message"]
    ), outcomes[CHECK]


@pytest.fixture
def attacked(pg_server) -> Iterator[Database]:
    """A database whose owner (the app's role) has planted every shadow, one app connection left open."""
    with pg_server.database() as name:
        database = Database(pg_server, name)
        database.make_app_role()
        if not database.app_role:
            pytest.skip("the server does not let the judge make the app's role")
        database.run_sql_file("schema.sql", "seed.sql")
        database.close()  # only the app's connection stays open
        app = psycopg2.connect(**database.params, connect_timeout=10)
        try:
            app.autocommit = True
            with app.cursor() as cur:
                cur.execute(SHADOWS)
            yield database
        finally:
            app.close()
            database.close()
    database.drop_app_role()


def test_a_fresh_judge_connection_reads_the_real_catalog(attacked):
    """After ALTER ROLE/DATABASE ... SET search_path = public, pg_catalog, a new judge session still counts
    the app's open connection and sees public.question, not the app's look-alikes."""
    judge = Database(attacked.server, attacked.name)  # a new session: the new defaults would apply to it
    try:
        assert wait_for_connections(judge, 1) == 1
        assert [q["id"] for q in expected_questions(judge)] == [1, 2, 3]
        (path,) = judge.execute("SHOW search_path")[0]
        assert path.replace(" ", "") == "pg_catalog,public"
    finally:
        judge.close()
