"""Route of `/v1/devices/{device_id}/track`: where a car went, from its stored gps fixes
(DESIGN §9 "Console").

The fixes of `[since, until)` (default: the last 24 hours, at most 31 days), oldest
first, thinned to at most `max_points` (default 2000, at most 10000) with their shape kept
(`engine.api.downsample`). A period holding more than `MAX_FIXES` fixes is first thinned
by the store to the first fix of each of `MAX_FIXES` equal time buckets (and the last fix),
so that no answer reads more than that into memory; `thinned` says so.

Telemetry is keyed (ts_ms, device_id, stream), time first for the ingest's sake; since
schema version 7 its gps rows are also indexed by (device_id, ts_ms), so a track reads its
own car's rows only (~1 ms for 100 fixes among 1M rows, against 180 ms on SQLite and 80 ms
on PostgreSQL by the key, which reads every car's rows of the period). The index costs the
writes 40 % on SQLite and 31 % on PostgreSQL (`engine.store.console_schema`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import numpy as np
from fastapi import FastAPI, Query
from starlette.responses import Response

from alerts.model import iso_ms
from engine.api.context import ApiContext
from engine.api.downsample import downsample
from engine.api.openapi import error_responses
from engine.api.problems import JsonResponse, bad_parameter
from engine.api.schemas import (
    PositionCoordSysParam,
    converted,
    parse_coord_sys_param,
    parse_since_ms,
)
from engine.store.console_types import TrackPoint
from geofence.coords import CoordSys, from_wgs84_np

DEFAULT_POINTS = 2000
MAX_POINTS = 10_000
MAX_FIXES = 100_000
DAY_MS = 86_400_000
MAX_TRACK_MS = 31 * DAY_MS  # a car page's longest period: each day scans the fleet's rows
MAX_PERIOD_MS = 366 * DAY_MS
MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: the last time ISO-8601 writes

TimeParam = Annotated[str | None, Query(description="Epoch ms or ISO-8601 with offset.")]


def parse_period(
    since: str | None, until: str | None, now_ms: int, longest_ms: int = MAX_PERIOD_MS
) -> tuple[int, int]:
    """`[since, until)` in epoch ms: `until` defaults to now, `since` to a day before it;
    a 400 naming the parameter for a period that is empty, reversed or longer than
    `longest_ms`."""
    until_ms = parse_since_ms(until, "until")
    until_ms = now_ms if until_ms is None else until_ms
    since_ms = parse_since_ms(since)
    since_ms = max(0, until_ms - DAY_MS) if since_ms is None else since_ms
    for name, value in (("until", until_ms), ("since", since_ms)):
        if not 0 <= value <= MAX_EPOCH_MS:
            detail = f"{name} must be between 1970 and 9999 (epoch ms 0 to {MAX_EPOCH_MS})"
            raise bad_parameter(name, detail)
    if until_ms <= since_ms:
        raise bad_parameter("until", f"until ({iso_ms(until_ms)}) must be after since")
    if until_ms - since_ms > longest_ms:
        detail = f"the period from since to until is longer than {longest_ms // DAY_MS} days"
        raise bad_parameter("since", detail)
    return since_ms, until_ms


def add_track_routes(app: FastAPI, api: ApiContext) -> None:
    """Register the track route."""

    @app.get(
        "/v1/devices/{device_id}/track",
        summary="A tracker's stored fixes over a period, thinned keeping turning points",
        tags=["devices"],
        responses=error_responses(400),
    )
    def get_track(
        device_id: str,
        since: TimeParam = None,
        until: TimeParam = None,
        max_points: Annotated[
            str | None,
            Query(description=f"At most this many points, 2 to {MAX_POINTS} (default 2000)."),
        ] = None,
        coord_sys: PositionCoordSysParam = None,
    ) -> Response:
        """`items`: `{ts, lat, lon, speed_kmh}` oldest first, with the first and last fix of
        the period and its turning points; `fixes`: how many are stored in the period.
        `lat`/`lon` in the `coord_sys` asked for (thinned in WGS84, converted after)."""
        points = _max_points(max_points)
        system = converted(parse_coord_sys_param(coord_sys))
        since_ms, until_ms = parse_period(since, until, api.engine.now_ms(), MAX_TRACK_MS)
        track = api.store.track(device_id, since_ms, until_ms, MAX_FIXES)
        kept = downsample(track.points, points)
        body: dict[str, object] = {
            "device_id": device_id,
            "since": iso_ms(since_ms),
            "until": iso_ms(until_ms),
            "fixes": track.fixes,
            "thinned": track.thinned or len(kept) < len(track.points),
            "items": _items(kept, system),
            "next": None,
        }
        if system is not None:
            body["coord_sys"] = system.value
        return JsonResponse(body)


def _items(kept: Sequence[TrackPoint], system: CoordSys | None) -> list[dict[str, object]]:
    """The track's points as JSON, their WGS84 `lat`/`lon` in `system` (None: as stored);
    converted in one vectorized call, not point by point in Python (up to 10,000 points)."""
    if system is None:
        return [
            {"ts": iso_ms(p.ts_ms), "lat": p.lat, "lon": p.lon, "speed_kmh": p.speed_kmh}
            for p in kept
        ]
    n = len(kept)
    lats, lons = from_wgs84_np(
        np.fromiter((p.lat for p in kept), np.float64, n),
        np.fromiter((p.lon for p in kept), np.float64, n),
        system,
    )
    return [
        {"ts": iso_ms(p.ts_ms), "lat": lat, "lon": lon, "speed_kmh": p.speed_kmh}
        for p, lat, lon in zip(kept, lats.tolist(), lons.tolist(), strict=True)
    ]


def _max_points(value: str | None) -> int:
    if value is None:
        return DEFAULT_POINTS
    if not (
        value.isascii() and value.isdigit() and len(value) <= 6 and 2 <= int(value) <= MAX_POINTS
    ):
        detail = f"max_points must be an integer from 2 to {MAX_POINTS}, got {value!r}"
        raise bad_parameter("max_points", detail)
    return int(value)
