"""The configuration a learner's app gets: in a step run the same host form, role and settings as when
graded, values that differ from config/polls.yaml's, and a note where the server has no socket folder."""

from __future__ import annotations

from typing import Any

import psycopg2
import pytest
import yaml
from psycopg2 import sql

from tests.conftest import app_database, valid_config
from workbook import catalogue, pg, runner
from workbook.grading.database import LearnerRole

NOTE = "did not check that the app connects to the host its config names"


@pytest.fixture(scope="module")
def local() -> Any:
    """A local cluster, as `nox -s stepN` starts one where there is neither a DSN nor Docker."""
    with pg.throwaway_postgres() as server:
        if server.kind != "local":
            pytest.skip("these checks are about a local cluster's socket folder")
        yield server


def role_settings(server: pg.PostgresServer, role: str) -> tuple[int, list[str]]:
    rows = server.execute(
        sql.SQL("SELECT rolconnlimit, rolconfig FROM pg_catalog.pg_roles WHERE rolname = {}").format(
            sql.Literal(role)
        )
    )
    return rows[0]


def test_a_step_runs_app_gets_the_socket_folder_and_values_of_its_own(local):
    # As the plugin hands the server out (start_postgres), and as suites run together find it (the DSN).
    for server in (local.over_socket(), pg.server_from_dsn(local.over_socket().dsn())):
        with app_database(server) as database:
            postgres = valid_config(database)["postgres"]
            assert postgres["host"] == local.socket and server.host_is_socket
            given = yaml.safe_load((catalogue.ROOT / "config" / "polls.yaml").read_text())["postgres"]
            for key in ("host", "port", "database", "user", "password"):
                assert postgres[key] != given[key], key
            psycopg2.connect(**database.params, connect_timeout=5).close()


def test_the_apps_role_is_refused_over_tcp_where_its_host_is_a_socket_folder(local):
    """A hard-coded localhost fails in a step run as it does when graded (confined: no network at all)."""
    with app_database(local.over_socket()) as database:
        with pytest.raises(psycopg2.OperationalError, match="rejects connection for host"):
            psycopg2.connect(**{**database.params, "host": "127.0.0.1"}, connect_timeout=5)
    with app_database(local) as database:  # handed out over TCP (a server without socket folder): let in
        psycopg2.connect(**database.params, connect_timeout=5).close()


def test_the_apps_role_has_the_same_settings_in_a_step_run_and_when_graded(local):
    with app_database(local.over_socket()) as database, LearnerRole(local) as graded:
        settings = [
            f"statement_timeout={pg.LEARNER_STATEMENT_TIMEOUT}",
            f"temp_file_limit={pg.LEARNER_TEMP_FILE_LIMIT}",
        ]
        expected = (pg.LEARNER_CONNECTION_LIMIT, settings)
        assert role_settings(local, database.app_role) == role_settings(local, graded.name) == expected


def test_run_together_suites_are_handed_the_socket_folder(monkeypatch):
    monkeypatch.delenv(pg.ENV_DSN, raising=False)
    monkeypatch.setattr(pg, "docker_answers", lambda *args, **kwargs: False)
    with runner.shared_server() as env:
        assert pg.server_from_dsn(env[pg.ENV_DSN]).host_is_socket


def test_the_output_says_once_when_the_host_form_was_not_checked(local):
    step = catalogue.step(4)
    over_tcp = runner.run_step(step, "solutions", env={pg.ENV_DSN: local.dsn()})
    by_socket = runner.run_step(step, "solutions", env={pg.ENV_DSN: local.over_socket().dsn()})
    assert over_tcp.returncode == 0 and by_socket.returncode == 0, over_tcp.output[-2000:] + by_socket.output
    assert over_tcp.output.count(NOTE) == 1, over_tcp.output[-2000:]
    assert NOTE not in by_socket.output
