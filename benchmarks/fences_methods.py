"""The fence lookup benchmark's reference answers and how two answers are compared.

A method's answer is a set of (point, fence) pairs, encoded as sorted keys so that two
answers compare with one `array_equal`. `naive_lookup` is method (a), the brute-force loop
the raw STRtree reference is checked against; `brute_margin` is the brute-force check of
`FenceIndex.lookup_margin`'s near pairs.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry

from benchmarks.common import rate
from geofence.geo import METRES_PER_DEGREE, cos_lat_np, tangent_plane_coords
from geofence.index import MarginHits

Pairs = NDArray[np.int64]
"""(point, fence) pairs encoded as sorted keys `point * n_fences + fence`."""


@dataclass(slots=True)
class MethodResult:
    """One method at one fence count: what it was timed on and whether its answer was right."""

    method: str
    points: int
    seconds: list[float] = field(default_factory=list)
    pairs: int = 0
    check: str = "not run"
    note: str = ""

    @property
    def ok(self) -> bool:
        """True when the answer was checked equal to the reference."""
        return self.check == "ok"

    @property
    def median_s(self) -> float:
        """Median of the timed runs."""
        return statistics.median(self.seconds) if self.seconds else math.nan

    @property
    def points_per_s(self) -> float | None:
        """Points per second (median run), or None if unchecked or wrong: never report those."""
        if not self.ok or not self.seconds:
            return None
        return rate(self.points, self.median_s)

    def as_json(self) -> dict[str, object]:
        """The result as a JSON object."""
        pps = self.points_per_s
        return {
            "method": self.method,
            "points": self.points,
            "seconds": [round(s, 6) for s in self.seconds],
            "median_s": round(self.median_s, 6) if self.seconds else None,
            "points_per_s": round(pps, 1) if pps is not None else None,
            "pairs": self.pairs,
            "check": self.check,
            "note": self.note,
        }


def keys(point_idx: NDArray[np.integer], fence_idx: NDArray[np.integer], n_fences: int) -> Pairs:
    """Sorted pair keys, so that two answers compare with one `array_equal`."""
    k = point_idx.astype(np.int64) * n_fences + fence_idx.astype(np.int64)
    k.sort()
    return k


def compare(got: Pairs, want: Pairs, what: str) -> str:
    """'ok', or what differs between two pair sets (counts and a few example keys)."""
    if got.shape == want.shape and np.array_equal(got, want):
        return "ok"
    missing = np.setdiff1d(want, got)
    extra = np.setdiff1d(got, want)
    return (
        f"WRONG {what}: {len(got)} pairs, reference {len(want)}; "
        f"missing {len(missing)} (e.g. {missing[:3].tolist()}), "
        f"extra {len(extra)} (e.g. {extra[:3].tolist()})"
    )


def timed(func: Callable[[], object]) -> tuple[float, object]:
    """Seconds taken by `func()` and its result."""
    start = time.perf_counter()
    out = func()
    return time.perf_counter() - start, out


def naive_lookup(geoms: Sequence[BaseGeometry], points: Sequence[BaseGeometry]) -> Pairs:
    """Brute force: for each point, a Python loop over every (prepared) fence's `contains`."""
    found: list[tuple[int, int]] = []
    for i, point in enumerate(points):
        for j, geom in enumerate(geoms):
            if geom.contains(point):
                found.append((i, j))
    arr = np.array(found, dtype=np.int64).reshape(-1, 2)
    return keys(arr[:, 0], arr[:, 1], len(geoms))


def brute_margin(
    geoms: NDArray[np.object_],
    lats: NDArray[np.float64],
    lons: NDArray[np.float64],
    margin_m: float,
) -> set[tuple[int, int, bool, bool]]:
    """(point, fence, inside, near) by brute force over every fence, with the metric of
    `FenceIndex` (distance to the boundary in the tangent plane at the point)."""
    bounds = shapely.bounds(geoms)
    boundaries = shapely.boundary(geoms)
    origin = shapely.Point(0.0, 0.0)
    out: set[tuple[int, int, bool, bool]] = set()
    for i, (lat, lon) in enumerate(zip(lats.tolist(), lons.tolist(), strict=True)):
        dlat = margin_m / METRES_PER_DEGREE * 1.01
        dlon = dlat / float(cos_lat_np(lat))
        cand = np.flatnonzero(
            (bounds[:, 0] <= lon + dlon)
            & (bounds[:, 2] >= lon - dlon)
            & (bounds[:, 1] <= lat + dlat)
            & (bounds[:, 3] >= lat - dlat)
        )
        if not len(cand):
            continue
        inside = shapely.contains_xy(geoms[cand], lon, lat)

        def to_plane(
            c: NDArray[np.float64], lat: float = lat, lon: float = lon
        ) -> NDArray[np.float64]:
            x, y = tangent_plane_coords(c[:, 1], c[:, 0], lat, lon)
            return np.column_stack([x, y])

        dist = shapely.distance(shapely.transform(boundaries[cand], to_plane), origin)
        near = dist <= margin_m
        for f, ins, nr in zip(cand.tolist(), inside.tolist(), near.tolist(), strict=True):
            if ins or nr:
                out.add((i, f, bool(ins), bool(nr)))
    return out


def margin_set(hits: MarginHits, below: int) -> set[tuple[int, int, bool, bool]]:
    """The margin pairs of points with index < `below`, as a set."""
    sel = hits.point_idx < below
    return set(
        zip(
            hits.point_idx[sel].tolist(),
            hits.fence_idx[sel].tolist(),
            hits.inside[sel].tolist(),
            hits.near[sel].tolist(),
            strict=True,
        )
    )
