"""End to end: `pledgewatch run` as a process, a real Mosquitto, a real webhook receiver,
SQLite and PostgreSQL. Readings go in over MQTT; signed webhooks come out."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from engine.core.config import Config
from engine.runtime.replay import Replay
from geofence.fence import parse_fence
from geofence.index import FenceIndex
from lending.consumer import LendingConsumer
from lending.model import parse_loan
from simulator.harness.broker import answers, free_port
from simulator.harness.engine_process import EngineStartError
from simulator.harness.prometheus import Metrics
from simulator.harness.receiver import RefusalReason
from tests.brokers import Broker, broker  # noqa: F401  # the fixture
from tests.factories import HOME, offset
from tests.live import SECRET, TOKEN, EngineProcess, Publisher, Receiver, engines, receiver  # noqa: F401

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

NOW_MS = int(time.time() * 1000)
T0 = NOW_MS - 3 * 3600 * 1000  # event times in the past: the wall-clock future check passes
FAR = offset(*HOME, 2000, 0)
HOME_FENCE = {
    "type": "Feature",
    "geometry": {"type": "Point", "coordinates": [HOME[1], HOME[0]]},
    "properties": {"name": "Home", "kind": "zone", "radius_m": 1000},
}
VINS = [f"LSVAB4182E2{n:06d}" for n in range(100)]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/pw.db"
        return
    import psycopg

    schema = f"e2e_{time.time_ns()}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def gps(t_s: float, at: tuple[float, float], **kw: object) -> dict[str, object]:
    return {"ts": T0 + round(t_s * 1000), "lat": at[0], "lon": at[1], **kw}


def setup_engine(
    engine: EngineProcess,
    receiver: Receiver,  # noqa: F811
    n_cars: int = 1,
    secret: str = SECRET,
) -> None:
    with engine.client() as api:
        assert api.put("/v1/fences/home", json=HOME_FENCE).status_code in {200, 201}
        for i in range(n_cars):
            loan = {"vin": VINS[i], "device_ids": [f"trk-{i}"], "zone_ids": ["home"]}
            r = api.put(f"/v1/loans/L-{i}", json=loan)
            assert r.status_code in {200, 201}, r.text
        hook = {"url": receiver.url, "secret": secret}
        assert api.put("/v1/webhooks/ops", json=hook).status_code in {200, 201}
    time.sleep(0.5)  # the engine takes changes between batches


def assert_all_signed(receiver: Receiver) -> None:  # noqa: F811
    """Every POST verified with the hook's secret: none refused, each accepted one checked."""
    assert receiver.refused == 0, receiver.refusals
    assert receiver.received
    assert all(r.signature_ok for r in receiver.received)


def leave_and_return(car: int, start_s: float = 0) -> list[tuple[str, dict[str, object]]]:
    """A car at home, out for 8 minutes, back: exit, zone.left, enter, zone.returned."""
    topic = f"telematics/trk-{car}/gps"
    out = [(topic, gps(start_s, HOME, seq=0))]
    out += [(topic, gps(start_s + 60 * k, FAR, seq=k)) for k in range(1, 9)]
    out += [(topic, gps(start_s + 60 * k, HOME, seq=k)) for k in range(9, 12)]
    return out


def expected_ids(messages: list[tuple[str, dict[str, object]]], n_cars: int) -> set[str]:
    """The alert ids the offline replay raises for the same readings (event-time rules),
    the lending consumer's `risk.tier_changed` included."""
    fences = [parse_fence("home", HOME_FENCE)]
    loans = [
        parse_loan(f"L-{i}", {"vin": VINS[i], "device_ids": [f"trk-{i}"], "zone_ids": ["home"]})
        for i in range(n_cars)
    ]
    ids: list[str] = []
    replay = Replay(
        FenceIndex.build(fences),
        loans,
        Config(),
        on_alert=lambda a: ids.append(a.id),
        consumer=LendingConsumer(),
    )
    replay.feed(orjson.dumps({"topic": t, "payload": p}) for t, p in messages)
    return set(ids)


def fleet_stream(n_cars: int) -> tuple[list[tuple[str, dict[str, object]]], set[str]]:
    """Every car leaves and returns, one second apart, merged by event time; and the ids
    the offline replay raises for that stream."""
    messages = [m for car in range(n_cars) for m in leave_and_return(car, start_s=car)]
    messages.sort(key=lambda m: (m[1]["ts"], m[0]))
    return messages, expected_ids(messages, n_cars)


def test_readings_in_signed_webhooks_out(
    broker: Broker,  # noqa: F811
    receiver: Receiver,  # noqa: F811
    db_url: str,
    engines: Callable[[str], EngineProcess],  # noqa: F811
) -> None:
    engine = engines(db_url)
    engine.start()
    try:
        setup_engine(engine, receiver)
        pub = Publisher(broker)
        for topic, payload in leave_and_return(0):
            pub.send(topic, payload)
        pub.send("telematics/trk-0/vib", {"ts": T0 + 800_000, "g": 3.2})
        want = {"geofence.exit", "zone.left", "geofence.enter", "zone.returned", "shock"}
        assert receiver.wait_for(lambda rs: {r.alert["type"] for r in rs} >= want, 20), (
            [r.alert["type"] for r in receiver.received],
            receiver.refusals,
            engine.log_tail(2000),
        )
        assert_all_signed(receiver)
        for r in receiver.received:
            assert r.headers["X-Pledgewatch-Id"] == r.alert["id"]
            assert r.headers["X-Pledgewatch-Type"] == r.alert["type"]
            assert r.alert["loan_id"] == "L-0"
            assert r.alert["vin"] == VINS[0]
        left = next(r.alert for r in receiver.received if r.alert["type"] == "zone.left")
        assert left["fence_id"] == "home"
        with engine.client() as api:
            listed = api.get("/v1/alerts", params={"loan_id": "L-0"}).json()
            assert {a["type"] for a in listed["items"]} >= want
            device = api.get("/v1/devices/trk-0").json()
            assert "home" in device["inside"]
            metrics = Metrics.parse(api.get("/metrics").text)
            assert metrics.value("pledgewatch_readings_total", stream="gps") == 12
            assert metrics.value("pledgewatch_deliveries_total", result="delivered") >= 1
        pub.close()
    finally:
        assert engine.terminate() == 0


def test_kill_9_loses_nothing_and_keeps_ids(
    broker: Broker,  # noqa: F811
    receiver: Receiver,  # noqa: F811
    tmp_path: Path,
    engines: Callable[[str], EngineProcess],  # noqa: F811
) -> None:
    n_cars = 30
    engine = engines(f"sqlite:///{tmp_path}/pw.db")
    engine.start()
    setup_engine(engine, receiver, n_cars)
    messages, want = fleet_stream(n_cars)
    assert len(want) == 5 * n_cars  # exit, zone.left, enter, zone.returned; low -> high
    pub = Publisher(broker)
    done = threading.Event()

    def publish_all() -> None:
        for topic, payload in messages:
            pub.send(topic, payload)
            time.sleep(0.004)
        done.set()

    thread = threading.Thread(target=publish_all)
    thread.start()
    time.sleep(0.6)  # mid-stream
    engine.kill9()
    engine.start()
    thread.join(30)
    assert done.is_set()
    assert receiver.wait_for(lambda rs: {str(r.alert["id"]) for r in rs} >= want, 40), (
        len(set(receiver.ids()) & want),
        receiver.refusals,
        engine.log_tail(3000),
    )
    assert set(receiver.ids()) == want  # nothing lost, nothing with a new id
    assert_all_signed(receiver)
    pub.close()
    assert engine.terminate() == 0


def test_broker_restart_mid_stream(
    broker: Broker,  # noqa: F811
    receiver: Receiver,  # noqa: F811
    tmp_path: Path,
    engines: Callable[[str], EngineProcess],  # noqa: F811
) -> None:
    n_cars = 10
    engine = engines(f"sqlite:///{tmp_path}/pw.db")
    engine.start()
    setup_engine(engine, receiver, n_cars)
    messages, want = fleet_stream(n_cars)
    pub = Publisher(broker)
    half = len(messages) // 2
    for topic, payload in messages[:half]:
        pub.send(topic, payload)
    pub.close()
    broker.restart()
    pub = Publisher(broker)
    for topic, payload in messages[half:]:
        pub.send(topic, payload)
    assert receiver.wait_for(lambda rs: {str(r.alert["id"]) for r in rs} >= want, 40), (
        len(set(receiver.ids()) & want),
        receiver.refusals,
        engine.log_tail(3000),
    )
    assert set(receiver.ids()) == want
    assert_all_signed(receiver)
    metrics = engine.metrics()
    assert metrics.total("pledgewatch_mqtt_reconnects_total") >= 1  # the restart shows
    assert metrics.total("pledgewatch_mqtt_connected") == 1
    assert metrics.total("pledgewatch_mqtt_session_takeovers_total") == 0
    pub.close()
    assert engine.terminate() == 0


def test_failing_receiver_gets_everything_in_order_per_loan(
    broker: Broker,  # noqa: F811
    receiver: Receiver,  # noqa: F811
    tmp_path: Path,
    engines: Callable[[str], EngineProcess],  # noqa: F811
) -> None:
    # 500s first, then two stalls past the sender's timeout, then healthy
    receiver.behave = lambda n: 500 if n <= 6 else (2.5 if n <= 8 else 200)
    engine = engines(f"sqlite:///{tmp_path}/pw.db")
    engine.args = ["--webhook-timeout-s", "1", "--webhook-retry-base-s", "0.2"]
    engine.start()
    n_cars = 3
    setup_engine(engine, receiver, n_cars)
    messages, want = fleet_stream(n_cars)
    pub = Publisher(broker)
    for topic, payload in messages:
        pub.send(topic, payload)
    assert receiver.wait_for(lambda rs: {str(r.alert["id"]) for r in rs} >= want, 60), (
        receiver.requests,
        receiver.refusals,
        engine.log_tail(3000),
    )
    for car in range(n_cars):
        firsts: dict[str, float] = {}
        for r in receiver.received:
            if r.alert["loan_id"] == f"L-{car}":
                firsts.setdefault(str(r.alert["id"]), r.at)
        by_arrival = sorted(firsts, key=firsts.__getitem__)
        by_event = sorted(
            (r.alert for r in receiver.received if r.alert["loan_id"] == f"L-{car}"),
            key=lambda a: (
                str(a["ts"]),
                [
                    "geofence.exit",
                    "zone.left",
                    "risk.tier_changed",  # raised by the consumer on zone.left, same event time
                    "geofence.enter",
                    "zone.returned",
                ].index(str(a["type"])),
            ),
        )
        assert by_arrival == list(dict.fromkeys(str(a["id"]) for a in by_event))
    assert_all_signed(receiver)
    pub.close()
    assert engine.terminate() == 0


def test_bad_input_is_counted_and_kept_while_valid_traffic_flows(
    broker: Broker,  # noqa: F811
    receiver: Receiver,  # noqa: F811
    tmp_path: Path,
    engines: Callable[[str], EngineProcess],  # noqa: F811
) -> None:
    engine = engines(f"sqlite:///{tmp_path}/pw.db")
    engine.start()
    setup_engine(engine, receiver)
    pub = Publisher(broker)
    bad: list[tuple[str, object]] = [
        ("telematics/trk-0/gps", b"not json"),
        ("telematics/trk-0/gps", b"{" + b" " * (300 * 1024) + b"}"),
        ("telematics/trk-0/gps", {"ts": T0, "lat": 91, "lon": 0}),
        ("telematics/trk-0/gps", b'{"ts": 1796000000000, "lat": NaN, "lon": 0}'),
        ("telematics/trk-0/gps", {"lat": 1, "lon": 2}),
        ("telematics/trk-0/gps", {"ts": NOW_MS + 3_600_000, "lat": 1, "lon": 2}),
        ("telematics/bad id!/gps", {"ts": T0, "lat": 1, "lon": 2}),
        ("telematics/trk-0/gps", {"ts": "yesterday", "lat": 1, "lon": 2}),
        ("telematics/trk-0/gps", {"ts": T0, "lat": "1", "lon": 2}),
        ("telematics/trk-0/gps", [gps(5, HOME), {"ts": T0, "lat": 200, "lon": 0}]),
    ]
    good = leave_and_return(0, start_s=10)
    for (topic, payload), (gtopic, gpayload) in zip(bad, good, strict=False):
        pub.send(topic, payload)
        pub.send(gtopic, gpayload)
    for gtopic, gpayload in good[len(bad) :]:
        pub.send(gtopic, gpayload)
    want = {"geofence.exit", "zone.left", "geofence.enter", "zone.returned"}
    assert receiver.wait_for(lambda rs: {r.alert["type"] for r in rs} >= want, 20), (
        receiver.refusals
    )
    assert_all_signed(receiver)
    with engine.client() as api:
        metrics = api.get("/metrics").text
        for reason in [
            "not_json",
            "too_large",
            "out_of_range",
            "missing_field",
            "future_timestamp",
            "bad_topic",
            "bad_timestamp",
            "wrong_type",
        ]:
            assert f'pledgewatch_rejected_total{{reason="{reason}"}}' in metrics, reason
        rejects = api.get("/v1/rejects", params={"limit": 100}).json()["items"]
        assert len(rejects) == len(bad)  # one each; the array keeps its good element
        assert any("lat" in r["detail"] for r in rejects)
    pub.close()
    assert engine.terminate() == 0


def test_webhooks_signed_with_another_secret_are_refused_and_dead(
    broker: Broker,  # noqa: F811
    receiver: Receiver,  # noqa: F811
    tmp_path: Path,
    engines: Callable[[str], EngineProcess],  # noqa: F811
) -> None:
    # The check the other tests rely on: an engine signing with a secret the receiver does
    # not hold gets every POST refused (401), and nothing counts as received. A short
    # maximum age makes the refused deliveries dead within the test.
    engine = engines(f"sqlite:///{tmp_path}/pw.db")
    engine.args = ["--webhook-retry-base-s", "0.2", "--webhook-max-age-s", "2"]
    engine.start()
    setup_engine(engine, receiver, secret="not-" + SECRET)
    pub = Publisher(broker)
    for topic, payload in leave_and_return(0):
        pub.send(topic, payload)
    pub.close()
    want = expected_ids(leave_and_return(0), 1)
    dead: list[dict[str, object]] = []
    deadline = time.monotonic() + 20
    with engine.client() as api:
        while len(dead) < len(want) and time.monotonic() < deadline:
            time.sleep(0.1)
            dead = api.get("/v1/deliveries/dead").json()["items"]
        alerts = api.get("/v1/alerts").json()
    assert {str(d["alert_id"]) for d in dead} == want, (
        dead,
        receiver.refused,
        receiver.requests,
        alerts,
        engine.log_tail(3000),
    )
    assert all(d["last_status"] == 401 for d in dead)
    assert receiver.refused >= len(want)
    assert receiver.refused == receiver.requests
    assert {r.reason for r in receiver.refusals} == {RefusalReason.BAD_SIGNATURE}
    assert receiver.received == []
    assert engine.terminate() == 0


def test_the_launcher_waits_for_mqtt_and_shows_why_an_engine_did_not_start(
    tmp_path: Path,
) -> None:
    # The API alone is not ready: with no broker the launcher gives up, kills the child
    # and shows the log; a child that exits at once is reported with its status.
    nobody = f"mqtt://127.0.0.1:{free_port()}"
    silent = EngineProcess(
        nobody, f"sqlite:///{tmp_path}/a.db", token=TOKEN, log_path=tmp_path / "a.log"
    )
    with pytest.raises(EngineStartError, match="not ready within 3 s") as info:
        silent.start(timeout_s=3)
    assert '"mqtt_connected":false' in str(info.value).replace(" ", "")
    assert not silent.running()
    assert not answers("127.0.0.1", silent.port)

    broken = EngineProcess(
        nobody, "nosuch://db", token=TOKEN, log_path=tmp_path / "b.log", args=["--bogus"]
    )
    with pytest.raises(EngineStartError, match="exited with status 2") as info:
        broken.start()
    assert "unrecognized arguments: --bogus" in str(info.value)


@pytest.mark.postgres
def test_passwords_in_the_urls_never_reach_the_log(
    broker: Broker,  # noqa: F811
    pg_schema: str,
    tmp_path: Path,
) -> None:
    # The private broker takes anonymous clients and PostgreSQL trusts local ones: both
    # ignore the passwords, which the engine must still never write out.
    host_port = broker.url.removeprefix("mqtt://")
    db_url = (
        f"postgresql://postgres:pg-s3cret@127.0.0.1:5432/test?options=-csearch_path%3D{pg_schema}"
    )
    engine = EngineProcess(
        f"mqtt://engine:mqtt-s3cret@{host_port}",
        db_url,
        token=TOKEN,
        log_path=tmp_path / "engine.log",
        client_id="pw-e2e-redact",
    )
    engine.start()
    try:
        assert engine.health() is not None
    finally:
        assert engine.terminate() == 0
    log = (tmp_path / "engine.log").read_text()
    assert "pledgewatch running: MQTT mqtt://engine:***@" in log
    assert "postgresql://postgres:***@127.0.0.1:5432/test" in log
    assert "s3cret" not in log
