"""The consumer stage in the live engine: its state and alerts commit with the batch, and a
restart resumes them (a real SQLite store; the engine without an MQTT source)."""

from __future__ import annotations

from pathlib import Path

from alerts.model import AlertType
from engine.core.loan import put_conflicts
from engine.runtime.live import Engine
from engine.store.factory import open_store
from engine.store.port import AlertQuery, Store
from lending.consumer import LOANS, LendingConsumer
from lending.model import parse_loan
from tests.factories import VIN

NOW_MS = 1_796_000_000_000


def store_at(path: Path) -> Store:
    store = open_store(f"sqlite:///{path}")
    store.migrate()
    return store


def engine_on(store: Store) -> Engine:
    engine = Engine(store, None, consumer=LendingConsumer(), clock=lambda: NOW_MS / 1000)
    engine.load()
    return engine


def tier_changes(store: Store) -> list[dict[str, object]]:
    page = store.list_alerts(AlertQuery(type=AlertType.RISK_TIER_CHANGED.value))
    return [a.alert for a in page.items]


def test_a_put_conflict_stored_before_a_crash_still_reaches_the_consumer(
    tmp_path: Path,
) -> None:
    store = store_at(tmp_path / "pw.db")
    first = parse_loan("L-1", {"vin": VIN, "device_ids": ["trk-1"]})
    second = parse_loan("L-2", {"vin": VIN, "device_ids": ["trk-2"]})
    store.put_loan(first, [], NOW_MS)
    conflicts = put_conflicts([first], [second], NOW_MS, NOW_MS)
    assert [a.type for a in conflicts] == [AlertType.VIN_CONFLICT]
    # the API stored the loan with its alert; the engine died before its next batch
    store.put_loan(second, conflicts, NOW_MS)

    engine = engine_on(store)
    engine.process([])
    changes = tier_changes(store)
    assert [(c["loan_id"], c["details"]["to"]) for c in changes] == [("L-2", "high")]  # type: ignore[index]
    assert changes[0]["details"]["reasons"][0]["alert_id"] == conflicts[0].id  # type: ignore[index]
    rows = dict(store.load_consumer_rows(LOANS))
    assert set(rows) == {"L-2"}  # the book committed with the batch

    again = engine_on(store)  # a restart: the conflict is in the book, not fed twice
    assert again.process([]) == []
    assert len(tier_changes(store)) == 1
    book = again.stage.consumer.books["L-2"]  # type: ignore[union-attr]
    assert book.risk.tier_name == "high"
    store.close()


def test_a_put_through_the_engine_feeds_the_consumer_once(tmp_path: Path) -> None:
    store = store_at(tmp_path / "pw.db")
    first = parse_loan("L-1", {"vin": VIN, "device_ids": ["trk-1"]})
    second = parse_loan("L-2", {"vin": VIN, "device_ids": ["trk-2"]})
    store.put_loan(first, [], NOW_MS)
    engine = engine_on(store)
    conflicts = put_conflicts([first], [second], NOW_MS, NOW_MS)
    store.put_loan(second, conflicts, NOW_MS)
    engine.put_loan(second, conflicts)  # what the API does after storing
    engine.turn()
    raised = engine.process([])
    assert raised == []
    assert [c["loan_id"] for c in tier_changes(store)] == ["L-2"]
    store.close()
