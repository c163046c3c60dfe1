"""Unit tests of the wire-format decoder and topic routing (DESIGN §2)."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import orjson
import pytest

from devices import decode as decode_module
from devices.decode import (
    FUTURE_TOLERANCE_MS,
    MAX_ARRAY_ELEMENTS,
    MAX_PAYLOAD_BYTES,
    Decoded,
    decode,
)
from devices.readings import (
    RAW_KEEP_BYTES,
    GpsFix,
    Reading,
    Reject,
    RejectReason,
    StatusReport,
    Stream,
    Vibration,
)
from devices.topics import DEVICE_ID_RE, BadTopic, TopicRoute, is_device_id, parse_topic

if TYPE_CHECKING:
    from collections.abc import Mapping

TS = 1_795_940_100_000  # 2026-11-29T08:15:00Z
NOW = TS
GPS = "telematics/trk-001/gps"
VIB = "telematics/trk-001/vib"
STATUS = "telematics/trk-001/status"
OWNTRACKS = "owntracks/alice/phone"
VIN = "LSVAB4182E2123456"
DROP = object()  # marks a field to leave out of fix() / location()


def payload(value: object) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers over 64 bits, which orjson does not write
        return json.dumps(value).encode()


def fix(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {"ts": TS, "lat": 31.2304, "lon": 121.4737}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not DROP}


def location(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {"_type": "location", "lat": 31.23, "lon": 121.47, "tst": TS // 1000}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not DROP}


def one_reading(topic: str, body: object, now_ms: int | None = NOW) -> Reading:
    out = decode(topic, body if isinstance(body, bytes) else payload(body), now_ms)
    assert out.rejects == [], out.rejects
    assert len(out.readings) == 1
    return out.readings[0]


def one_reject(topic: str, body: object, now_ms: int | None = NOW) -> Reject:
    raw = body if isinstance(body, bytes) else payload(body)
    out = decode(topic, raw, now_ms)
    assert out.readings == []
    assert len(out.rejects) == 1, out.rejects
    return out.rejects[0]


def assert_reject(reject: Reject, reason: RejectReason, *details: str) -> None:
    assert reject.reason is reason, reject
    for detail in details:
        assert detail in reject.detail, reject.detail


# topics


@pytest.mark.parametrize(
    ("topic", "route"),
    [
        ("telematics/trk-001/gps", TopicRoute("trk-001", Stream.GPS)),
        ("telematics/trk-001/vib", TopicRoute("trk-001", Stream.VIB)),
        ("telematics/trk-001/status", TopicRoute("trk-001", Stream.STATUS)),
        ("telematics/A.b_c:d-9/gps", TopicRoute("A.b_c:d-9", Stream.GPS)),
        ("telematics/" + "x" * 64 + "/gps", TopicRoute("x" * 64, Stream.GPS)),
        ("owntracks/alice/phone", TopicRoute("alice:phone", Stream.GPS, owntracks=True)),
        (
            "owntracks/" + "u" * 31 + "/" + "d" * 32,
            TopicRoute("u" * 31 + ":" + "d" * 32, Stream.GPS, owntracks=True),
        ),
    ],
)
def test_parse_topic_accepts(topic: str, route: TopicRoute) -> None:
    assert parse_topic(topic) == route


@pytest.mark.parametrize(
    ("topic", "detail"),
    [
        ("", "1 segments"),
        ("telematics", "1 segments"),
        ("telematics/", "2 segments"),
        ("telematics/bad id/gps/x", "4 segments"),
        ("/telematics/trk-001/gps", "4 segments"),
        ("Telematics/trk-001/gps", "prefix 'Telematics'"),
        ("tracking/trk-001/gps", "prefix 'tracking'"),
        ("telematics//gps", "device_id ''"),
        ("telematics/" + "x" * 65 + "/gps", "does not match"),
        ("telematics/trk 001/gps", "device_id 'trk 001'"),
        ("telematics/trk#001/gps", "does not match"),
        ("telematics/trk+001/gps", "does not match"),
        ("telematics/трк-001/gps", "does not match"),
        ("telematics/trk-001\n/gps", "does not match"),
        ("owntracks/alice", "2 segments"),
        ("owntracks//phone", "empty user or device"),
        ("owntracks/alice/", "empty user or device"),
        ("owntracks/" + "u" * 32 + "/" + "d" * 32, "does not match"),
        ("owntracks/al ice/phone", "'al ice:phone' does not match"),
    ],
)
def test_parse_topic_refuses(topic: str, detail: str) -> None:
    bad = parse_topic(topic)
    assert isinstance(bad, BadTopic)
    assert detail in bad.detail
    assert bad.device_id is None


@pytest.mark.parametrize(
    ("topic", "segments"),
    [
        ("telematics/trk-001", 2),
        ("telematics/trk-001/gps/extra", 4),
        ("telematics/trk-001/gps/", 4),
        ("telematics/trk-001/b/gps", 4),
        ("telematics/trk-001/a/b/c/d/gps", 7),
    ],
)
def test_parse_topic_missing_or_extra_levels_keep_device_id(topic: str, segments: int) -> None:
    bad = parse_topic(topic)
    assert bad == BadTopic(
        f"topic {topic!r} has {segments} segments; expected "
        "telematics/{device_id}/{stream} or owntracks/{user}/{device}",
        "trk-001",
    )


@pytest.mark.parametrize("stream", ["GPS", "pos", "", "gps "])
def test_parse_topic_unknown_stream_keeps_device_id(stream: str) -> None:
    bad = parse_topic(f"telematics/trk-001/{stream}")
    assert bad == BadTopic(f"stream {stream!r} is not one of gps, vib, status", "trk-001")


def test_huge_topic_is_shortened_in_detail() -> None:
    bad = parse_topic("x" * 10_000)
    assert isinstance(bad, BadTopic)
    assert len(bad.detail) < 300


def test_device_id_re_is_a_full_match() -> None:
    assert is_device_id("trk-001")
    assert is_device_id("a" * 64)
    assert not is_device_id("a" * 65)
    assert not is_device_id("")
    assert not is_device_id("trk-001\n")
    assert DEVICE_ID_RE.fullmatch("a:b.c_d-e") is not None


def test_bad_topic_rejects_the_whole_message() -> None:
    body = payload([fix(), fix()])
    reject = one_reject("telematics/trk-001/position", body)
    assert reject == Reject(
        topic="telematics/trk-001/position",
        reason=RejectReason.BAD_TOPIC,
        detail="stream 'position' is not one of gps, vib, status",
        raw=body,
        device_id="trk-001",
    )
    reject = one_reject("telematics/bad id/gps", body)
    assert_reject(reject, RejectReason.BAD_TOPIC, "device_id 'bad id'")
    assert reject.device_id is None


def test_a_topic_with_extra_levels_is_a_bad_topic_kept_whole() -> None:
    """`telematics/a/b/gps` (issue 9): received since the source subscribes `telematics/#`,
    refused with the reason, counted, and kept with its bytes like any other reject."""
    body = payload([fix(), fix()])
    out = decode("telematics/trk-001/b/gps", body, NOW)
    assert out.readings == []
    assert out.rejects == [
        Reject(
            topic="telematics/trk-001/b/gps",
            reason=RejectReason.BAD_TOPIC,
            detail="topic 'telematics/trk-001/b/gps' has 4 segments; expected "
            "telematics/{device_id}/{stream} or owntracks/{user}/{device}",
            raw=body,
            device_id="trk-001",
        )
    ]


# readings that decode


def test_gps_minimal() -> None:
    assert one_reading(GPS, fix()) == GpsFix("trk-001", TS, 31.2304, 121.4737)


def test_gps_all_optional_fields_and_unknown_extras() -> None:
    body = fix(
        speed_kmh=42.5,
        heading_deg=359,
        hdop=0.9,
        sats=11,
        ignition=True,
        odometer_km=123456.7,
        seq=42,
        firmware="1.2.3",
        extra={"nested": [1, 2]},
    )
    reading = one_reading(GPS, body)
    assert reading == GpsFix(
        device_id="trk-001",
        ts_ms=TS,
        lat=31.2304,
        lon=121.4737,
        speed_kmh=42.5,
        heading_deg=359.0,
        hdop=0.9,
        sats=11,
        ignition=True,
        odometer_km=123456.7,
        seq=42,
    )
    assert isinstance(reading, GpsFix)
    assert type(reading.heading_deg) is float


def test_gps_integer_coordinates_become_floats() -> None:
    reading = one_reading(GPS, fix(lat=31, lon=-121))
    assert isinstance(reading, GpsFix)
    assert (reading.lat, reading.lon) == (31.0, -121.0)
    assert type(reading.lat) is float


@pytest.mark.parametrize(("lat", "lon"), [(90, 180), (-90, -180), (90.0, -180.0), (0, 0)])
def test_gps_range_bounds_are_inclusive(lat: float, lon: float) -> None:
    reading = one_reading(GPS, fix(lat=lat, lon=lon))
    assert isinstance(reading, GpsFix)
    assert (reading.lat, reading.lon) == (lat, lon)


@pytest.mark.parametrize(
    "field", ["speed_kmh", "heading_deg", "hdop", "sats", "ignition", "odometer_km", "seq"]
)
def test_gps_optional_null_is_absent(field: str) -> None:
    assert one_reading(GPS, fix(**{field: None})) == GpsFix("trk-001", TS, 31.2304, 121.4737)


def test_gps_optional_bounds() -> None:
    reading = one_reading(
        GPS, fix(speed_kmh=1000, heading_deg=0, hdop=0, sats=0, odometer_km=0, seq=2**63 - 1)
    )
    assert isinstance(reading, GpsFix)
    assert reading.speed_kmh == 1000.0
    assert reading.seq == 2**63 - 1


def test_vibration() -> None:
    assert one_reading(VIB, {"ts": TS, "g": 3.2}) == Vibration("trk-001", TS, 3.2)
    reading = one_reading(VIB, {"ts": TS, "g": 0, "duration_ms": 120, "ignition": False})
    assert reading == Vibration("trk-001", TS, 0.0, duration_ms=120, ignition=False)


def test_status() -> None:
    assert one_reading(STATUS, {"ts": TS}) == StatusReport("trk-001", TS)
    body = {"ts": TS, "ext_power": False, "battery_v": 12.6, "tamper": True, "vin": VIN.lower()}
    assert one_reading(STATUS, body) == StatusReport(
        "trk-001", TS, ext_power=False, battery_v=12.6, tamper=True, vin=VIN
    )
    body = {"ts": TS, "ext_power": None, "battery_v": None, "tamper": None, "vin": None}
    assert one_reading(STATUS, body) == StatusReport("trk-001", TS)
    assert one_reading(STATUS, {"ts": TS, "battery_v": 100}) == StatusReport(
        "trk-001", TS, battery_v=100.0
    )


def test_reading_streams() -> None:
    assert one_reading(GPS, fix()).stream is Stream.GPS
    assert one_reading(VIB, {"ts": TS, "g": 1}).stream is Stream.VIB
    assert one_reading(STATUS, {"ts": TS}).stream is Stream.STATUS


@pytest.mark.parametrize(
    ("ts", "ts_ms"),
    [
        ("2026-11-29T08:15:00Z", TS),
        ("2026-11-29T16:15:00.5+08:00", TS + 500),
        ("2026-11-29T16:15:00.123+08:00", TS + 123),
        ("2026-11-29T16:15:00.123999+08:00", TS + 123),
        ("2026-11-29T16:15:00,25+0800", TS + 250),
        ("2026-11-29T16:15+08", TS),
        ("2026-11-29T03:15:00-05:00", TS),
        ("2026-11-29T08:15:00-00:00", TS),
        ("2026-11-29t08:15:00z", TS),
        ("2026-11-29 08:15:00Z", TS),
        ("2026-11-29T00:15:00.000-08:00", TS),
        ("2000-01-01T00:00:00Z", 946_684_800_000),
        ("2024-02-29T00:00:00Z", 1_709_164_800_000),
        ("2099-12-31T23:59:59.999Z", 4_102_444_799_999),
        ("2000-01-01T08:00:00+08:00", 946_684_800_000),
    ],
)
def test_iso_timestamps(ts: str, ts_ms: int) -> None:
    reading = one_reading(GPS, fix(ts=ts), now_ms=None)
    assert isinstance(reading, GpsFix)
    assert reading.ts_ms == ts_ms


def test_epoch_ms_bounds() -> None:
    reading = one_reading(GPS, fix(ts=946_684_800_000), now_ms=None)
    assert reading.ts_ms == 946_684_800_000
    reading = one_reading(GPS, fix(ts=4_102_444_799_999), now_ms=None)
    assert reading.ts_ms == 4_102_444_799_999


# timestamps refused


@pytest.mark.parametrize(
    ("ts", "reason", "detail"),
    [
        (TS + 0.5, RejectReason.WRONG_TYPE, "ts: expected integer epoch milliseconds"),
        (float(TS), RejectReason.WRONG_TYPE, "got number"),
        (True, RejectReason.WRONG_TYPE, "got boolean"),
        ([TS], RejectReason.WRONG_TYPE, "got array"),
        ({"ms": TS}, RejectReason.WRONG_TYPE, "got object"),
        ("2026-11-29T08:15:00", RejectReason.BAD_TIMESTAMP, "has no UTC offset"),
        ("2026-11-29T08:15:00.5", RejectReason.BAD_TIMESTAMP, "has no UTC offset"),
        ("2026-11-29", RejectReason.BAD_TIMESTAMP, "is not ISO-8601"),
        ("20261129T081500Z", RejectReason.BAD_TIMESTAMP, "is not ISO-8601"),
        ("yesterday", RejectReason.BAD_TIMESTAMP, "ts: 'yesterday' is not ISO-8601"),
        (str(TS), RejectReason.BAD_TIMESTAMP, "is not ISO-8601"),
        ("", RejectReason.BAD_TIMESTAMP, "is not ISO-8601"),
        ("2026-11-29T08:15:00+8", RejectReason.BAD_TIMESTAMP, "is not ISO-8601"),
        ("2026-11-29T08:15:00Z ", RejectReason.BAD_TIMESTAMP, "is not ISO-8601"),
        ("\uff12\uff10\uff12\uff16-11-29T08:15:00Z", RejectReason.BAD_TIMESTAMP, "is not ISO-8601"),
        ("2026-02-29T08:15:00Z", RejectReason.BAD_TIMESTAMP, "not a valid date and time"),
        ("2026-13-01T08:15:00Z", RejectReason.BAD_TIMESTAMP, "not a valid date and time"),
        ("2026-00-01T08:15:00Z", RejectReason.BAD_TIMESTAMP, "not a valid date and time"),
        ("2026-11-31T08:15:00Z", RejectReason.BAD_TIMESTAMP, "not a valid date and time"),
        ("2026-11-29T24:00:00Z", RejectReason.BAD_TIMESTAMP, "not a valid date and time"),
        ("2026-11-29T08:60:00Z", RejectReason.BAD_TIMESTAMP, "not a valid date and time"),
        ("2026-11-29T08:15:60Z", RejectReason.BAD_TIMESTAMP, "not a valid date and time"),
        ("2026-11-29T08:15:00+24:00", RejectReason.BAD_TIMESTAMP, "invalid UTC offset"),
        ("2026-11-29T08:15:00+08:60", RejectReason.BAD_TIMESTAMP, "invalid UTC offset"),
        (-1, RejectReason.OUT_OF_RANGE, "ts: -1 ms is before 2000-01-01T00:00:00Z"),
        (0, RejectReason.OUT_OF_RANGE, "is before 2000-01-01"),
        (TS // 1000, RejectReason.OUT_OF_RANGE, "(seconds instead of milliseconds?)"),
        (946_684_799_999, RejectReason.OUT_OF_RANGE, "is before 2000-01-01"),
        (4_102_444_800_000, RejectReason.OUT_OF_RANGE, "is not before 2100-01-01"),
        (TS * 1000, RejectReason.OUT_OF_RANGE, "is not before 2100-01-01"),
        ("1999-12-31T23:59:59Z", RejectReason.OUT_OF_RANGE, "is before 2000-01-01"),
        ("2000-01-01T00:00:00+00:01", RejectReason.OUT_OF_RANGE, "is before 2000-01-01"),
        ("2100-01-01T00:00:00Z", RejectReason.OUT_OF_RANGE, "is not before 2100-01-01"),
        ("0000-01-01T00:00:00Z", RejectReason.OUT_OF_RANGE, "is before 2000-01-01"),
    ],
)
def test_bad_timestamps(ts: object, reason: RejectReason, detail: str) -> None:
    assert_reject(one_reject(GPS, fix(ts=ts), now_ms=None), reason, detail)


def test_year_zero_with_valid_day_is_out_of_range() -> None:
    # Year 0000 is a leap year in the proleptic Gregorian calendar, so 02-29 is a real date.
    reject = one_reject(GPS, fix(ts="0000-02-29T00:00:00Z"), now_ms=None)
    assert_reject(reject, RejectReason.OUT_OF_RANGE, "is before 2000-01-01")


@pytest.mark.parametrize("topic", [GPS, VIB, STATUS])
def test_missing_and_null_ts(topic: str) -> None:
    body: dict[str, object] = {"lat": 1, "lon": 1, "g": 1}
    assert_reject(
        one_reject(topic, body), RejectReason.MISSING_FIELD, "ts: required field is missing"
    )
    body["ts"] = None
    assert_reject(one_reject(topic, body), RejectReason.MISSING_FIELD, "ts: required field is null")


def test_future_timestamp() -> None:
    at_limit = one_reading(GPS, fix(ts=NOW + FUTURE_TOLERANCE_MS))
    assert at_limit.ts_ms == NOW + FUTURE_TOLERANCE_MS
    reject = one_reject(GPS, fix(ts=NOW + FUTURE_TOLERANCE_MS + 1))
    assert_reject(
        reject,
        RejectReason.FUTURE_TIMESTAMP,
        "ts: 2026-11-29T08:20:00.001Z is 300001 ms ahead of the reference clock",
        "at most 300000 ms",
    )
    iso = one_reject(VIB, {"ts": "2026-11-29T16:25:00+08:00", "g": 1})
    assert_reject(iso, RejectReason.FUTURE_TIMESTAMP, "600000 ms ahead")
    status = one_reject(STATUS, {"ts": NOW + 3_600_000})
    assert_reject(status, RejectReason.FUTURE_TIMESTAMP, "3600000 ms ahead")


def test_future_check_skipped_without_reference_clock() -> None:
    far = NOW + 86_400_000
    assert one_reading(GPS, fix(ts=far), now_ms=None).ts_ms == far


def test_past_is_never_too_old() -> None:
    assert one_reading(GPS, fix(ts=946_684_800_000)).ts_ms == 946_684_800_000


def test_malformed_field_wins_over_future_timestamp() -> None:
    reject = one_reject(GPS, fix(ts=NOW + 10 * FUTURE_TOLERANCE_MS, lat=91))
    assert_reject(reject, RejectReason.OUT_OF_RANGE, "lat: 91 is outside -90..90")


# fields refused


@pytest.mark.parametrize(
    ("fields", "reason", "detail"),
    [
        ({"lat": DROP}, RejectReason.MISSING_FIELD, "lat: required field is missing"),
        ({"lat": None}, RejectReason.MISSING_FIELD, "lat: required field is null"),
        ({"lon": DROP}, RejectReason.MISSING_FIELD, "lon: required field is missing"),
        ({"lon": None}, RejectReason.MISSING_FIELD, "lon: required field is null"),
        ({"lat": "31.2"}, RejectReason.WRONG_TYPE, "lat: expected a number, got string"),
        ({"lat": True}, RejectReason.WRONG_TYPE, "lat: expected a number, got boolean"),
        ({"lon": [121.4]}, RejectReason.WRONG_TYPE, "lon: expected a number, got array"),
        ({"lon": {"deg": 1}}, RejectReason.WRONG_TYPE, "lon: expected a number, got object"),
        ({"lat": 91.5}, RejectReason.OUT_OF_RANGE, "lat: 91.5 is outside -90..90"),
        ({"lat": -90.000001}, RejectReason.OUT_OF_RANGE, "lat: -90.000001 is outside -90..90"),
        ({"lon": 180.5}, RejectReason.OUT_OF_RANGE, "lon: 180.5 is outside -180..180"),
        ({"lon": -181}, RejectReason.OUT_OF_RANGE, "lon: -181 is outside -180..180"),
        ({"lon": 2**64}, RejectReason.OUT_OF_RANGE, "lon: 1.8446744073709552e+19 is outside"),
        ({"lon": 1e300}, RejectReason.OUT_OF_RANGE, "lon: 1e+300 is outside -180..180"),
        ({"speed_kmh": -1}, RejectReason.OUT_OF_RANGE, "speed_kmh: -1 is outside 0..1000"),
        ({"speed_kmh": 1000.1}, RejectReason.OUT_OF_RANGE, "speed_kmh: 1000.1 is outside"),
        ({"speed_kmh": "fast"}, RejectReason.WRONG_TYPE, "speed_kmh: expected a number"),
        ({"heading_deg": 360.5}, RejectReason.OUT_OF_RANGE, "heading_deg: 360.5 is outside 0..360"),
        ({"heading_deg": -0.5}, RejectReason.OUT_OF_RANGE, "heading_deg: -0.5 is outside 0..360"),
        ({"hdop": -0.1}, RejectReason.OUT_OF_RANGE, "hdop: -0.1 is outside >= 0"),
        ({"hdop": False}, RejectReason.WRONG_TYPE, "hdop: expected a number, got boolean"),
        ({"sats": 7.0}, RejectReason.WRONG_TYPE, "sats: expected an integer, got number"),
        ({"sats": -1}, RejectReason.OUT_OF_RANGE, "sats: -1 is outside 0..2**63-1"),
        ({"sats": True}, RejectReason.WRONG_TYPE, "sats: expected an integer, got boolean"),
        (
            {"ignition": "on"},
            RejectReason.WRONG_TYPE,
            "ignition: expected true or false, got string",
        ),
        ({"ignition": 1}, RejectReason.WRONG_TYPE, "ignition: expected true or false, got integer"),
        ({"odometer_km": -5}, RejectReason.OUT_OF_RANGE, "odometer_km: -5 is outside >= 0"),
        ({"seq": -1}, RejectReason.OUT_OF_RANGE, "seq: -1 is outside 0..2**63-1"),
        ({"seq": 2**63}, RejectReason.OUT_OF_RANGE, "seq: 9223372036854775808 is outside"),
        ({"seq": "1"}, RejectReason.WRONG_TYPE, "seq: expected an integer, got string"),
    ],
)
def test_gps_field_rejects(fields: Mapping[str, object], reason: RejectReason, detail: str) -> None:
    body = fix(**fields)
    reject = one_reject(GPS, body)
    assert_reject(reject, reason, detail)
    assert reject == Reject(GPS, reason, reject.detail, payload(body), "trk-001", None)


@pytest.mark.parametrize(
    ("body", "reason", "detail"),
    [
        ({"ts": TS}, RejectReason.MISSING_FIELD, "g: required field is missing"),
        ({"ts": TS, "g": None}, RejectReason.MISSING_FIELD, "g: required field is null"),
        ({"ts": TS, "g": -0.1}, RejectReason.OUT_OF_RANGE, "g: -0.1 is outside >= 0"),
        ({"ts": TS, "g": "2g"}, RejectReason.WRONG_TYPE, "g: expected a number, got string"),
        ({"ts": TS, "g": 1, "duration_ms": 1.5}, RejectReason.WRONG_TYPE, "duration_ms:"),
        ({"ts": TS, "g": 1, "duration_ms": -1}, RejectReason.OUT_OF_RANGE, "duration_ms: -1"),
        ({"ts": TS, "g": 1, "ignition": "off"}, RejectReason.WRONG_TYPE, "ignition: expected"),
    ],
)
def test_vibration_rejects(body: object, reason: RejectReason, detail: str) -> None:
    assert_reject(one_reject(VIB, body), reason, detail)


@pytest.mark.parametrize(
    ("fields", "reason", "detail"),
    [
        ({"ext_power": 1}, RejectReason.WRONG_TYPE, "ext_power: expected true or false"),
        ({"tamper": "yes"}, RejectReason.WRONG_TYPE, "tamper: expected true or false"),
        ({"battery_v": 100.1}, RejectReason.OUT_OF_RANGE, "battery_v: 100.1 is outside 0..100"),
        ({"battery_v": -0.1}, RejectReason.OUT_OF_RANGE, "battery_v: -0.1 is outside 0..100"),
        ({"battery_v": "12V"}, RejectReason.WRONG_TYPE, "battery_v: expected a number"),
        ({"vin": VIN[:16]}, RejectReason.OUT_OF_RANGE, "has 16 characters; expected 17"),
        ({"vin": VIN + "7"}, RejectReason.OUT_OF_RANGE, "has 18 characters; expected 17"),
        ({"vin": ""}, RejectReason.OUT_OF_RANGE, "vin: '' has 0 characters; expected 17"),
        ({"vin": VIN[:16] + "-"}, RejectReason.OUT_OF_RANGE, "characters other than A-Z, 0-9"),
        ({"vin": VIN[:16] + " "}, RejectReason.OUT_OF_RANGE, "characters other than A-Z, 0-9"),
        ({"vin": VIN[:16] + "É"}, RejectReason.OUT_OF_RANGE, "characters other than A-Z, 0-9"),
        ({"vin": VIN[:16] + "٣"}, RejectReason.OUT_OF_RANGE, "characters other than A-Z, 0-9"),
        (
            {"vin": 12345678901234567},
            RejectReason.WRONG_TYPE,
            "vin: expected a string, got integer",
        ),
        ({"vin": [VIN]}, RejectReason.WRONG_TYPE, "vin: expected a string, got array"),
    ],
)
def test_status_rejects(fields: Mapping[str, object], reason: RejectReason, detail: str) -> None:
    assert_reject(one_reject(STATUS, {"ts": TS, **fields}), reason, detail)


# non-finite numbers, which only the stdlib parser accepts


@pytest.mark.parametrize(
    ("literal", "shown"),
    [(b"NaN", "nan"), (b"Infinity", "inf"), (b"-Infinity", "-inf"), (b"1e999", "inf")],
)
def test_non_finite_numbers_are_out_of_range(literal: bytes, shown: str) -> None:
    body = b'{"ts": 1795940100000, "lat": ' + literal + b', "lon": 121.47}'
    reject = one_reject(GPS, body)
    assert_reject(reject, RejectReason.OUT_OF_RANGE, f"lat: {shown} is not a finite number")
    assert reject.raw == body


@pytest.mark.parametrize(
    ("topic", "field", "extra"),
    [
        (GPS, "hdop", b""),
        (GPS, "odometer_km", b""),
        (GPS, "speed_kmh", b""),
        (VIB, "g", b""),
        (STATUS, "battery_v", b""),
        (OWNTRACKS, "acc", b'"_type": "location", "tst": 1795940100, '),
    ],
)
def test_non_finite_optional_numbers(topic: str, field: str, extra: bytes) -> None:
    for literal in (b"NaN", b"Infinity", b"1e400"):
        body = b'{"ts": 1795940100000, "lat": 1, "lon": 2, "g": 1, ' + extra
        body += b'"' + field.encode() + b'": ' + literal + b"}"
        reject = one_reject(topic, body)
        assert_reject(reject, RejectReason.OUT_OF_RANGE, f"{field}: ", "is not a finite number")


def test_huge_integer_from_the_stdlib_parser() -> None:
    big = b"1" + b"0" * 400
    body = b'[{"ts": 1795940100000, "lat": 1, "lon": 2, "odometer_km": ' + big + b"}, NaN]"
    out = decode(GPS, body, NOW)
    assert out.readings == []
    assert [r.reason for r in out.rejects] == [RejectReason.OUT_OF_RANGE, RejectReason.NOT_OBJECT]
    assert "odometer_km: 1000000" in out.rejects[0].detail
    assert big in out.rejects[0].raw


# whole-payload rejects


def test_not_json() -> None:
    for body in (b"", b"hello", b"{", b'{"ts": 1,}', b"\xef\xbb\xbf{}", b"{'ts': 1}"):
        reject = one_reject(GPS, body)
        assert_reject(reject, RejectReason.NOT_JSON, "payload is not JSON")
        assert reject == Reject(GPS, RejectReason.NOT_JSON, reject.detail, body, "trk-001")


def test_not_utf8() -> None:
    reject = one_reject(GPS, b'{"ts": 1, "name": "\xff\xfe"}')
    assert_reject(reject, RejectReason.NOT_JSON, "payload is not UTF-8", "at byte 19")
    reject = one_reject(GPS, '{"ts": 1}'.encode("utf-16"))
    assert_reject(reject, RejectReason.NOT_JSON, "payload is not UTF-8")


def test_deeply_nested_json_is_not_json() -> None:
    reject = one_reject(GPS, b"[" * 100_000 + b"]" * 100_000)
    assert_reject(reject, RejectReason.NOT_JSON)
    assert len(reject.raw) == RAW_KEEP_BYTES


def test_too_large() -> None:
    body = payload(fix(pad="x" * MAX_PAYLOAD_BYTES))
    reject = one_reject(GPS, body)
    assert_reject(reject, RejectReason.TOO_LARGE, f"payload is {len(body)} bytes; at most 262144")
    assert reject.raw == body[:RAW_KEEP_BYTES]
    assert reject.device_id == "trk-001"


def test_too_large_is_checked_before_parsing() -> None:
    reject = one_reject(GPS, b"\xff" * (MAX_PAYLOAD_BYTES + 1))
    assert reject.reason is RejectReason.TOO_LARGE


def test_exactly_the_size_limit_is_accepted() -> None:
    body = payload(fix())
    body += b" " * (MAX_PAYLOAD_BYTES - len(body))
    assert len(body) == MAX_PAYLOAD_BYTES
    assert one_reading(GPS, body) == GpsFix("trk-001", TS, 31.2304, 121.4737)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"42", "integer"),
        (b"4.2", "number"),
        (b'"text"', "string"),
        (b"null", "null"),
        (b"true", "boolean"),
        (b"NaN", "number"),
    ],
)
def test_scalar_payload_is_not_an_object(body: bytes, kind: str) -> None:
    reject = one_reject(GPS, body)
    assert_reject(reject, RejectReason.NOT_OBJECT, f"payload is a JSON {kind}")
    assert reject.raw == body
    assert reject.index is None


def test_empty_array_is_one_reject() -> None:
    reject = one_reject(GPS, b"[]")
    assert reject == Reject(
        GPS,
        RejectReason.NOT_OBJECT,
        "payload is an empty array; expected 1 to 1000 objects",
        b"[]",
        "trk-001",
    )


def test_too_many_elements() -> None:
    body = payload([fix()] * (MAX_ARRAY_ELEMENTS + 1))
    reject = one_reject(GPS, body)
    assert_reject(
        reject, RejectReason.TOO_MANY_ELEMENTS, "payload is an array of 1001 elements; at most 1000"
    )
    assert reject.raw == body[:RAW_KEEP_BYTES]
    assert reject.index is None


def test_array_at_the_element_limit() -> None:
    out = decode(GPS, payload([fix(ts=TS - i) for i in range(MAX_ARRAY_ELEMENTS)]), NOW)
    assert out.rejects == []
    assert [r.ts_ms for r in out.readings] == [TS - i for i in range(MAX_ARRAY_ELEMENTS)]


def test_raw_of_a_single_object_is_the_truncated_payload() -> None:
    body = payload(fix(lat=100, note="n" * 10_000))
    reject = one_reject(GPS, body)
    assert reject.raw == body[:RAW_KEEP_BYTES]
    assert len(reject.raw) == RAW_KEEP_BYTES


# arrays: each element judged on its own


def test_array_with_mixed_elements() -> None:
    elements: list[object] = [
        fix(ts=TS - 3000),
        fix(lat=91.5),
        "not an object",
        fix(ts="2026-11-29T08:14:58+00:00", speed_kmh=12),
        {"lat": 1, "lon": 2},
        [fix()],
        fix(ts=NOW + FUTURE_TOLERANCE_MS + 1),
        None,
        fix(ts=TS),
    ]
    out = decode(GPS, payload(elements), NOW)
    assert out.readings == [
        GpsFix("trk-001", TS - 3000, 31.2304, 121.4737),
        GpsFix("trk-001", TS - 2000, 31.2304, 121.4737, speed_kmh=12.0),
        GpsFix("trk-001", TS, 31.2304, 121.4737),
    ]
    expected = [
        (1, RejectReason.OUT_OF_RANGE, "lat: 91.5 is outside -90..90"),
        (2, RejectReason.NOT_OBJECT, "array element is a JSON string; expected an object"),
        (4, RejectReason.MISSING_FIELD, "ts: required field is missing"),
        (5, RejectReason.NOT_OBJECT, "array element is a JSON array"),
        (6, RejectReason.FUTURE_TIMESTAMP, "300001 ms ahead"),
        (7, RejectReason.NOT_OBJECT, "array element is a JSON null"),
    ]
    assert [(r.index, r.reason) for r in out.rejects] == [(i, r) for i, r, _ in expected]
    for reject, (_, _, detail) in zip(out.rejects, expected, strict=True):
        assert detail in reject.detail
    for reject in out.rejects:
        assert reject.topic == GPS
        assert reject.device_id == "trk-001"
        assert reject.index is not None
        assert reject.raw == orjson.dumps(elements[reject.index])


def test_array_element_raw_is_truncated() -> None:
    element = fix(lat=-91, note="n" * 10_000)
    out = decode(GPS, payload([fix(), element]), NOW)
    assert len(out.readings) == 1
    assert out.rejects[0].raw == orjson.dumps(element)[:RAW_KEEP_BYTES]
    assert len(out.rejects[0].raw) == RAW_KEEP_BYTES


def test_array_element_raw_keeps_what_only_the_stdlib_parser_reads() -> None:
    body = (
        b'[{"ts": 1795940100000, "lat": NaN, "lon": 2, "name": "\\ud800 \xe8\xbd\xa6"},'
        b' {"ts": 1795940100000, "lat": 1, "lon": 2}]'
    )
    out = decode(GPS, body, NOW)
    assert out.readings == [GpsFix("trk-001", TS, 1.0, 2.0)]
    (reject,) = out.rejects
    assert_reject(reject, RejectReason.OUT_OF_RANGE, "lat: nan is not a finite number")
    assert reject.index == 0
    assert reject.raw == '{"ts":1795940100000,"lat":NaN,"lon":2,"name":"\\ud800 车"}'.encode()


def test_array_of_vibrations_and_statuses() -> None:
    out = decode(VIB, payload([{"ts": TS, "g": 2.6}, {"ts": TS, "g": -1}]), NOW)
    assert out.readings == [Vibration("trk-001", TS, 2.6)]
    assert [r.index for r in out.rejects] == [1]
    out = decode(STATUS, payload([{"ts": TS, "vin": "short"}, {"ts": TS, "tamper": True}]), NOW)
    assert out.readings == [StatusReport("trk-001", TS, tamper=True)]
    assert [r.index for r in out.rejects] == [0]


# OwnTracks


def test_owntracks_location() -> None:
    body = location(vel=54, cog=270, acc=8, batt=87, tid="ph", alt=12, BSSID="x")
    assert one_reading(OWNTRACKS, body) == GpsFix(
        device_id="alice:phone",
        ts_ms=TS,
        lat=31.23,
        lon=121.47,
        speed_kmh=54.0,
        heading_deg=270.0,
        accuracy_m=8.0,
    )


def test_owntracks_minimal_and_ignored_fields() -> None:
    reading = one_reading(OWNTRACKS, location(batt="full", ts="ignored", speed_kmh=-1))
    assert reading == GpsFix("alice:phone", TS, 31.23, 121.47)


def test_owntracks_array() -> None:
    out = decode(OWNTRACKS, payload([location(tst=TS // 1000 - 60), location(lat=95)]), NOW)
    assert out.readings == [GpsFix("alice:phone", TS - 60_000, 31.23, 121.47)]
    assert [(r.index, r.reason) for r in out.rejects] == [(1, RejectReason.OUT_OF_RANGE)]
    assert out.rejects[0].device_id == "alice:phone"


@pytest.mark.parametrize(
    ("fields", "reason", "detail"),
    [
        ({"_type": DROP}, RejectReason.MISSING_FIELD, "_type: required field is missing"),
        ({"_type": None}, RejectReason.MISSING_FIELD, "_type: required field is null"),
        ({"_type": "transition"}, RejectReason.UNSUPPORTED_MESSAGE, "_type: 'transition' is not"),
        ({"_type": "Location"}, RejectReason.UNSUPPORTED_MESSAGE, "only 'location' messages"),
        ({"_type": 1}, RejectReason.WRONG_TYPE, "_type: expected a string, got integer"),
        ({"lat": DROP}, RejectReason.MISSING_FIELD, "lat: required field is missing"),
        ({"lon": None}, RejectReason.MISSING_FIELD, "lon: required field is null"),
        ({"lat": -90.5}, RejectReason.OUT_OF_RANGE, "lat: -90.5 is outside -90..90"),
        ({"lon": "121"}, RejectReason.WRONG_TYPE, "lon: expected a number, got string"),
        ({"tst": DROP}, RejectReason.MISSING_FIELD, "tst: required field is missing"),
        (
            {"tst": float(TS // 1000)},
            RejectReason.WRONG_TYPE,
            "tst: expected integer epoch seconds",
        ),
        ({"tst": "2026-11-29T08:15:00Z"}, RejectReason.WRONG_TYPE, "got string"),
        ({"tst": True}, RejectReason.WRONG_TYPE, "got boolean"),
        ({"tst": TS}, RejectReason.OUT_OF_RANGE, "s is not before 2100-01-01"),
        ({"tst": -5}, RejectReason.OUT_OF_RANGE, "tst: -5 s is before 2000-01-01"),
        ({"vel": -1}, RejectReason.OUT_OF_RANGE, "vel: -1 is outside 0..1000"),
        ({"cog": 361}, RejectReason.OUT_OF_RANGE, "cog: 361 is outside 0..360"),
        ({"acc": -1}, RejectReason.OUT_OF_RANGE, "acc: -1 is outside >= 0"),
        ({"acc": "8m"}, RejectReason.WRONG_TYPE, "acc: expected a number, got string"),
        (
            {"tst": NOW // 1000 + 301},
            RejectReason.FUTURE_TIMESTAMP,
            "tst: 2026-11-29T08:20:01.000Z",
        ),
    ],
)
def test_owntracks_rejects(fields: Mapping[str, object], reason: RejectReason, detail: str) -> None:
    reject = one_reject(OWNTRACKS, location(**fields))
    assert_reject(reject, reason, detail)
    assert reject.device_id == "alice:phone"
    assert reject.topic == OWNTRACKS


def test_owntracks_scalar_and_bad_json() -> None:
    assert_reject(one_reject(OWNTRACKS, b"7"), RejectReason.NOT_OBJECT)
    assert_reject(one_reject(OWNTRACKS, b"{"), RejectReason.NOT_JSON)


def test_owntracks_bad_device_is_a_bad_topic() -> None:
    reject = one_reject("owntracks/alice/my phone", location())
    assert_reject(reject, RejectReason.BAD_TOPIC, "'alice:my phone' does not match")
    assert reject.device_id is None


# robustness


def test_other_buffer_types_are_accepted() -> None:
    body = payload(fix())
    expected = GpsFix("trk-001", TS, 31.2304, 121.4737)
    # Not the declared type, but buffers that an MQTT client might hand over.
    assert decode(GPS, bytearray(body), NOW).readings == [expected]  # type: ignore[arg-type]
    assert decode(GPS, memoryview(body), NOW).readings == [expected]  # type: ignore[arg-type]


def test_non_bytes_payload_is_refused() -> None:
    out = decode(GPS, '{"ts": 1}', NOW)  # type: ignore[arg-type]  # a caller breaking the contract
    assert out == Decoded(
        [], [Reject(GPS, RejectReason.NOT_JSON, "payload is a str, expected bytes", b"")]
    )
    out = decode(GPS, None, NOW)  # type: ignore[arg-type]  # a caller breaking the contract
    assert out.rejects[0].reason is RejectReason.NOT_JSON


def test_non_str_topic_is_refused() -> None:
    topic = b"telematics/x/gps"
    out = decode(topic, payload(fix()), NOW)  # type: ignore[arg-type]  # a caller breaking the contract
    assert out.readings == []
    assert_reject(out.rejects[0], RejectReason.BAD_TOPIC, "topic is a bytes, expected str")


def test_decoder_bug_becomes_a_reject(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: object) -> object:
        msg = "boom"
        raise RuntimeError(msg)

    monkeypatch.setattr(decode_module, "_judge", broken)
    body = payload(fix())
    with caplog.at_level(logging.ERROR, logger="devices.decode"):
        out = decode(GPS, body, NOW)
    assert out == Decoded(
        [],
        [
            Reject(
                GPS,
                RejectReason.DECODER_ERROR,
                "internal decoder error: RuntimeError('boom')",
                body,
            )
        ],
    )
    assert "decoder error" in caplog.text


def test_every_reason_is_exercised() -> None:
    cases: list[tuple[str, bytes]] = [
        ("telematics/x/nope", b"{}"),
        (GPS, b" " * (MAX_PAYLOAD_BYTES + 1)),
        (GPS, b"nope"),
        (GPS, b"1"),
        (GPS, payload([{}] * 1001)),
        (GPS, payload({"ts": TS})),
        (GPS, payload(fix(lat="1"))),
        (GPS, payload(fix(lat=100))),
        (GPS, payload(fix(ts="noon"))),
        (GPS, payload(fix(ts=NOW + 10 * FUTURE_TOLERANCE_MS))),
        (OWNTRACKS, payload({"_type": "card"})),
    ]
    seen = {decode(topic, body, NOW).rejects[0].reason for topic, body in cases}
    assert seen == set(RejectReason) - {RejectReason.DECODER_ERROR}  # that one: the test above
