"""The HTTP API over real connections: uvicorn on 127.0.0.1, a real SqliteStore, a running
Engine and Dispatcher. Readings reach the engine through a queue standing in for the MQTT
source, so the engine thread alone steps the pipeline (decode, step, commit, ack)."""

from __future__ import annotations

import base64
import http.client
import math
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import httpx
import numpy as np
import orjson
import psycopg
import pytest
import uvicorn
from psycopg import sql

from alerts.address_policy import AddressPolicy, parse_allow
from alerts.dispatcher import Dispatcher, RetryPolicy
from alerts.outbox import Attempt, DeliveryState
from devices.mqtt_source import Message
from engine.api.app import create_app
from engine.cli.main import main as cli_main
from engine.runtime.live import Engine, EngineSettings
from engine.store.postgres_store import PostgresStore
from engine.store.sqlite_store import SqliteStore
from geofence.coords import gcj02_to_bd09, gcj02_to_wgs84, wgs84_to_bd09, wgs84_to_gcj02
from lending.consumer import LendingConsumer
from simulator.vehicles import make_vin
from tests.conftest import PG_DSN
from tests.factories import OTHER_VIN, VIN, offset

TOKEN = "s3cret-api-token"
PROBLEMS = "https://pledgewatch.dev/problems/"
LOT = (31.2000, 121.5000)  # an impound lot, a square about 220 m across
DESIGN_METRICS = (
    "pledgewatch_readings_total",
    "pledgewatch_rejected_total",
    "pledgewatch_readings_missing_total",
    "pledgewatch_alerts_total",
    "pledgewatch_outbox_pending",
    "pledgewatch_deliveries_total",
    "pledgewatch_batch_seconds",
)

LOOPBACK = AddressPolicy(parse_allow("127.0.0.0/8"))  # the tests' receivers are local


class QueueSource:
    """The MqttSource surface the engine uses, fed by the test instead of a broker."""

    connected = True

    def __init__(self) -> None:
        self.queue: queue.Queue[Message] = queue.Queue()
        self.acked: list[Message] = []
        self.mid = 0

    def start(self) -> None:
        pass

    def stop(self, timeout_s: float = 5.0) -> None:
        pass

    def get_batch(self, max_messages: int, max_wait_s: float) -> list[Message]:
        try:
            batch = [self.queue.get(timeout=max_wait_s)]
        except queue.Empty:
            return []
        while len(batch) < max_messages:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def ack(self, messages: list[Message]) -> None:
        self.acked += messages

    def publish(self, topic: str, payload: object) -> None:
        """Queue one message and wait until the engine has committed and acked it."""
        raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        self.mid += 1
        want = len(self.acked) + 1
        self.queue.put(Message(topic, raw, 1, self.mid, int(time.time() * 1000), 1))
        wait_for(lambda: len(self.acked) >= want, "the engine to commit the message")


def wait_for(check: Callable[[], object], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


class Server:
    """A uvicorn server on a free port of 127.0.0.1, in a thread."""

    def __init__(self, app: Any) -> None:
        # IPPROTO_TCP explicitly: asyncio then sets TCP_NODELAY (no 40 ms delayed-ACK stalls)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="critical", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Self:
        self.thread.start()
        wait_for(lambda: self.server.started, "uvicorn to start")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(5)
        self.sock.close()


@dataclass
class Live:
    engine: Engine
    store: SqliteStore
    source: QueueSource
    dispatcher: Dispatcher
    url: str
    http: httpx.Client  # with the bearer token


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    yield from run_live(tmp_path_factory.mktemp("api"))


def run_live(directory: Path, consumer: LendingConsumer | None = None) -> Iterator[Live]:
    """An engine on a SQLite file in `directory`, fed by a queue, with its dispatcher and
    API on a loopback port; stopped when the generator is closed."""
    store = SqliteStore(directory / "pledgewatch.db")
    store.migrate()
    source = QueueSource()
    settings = EngineSettings(max_wait_s=0.01)
    engine = Engine(store, source, settings=settings, consumer=consumer)
    engine.start()
    # Retries an hour apart: a failed delivery stays put while a test looks at it.
    dispatcher = Dispatcher(
        store, RetryPolicy(base_s=3600.0, timeout_s=1.0), poll_s=0.05, addresses=LOOPBACK
    )
    dispatcher.start()
    app = create_app(engine, store, dispatcher, TOKEN, webhook_addresses=LOOPBACK)
    with (
        Server(app) as server,
        httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        ) as http,
    ):
        yield Live(engine, store, source, dispatcher, server.url, http)
    dispatcher.stop()
    engine.stop()
    store.close()


@dataclass
class Api:
    store: SqliteStore | PostgresStore
    engine: Engine
    url: str
    admin: httpx.Client  # with the API token


@contextmanager
def api_on_store(kind: str, directory: Path, **app_options: Any) -> Iterator[Api]:
    """An engine on a SQLite file in `directory` (`kind` "sqlite") or in a fresh PostgreSQL
    schema ("postgres", dropped afterwards), fed by an idle queue, with the API (no
    dispatcher; `app_options` go to `create_app`) on a loopback port."""
    store: SqliteStore | PostgresStore
    schema = None
    if kind == "sqlite":
        store = SqliteStore(directory / "pledgewatch.db")
    else:
        schema = f"pw_test_{uuid.uuid4().hex[:12]}"
        store = PostgresStore(PG_DSN, schema=schema, max_size=4)
    store.migrate()
    engine = Engine(store, QueueSource(), settings=EngineSettings(max_wait_s=0.01))
    engine.start()
    app = create_app(engine, store, None, TOKEN, **app_options)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with (
            Server(app) as server,
            httpx.Client(base_url=server.url, headers=auth, timeout=10) as admin,
        ):
            yield Api(store, engine, server.url, admin)
    finally:
        engine.stop()
        store.close()
        if schema is not None:
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )


def square(center: tuple[float, float], half_m: float) -> list[list[float]]:
    """A closed ring of [lon, lat] around `center` (lat, lon)."""
    corners = [(-half_m, -half_m), (-half_m, half_m), (half_m, half_m), (half_m, -half_m)]
    ring = [offset(*center, n, e) for n, e in corners]
    ring.append(ring[0])
    return [[lon, lat] for lat, lon in ring]


def polygon_feature(center: tuple[float, float] = LOT, half_m: float = 110.0, **props: Any) -> Any:
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [square(center, half_m)]},
        "properties": {"kind": "zone", **props},
    }


def loan_doc(devices: list[str], vin: str = VIN, zones: list[str] | None = None) -> Any:
    return {"vin": vin, "device_ids": devices, "zone_ids": zones or [], "status": "active"}


def assert_problem(response: httpx.Response, status: int, slug: str, *words: str) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == PROBLEMS + slug
    assert body["status"] == status
    assert body["title"]
    assert body["instance"] == response.request.url.path
    for word in words:
        assert word in body["detail"], body["detail"]
    return body


# -- auth and health


def test_auth_is_required_everywhere_but_healthz_and_readyz(live: Live) -> None:
    with httpx.Client(base_url=live.url, timeout=5) as anon:
        missing = anon.get("/v1/fences")
        assert_problem(missing, 401, "unauthorized", "Authorization")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = anon.get("/v1/fences", headers={"Authorization": "Bearer nope"})
        assert_problem(wrong, 401, "unauthorized", "not valid")
        assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
        basic = anon.get("/v1/fences", headers={"Authorization": "Basic dXNlcjpwdw=="})
        assert_problem(basic, 401, "unauthorized", "Bearer")
        assert_problem(anon.get("/metrics"), 401, "unauthorized")
        assert_problem(anon.get("/openapi.json"), 401, "unauthorized")
        assert_problem(anon.get("/no/such/route"), 401, "unauthorized")
        health = anon.get("/healthz")
        ready = anon.get("/readyz")
    assert health.status_code == 200
    body = health.json()
    assert {k: body.pop(k) for k in ("status", "engine_alive", "mqtt_connected")} == {
        "status": "ok",
        "engine_alive": True,
        "mqtt_connected": True,
    }
    assert body.keys() == {"last_commit_age_s", "input_waiting_s", "outbox_pending"}
    assert body["input_waiting_s"] == 0
    assert isinstance(body["outbox_pending"], int)
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["stall_s"] == 30
    assert live.http.get("/v1/fences").status_code == 200


# -- fences


def test_fence_put_get_list_delete(live: Live) -> None:
    created = live.http.put("/v1/fences/crud-lot", json=polygon_feature(name="Lot"))
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/v1/fences/crud-lot"
    assert created.json()["id"] == "crud-lot"
    assert created.json()["properties"]["name"] == "Lot"
    replaced = live.http.put("/v1/fences/crud-lot", json=polygon_feature(name="Lot 2"))
    assert replaced.status_code == 200
    got = live.http.get("/v1/fences/crud-lot").json()
    assert got["properties"]["name"] == "Lot 2"
    assert got["geometry"]["type"] == "Polygon"
    ids = [f["id"] for f in live.http.get("/v1/fences", params={"limit": 1000}).json()["items"]]
    assert "crud-lot" in ids
    assert live.http.delete("/v1/fences/crud-lot").status_code == 204
    assert_problem(live.http.get("/v1/fences/crud-lot"), 404, "not-found", "crud-lot")
    assert_problem(live.http.delete("/v1/fences/crud-lot"), 404, "not-found", "crud-lot")


def test_circle_fence(live: Live) -> None:
    circle = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [121.45, 31.21]},
        "properties": {"kind": "risk_site", "category": "pawnshop", "radius_m": 150},
    }
    response = live.http.put("/v1/fences/pawn-circle", json=circle)
    assert response.status_code == 201, response.text
    assert response.json()["properties"]["radius_m"] == 150


def test_fence_change_reaches_the_engine_without_restart(live: Live) -> None:
    assert live.http.put("/v1/fences/hot-1", json=polygon_feature()).status_code == 201
    wait_for(lambda: "hot-1" in live.engine.pipeline.index.by_id, "the fence in the index", 1.0)
    assert live.http.delete("/v1/fences/hot-1").status_code == 204
    wait_for(lambda: "hot-1" not in live.engine.pipeline.index.by_id, "the fence gone", 1.0)


def test_self_intersecting_polygon_is_422_naming_the_defect(live: Live) -> None:
    bow_tie = [[121.0, 31.0], [121.1, 31.1], [121.1, 31.0], [121.0, 31.1], [121.0, 31.0]]
    feature = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [bow_tie]},
        "properties": {"kind": "zone"},
    }
    response = live.http.put("/v1/fences/bow-tie", json=feature)
    body = assert_problem(response, 422, "validation-error", "self-intersection")
    assert body["errors"][0]["field"] == "geometry"
    assert "self-intersection" in body["errors"][0]["message"]
    assert live.http.get("/v1/fences/bow-tie").status_code == 404


def test_bad_fence_kind_names_the_property(live: Live) -> None:
    response = live.http.put("/v1/fences/bad-kind", json=polygon_feature(kind="parking"))
    body = assert_problem(response, 422, "validation-error", "properties.kind")
    assert body["errors"][0]["field"] == "properties.kind"


def test_import_is_all_or_nothing(live: Live) -> None:
    good = [{**polygon_feature(), "id": f"imp-{i}"} for i in range(2)]
    bad = {**polygon_feature(), "id": "imp-bad"}
    bad["geometry"] = {"type": "Polygon", "coordinates": [[[121.0, 31.0], [121.1, 31.0]]]}
    collection = {"type": "FeatureCollection", "features": [*good, bad]}
    response = live.http.post("/v1/fences:import", json=collection)
    body = assert_problem(response, 422, "validation-error", "feature 2", "imp-bad")
    assert body["errors"][0]["field"] == "features[2].geometry"
    for i in range(2):
        assert live.http.get(f"/v1/fences/imp-{i}").status_code == 404
    no_id = {"type": "FeatureCollection", "features": [polygon_feature()]}
    body = assert_problem(
        live.http.post("/v1/fences:import", json=no_id), 422, "validation-error", "id"
    )
    assert body["errors"] == [
        {"field": "features[0].id", "message": "needs a string 'id', got None"}
    ]

    response = live.http.post("/v1/fences:import", json={**collection, "features": good})
    assert response.status_code == 200, response.text
    assert response.json() == {"imported": 2, "fence_ids": ["imp-0", "imp-1"]}
    for i in range(2):
        assert live.http.get(f"/v1/fences/imp-{i}").status_code == 200
    wait_for(lambda: "imp-1" in live.engine.pipeline.index.by_id, "imported fences in the index")


def test_list_pages_follow_next(live: Live) -> None:
    features = [{**polygon_feature(), "id": f"page-{i}"} for i in range(5)]
    collection = {"type": "FeatureCollection", "features": features}
    assert live.http.post("/v1/fences:import", json=collection).status_code == 200
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        params = {"limit": 2} if cursor is None else {"limit": 2, "cursor": cursor}
        page = live.http.get("/v1/fences", params=params).json()
        assert set(page) == {"items", "next"}
        assert len(page["items"]) <= 2
        seen += [f["id"] for f in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert [s for s in seen if s.startswith("page-")] == [f"page-{i}" for i in range(5)]
    assert seen == sorted(seen)
    bad_cursor = live.http.get("/v1/fences", params={"cursor": "garbage"})
    assert assert_problem(bad_cursor, 400, "invalid-parameter")["errors"][0]["field"] == "cursor"
    for limit in ("0", "abc", "1001"):
        bad_limit = live.http.get("/v1/fences", params={"limit": limit})
        body = assert_problem(bad_limit, 400, "invalid-parameter", "limit")
        assert body["errors"][0]["field"] == "limit"


SQUARE = (31.2304, 121.4737)  # People's Square, WGS84; over 3 km from LOT
SQUARE_GCJ = wgs84_to_gcj02(*SQUARE)


def max_diff(a: Any, b: Any) -> float:
    return float(abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).max())


def test_fence_drawn_on_amap_is_stored_in_wgs84_and_given_back_as_drawn(live: Live) -> None:
    """DESIGN §9: a gcj02 fence is stored in WGS84; `?coord_sys=` converts it on the way out."""
    drawn = square(SQUARE_GCJ, 150.0)
    doc = polygon_feature(SQUARE_GCJ, 150.0, coord_sys="gcj02", name="AMap lot")
    put = live.http.put("/v1/fences/amap-lot", json=doc)
    assert put.status_code == 201, put.text
    props = put.json()["properties"]
    assert (props["coord_sys"], props["declared_coord_sys"]) == ("wgs84", "gcj02")
    wgs = [[*reversed(gcj02_to_wgs84(lat, lon))] for lon, lat in drawn]

    plain = live.http.get("/v1/fences/amap-lot").json()
    assert plain["properties"]["coord_sys"] == "wgs84"
    assert max_diff(plain["geometry"]["coordinates"][0], wgs) < 1e-12
    assert max_diff(plain["geometry"]["coordinates"][0], drawn) > 0.003  # ~480 m apart
    as_drawn = live.http.get("/v1/fences/amap-lot", params={"coord_sys": "gcj02"}).json()
    assert as_drawn["properties"]["coord_sys"] == "gcj02"
    assert as_drawn["properties"]["declared_coord_sys"] == "gcj02"
    assert max_diff(as_drawn["geometry"]["coordinates"][0], drawn) < 1e-7
    baidu = live.http.get("/v1/fences/amap-lot", params={"coord_sys": "bd09"}).json()
    want = [[*reversed(gcj02_to_bd09(lat, lon))] for lon, lat in drawn]
    assert max_diff(baidu["geometry"]["coordinates"][0], want) < 1e-7
    listed = live.http.get("/v1/fences", params={"coord_sys": "gcj02", "limit": 1000}).json()
    (mine,) = [f for f in listed["items"] if f["id"] == "amap-lot"]
    assert mine == as_drawn
    assert {f["properties"]["coord_sys"] for f in listed["items"]} == {"gcj02"}

    # the engine compares in WGS84: a tracker at the WGS84 point is inside, and a phone
    # reporting AMap coordinates of that point lands on it
    wait_for(lambda: "amap-lot" in live.engine.pipeline.index.by_id, "the fence in the index")
    now = int(time.time() * 1000)
    live.source.publish("telematics/sq-wgs/gps", {"ts": now, "lat": SQUARE[0], "lon": SQUARE[1]})
    gcj_fix = {"ts": now, "lat": SQUARE_GCJ[0], "lon": SQUARE_GCJ[1], "coord_sys": "gcj02"}
    live.source.publish("telematics/sq-amap/gps", gcj_fix)
    inside = live.http.get("/v1/devices", params={"inside": "amap-lot"}).json()
    assert [d["device_id"] for d in inside["items"]] == ["sq-amap", "sq-wgs"]
    fix = live.http.get("/v1/devices/sq-amap").json()["last_fix"]
    assert max_diff([fix["lat"], fix["lon"]], SQUARE) < 1e-9


def test_circle_drawn_on_baidu_comes_back_as_drawn(live: Live) -> None:
    center = wgs84_to_bd09(*SQUARE)
    doc = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [center[1], center[0]]},
        "properties": {"kind": "risk_site", "radius_m": 200, "coord_sys": "bd09"},
    }
    assert live.http.put("/v1/fences/baidu-pawn", json=doc).status_code == 201
    plain = live.http.get("/v1/fences/baidu-pawn").json()
    assert max_diff(plain["geometry"]["coordinates"], [SQUARE[1], SQUARE[0]]) < 1e-9
    back = live.http.get("/v1/fences/baidu-pawn", params={"coord_sys": "bd09"}).json()
    assert max_diff(back["geometry"]["coordinates"], [center[1], center[0]]) < 1e-7
    assert back["properties"]["radius_m"] == 200


def test_unknown_coord_sys_is_422_or_400_naming_the_field(live: Live) -> None:
    doc = polygon_feature(SQUARE_GCJ, 100.0, coord_sys="amap")
    body = assert_problem(
        live.http.put("/v1/fences/bad-sys", json=doc), 422, "validation-error", "coord_sys"
    )
    assert body["errors"][0]["field"] == "properties.coord_sys"
    collection = {"type": "FeatureCollection", "features": [{**doc, "id": "bad-sys"}]}
    imported = live.http.post("/v1/fences:import", json=collection)
    body = assert_problem(imported, 422, "validation-error", "coord_sys")
    assert body["errors"][0]["field"] == "features[0].properties.coord_sys"
    assert live.http.put("/v1/fences/sys-ok", json=polygon_feature()).status_code == 201
    for path in ("/v1/fences/sys-ok", "/v1/fences"):
        for value in ("GCJ02", "baidu", ""):
            bad = live.http.get(path, params={"coord_sys": value})
            body = assert_problem(bad, 400, "invalid-parameter", "coord_sys")
            assert body["errors"][0]["field"] == "coord_sys"


# -- loans and alerts


def test_loan_put_get_list(live: Live) -> None:
    doc = {
        **loan_doc(["loan-trk-1"], zones=["home"]),
        "principal": 50000,
        "vehicle": {"make": "SAIC", "model": "MG5", "year": 2022, "mileage_km": 30000},
    }
    created = live.http.put("/v1/loans/LN-1", json=doc)
    assert created.status_code == 201, created.text
    assert created.json()["alerts"] == []
    assert live.http.put("/v1/loans/LN-1", json=doc).status_code == 200
    got = live.http.get("/v1/loans/LN-1").json()
    assert got["vin"] == VIN
    assert got["device_ids"] == ["loan-trk-1"]
    assert got["vehicle"]["model"] == "MG5"
    # this engine runs without the lending consumer: no risk, collateral or price
    assert (got["risk"], got["collateral"], got["price"]) == (None, None, None)
    listed = live.http.get("/v1/loans").json()
    assert "LN-1" in [loan["loan_id"] for loan in listed["items"]]
    assert_problem(live.http.get("/v1/loans/LN-none"), 404, "not-found", "LN-none")
    wait_for(lambda: "LN-1" in live.engine.pipeline.loans, "the loan in the engine", 1.0)


def test_loan_import_raises_the_conflicts_the_puts_would(live: Live) -> None:
    rng = random.Random(7)
    vin_x, vin_y = (make_vin(rng, "LSV", 2022) for _ in range(2))
    assert live.http.put("/v1/loans/IMP-0", json=loan_doc(["imp-a"], vin_x)).status_code == 201
    batch = [
        {"loan_id": "IMP-1", **loan_doc(["imp-b"], vin_x)},  # clashes with the stored IMP-0
        {"loan_id": "IMP-2", **loan_doc(["imp-c"], vin_y)},
        {"loan_id": "IMP-3", **loan_doc(["imp-d"], vin_y)},  # clashes with IMP-2, just above
        {"loan_id": "IMP-0", **loan_doc(["imp-a", "imp-e"], vin_x)},  # a re-PUT: no new alert
    ]
    response = live.http.post("/v1/loans:import", json=batch)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["imported"], body["loan_ids"]) == (4, ["IMP-1", "IMP-2", "IMP-3", "IMP-0"])
    raised = [(a["loan_id"], a["details"]["other_loan_ids"]) for a in body["alerts"]]
    assert raised == [("IMP-1", ["IMP-0"]), ("IMP-3", ["IMP-2"])]
    assert all(a["type"] == "pledge.vin_conflict" for a in body["alerts"])
    for alert in body["alerts"]:
        assert live.http.get(f"/v1/alerts/{alert['id']}").status_code == 200  # stored
    assert live.http.get("/v1/loans/IMP-0").json()["device_ids"] == ["imp-a", "imp-e"]
    wait_for(lambda: live.engine.loan_for("imp-d") is not None, "imported loans in the engine")
    assert live.engine.loan_for("imp-e").loan_id == "IMP-0"  # type: ignore[union-attr]  # waited


def test_loan_import_is_all_or_nothing_and_takes_large_bodies(live: Live) -> None:
    rng = random.Random(8)
    good = [
        {"loan_id": f"BULK-{i}", **loan_doc([f"bulk-{i}"], make_vin(rng, "LFV", 2021))}
        for i in range(6000)  # about 1.3 MB: over the 1 MiB limit of other bodies
    ]
    bad = [*good[:3], {"loan_id": "BULK-bad", **loan_doc(["bulk-x"], "NOT-A-VIN")}]
    body = assert_problem(
        live.http.post("/v1/loans:import", json=bad), 422, "validation-error", "BULK-bad"
    )
    assert body["errors"][0]["field"] == "loans[3].vin"
    assert live.http.get("/v1/loans/BULK-0").status_code == 404
    twice = [good[0], good[0]]
    body = assert_problem(
        live.http.post("/v1/loans:import", json=twice), 422, "validation-error", "twice"
    )
    assert body["errors"][0]["field"] == "loans[1].loan_id"
    not_a_list = live.http.post("/v1/loans:import", json={"loan_id": "BULK-0"})
    assert assert_problem(not_a_list, 422, "validation-error", "array")["errors"][0]["field"] == (
        "loans"
    )
    started = time.perf_counter()
    response = live.http.post("/v1/loans:import", json=good)
    assert response.status_code == 200, response.text
    assert response.json()["imported"] == len(good)
    assert time.perf_counter() - started < 60  # one transaction, not 6,000 requests
    assert live.http.get("/v1/loans/BULK-5999").json()["vin"] == good[5999]["vin"]


def test_cli_imports_fences_and_loans_through_the_api(
    live: Live, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`pledgewatch fences import FILE` and `loans import FILE` (DESIGN §7)."""
    fences = {
        "type": "FeatureCollection",
        "features": [{**polygon_feature(), "id": f"cli-{i}"} for i in range(3)],
    }
    (tmp_path / "fences.geojson").write_bytes(orjson.dumps(fences))
    vin = make_vin(random.Random(9), "LGX", 2023)
    loans = [{"loan_id": "CLI-1", **loan_doc(["cli-a"], vin, ["cli-0"])}]
    (tmp_path / "loans.json").write_bytes(orjson.dumps(loans))
    api = ["--api", live.url, "--api-token", TOKEN]
    assert cli_main(["fences", "import", str(tmp_path / "fences.geojson"), *api]) == 0
    assert cli_main(["loans", "import", str(tmp_path / "loans.json"), *api]) == 0
    assert "imported 3 fences" in capsys.readouterr().out
    assert live.http.get("/v1/fences/cli-2").status_code == 200
    assert live.http.get("/v1/loans/CLI-1").json()["zone_ids"] == ["cli-0"]

    # A bad record is caught before anything is sent; a wrong token or no engine is clear.
    loans.append({"loan_id": "CLI-2", **loan_doc(["cli-b"], "SHORT")})
    (tmp_path / "loans.json").write_bytes(orjson.dumps(loans))
    assert cli_main(["loans", "import", str(tmp_path / "loans.json"), *api]) == 2
    assert "loans[1]" in capsys.readouterr().err
    assert live.http.get("/v1/loans/CLI-2").status_code == 404
    wrong = ["--api", live.url, "--api-token", "nope"]
    assert cli_main(["fences", "import", str(tmp_path / "fences.geojson"), *wrong]) == 2
    assert "HTTP 401" in capsys.readouterr().err
    nobody = ["--api", "http://127.0.0.1:9", "--api-token", TOKEN]
    assert cli_main(["fences", "import", str(tmp_path / "fences.geojson"), *nobody]) == 2
    assert "no engine answers" in capsys.readouterr().err


def test_bad_vin_is_422_naming_the_field(live: Live) -> None:
    response = live.http.put("/v1/loans/LN-bad", json=loan_doc(["t"], vin="NOT-A-VIN"))
    body = assert_problem(response, 422, "validation-error", "vin", "NOT-A-VIN")
    assert body["errors"] == [{"field": "vin", "message": body["detail"]}]
    no_devices = live.http.put("/v1/loans/LN-bad", json=loan_doc([]))
    assert assert_problem(no_devices, 422, "validation-error")["errors"][0]["field"] == "device_ids"
    mileage = {**loan_doc(["t"]), "vehicle": {"mileage_km": -1}}
    body = assert_problem(live.http.put("/v1/loans/LN-bad", json=mileage), 422, "validation-error")
    assert body["errors"][0]["field"] == "vehicle.mileage_km"
    assert live.http.get("/v1/loans/LN-bad").status_code == 404


def test_vin_on_another_active_loan_raises_vin_conflict(live: Live) -> None:
    assert live.http.put("/v1/loans/VC-1", json=loan_doc(["vc-a"], OTHER_VIN)).status_code == 201
    response = live.http.put("/v1/loans/VC-2", json=loan_doc(["vc-b"], OTHER_VIN))
    assert response.status_code == 201
    [raised] = response.json()["alerts"]
    assert raised["type"] == "pledge.vin_conflict"
    assert raised["details"]["other_loan_ids"] == ["VC-1"]
    page = live.http.get("/v1/alerts", params={"type": "pledge.vin_conflict", "loan_id": "VC-2"})
    assert page.status_code == 200
    [alert] = page.json()["items"]
    assert alert["id"] == raised["id"]
    assert alert["vin"] == OTHER_VIN
    assert alert["ack"] is None
    assert live.http.get(f"/v1/alerts/{alert['id']}").json()["id"] == alert["id"]
    again = live.http.put("/v1/loans/VC-2", json=loan_doc(["vc-b", "vc-c"], OTHER_VIN))
    assert again.status_code == 200
    assert again.json()["alerts"] == []  # the same conflict is not reported twice


def test_alert_filters_and_ack(live: Live) -> None:
    live.http.put("/v1/loans/ACK-1", json=loan_doc(["ack-a"], "1HGCM82633A004352"))
    response = live.http.put("/v1/loans/ACK-2", json=loan_doc(["ack-b"], "1HGCM82633A004352"))
    alert_id = response.json()["alerts"][0]["id"]
    since_ms = int(time.time() * 1000) - 60_000
    for since in (str(since_ms), "2020-01-01T00:00:00Z", "2020-01-01T08:00:00+08:00"):
        page = live.http.get("/v1/alerts", params={"since": since, "loan_id": "ACK-2"}).json()
        assert [a["id"] for a in page["items"]] == [alert_id], since
    future = live.http.get("/v1/alerts", params={"since": "2100-01-01T00:00:00Z"}).json()
    assert future["items"] == []
    assert live.http.get("/v1/alerts", params={"device_id": "nobody"}).json()["items"] == []

    acked = live.http.post(f"/v1/alerts/{alert_id}/ack", json={"note": "called the borrower"})
    assert acked.status_code == 200, acked.text
    assert acked.json()["ack"]["note"] == "called the borrower"
    assert live.http.get(f"/v1/alerts/{alert_id}").json()["ack"]["note"] == "called the borrower"
    assert live.http.post(f"/v1/alerts/{alert_id}/ack").status_code == 200  # no body
    bad_note = live.http.post(f"/v1/alerts/{alert_id}/ack", json={"note": 5})
    assert assert_problem(bad_note, 422, "validation-error", "note")["errors"][0]["field"] == "note"
    assert_problem(live.http.post("/v1/alerts/nope/ack"), 404, "not-found", "nope")
    assert_problem(live.http.get("/v1/alerts/nope"), 404, "not-found", "nope")


def test_bad_alert_query_parameters_are_400_naming_them(live: Live) -> None:
    for params, name in (
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-11-29T08:15:00"}, "since"),  # no offset: ambiguous
        ({"since": "-5"}, "since"),
        ({"type": "zone.wandered"}, "type"),
        ({"limit": "-1"}, "limit"),
        ({"cursor": "x"}, "cursor"),
    ):
        response = live.http.get("/v1/alerts", params=params)
        body = assert_problem(response, 400, "invalid-parameter", name)
        assert body["errors"][0]["field"] == name


# -- webhooks


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data", "outside --webhook-allow"),
        ("http://10.1.2.3:5432/", "outside --webhook-allow"),
        ("http://[::1]:8080/hook", "outside --webhook-allow"),
        ("https://ops:hunter2@127.0.0.1/hook", "user:password@"),
        ("https://no-such-host.invalid/hook", "does not resolve"),
    ],
)
def test_webhook_urls_must_reach_allowed_addresses(live: Live, url: str, why: str) -> None:
    response = live.http.put("/v1/webhooks/probe", json={"url": url, "secret": "s"})
    body = assert_problem(response, 422, "validation-error", why)
    assert body["errors"][0]["field"] == "url"
    assert "hunter2" not in response.text
    assert live.http.get("/v1/webhooks/probe").status_code == 404


def test_webhooks_never_show_their_secret(live: Live) -> None:
    doc = {"url": "https://127.0.0.2/hooks", "secret": "whsec-1", "types": ["zone.left"]}
    created = live.http.put("/v1/webhooks/servicing", json=doc)
    assert created.status_code == 201, created.text
    assert created.json() == {
        "hook_id": "servicing",
        "url": "https://127.0.0.2/hooks",
        "types": ["zone.left"],
    }
    assert live.http.put("/v1/webhooks/servicing", json=doc).status_code == 200
    listed = live.http.get("/v1/webhooks")
    assert "whsec-1" not in listed.text
    assert "servicing" in [h["hook_id"] for h in listed.json()["items"]]
    assert listed.json()["next"] is None
    assert "secret" not in live.http.get("/v1/webhooks/servicing").json()
    assert live.http.delete("/v1/webhooks/servicing").status_code == 204
    assert_problem(live.http.delete("/v1/webhooks/servicing"), 404, "not-found", "servicing")


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"url": "ftp://lender.example/x", "secret": "s"}, "url"),
        ({"url": "https://", "secret": "s"}, "url"),
        ({"url": "mqtt://broker.lender.example", "secret": "s"}, "url"),
        ({"url": "mqtt://broker.lender.example/alerts/+", "secret": "s"}, "url"),
        ({"url": "mqtt://ops:pw@broker.lender.example/alerts", "secret": "s"}, "url"),
        ({"url": 5, "secret": "s"}, "url"),
        ({"url": "https://lender.example/x"}, "secret"),
        ({"url": "https://lender.example/x", "secret": "  "}, "secret"),
        ({"url": "https://lender.example/x", "secret": "s", "types": ["zone.gone"]}, "types"),
        ({"url": "https://lender.example/x", "secret": "s", "types": "zone.left"}, "types"),
    ],
)
def test_bad_webhook_is_422_naming_the_field(live: Live, doc: Any, field: str) -> None:
    response = live.http.put("/v1/webhooks/bad", json=doc)
    body = assert_problem(response, 422, "validation-error", field)
    assert body["errors"][0]["field"] == field
    assert live.http.get("/v1/webhooks/bad").status_code == 404


def test_dead_delivery_is_listed_and_redelivered(live: Live) -> None:
    with socket.socket() as closed:  # a port nobody listens on: every POST fails at once
        closed.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}/hook"
    hook = {"url": dead_url, "secret": "whsec", "types": ["pledge.vin_conflict"]}
    assert live.http.put("/v1/webhooks/dead-end", json=hook).status_code == 201
    live.http.put("/v1/loans/DL-1", json=loan_doc(["dl-a"], "JH4KA8260MC000001"))
    alert = live.http.put("/v1/loans/DL-2", json=loan_doc(["dl-b"], "JH4KA8260MC000001"))
    alert_id = alert.json()["alerts"][0]["id"]

    def first_attempt_failed() -> bool:
        pending = live.store.due_deliveries("dead-end", 2**62, 10)
        return any(d.alert_id == alert_id and d.attempts >= 1 for d in pending)

    wait_for(first_attempt_failed, "the dispatcher's first attempt")
    [delivery] = live.store.due_deliveries("dead-end", 2**62, 10)
    now = int(time.time() * 1000)
    gave_up = Attempt(delivery.delivery_id, now, DeliveryState.DEAD, now, None, "gave up")
    live.store.record_attempts([gave_up])  # as the dispatcher does past the maximum age

    dead = live.http.get("/v1/deliveries/dead").json()
    [item] = [d for d in dead["items"] if d["delivery_id"] == delivery.delivery_id]
    assert item["state"] == "dead"
    assert item["alert_id"] == alert_id
    assert item["alert"]["type"] == "pledge.vin_conflict"
    redelivered = live.http.post(f"/v1/deliveries/{delivery.delivery_id}:redeliver")
    assert redelivered.status_code == 202, redelivered.text
    assert redelivered.json() == {"delivery_id": delivery.delivery_id, "state": "pending"}
    again = live.http.post(f"/v1/deliveries/{delivery.delivery_id}:redeliver")
    assert_problem(again, 404, "not-found", str(delivery.delivery_id))
    assert live.http.delete("/v1/webhooks/dead-end").status_code == 204
    counts = live.dispatcher.counters.snapshot()
    assert counts.get("failed", 0) >= 1


# -- devices and rejects


def test_devices_inside_and_near(live: Live) -> None:
    assert live.http.put("/v1/fences/impound-1", json=polygon_feature()).status_code == 201
    live.http.put("/v1/loans/DEV-1", json=loan_doc(["dev-in"], "WDB1240221J000001"))
    wait_for(lambda: "impound-1" in live.engine.pipeline.index.by_id, "the lot in the index")
    now = int(time.time() * 1000)
    outside = offset(*LOT, 1000.0, 0.0)
    live.source.publish("telematics/dev-in/gps", {"ts": now, "lat": LOT[0], "lon": LOT[1]})
    live.source.publish("telematics/dev-out/gps", {"ts": now, "lat": outside[0], "lon": outside[1]})
    live.source.publish(
        "telematics/dev-in/status", {"ts": now + 1, "ext_power": False, "tamper": False}
    )

    device = live.http.get("/v1/devices/dev-in").json()
    assert device["device_id"] == "dev-in"
    assert device["loan_id"] == "DEV-1"
    assert device["online"] is True
    assert device["last_fix"]["lat"] == LOT[0]
    assert device["last_fix"]["lon"] == LOT[1]
    assert device["last_status"]["ext_power"] is False
    assert "impound-1" in device["inside"]
    assert live.http.get("/v1/devices/dev-out").json()["inside"] == []

    inside = live.http.get("/v1/devices", params={"inside": "impound-1"}).json()
    assert [d["device_id"] for d in inside["items"]] == ["dev-in"]
    assert inside["next"] is None
    near = live.http.get("/v1/devices", params={"near": f"{LOT[0]},{LOT[1]},2000"}).json()
    assert [d["device_id"] for d in near["items"]] == ["dev-in", "dev-out"]
    assert near["items"][0]["distance_m"] == 0
    assert 990 < near["items"][1]["distance_m"] < 1010
    close = live.http.get("/v1/devices", params={"near": f"{LOT[0]},{LOT[1]},500"}).json()
    assert [d["device_id"] for d in close["items"]] == ["dev-in"]

    assert_problem(live.http.get("/v1/devices/ghost"), 404, "not-found", "ghost")
    assert_problem(live.http.get("/v1/devices"), 400, "invalid-parameter", "exactly one")
    both = live.http.get("/v1/devices", params={"inside": "impound-1", "near": "31,121,10"})
    assert_problem(both, 400, "invalid-parameter", "exactly one")
    for near_value in ("31,121", "a,b,c", "91,121,10", "31,121,0", "31,121,nan"):
        bad = live.http.get("/v1/devices", params={"near": near_value})
        assert assert_problem(bad, 400, "invalid-parameter", "near")["errors"][0]["field"] == "near"
    absent = live.http.get("/v1/devices", params={"inside": "no-such-fence"})
    assert_problem(absent, 404, "not-found", "no-such-fence")


def test_rejected_input_is_listed_with_raw_text(live: Live) -> None:
    before_ms = int(time.time() * 1000)
    live.source.publish("telematics/rej-1/gps", b"\xff{not json\n")
    page = live.http.get("/v1/rejects", params={"limit": 5}).json()
    [item] = [r for r in page["items"] if r["topic"] == "telematics/rej-1/gps"]
    assert item["reason"] == "not_json"
    assert item["raw"] == "\\xff{not json\n"
    assert item["detail"]
    received_ms = datetime.fromisoformat(item["received_at"]).timestamp() * 1000
    assert before_ms - 1000 <= received_ms <= time.time() * 1000 + 1000


# -- errors the framework raises, and limits


def test_unknown_route_and_wrong_method_are_problems(live: Live) -> None:
    assert_problem(live.http.get("/v1/nothing"), 404, "not-found", "/v1/nothing")
    wrong = live.http.get("/v1/fences:import")
    assert_problem(wrong, 405, "method-not-allowed", "GET")
    assert wrong.headers["allow"] == "POST"
    loans = live.http.delete("/v1/loans/LN-1")
    assert_problem(loans, 405, "method-not-allowed", "DELETE")
    assert loans.headers["allow"] == "GET, PUT"


def test_framework_validation_error_is_a_problem(live: Live) -> None:
    response = live.http.post("/v1/deliveries/abc:redeliver")
    body = assert_problem(response, 422, "validation-error", "delivery_id")
    assert body["errors"][0]["field"] == "delivery_id"


def test_malformed_json_and_media_type(live: Live) -> None:
    headers = {"content-type": "application/json"}
    broken = live.http.put("/v1/fences/x", content=b"{", headers=headers)
    assert_problem(broken, 400, "malformed-request", "not valid JSON")
    empty = live.http.put("/v1/fences/x", content=b"", headers=headers)
    assert_problem(empty, 400, "malformed-request", "empty")
    xml = live.http.put("/v1/fences/x", content=b"<a/>", headers={"content-type": "text/xml"})
    assert_problem(xml, 415, "unsupported-media-type", "text/xml")
    geojson = live.http.put(
        "/v1/fences/geo-json",
        content=orjson.dumps(polygon_feature()),
        headers={"content-type": "application/geo+json"},
    )
    assert geojson.status_code == 201


def test_body_limits_are_413_before_the_body_is_read(live: Live) -> None:
    big = b" " * (1024 * 1024 + 1)
    declared = live.http.put("/v1/loans/big", content=big)
    body = assert_problem(declared, 413, "payload-too-large", "1048576")
    assert body["limit_bytes"] == 1024 * 1024

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(20):
            yield b" " * (64 * 1024)

    streamed = live.http.put("/v1/loans/big", content=chunks())
    assert "content-length" not in streamed.request.headers
    assert_problem(streamed, 413, "payload-too-large")

    # One fence may take 16 MiB, the imports 64 MiB: past 1 MiB they fail as JSON, not size.
    two_mib = live.http.put("/v1/fences/big", content=b"{" + b" " * (2 * 1024 * 1024))
    assert_problem(two_mib, 400, "malformed-request")
    over = live.http.put("/v1/fences/big", content=b" " * (16 * 1024 * 1024 + 1))
    assert_problem(over, 413, "payload-too-large", "16 MiB")
    nine_mib = live.http.post("/v1/fences:import", content=b"[" + b" " * (9 * 1024 * 1024))
    assert_problem(nine_mib, 400, "malformed-request")
    over = live.http.post("/v1/fences:import", content=b" " * (64 * 1024 * 1024 + 1))
    assert_problem(over, 413, "payload-too-large", "64 MiB")


def test_a_client_still_sending_an_oversized_body_reads_the_413(live: Live) -> None:
    """A plain HTTP client writes its whole body before it reads: it must get the problem,
    not a broken pipe (declared length, then chunked)."""
    host, port = live.url.removeprefix("http://").split(":")
    body = b" " * (24 * 1024 * 1024)
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("PUT", "/v1/fences/huge", body=body, headers=auth)
    response = conn.getresponse()
    assert response.status == 413
    assert orjson.loads(response.read())["limit_bytes"] == 16 * 1024 * 1024
    conn.close()
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    pieces = (b" " * (256 * 1024) for _ in range(16))  # 4 MiB to a 1 MiB endpoint
    conn.request("PUT", "/v1/loans/huge", body=pieces, headers=auth, encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 413
    assert orjson.loads(response.read())["type"] == PROBLEMS + "payload-too-large"
    conn.close()


def ring_of(n: int, center: tuple[float, float] = LOT, radius_m: float = 900.0) -> list[Any]:
    """A closed ring of `n` + 1 [lon, lat] positions on a circle: a valid n-gon."""
    ring = []
    for i in range(n):
        angle = 2 * math.pi * i / n
        lat, lon = offset(*center, radius_m * math.cos(angle), radius_m * math.sin(angle))
        ring.append([lon, lat])
    ring.append(ring[0])
    return ring


def test_a_real_boundary_of_16_mib_is_accepted(live: Live) -> None:
    """A borough-sized polygon (90,000 vertices, pretty-printed to ~15.9 MiB) fits in one PUT."""
    feature = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring_of(90_000)]},
        "properties": {"kind": "zone", "name": "Queens-sized"},
    }
    text = orjson.dumps(feature, option=orjson.OPT_INDENT_2)
    padded = text[:-1] + b" " * (int(15.9 * 1024 * 1024) - len(text)) + text[-1:]
    assert len(padded) > 15 * 1024 * 1024
    response = live.http.put(
        "/v1/fences/queens", content=padded, headers={"content-type": "application/json"}
    )
    assert response.status_code == 201, response.text[:500]
    stored = live.http.get("/v1/fences/queens").json()
    assert len(stored["geometry"]["coordinates"][0]) == 90_001
    assert live.http.delete("/v1/fences/queens").status_code == 204


def test_a_fence_of_too_many_vertices_is_422_saying_to_simplify(live: Live) -> None:
    feature = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring_of(120_000)]},
        "properties": {"kind": "zone"},
    }
    response = live.http.put("/v1/fences/too-fine", json=feature)
    body = assert_problem(response, 422, "validation-error", "120,001 vertices", "simplify")
    assert body["errors"][0]["field"] == "geometry"


def test_deeply_nested_fence_properties_are_422_not_500(live: Live) -> None:
    # written by hand: orjson itself refuses to write nesting this deep
    nested = b'{"x":' * 255 + b'"leaf"' + b"}" * 255
    feature = orjson.dumps(polygon_feature(extra="HERE")).replace(b'"HERE"', nested)
    response = live.http.put("/v1/fences/deep", content=feature)
    body = assert_problem(response, 422, "validation-error", "properties.extra", "32 levels")
    assert body["errors"][0]["field"] == "properties.extra"
    shallow = polygon_feature(extra={"a": [{"b": [1, 2]}]})
    assert live.http.put("/v1/fences/shallow", json=shallow).status_code == 201
    assert live.http.get("/v1/fences/shallow").json()["properties"]["extra"] == {
        "a": [{"b": [1, 2]}]
    }


# -- metrics and the OpenAPI document


def test_metrics_carry_the_design_names(live: Live) -> None:
    response = live.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    for name in DESIGN_METRICS:
        assert f"# TYPE {name} " in text, name
    assert "pledgewatch_outbox_pending " in text
    assert "pledgewatch_batch_seconds_bucket{" in text


def test_openapi_lists_every_route(live: Live) -> None:
    doc = live.http.get("/openapi.json").json()
    routes = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    expected = {
        ("PUT", "/v1/fences/{fence_id}"),
        ("GET", "/v1/fences/{fence_id}"),
        ("DELETE", "/v1/fences/{fence_id}"),
        ("GET", "/v1/fences"),
        ("POST", "/v1/fences:import"),
        ("PUT", "/v1/loans/{loan_id}"),
        ("GET", "/v1/loans/{loan_id}"),
        ("GET", "/v1/loans"),
        ("POST", "/v1/loans:import"),
        ("GET", "/v1/loans/{loan_id}/places"),
        ("GET", "/v1/risk-sites/candidates"),
        ("POST", "/v1/quotes"),
        ("PUT", "/v1/webhooks/{hook_id}"),
        ("GET", "/v1/webhooks/{hook_id}"),
        ("GET", "/v1/webhooks"),
        ("DELETE", "/v1/webhooks/{hook_id}"),
        ("GET", "/v1/alerts"),
        ("GET", "/v1/alerts/{alert_id}"),
        ("POST", "/v1/alerts/{alert_id}/ack"),
        ("POST", "/v1/alerts/{alert_id}/assign"),
        ("POST", "/v1/alerts/{alert_id}/resolve"),
        ("POST", "/v1/alerts/{alert_id}/reopen"),
        ("POST", "/v1/alerts/{alert_id}/notes"),
        ("GET", "/v1/devices/{device_id}"),
        ("GET", "/v1/devices/{device_id}/track"),
        ("GET", "/v1/devices"),
        ("PUT", "/v1/devices/{device_id}/token"),
        ("GET", "/v1/devices/{device_id}/token"),
        ("DELETE", "/v1/devices/{device_id}/token"),
        ("POST", "/v1/ingest/traccar"),
        ("GET", "/v1/ingest/osmand"),
        ("POST", "/v1/ingest/osmand"),
        ("GET", "/v1/deliveries/dead"),
        ("POST", "/v1/deliveries/{delivery_id}:redeliver"),
        ("GET", "/v1/rejects"),
        ("POST", "/v1/session"),
        ("GET", "/v1/session"),
        ("DELETE", "/v1/session"),
        ("PUT", "/v1/operators/{name}"),
        ("GET", "/v1/operators"),
        ("DELETE", "/v1/operators/{name}"),
        ("POST", "/v1/tokens"),
        ("GET", "/v1/tokens"),
        ("DELETE", "/v1/tokens/{name}"),
        ("GET", "/v1/audit"),
        ("GET", "/v1/kpis"),
        ("GET", "/v1/live"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
    }
    assert routes == expected
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert len(op["summary"]) > 10, (method, path)
    put_fence = doc["paths"]["/v1/fences/{fence_id}"]["put"]
    assert "application/json" in put_fence["requestBody"]["content"]
    assert "422" in put_fence["responses"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    assert doc["paths"]["/readyz"]["get"]["security"] == []
    alerts = doc["paths"]["/v1/alerts"]["get"]
    assert {p["name"] for p in alerts["parameters"]} == {
        "type",
        "loan_id",
        "device_id",
        "since",
        "limit",
        "cursor",
        "state",
        "assignee",
        "severity",
        "fence_id",
        "sort",
        "coord_sys",
    }


# -- a second app: insecure dev mode, a dead engine, a crashing store


class CrashingStore:
    """A store whose reads fail with an unexpected error."""

    def get_fence(self, fence_id: str) -> None:
        msg = "a secret internal detail"
        raise RuntimeError(msg)


def test_dev_mode_dead_engine_and_crash(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "second.db")
    store.migrate()
    engine = Engine(store, source=None)  # never started: its thread is not alive
    app = create_app(engine, CrashingStore(), None, None)  # type: ignore[arg-type]  # one method
    with Server(app) as server, httpx.Client(base_url=server.url, timeout=5) as anon:
        health = anon.get("/healthz")
        body = assert_problem(health, 503, "engine-down", "engine")
        assert body["engine_alive"] is False
        assert body["mqtt_connected"] is None
        assert body["outbox_pending"] is None  # this store cannot say: health still answers
        assert_problem(anon.get("/readyz"), 503, "engine-down", "engine")
        crash = anon.get("/v1/fences/any")  # no token needed in dev mode
        body = assert_problem(crash, 500, "internal-error")
        assert "secret" not in crash.text
        assert "Traceback" not in crash.text
        assert "securitySchemes" not in anon.get("/openapi.json").json()["components"]
    store.close()


# -- readiness: commits that stall on a locked PostgreSQL table


@pytest.mark.postgres
def test_readyz_is_503_while_commits_stall_and_metrics_still_answer(pg_schema: str) -> None:
    store = PostgresStore(PG_DSN, schema=pg_schema, max_size=4)
    store.migrate()
    source = QueueSource()
    engine = Engine(store, source, settings=EngineSettings(max_wait_s=0.01, stall_s=1.0))
    engine.start()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    now = int(time.time() * 1000)

    def fix(ts_ms: int) -> dict[str, object]:
        return {"ts": ts_ms, "lat": LOT[0], "lon": LOT[1]}

    try:
        app = create_app(engine, store, None, TOKEN)
        with Server(app) as server, httpx.Client(base_url=server.url, timeout=10) as anon:
            source.publish("telematics/trk-stall/gps", fix(now - 60_000))
            assert anon.get("/readyz").status_code == 200
            # A table every commit writes is locked: the engine's commit waits for it.
            locker = psycopg.connect(PG_DSN, options=f"-c search_path={pg_schema}")
            try:
                locker.execute("LOCK TABLE device_state IN ACCESS EXCLUSIVE MODE")
                raw = orjson.dumps(fix(now - 50_000))
                source.queue.put(Message("telematics/trk-stall/gps", raw, 1, 99, now, 1))
                wait_for(lambda: anon.get("/readyz").status_code == 503, "/readyz 503", 10)
                body = assert_problem(anon.get("/readyz"), 503, "store-unavailable", "no commit")
                assert body["input_waiting_s"] >= 1.0
                assert body["last_commit_age_s"] >= body["input_waiting_s"]
                assert body["engine_alive"] is True
                metrics = anon.get("/metrics", headers=auth)
                assert metrics.status_code == 200
                assert "pledgewatch_ready 0" in metrics.text
                assert "pledgewatch_outbox_pending 0" in metrics.text
                health = anon.get("/healthz")
                assert health.status_code == 200
                assert health.json()["last_commit_age_s"] >= 1.0
            finally:
                locker.rollback()
                locker.close()
            wait_for(lambda: len(source.acked) == 2, "the stalled batch to commit", 10)
            ready = anon.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["input_waiting_s"] == 0
            assert "pledgewatch_ready 1" in anon.get("/metrics", headers=auth).text
    finally:
        engine.stop()
        store.close()


# -- hostile inputs that once gave 500s


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("PUT", "/v1/loans/L-nul", {"vin": VIN, "device_ids": ["a\u0000b"]}, 422, "device_ids[0]"),
        (
            "PUT",
            "/v1/webhooks/w-nul",
            {"url": "http://127.0.0.1/x", "secret": "s\u0000"},
            422,
            "secret",
        ),
        ("POST", "/v1/alerts/nope/ack", {"note": "seen\u0000"}, 422, "note"),
        (
            "PUT",
            "/v1/fences/f-nul",
            {"type": "Feature", "properties": {"k\u0000": 1}},
            422,
            "properties.k\u0000",
        ),
        ("GET", "/v1/fences/a%00b", None, 400, None),
        ("GET", "/v1/alerts?type=zone.left%00", None, 400, None),
        ("GET", "/v1/devices?near=31.2,121.4,100%00", None, 400, None),
        ("POST", f"/v1/deliveries/{2**63}:redeliver", None, 422, None),
    ],
)
def test_nul_characters_and_huge_ids_are_client_errors_not_500(
    live: Live, method: str, path: str, body: Any, status: int, field: str | None
) -> None:
    response = live.http.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    if field is not None:
        assert response.json()["errors"][0]["field"] == field


def test_huge_cursor_values_on_both_kinds_of_list(live: Live) -> None:
    """Cursors carrying integers past a 64-bit column (written by hand: orjson will not)."""
    for path, doc in (
        ("/v1/alerts", b'["alert", 9223372036854775808, "x"]'),
        ("/v1/deliveries/dead", b'["dead", 9223372036854775808]'),
        ("/v1/deliveries/dead", b'["dead", -9223372036854775809]'),
    ):
        cursor = base64.urlsafe_b64encode(doc).decode().rstrip("=")
        response = live.http.get(path, params={"cursor": cursor})
        assert_problem(response, 400, "invalid-parameter", "cursor")


DEEP_ARRAY = "[" * 1000 + "]" * 1000  # orjson reads up to 1024 levels
DEEP_POINT = (
    '{"type": "Feature", "geometry": {"type": "Point", "coordinates": DEEP},'
    ' "properties": {"kind": "zone", "radius_m": 5}}'
)
TINY_CIRCLE = (
    '{"type": "Feature", "geometry": {"type": "Point", "coordinates": [121.5, 31.2]},'
    ' "properties": {"kind": "zone", "radius_m": 5e-324}}'
)
LOAN_WITH = f'{{"vin": "{VIN}", "device_ids": ["a"], KEY}}'


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("PUT", "/v1/fences/f-deep", '{"type": DEEP}', None),
        ("PUT", "/v1/fences/f-deep", '{"type": "Feature", "id": DEEP, "geometry": null}', "id"),
        ("PUT", "/v1/fences/f-deep", DEEP_POINT, "geometry"),
        ("PUT", "/v1/fences/f-tiny", TINY_CIRCLE, "properties.radius_m"),
        ("POST", "/v1/fences:import", '{"type": "FeatureCollection", "features": [{"id": DEEP}]}',
         "features[0].id"),
        ("PUT", "/v1/loans/L-deep", '{"vin": DEEP}', "vin"),
        ("PUT", "/v1/loans/L-deep", LOAN_WITH.replace("KEY", '"status": []'), "status"),
        ("PUT", "/v1/loans/L-deep", LOAN_WITH.replace("KEY", '"status": {}'), "status"),
        ("PUT", "/v1/loans/L-deep", LOAN_WITH.replace("KEY", '"vehicle": {"year": DEEP}'),
         "vehicle.year"),
        ("POST", "/v1/loans:import", '[{"loan_id": DEEP}]', "loans[0].loan_id"),
        ("PUT", "/v1/webhooks/w-deep", '{"url": DEEP, "secret": "s"}', "url"),
        ("PUT", "/v1/webhooks/w-deep",
         '{"url": "http://127.0.0.1/x", "secret": "s", "types": [DEEP]}', "types"),
    ],
)  # fmt: skip
def test_deep_or_unhashable_values_are_422_not_500(
    live: Live, method: str, path: str, body: str, field: str | None
) -> None:
    """Found by fuzzing and by probing beside schemathesis: the message's `repr` of a value
    nested 1000 levels raised RecursionError, `[] in {...}` raised TypeError, and a circle of
    radius 5e-324 m was accepted with no area."""
    content = body.replace("DEEP", DEEP_ARRAY).encode()
    headers = {"Content-Type": "application/json"}
    response = live.http.request(method, path, content=content, headers=headers)
    problem = assert_problem(response, 422, "validation-error")
    assert problem["errors"][0]["field"] == field
