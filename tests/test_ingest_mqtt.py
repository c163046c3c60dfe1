"""Traccar's MQTT forwarding (`traccar/...` topics): mapped and decoded like every input,
through a real Mosquitto into `pledgewatch run`, and judged alike when malformed."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import pytest

from devices.inputs import decode_message
from devices.readings import GpsFix, RejectReason, StatusReport
from simulator.harness.prometheus import Metrics
from tests.brokers import Broker, broker  # noqa: F401  # the fixture
from tests.live import EngineProcess, Publisher, Receiver, engines, receiver  # noqa: F401
from tests.test_e2e import HOME, T0, setup_engine


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def position(unique_id: str, ts_ms: int, lat: float, lon: float, **attributes: object) -> dict:  # type: ignore[type-arg]
    """A document of Traccar's position forwarding (speed in knots)."""
    return {
        "position": {
            "fixTime": iso(ts_ms),
            "latitude": lat,
            "longitude": lon,
            "speed": 10.0,
            "course": 90.0,
            "valid": True,
            "attributes": attributes,
        },
        "device": {"uniqueId": unique_id, "name": unique_id},
    }


def test_a_traccar_topic_is_mapped_then_decoded() -> None:
    payload = orjson.dumps(position("trk-7", T0, *HOME, ignition=False, alarm="powerCut"))
    decoded = decode_message("traccar/positions", payload, T0 + 1000)
    assert not decoded.rejects
    fix = next(r for r in decoded.readings if isinstance(r, GpsFix))
    assert (fix.device_id, fix.ts_ms, fix.lat, fix.lon) == ("trk-7", T0, *HOME)
    assert fix.speed_kmh == pytest.approx(18.52)
    assert fix.ignition is False
    status = next(r for r in decoded.readings if isinstance(r, StatusReport))
    assert status.ext_power is False
    # the same judge as any input: junk is refused with a reason naming the topic
    junk = decode_message("traccar/positions", b"{not json", T0)
    assert [(r.reason, r.topic) for r in junk.rejects] == [
        (RejectReason.NOT_JSON, "traccar/positions")
    ]
    far_future = orjson.dumps(position("trk-7", T0 + 3_600_000, *HOME))
    assert [r.reason for r in decode_message("traccar/x", far_future, T0).rejects] == [
        RejectReason.FUTURE_TIMESTAMP
    ]


@pytest.mark.mqtt
def test_traccar_forwarding_over_mqtt_reaches_the_engine(
    broker: Broker,  # noqa: F811
    receiver: Receiver,  # noqa: F811
    engines: Callable[[str], EngineProcess],  # noqa: F811
    tmp_path: object,
) -> None:
    engine = engines(f"sqlite:///{tmp_path}/pw.db")
    engine.start()
    try:
        setup_engine(engine, receiver)  # loan L-0 on trk-0, zone "home"
        pub = Publisher(broker)
        pub.send("traccar/positions", position("trk-0", T0, *HOME, ignition=False))
        pub.send(
            "traccar/events",
            {
                **position("trk-0", T0 + 60_000, *HOME),
                "event": {"type": "alarm", "attributes": {"alarm": "powerCut"}},
            },
        )
        pub.send("traccar/positions", b"not json at all")
        assert receiver.wait_for(
            lambda rs: "power.disconnected" in {r.alert["type"] for r in rs}, 20
        ), ([r.alert["type"] for r in receiver.received], engine.log_tail(2000))
        deadline = time.monotonic() + 10
        while True:
            with engine.client() as api:
                device = api.get("/v1/devices/trk-0").json()
                metrics = Metrics.parse(api.get("/metrics").text)
            if metrics.value("pledgewatch_rejected_total", reason="not_json") >= 1:
                break
            assert time.monotonic() < deadline, "the junk was never counted"
            time.sleep(0.2)
        assert device["last_fix"]["lat"] == pytest.approx(HOME[0])
        assert metrics.value("pledgewatch_readings_total", stream="gps") >= 2
        pub.close()
    finally:
        assert engine.terminate() == 0
