"""Consumers' durable state (DESIGN §8): `ConsumerRow`s committed with the engine batch that
fed them, on SQLite and PostgreSQL (and TimescaleDB's server, where it is installed)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import MappingProxyType

import psycopg
import pytest

from engine.core.state import DeviceState, LoanState
from engine.store.port import Batch, ConsumerRow, Store
from engine.store.postgres_store import PostgresStore
from engine.store.sqlite_store import SqliteStore
from tests.conftest import PG_DSN, OpenStore
from tests.factories import HOME, T0, alert, fix
from tests.test_store import HOOK

LOAN_DOC: dict[str, object] = {
    "status": "active",
    "strikes": 2,
    "since_ms": T0,
    "score": 0.75,
    "cells": ["wtw3s", "wtw3t"],
    "note": None,
    "name": "Zhōu Lì 周立",
}


def rows(*items: tuple[str, str, dict[str, object] | None]) -> list[ConsumerRow]:
    return [ConsumerRow(consumer, key, doc) for consumer, key, doc in items]


def versions(store: Store) -> list[int]:
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            found = conn.execute("SELECT version FROM schema_migrations ORDER BY version")
            return [v for (v,) in found.fetchall()]
    assert isinstance(store, PostgresStore)
    return [v for (v,) in store._query("SELECT version FROM schema_migrations ORDER BY version")]


def test_rows_written_with_a_batch_are_loaded_back(open_store: OpenStore) -> None:
    store = open_store()
    assert store.load_consumer_rows("loans") == []
    batch = Batch(
        now_ms=T0,
        readings=[fix(0, HOME)],
        devices=[DeviceState("trk-1", event_ms=T0)],
        consumer_rows=rows(
            ("loans", "L-2", {"strikes": 0}),
            ("loans", "L-1", LOAN_DOC),
            ("sites", "wtw3s", {"visits": ["trk-1"]}),
        ),
    )
    store.commit_batch(batch)
    assert store.count_telemetry() == 1
    assert store.load_consumer_rows("loans") == [("L-1", LOAN_DOC), ("L-2", {"strikes": 0})]
    assert store.load_consumer_rows("sites") == [("wtw3s", {"visits": ["trk-1"]})]
    assert store.load_consumer_rows("nobody") == []
    store.close()

    reopened = open_store()  # migrates again: a no-op
    assert reopened.load_consumer_rows("loans") == [("L-1", LOAN_DOC), ("L-2", {"strikes": 0})]


def test_keys_come_back_in_byte_order(store: Store) -> None:
    keys = ["b", "a", "B", "é", "a-1", "a_1", "10", "9"]
    store.commit_batch(Batch(now_ms=T0, consumer_rows=rows(*(("c", k, {"k": k}) for k in keys))))
    # One order on both backends: SQLite's BINARY, PostgreSQL's "C" collation.
    expected = sorted(keys, key=str.encode)
    assert [key for key, _ in store.load_consumer_rows("c")] == expected
    assert [doc for _, doc in store.load_consumer_rows("c")] == [{"k": k} for k in expected]


def test_any_mapping_is_a_doc(store: Store) -> None:
    doc = MappingProxyType({"a": 1, "nested": {"b": [1, 2.5, "x"]}})
    store.commit_batch(Batch(now_ms=T0, consumer_rows=[ConsumerRow("loans", "L-1", doc)]))
    assert store.load_consumer_rows("loans") == [("L-1", {"a": 1, "nested": {"b": [1, 2.5, "x"]}})]


def test_an_update_replaces_and_none_deletes(store: Store) -> None:
    store.commit_batch(
        Batch(
            now_ms=T0,
            consumer_rows=rows(("loans", "L-1", {"v": 1}), ("loans", "L-2", {"v": 1})),
        )
    )
    store.commit_batch(Batch(now_ms=T0 + 1, consumer_rows=rows(("loans", "L-1", {"w": 2}))))
    assert store.load_consumer_rows("loans") == [("L-1", {"w": 2}), ("L-2", {"v": 1})]

    deleted = rows(("loans", "L-2", None), ("loans", "never-stored", None))
    store.commit_batch(Batch(now_ms=T0 + 2, consumer_rows=deleted))
    assert store.load_consumer_rows("loans") == [("L-1", {"w": 2})]

    store.commit_batch(Batch(now_ms=T0 + 3, consumer_rows=rows(("loans", "L-2", {"v": 3}))))
    assert store.load_consumer_rows("loans") == [("L-1", {"w": 2}), ("L-2", {"v": 3})]


def test_the_last_row_of_a_key_in_a_batch_wins(store: Store) -> None:
    store.commit_batch(Batch(now_ms=T0, consumer_rows=rows(("loans", "gone", {"v": 0}))))
    batch = Batch(
        now_ms=T0 + 1,
        consumer_rows=rows(
            ("loans", "L-1", {"v": 1}),
            ("loans", "L-1", {"v": 2}),  # updated twice: the second wins
            ("loans", "L-2", None),
            ("loans", "L-2", {"v": 3}),  # deleted, then written: kept
            ("loans", "gone", {"v": 4}),
            ("loans", "gone", None),  # written, then deleted: gone
        ),
    )
    store.commit_batch(batch)
    assert store.load_consumer_rows("loans") == [("L-1", {"v": 2}), ("L-2", {"v": 3})]


def test_consumers_do_not_mix(store: Store) -> None:
    store.commit_batch(
        Batch(
            now_ms=T0,
            consumer_rows=rows(
                ("loans", "k", {"of": "loans"}),
                ("sites", "k", {"of": "sites"}),
                ("sites", "only-sites", {"of": "sites"}),
            ),
        )
    )
    assert store.load_consumer_rows("loans") == [("k", {"of": "loans"})]
    assert store.load_consumer_rows("sites") == [
        ("k", {"of": "sites"}),
        ("only-sites", {"of": "sites"}),
    ]
    store.commit_batch(Batch(now_ms=T0 + 1, consumer_rows=rows(("loans", "k", None))))
    assert store.load_consumer_rows("loans") == []
    assert [key for key, _ in store.load_consumer_rows("sites")] == ["k", "only-sites"]
    store.commit_batch(Batch(now_ms=T0 + 2, consumer_rows=rows(("sites", "k", {"v": 2}))))
    assert store.load_consumer_rows("loans") == []
    assert store.load_consumer_rows("sites")[0] == ("k", {"v": 2})


def test_a_failed_batch_writes_none_of_its_consumer_rows(store: Store) -> None:
    store.put_webhook(HOOK)
    before = rows(("loans", "L-0", {"v": 0}), ("loans", "L-9", {"v": 9}))
    store.commit_batch(Batch(now_ms=T0, consumer_rows=before))
    batch = Batch(
        now_ms=T0 + 1,
        readings=[fix(i, HOME) for i in range(20)],
        alerts=[alert(1)],
        devices=[DeviceState("trk-1")],
        loans=[LoanState("L-1")],
        consumer_rows=[
            ConsumerRow("loans", "L-0", None),
            ConsumerRow("loans", "L-9", {"v": 10}),
            ConsumerRow("loans", "L-1", {"v": 1}),
            ConsumerRow("loans", None, {"v": -1}),  # type: ignore[arg-type]  # a NULL key fails
        ],
    )
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        store.commit_batch(batch)
    assert store.load_consumer_rows("loans") == [("L-0", {"v": 0}), ("L-9", {"v": 9})]
    assert store.count_telemetry() == 0
    assert store.get_alert("alert-0001") is None
    assert store.outbox_pending() == 0
    assert store.load_checkpoint() == ([], [])


def test_a_batch_failing_before_its_consumer_rows_writes_none(store: Store) -> None:
    bad_state = DeviceState(None)  # type: ignore[arg-type]  # a NULL key fails the checkpoint
    batch = Batch(
        now_ms=T0,
        devices=[DeviceState("trk-1"), bad_state],
        consumer_rows=rows(("loans", "L-1", {"v": 1})),
    )
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        store.commit_batch(batch)
    assert store.load_consumer_rows("loans") == []
    store.commit_batch(Batch(now_ms=T0, consumer_rows=rows(("loans", "L-1", {"v": 1}))))
    assert store.load_consumer_rows("loans") == [("L-1", {"v": 1})]  # the store still works


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_schema_version_4_keeps_existing_data(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store: SqliteStore | PostgresStore
    if backend == "sqlite":
        store = SqliteStore(tmp_path / "v3.db")
    else:
        store = PostgresStore(PG_DSN, schema=request.getfixturevalue("pg_schema"), max_size=2)
    try:
        store.migrate(target=3)
        assert versions(store) == [1, 2, 3]
        store.put_webhook(HOOK)
        device = DeviceState("trk-1", event_ms=T0)
        loan_state = LoanState("L-1")
        store.commit_batch(
            Batch(
                now_ms=T0,
                readings=[fix(i, HOME) for i in range(5)],
                alerts=[alert(1)],
                devices=[device],
                loans=[loan_state],
            )
        )
        with pytest.raises((sqlite3.OperationalError, psycopg.errors.UndefinedTable)):
            store.load_consumer_rows("loans")  # no table before version 4

        store.migrate(target=4)
        assert versions(store) == [1, 2, 3, 4]
        assert store.count_telemetry() == 5
        assert store.list_webhooks() == [HOOK]
        assert store._query("SELECT id FROM alerts") == [("alert-0001",)]  # no case before v6
        assert store.outbox_pending() == 1
        assert store.load_checkpoint() == ([device], [loan_state])
        assert store.load_consumer_rows("loans") == []

        store.commit_batch(Batch(now_ms=T0 + 1, consumer_rows=rows(("loans", "L-1", {"v": 1}))))
        store.migrate(target=4)  # idempotent
        assert versions(store) == [1, 2, 3, 4]
        assert store.load_consumer_rows("loans") == [("L-1", {"v": 1})]
        assert store.load_checkpoint() == ([device], [loan_state])
    finally:
        store.close()
