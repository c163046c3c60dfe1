"""Issue 9, hardening of the stores: exact duplicates, DDL that never stalls ingestion on
PostgreSQL, the engine lease and delivery claims. Real SQLite files and a real PostgreSQL."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import orjson
import psycopg
import pytest

from alerts.outbox import Attempt, DeliveryState, Webhook
from devices.mqtt_source import Message
from devices.readings import GpsFix, StatusReport
from engine.runtime.live import Engine
from engine.store.port import Batch, LeaseError, Store, StoreError
from engine.store.postgres_store import PostgresStore
from engine.store.sqlite_store import SqliteStore
from tests.conftest import PG_DSN, OpenStore
from tests.factories import HOME, T0, alert

DAY_MS = 86_400_000
HOOK = Webhook("hook-a", "http://127.0.0.1:9/a", "s3cret")


def readings(n: int, start_ms: int = T0, device: str = "trk-1") -> list[GpsFix]:
    return [GpsFix(device, start_ms + i * 1000, HOME[0], HOME[1], seq=i) for i in range(n)]


# -- exact duplicates


def test_the_same_readings_twice_are_stored_once(store: Store) -> None:
    first = store.commit_batch(Batch(T0, readings=readings(40)))
    assert dict(first.duplicates) == {}
    again = store.commit_batch(Batch(T0, readings=readings(40)))
    assert dict(again.duplicates) == {"gps": 40}
    assert store.count_telemetry() == 40
    # Half old, half new, a status of the same ts as a fix (another stream: not a
    # duplicate), and one key twice within the batch.
    mixed = [*readings(40, T0 + 20_000), StatusReport("trk-1", T0, battery_v=12.0)]
    mixed.append(mixed[-2])
    result = store.commit_batch(Batch(T0, readings=mixed))
    assert dict(result.duplicates) == {"gps": 21}
    assert store.count_telemetry() == 61  # 20 new fixes and the status
    # A duplicate in a batch does not stop the rest of it.
    store.put_webhook(HOOK)
    store.commit_batch(Batch(T0, readings=readings(3), alerts=[alert(1)]))
    assert store.outbox_pending() == 1


def arrival(payload: object, mid: int) -> Message:
    raw = orjson.dumps(payload)
    return Message("telematics/trk-1/gps", raw, 1, mid, int(time.time() * 1000), 1)


def counted(engine: Engine, name: str) -> int:
    line = f'{name}{{stream="gps"}} '
    values = [row.removeprefix(line) for row in engine.metrics() if row.startswith(line)]
    return int(values[0]) if values else 0


def test_a_redelivered_catch_up_upload_counts_as_duplicates(open_store: OpenStore) -> None:
    """40 readings published twice: the in-memory window (32 keys per device) misses the
    oldest of them, the store's unique key does not. Then the same after a crash."""
    start = int(time.time() * 1000) - 3_600_000
    upload = [{"ts": start + i * 1000, "lat": HOME[0], "lon": HOME[1], "seq": i} for i in range(40)]
    store = open_store()
    engine = Engine(store, source=None)
    engine.load()
    engine.process([arrival(upload, 1)])
    engine.process([arrival(upload, 2)])
    assert store.count_telemetry() == 40
    assert counted(engine, "pledgewatch_readings_total") == 40
    assert counted(engine, "pledgewatch_duplicates_total") == 40

    # A crash after the commit, before the ack: the broker sends the upload again to a
    # new engine, which starts from the checkpoint.
    reopened = open_store()
    after = Engine(reopened, source=None)
    after.load()
    after.process([arrival(upload, 1)])
    assert reopened.count_telemetry() == 40
    assert counted(after, "pledgewatch_readings_total") == 0
    assert counted(after, "pledgewatch_duplicates_total") == 40


def _v1_with_duplicates(backend: str, tmp_path: Path, schema: str | None) -> Store:
    """A store at schema version 1 whose telemetry holds every row twice (and one thrice)."""
    rows = [(f"trk-{i % 3}", "gps", T0 + i) for i in range(10)]
    rows += [*rows, rows[0]]
    if backend == "sqlite":
        store: Store = SqliteStore(tmp_path / "v1.db")
        store.migrate(target=1)
        with closing(sqlite3.connect(tmp_path / "v1.db", isolation_level=None)) as conn:
            conn.executemany(
                "INSERT INTO telemetry (device_id, stream, ts_ms) VALUES (?, ?, ?)", rows
            )
        return store
    assert schema is not None
    store = PostgresStore(PG_DSN, schema=schema, max_size=2)
    store.migrate(target=1)
    day = T0 - T0 % DAY_MS
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {schema}.telemetry_p20261130 PARTITION OF {schema}.telemetry "
            f"FOR VALUES FROM ({day}) TO ({day + DAY_MS})"
        )
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {schema}.telemetry (device_id, stream, ts_ms) "  # noqa: S608  # test
                "VALUES (%s, %s, %s)",
                rows,
            )
    return store


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_schema_version_2_deduplicates_existing_telemetry(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    schema = request.getfixturevalue("pg_schema") if backend == "postgres" else None
    store = _v1_with_duplicates(backend, tmp_path, schema)
    try:
        assert store.count_telemetry() == 21
        store.migrate()
        assert store.count_telemetry() == 10
        result = store.commit_batch(Batch(T0, readings=[GpsFix("trk-0", T0, *HOME)]))
        assert dict(result.duplicates) == {"gps": 1}
        assert store.count_telemetry() == 10
        # Version 2 also made deliveries claimable.
        store.put_webhook(HOOK)
        store.commit_batch(Batch(T0, alerts=[alert(1)]))
        assert [d.alert_id for d in store.due_deliveries("hook-a", T0, 5, claim_ms=1000)] == [
            "alert-0001"
        ]
    finally:
        store.close()


# -- PostgreSQL: no DDL waits on the commit path, and DDL gives up in time


def finishes(work: Callable[[], object], within_s: float) -> bool:
    """Whether `work` returns within `within_s` (it runs on in its thread if not)."""
    done = threading.Event()

    def run() -> None:
        work()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(within_s)


@contextmanager
def holding(schema: str, statement: str) -> Iterator[psycopg.Connection]:
    """Another session with an open transaction that ran `statement` (and keeps its locks)."""
    conn = psycopg.connect(PG_DSN, options=f"-c search_path={schema}")
    try:
        conn.execute(statement)
        yield conn
    finally:
        conn.rollback()
        conn.close()


@contextmanager
def timed() -> Iterator[list[float]]:
    took: list[float] = []
    started = time.monotonic()
    try:
        yield took
    finally:
        took.append(time.monotonic() - started)


@pytest.mark.postgres
def test_postgres_ingestion_never_waits_for_partition_ddl(pg_schema: str) -> None:
    store = PostgresStore(PG_DSN, schema=pg_schema, max_size=4, ddl_lock_timeout_s=0.5)
    try:
        store.migrate()
        now = int(time.time() * 1000)
        today = now - now % DAY_MS
        tomorrow = [GpsFix("trk-1", today + DAY_MS + i, *HOME) for i in range(10)]
        # A report reads telemetry in a long transaction; readings of a day that has no
        # partition yet keep being committed (they wait in the default partition).
        with holding(pg_schema, "SELECT count(*) FROM telemetry"):
            assert finishes(lambda: store.commit_batch(Batch(now, readings=tomorrow)), 5.0)
            with timed() as took, pytest.raises(StoreError, match=r"gave up|deferred"):
                store.maintain(now)  # it cannot ATTACH while the report holds the table
            assert took[0] < 3.0
        store.maintain(now)  # the report is over: the days ahead are made
        day = (today + DAY_MS) // DAY_MS
        assert {f"telemetry_p{t:%Y%m%d}" for t in _days(day - 2, day + 1)} <= set(
            store.partitions()
        )
        # With the partitions made ahead, a reader does not hold up the next day's rows,
        # nor does a lock taken with LOCK TABLE.
        for n, lock in enumerate(
            ("SELECT count(*) FROM telemetry", "LOCK TABLE telemetry IN ACCESS SHARE MODE")
        ):
            rows = [GpsFix(f"trk-{n}", today + DAY_MS + 100 + i, *HOME) for i in range(5)]
            with holding(pg_schema, lock):
                assert finishes(partial(store.commit_batch, Batch(now, readings=rows)), 5.0)
        assert _default_count(pg_schema) == 0  # all in tomorrow's partition
        # Retention's DROP gives up as well, rather than queueing every insert behind it.
        with holding(pg_schema, "SELECT count(*) FROM telemetry"):
            time.sleep(0.6)  # the report is older than the DDL timeout: not even queued
            with timed() as took, pytest.raises(StoreError, match="holds a lock"):
                store.enforce_retention(now + 500 * DAY_MS)
            assert took[0] < 3.0
            assert finishes(lambda: store.commit_batch(Batch(now, readings=readings(3))), 5.0)
        assert store.enforce_retention(now + 500 * DAY_MS) >= 4
        assert store.count_telemetry() == 0  # every row is older than that cutoff
    finally:
        store.close()


def _days(first: int, last: int) -> list[datetime]:
    return [datetime.fromtimestamp(d * 86_400, UTC) for d in range(first, last + 1)]


def _default_count(schema: str) -> int:
    with psycopg.connect(PG_DSN) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {schema}.telemetry_default"  # noqa: S608  # test schema
        ).fetchone()
    assert row is not None
    return int(row[0])


# -- the engine lease


def two_stores(backend: str, tmp_path: Path, schema: str | None) -> tuple[Store, Store]:
    if backend == "sqlite":
        return SqliteStore(tmp_path / "pw.db"), SqliteStore(tmp_path / "pw.db")
    assert schema is not None
    return (
        PostgresStore(PG_DSN, schema=schema, max_size=2, lease_wait_s=0.3),
        PostgresStore(PG_DSN, schema=schema, max_size=2, lease_wait_s=0.3),
    )


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_one_engine_lease_per_database(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    schema = request.getfixturevalue("pg_schema") if backend == "postgres" else None
    first, second = two_stores(backend, tmp_path, schema)
    try:
        first.acquire_lease()
        first.acquire_lease()  # idempotent
        first.migrate()
        with pytest.raises(LeaseError, match="another pledgewatch engine holds the lease") as info:
            second.acquire_lease()
        assert "pid" in str(info.value)
        assert socket.gethostname() in str(info.value)
        second.migrate()  # readers and tools need no lease
        second.maintain(T0)  # nor does maintenance without one
        first.maintain(T0)  # the holder's check passes
        first.close()
        second.acquire_lease()
    finally:
        first.close()
        second.close()


def test_a_replaced_lock_file_stops_the_engine(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "pw.db")
    try:
        store.acquire_lease()
        store.migrate()
        (tmp_path / "pw.db.lock").unlink()  # a new engine could now lock a new file
        with pytest.raises(LeaseError, match="lost the engine lease"):
            store.maintain(T0)
    finally:
        store.close()


# -- delivery claims


def test_claimed_deliveries_are_not_handed_out_again(store: Store) -> None:
    store.put_webhook(HOOK)
    store.commit_batch(
        Batch(T0, alerts=[alert(1), alert(2), alert(3, loan_id="L-2", device="trk-2")])
    )
    claimed = store.due_deliveries("hook-a", T0, 10, claim_ms=5000)
    assert [d.alert_id for d in claimed] == ["alert-0001", "alert-0003"]
    # Claimed: nobody else gets them, nor the next of L-1's queue.
    assert store.due_deliveries("hook-a", T0 + 10, 10, claim_ms=5000) == []
    assert store.due_deliveries("hook-a", T0 + 10, 10) == []
    # Recording an attempt ends its claim; an unrecorded claim expires.
    at = T0 + 20
    store.record_attempts([Attempt(claimed[0].delivery_id, at, DeliveryState.DELIVERED, at, 200)])
    assert [d.alert_id for d in store.due_deliveries("hook-a", at, 10, claim_ms=5000)] == [
        "alert-0002"
    ]
    assert [d.alert_id for d in store.due_deliveries("hook-a", T0 + 5000, 10)] == ["alert-0003"]


@pytest.mark.postgres
def test_connections_killed_under_the_pool_cost_one_backoff_not_one_each(pg_schema: str) -> None:
    """A restart or a failover kills every pooled connection: the next call must not find
    them one at a time, 1, 2, 4 ... s apart (the soak saw batches stall for seconds)."""
    app = f"pw-kill-{time.monotonic_ns()}"
    store = PostgresStore(
        f"{PG_DSN}?application_name={app}", schema=pg_schema, min_size=6, max_size=6
    )
    try:
        store.migrate()
        deadline = time.monotonic() + 10
        with psycopg.connect(PG_DSN, autocommit=True) as admin:

            def idle() -> int:
                row = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [app]
                ).fetchone()
                return int(row[0]) if row else 0

            while idle() < 6 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert idle() == 6
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                [app],
            )
        started = time.monotonic()
        assert store.outbox_pending() == 0
        took = time.monotonic() - started
        assert took < 3.0, f"the first call after the kill took {took:.1f} s"
    finally:
        store.close()
