"""Telemetry on TimescaleDB: the hypertable `PostgresStore` makes, its compression and
retention policies doing their work, and `pledgewatch run` end to end on it.

All of it runs on the private cluster of conftest's `timescale_dsn` (PostgreSQL 15
preloading the vendored TimescaleDB build); where that build or PostgreSQL 15 is not
installed, these tests skip and say which.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg.rows import TupleRow

from devices.readings import GpsFix, Vibration
from engine.store.port import Batch
from engine.store.postgres_store import PostgresStore
from tests.brokers import Broker, broker  # noqa: F401  # the fixture
from tests.conftest import with_search_path
from tests.factories import HOME
from tests.live import EngineProcess, Publisher, Receiver, engines, receiver  # noqa: F401
from tests.test_e2e import T0, assert_all_signed, leave_and_return, setup_engine

pytestmark = pytest.mark.postgres

DAY_MS = 86_400_000
NOW_MS = int(time.time() * 1000)

OpenTimescale = Callable[..., PostgresStore]


@pytest.fixture
def open_timescale(timescale_dsn: str, timescale_schema: str) -> Iterator[OpenTimescale]:
    """Open and migrate a store on the TimescaleDB cluster (TimescaleDB required), in this
    test's schema; keyword arguments go to `PostgresStore`."""
    opened: list[PostgresStore] = []

    def open_(**kw: object) -> PostgresStore:
        store = PostgresStore(
            timescale_dsn,
            schema=timescale_schema,
            max_size=2,
            timescale=True,
            **kw,  # type: ignore[arg-type]  # the policies' settings
        )
        opened.append(store)
        store.migrate()
        return store

    yield open_
    for store in opened:
        store.close()


def query(store: PostgresStore, statement: str, *params: object) -> list[TupleRow]:
    """Rows of a query on the store's database, in its schema."""
    return store._query(statement, params)


def jobs(store: PostgresStore) -> dict[str, tuple[int, dict[str, object]]]:
    """The telemetry hypertable's policy jobs: procedure name -> (job id, config)."""
    rows = query(
        store,
        "SELECT proc_name, job_id, config FROM timescaledb_information.jobs "
        "WHERE hypertable_schema = %s AND hypertable_name = 'telemetry'",
        store.schema,
    )
    return {str(name): (int(job), dict(config)) for name, job, config in rows}


def policies(store: PostgresStore) -> dict[str, int]:
    """The telemetry policies: procedure name -> job id. The private cluster runs no
    scheduler, so a policy does its work only when a test runs it."""
    return {name: job for name, (job, _) in jobs(store).items()}


def run_job(store: PostgresStore, job_id: int) -> None:
    """Run a policy job now, as TimescaleDB's scheduler would."""
    with psycopg.connect(store._dsn, autocommit=True) as conn:
        conn.execute("CALL run_job(%s)", [job_id])


def chunks(store: PostgresStore) -> list[tuple[str, int, int, bool]]:
    """The telemetry chunks, oldest first: (name, start ms, end ms, compressed)."""
    rows = query(
        store,
        "SELECT chunk_name, range_start_integer, range_end_integer, is_compressed "
        "FROM timescaledb_information.chunks "
        "WHERE hypertable_schema = %s AND hypertable_name = 'telemetry' "
        "ORDER BY range_start_integer",
        store.schema,
    )
    return [(str(n), int(s), int(e), bool(c)) for n, s, e, c in rows]


def day_start(days_ago: int) -> int:
    """The start of the UTC day (a chunk's range) `days_ago` days before today's."""
    return (NOW_MS // DAY_MS - days_ago) * DAY_MS


def fixes(start_ms: int, n: int, device: str = "trk-t") -> list[GpsFix]:
    """`n` fixes a second apart from `start_ms`."""
    return [GpsFix(device, start_ms + i * 1000, HOME[0], HOME[1], seq=i) for i in range(n)]


def test_telemetry_is_a_hypertable_with_compression_and_retention(
    open_timescale: OpenTimescale,
) -> None:
    store = open_timescale(compress_after_days=7, retain_days=400)
    assert store.layout() == "hypertable"
    (compressed, dims), *_ = query(
        store,
        "SELECT h.compression_enabled, d.integer_interval "
        "FROM timescaledb_information.hypertables h "
        "JOIN timescaledb_information.dimensions d USING (hypertable_schema, hypertable_name) "
        "WHERE h.hypertable_schema = %s AND h.hypertable_name = 'telemetry' "
        "AND d.column_name = 'ts_ms'",
        store.schema,
    )
    assert compressed is True
    assert dims == DAY_MS  # one chunk a day
    settings = query(
        store,
        "SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc "
        "FROM timescaledb_information.compression_settings "
        "WHERE hypertable_schema = %s AND hypertable_name = 'telemetry' "
        "ORDER BY segmentby_column_index NULLS LAST, orderby_column_index",
        store.schema,
    )
    assert settings == [("device_id", 1, None, None), ("ts_ms", None, 1, True)]
    configured = jobs(store)
    assert set(configured) == {"policy_compression", "policy_retention"}
    assert configured["policy_compression"][1]["compress_after"] == 7 * DAY_MS
    assert configured["policy_retention"][1]["drop_after"] == 400 * DAY_MS
    store.close()

    # Policies follow the settings of the latest start; no retention keeps everything.
    store = open_timescale(compress_after_days=3, retain_days=None)
    configured = jobs(store)
    assert set(configured) == {"policy_compression"}
    assert configured["policy_compression"][1]["compress_after"] == 3 * DAY_MS


def test_compression_keeps_the_rows_and_their_unique_key(open_timescale: OpenTimescale) -> None:
    store = open_timescale(compress_after_days=7, retain_days=None)
    policy = policies(store)
    old = fixes(day_start(20), 50) + fixes(day_start(10), 50, device="trk-u")
    recent = [*fixes(day_start(1), 50), Vibration("trk-t", day_start(1) + 500, 0.4)]
    store.commit_batch(Batch(NOW_MS, readings=old + recent))
    assert store.count_telemetry() == 151
    assert [c[3] for c in chunks(store)] == [False, False, False]

    run_job(store, policy["policy_compression"])  # compresses chunks older than 7 days
    assert [c[3] for c in chunks(store)] == [True, True, False]
    assert store.count_telemetry() == 151
    assert store.count_telemetry("trk-u") == 50
    (first, last), *_ = query(
        store, "SELECT min(ts_ms), max(ts_ms) FROM telemetry WHERE device_id = 'trk-u'"
    )
    assert (first, last) == (old[50].ts_ms, old[99].ts_ms)

    # A redelivery of old readings into compressed chunks: found by the key, not stored twice.
    new = fixes(day_start(20) + 100_000, 1)  # in a compressed chunk, not stored yet
    committed = store.commit_batch(Batch(NOW_MS, readings=[*old[:60], *new]))
    assert committed.duplicates == {"gps": 60}
    assert store.count_telemetry() == 152

    # compress_chunk by hand, as an operator would: the same rows.
    query(
        store,
        f'SELECT "{store._ts_schema}".compress_chunk('  # noqa: S608  # the extension's schema
        "format('%%I.%%I', chunk_schema, chunk_name)::regclass) "
        "FROM timescaledb_information.chunks "
        "WHERE hypertable_schema = %s AND hypertable_name = 'telemetry' AND NOT is_compressed",
        store.schema,
    )
    assert [c[3] for c in chunks(store)] == [True, True, True]
    assert store.count_telemetry() == 152


def test_retention_drops_old_chunks(open_timescale: OpenTimescale) -> None:
    store = open_timescale(compress_after_days=1, retain_days=10)
    policy = policies(store)
    for days in (30, 20, 5, 0):
        store.commit_batch(Batch(NOW_MS, readings=fixes(day_start(days), 10, f"trk-{days}")))
    assert store.count_telemetry() == 40
    assert len(chunks(store)) == 4

    run_job(store, policy["policy_retention"])  # drops chunks older than 10 days
    assert len(chunks(store)) == 2
    assert store.count_telemetry() == 20
    assert store.count_telemetry("trk-5") == 10
    assert store.enforce_retention(NOW_MS) == 0  # TimescaleDB's own job does it

    # The store's own method drops whole chunks older than a time, compressed ones too.
    run_job(store, policy["policy_compression"])  # the 5-day-old chunk
    assert store.drop_partitions_before(NOW_MS - 3 * DAY_MS) == 1
    assert store.count_telemetry() == 10
    assert store.partitions() == [chunks(store)[0][0]]


@pytest.mark.mqtt
@pytest.mark.slow
def test_pledgewatch_run_on_timescaledb(
    timescale_dsn: str,
    timescale_schema: str,
    broker: Broker,  # noqa: F811
    receiver: Receiver,  # noqa: F811
    engines: Callable[[str], EngineProcess],  # noqa: F811
) -> None:
    engine = engines(with_search_path(timescale_dsn, timescale_schema))
    engine.start()
    try:
        setup_engine(engine, receiver)
        pub = Publisher(broker)
        for topic, payload in leave_and_return(0):
            pub.send(topic, payload)
        pub.send("telematics/trk-0/vib", {"ts": T0 + 800_000, "g": 3.2})
        want = {"geofence.exit", "zone.left", "geofence.enter", "zone.returned", "shock"}
        assert receiver.wait_for(lambda rs: {r.alert["type"] for r in rs} >= want, 30), (
            [r.alert["type"] for r in receiver.received],
            receiver.refusals,
            engine.log_tail(3000),
        )
        assert_all_signed(receiver)
        pub.close()
    finally:
        assert engine.terminate() == 0
    with psycopg.connect(timescale_dsn, autocommit=True) as conn:
        (hyper,) = conn.execute(
            "SELECT count(*) FROM timescaledb_information.hypertables "
            "WHERE hypertable_schema = %s AND hypertable_name = 'telemetry'",
            [timescale_schema],
        ).fetchone() or (0,)
        assert hyper == 1
        rows = conn.execute(
            f'SELECT stream, count(*) FROM "{timescale_schema}".telemetry '  # noqa: S608
            "GROUP BY stream ORDER BY stream"
        ).fetchall()
        assert rows == [("gps", 12), ("vib", 1)]
        (in_chunks,) = conn.execute(
            f'SELECT count(*) FROM ONLY "{timescale_schema}".telemetry'  # noqa: S608
        ).fetchone() or (-1,)
        assert in_chunks == 0  # every row is in a chunk, none in the parent table
