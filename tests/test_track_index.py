"""Schema version 7: a car's track reads its own gps rows by the (device_id, ts_ms) index,
on SQLite, PostgreSQL (day partitions) and TimescaleDB (chunks, compressed too), and a
store of version 6 holding telemetry gains it on upgrade."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from devices.readings import GpsFix, Vibration
from engine.store.port import Batch, Store
from engine.store.postgres_store import PostgresStore
from engine.store.rows import DAY_MS
from engine.store.sqlite_store import SqliteStore
from tests.conftest import PG_DSN

T0 = 1_796_000_000_000 - 1_796_000_000_000 % DAY_MS
DEVICES, FIXES = 40, 100
TRACK_SQL = (
    "SELECT ts_ms, lat, lon FROM telemetry WHERE device_id = {d} AND stream = 'gps' "
    "AND ts_ms >= {a} AND ts_ms < {b}"
)


def fill(store: Store, t0: int = T0) -> None:
    """`FIXES` gps fixes of each of `DEVICES` cars, 10 s apart from `t0`, and a vib row each."""
    readings: list[GpsFix | Vibration] = []
    for k in range(FIXES):
        for d in range(DEVICES):
            at = t0 + k * 10_000 + d
            readings.append(GpsFix(f"car-{d:03d}", at, 31.2 + k * 1e-4, 121.4 + d * 1e-4))
    readings += [Vibration(f"car-{d:03d}", t0 + 5, 0.5) for d in range(DEVICES)]
    store.commit_batch(Batch(t0, readings=readings))


def check_track(store: Store, t0: int = T0) -> None:
    track = store.track("car-007", t0, t0 + DAY_MS, 10_000)
    assert track.fixes == FIXES
    assert [p.ts_ms for p in track.points] == [t0 + k * 10_000 + 7 for k in range(FIXES)]


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "pw.db")
    try:
        yield store
    finally:
        store.close()


def sqlite_plan(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        query = TRACK_SQL.format(d="'car-007'", a=T0, b=T0 + DAY_MS)
        return " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + query))


def test_sqlite_tracks_read_the_device_index_also_after_an_upgrade(
    sqlite_store: SqliteStore,
) -> None:
    sqlite_store.migrate(target=6)
    fill(sqlite_store)
    assert "telemetry_device_gps" not in sqlite_plan(sqlite_store.path)
    check_track(sqlite_store)
    sqlite_store.migrate()  # version 7 over stored telemetry
    plan = sqlite_plan(sqlite_store.path)
    assert "USING INDEX telemetry_device_gps (device_id=? AND ts_ms>? AND ts_ms<?)" in plan, plan
    check_track(sqlite_store)


def pg_plan(dsn: str, schema: str, t0: int = T0) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))
        conn.execute("ANALYZE telemetry")
        conn.execute("SET enable_seqscan = off")  # a tiny table: the planner would scan it
        query = TRACK_SQL.format(d="%s", a="%s", b="%s")
        rows = conn.execute("EXPLAIN " + query, ("car-007", t0, t0 + DAY_MS)).fetchall()
        return "\n".join(row[0] for row in rows)


@pytest.mark.postgres
def test_postgres_tracks_read_the_device_index_of_each_partition(pg_schema: str) -> None:
    store = PostgresStore(PG_DSN, schema=pg_schema, max_size=2, timescale=False)
    try:
        store.migrate(target=6)
        fill(store)  # into the default partition
        store.migrate()
        store.maintain(T0)  # day partitions made ahead: they get the index too
        check_track(store)
        plan = pg_plan(PG_DSN, pg_schema)
        # each partition's copy of the index is named after the partition
        assert re.search(r"Index Scan on telemetry_\w+_device_id_ts_ms_idx", plan), plan
        assert "Index Cond: ((device_id = 'car-007'::text) AND (ts_ms >= " in plan, plan
    finally:
        store.close()
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        partitions = conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = %s AND tablename LIKE "
            "'telemetry_%%' AND indexdef LIKE '%%(device_id, ts_ms) WHERE (stream = ''gps''%%'",
            (pg_schema,),
        ).fetchone()
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename LIKE "
            "'telemetry_%%'",
            (pg_schema,),
        ).fetchone()
    assert partitions is not None
    assert tables is not None
    assert partitions[0] == tables[0] > 1  # the default partition and the days ahead


@pytest.mark.postgres
def test_timescale_tracks_read_the_device_index_of_the_chunks(
    timescale_dsn: str, timescale_schema: str
) -> None:
    store = PostgresStore(timescale_dsn, schema=timescale_schema, max_size=2, timescale=True)
    try:
        store.migrate(target=6)
        fill(store)
        fill(store, T0 + DAY_MS)  # a second chunk
        with psycopg.connect(timescale_dsn, autocommit=True) as conn:  # the first compressed
            ts = conn.execute(
                "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
                "ON n.oid = e.extnamespace WHERE e.extname = 'timescaledb'"
            ).fetchone()
            assert ts is not None
            chunk = conn.execute(
                "SELECT format('%%I.%%I', chunk_schema, chunk_name) FROM "
                "timescaledb_information.chunks WHERE hypertable_schema = %s "
                "ORDER BY range_start_integer LIMIT 1",
                (timescale_schema,),
            ).fetchone()
            assert chunk is not None
            conn.execute(
                sql.SQL("SELECT {}.compress_chunk(%s::regclass)").format(sql.Identifier(ts[0])),
                (chunk[0],),
            )
        store.migrate()  # version 7 on a hypertable with a compressed chunk
        check_track(store)  # read from the compressed chunk (by its segments)
        check_track(store, T0 + DAY_MS)
        plan = pg_plan(timescale_dsn, timescale_schema, T0 + DAY_MS)
        # each chunk's copy of the index; the chunk lies inside the period: no ts condition
        assert re.search(r"Index Scan on _hyper_\w+_chunk_telemetry_device_gps", plan), plan
        assert "Index Cond: (device_id = 'car-007'::text)" in plan, plan
    finally:
        store.close()
