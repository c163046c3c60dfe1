"""The OsmAnd protocol and Traccar Client's JSON as readings of DESIGN §2.

OsmAnd's online tracking, Traccar Client and many simple trackers report one position per
HTTP request, as query parameters (GET or POST) or as a form-encoded body:
`?id=IMEI&lat=..&lon=..&timestamp=..&speed=..&bearing=..`. Traccar Client 9 and later POST
JSON instead: `{"device_id": "...", "location": {"timestamp": "...", "coords": {"latitude",
"longitude", "speed", "heading", "accuracy", "altitude"}, "battery": {...}, ...}}`, where
`location` may also be an array (a client catching up). Each position becomes the `gps`
message its tracker would have published on `telematics/{id}/gps` (the decoder judges it,
see `devices.wire`).

Parameters, as Traccar's own OsmAnd decoder reads them: `id` (or `deviceid`) is the
device_id; `lat` and `lon` (or `location=lat,lon`); `timestamp` is unix seconds, or
milliseconds when it is 2^31 or more, or ISO-8601 (which needs an offset, as on MQTT; a
missing `timestamp` is the arrival time, as in Traccar); `speed` is in knots (times 1.852 →
`speed_kmh`); `bearing` or `heading` → `heading_deg`; `hdop`; `ignition` (`true`/`false`,
`1`/`0`). `valid=false` (or `0`) marks a position without a fix: it yields no reading and
counts as `unsupported_message`. `altitude`, `accuracy`, `batt` (a percentage), `charge`,
`cell`, `wifi` and anything else map to nothing (the gps reading of DESIGN §2 has no field
for them), and `token` is the API token or the device's token, never data. A number that
does not parse is handed over as text, so the decoder refuses it as `wrong_type` naming the
field.

In the JSON body `coords.speed` is in metres per second (times 3.6 → `speed_kmh`) and
`coords.heading` in degrees; a negative speed or heading means "unknown" (iOS reports -1)
and is left out rather than refused. `odometer` is the phone's own distance count, not the
car's, and `battery`, `activity` and `is_moving` map to nothing.

Refused here, on the pseudo-topic `http/osmand`: a request without `id` (`missing_field`),
an id that cannot be a device_id (`bad_topic`), a JSON body that does not parse
(`not_json`) or is not a Traccar Client object (`not_object`, `wrong_type`,
`missing_field`, `too_many_elements`). Nothing here does I/O or reads a clock: the arrival
time comes in as `now_ms`.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import parse_qsl

from devices.details import json_type
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
)

ORIGIN: Final = "http/osmand"
KNOT_KMH: Final = 1.852
MPS_KMH: Final = 3.6
SECONDS_BELOW: Final = 2**31 - 1  # a smaller integer timestamp is seconds (as in Traccar)
TOKEN_PARAMETER: Final = "token"  # noqa: S105  # the name of a parameter, not a secret

_NUMBER_RE: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER_RE: Final = re.compile(r"[0-9]{1,18}")
_TRUE: Final = frozenset({"true", "1"})
_FALSE: Final = frozenset({"false", "0"})

_Doc = dict[str, object]


def map_osmand(query: str, body: bytes, content_type: str | None, now_ms: int) -> Mapped:
    """Map one OsmAnd request: its query parameters when it has any (besides `token`), else
    its body, as Traccar Client JSON when it says or looks so, else as a form."""
    if _parameters(query):
        return map_osmand_parameters(query, now_ms)
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/json" or (not media and body.lstrip()[:1] in (b"{", b"[")):
        return map_osmand_json(body)
    return map_osmand_parameters(body.decode("utf-8", "replace"), now_ms, raw=body)


def map_osmand_parameters(text: str, now_ms: int, raw: bytes | None = None) -> Mapped:
    """Map a query string or form body (`id=..&lat=..&lon=..`) to a gps message."""
    out = MappedBuilder(ORIGIN)
    kept = raw if raw is not None else text.encode("utf-8", "backslashreplace")
    values: dict[str, str] = {}
    for key, value in _parameters(text):
        values.setdefault(key, value)
    ident = values.get("id", values.get("deviceid"))
    if ident is None:
        detail = "id: required parameter is missing (or deviceid)"
        out.refuse(Fault(RejectReason.MISSING_FIELD, detail), kept)
        return out.build()
    device_id = as_device_id(ident, "id")
    if isinstance(device_id, Fault):
        out.refuse(device_id, kept)
        return out.build()
    if values.get("valid", "true").lower() in _FALSE:
        detail = "valid: the position has no GPS fix; nothing to map"
        out.refuse(Fault(RejectReason.UNSUPPORTED_MESSAGE, detail), kept, device_id=device_id)
        return out.build()
    gps: _Doc = {"ts": _timestamp(values.get("timestamp"), now_ms)}
    if "lat" in values or "lon" in values or "location" not in values:
        _put(values, "lat", gps, "lat")
        _put(values, "lon", gps, "lon")
    else:
        lat, _, lon = values["location"].partition(",")
        gps["lat"], gps["lon"] = _number(lat), _number(lon)
    _put(values, "speed", gps, "speed_kmh", KNOT_KMH)
    _put(values, "bearing" if "bearing" in values else "heading", gps, "heading_deg")
    _put(values, "hdop", gps, "hdop")
    if "ignition" in values:
        gps["ignition"] = _flag(values["ignition"])
    out.add(device_id, Stream.GPS, gps, None)
    return out.build()


def map_osmand_json(body: bytes) -> Mapped:
    """Map a Traccar Client 9+ JSON body (`device_id`, `location`) to gps messages."""
    out = MappedBuilder(ORIGIN)
    value, error = parse_json(body)
    if error is not None:
        out.refuse(Fault(RejectReason.NOT_JSON, error), body)
        return out.build()
    if not isinstance(value, dict):
        detail = f"body is a JSON {json_type(value)}; expected an object with device_id, location"
        out.refuse(Fault(RejectReason.NOT_OBJECT, detail), body)
        return out.build()
    device_id = as_device_id(value.get("device_id"), "device_id")
    if isinstance(device_id, Fault):
        out.refuse(device_id, body)
        return out.build()
    if value.get("location") is None:
        missing = Fault(RejectReason.MISSING_FIELD, "location: required field is missing or null")
        out.refuse(missing, body, device_id=device_id)
        return out.build()
    locations = documents(value["location"], "location")
    if isinstance(locations, Fault):
        out.refuse(locations, body, device_id=device_id)
        return out.build()
    for index, location in locations:
        raw = body if index is None else element_raw(location)
        gps = _location(location)
        if isinstance(gps, Fault):
            out.refuse(gps, raw, index, device_id)
        else:
            out.add(device_id, Stream.GPS, gps, index)
    return out.build()


def _location(location: object) -> _Doc | Fault:
    """One Traccar Client location as a gps payload."""
    if not isinstance(location, dict):
        return Fault(RejectReason.NOT_OBJECT, f"location is a JSON {json_type(location)}")
    coords = location.get("coords")
    if coords is None:
        return Fault(RejectReason.MISSING_FIELD, "location.coords: required object is missing")
    if not isinstance(coords, dict):
        detail = f"location.coords: expected an object, got {json_type(coords)}"
        return Fault(RejectReason.WRONG_TYPE, detail)
    gps: _Doc = {}
    if "timestamp" in location:
        gps["ts"] = location["timestamp"]
    for key, as_key in (("latitude", "lat"), ("longitude", "lon")):
        if key in coords:
            gps[as_key] = coords[key]
    for key, as_key, factor in (("speed", "speed_kmh", MPS_KMH), ("heading", "heading_deg", 1.0)):
        value = coords.get(key)
        if not _unknown(value):
            gps[as_key] = scaled(value, factor)
    return gps


def _unknown(value: object) -> bool:
    """Whether a speed or heading says "not known": absent, null, or negative."""
    return value is None or ((type(value) is int or type(value) is float) and value < 0)


def _parameters(text: str) -> list[tuple[str, str]]:
    """The parameters of a query string or form body, without the token."""
    pairs = parse_qsl(text, keep_blank_values=True)
    return [(key, value) for key, value in pairs if key != TOKEN_PARAMETER]


def _timestamp(text: str | None, now_ms: int) -> object:
    """`timestamp` as the decoder's `ts`: seconds or milliseconds to milliseconds, other text
    as it came (ISO-8601 for the decoder to judge); absent: the arrival time."""
    if text is None:
        return now_ms
    if _INTEGER_RE.fullmatch(text):
        number = int(text)
        return number * 1000 if number < SECONDS_BELOW else number
    return text


def _number(text: str) -> object:
    """A decimal number as a float; other text as it came, for the decoder to refuse."""
    text = text.strip()
    return float(text) if _NUMBER_RE.fullmatch(text) else text


def _flag(text: str) -> object:
    """`true`/`false` (or `1`/`0`) as a boolean; other text as it came."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return text


def _put(values: dict[str, str], key: str, dst: _Doc, as_key: str, factor: float = 1.0) -> None:
    """Copy a numeric parameter if present, scaled when it parses as a number."""
    if key in values:
        number = _number(values[key])
        dst[as_key] = scaled(number, factor) if factor != 1.0 else number
