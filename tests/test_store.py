"""Both stores, one suite: SQLite in tmp_path and PostgreSQL in a throwaway schema."""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

import orjson
import psycopg
import pytest
from shapely import Polygon

from alerts.model import AlertType
from alerts.outbox import Attempt, DeliveryState, Webhook
from devices.readings import GpsFix, Reject, RejectReason, StatusReport, Vibration
from engine.core.state import DeviceState, DwellTimer, LoanState, PairState, Position
from engine.store.factory import open_store, redact_url, sqlite_path
from engine.store.port import AlertQuery, Batch, Store, StoreConfigError, StoreError
from engine.store.postgres_store import PostgresStore
from engine.store.rows import CursorError
from engine.store.sqlite_store import SqliteStore
from geofence.fence import parse_fence
from lending.model import LoanStatus
from tests.conftest import PG_DSN, OpenStore
from tests.factories import HOME, OTHER_VIN, T0, VIN, alert, circle, fix, loan, status, vib

DAY_MS = 86_400_000


def delivered(store: Store, delivery_id: int, at_ms: int, http_status: int) -> None:
    """Record a 2xx."""
    store.record_attempts(
        [Attempt(delivery_id, at_ms, DeliveryState.DELIVERED, at_ms, http_status)]
    )


def failed(
    store: Store,
    delivery_id: int,
    at_ms: int,
    error: str,
    http_status: int | None,
    retry_at: int | None,
) -> None:
    """Record a failure: retried at `retry_at`, or dead when None."""
    state = DeliveryState.DEAD if retry_at is None else DeliveryState.PENDING
    attempt = Attempt(delivery_id, at_ms, state, retry_at or at_ms, http_status, error)
    store.record_attempts([attempt])


def square(fence_id: str, kind: str = "risk_site") -> object:
    lat, lon = HOME
    ring = [[lon, lat], [lon + 0.01, lat], [lon + 0.01, lat + 0.01], [lon, lat + 0.01], [lon, lat]]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"name": fence_id, "kind": kind, "category": "pawnshop", "color": "red"},
    }


HOOK = Webhook("hook-a", "http://127.0.0.1:9/a", "s3cret")


def test_fences_round_trip_and_paging(store: Store) -> None:
    fences = [circle(f"f-{i:02d}", HOME, 100 + i) for i in range(0, 25, 2)]
    fences += [parse_fence(f"f-{i:02d}", square(f"f-{i:02d}")) for i in range(1, 25, 2)]
    store.put_fences(fences)
    by_id = {f.fence_id: f for f in fences}
    got = store.get_fence("f-03")
    assert got == by_id["f-03"]
    assert got is not None
    assert got.feature["properties"]["color"] == "red"  # type: ignore[index]  # JSON object
    assert isinstance(got.geometry, Polygon)
    assert store.get_fence("nope") is None

    seen: list[str] = []
    cursor = None
    for _ in range(3):
        page = store.list_fences(cursor, 10)
        seen += [f.fence_id for f in page.items]
        cursor = page.next
    assert cursor is None
    assert seen == sorted(by_id)
    assert store.all_fences() == [by_id[k] for k in sorted(by_id)]

    store.put_fences([circle("f-00", HOME, 999, kind="risk_site", category="impound")])
    replaced = store.get_fence("f-00")
    assert replaced is not None
    assert replaced.radius_m == 999
    assert replaced.category == "impound"
    assert store.delete_fence("f-00")
    assert not store.delete_fence("f-00")
    assert len(store.all_fences()) == 24
    with pytest.raises(CursorError):
        store.list_fences("bm90IGEgY3Vyc29y", 10)
    with pytest.raises(CursorError):  # a cursor of another list
        store.list_loans(store.list_fences(None, 1).next, 1)


def test_loans_round_trip_paging_and_vin(store: Store) -> None:
    loans = [loan(f"L-{i}", devices=(f"trk-{i}",)) for i in range(5)]
    loans.append(loan("L-9", devices=("trk-9a", "trk-9b"), vin=OTHER_VIN))
    for item in loans:
        store.put_loan(item, [], T0)
    assert store.get_loan("L-9") == loans[-1]
    assert store.get_loan("L-404") is None
    page = store.list_loans(None, 4)
    assert [x.loan_id for x in page.items] == ["L-0", "L-1", "L-2", "L-3"]
    assert page.next is not None
    rest = store.list_loans(page.next, 4)
    assert [x.loan_id for x in rest.items] == ["L-4", "L-9"]
    assert rest.next is None
    assert [x.loan_id for x in store.loans_with_vin(VIN)] == [f"L-{i}" for i in range(5)]
    closed = loan("L-9", devices=("trk-9a",), vin=OTHER_VIN, status=LoanStatus.CLOSED)
    store.put_loan(closed, [], T0 + 1)
    assert store.loans_with_vin(OTHER_VIN) == [closed]
    assert len(store.all_loans()) == 6


def test_webhooks_round_trip(store: Store) -> None:
    only = Webhook("hook-b", "https://example.test/b", "k", frozenset({"shock", "tamper"}))
    store.put_webhook(only)
    store.put_webhook(HOOK)
    assert store.list_webhooks() == [HOOK, only]
    assert store.get_webhook("hook-b") == only
    moved = Webhook("hook-b", "https://example.test/moved", "k2", None)
    store.put_webhook(moved)
    assert store.get_webhook("hook-b") == moved
    assert store.delete_webhook("hook-b")
    assert not store.delete_webhook("hook-b")
    assert store.get_webhook("hook-b") is None


def test_commit_batch_writes_every_part(store: Store) -> None:
    store.put_webhook(HOOK)
    device = DeviceState("trk-1", event_ms=T0, fix=Position(T0, *HOME), inside=frozenset({"home"}))
    batch = Batch(
        now_ms=T0 + 5000,
        readings=[
            fix(0, HOME, speed_kmh=12.5, sats=9, ignition=True, seq=7),
            vib(1, 3.2, duration_ms=40),
            status(2, ext_power=False, battery_v=3.7, tamper=True, vin=VIN),
        ],
        rejects=[Reject("telematics/trk-1/gps", RejectReason.NOT_JSON, "not JSON", b"\xff{")],
        alerts=[alert(1)],
        devices=[device],
        loans=[LoanState("L-1", fixes=(("trk-1", Position(T0, *HOME)),))],
    )
    store.commit_batch(batch)
    assert store.count_telemetry() == 3
    assert store.count_telemetry("trk-1") == 3
    assert store.count_telemetry("trk-2") == 0
    assert [(r.reject.raw, r.received_ms) for r in store.list_rejects(None, 10).items] == [
        (b"\xff{", batch.now_ms)
    ]
    stored = store.get_alert("alert-0001")
    assert stored is not None
    assert stored.alert == alert(1).to_json()
    assert store.outbox_pending() == 1
    devices, loans = store.load_checkpoint()
    assert devices == [device]
    assert loans == batch.loans


def test_commit_batch_is_all_or_nothing(store: Store) -> None:
    store.put_webhook(HOOK)
    bad_state = DeviceState(None)  # type: ignore[arg-type]  # a NULL key fails the checkpoint
    batch = Batch(
        now_ms=T0,
        readings=[fix(i, HOME) for i in range(50)],
        rejects=[Reject("t/x", RejectReason.BAD_TOPIC, "bad", b"x")],
        alerts=[alert(1)],
        devices=[DeviceState("trk-1"), bad_state],
    )
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        store.commit_batch(batch)
    assert store.count_telemetry() == 0
    assert store.list_rejects(None, 10).items == []
    assert store.get_alert("alert-0001") is None
    assert store.outbox_pending() == 0
    assert store.load_checkpoint() == ([], [])
    store.commit_batch(Batch(now_ms=T0, alerts=[alert(1)]))  # the store still works
    assert store.outbox_pending() == 1


def test_alert_ids_are_deduplicated_across_batches(store: Store) -> None:
    store.put_webhook(HOOK)
    store.put_webhook(Webhook("hook-shock", "http://127.0.0.1:9/s", "k", frozenset({"shock"})))
    store.commit_batch(Batch(now_ms=T0, alerts=[alert(1), alert(1)]))
    assert store.outbox_pending() == 1  # hook-shock does not want zone.left
    replayed = Batch(now_ms=T0 + 1000, alerts=[alert(1), alert(2, type_=AlertType.SHOCK)])
    store.commit_batch(replayed)
    assert store.outbox_pending() == 3  # alert 2 to both hooks; alert 1 not again
    assert [d.alert_id for d in store.due_deliveries("hook-a", T0 + 1000, 10)] == ["alert-0001"]
    shock = store.due_deliveries("hook-shock", T0 + 1000, 10)
    assert [(d.alert_id, d.order_key, d.next_at_ms) for d in shock] == [
        ("alert-0002", "L-1", T0 + 1000)
    ]
    assert orjson.loads(shock[0].body) == alert(2, type_=AlertType.SHOCK).to_json()


def test_head_of_line_order_per_loan(store: Store) -> None:
    store.put_webhook(HOOK)
    store.commit_batch(Batch(now_ms=T0, alerts=[alert(1), alert(2)]))
    store.commit_batch(Batch(now_ms=T0, alerts=[alert(3, loan_id="L-2", device="trk-2"), alert(4)]))
    # No loan: the device orders; neither: the alert is its own queue.
    store.commit_batch(
        Batch(now_ms=T0, alerts=[alert(5, loan_id=None), alert(6, loan_id=None, device=None)])
    )
    due = store.due_deliveries("hook-a", T0, 10)
    assert [(d.alert_id, d.order_key) for d in due] == [
        ("alert-0001", "L-1"),
        ("alert-0003", "L-2"),
        ("alert-0005", "trk-1"),
        ("alert-0006", "alert-0006"),
    ]
    assert [d.alert_id for d in store.due_deliveries("hook-a", T0, 2)] == [
        "alert-0001",
        "alert-0003",
    ]
    assert store.due_deliveries("hook-a", T0 - 1, 10) == []  # not due yet
    assert store.due_deliveries("hook-other", T0, 10) == []

    first = due[0]
    delivered(store, first.delivery_id, T0 + 10, 204)
    assert [d.alert_id for d in store.due_deliveries("hook-a", T0 + 10, 10)][:2] == [
        "alert-0002",
        "alert-0003",
    ]
    # A retry scheduled later blocks its loan's queue, not the others.
    second = store.due_deliveries("hook-a", T0 + 10, 1)[0]
    failed(store, second.delivery_id, T0 + 20, "HTTP 500", 500, T0 + 5000)
    assert [d.alert_id for d in store.due_deliveries("hook-a", T0 + 20, 10)] == [
        "alert-0003",
        "alert-0005",
        "alert-0006",
    ]
    retried = store.due_deliveries("hook-a", T0 + 5000, 10)[0]
    assert (retried.alert_id, retried.attempts, retried.last_status) == ("alert-0002", 1, 500)
    assert retried.last_error == "HTTP 500"
    delivered(store, retried.delivery_id, T0 + 5001, 200)
    assert store.due_deliveries("hook-a", T0 + 5001, 10)[0].alert_id == "alert-0003"
    assert [d.alert_id for d in store.due_deliveries("hook-a", T0 + 5001, 10)][1] == "alert-0004"


def test_dead_deliveries_and_redelivery(store: Store) -> None:
    store.put_webhook(HOOK)
    store.commit_batch(Batch(now_ms=T0, alerts=[alert(1), alert(2), alert(3)]))
    head = store.due_deliveries("hook-a", T0, 10)[0]
    failed(store, head.delivery_id, T0 + 1, "timeout", None, T0 + 2)
    failed(store, head.delivery_id, T0 + 2, "HTTP 503", 503, None)
    assert store.outbox_pending() == 2
    # A dead head no longer blocks its queue.
    assert [d.alert_id for d in store.due_deliveries("hook-a", T0 + 3, 10)] == ["alert-0002"]
    nxt = store.due_deliveries("hook-a", T0 + 3, 10)[0]
    failed(store, nxt.delivery_id, T0 + 4, "HTTP 410", 410, None)
    dead = store.list_dead(None, 1)
    assert [(d.alert_id, d.state, d.attempts) for d in dead.items] == [
        ("alert-0002", DeliveryState.DEAD, 1)
    ]
    assert dead.next is not None
    older = store.list_dead(dead.next, 1)
    assert [(d.alert_id, d.attempts, d.last_status) for d in older.items] == [
        ("alert-0001", 2, 503)
    ]
    assert older.next is None
    delivered(store, head.delivery_id, T0 + 5, 200)  # not pending: ignored
    assert store.list_dead(None, 10).items[1].state is DeliveryState.DEAD

    assert store.redeliver(head.delivery_id, T0 + 100)
    assert not store.redeliver(head.delivery_id, T0 + 100)
    assert not store.redeliver(10**9, T0 + 100)
    # Redelivered, it is the oldest of its queue again, due now.
    due = store.due_deliveries("hook-a", T0 + 100, 10)
    assert [(d.alert_id, d.state, d.next_at_ms) for d in due] == [
        ("alert-0001", DeliveryState.PENDING, T0 + 100)
    ]
    # ... with a fresh retry window: the dispatcher measures the maximum age from created_ms
    assert (due[0].attempts, due[0].created_ms) == (0, T0 + 100)
    assert [d.alert_id for d in store.list_dead(None, 10).items] == ["alert-0002"]
    assert store.outbox_pending() == 2


def test_outbox_pending_and_delete_webhook(store: Store) -> None:
    store.put_webhook(HOOK)
    store.put_webhook(Webhook("hook-b", "http://127.0.0.1:9/b", "k"))
    store.commit_batch(Batch(now_ms=T0, alerts=[alert(i) for i in range(1, 6)]))
    assert store.outbox_pending() == 10
    store.put_webhook(Webhook("hook-b", "http://127.0.0.1:9/b2", "k"))  # an upsert keeps them
    assert store.outbox_pending() == 10
    assert store.delete_webhook("hook-b")
    assert store.outbox_pending() == 5
    assert store.due_deliveries("hook-b", T0, 10) == []


def test_put_loan_writes_its_alerts_and_deliveries(store: Store) -> None:
    store.put_webhook(HOOK)
    conflict = alert(7, type_=AlertType.VIN_CONFLICT, device=None)
    store.put_loan(loan("L-1"), [conflict], T0)
    store.put_loan(loan("L-1"), [conflict], T0 + 1)  # the same alert again: no new delivery
    assert store.outbox_pending() == 1
    assert [d.order_key for d in store.due_deliveries("hook-a", T0, 10)] == ["L-1"]
    stored = store.get_alert(conflict.id)
    assert stored is not None
    assert stored.alert["type"] == "pledge.vin_conflict"


def test_list_alerts_filters_paging_and_ack(store: Store) -> None:
    alerts = [alert(i, loan_id=f"L-{i % 2}", device=f"trk-{i % 3}") for i in range(10)]
    alerts += [alert(100, ts_ms=T0 + 5000), alert(101, ts_ms=T0 + 5000)]  # a tie on ts
    alerts.append(alert(200, type_=AlertType.SHOCK, ts_ms=T0 - 1))
    store.commit_batch(Batch(now_ms=T0, alerts=alerts))

    def ids(q: AlertQuery) -> list[str]:
        out: list[str] = []
        while True:
            page = store.list_alerts(q)
            out += [str(a.alert["id"]) for a in page.items]
            if page.next is None:
                return out
            q = AlertQuery(q.type, q.loan_id, q.device_id, q.since_ms, q.limit, page.next)

    everything = ids(AlertQuery(limit=100))
    assert everything[:4] == ["alert-0009", "alert-0008", "alert-0007", "alert-0006"]
    assert everything[4:7] == ["alert-0101", "alert-0100", "alert-0005"]
    assert everything[-1] == "alert-0200"
    assert ids(AlertQuery(limit=3)) == everything
    assert ids(AlertQuery(type="shock", limit=2)) == ["alert-0200"]
    assert ids(AlertQuery(loan_id="L-1", limit=2)) == [
        f"alert-{i:04d}" for i in (9, 7, 101, 100, 5, 3, 1, 200)
    ]
    assert ids(AlertQuery(device_id="trk-0", limit=2)) == [f"alert-{i:04d}" for i in (9, 6, 3, 0)]
    assert ids(AlertQuery(since_ms=T0 + 7000, limit=2)) == [
        "alert-0009",
        "alert-0008",
        "alert-0007",
    ]
    assert ids(AlertQuery(type="zone.left", loan_id="L-0", device_id="trk-2", limit=5)) == [
        "alert-0008",
        "alert-0002",
    ]

    # Stable across inserts: newer alerts do not shift the next page.
    first = store.list_alerts(AlertQuery(limit=4))
    store.commit_batch(Batch(now_ms=T0, alerts=[alert(50), alert(51)]))
    second = store.list_alerts(AlertQuery(limit=4, cursor=first.next))
    assert [a.alert["id"] for a in second.items] == everything[4:8]

    assert store.ack_alert("alert-0003", "called the borrower", T0 + 99)
    assert not store.ack_alert("alert-9999", None, T0)
    acked = store.get_alert("alert-0003")
    assert acked is not None
    assert (acked.acked_ms, acked.ack_note) == (T0 + 99, "called the borrower")
    assert store.get_alert("alert-9999") is None
    with pytest.raises(CursorError):
        store.list_alerts(AlertQuery(cursor="garbage!"))
    with pytest.raises(ValueError, match="at least 1"):
        store.list_alerts(AlertQuery(limit=0))


def test_rejects_keep_raw_bytes(store: Store) -> None:
    rejects = [
        Reject("telematics/trk-1/gps", RejectReason.NOT_JSON, "not JSON", b"\x00\xff\xfe"),
        Reject(
            "telematics/trk-1/gps",
            RejectReason.OUT_OF_RANGE,
            "lat: 91 outside [-90, 90]",
            b'[{"lat": 91}]',
            "trk-1",
            0,
        ),
        # Hostile text: NUL and a lone surrogate must not break the batch.
        Reject("bad\x00topic/\ud800", RejectReason.BAD_TOPIC, "device id \x00", b"{}"),
    ]
    store.commit_batch(Batch(now_ms=T0, rejects=rejects, readings=[fix(0, HOME)]))
    page = store.list_rejects(None, 2)
    assert page.items[0].reject.topic == "bad\\x00topic/\\ud800"
    assert page.items[0].reject.detail == "device id \\x00"
    assert page.items[1].reject == rejects[1]
    assert page.items[1].received_ms == T0
    assert page.next is not None
    assert [r.reject for r in store.list_rejects(page.next, 2).items] == [rejects[0]]
    assert store.count_telemetry() == 1


def test_checkpoint_survives_reopen(open_store: OpenStore) -> None:
    store = open_store()
    dev = DeviceState(
        "trk-1",
        event_ms=T0,
        arrived_ms=T0 + 5,
        last_ts=(T0, T0 - 5, -1),
        recent=(T0 * 3,),
        fix=Position(T0, *HOME),
        inside=frozenset({"home", "lot"}),
        dwell=(DwellTimer("lot", T0 - 1000, T0 + 599_000),),
        ignition=False,
        parked=Position(T0 - 1000, *HOME),
        seq=41,
    )
    loan_state = LoanState(
        "L-1",
        fixes=(("trk-1", Position(T0, *HOME)), ("trk-2", Position(T0, *HOME))),
        pairs=(PairState("trk-1", "trk-2", streak=1, alerted=False),),
    )
    store.commit_batch(Batch(now_ms=T0, devices=[DeviceState("trk-1")], loans=[loan_state]))
    store.commit_batch(Batch(now_ms=T0 + 1, devices=[DeviceState("trk-2"), dev]))
    store.close()

    reopened = open_store()  # migrates again: a no-op
    devices, loans = reopened.load_checkpoint()
    assert devices == [dev, DeviceState("trk-2")]
    assert loans == [loan_state]
    # one device alone, as the distributed runtime's API reads it
    assert reopened.get_device_state("trk-1") == dev
    assert reopened.get_device_state("trk-9") is None
    # and every last fix, for its searches: a device without a fix has no position
    assert reopened.device_positions() == [("trk-1", *HOME)]
    moved = DeviceState("trk-3", fix=Position(T0, HOME[0] + 0.01, HOME[1] - 0.02))
    reopened.commit_batch(Batch(now_ms=T0 + 2, devices=[moved], evicted=["trk-1"]))
    assert reopened.device_positions() == [("trk-3", HOME[0] + 0.01, HOME[1] - 0.02)]


def test_evicted_devices_leave_the_checkpoint(open_store: OpenStore) -> None:
    store = open_store()
    kept, gone, back = DeviceState("kept", event_ms=T0), DeviceState("gone"), DeviceState("back")
    store.commit_batch(Batch(now_ms=T0, devices=[kept, gone, back, DeviceState("other")]))
    fresh = DeviceState("back", event_ms=T0 + 9)  # forgotten and seen again in one batch
    store.commit_batch(
        Batch(now_ms=T0 + 1, devices=[fresh], evicted=["gone", "back", "never-stored"])
    )
    assert [d.device_id for d in store.load_checkpoint()[0]] == ["back", "kept", "other"]
    store.commit_batch(Batch(now_ms=T0 + 2, evicted=["other"]))
    store.close()

    devices, _ = open_store().load_checkpoint()
    assert devices == [fresh, kept]


def test_migrate_twice_is_a_no_op(store: Store) -> None:
    store.put_webhook(HOOK)
    store.migrate()
    store.migrate()
    assert store.list_webhooks() == [HOOK]
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
    else:
        assert isinstance(store, PostgresStore)  # on its own server (TimescaleDB's, perhaps)
        versions = store._query("SELECT version FROM schema_migrations ORDER BY version")
    assert versions == [(1,), (2,), (3,), (4,), (5,), (6,), (7,)]


def test_telemetry_copy_of_many_readings(store: Store) -> None:
    readings: list[GpsFix | Vibration | StatusReport] = [
        GpsFix(f"trk-{i % 100}", T0 + i * 100, HOME[0], HOME[1], speed_kmh=i % 90, sats=i % 12)
        for i in range(9_000)
    ]
    readings += [Vibration(f"trk-{i % 100}", T0 + i, 0.1 * (i % 30)) for i in range(500)]
    readings += [
        StatusReport(f"trk-{i % 100}", T0 + i, battery_v=12, tamper=False) for i in range(500)
    ]
    # Integers where floats are expected (JSON `31` decodes to an int) and extreme values.
    readings.append(GpsFix("trk-x", T0, 31, 121, hdop=1e300, seq=2**63 - 1, odometer_km=0))
    store.commit_batch(Batch(now_ms=T0, readings=readings))
    assert store.count_telemetry() == 10_001
    assert store.count_telemetry("trk-7") == 100


def test_threads_share_a_store(store: Store) -> None:
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for j in range(10):
                n = k * 100 + j
                store.commit_batch(
                    Batch(now_ms=T0, readings=[fix(n, HOME, device=f"trk-{k}")], alerts=[alert(n)])
                )
                store.list_alerts(AlertQuery(limit=5))
        except BaseException as exc:  # noqa: BLE001  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count_telemetry() == 40


def _default_rows(schema: str) -> int:
    with psycopg.connect(PG_DSN) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {schema}.telemetry_default"  # noqa: S608  # test schema
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.postgres
def test_postgres_day_partitions_and_retention(pg_schema: str) -> None:
    store = PostgresStore(PG_DSN, schema=pg_schema, max_size=2)
    try:
        store.migrate()
        assert store.layout() == "partitioned"  # no timescaledb on this machine
        day0 = T0 - T0 % DAY_MS
        readings = [fix(0, HOME)]
        readings += [GpsFix("trk-1", day0 + d * DAY_MS + 1, *HOME) for d in (1, 2)]
        # No DDL on the commit path: rows of days without a partition wait in the default.
        store.commit_batch(Batch(now_ms=T0, readings=readings))
        assert store.partitions() == []
        assert _default_rows(pg_schema) == 3
        # Maintenance makes yesterday .. today + 2 ahead, moving the waiting rows.
        store.maintain(T0)
        names = [f"telemetry_p2026{d}" for d in ("1129", "1130", "1201", "1202")]
        assert store.partitions() == names
        assert _default_rows(pg_schema) == 0
        assert store.count_telemetry() == 3
        store.maintain(T0)  # nothing left to do
        assert store.partitions() == names
        assert store.drop_partitions_before(day0) == 1
        assert store.partitions() == names[1:]
        assert store.enforce_retention(day0 + 401 * DAY_MS) == 1  # keeps 400 days
        assert store.partitions() == names[2:]
        assert store.count_telemetry() == 2
        # A late reading of a day within retention waits in the default partition, then
        # gets a partition of its own; days outside the window (1970, 2090) never do.
        late = GpsFix("trk-1", day0 - 10 * DAY_MS, *HOME)
        odd = [GpsFix("trk-1", 86_400_000 + 5, *HOME), GpsFix("trk-1", 3_786_912_000_000, *HOME)]
        store.commit_batch(Batch(now_ms=T0, readings=[late, *odd]))
        assert _default_rows(pg_schema) == 3
        store.maintain(T0)  # (and yesterday and today again: now is T0 here)
        assert store.partitions() == ["telemetry_p20261120", *names]
        assert _default_rows(pg_schema) == 2
        assert store.count_telemetry() == 5
        # Retention deletes the default partition's expired rows too (1970 here).
        assert store.enforce_retention(T0) == 1
        assert _default_rows(pg_schema) == 1
        assert store.count_telemetry() == 4
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_unreachable_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL"):
        PostgresStore("postgresql://postgres@127.0.0.1:9/test", timeout_s=0.5)


def test_sqlite_locked_database_is_a_store_error(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "pw.db", busy_timeout_s=0.1)
    store.migrate()
    other = sqlite3.connect(tmp_path / "pw.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="locked"):
            store.commit_batch(Batch(now_ms=T0, readings=[fix(0, HOME)]))
        assert store.count_telemetry() == 0  # readers are not blocked by a writer
        other.execute("ROLLBACK")
        store.commit_batch(Batch(now_ms=T0, readings=[fix(0, HOME)]))
        assert store.count_telemetry() == 1
    finally:
        other.close()
        store.close()


def test_sqlite_checkpoints_the_wal_in_the_background(tmp_path: Path) -> None:
    """Commits never checkpoint (a stall in the engine's batch); a thread of the store does."""
    store = SqliteStore(tmp_path / "pw.db")
    store.migrate()
    try:
        store.commit_batch(Batch(now_ms=T0, readings=[fix(i, HOME) for i in range(2000)]))
        # The main file alone (no WAL beside it) holds the rows once they are checkpointed.
        deadline = time.monotonic() + 10
        copied = 0
        while copied < 2000 and time.monotonic() < deadline:
            time.sleep(0.2)
            copy = tmp_path / "copy.db"
            copy.write_bytes((tmp_path / "pw.db").read_bytes())
            with closing(sqlite3.connect(copy)) as conn:
                try:
                    copied = conn.execute("SELECT count(*) FROM telemetry").fetchone()[0]
                except sqlite3.OperationalError:  # not even the schema is checkpointed yet
                    copied = 0
        assert copied == 2000
    finally:
        store.close()
    assert not store._checkpointer.is_alive()


def test_open_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert sqlite_path("sqlite:///data/pw.db") == Path("data/pw.db")
    assert sqlite_path("sqlite:////var/lib/pw.db") == Path("/var/lib/pw.db")
    store = open_store("sqlite:///data/pw.db")
    try:
        assert isinstance(store, SqliteStore)
        store.migrate()
        assert (tmp_path / "data" / "pw.db").exists()
    finally:
        store.close()
    for bad in ("sqlite://pw.db", "sqlite:///", "sqlite:///:memory:"):
        with pytest.raises(StoreConfigError, match="SQLite URL"):
            open_store(bad)
    with pytest.raises(StoreConfigError, match=r"unsupported database URL 'mysql://u:\*\*\*@h/db'"):
        open_store("mysql://u:pw@h/db")


@pytest.mark.postgres
def test_postgres_url_names_its_schema(pg_schema: str) -> None:
    store = open_store(f"{PG_DSN}?options=-csearch_path%3D{pg_schema}")
    try:
        assert isinstance(store, PostgresStore)
        assert store.schema == pg_schema
        store.migrate()
        store.put_webhook(HOOK)
        with psycopg.connect(PG_DSN) as conn:
            rows = conn.execute(
                f"SELECT id FROM {pg_schema}.webhooks"  # noqa: S608  # test schema
            ).fetchall()
        assert rows == [("hook-a",)]
    finally:
        store.close()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_retention_drops_old_telemetry(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        store: Store = SqliteStore(tmp_path / "r.db", retain_days=10)
    else:
        store = PostgresStore(PG_DSN, schema=request.getfixturevalue("pg_schema"), retain_days=10)
    store.migrate()
    readings = [GpsFix("trk-r", T0 - d * DAY_MS, 31.2, 121.4) for d in (0, 1, 5, 30, 31)]
    store.commit_batch(Batch(T0, readings=readings))
    assert store.count_telemetry("trk-r") == 5
    assert store.enforce_retention(T0) >= 1  # rows (SQLite) or day partitions (PostgreSQL)
    assert store.count_telemetry("trk-r") == 3
    assert store.enforce_retention(T0) == 0
    store.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/pw", "postgresql://app:***@db:5432/pw"),
        ("postgresql://db/pw?user=app&password=s3cret", "postgresql://db/pw?user=app&password=***"),
        (
            "mqtts://engine:p%40ss@broker:8883?cafile=/ca.pem",
            "mqtts://engine:***@broker:8883?cafile=/ca.pem",
        ),
        ("sqlite:///data/pw.db", "sqlite:///data/pw.db"),
        ("mqtt://broker", "mqtt://broker"),
    ],
)
def test_urls_are_shown_without_their_secrets(url: str, shown: str) -> None:
    assert redact_url(url) == shown
