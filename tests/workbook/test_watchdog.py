"""The quotas grading keeps from outside PostgreSQL (workbook/grading/watchdog.py), attacked directly: a
learner's role that writes without end, makes databases without end, or undoes its statement_timeout."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import psycopg2
import pytest
from psycopg2 import sql

from tests.workbook.attacks import planted_code
from tests.workbook.conftest import copy_of_the_workbook, finish, package
from workbook import catalogue
from workbook.grading import running, submissions, watchdog
from workbook.grading.database import LearnerRole
from workbook.pg import PostgresServer, throwaway_postgres


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with throwaway_postgres() as started:
        yield started


def as_role(role: LearnerRole, database: str | None = None):
    server = PostgresServer(
        host=role.server.host,
        port=role.server.port,
        user=role.name,
        password=role.password,
        admin_database=role.admin_database,
    )
    conn = psycopg2.connect(server.dsn(database), connect_timeout=10)
    conn.autocommit = True
    return conn


def eventually(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_role_past_its_storage_share_loses_its_databases_and_its_login(server, monkeypatch):
    monkeypatch.setattr(watchdog, "STORAGE_LIMIT", 24 * 2**20)
    with LearnerRole(server) as role, LearnerRole(server) as honest, watchdog.Watchdog(lambda: server) as dog:
        name = "wb_filler_db"
        admin = as_role(role)
        admin.cursor().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        admin.close()
        filler = as_role(role, name)
        with filler.cursor() as cur:
            cur.execute("SET statement_timeout = 0; CREATE SCHEMA mine; CREATE TABLE mine.filler (x text)")
            with pytest.raises(psycopg2.Error):  # ended by the watchdog, not by running out of space
                for _ in range(200):
                    cur.execute(
                        "INSERT INTO mine.filler SELECT repeat('x', 1000) FROM generate_series(1, 20000)"
                    )
        # The watchdog ended the session first and drops next: give it a moment (bounded).
        assert eventually(lambda: role.databases() == []), "its databases must be dropped, freeing the space"
        assert dog.lost_step(role.name) and not dog.lost_step(honest.name)
        assert any("grew past 24 MB" in note for note in dog.breaches(role.name)), dog.breaches(role.name)
        with pytest.raises(psycopg2.OperationalError):
            as_role(role)
        as_role(honest).close()  # a classmate is untouched


def test_a_role_that_makes_databases_without_end_is_stopped(server, monkeypatch):
    monkeypatch.setattr(watchdog, "DATABASE_LIMIT", 3)
    with LearnerRole(server) as role:
        dog = watchdog.Watchdog(lambda: server)
        admin = as_role(role)
        for n in range(5):
            admin.cursor().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(f"wb_many_{n}")))
        admin.close()
        dog.look()
        assert dog.lost_step(role.name) and "more than 3 databases" in dog.breaches(role.name)[0]
        assert role.databases() == []


def test_a_statement_whose_role_undid_its_timeout_is_cancelled(server, monkeypatch):
    monkeypatch.setattr(watchdog, "STATEMENT_LIMIT", 1.0)
    with LearnerRole(server) as role, watchdog.Watchdog(lambda: server) as dog:
        conn = as_role(role)
        outcome: list[BaseException] = []

        def sleep_long() -> None:
            try:
                conn.cursor().execute("SET statement_timeout = 0; SELECT pg_sleep(60)")
            except psycopg2.Error as exc:
                outcome.append(exc)

        started = time.monotonic()
        sleeper = threading.Thread(target=sleep_long)
        sleeper.start()
        sleeper.join(20)
        assert not sleeper.is_alive(), "the statement was never cancelled"
        assert isinstance(outcome[0], psycopg2.errors.QueryCanceled), outcome
        assert time.monotonic() - started < 10
        assert "ran longer than 1 s" in dog.breaches(role.name)[0]
        assert not dog.lost_step(role.name), "a cancelled statement fails its own check, not the step"
        conn.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="confined grading needs root here (CI grades as root)")
def test_a_learner_who_fills_its_database_loses_its_step_and_nobody_else_does(tmp_path, monkeypatch):
    monkeypatch.setattr(watchdog, "STORAGE_LIMIT", 24 * 2**20)
    step = catalogue.step(5)
    subs = tmp_path / "submissions"
    finish(copy_of_the_workbook(subs / "honest"), 5)
    filler = copy_of_the_workbook(subs / "x-fill")
    finish(filler, 5)
    init = package(filler, 5) / "__init__.py"
    init.write_text(init.read_text() + planted_code("fill", {}, "/nonexistent", 0, "/nonexistent"))
    found, _ = submissions.discover(subs)
    grades = {g.name: g for g in running.grade_submissions(found, [step], jobs=2, timeout=120)}
    assert grades["honest"].steps[0].earned == step.points, grades["honest"].all_problems()
    assert grades["x-fill"].steps[0].earned == 0
    assert any("grew past 24 MB" in problem for problem in grades["x-fill"].all_problems()), grades[
        "x-fill"
    ].all_problems()
