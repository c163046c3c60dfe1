"""The HTTP inputs of DESIGN §9 over real connections: Traccar forwarding and OsmAnd /
Traccar Client posted to the API, taken by the running engine into its batches, committed,
and only then answered (`engine.api.ingest`, `engine.runtime.submitted`)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from devices.readings import RejectReason
from engine.api.app import create_app
from engine.runtime.live import Engine, EngineSettings
from engine.runtime.submitted import EngineUnavailableError
from engine.store.port import AlertQuery, Batch, Committed, StoreError
from engine.store.sqlite_store import SqliteStore
from tests.factories import VIN
from tests.test_api import (
    LOOPBACK,
    TOKEN,
    Live,
    QueueSource,
    Server,
    assert_problem,
    loan_doc,
    run_live,
    wait_for,
)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    yield from run_live(tmp_path_factory.mktemp("ingest"))


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ts_ms: int) -> str:
    """As Traccar 5 writes dates."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds")


def traccar(unique_id: str, ts_ms: int, lat: float = 31.2, lon: float = 121.5, **attributes: Any):
    return {
        "position": {
            "deviceId": 3,
            "fixTime": iso(ts_ms),
            "valid": True,
            "latitude": lat,
            "longitude": lon,
            "speed": 0.0,
            "course": 0.0,
            "attributes": {"ignition": False, **attributes},
        },
        "device": {"id": 3, "uniqueId": unique_id, "name": "car"},
    }


def counter(text: str, name: str, label: str, value: str) -> int:
    match = re.search(rf'^{name}{{{label}="{value}"}} (\d+)$', text, re.MULTILINE)
    return int(match[1]) if match else 0


def metric(live: Live, name: str, label: str, value: str) -> int:
    return counter(live.http.get("/metrics").text, name, label, value)


# -- Traccar


def test_a_traccar_position_is_committed_before_the_200(live: Live) -> None:
    before = metric(live, "pledgewatch_readings_total", "stream", "gps")
    ts = now_ms() - 5000
    response = live.http.post("/v1/ingest/traccar", json=traccar("tc-1", ts, 31.25, 121.45))
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1, "rejected": []}
    # answered after the commit: the store holds it, the counters show it
    assert live.store.count_telemetry("tc-1") == 1
    assert metric(live, "pledgewatch_readings_total", "stream", "gps") == before + 1
    device = live.http.get("/v1/devices/tc-1").json()
    assert (device["last_fix"]["lat"], device["last_fix"]["lon"]) == (31.25, 121.45)


def test_a_traccar_array_counts_each_document(live: Live) -> None:
    ts = now_ms() - 60_000
    docs = [traccar("tc-2", ts), traccar("tc-2", ts + 1000), {"device": {"uniqueId": "tc-2"}}]
    response = live.http.post("/v1/ingest/traccar", json=docs)
    body = response.json()
    assert body["accepted"] == 2
    assert body["rejected"] == [
        {
            "reason": "missing_field",
            "detail": "position: required object is missing (an event document needs an event)",
            "device_id": "tc-2",
            "index": 2,
        }
    ]
    # a resend (Traccar retries what got no 2xx) is a duplicate, not a second reading
    again = live.http.post("/v1/ingest/traccar", json=docs[:2])
    assert again.json()["accepted"] == 2
    assert live.store.count_telemetry("tc-2") == 2


def test_a_traccar_power_cut_raises_power_disconnected(live: Live) -> None:
    assert live.http.put("/v1/loans/TC-L1", json=loan_doc(["tc-loan"], VIN)).status_code in (
        200,
        201,
    )
    wait_for(lambda: live.engine.loan_for("tc-loan") is not None, "the loan in the engine")
    ts = now_ms() - 10_000
    assert live.http.post("/v1/ingest/traccar", json=traccar("tc-loan", ts)).status_code == 200
    event = {
        **traccar("tc-loan", ts + 1000),
        "event": {
            "type": "alarm",
            "eventTime": iso(ts + 1000),
            "attributes": {"alarm": "powerCut"},
        },
    }
    response = live.http.post("/v1/ingest/traccar", json=event)
    assert response.json() == {"accepted": 2, "rejected": []}  # its position and the status
    alerts = live.store.list_alerts(AlertQuery(type="power.disconnected", device_id="tc-loan"))
    [alert] = alerts.items
    assert alert.alert["loan_id"] == "TC-L1"
    listed = live.http.get("/v1/alerts", params={"device_id": "tc-loan"}).json()["items"]
    assert "power.disconnected" in {a["type"] for a in listed}
    assert live.http.get("/v1/devices/tc-loan").json()["last_status"]["ext_power"] is False


def test_junk_is_answered_200_counted_and_kept(live: Live) -> None:
    before = metric(live, "pledgewatch_rejected_total", "reason", "not_json")
    response = live.http.post(
        "/v1/ingest/traccar", content=b"<xml/>", headers={"content-type": "text/xml"}
    )
    assert response.status_code == 200
    [reject] = response.json()["rejected"]
    assert reject["reason"] == "not_json"
    assert metric(live, "pledgewatch_rejected_total", "reason", "not_json") == before + 1
    items = live.http.get("/v1/rejects", params={"limit": 20}).json()["items"]
    [kept] = [r for r in items if r["topic"] == "http/traccar" and r["raw"] == "<xml/>"]
    assert kept["reason"] == "not_json"

    bad = traccar("tc-3", now_ms(), lat=95.0)
    response = live.http.post("/v1/ingest/traccar", json=bad).json()
    assert response["accepted"] == 0
    assert response["rejected"] == [
        {
            "reason": "out_of_range",
            "detail": "lat: 95.0 is outside -90..90",
            "device_id": "tc-3",
            "index": None,
        }
    ]
    items = live.http.get("/v1/rejects", params={"limit": 20}).json()["items"]
    [kept] = [r for r in items if r["topic"] == "telematics/tc-3/gps"]
    assert orjson.loads(kept["raw"])["lat"] == 95.0


# -- OsmAnd and Traccar Client


def test_an_osmand_get_is_committed_and_takes_the_token_as_a_parameter(live: Live) -> None:
    before = metric(live, "pledgewatch_readings_total", "stream", "gps")
    params = {"id": "osm-1", "lat": "31.3", "lon": "121.6", "timestamp": str(now_ms() // 1000)}
    with httpx.Client(base_url=live.url, timeout=10) as anon:
        response = anon.get("/v1/ingest/osmand", params={**params, "token": TOKEN})
        assert response.status_code == 200, response.text
        assert response.json() == {"accepted": 1, "rejected": []}
        assert_problem(anon.get("/v1/ingest/osmand", params=params), 401, "unauthorized")
        wrong = anon.get("/v1/ingest/osmand", params={**params, "token": "nope"})
        assert_problem(wrong, 401, "unauthorized")
        # the query token is for the OsmAnd route only
        assert_problem(anon.get("/v1/devices/osm-1", params={"token": TOKEN}), 401, "unauthorized")
    fix = live.http.get("/v1/devices/osm-1").json()["last_fix"]
    assert (fix["lat"], fix["lon"]) == (31.3, 121.6)
    assert metric(live, "pledgewatch_readings_total", "stream", "gps") == before + 1


def test_osmand_post_as_form_and_as_traccar_client_json(live: Live) -> None:
    ts = now_ms() - 700_000
    form = live.http.post(
        "/v1/ingest/osmand",
        data={"deviceid": "osm-2", "lat": "31.1", "lon": "121.1", "timestamp": str(ts)},
    )
    assert form.json() == {"accepted": 1, "rejected": []}
    location = {
        "timestamp": iso(ts + 600_000),  # 11 km in 10 minutes: a drive, not a jump
        "coords": {"latitude": 31.2, "longitude": 121.2, "speed": 10.0, "heading": -1},
        "battery": {"level": 0.5, "is_charging": True},
    }
    client = live.http.post("/v1/ingest/osmand", json={"device_id": "osm-2", "location": location})
    assert client.json() == {"accepted": 1, "rejected": []}
    fix = live.http.get("/v1/devices/osm-2").json()["last_fix"]
    assert (fix["lat"], fix["lon"]) == (31.2, 121.2)
    assert live.store.count_telemetry("osm-2") == 2
    junk = live.http.post("/v1/ingest/osmand", json={"location": location}).json()
    assert junk["rejected"][0]["reason"] == RejectReason.MISSING_FIELD.value


def test_auth_is_required(live: Live) -> None:
    with httpx.Client(base_url=live.url, timeout=5) as anon:
        assert_problem(anon.post("/v1/ingest/traccar", json={}), 401, "unauthorized")
        assert_problem(anon.get("/v1/ingest/osmand?id=x&lat=1&lon=2"), 401, "unauthorized")
        assert_problem(anon.post("/v1/ingest/osmand", data={"id": "x"}), 401, "unauthorized")


def test_the_routes_are_documented(live: Live) -> None:
    doc = live.http.get("/openapi.json").json()
    traccar_op = doc["paths"]["/v1/ingest/traccar"]["post"]
    assert "application/json" in traccar_op["requestBody"]["content"]
    assert {"200", "503"} <= traccar_op["responses"].keys()
    osmand_post = doc["paths"]["/v1/ingest/osmand"]["post"]
    assert {"application/x-www-form-urlencoded", "application/json"} == set(
        osmand_post["requestBody"]["content"]
    )
    names = {p["name"] for p in doc["paths"]["/v1/ingest/osmand"]["get"]["parameters"]}
    assert {"id", "lat", "lon", "timestamp", "speed", "token"} <= names


# -- durability: the answer waits for the commit


class FlakyStore(SqliteStore):
    """A SQLite store whose commits of readings fail while `failures` is above zero."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.failures = 0
        self.attempts = 0
        self.lock = threading.Lock()

    def commit_batch(self, batch: Batch) -> Committed:
        if batch.readings or batch.rejects:
            with self.lock:
                self.attempts += 1
                if self.failures > 0:
                    self.failures -= 1
                    msg = "database is locked (injected)"
                    raise StoreError(msg)
        return super().commit_batch(batch)


@pytest.fixture
def flaky(tmp_path: Path) -> Iterator[tuple[FlakyStore, httpx.Client]]:
    store = FlakyStore(tmp_path / "flaky.db")
    store.migrate()
    source = QueueSource()
    settings = EngineSettings(max_wait_s=0.01, commit_retry_cap_s=0.05)
    engine = Engine(store, source, settings=settings)
    engine.start()
    app = create_app(engine, store, None, TOKEN, webhook_addresses=LOOPBACK, ingest_timeout_s=1.0)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with (
            Server(app) as server,
            httpx.Client(base_url=server.url, headers=auth, timeout=10) as http,
        ):
            yield store, http
    finally:
        engine.stop()
        store.close()


def test_the_200_comes_only_after_a_retried_commit_and_stores_once(
    flaky: tuple[FlakyStore, httpx.Client],
) -> None:
    store, http = flaky
    store.failures = 3
    response = http.post("/v1/ingest/traccar", json=traccar("dur-1", now_ms() - 1000))
    assert response.json() == {"accepted": 1, "rejected": []}
    assert store.failures == 0
    assert store.attempts == 4  # three failed commits, then the one the 200 waited for
    assert store.count_telemetry("dur-1") == 1


def test_no_commit_in_time_is_503_and_the_resend_is_stored_once(
    flaky: tuple[FlakyStore, httpx.Client],
) -> None:
    store, http = flaky
    store.failures = 10**6
    doc = traccar("dur-2", now_ms() - 1000)
    response = http.post("/v1/ingest/traccar", json=doc)
    body = assert_problem(response, 503, "store-unavailable", "not committed within 1 s")
    assert "send it again" in body["detail"]
    assert response.headers["retry-after"] == "5"
    assert store.count_telemetry("dur-2") == 0
    with store.lock:
        store.failures = 0  # the store comes back: the engine's retry commits the batch
    wait_for(lambda: store.count_telemetry("dur-2") == 1, "the stalled batch to commit")
    again = http.post("/v1/ingest/traccar", json=doc)  # the client resends after its 503
    assert again.json() == {"accepted": 1, "rejected": []}
    assert store.count_telemetry("dur-2") == 1
    metrics = http.get("/metrics").text
    assert counter(metrics, "pledgewatch_duplicates_total", "stream", "gps") == 1


def test_an_engine_that_does_not_run_answers_503(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "idle.db")
    store.migrate()
    engine = Engine(store, source=None)  # never started
    app = create_app(engine, store, None, None)
    with Server(app) as server, httpx.Client(base_url=server.url, timeout=5) as anon:
        response = anon.post("/v1/ingest/traccar", json=traccar("idle", now_ms()))
        assert_problem(response, 503, "engine-down", "not running")
    store.close()


# -- the engine's submission queue


def test_submit_resolves_after_the_commit_and_fails_once_stopped(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "submit.db")
    store.migrate()
    engine = Engine(store, source=None, settings=EngineSettings(max_wait_s=0.01))
    engine.start()
    try:
        payload = orjson.dumps({"ts": now_ms(), "lat": 1.0, "lon": 2.0})
        future = engine.submit([("telematics/sub-1/gps", payload), ("telematics/x y/gps", b"{}")])
        outcome = future.result(timeout=5)
        assert outcome.accepted == 1
        assert [r.reason for d in outcome.decoded for r in d.rejects] == [RejectReason.BAD_TOPIC]
        assert store.count_telemetry("sub-1") == 1
        assert engine.published.rejected[RejectReason.BAD_TOPIC] == 1
    finally:
        engine.stop()
        store.close()
    late = engine.submit([("telematics/sub-1/gps", payload)])
    with pytest.raises(EngineUnavailableError):
        late.result(timeout=1)


def test_a_submission_cancelled_before_its_turn_is_dropped(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "cancel.db")
    store.migrate()
    engine = Engine(store, source=None, settings=EngineSettings(max_wait_s=0.01))
    engine.start()
    try:
        engine._submitted._ready.acquire()  # hold the queue: the engine cannot take yet
        try:
            payload = orjson.dumps({"ts": now_ms(), "lat": 1.0, "lon": 2.0})
            future = engine.submit([("telematics/cancelled/gps", payload)])
        finally:
            assert future.cancel()
            engine._submitted._ready.release()
        with pytest.raises(CancelledError):
            future.result(timeout=1)
        kept = engine.submit([("telematics/kept/gps", payload)])
        assert kept.result(timeout=5).accepted == 1
        assert store.count_telemetry("cancelled") == 0
    finally:
        engine.stop()
        store.close()


class BrokenStore(SqliteStore):
    """A store whose commits fail with an error the engine cannot retry."""

    def commit_batch(self, batch: Batch) -> Committed:
        if batch.readings:
            msg = "disk on fire"
            raise RuntimeError(msg)
        return super().commit_batch(batch)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_batch_that_cannot_commit_fails_its_submissions(tmp_path: Path) -> None:
    """An error the engine cannot retry stops its thread (re-raised there, by design)."""
    store = BrokenStore(tmp_path / "broken.db")
    store.migrate()
    engine = Engine(store, source=None, settings=EngineSettings(max_wait_s=0.01))
    engine.start()
    try:
        payload = orjson.dumps({"ts": now_ms(), "lat": 1.0, "lon": 2.0})
        future = engine.submit([("telematics/burnt/gps", payload)])
        with pytest.raises(EngineUnavailableError, match="did not commit") as failed:
            future.result(timeout=5)
        assert isinstance(failed.value.__cause__, RuntimeError)
        wait_for(lambda: not engine.running, "the engine thread to stop")
        with pytest.raises(EngineUnavailableError, match="not running"):
            engine.submit([("telematics/burnt/gps", payload)]).result(timeout=1)
    finally:
        engine.stop()
        store.close()
