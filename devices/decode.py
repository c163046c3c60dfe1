"""The wire-format decoder of DESIGN §2: one MQTT message in, readings and rejects out.

`decode(topic, payload, now_ms)` never raises. Every input ends up either as a reading or as
a `Reject` carrying its reason, a detail that names the field and what was wrong, and the
raw bytes (truncated) for the dead-letter table. In an array payload each element is judged
on its own, so one bad element never costs its valid siblings.

Choices where DESIGN §2 is silent:

- The topic is checked first, then the payload size, then the JSON. A message that fails
  one of those is one reject for the whole payload (`index` None).
- An empty array is one NOT_OBJECT reject: it carries no reading, and bad input is never
  dropped silently.
- Timestamps must fall in [2000-01-01T00:00:00Z, 2100-01-01T00:00:00Z). ISO-8601 strings
  are the extended format `YYYY-MM-DDTHH:MM[:SS[.fff...]]` then `Z` or `±HH[[:]MM]`; `t` or
  a space may stand for `T` (RFC 3339); fractions beyond milliseconds are truncated.
- Integer fields (`sats`, `seq`, `duration_ms`) must fit a signed 64-bit column; numbers
  without an upper bound in the contract must still be finite.
- A non-string OwnTracks `_type` is WRONG_TYPE; a string other than "location" is
  UNSUPPORTED_MESSAGE.
- The first defect found wins, in field order (`ts` first; OwnTracks: `_type`, `lat`, `lon`,
  `tst`); the future check comes last, so a malformed reading is reported as malformed.
- Should the decoder itself fail (a bug), the error is logged and the whole message becomes
  one DECODER_ERROR reject, so the input is still counted and kept for a later fix.
- A gps reading's optional `coord_sys` (DESIGN §9: `wgs84`, `gcj02`, `bd09`) is judged after
  every other field; lat/lon are converted to WGS84 once they passed their range checks. A
  non-string is WRONG_TYPE, an unknown name OUT_OF_RANGE. OwnTracks positions are WGS84.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import orjson

from devices.details import clip, json_type, show
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
from devices.topics import BadTopic, TopicRoute, parse_topic
from geofence.coords import parse_coord_sys, to_wgs84

MAX_PAYLOAD_BYTES: Final = 256 * 1024
MAX_ARRAY_ELEMENTS: Final = 1000
FUTURE_TOLERANCE_MS: Final = 300_000
MIN_TS_MS: Final = 946_684_800_000  # 2000-01-01T00:00:00Z, inclusive
MAX_TS_MS: Final = 4_102_444_800_000  # 2100-01-01T00:00:00Z, exclusive
MAX_INT: Final = 2**63 - 1  # integer fields must fit a BIGINT column

_log = logging.getLogger(__name__)

# Topics repeat for every message of a device; memoising the routing saves a split and a
# regex match per message. Bounded, so a flood of distinct topics cannot grow memory.
_route = functools.lru_cache(maxsize=16_384)(parse_topic)
route_of = _route
"""`parse_topic`, memoised: the route of a topic (the columnar decoder routes with it too)."""

_MISSING: Final = RejectReason.MISSING_FIELD
_WRONG: Final = RejectReason.WRONG_TYPE
_RANGE: Final = RejectReason.OUT_OF_RANGE
_BAD_TS: Final = RejectReason.BAD_TIMESTAMP

_FLOAT_MAX: Final = sys.float_info.max
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_TS_HINT: Final = "expected integer epoch milliseconds or ISO-8601 with offset"

_ISO_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2})"
    r"(?::([0-9]{2})(?:[.,]([0-9]+))?)?"
    r"(?:([Zz])|([+-])([0-9]{2})(?::?([0-9]{2}))?)?"
)
_DAYS_IN_MONTH: Final = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one MQTT message yields: its valid readings and its rejects, in payload order."""

    readings: list[Reading]
    rejects: list[Reject]


@dataclass(frozen=True, slots=True)
class _Fault:
    """Why one object was refused; becomes a `Reject` once the topic and raw bytes are known."""

    reason: RejectReason
    detail: str


def decode(topic: str, payload: bytes, now_ms: int | None) -> Decoded:
    """Decode one MQTT message into readings and rejects; never raises, whatever the input."""
    try:
        return _decode(topic, payload, now_ms)
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop the engine
        _log.exception("decoder error on topic %r", topic)
        detail = f"internal decoder error: {show(exc)}"
        raw = _payload_raw(payload)
        safe_topic = topic if isinstance(topic, str) else show(topic)
        return Decoded([], [Reject(safe_topic, RejectReason.DECODER_ERROR, detail, raw)])


def _decode(topic: str, payload: bytes, now_ms: int | None) -> Decoded:
    if not isinstance(topic, str):
        detail = f"topic is a {type(topic).__name__}, expected str"
        reject = Reject(show(topic), RejectReason.BAD_TOPIC, detail, _payload_raw(payload))
        return Decoded([], [reject])
    if type(payload) is not bytes:
        if not isinstance(payload, bytes | bytearray | memoryview):
            detail = f"payload is a {type(payload).__name__}, expected bytes"
            return Decoded([], [Reject(topic, RejectReason.NOT_JSON, detail, b"")])
        payload = bytes(payload)

    route = _route(topic)
    if isinstance(route, BadTopic):
        return _refuse(topic, payload, route.device_id, RejectReason.BAD_TOPIC, route.detail)
    device_id = route.device_id
    if len(payload) > MAX_PAYLOAD_BYTES:
        detail = f"payload is {len(payload)} bytes; at most {MAX_PAYLOAD_BYTES} allowed"
        return _refuse(topic, payload, device_id, RejectReason.TOO_LARGE, detail)
    data, lenient, error = _parse(payload)
    if error is not None:
        return _refuse(topic, payload, device_id, RejectReason.NOT_JSON, error)
    return _judge_value(topic, route, data, now_ms, lenient, payload)


def decode_value(topic: str, value: object, now_ms: int | None, lenient: bool = False) -> Decoded:
    """Like `decode`, for a payload already parsed from JSON (a replay line); never raises.

    The 256 KiB size rule is the caller's to apply, as only it saw the bytes. `lenient`
    says the value came from the stdlib parser (it may hold NaN or Infinity).
    """
    try:
        route = _route(topic)
        if isinstance(route, BadTopic):
            raw = _element_raw(value, lenient=lenient)
            return _refuse(topic, raw, route.device_id, RejectReason.BAD_TOPIC, route.detail)
        return _judge_value(topic, route, value, now_ms, lenient, None)
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop the engine
        _log.exception("decoder error on topic %r", topic)
        detail = f"internal decoder error: {show(exc)}"
        raw = _element_raw(value, lenient=lenient)
        return Decoded([], [Reject(topic, RejectReason.DECODER_ERROR, detail, raw)])


def _judge_value(
    topic: str,
    route: TopicRoute,
    data: object,
    now_ms: int | None,
    lenient: bool,
    payload: bytes | None,
) -> Decoded:
    """Judge a parsed payload; `payload` is its bytes when known, kept whole on a refusal."""
    device_id = route.device_id

    def refuse(reason: RejectReason, detail: str) -> Decoded:
        raw = payload if payload is not None else _element_raw(data, lenient=lenient)
        return _refuse(topic, raw, device_id, reason, detail)

    if isinstance(data, dict):
        judged = _judge(data, route, now_ms)
        if isinstance(judged, _Fault):
            return refuse(judged.reason, judged.detail)
        return Decoded([judged], [])
    if not isinstance(data, list):
        detail = f"payload is a JSON {json_type(data)}; expected an object or an array of objects"
        return refuse(RejectReason.NOT_OBJECT, detail)
    if not data:
        detail = f"payload is an empty array; expected 1 to {MAX_ARRAY_ELEMENTS} objects"
        return refuse(RejectReason.NOT_OBJECT, detail)
    if len(data) > MAX_ARRAY_ELEMENTS:
        detail = f"payload is an array of {len(data)} elements; at most {MAX_ARRAY_ELEMENTS}"
        return refuse(RejectReason.TOO_MANY_ELEMENTS, detail)

    readings: list[Reading] = []
    rejects: list[Reject] = []
    for index, element in enumerate(data):
        if isinstance(element, dict):
            judged = _judge(element, route, now_ms)
        else:
            detail = f"array element is a JSON {json_type(element)}; expected an object"
            judged = _Fault(RejectReason.NOT_OBJECT, detail)
        if isinstance(judged, _Fault):
            raw = _element_raw(element, lenient=lenient)
            rejects.append(Reject(topic, judged.reason, judged.detail, raw, device_id, index))
        else:
            readings.append(judged)
    return Decoded(readings, rejects)


def _refuse(
    topic: str, payload: bytes, device_id: str | None, reason: RejectReason, detail: str
) -> Decoded:
    """The whole message as one reject."""
    return Decoded([], [Reject(topic, reason, detail, payload[:RAW_KEEP_BYTES], device_id)])


def _parse(payload: bytes) -> tuple[object, bool, str | None]:
    """Parse JSON as (value, parsed_leniently, error); the stdlib fallback admits NaN and 1e999."""
    try:
        return orjson.loads(payload), False, None
    except orjson.JSONDecodeError:
        pass
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, True, f"payload is not UTF-8: {exc.reason} at byte {exc.start}"
    try:
        return json.loads(text), True, None
    except (ValueError, RecursionError) as exc:
        return None, True, f"payload is not JSON: {clip(str(exc))}"


def _judge(obj: dict[str, object], route: TopicRoute, now_ms: int | None) -> Reading | _Fault:
    if route.owntracks:
        return _judge_owntracks(obj, route.device_id, now_ms)
    stream = route.stream
    if stream is Stream.GPS:
        return _judge_gps(obj, route.device_id, now_ms)
    if stream is Stream.VIB:
        return _judge_vib(obj, route.device_id, now_ms)
    return _judge_status(obj, route.device_id, now_ms)


def _judge_gps(obj: dict[str, object], device_id: str, now_ms: int | None) -> GpsFix | _Fault:
    ts_ms = _ts(obj)
    if isinstance(ts_ms, _Fault):
        return ts_ms
    lat = _num(obj, "lat", -90.0, 90.0, "-90..90")
    if not isinstance(lat, float):
        return lat or _absent(obj, "lat")
    lon = _num(obj, "lon", -180.0, 180.0, "-180..180")
    if not isinstance(lon, float):
        return lon or _absent(obj, "lon")
    speed_kmh = _num(obj, "speed_kmh", 0.0, 1000.0, "0..1000")
    if isinstance(speed_kmh, _Fault):
        return speed_kmh
    heading_deg = _num(obj, "heading_deg", 0.0, 360.0, "0..360")
    if isinstance(heading_deg, _Fault):
        return heading_deg
    hdop = _num(obj, "hdop", 0.0, _FLOAT_MAX, ">= 0")
    if isinstance(hdop, _Fault):
        return hdop
    sats = _int(obj, "sats")
    if isinstance(sats, _Fault):
        return sats
    ignition = _bool(obj, "ignition")
    if isinstance(ignition, _Fault):
        return ignition
    odometer_km = _num(obj, "odometer_km", 0.0, _FLOAT_MAX, ">= 0")
    if isinstance(odometer_km, _Fault):
        return odometer_km
    seq = _int(obj, "seq")
    if isinstance(seq, _Fault):
        return seq
    coord_sys = obj.get("coord_sys")
    if coord_sys is not None:  # absent on the common path: one dict lookup
        system = parse_coord_sys(coord_sys)
        if system is None:
            return _bad_coord_sys(coord_sys)
        lat, lon = to_wgs84(lat, lon, system)
    if now_ms is not None and ts_ms > now_ms + FUTURE_TOLERANCE_MS:
        return _future(ts_ms, now_ms)
    return GpsFix(
        device_id=device_id,
        ts_ms=ts_ms,
        lat=lat,
        lon=lon,
        speed_kmh=speed_kmh,
        heading_deg=heading_deg,
        hdop=hdop,
        sats=sats,
        ignition=ignition,
        odometer_km=odometer_km,
        seq=seq,
    )


def _judge_vib(obj: dict[str, object], device_id: str, now_ms: int | None) -> Vibration | _Fault:
    ts_ms = _ts(obj)
    if isinstance(ts_ms, _Fault):
        return ts_ms
    g = _num(obj, "g", 0.0, _FLOAT_MAX, ">= 0")
    if not isinstance(g, float):
        return g or _absent(obj, "g")
    duration_ms = _int(obj, "duration_ms")
    if isinstance(duration_ms, _Fault):
        return duration_ms
    ignition = _bool(obj, "ignition")
    if isinstance(ignition, _Fault):
        return ignition
    if now_ms is not None and ts_ms > now_ms + FUTURE_TOLERANCE_MS:
        return _future(ts_ms, now_ms)
    return Vibration(
        device_id=device_id, ts_ms=ts_ms, g=g, duration_ms=duration_ms, ignition=ignition
    )


def _judge_status(
    obj: dict[str, object], device_id: str, now_ms: int | None
) -> StatusReport | _Fault:
    ts_ms = _ts(obj)
    if isinstance(ts_ms, _Fault):
        return ts_ms
    ext_power = _bool(obj, "ext_power")
    if isinstance(ext_power, _Fault):
        return ext_power
    battery_v = _num(obj, "battery_v", 0.0, 100.0, "0..100")
    if isinstance(battery_v, _Fault):
        return battery_v
    tamper = _bool(obj, "tamper")
    if isinstance(tamper, _Fault):
        return tamper
    vin = _vin(obj.get("vin"))
    if isinstance(vin, _Fault):
        return vin
    if now_ms is not None and ts_ms > now_ms + FUTURE_TOLERANCE_MS:
        return _future(ts_ms, now_ms)
    return StatusReport(
        device_id=device_id,
        ts_ms=ts_ms,
        ext_power=ext_power,
        battery_v=battery_v,
        tamper=tamper,
        vin=vin,
    )


def _judge_owntracks(obj: dict[str, object], device_id: str, now_ms: int | None) -> GpsFix | _Fault:
    kind = obj.get("_type")
    if kind != "location":
        if kind is None:
            return _absent(obj, "_type")
        if type(kind) is not str:
            return _Fault(_WRONG, f"_type: expected a string, got {json_type(kind)}")
        return _Fault(
            RejectReason.UNSUPPORTED_MESSAGE,
            f"_type: {show(kind)} is not supported; only 'location' messages are accepted",
        )
    lat = _num(obj, "lat", -90.0, 90.0, "-90..90")
    if not isinstance(lat, float):
        return lat or _absent(obj, "lat")
    lon = _num(obj, "lon", -180.0, 180.0, "-180..180")
    if not isinstance(lon, float):
        return lon or _absent(obj, "lon")
    tst = obj.get("tst")
    if type(tst) is not int:
        if tst is None:
            return _absent(obj, "tst")
        return _Fault(_WRONG, f"tst: expected integer epoch seconds, got {json_type(tst)}")
    ts_ms = tst * 1000
    if not MIN_TS_MS <= ts_ms < MAX_TS_MS:
        return _Fault(_RANGE, f"tst: {show(tst)} s {_outside_ts_range(ts_ms)}")
    speed_kmh = _num(obj, "vel", 0.0, 1000.0, "0..1000")
    if isinstance(speed_kmh, _Fault):
        return speed_kmh
    heading_deg = _num(obj, "cog", 0.0, 360.0, "0..360")
    if isinstance(heading_deg, _Fault):
        return heading_deg
    accuracy_m = _num(obj, "acc", 0.0, _FLOAT_MAX, ">= 0")
    if isinstance(accuracy_m, _Fault):
        return accuracy_m
    if now_ms is not None and ts_ms > now_ms + FUTURE_TOLERANCE_MS:
        return _future(ts_ms, now_ms, key="tst")
    return GpsFix(
        device_id=device_id,
        ts_ms=ts_ms,
        lat=lat,
        lon=lon,
        speed_kmh=speed_kmh,
        heading_deg=heading_deg,
        accuracy_m=accuracy_m,
    )


def _num(
    obj: dict[str, object], key: str, lo: float, hi: float, span: str
) -> float | _Fault | None:
    """A number field in lo..hi as a float; None when absent or null (the caller decides)."""
    value = obj.get(key)
    if type(value) is float or type(value) is int:
        # int compares exactly with float, so a huge int from the stdlib parser is refused
        # here before float() could overflow; NaN fails every comparison.
        if lo <= value <= hi:
            return float(value)
        return _Fault(_RANGE, f"{key}: {show(value)} {_outside(value, span)}")
    if value is None:
        return None
    return _Fault(_WRONG, f"{key}: expected a number, got {json_type(value)}")


def _int(obj: dict[str, object], key: str) -> int | _Fault | None:
    """An optional integer field in 0..2**63-1; None when absent or null."""
    value = obj.get(key)
    if type(value) is int:
        if 0 <= value <= MAX_INT:
            return value
        return _Fault(_RANGE, f"{key}: {show(value)} is outside 0..2**63-1")
    if value is None:
        return None
    return _Fault(_WRONG, f"{key}: expected an integer, got {json_type(value)}")


def _bool(obj: dict[str, object], key: str) -> bool | _Fault | None:
    """An optional boolean field; None when absent or null."""
    value = obj.get(key)
    if value is True or value is False or value is None:
        return value
    return _Fault(_WRONG, f"{key}: expected true or false, got {json_type(value)}")


def _vin(value: object) -> str | _Fault | None:
    """An optional VIN: 17 ASCII letters or digits, upper-cased."""
    if value is None:
        return None
    if type(value) is not str:
        return _Fault(_WRONG, f"vin: expected a string, got {json_type(value)}")
    if len(value) != 17:
        return _Fault(_RANGE, f"vin: {show(value)} has {len(value)} characters; expected 17")
    if not (value.isascii() and value.isalnum()):
        return _Fault(_RANGE, f"vin: {show(value)} holds characters other than A-Z, 0-9")
    return value.upper()


def _bad_coord_sys(value: object) -> _Fault:
    if type(value) is not str:
        return _Fault(_WRONG, f"coord_sys: expected a string, got {json_type(value)}")
    return _Fault(_RANGE, f"coord_sys: {show(value)} is not 'wgs84', 'gcj02' or 'bd09'")


def _ts(obj: dict[str, object]) -> int | _Fault:
    """The required `ts` as epoch milliseconds."""
    value = obj.get("ts")
    if type(value) is int:
        if MIN_TS_MS <= value < MAX_TS_MS:
            return value
        seconds_like = MIN_TS_MS // 1000 <= value < MAX_TS_MS // 1000
        hint = " (seconds instead of milliseconds?)" if seconds_like else ""
        return _Fault(_RANGE, f"ts: {show(value)} ms {_outside_ts_range(value)}{hint}")
    if type(value) is str:
        return _iso_ms(value)
    if value is None:
        return _absent(obj, "ts")
    return _Fault(_WRONG, f"ts: {_TS_HINT}, got {json_type(value)} {show(value)}")


def _iso_ms(text: str) -> int | _Fault:
    """Epoch milliseconds of an ISO-8601 date-time that carries a UTC offset."""
    match = _ISO_RE.fullmatch(text)
    if match is None:
        return _Fault(_BAD_TS, f"ts: {show(text)} is not ISO-8601 (e.g. 2026-11-29T08:15:00Z)")
    year_s, month_s, day_s, hour_s, minute_s, second_s, frac, zulu, sign, off_h, off_m = (
        match.groups()
    )
    if zulu is None and sign is None:
        return _Fault(_BAD_TS, f"ts: {show(text)} has no UTC offset; append Z or +HH:MM")
    year, month, day = int(year_s), int(month_s), int(day_s)
    hour, minute = int(hour_s), int(minute_s)
    second = int(second_s) if second_s is not None else 0
    offset_min = 0
    if sign is not None:
        offset_min = int(off_h) * 60 + (int(off_m) if off_m is not None else 0)
        if int(off_h) > 23 or (off_m is not None and int(off_m) > 59):
            return _Fault(_BAD_TS, f"ts: {show(text)} has an invalid UTC offset")
        if sign == "-":
            offset_min = -offset_min
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    month_days = 29 if leap and month == 2 else _DAYS_IN_MONTH[month] if 1 <= month <= 12 else 0
    if not (1 <= day <= month_days and hour < 24 and minute < 60 and second < 60):
        return _Fault(_BAD_TS, f"ts: {show(text)} is not a valid date and time")
    millis = int((frac + "00")[:3]) if frac is not None else 0
    seconds = (_days_from_civil(year, month, day) * 24 + hour) * 3600 + minute * 60 + second
    ts_ms = (seconds - offset_min * 60) * 1000 + millis
    if MIN_TS_MS <= ts_ms < MAX_TS_MS:
        return ts_ms
    return _Fault(_RANGE, f"ts: {show(text)} {_outside_ts_range(ts_ms)}")


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def _outside_ts_range(ts_ms: int) -> str:
    if ts_ms < MIN_TS_MS:
        return "is before 2000-01-01T00:00:00Z"
    return "is not before 2100-01-01T00:00:00Z"


def _future(ts_ms: int, now_ms: int, key: str = "ts") -> _Fault:
    when = (_EPOCH + timedelta(milliseconds=ts_ms)).isoformat(timespec="milliseconds")[:-6] + "Z"
    ahead = ts_ms - now_ms
    return _Fault(
        RejectReason.FUTURE_TIMESTAMP,
        f"{key}: {when} is {ahead} ms ahead of the reference clock; "
        f"at most {FUTURE_TOLERANCE_MS} ms allowed",
    )


def _absent(obj: dict[str, object], key: str) -> _Fault:
    state = "null" if key in obj else "missing"
    return _Fault(_MISSING, f"{key}: required field is {state}")


def _outside(value: object, span: str) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"is not a finite number (allowed {span})"
    return f"is outside {span}"


def _payload_raw(payload: object) -> bytes:
    """The kept bytes of a whole payload; never raises."""
    try:
        return bytes(payload[:RAW_KEEP_BYTES])  # type: ignore[index]  # any sliceable buffer
    except Exception:  # noqa: BLE001 - not a buffer: nothing to keep
        return b""


def _element_raw(element: object, *, lenient: bool) -> bytes:
    """The kept bytes of one array element, re-serialised; never raises.

    Elements of a payload that only the stdlib parser accepted are re-serialised by the
    stdlib too, so NaN, Infinity, huge integers and lone surrogates stay visible in the
    dead-letter record instead of turning into null or an error.
    """
    try:
        if lenient:
            text = json.dumps(element, ensure_ascii=False, separators=(",", ":"))
            return text.encode("utf-8", "backslashreplace")[:RAW_KEEP_BYTES]
        return orjson.dumps(element)[:RAW_KEEP_BYTES]
    except Exception:  # noqa: BLE001 - not serialisable as JSON: keep its repr instead
        return _repr_raw(element)


def _repr_raw(element: object) -> bytes:
    """The kept bytes of a value's repr; never raises."""
    try:
        return repr(element).encode("utf-8", "backslashreplace")[:RAW_KEEP_BYTES]
    except Exception:  # noqa: BLE001 - e.g. nesting too deep for repr
        return b""
