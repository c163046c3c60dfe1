"""DESIGN §6 for certain: `kill -9` inside a batch, on SQLite and PostgreSQL, then restart.

The engine is stopped at a chosen point of a chosen batch by its test seam
(`PLEDGEWATCH_TEST_PAUSE`, engine/runtime/live.py): just before the batch's commit (its
work is lost and must be redone from the broker's redelivery) or just after it, before the
broker is acknowledged (the whole batch comes again and must be stored and alerted once).
Trackers upload arrays longer than the engine's in-memory duplicate window, so the store's
unique key is what keeps a redelivered reading from being stored twice.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engine.core.config import Config
from engine.store.factory import sqlite_path
from tests.brokers import Broker, broker  # noqa: F401  # the fixture
from tests.conftest import PG_DSN, with_search_path
from tests.factories import HOME
from tests.live import EngineProcess, Publisher, Receiver, engines, receiver  # noqa: F401
from tests.test_e2e import FAR, assert_all_signed, expected_ids, gps, setup_engine

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

N_CARS = 10
ARRAY = 40  # readings per upload: more than the duplicate window
UPLOADS = 2  # per car
TRIGGER = "trk-5"  # the first batch holding this tracker's readings is where the kill lands

Message = tuple[str, Any]


def track(car: int) -> list[dict[str, object]]:
    """A car's readings a minute apart: home, 10 minutes away (exit, zone.left), home again
    (enter, zone.returned)."""
    return [gps(car + 60 * k, FAR if 10 <= k < 20 else HOME, seq=k) for k in range(ARRAY * UPLOADS)]


def uploads(n_cars: int) -> list[Message]:
    """Every car's track as `UPLOADS` arrays of `ARRAY` readings, first uploads first."""
    tracks = [track(car) for car in range(n_cars)]
    return [
        (f"telematics/trk-{car}/gps", tracks[car][ARRAY * u : ARRAY * (u + 1)])
        for u in range(UPLOADS)
        for car in range(n_cars)
    ]


def query(db_url: str, statement: str) -> list[tuple[object, ...]]:
    """Rows of a query on the engine's database, SQLite or PostgreSQL."""
    if db_url.startswith("sqlite:"):
        with closing(sqlite3.connect(sqlite_path(db_url), timeout=10)) as conn:
            return conn.execute(statement).fetchall()
    with psycopg.connect(db_url, connect_timeout=5) as conn:
        return conn.execute(statement).fetchall()


def telemetry_of(db_url: str, device_id: str, ts_ms: object = None) -> int:
    """Telemetry rows of one device (at one time, if given)."""
    at = "" if ts_ms is None else f" AND ts_ms = {int(str(ts_ms))}"
    rows = query(db_url, f"SELECT count(*) FROM telemetry WHERE device_id = '{device_id}'{at}")  # noqa: S608
    return int(str(rows[0][0]))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/pw.db"
    return with_search_path(PG_DSN, request.getfixturevalue("pg_schema"))


@pytest.mark.parametrize("point", ["before_commit", "after_commit"])
def test_kill_9_inside_a_batch_loses_nothing_and_stores_each_reading_once(
    point: str,
    db_url: str,
    broker: Broker,  # noqa: F811
    receiver: Receiver,  # noqa: F811
    engines: Callable[[str], EngineProcess],  # noqa: F811
    tmp_path: Path,
) -> None:
    assert Config().recent_readings_kept < ARRAY  # a redelivered upload outlives the window
    messages = uploads(N_CARS)
    # A reading published last, after everything else: once it is stored, so is all before it.
    barrier: Message = ("telematics/trk-0/gps", gps(60 * ARRAY * UPLOADS, HOME, seq=999))
    # The replay takes the same readings one by one in event-time order (its clock is the
    # latest event time: whole uploads, a car at a time, would look like silent trackers).
    readings = sorted(((t, p) for t, ps in messages for p in ps), key=lambda m: m[1]["ts"])
    want = expected_ids([*readings, barrier], N_CARS)
    assert len(want) == 5 * N_CARS  # exit, zone.left, enter, zone.returned; risk low -> high
    published = {(t, p["ts"]) for t, p in readings}
    marker = tmp_path / "paused"

    engine = engines(db_url)
    engine.env["PLEDGEWATCH_TEST_PAUSE"] = f"{point}:{TRIGGER}:{marker}"
    engine.start()
    setup_engine(engine, receiver, N_CARS)
    pub = Publisher(broker)
    done = threading.Event()

    def publish_all() -> None:
        for topic, payload in messages:
            pub.send(topic, payload)
            time.sleep(0.05)  # about one upload a batch
        done.set()

    thread = threading.Thread(target=publish_all)
    thread.start()
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists(), engine.log_tail(3000)
    assert engine.running()
    engine.kill9()

    # The kill landed inside the batch: before its commit nothing of it is stored, after
    # its commit all of it is (and none of it was acknowledged).
    stored = telemetry_of(db_url, TRIGGER)
    if point == "before_commit":
        assert stored == 0
    else:
        assert stored >= ARRAY

    del engine.env["PLEDGEWATCH_TEST_PAUSE"]
    engine.start()
    thread.join(30)
    assert done.is_set()
    assert receiver.wait_for(lambda rs: {str(r.alert["id"]) for r in rs} >= want, 60), (
        len(set(receiver.ids()) & want),
        receiver.refusals,
        engine.log_tail(3000),
    )
    pub.send(*barrier)
    deadline = time.monotonic() + 30
    while not telemetry_of(db_url, "trk-0", barrier[1]["ts"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert telemetry_of(db_url, "trk-0", barrier[1]["ts"]) == 1, engine.log_tail(3000)

    assert set(receiver.ids()) == want  # nothing lost, nothing with a new id
    assert {str(i) for (i,) in query(db_url, "SELECT id FROM alerts")} == want
    assert_all_signed(receiver)
    (rows, keys), *_ = query(
        db_url,
        "SELECT count(*), count(DISTINCT (device_id || ' ' || stream || ' ' || ts_ms)) "
        "FROM telemetry",
    )
    assert (rows, keys) == (len(published) + 1, len(published) + 1), engine.log_tail(3000)
    if point == "after_commit":
        # The committed batch came again: its newest readings were caught by the in-memory
        # window, the older ones by the store; all counted as duplicates, none as readings.
        metrics = engine.metrics()
        assert metrics.value("pledgewatch_duplicates_total", stream="gps") >= ARRAY
    pub.close()
    assert engine.terminate() == 0
