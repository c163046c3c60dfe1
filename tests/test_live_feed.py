"""The console's live feed (`GET /v1/live`, Server-Sent Events) end to end: `pledgewatch run`
as a process, a private Mosquitto, readings published over MQTT, real HTTP streams.

One engine serves the module (its start is most of the time): its feeds are limited to
`MAX_STREAMS` and to `ALERT_BUFFER` unsent alerts each, so the limits show quickly. Each
test closes its streams and uses devices of its own.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from engine.api import live_feed
from engine.api.app import create_app
from engine.runtime.live import Engine
from engine.store.sqlite_store import SqliteStore
from simulator.harness.live_client import LiveClient, LiveEvent
from simulator.harness.prometheus import Metrics
from tests.brokers import REPO, Broker
from tests.factories import HOME, offset
from tests.live import TOKEN, EngineProcess, Publisher
from tests.test_api import Server, assert_problem

pytestmark = [pytest.mark.mqtt]

MAX_STREAMS = 3
ALERT_BUFFER = 20
VIEWER, PASSWORD = "vera", "viewer password 1"
TILES = "https://tiles.example/{z}/{x}/{y}.png"
NOW_MS = int(time.time() * 1000)
LIVE_STREAMS = "pledgewatch_live_streams"
ENDED = "pledgewatch_live_streams_ended_total"


@dataclass
class Live:
    engine: EngineProcess
    admin: httpx.Client
    publisher: Publisher

    @contextmanager
    def viewer(self) -> Iterator[httpx.Client]:
        """A browser signed in as the viewer: the session cookie in its jar."""
        with httpx.Client(base_url=self.engine.url, timeout=10) as http:
            signed = http.post("/v1/session", json={"name": VIEWER, "password": PASSWORD})
            assert signed.status_code == 200, signed.text
            yield http

    def metrics(self) -> Metrics:
        return self.engine.metrics(self.admin)

    def wait_metric(self, name: str, value: float, **labels: str) -> None:
        deadline = time.monotonic() + 10
        while (got := self.metrics().value(name, **labels)) != value:
            assert time.monotonic() < deadline, f"{name} is {got}, not {value}"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("live")
    broker = Broker(root)
    broker.start()
    engine = EngineProcess(
        broker.url,
        f"sqlite:///{root}/pw.db",
        token=TOKEN,
        log_path=root / "engine.log",
        client_id="pw-live-feed",
        cwd=REPO,
        args=[
            "--console-max-streams",
            str(MAX_STREAMS),
            "--console-alert-buffer",
            str(ALERT_BUFFER),
            "--console-tile-url",
            TILES,
            "--console-tile-coord-sys",
            "gcj02",
        ],
    )
    publisher = None
    try:
        engine.start()
        publisher = Publisher(broker)
        with engine.client() as admin:
            made = admin.put(
                f"/v1/operators/{VIEWER}", json={"role": "viewer", "password": PASSWORD}
            )
            assert made.status_code == 201, made.text
            yield Live(engine, admin, publisher)
    finally:
        if publisher is not None:
            publisher.close()
        if engine.running():
            engine.kill9()
        broker.stop()


@contextmanager
def stream(http: httpx.Client, interval_ms: int | None = 200) -> Iterator[LiveClient]:
    client = LiveClient(http, interval_ms)
    try:
        assert client.open() == 200, client.problem
        yield client
    finally:
        client.close()


def gps(
    device_id: str, t_ms: int, at: tuple[float, float], **kw: object
) -> tuple[str, dict[str, object]]:
    return f"telematics/{device_id}/gps", {"ts": t_ms, "lat": at[0], "lon": at[1], **kw}


def cars_of(event: LiveEvent) -> dict[str, dict[str, object]]:
    assert isinstance(event.data, dict)
    return {car["device_id"]: car for car in event.data["cars"]}


def test_a_viewer_gets_a_snapshot_then_the_cars_that_move(live: Live) -> None:
    loan = {
        "vin": "LSVAB4182E2000001",
        "device_ids": ["snap-1"],
        "zone_ids": [],
        "status": "active",
    }
    assert live.admin.put("/v1/loans/L-snap", json=loan).status_code in {200, 201}
    live.publisher.send(*gps("snap-1", NOW_MS - 60_000, HOME, speed_kmh=12.5))
    expected = {
        "device_id": "snap-1",
        "lat": HOME[0],
        "lon": HOME[1],
        "ts_ms": NOW_MS - 60_000,
        "speed_kmh": 12.5,
        "loan_id": "L-snap",
    }
    deadline = time.monotonic() + 10
    with live.viewer() as browser:
        while True:  # each new feed starts from a snapshot: until one shows the car
            with stream(browser) as feed:
                first = feed.next_event()
                assert first is not None
                assert first.name == "snapshot"
                if cars_of(first).get("snap-1") == expected:
                    break
            assert time.monotonic() < deadline, f"no snapshot shows {expected}: {first}"
            time.sleep(0.1)
        assert isinstance(first.data, dict)
        assert abs(first.data["now_ms"] - time.time() * 1000) < 60_000
    with live.viewer() as browser, stream(browser) as feed:
        assert feed.headers["content-type"] == "text/event-stream"
        assert feed.headers["cache-control"] == "no-cache"
        assert feed.headers["x-accel-buffering"] == "no"
        first = feed.next_event()
        assert first is not None
        assert first.name == "snapshot"
        assert cars_of(first)["snap-1"] == expected
        moved = offset(*HOME, 300, 0)
        live.publisher.send(*gps("snap-1", NOW_MS - 50_000, moved, speed_kmh=40.0))
        live.publisher.send(*gps("snap-2", NOW_MS - 50_000, HOME))
        event, before = feed.wait_for(lambda e: e.name == "cars" and "snap-1" in cars_of(e))
        assert cars_of(event)["snap-1"] == {
            "device_id": "snap-1",
            "lat": moved[0],
            "lon": moved[1],
            "ts_ms": NOW_MS - 50_000,
            "speed_kmh": 40.0,
            "loan_id": "L-snap",
        }
        assert all(e.name == "cars" for e in before)
        # a car that did not move is not sent again; one that did, once per interval
        live.publisher.send(*gps("snap-2", NOW_MS - 40_000, moved))
        later, _ = feed.wait_for(lambda e: e.name == "cars" and "snap-2" in cars_of(e))
        assert set(cars_of(later)) == {"snap-2"}
        assert cars_of(later)["snap-2"]["loan_id"] is None


def test_cars_are_coalesced_per_interval(live: Live) -> None:
    last_ms = NOW_MS - 26_000
    with stream(live.admin, interval_ms=2000) as feed:
        assert feed.next_event() is not None  # the snapshot
        for i in range(5):  # five fixes in well under the 2 s interval
            at = offset(*HOME, 10 * i, 0)
            live.publisher.send(*gps("coal-1", NOW_MS - 30_000 + i * 1000, at))
        sent: list[dict[str, object]] = []  # every coal-1 car of the events, in order
        while not sent or sent[-1]["ts_ms"] != last_ms:
            event = feed.next_event(timeout_s=10)
            assert event is not None
            assert isinstance(event.data, dict)
            sent += [c for c in event.data.get("cars", []) if c["device_id"] == "coal-1"]
    # one car per event, the latest of its interval: one event, or two if an interval
    # boundary fell among the five
    assert 1 <= len(sent) <= 2, sent
    assert sent[-1]["lat"] == offset(*HOME, 40, 0)[0]


def test_alerts_and_fence_changes_are_sent_as_they_commit(live: Live) -> None:
    lot = offset(*HOME, 0, 5000)
    fence = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [lot[1], lot[0]]},
        "properties": {
            "name": "Impound",
            "kind": "risk_site",
            "category": "impound",
            "radius_m": 200,
        },
    }
    with stream(live.admin) as feed:
        assert feed.next_event() is not None
        assert live.admin.put("/v1/fences/live-lot", json=fence).status_code in {200, 201}
        first, _ = feed.wait_for(lambda e: e.name == "fences")
        assert isinstance(first.data, dict)
        version = first.data["version"]
        assert isinstance(version, int)
        assert version >= 1
        live.publisher.send(*gps("alert-1", NOW_MS - 80_000, offset(*lot, 0, -500)))
        live.publisher.send(*gps("alert-1", NOW_MS - 20_000, lot))  # 30 km/h
        event, _ = feed.wait_for(
            lambda e: e.name == "alert" and e.data["type"] == "pledge.risk_site_dwell"  # type: ignore[index]
        )
        assert isinstance(event.data, dict)
        listed = live.admin.get("/v1/alerts", params={"device_id": "alert-1"}).json()["items"]
        assert event.data in listed  # the same object, case and all
        assert event.data["case"]["state"] == "open"
        assert live.admin.delete("/v1/fences/live-lot").status_code == 204
        second, _ = feed.wait_for(lambda e: e.name == "fences")
        assert second.data == {"version": version + 1}


def test_the_feed_needs_a_viewer_and_a_sane_interval(live: Live) -> None:
    with httpx.Client(base_url=live.engine.url, timeout=10) as anon:
        refused = anon.get("/v1/live")
        assert_problem(refused, 401, "unauthorized")
        assert anon.get("/console/config.json").json() == {
            "tile_url": TILES,
            "tile_coord_sys": "gcj02",
            "tile_attribution": None,
            "live_interval_ms": 1000,
        }
    for bad in ("100", "10001", "soon", "-5", ""):
        r = live.admin.get("/v1/live", params={"interval_ms": bad})
        body = assert_problem(r, 422, "validation-error", "interval_ms")
        assert body["errors"][0]["field"] == "interval_ms"


def test_one_stream_more_than_the_limit_is_a_503(live: Live) -> None:
    live.wait_metric(LIVE_STREAMS, 0)
    refused_before = live.metrics().value(ENDED, reason="limit")
    feeds = [LiveClient(live.admin, 1000) for _ in range(MAX_STREAMS)]
    try:
        assert [f.open() for f in feeds] == [200] * MAX_STREAMS
        one_more = LiveClient(live.admin, 1000)
        assert one_more.open() == 503
        assert isinstance(one_more.problem, dict)
        assert one_more.problem["status"] == 503
        assert str(MAX_STREAMS) in one_more.problem["detail"]
        live.wait_metric(LIVE_STREAMS, MAX_STREAMS)
        assert live.metrics().value(ENDED, reason="limit") == refused_before + 1
        feeds.pop().close()
        live.wait_metric(LIVE_STREAMS, MAX_STREAMS - 1)
        feeds.append(LiveClient(live.admin, 1000))
        assert feeds[-1].open() == 200
    finally:
        for f in feeds:
            f.close()
    live.wait_metric(LIVE_STREAMS, 0)


@pytest.mark.slow
def test_a_console_that_never_reads_is_dropped_and_the_engine_goes_on(live: Live) -> None:
    live.wait_metric(LIVE_STREAMS, 0)
    before = live.metrics()
    # A console that asks for the feed and then reads nothing, through a small window.
    stuck = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", live.engine.port))
    request = f"GET /v1/live HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    stuck.sendall(request.encode())
    burst, sent = 1000, 0
    slow = before.value(ENDED, reason="slow")
    try:
        with stream(live.admin) as reader:
            assert reader.next_event() is not None
            live.wait_metric(LIVE_STREAMS, 2)
            started = time.monotonic()
            # Bursts of 1000 shock alerts (~0.4 MB of events each) until the stuck console is
            # dropped: the kernel takes the first ~4 MB (a loopback socket's send buffer).
            while live.metrics().value(ENDED, reason="slow") == slow:
                assert sent < 30 * burst, "the console that never reads was never dropped"
                base = NOW_MS - 100_000 + sent
                live.publisher.send(
                    "telematics/shaken-1/vib", [{"ts": base + i, "g": 3.0} for i in range(burst)]
                )
                sent += burst
                got = 0
                while got < burst:  # the console that reads gets every alert meanwhile
                    event = reader.next_event(timeout_s=20)
                    assert event is not None, "the reading console's stream ended"
                    got += event.name == "alert"
            took = time.monotonic() - started
            live.wait_metric(LIVE_STREAMS, 1)
        alerts = live.metrics().value("pledgewatch_alerts_total", type="shock")
        assert alerts == before.value("pledgewatch_alerts_total", type="shock") + sent
        assert took < 60, f"{sent} alerts took {took:.1f} s to reach the reader"
        stuck.settimeout(5)
        received = b""
        while chunk := stuck.recv(1 << 20):  # what was sent, then the end: the server closed
            received += chunk
        assert received.startswith(b"HTTP/1.1 200 OK")
        assert received.count(b"event: alert") < sent
    finally:
        stuck.close()


def test_a_feed_ends_once_its_session_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In process (no broker needed): the credential is checked again every REAUTH_S."""
    monkeypatch.setattr(live_feed, "REAUTH_S", 0.2)
    store = SqliteStore(tmp_path / "pw.db")
    store.migrate()
    engine = Engine(store, None)
    engine.start()
    app = create_app(engine, store, None, TOKEN)
    try:
        with Server(app) as server, httpx.Client(base_url=server.url, timeout=10) as admin:
            body = {"role": "viewer", "password": PASSWORD}
            made = admin.put(
                f"/v1/operators/{VIEWER}", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert made.status_code == 201, made.text
            with httpx.Client(base_url=server.url, timeout=10) as browser:
                signed = browser.post("/v1/session", json={"name": VIEWER, "password": PASSWORD})
                csrf = signed.json()["csrf_token"]
                with stream(browser, interval_ms=200) as feed:
                    assert feed.next_event() is not None
                    time.sleep(0.5)
                    assert not feed.ended.is_set()  # checked again, still signed in
                    out = browser.delete("/v1/session", headers={"X-CSRF-Token": csrf})
                    assert out.status_code == 204, out.text
                    assert feed.ended.wait(5), "the feed outlived its session"
                    assert feed.error is None
    finally:
        engine.stop()
        store.close()
