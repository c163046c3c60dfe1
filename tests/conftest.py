"""Shared fixtures. Stores: one SQLite file per test, one throwaway PostgreSQL schema per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings
from psycopg import sql

from engine.store.port import Store
from engine.store.postgres_store import PostgresStore
from engine.store.sqlite_store import SqliteStore

# CI explores the same examples on every run (a red build is then a real regression, and
# reproducible); developers' runs keep exploring new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

PG_DSN = os.environ.get("PLEDGEWATCH_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")

OpenStore = Callable[[], Store]


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh schema name in the test database, dropped with everything in it afterwards."""
    try:
        admin = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_DSN}: {exc}\n"
            "Start it with `bash scripts/services.sh postgres` (scripts/test.sh does), "
            "or point PLEDGEWATCH_TEST_PG_DSN at a server with a `test` database.",
            pytrace=False,
        )
    name = f"pw_test_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """Open a migrated store on this test's database; a second call reopens the same data."""
    opened: list[Store] = []
    if request.param == "sqlite":
        path = tmp_path / "pledgewatch.db"

        def make() -> Store:
            return SqliteStore(path)
    else:
        schema = request.getfixturevalue("pg_schema")

        def make() -> Store:
            return PostgresStore(PG_DSN, schema=schema, max_size=4)

    def open_() -> Store:
        store = make()
        opened.append(store)
        store.migrate()
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: OpenStore) -> Store:
    """A migrated, empty store of each backend."""
    return open_store()
