"""Request bodies, query parameters and the JSON shapes the API answers with.

Parsing of fences and loans lives in `geofence`/`lending`; their errors carry the `field`
that a 422 problem names. Webhooks are parsed here: `alerts` owns the type, the API its
document.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, TypeVar
from urllib.parse import urlsplit

import orjson
from fastapi import Depends, Query, Request

from alerts.kafka_sink import KAFKA_SCHEMES, KafkaAddress
from alerts.model import AlertType, iso_ms
from alerts.mqtt_sink import MQTT_SCHEMES, SinkAddress
from alerts.outbox import Delivery, Webhook
from engine.api.problems import FieldError, JsonResponse, Problem, bad_parameter, validation
from engine.core.state import DeviceState
from engine.store.port import Page, StoredAlert
from engine.store.rows import CursorError
from geofence.coords import CoordSys, from_wgs84, parse_coord_sys
from geofence.fence import MAX_RADIUS_M, FenceError, short_repr
from lending.model import LoanError

T = TypeVar("T")

DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_NOTE_CHARS = 4000
MAX_URL_CHARS = 2048
HOOK_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
"""A well-formed webhook id; use with `fullmatch`."""
ALERT_TYPES = frozenset(t.value for t in AlertType)


# -- request bodies


def _json_media_type(content_type: str) -> bool:
    base = content_type.partition(";")[0].strip().lower()
    return base in {"", "application/json"} or base.endswith("+json")


async def json_body(request: Request) -> object:
    """The request body parsed as JSON (required)."""
    doc = await optional_json_body(request)
    if doc is None:
        raise Problem(400, "malformed-request", "the request body is empty: send a JSON document")
    return doc


async def optional_json_body(request: Request) -> object:
    """The request body parsed as JSON, or None when there is none."""
    content_type = request.headers.get("content-type", "")
    raw = await request.body()
    if not raw.strip():
        return None
    if not _json_media_type(content_type):
        detail = f"Content-Type {content_type!r} is not supported: send application/json"
        raise Problem(415, "unsupported-media-type", detail)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "malformed-request", f"the body is not valid JSON: {exc}") from None
    where = nul_at(doc)
    if where is not None:
        # PostgreSQL text cannot hold NUL, and no field of ours has a use for one.
        raise validation(f"{where or 'the body'} contains a NUL character (\\u0000)", where or None)
    return doc


def nul_at(doc: object) -> str | None:
    """The path of the first string (value or key) in `doc` holding a NUL, else None."""
    stack: list[tuple[object, str]] = [(doc, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return path
        elif isinstance(item, dict):
            for key, value in item.items():
                child = f"{path}.{key}" if path else str(key)
                if "\x00" in key:
                    return child
                stack.append((value, child))
        elif isinstance(item, list):
            stack.extend((value, f"{path}[{i}]") for i, value in enumerate(item))
    return None


JsonBody = Annotated[object, Depends(json_body)]
OptionalJsonBody = Annotated[object, Depends(optional_json_body)]


def fence_problem(exc: FenceError) -> Problem:
    """The 422 for a fence or collection that does not parse; it names the field."""
    errors = (FieldError(exc.field, exc.defect),)
    return Problem(422, "validation-error", str(exc), errors=errors)


def loan_problem(exc: LoanError) -> Problem:
    """The 422 for a loan or loan array that does not parse; it names the field."""
    return validation(str(exc), exc.field)


def parse_webhook(hook_id: str, doc: object) -> Webhook:
    """Validate the body of `PUT /v1/webhooks/{hook_id}`; a 422 problem names the field."""
    if not HOOK_ID_RE.fullmatch(hook_id):
        detail = f"webhook id {hook_id!r} is not valid ({HOOK_ID_RE.pattern})"
        raise validation(detail, "hook_id")
    if not isinstance(doc, dict):
        raise validation("the body must be a JSON object with url and secret", None)
    url = doc.get("url")
    if not isinstance(url, str):
        shown = short_repr(url, 100)
        detail = f"url: must be an http(s), mqtt(s) or kafka(s) URL string, got {shown}"
        raise validation(detail, "url")
    parts = urlsplit(url)
    if (
        parts.scheme not in {"http", "https", *MQTT_SCHEMES, *KAFKA_SCHEMES}
        or not parts.hostname
        or len(url) > MAX_URL_CHARS
        or any(c.isspace() for c in url)
    ):
        raise validation(
            f"url: {url[:100]!r} is not an http://, https://, mqtt(s):// or kafka(s):// URL with "
            f"a host (at most {MAX_URL_CHARS} characters, no spaces)",
            "url",
        )
    if parts.scheme in MQTT_SCHEMES or parts.scheme in KAFKA_SCHEMES:
        try:
            (SinkAddress if parts.scheme in MQTT_SCHEMES else KafkaAddress).parse(url)
        except ValueError as exc:
            raise validation(f"url: {exc}", "url") from exc
    secret = doc.get("secret")
    if not isinstance(secret, str) or not secret.strip():
        raise validation("secret: must be a non-empty string (the HMAC key)", "secret")
    types = doc.get("types")
    wanted: frozenset[str] | None = None
    if types is not None:
        if not isinstance(types, list) or not types:
            detail = "types: must be a non-empty list of alert types; omit it for all types"
            raise validation(detail, "types")
        unknown = [t for t in types if not isinstance(t, str) or t not in ALERT_TYPES]
        if unknown:
            shown = short_repr(unknown, 100)
            detail = f"types: {shown} are not alert types; known: {sorted(ALERT_TYPES)}"
            raise validation(detail, "types")
        wanted = frozenset(str(t) for t in types)
    return Webhook(hook_id=hook_id, url=url, secret=secret, types=wanted)


# -- query parameters

CursorParam = Annotated[
    str | None, Query(description="Opaque cursor from the previous page's `next`.")
]
LimitParam = Annotated[
    str | None, Query(description=f"Page size, 1 to {MAX_PAGE} (default {DEFAULT_PAGE}).")
]


CoordSysParam = Annotated[
    str | None,
    Query(
        description=(
            "The coordinate system of the returned geometry: `wgs84` (as stored), `gcj02` "
            "(AMap, Tencent) or `bd09` (Baidu); `properties.coord_sys` names it. Default: "
            "WGS84, as stored."
        )
    ),
]


PositionCoordSysParam = Annotated[
    str | None,
    Query(
        description=(
            "The coordinate system of the returned `lat`/`lon`: `wgs84` (as stored), `gcj02` "
            "(AMap, Tencent) or `bd09` (Baidu); a `coord_sys` field beside them names a "
            "system other than WGS84. Default: WGS84, as stored."
        )
    ),
]
"""`CoordSysParam` for the points of devices, tracks and alerts rather than a fence."""


def parse_coord_sys_param(value: str | None) -> CoordSys | None:
    """`coord_sys` as a `CoordSys`; None when absent."""
    if value is None:
        return None
    coord_sys = parse_coord_sys(value)
    if coord_sys is None:
        detail = f"coord_sys must be 'wgs84', 'gcj02' or 'bd09', got {short_repr(value, 100)}"
        raise bad_parameter("coord_sys", detail)
    return coord_sys


def parse_limit(value: str | None) -> int:
    """`limit` as a page size, 1 to `MAX_PAGE`; `DEFAULT_PAGE` when absent."""
    if value is None:
        return DEFAULT_PAGE
    if not (
        value.isascii() and value.isdigit() and len(value) <= 6 and 1 <= int(value) <= MAX_PAGE
    ):
        raise bad_parameter(
            "limit", f"limit must be an integer from 1 to {MAX_PAGE}, got {value!r}"
        )
    return int(value)


def parse_since_ms(value: str | None, name: str = "since") -> int | None:
    """`since` (or the time parameter `name`) as epoch ms: an integer of milliseconds, or
    ISO-8601 with a UTC offset."""
    if value is None:
        return None
    if value.isascii() and value.isdigit() and len(value) <= 15:
        return int(value)
    # An unencoded '+' in a query string arrives as a space: "08:00:00 08:00" meant "+08:00".
    text = re.sub(r"(T[0-9:.]+) ([0-9]{2}:?[0-9]{2})$", r"\1+\2", value.strip())
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is not None:
            return int(parsed.timestamp() * 1000)
    except (ValueError, OverflowError):
        pass
    detail = (
        f"{name} must be epoch milliseconds or an ISO-8601 time with a UTC offset "
        f"(e.g. 2026-11-29T08:15:00Z), got {value!r}"
    )
    raise bad_parameter(name, detail)


def parse_near(value: str) -> tuple[float, float, float]:
    """`lat,lon,radius_m` in degrees and metres."""
    parts = value.split(",")
    try:
        lat, lon, radius_m = (float(p) for p in parts)
    except ValueError:
        detail = f"near must be 'lat,lon,radius_m' (three numbers), got {value!r}"
        raise bad_parameter("near", detail) from None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        detail = f"near: lat must be in -90..90 and lon in -180..180, got {lat!r}, {lon!r}"
        raise bad_parameter("near", detail)
    if not (math.isfinite(radius_m) and 0.0 < radius_m <= MAX_RADIUS_M):
        detail = f"near: radius_m must be > 0 and <= {MAX_RADIUS_M:.0f} metres, got {radius_m!r}"
        raise bad_parameter("near", detail)
    return lat, lon, radius_m


# -- responses


def page_response(items: Sequence[object], next_cursor: str | None) -> JsonResponse:
    """A list endpoint's answer: `{"items": [...], "next": <cursor or null>}`."""
    return JsonResponse({"items": list(items), "next": next_cursor})


def paged(fetch: Callable[[], Page[T]]) -> Page[T]:
    """Call a store list; a cursor it did not hand out is a 400 naming `cursor`."""
    try:
        return fetch()
    except CursorError as exc:
        raise bad_parameter("cursor", str(exc)) from None


def created(body: dict[str, object], existed: bool, location: str) -> JsonResponse:
    """200 for a replaced resource, 201 with its `Location` for a new one."""
    if existed:
        return JsonResponse(body)
    return JsonResponse(body, status_code=201, headers={"Location": location})


def webhook_json(hook: Webhook) -> dict[str, object]:
    """A webhook as the API shows it: never its secret."""
    types = None if hook.types is None else sorted(hook.types)
    return {"hook_id": hook.hook_id, "url": hook.url, "types": types}


def alert_json(stored: StoredAlert, *, notes: bool = False) -> dict[str, object]:
    """The DESIGN §4 alert plus `ack` ({at, by, note} or null) and its `case`
    ({state, assignee, acknowledged_at/by, resolved_at/by}, and `notes` when asked)."""
    ack = None
    case = stored.case
    if stored.acked_ms is not None:
        by = None if case is None else case.acked_by
        ack = {"at": iso_ms(stored.acked_ms), "by": by, "note": stored.ack_note}
    body: dict[str, object] = {**stored.alert, "ack": ack}
    if case is not None:
        shown: dict[str, object] = {
            "state": case.state.value,
            "assignee": case.assignee,
            "acknowledged_at": None if case.acked_ms is None else iso_ms(case.acked_ms),
            "acknowledged_by": case.acked_by,
            "resolved_at": None if case.resolved_ms is None else iso_ms(case.resolved_ms),
            "resolved_by": case.resolved_by,
        }
        if notes:
            shown["notes"] = [
                {"by": n.by, "at": iso_ms(n.at_ms), "text": n.text} for n in case.notes
            ]
        body["case"] = shown
    return body


def fix_json(state: DeviceState | None) -> dict[str, object] | None:
    """A device's last fix, or None before its first."""
    if state is None or state.fix is None:
        return None
    return {"ts": iso_ms(state.fix.ts_ms), "lat": state.fix.lat, "lon": state.fix.lon}


def converted(coord_sys: CoordSys | None) -> CoordSys | None:
    """The system to convert WGS84 answers to: None when absent or WGS84 (answered as stored)."""
    return None if coord_sys is None or coord_sys is CoordSys.WGS84 else coord_sys


def position_in(body: dict[str, object], coord_sys: CoordSys | None) -> dict[str, object]:
    """A copy of `body` with its WGS84 `lat` and `lon` (when numbers) in `coord_sys` and a
    `coord_sys` field naming it; `body` itself for None or WGS84, so those answers stay as
    stored. Nothing else of `body` changes (`alert_in` does an alert's `details`)."""
    system = converted(coord_sys)
    if system is None:
        return body
    out = {**body, "coord_sys": system.value}
    lat, lon = body.get("lat"), body.get("lon")
    if isinstance(lat, int | float) and isinstance(lon, int | float):
        out["lat"], out["lon"] = from_wgs84(float(lat), float(lon), system)
    return out


def alert_in(body: dict[str, object], coord_sys: CoordSys | None) -> dict[str, object]:
    """An alert's JSON with its position (`position_in`) and every `{name}_lat`/`{name}_lon`
    pair of its `details` (`from_`, `other_`, `parked_`, `learned_`, ...) in `coord_sys`, so
    one answer holds one system; `body` itself for None or WGS84."""
    out = position_in(body, coord_sys)
    details, system = out.get("details"), converted(coord_sys)
    if system is None or not isinstance(details, dict):
        return out
    moved = dict(details)
    for key, lat in details.items():
        if not key.endswith("_lat"):
            continue
        lon = details.get(key[:-4] + "_lon")
        if isinstance(lat, int | float) and isinstance(lon, int | float):
            moved[key], moved[key[:-4] + "_lon"] = from_wgs84(float(lat), float(lon), system)
    out["details"] = moved
    return out


def status_json(state: DeviceState | None) -> dict[str, object] | None:
    """A device's last status reading, or None before its first."""
    if state is None or state.last_ts[2] < 0:
        return None
    return {"ts": iso_ms(state.last_ts[2]), "ext_power": state.ext_power, "tamper": state.tamper}


def delivery_json(d: Delivery) -> dict[str, object]:
    """A webhook delivery with its alert (as text when the stored body is not JSON)."""
    try:
        alert: object = orjson.loads(d.body)
    except orjson.JSONDecodeError:
        alert = d.body.decode("utf-8", "backslashreplace")
    return {
        "delivery_id": d.delivery_id,
        "hook_id": d.hook_id,
        "alert_id": d.alert_id,
        "alert_type": d.alert_type,
        "order_key": d.order_key,
        "state": d.state.value,
        "attempts": d.attempts,
        "created_at": iso_ms(d.created_ms),
        "next_at": iso_ms(d.next_at_ms),
        "last_error": d.last_error,
        "last_status": d.last_status,
        "alert": alert,
    }
