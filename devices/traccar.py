"""Traccar's position and event forwarding (JSON over HTTP) as readings of DESIGN §2.

Traccar (traccar.org) decodes hundreds of tracker protocols; with `forward.json` it POSTs
each position as `{"position": {...}, "device": {...}}`, and with `event.forward.url` each
event as `{"event": {...}, "position"?: {...}, "device": {...}}`. A body is one such
document or an array of them. Each document becomes the messages its tracker would have
published on `telematics/{device.uniqueId}/{stream}` (the decoder judges them, see
`devices.wire`):

- `gps` from the position: `ts` = `fixTime` (Traccar writes ISO-8601 with an offset, e.g.
  `2026-11-29T08:15:00.000+00:00`; epoch milliseconds pass too), `lat`/`lon` = `latitude`/
  `longitude`, `speed_kmh` = `speed` (knots) times 1.852, `heading_deg` = `course`, `ignition` =
  `attributes.ignition`, `odometer_km` = `attributes.odometer` (metres) / 1000. A position
  Traccar marks `valid: false` (no GPS fix) or `outdated: true` (the last known fix, copied)
  yields no `gps`: its coordinates are not a fix of that time.
- Alarms, from `position.attributes.alarm` (Traccar joins several with commas) and, for an
  event of type `alarm`, from `event.attributes.alarm`, at the position's `fixTime` (the
  event's `eventTime` when it has no position), so the same alarm forwarded both as a
  position and as an event yields the same readings and the second is a duplicate:
  - `vibration`, `shock`, `accident`, `tow` → `vib` with `g` = 3.0 (over the default
    2.5 g shock threshold) and `ignition`: a `shock` alert, and `tow.suspected` when the car
    is parked, which is what a tracker's tow alarm means (a tamper flag would name the
    wrong thing);
  - `powerCut` → `status` `ext_power: false`; `powerRestored` → `ext_power: true`;
  - `tampering`, `removing`, `gpsAntennaCut` → `status` `tamper: true`, then a second
    `status` 1 ms later with `tamper: false`. Traccar reports alarms, not states: nothing
    would clear the flag, and the engine raises `tamper` only when it turns true, so
    without the second reading a device would raise it once in its life.
  Other alarms (`sos`, `overspeed`, `lowBattery`, ...) map to nothing.
- `batteryLevel` (a percentage), `battery` and `power` (volts), `totalDistance` (GPS
  distance, not the car's odometer), `motion`, `altitude` and `accuracy` map to nothing: the
  status of DESIGN §2 has no level, and the voltages would need a status reading per fix.

The device_id is `device.uniqueId` (the IMEI or id the tracker reports to Traccar), which
must match `[A-Za-z0-9_.:-]{1,64}`; Traccar's numeric `deviceId` is its own database key.
Refused here, on the pseudo-topic `http/traccar`, with the document's index in the array:
a body that is not JSON (`not_json`), not an object or array of 1 to 1000 objects
(`not_object`, `too_many_elements`), a document without `device.uniqueId` or without both
`position` and `event` (`missing_field`), those of the wrong JSON type (`wrong_type`), a
uniqueId that cannot be a device_id (`bad_topic`), and a document that maps to nothing (an
event such as `deviceOffline` with no position and no mapped alarm, or an invalid fix
without one: `unsupported_message`). Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from typing import Final

from devices.decode import decode_value
from devices.details import json_type, show
from devices.readings import RejectReason, Stream
from devices.wire import (
    Fault,
    Mapped,
    MappedBuilder,
    as_device_id,
    documents,
    element_raw,
    parse_json,
    scaled,
    topic_for,
)

ORIGIN: Final = "http/traccar"
KNOT_KMH: Final = 1.852
ALARM_G: Final = 3.0
VIB_ALARMS: Final = frozenset({"vibration", "shock", "accident", "tow"})
TAMPER_ALARMS: Final = frozenset({"tampering", "removing", "gpsAntennaCut"})
POWER_CUT: Final = "powerCut"
POWER_RESTORED: Final = "powerRestored"
MAPPED_ALARMS: Final = VIB_ALARMS | TAMPER_ALARMS | {POWER_CUT, POWER_RESTORED}

_Doc = dict[str, object]


def map_traccar(body: bytes, origin: str = ORIGIN) -> Mapped:
    """Map a forwarded Traccar body (one document or an array) to messages and rejects;
    `origin` names where it came from in a reject (the route, or the MQTT topic)."""
    out = MappedBuilder(origin)
    value, error = parse_json(body)
    if error is not None:
        out.refuse(Fault(RejectReason.NOT_JSON, error), body)
        return out.build()
    docs = documents(value, "body")
    if isinstance(docs, Fault):
        out.refuse(docs, body)
        return out.build()
    for index, doc in docs:
        raw = body if index is None else element_raw(doc)
        if not isinstance(doc, dict):
            detail = f"document is a JSON {json_type(doc)}; expected a Traccar position or event"
            out.refuse(Fault(RejectReason.NOT_OBJECT, detail), raw, index)
            continue
        _map_document(doc, index, raw, out)
    return out.build()


def _map_document(doc: _Doc, index: int | None, raw: bytes, out: MappedBuilder) -> None:
    device = _object(doc, "device", "device")
    if isinstance(device, Fault):
        out.refuse(device, raw, index)
        return
    if device is None:
        missing = Fault(RejectReason.MISSING_FIELD, "device: required object is missing")
        out.refuse(missing, raw, index)
        return
    device_id = as_device_id(device.get("uniqueId"), "device.uniqueId")
    if isinstance(device_id, Fault):
        out.refuse(device_id, raw, index)
        return
    readings = _readings(doc)
    if isinstance(readings, Fault):
        out.refuse(readings, raw, index, device_id)
        return
    for stream, payload in readings:
        out.add(device_id, stream, payload, index)


def _readings(doc: _Doc) -> list[tuple[Stream, _Doc]] | Fault:
    """The payloads of one document, or why it has none."""
    position = _object(doc, "position", "position")
    if isinstance(position, Fault):
        return position
    event = _object(doc, "event", "event")
    if isinstance(event, Fault):
        return event
    if position is None and event is None:
        detail = "position: required object is missing (an event document needs an event)"
        return Fault(RejectReason.MISSING_FIELD, detail)
    attributes = _object(position or {}, "attributes", "position.attributes")
    if isinstance(attributes, Fault):
        return attributes
    attributes = attributes or {}
    alarms = _alarms(attributes, "position.attributes.alarm")
    if isinstance(alarms, Fault):
        return alarms
    if event is not None and event.get("type") == "alarm":
        event_attributes = _object(event, "attributes", "event.attributes")
        if isinstance(event_attributes, Fault):
            return event_attributes
        more = _alarms(event_attributes or {}, "event.attributes.alarm")
        if isinstance(more, Fault):
            return more
        alarms |= more

    ts_key, ts_from = ("fixTime", position) if position is not None else _event_time(event)
    stamp: _Doc = {"ts": ts_from[ts_key]} if ts_key in ts_from else {}
    ignition: _Doc = {"ignition": attributes["ignition"]} if "ignition" in attributes else {}
    out: list[tuple[Stream, _Doc]] = []
    if position is not None and _has_fix(position):
        gps: _Doc = {**stamp}
        _copy(position, "latitude", gps, "lat")
        _copy(position, "longitude", gps, "lon")
        _copy(position, "speed", gps, "speed_kmh", KNOT_KMH)
        _copy(position, "course", gps, "heading_deg")
        gps.update(ignition)
        _copy(attributes, "odometer", gps, "odometer_km", 0.001)
        out.append((Stream.GPS, gps))
    if alarms & VIB_ALARMS:
        out.append((Stream.VIB, {**stamp, "g": ALARM_G, **ignition}))
    status: _Doc = {}
    if POWER_CUT in alarms:
        status["ext_power"] = False
    elif POWER_RESTORED in alarms:
        status["ext_power"] = True
    if alarms & TAMPER_ALARMS:
        status["tamper"] = True
    if status:
        out.append((Stream.STATUS, {**stamp, **status}))
        cleared = _one_ms_later(stamp) if status.get("tamper") else None
        if cleared is not None:
            out.append((Stream.STATUS, {"ts": cleared, "tamper": False}))
    if not out:
        return _nothing_to_map(position, event)
    return out


def _event_time(event: _Doc | None) -> tuple[str, _Doc]:
    """Where an event without a position keeps its time: `eventTime` (Traccar 5 and later)
    or `serverTime` (earlier versions)."""
    assert event is not None  # a document has a position or an event
    return ("serverTime", event) if "eventTime" not in event else ("eventTime", event)


def _has_fix(position: _Doc) -> bool:
    """Whether the position is a fix of its time: not `valid: false`, not `outdated: true`."""
    return position.get("valid") is not False and position.get("outdated") is not True


def _one_ms_later(stamp: _Doc) -> int | None:
    """The stamp's time plus 1 ms, judged by the decoder's rules; None if they refuse it."""
    if "ts" not in stamp:
        return None
    decoded = decode_value(topic_for("x", Stream.STATUS), stamp, None)
    return decoded.readings[0].ts_ms + 1 if decoded.readings else None


def _nothing_to_map(position: _Doc | None, event: _Doc | None) -> Fault:
    if position is not None and not _has_fix(position):
        why = "position is not a fix (valid: false or outdated: true)"
    elif event is not None:
        why = f"event of type {show(event.get('type'))} has no position"
    else:  # pragma: no cover  # a position with a fix always maps
        why = "the document maps to no reading"
    mapped = ", ".join(sorted(MAPPED_ALARMS))
    detail = f"{why} and no alarm pledgewatch maps ({mapped})"
    return Fault(RejectReason.UNSUPPORTED_MESSAGE, detail)


def _object(doc: _Doc, key: str, name: str) -> _Doc | Fault | None:
    """An optional object member; None when absent or null."""
    value = doc.get(key)
    if value is None or isinstance(value, dict):
        return value
    return Fault(RejectReason.WRONG_TYPE, f"{name}: expected an object, got {json_type(value)}")


def _alarms(attributes: _Doc, name: str) -> set[str] | Fault:
    """The alarm names of an `alarm` attribute (comma-separated); empty when absent."""
    value = attributes.get("alarm")
    if value is None:
        return set()
    if type(value) is not str:
        return Fault(RejectReason.WRONG_TYPE, f"{name}: expected a string, got {json_type(value)}")
    return {part.strip() for part in value.split(",") if part.strip()}


def _copy(src: _Doc, key: str, dst: _Doc, as_key: str, factor: float | None = None) -> None:
    """Copy a member if present (null included), scaled when it is a number."""
    if key in src:
        value = src[key]
        dst[as_key] = value if factor is None else scaled(value, factor)
