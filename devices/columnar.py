"""The columnar decoder: many messages in, one `ReadingBatch` and its rejects out.

Plain gps readings (a `telematics/{device}/gps` object, or array of objects, with a
numeric `ts` and the usual fields) are judged as columns: each field of every element is
taken out in one pass and its type and range checked with numpy, and no `GpsFix` is built
(`ReadingBatch` builds one when asked). Everything else goes through `devices.decode` as
before: other topics and streams, OwnTracks, Traccar, payloads that are not an object or
an array of 1 to 1000 objects, and every message with an element the columns do not
accept outright (a missing or mistyped field, a value out of range, an ISO `ts`, a
`coord_sys`, a stamp from the future). Such a message is decoded again, whole, by the
per-message decoder, so its readings, rejects, reasons, details and counters are exactly
that decoder's, element by element; a message the columns accept yields exactly the
readings that decoder would (tests/test_columnar.py checks both on random payloads).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from itertools import repeat

import numpy as np
import orjson
from numpy.typing import NDArray

from devices.columns import ReadingBatch, ReadingColumns, columns_of
from devices.decode import (
    FUTURE_TOLERANCE_MS,
    MAX_ARRAY_ELEMENTS,
    MAX_INT,
    MAX_PAYLOAD_BYTES,
    MAX_TS_MS,
    MIN_TS_MS,
    Decoded,
    route_of,
)
from devices.readings import Reading, Reject, Stream
from devices.topics import TRACCAR_PREFIX, BadTopic

_FLOAT_MAX = sys.float_info.max
_NUM: frozenset[type] = frozenset({float, int})
_OPT_NUM: frozenset[type] = frozenset({float, int, type(None)})
_OPT_INT: frozenset[type] = frozenset({int, type(None)})
_INT: frozenset[type] = frozenset({int})
_NO_CLOCK = 2**62  # a `now_ms` that judges nothing "in the future"

Full = Callable[[], Decoded]
"""Decodes one message with the per-message decoder (when the columns cannot take it)."""


class ColumnarDecoder:
    """Collects messages, then judges their plain gps elements as columns (`finish`)."""

    def __init__(self) -> None:
        self._objs: list[dict[str, object]] = []  # plain gps elements, in message order
        self._devices: list[str] = []
        self._clocks: list[int] = []  # per element: its message's runtime clock
        self._now: list[int] = []  # per element: the clock "in the future" is judged by
        # per message: (first element, elements, clock, per-message decoder), or what the
        # per-message decoder made of it and its clock
        self._parts: list[tuple[int, int, int, Full] | tuple[Decoded, int]] = []

    def add_bytes(
        self, topic: str, payload: bytes, now_ms: int | None, clock: int, full: Full
    ) -> None:
        """A message as received; `full` decodes it as `devices.inputs.decode_message` does."""
        route = route_of(topic)
        if (
            topic.startswith(TRACCAR_PREFIX)
            or isinstance(route, BadTopic)
            or route.owntracks
            or route.stream is not Stream.GPS
            or type(payload) is not bytes
            or len(payload) > MAX_PAYLOAD_BYTES
        ):
            self._parts.append((full(), clock))
            return
        try:
            value = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self._parts.append((full(), clock))
            return
        self.add_value(topic, value, now_ms, clock, full)

    def add_value(
        self, topic: str, value: object, now_ms: int | None, clock: int, full: Full
    ) -> None:
        """A payload parsed by orjson (a stdlib-parsed one must go to `full`); its readings
        get the runtime clock `clock`, "in the future" is judged by `now_ms`."""
        route = route_of(topic)
        if isinstance(route, BadTopic) or route.owntracks or route.stream is not Stream.GPS:
            self._parts.append((full(), clock))
            return
        now = _NO_CLOCK if now_ms is None else now_ms
        if type(value) is dict:  # the common case: one reading per message
            self._parts.append((len(self._objs), 1, clock, full))
            self._objs.append(value)
            self._devices.append(route.device_id)
            self._clocks.append(clock)
            self._now.append(now)
            return
        if (
            type(value) is list
            and 0 < len(value) <= MAX_ARRAY_ELEMENTS
            and all(type(e) is dict for e in value)
        ):
            count = len(value)
            self._parts.append((len(self._objs), count, clock, full))
            self._objs += value
            self._devices += [route.device_id] * count
            self._clocks += [clock] * count
            self._now += [now] * count
        else:
            self._parts.append((full(), clock))

    def add_decoded(self, decoded: Decoded, clock: int) -> None:
        """A message some other decoder made readings and rejects of."""
        self._parts.append((decoded, clock))

    def finish(self) -> tuple[ReadingBatch, list[int], list[Reject]]:
        """The readings of every message in order, their clocks, and the rejects."""
        judged = _judge_gps(self._objs, self._now)
        ok = judged.ok
        rows: list[int] = []  # an element of `judged`, or -1 - the index in `objects`
        objects: list[Reading] = []
        clocks: list[int] = []
        rejects: list[Reject] = []
        for part in self._parts:
            if len(part) == 4:
                start, count, clock, full = part
                if all(ok[start : start + count]):
                    rows += range(start, start + count)
                    clocks += [clock] * count
                    continue
                decoded = full()
            else:
                decoded, clock = part
            rejects += decoded.rejects
            rows += range(-1 - len(objects), -1 - len(objects) - len(decoded.readings), -1)
            objects += decoded.readings
            clocks += [clock] * len(decoded.readings)
        return _assemble(judged, self._devices, rows, objects), clocks, rejects


class _Judged:
    """The plain gps elements as columns: `ok` where every field passed."""

    __slots__ = ("extra", "ignition", "lat", "lon", "ok", "seq", "speed", "ts")

    def __init__(self, n: int) -> None:
        self.ok: list[bool] = [True] * n
        self.ts: list[int] = []
        self.lat: list[float] = []
        self.lon: list[float] = []
        self.speed: list[float | None] = []
        self.ignition: list[bool | None] = []
        self.seq: list[int | None] = []
        self.extra: list[tuple[float | None, float | None, int | None, float | None, None]] = []


def _types(col: list[object], allowed: frozenset[type]) -> NDArray[np.bool_]:
    """Where a column's values are of an allowed type (exactly: a bool is not an int)."""
    if set(map(type, col)) <= allowed:
        return np.ones(len(col), dtype=np.bool_)
    return np.array([type(v) in allowed for v in col], dtype=np.bool_)


def _numbers(
    col: list[object], lo: float, hi: float, *, required: bool
) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """Where a number field is valid (in lo..hi, or absent when optional), and its values
    as floats (NaN where absent or invalid)."""
    kinds = _types(col, _NUM if required else _OPT_NUM)
    if kinds.all() and required:
        values = np.array(col, dtype=np.float64)
    else:
        nan = math.nan
        values = np.array(
            [v if type(v) is float or type(v) is int else nan for v in col], dtype=np.float64
        )
    inside = (values >= lo) & (values <= hi)
    return kinds & (inside if required else inside | np.isnan(values)), values


def _ints(col: list[object], hi: int, *, required: bool) -> NDArray[np.bool_]:
    """Where an integer field is valid: in 0..hi (MIN..MAX for a `ts`), or absent when
    optional."""
    kinds = _types(col, _INT if required else _OPT_INT)
    values = [v if type(v) is int and -(2**63) <= v <= MAX_INT else -1 for v in col]
    arr = np.array(values, dtype=np.int64)
    lo = MIN_TS_MS if required else 0
    inside = (arr >= lo) & (arr <= hi)
    if not required:
        inside |= np.array([v is None for v in col], dtype=np.bool_)
    return kinds & inside


def _judge_gps(objs: list[dict[str, object]], now: list[int]) -> _Judged:
    """Judge plain gps elements as columns: what `devices.decode` would accept as is."""
    n = len(objs)
    judged = _Judged(n)
    if not n:
        return judged
    ts = [o.get("ts") for o in objs]
    ok = _ints(ts, MAX_TS_MS - 1, required=True)
    ts_arr = np.array([v if type(v) is int and MIN_TS_MS <= v < MAX_TS_MS else 0 for v in ts])
    ok &= ts_arr <= np.array(now, dtype=np.int64) + FUTURE_TOLERANCE_MS
    lat_ok, lat = _numbers([o.get("lat") for o in objs], -90.0, 90.0, required=True)
    lon_ok, lon = _numbers([o.get("lon") for o in objs], -180.0, 180.0, required=True)
    ok &= lat_ok & lon_ok
    optional = (
        ("speed_kmh", 0.0, 1000.0),
        ("heading_deg", 0.0, 360.0),
        ("hdop", 0.0, _FLOAT_MAX),
        ("odometer_km", 0.0, _FLOAT_MAX),
    )
    floats: list[list[float | None]] = []
    for key, lo, hi in optional:
        col = [o.get(key) for o in objs]
        valid, values = _numbers(col, lo, hi, required=False)
        ok &= valid
        floats.append([None if math.isnan(x) else x for x in values.tolist()])  # NaN: absent
    sats = [o.get("sats") for o in objs]
    seq = [o.get("seq") for o in objs]
    ok &= _ints(sats, MAX_INT, required=False) & _ints(seq, MAX_INT, required=False)
    ignition = [o.get("ignition") for o in objs]
    if not set(map(type, ignition)) <= {bool, type(None)}:
        ok &= np.array([v is None or v is True or v is False for v in ignition], dtype=np.bool_)
    if any(o.get("coord_sys") is not None for o in objs):
        ok &= np.array([o.get("coord_sys") is None for o in objs], dtype=np.bool_)
    judged.ok = ok.tolist()
    judged.ts = ts  # type: ignore[assignment]  # ints, where ok
    judged.lat = lat.tolist()
    judged.lon = lon.tolist()
    speed, heading, hdop, odometer = floats
    judged.speed = speed
    judged.ignition = ignition  # type: ignore[assignment]  # bools or None, where ok
    judged.seq = seq  # type: ignore[assignment]  # ints or None, where ok
    judged.extra = list(zip(heading, hdop, sats, odometer, repeat(None), strict=False))  # type: ignore[arg-type]  # ints or None, where ok
    return judged


def _assemble(
    judged: _Judged, devices: list[str], rows: list[int], objects: Sequence[Reading]
) -> ReadingBatch:
    """The batch's columns from the judged elements and the readings built elsewhere."""
    n = len(rows)
    if not objects and rows == list(range(len(judged.ts))):
        cols = _gps_columns(judged, devices)  # the common case: every element, in order
        return ReadingBatch(cols, [None] * n)
    built: list[Reading | None] = [None] * n
    take: list[int] = []
    for pos, row in enumerate(rows):
        if row < 0:
            built[pos] = objects[-1 - row]
        else:
            take.append(row)
    part = _gps_columns(_pick(judged, take), [devices[k] for k in take])
    other = columns_of([r for r in built if r is not None])
    at = np.array([r is None for r in built], dtype=np.bool_)
    merged = _merge(part, other, at)
    return ReadingBatch(merged, built)


def _pick(judged: _Judged, take: list[int]) -> _Judged:
    """The judged elements at `take`, in that order."""
    out = _Judged(len(take))
    out.ts = [judged.ts[k] for k in take]
    out.lat = [judged.lat[k] for k in take]
    out.lon = [judged.lon[k] for k in take]
    out.speed = [judged.speed[k] for k in take]
    out.ignition = [judged.ignition[k] for k in take]
    out.seq = [judged.seq[k] for k in take]
    out.extra = [judged.extra[k] for k in take]
    return out


def _gps_columns(judged: _Judged, devices: list[str]) -> ReadingColumns:
    n = len(judged.ts)
    nan = math.nan
    return ReadingColumns(
        device_ids=devices,
        gps=np.ones(n, dtype=np.bool_),
        ts_ms=np.array(judged.ts, dtype=np.int64),
        lat=np.array(judged.lat, dtype=np.float64),
        lon=np.array(judged.lon, dtype=np.float64),
        speed_kmh=np.array([nan if v is None else v for v in judged.speed], dtype=np.float64),
        ignition=judged.ignition,
        seq=judged.seq,
        ts_list=judged.ts,
        lat_list=judged.lat,
        lon_list=judged.lon,
        speed_list=judged.speed,
        extra=judged.extra,  # type: ignore[arg-type]  # accuracy_m is None for these
    )


def _merge(a: ReadingColumns, b: ReadingColumns, at_a: NDArray[np.bool_]) -> ReadingColumns:
    """Columns with `a`'s rows where `at_a` and `b`'s elsewhere, each in order."""
    n = len(at_a)
    ia = np.flatnonzero(at_a)
    ib = np.flatnonzero(~at_a)

    def arr(x: NDArray[np.generic], y: NDArray[np.generic]) -> NDArray[np.generic]:
        out = np.empty(n, dtype=x.dtype)
        out[ia], out[ib] = x, y
        return out

    def lst(x: list[object], y: list[object]) -> list[object]:
        out = np.empty(n, dtype=object)
        out[ia] = np.fromiter(x, dtype=object, count=len(x))  # tuples stay whole
        out[ib] = np.fromiter(y, dtype=object, count=len(y))
        merged: list[object] = out.tolist()
        return merged

    return ReadingColumns(
        device_ids=lst(a.device_ids, b.device_ids),  # type: ignore[arg-type]
        gps=arr(a.gps, b.gps),  # type: ignore[arg-type]
        ts_ms=arr(a.ts_ms, b.ts_ms),  # type: ignore[arg-type]
        lat=arr(a.lat, b.lat),  # type: ignore[arg-type]
        lon=arr(a.lon, b.lon),  # type: ignore[arg-type]
        speed_kmh=arr(a.speed_kmh, b.speed_kmh),  # type: ignore[arg-type]
        ignition=lst(a.ignition, b.ignition),  # type: ignore[arg-type]
        seq=lst(a.seq, b.seq),  # type: ignore[arg-type]
        ts_list=lst(a.ts_list, b.ts_list),  # type: ignore[arg-type]
        lat_list=lst(a.lat_list, b.lat_list),  # type: ignore[arg-type]
        lon_list=lst(a.lon_list, b.lon_list),  # type: ignore[arg-type]
        speed_list=lst(a.speed_list, b.speed_list),  # type: ignore[arg-type]
        extra=lst(a.extra, b.extra),  # type: ignore[arg-type]
    )
