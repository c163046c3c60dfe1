"""A track thinned to a number of points that keeps its shape: first, last and turning
points (`GET /v1/devices/{id}/track`).

Douglas-Peucker, top-down with a budget: start from the first and last fix; repeatedly
split the segment whose farthest fix (perpendicular distance to the segment, in metres of
a local equirectangular projection) is farthest of all, keeping that fix, until
`max_points` are kept or every fix left lies on its segment. A heap orders the segments,
so the points kept are always the most significant ones, which a fixed tolerance could
not promise for a given count. Each split scans its segment once (numpy): at most
`max_points` scans of at most `n` fixes.

Why not uniform by time: a car parked all night then driven for ten minutes would keep
mostly identical night fixes and lose the drive's corners.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

EARTH_RADIUS_M = 6_371_008.8


class Located(Protocol):
    """Anything with WGS84 `lat` and `lon` in degrees."""

    @property
    def lat(self) -> float:
        """Latitude, degrees."""
        ...

    @property
    def lon(self) -> float:
        """Longitude, degrees."""
        ...


P = TypeVar("P", bound=Located)
Floats = npt.NDArray[np.float64]


def downsample(points: Sequence[P], max_points: int) -> list[P]:
    """At most `max_points` (>= 2) of `points`, in order, with the first and the last; all
    of them when there are no more than `max_points`."""
    if max_points < 2:
        msg = f"max_points must be at least 2 (the first and last fix), got {max_points}"
        raise ValueError(msg)
    n = len(points)
    if n <= max_points:
        return list(points)
    x, y = _project(points)
    keep = [0, n - 1]
    heap: list[tuple[float, int, int, int]] = []
    _push(heap, x, y, 0, n - 1)
    while heap and len(keep) < max_points:
        negative, start, end, farthest = heapq.heappop(heap)
        if negative >= 0.0:
            break  # the fixes left lie on their segments: nothing more to keep
        keep.append(farthest)
        _push(heap, x, y, start, farthest)
        _push(heap, x, y, farthest, end)
    return [points[i] for i in sorted(keep)]


def _project(points: Sequence[Located]) -> tuple[Floats, Floats]:
    """Metres east and north in an equirectangular projection at the points' mean latitude
    (longitudes unwrapped across the antimeridian)."""
    lat = np.radians(np.fromiter((p.lat for p in points), np.float64, len(points)))
    lon = np.unwrap(np.radians(np.fromiter((p.lon for p in points), np.float64, len(points))))
    scale = math.cos(float(np.mean(lat)))
    return lon * scale * EARTH_RADIUS_M, lat * EARTH_RADIUS_M


def _push(heap: list[tuple[float, int, int, int]], x: Floats, y: Floats, a: int, b: int) -> None:
    """Queue segment a..b by the distance of its farthest inner point from the segment."""
    if b - a < 2:
        return
    px, py = x[a + 1 : b], y[a + 1 : b]
    dx, dy = x[b] - x[a], y[b] - y[a]
    length2 = dx * dx + dy * dy
    if length2 > 0.0:
        t = np.clip(((px - x[a]) * dx + (py - y[a]) * dy) / length2, 0.0, 1.0)
    else:
        t = np.zeros_like(px)
    distance = np.hypot(px - (x[a] + t * dx), py - (y[a] + t * dy))
    i = int(np.argmax(distance))
    heapq.heappush(heap, (-float(distance[i]), a, b, a + 1 + i))
