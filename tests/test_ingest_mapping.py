"""The Traccar and OsmAnd mappers (DESIGN §9 "Other inputs"): documents in, messages of the
MQTT wire format out, judged by the MQTT decoder exactly as the equivalent MQTT payload."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from devices.decode import MAX_ARRAY_ELEMENTS, decode
from devices.osmand import map_osmand, map_osmand_json, map_osmand_parameters
from devices.readings import GpsFix, Reading, Reject, RejectReason, StatusReport, Vibration
from devices.traccar import ALARM_G, map_traccar
from devices.wire import Mapped, judge

TS = 1_795_940_100_000  # 2026-11-29T08:15:00Z
NOW = TS + 1000
ISO = "2026-11-29T08:15:00.000+00:00"
IMEI = "356938035643809"
DROP = object()


def position(**fields: object) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 18336,
        "deviceId": 7,
        "protocol": "gt06",
        "serverTime": ISO,
        "deviceTime": ISO,
        "fixTime": ISO,
        "outdated": False,
        "valid": True,
        "latitude": 31.2304,
        "longitude": 121.4737,
        "altitude": 12.0,
        "speed": 10.0,
        "course": 90.0,
        "accuracy": 0.0,
        "attributes": {"ignition": True, "odometer": 43_120_500, "totalDistance": 9.5e6},
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not DROP}


def document(**fields: object) -> dict[str, Any]:
    base: dict[str, Any] = {
        "position": position(),
        "device": {"id": 7, "name": "Camry", "uniqueId": IMEI, "status": "online"},
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not DROP}


def alarm_event(alarm: str, **fields: object) -> dict[str, Any]:
    event = {
        "id": 1216,
        "deviceId": 7,
        "type": "alarm",
        "eventTime": ISO,
        "positionId": 18336,
        "attributes": {"alarm": alarm},
    }
    return document(event=event, **fields)


def body(value: object) -> bytes:
    return orjson.dumps(value)


def judged(mapped: Mapped, now_ms: int | None = NOW) -> tuple[list[Reading], list[Reject]]:
    return judge(mapped, now_ms)


def readings_of(mapped: Mapped) -> list[Reading]:
    readings, rejects = judged(mapped)
    assert rejects == [], rejects
    return readings


def only_reject(mapped: Mapped, now_ms: int | None = NOW) -> Reject:
    readings, rejects = judged(mapped, now_ms)
    assert readings == []
    assert len(rejects) == 1, rejects
    return rejects[0]


def payloads(mapped: Mapped) -> list[tuple[str, dict[str, object]]]:
    return [(m.topic, json.loads(m.payload)) for m in mapped.messages]


# -- Traccar position forwarding


def test_a_traccar_position_is_one_gps_reading_in_our_units() -> None:
    mapped = map_traccar(body(document()))
    assert payloads(mapped) == [
        (
            f"telematics/{IMEI}/gps",
            {
                "ts": ISO,
                "lat": 31.2304,
                "lon": 121.4737,
                "speed_kmh": 10.0 * 1.852,
                "heading_deg": 90.0,
                "ignition": True,
                "odometer_km": 43_120.5,
            },
        )
    ]
    [fix] = readings_of(mapped)
    assert fix == GpsFix(
        IMEI, TS, 31.2304, 121.4737, speed_kmh=18.52, heading_deg=90.0, ignition=True,
        odometer_km=43_120.5,
    )  # fmt: skip


@pytest.mark.parametrize(
    "fix_time",
    [
        "2026-11-29T08:15:00.000+0000",  # Traccar 4
        "2026-11-29T08:15:00.000+00:00",  # Traccar 5 and 6
        "2026-11-29T16:15:00+08:00",
        "2026-11-29T08:15:00Z",
        TS,  # epoch milliseconds
    ],
)
def test_fix_time_formats(fix_time: object) -> None:
    [fix] = readings_of(map_traccar(body(document(position=position(fixTime=fix_time)))))
    assert fix.ts_ms == TS


def test_optional_position_fields_may_be_absent() -> None:
    bare = {"fixTime": ISO, "latitude": 31.0, "longitude": 121.0}
    [fix] = readings_of(map_traccar(body(document(position=bare))))
    assert fix == GpsFix(IMEI, TS, 31.0, 121.0)


def test_invalid_or_outdated_positions_are_no_fix() -> None:
    for flags in ({"valid": False}, {"outdated": True}):
        reject = only_reject(map_traccar(body(document(position=position(**flags)))))
        assert reject.reason is RejectReason.UNSUPPORTED_MESSAGE
        assert "not a fix" in reject.detail
        assert (reject.topic, reject.device_id) == ("http/traccar", IMEI)
    cut = position(valid=False, attributes={"alarm": "powerCut"})
    [status] = readings_of(map_traccar(body(document(position=cut))))
    assert status == StatusReport(IMEI, TS, ext_power=False)


# -- alarms, from positions and from events


@pytest.mark.parametrize("alarm", ["vibration", "shock", "accident", "tow"])
def test_shock_like_alarms_are_a_vibration_over_the_threshold(alarm: str) -> None:
    fix, vib = readings_of(map_traccar(body(alarm_event(alarm))))
    assert isinstance(fix, GpsFix)
    assert vib == Vibration(IMEI, TS, g=ALARM_G, ignition=True)
    assert ALARM_G >= 2.5


def test_power_cut_and_restored_set_external_power() -> None:
    _, cut = readings_of(map_traccar(body(alarm_event("powerCut"))))
    assert cut == StatusReport(IMEI, TS, ext_power=False)
    _, back = readings_of(map_traccar(body(alarm_event("powerRestored"))))
    assert back == StatusReport(IMEI, TS, ext_power=True)


@pytest.mark.parametrize("alarm", ["tampering", "removing", "gpsAntennaCut"])
def test_tamper_alarms_set_tamper_and_clear_it_a_millisecond_later(alarm: str) -> None:
    _, raised, cleared = readings_of(map_traccar(body(alarm_event(alarm))))
    assert raised == StatusReport(IMEI, TS, tamper=True)
    assert cleared == StatusReport(IMEI, TS + 1, tamper=False)


def test_several_alarms_in_one_attribute_and_unmapped_ones() -> None:
    attributes = {"alarm": "sos,powerCut, vibration,tampering", "ignition": False}
    readings = readings_of(map_traccar(body(document(position=position(attributes=attributes)))))
    assert [type(r).__name__ for r in readings] == [
        "GpsFix",
        "Vibration",
        "StatusReport",
        "StatusReport",
    ]
    assert readings[2] == StatusReport(IMEI, TS, ext_power=False, tamper=True)
    sos = position(attributes={"alarm": "sos,overspeed,lowBattery", "batteryLevel": 80})
    assert len(readings_of(map_traccar(body(document(position=sos))))) == 1


def test_an_alarm_forwarded_as_position_and_as_event_gives_the_same_messages() -> None:
    """The event forwarder sends the position again: its readings duplicate, not add."""
    as_position = document(position=position(attributes={"alarm": "powerCut", "ignition": True}))
    as_event = alarm_event("powerCut", position=position(attributes={"ignition": True}))
    assert map_traccar(body(as_position)).messages == map_traccar(body(as_event)).messages


def test_events_without_a_position() -> None:
    event = {"type": "alarm", "eventTime": ISO, "attributes": {"alarm": "powerCut"}}
    [cut] = readings_of(map_traccar(body(document(position=DROP, event=event))))
    assert cut == StatusReport(IMEI, TS, ext_power=False)
    old = {"type": "alarm", "serverTime": ISO, "attributes": {"alarm": "vibration"}}  # Traccar 3
    [vib] = readings_of(map_traccar(body(document(position=DROP, event=old))))
    assert vib == Vibration(IMEI, TS, g=ALARM_G)
    offline = {"type": "deviceOffline", "eventTime": ISO}
    reject = only_reject(map_traccar(body(document(position=DROP, event=offline))))
    assert reject.reason is RejectReason.UNSUPPORTED_MESSAGE
    assert "'deviceOffline' has no position" in reject.detail
    ignition_off = {"type": "ignitionOff", "eventTime": ISO}
    [fix] = readings_of(map_traccar(body(document(event=ignition_off))))  # its position maps
    assert isinstance(fix, GpsFix)


# -- Traccar junk: refused here, or by the decoder as the equivalent MQTT payload


def test_an_array_body_judges_each_document_on_its_own() -> None:
    bad = document(device={"uniqueId": "no spaces allowed"})
    readings, rejects = judged(map_traccar(body([document(), 42, bad, alarm_event("powerCut")])))
    assert len(readings) == 3
    assert [(r.reason, r.index) for r in rejects] == [
        (RejectReason.NOT_OBJECT, 1),
        (RejectReason.BAD_TOPIC, 2),
    ]
    assert rejects[0].raw == b"42"
    assert "device.uniqueId 'no spaces allowed' does not match" in rejects[1].detail
    assert orjson.loads(rejects[1].raw) == bad


@pytest.mark.parametrize(
    ("raw", "reason", "detail"),
    [
        (b"\xff{", RejectReason.NOT_JSON, "not UTF-8"),
        (b"{", RejectReason.NOT_JSON, "not JSON"),
        (b"", RejectReason.NOT_JSON, "not JSON"),
        (b"[]", RejectReason.NOT_OBJECT, "empty array"),
        (b'"position"', RejectReason.NOT_OBJECT, "body is a JSON string"),
        (body([{}] * (MAX_ARRAY_ELEMENTS + 1)), RejectReason.TOO_MANY_ELEMENTS, "1001"),
        (body({"position": position()}), RejectReason.MISSING_FIELD, "device: required object"),
        (body(document(device={"id": 7})), RejectReason.MISSING_FIELD, "device.uniqueId"),
        (body(document(device={"uniqueId": 123})), RejectReason.WRONG_TYPE, "device.uniqueId"),
        (body(document(device={"uniqueId": "x" * 65})), RejectReason.BAD_TOPIC, "uniqueId"),
        (body(document(device=[])), RejectReason.WRONG_TYPE, "device: expected an object"),
        (body(document(position=DROP)), RejectReason.MISSING_FIELD, "position"),
        (body(document(position="here")), RejectReason.WRONG_TYPE, "position: expected an"),
        (body(document(event=1)), RejectReason.WRONG_TYPE, "event: expected an object"),
        (
            body(document(position=position(attributes={"alarm": 5}))),
            RejectReason.WRONG_TYPE,
            "position.attributes.alarm: expected a string",
        ),
    ],
)
def test_bodies_that_are_no_traccar_document(raw: bytes, reason: RejectReason, detail: str) -> None:
    reject = only_reject(map_traccar(raw))
    assert reject.reason is reason, reject
    assert detail in reject.detail, reject.detail
    assert reject.topic == "http/traccar"
    assert reject.raw == raw[:4096] or reject.index is not None


@pytest.mark.parametrize(
    ("fields", "reason", "detail"),
    [
        ({"latitude": 91.0}, RejectReason.OUT_OF_RANGE, "lat: 91.0 is outside -90..90"),
        ({"longitude": "121.4"}, RejectReason.WRONG_TYPE, "lon: expected a number, got string"),
        ({"latitude": DROP}, RejectReason.MISSING_FIELD, "lat: required field is missing"),
        ({"latitude": None}, RejectReason.MISSING_FIELD, "lat: required field is null"),
        ({"fixTime": DROP}, RejectReason.MISSING_FIELD, "ts: required field is missing"),
        ({"fixTime": "2026-11-29 08:15:00"}, RejectReason.BAD_TIMESTAMP, "no UTC offset"),
        ({"fixTime": "yesterday"}, RejectReason.BAD_TIMESTAMP, "not ISO-8601"),
        ({"speed": -1.0}, RejectReason.OUT_OF_RANGE, "speed_kmh"),
        ({"speed": 10**400}, RejectReason.OUT_OF_RANGE, "speed_kmh"),
        ({"course": 361.0}, RejectReason.OUT_OF_RANGE, "heading_deg: 361.0"),
        ({"attributes": {"ignition": "on"}}, RejectReason.WRONG_TYPE, "ignition"),
        ({"attributes": {"odometer": "12 km"}}, RejectReason.WRONG_TYPE, "odometer_km"),
    ],
)
def test_bad_fields_are_judged_by_the_mqtt_decoder(
    fields: dict[str, object], reason: RejectReason, detail: str
) -> None:
    mapped = map_traccar(json.dumps(document(position=position(**fields))).encode())
    reject = only_reject(mapped)
    assert (reject.reason, reject.topic, reject.device_id) == (
        reason,
        f"telematics/{IMEI}/gps",
        IMEI,
    )
    assert detail in reject.detail, reject.detail
    # the same reason and detail as the equivalent payload published over MQTT
    [message] = mapped.messages
    mqtt = decode(message.topic, message.payload, NOW).rejects
    assert [(r.reason, r.detail) for r in mqtt] == [(reject.reason, reject.detail)]


def test_nan_and_future_times() -> None:
    position_nan = f'{{"fixTime":"{ISO}","latitude":NaN,"longitude":121.0}}'
    nan = f'{{"device":{{"uniqueId":"t1"}},"position":{position_nan}}}'.encode()
    reject = only_reject(map_traccar(nan))
    assert (reject.reason, reject.detail) == (
        RejectReason.OUT_OF_RANGE,
        "lat: nan is not a finite number (allowed -90..90)",
    )
    later = document(position=position(fixTime="2026-11-29T09:15:00Z"))
    assert only_reject(map_traccar(body(later))).reason is RejectReason.FUTURE_TIMESTAMP


# -- OsmAnd parameters


def osmand(query: str, now_ms: int = NOW) -> Mapped:
    return map_osmand(query, b"", None, now_ms)


def test_osmand_query_parameters_are_a_gps_reading() -> None:
    mapped = osmand(
        f"id={IMEI}&lat=31.2304&lon=121.4737&timestamp={TS // 1000}&hdop=0.9"
        "&altitude=12&speed=10&bearing=90&accuracy=5&batt=80&ignition=true&token=secret"
    )
    assert payloads(mapped) == [
        (
            f"telematics/{IMEI}/gps",
            {
                "ts": TS,
                "lat": 31.2304,
                "lon": 121.4737,
                "speed_kmh": 18.52,
                "heading_deg": 90.0,
                "hdop": 0.9,
                "ignition": True,
            },
        )
    ]
    [fix] = readings_of(mapped)
    assert fix == GpsFix(IMEI, TS, 31.2304, 121.4737, 18.52, 90.0, hdop=0.9, ignition=True)


@pytest.mark.parametrize(
    ("query", "want"),
    [
        ("deviceid=d1&lat=1&lon=2", {"ts": NOW, "lat": 1.0, "lon": 2.0}),  # arrival time
        (f"id=d1&location=1.5,2.5&timestamp={TS}", {"ts": TS, "lat": 1.5, "lon": 2.5}),
        ("id=d1&lat=1&lon=2&timestamp=2026-11-29T08:15:00Z", {"ts": TS, "lat": 1.0, "lon": 2.0}),
        ("id=d1&lat=1&lon=2&heading=45&ignition=0", {"heading_deg": 45.0, "ignition": False}),
        ("id=d1&id=d2&lat=1&lon=2", {"device": "d1"}),
    ],
)
def test_osmand_parameter_variants(query: str, want: dict[str, object]) -> None:
    [fix] = readings_of(osmand(query))
    assert isinstance(fix, GpsFix)
    got = {
        "ts": fix.ts_ms,
        "lat": fix.lat,
        "lon": fix.lon,
        "heading_deg": fix.heading_deg,
        "ignition": fix.ignition,
        "device": fix.device_id,
    }
    assert {k: got[k] for k in want} == want


def test_osmand_form_body_and_query_precedence() -> None:
    form = f"id=f1&lat=1&lon=2&timestamp={TS // 1000}".encode()
    kind = "application/x-www-form-urlencoded"
    [fix] = readings_of(map_osmand("token=secret", form, kind, NOW))
    assert (fix.device_id, fix.ts_ms) == ("f1", TS)
    [bare] = readings_of(map_osmand("", form, None, NOW))
    assert bare.device_id == "f1"
    [from_query] = readings_of(map_osmand("id=q1&lat=3&lon=4", form, kind, NOW))
    assert from_query.device_id == "q1"


@pytest.mark.parametrize(
    ("query", "reason", "detail", "topic"),
    [
        ("lat=1&lon=2", RejectReason.MISSING_FIELD, "id: required parameter", "http/osmand"),
        ("", RejectReason.MISSING_FIELD, "id: required parameter", "http/osmand"),
        ("id=a%20b&lat=1&lon=2", RejectReason.BAD_TOPIC, "id 'a b' does not match", "http/osmand"),
        ("id=&lat=1", RejectReason.BAD_TOPIC, "id '' does not match", "http/osmand"),
        (
            "id=d1&lat=1&lon=2&valid=false",
            RejectReason.UNSUPPORTED_MESSAGE,
            "no GPS fix",
            "http/osmand",
        ),
        ("id=d1&lat=abc&lon=2", RejectReason.WRONG_TYPE, "lat: expected a number", None),
        ("id=d1&lat=91&lon=2", RejectReason.OUT_OF_RANGE, "lat: 91.0 is outside", None),
        ("id=d1&lon=2", RejectReason.MISSING_FIELD, "lat: required field is missing", None),
        ("id=d1&lat=1&lon=2&speed=-3", RejectReason.OUT_OF_RANGE, "speed_kmh", None),
        ("id=d1&lat=1&lon=2&ignition=maybe", RejectReason.WRONG_TYPE, "ignition", None),
        (
            "id=d1&lat=1&lon=2&timestamp=2026-11-29+08:15:00",
            RejectReason.BAD_TIMESTAMP,
            "no UTC offset",
            None,
        ),
        ("id=d1&lat=1&lon=2&timestamp=1", RejectReason.OUT_OF_RANGE, "before 2000", None),
        (
            f"id=d1&lat=1&lon=2&timestamp={TS // 1000 + 3600}",
            RejectReason.FUTURE_TIMESTAMP,
            "ahead",
            None,
        ),
    ],
)
def test_bad_osmand_requests(
    query: str, reason: RejectReason, detail: str, topic: str | None
) -> None:
    reject = only_reject(osmand(query))
    assert reject.reason is reason, reject
    assert detail in reject.detail, reject.detail
    assert reject.topic == (topic or "telematics/d1/gps")


# -- Traccar Client 9+ JSON


def client(location: object, device_id: object = "phone-1") -> bytes:
    return body({"device_id": device_id, "location": location})


def location(**coords: object) -> dict[str, Any]:
    base: dict[str, Any] = {
        "latitude": 31.2304,
        "longitude": 121.4737,
        "speed": 5.0,
        "heading": 270.0,
        "accuracy": 4.5,
        "altitude": 10.0,
    }
    base.update(coords)
    return {
        "timestamp": "2026-11-29T08:15:00.000Z",
        "coords": {k: v for k, v in base.items() if v is not DROP},
        "is_moving": True,
        "odometer": 1234.5,
        "battery": {"level": 0.82, "is_charging": False},
        "activity": {"type": "in_vehicle"},
    }


def test_traccar_client_json_is_a_gps_reading() -> None:
    mapped = map_osmand("", client(location()), "application/json", NOW)
    [fix] = readings_of(mapped)
    assert fix == GpsFix("phone-1", TS, 31.2304, 121.4737, speed_kmh=18.0, heading_deg=270.0)
    assert map_osmand("", client(location()), None, NOW) == mapped  # JSON by its look


def test_negative_speed_or_heading_is_unknown_not_refused() -> None:
    [fix] = readings_of(map_osmand_json(client(location(speed=-1, heading=-1.0))))
    assert isinstance(fix, GpsFix)
    assert (fix.speed_kmh, fix.heading_deg) == (None, None)


def test_a_batch_of_locations_is_judged_one_by_one() -> None:
    later = location()
    later["timestamp"] = "2026-11-29T08:16:00Z"
    mapped = map_osmand_json(client([location(), "junk", later, location(latitude=95)]))
    readings, rejects = judged(mapped, TS + 120_000)
    assert [r.ts_ms for r in readings] == [TS, TS + 60_000]
    assert [(r.reason, r.topic, r.index) for r in rejects] == [
        (RejectReason.NOT_OBJECT, "http/osmand", 1),
        (RejectReason.OUT_OF_RANGE, "telematics/phone-1/gps", None),
    ]
    assert [m.document for m in mapped.messages] == [0, 2, 3]


@pytest.mark.parametrize(
    ("raw", "reason", "detail"),
    [
        (b"{", RejectReason.NOT_JSON, "not JSON"),
        (b"[1]", RejectReason.NOT_OBJECT, "body is a JSON array"),
        (body({"location": location()}), RejectReason.MISSING_FIELD, "device_id"),
        (client(location(), device_id=5), RejectReason.WRONG_TYPE, "device_id"),
        (client(location(), device_id="a/b"), RejectReason.BAD_TOPIC, "device_id 'a/b'"),
        (body({"device_id": "p"}), RejectReason.MISSING_FIELD, "location"),
        (client([]), RejectReason.NOT_OBJECT, "location is an empty array"),
        (client("here"), RejectReason.NOT_OBJECT, "location is a JSON string"),
        (client({"timestamp": ISO}), RejectReason.MISSING_FIELD, "location.coords"),
        (client({"timestamp": ISO, "coords": 1}), RejectReason.WRONG_TYPE, "location.coords"),
    ],
)
def test_bodies_that_are_no_traccar_client_location(
    raw: bytes, reason: RejectReason, detail: str
) -> None:
    reject = only_reject(map_osmand("", raw, "application/json", NOW))
    assert reject.reason is reason, reject
    assert detail in reject.detail, reject.detail
    assert reject.topic == "http/osmand"


def test_traccar_client_fields_are_judged_by_the_decoder() -> None:
    no_time = location()
    del no_time["timestamp"]
    reject = only_reject(map_osmand_json(client(no_time)))
    assert (reject.reason, reject.detail) == (
        RejectReason.MISSING_FIELD,
        "ts: required field is missing",
    )
    wrong = only_reject(map_osmand_json(client(location(longitude="east"))))
    assert wrong.reason is RejectReason.WRONG_TYPE
    assert wrong.topic == "telematics/phone-1/gps"


def test_map_osmand_parameters_keeps_the_raw_form() -> None:
    reject = only_reject(map_osmand_parameters("lat=1", NOW, raw=b"lat=1"))
    assert reject.raw == b"lat=1"
