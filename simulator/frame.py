"""The simulated city's flat frame: metres on a street grid, and the WGS84 degrees it maps to.

The city is laid out in `(u, v)` metres along its street grid, which is turned by
`rotation_deg` (counter-clockwise) from east/north. An equirectangular projection at the
origin maps that plane to latitude and longitude: over a 30 km city it is off by a few metres,
far below the margins the simulator keeps from fence boundaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EARTH_RADIUS_M = 6_371_008.8
METRES_PER_DEGREE = EARTH_RADIUS_M * math.pi / 180.0

Point = tuple[float, float]
"""A point `(u, v)` in metres in the street-grid frame."""


@dataclass(frozen=True, slots=True)
class LocalFrame:
    """A street-grid frame centred on (`lat0`, `lon0`), turned by `rotation_deg` from east."""

    lat0: float
    lon0: float
    rotation_deg: float = 0.0

    def to_latlon(self, u: float, v: float) -> tuple[float, float]:
        """WGS84 (lat, lon) degrees of the grid point (`u`, `v`) metres."""
        x, y = self._turn(u, v)
        lat = self.lat0 + y / METRES_PER_DEGREE
        lon = self.lon0 + x / (METRES_PER_DEGREE * math.cos(math.radians(self.lat0)))
        return lat, lon

    def to_grid(self, lat: float, lon: float) -> Point:
        """The grid point (`u`, `v`) metres of WGS84 (`lat`, `lon`): the inverse of `to_latlon`."""
        x = (lon - self.lon0) * METRES_PER_DEGREE * math.cos(math.radians(self.lat0))
        y = (lat - self.lat0) * METRES_PER_DEGREE
        th = math.radians(self.rotation_deg)
        return x * math.cos(th) + y * math.sin(th), -x * math.sin(th) + y * math.cos(th)

    def compass_deg(self, grid_angle_deg: float) -> float:
        """Compass heading (clockwise from north, 0..360) of a direction given in the grid frame."""
        east_angle = grid_angle_deg + self.rotation_deg  # counter-clockwise from east
        return (90.0 - east_angle) % 360.0

    def _turn(self, u: float, v: float) -> tuple[float, float]:
        th = math.radians(self.rotation_deg)
        return u * math.cos(th) - v * math.sin(th), u * math.sin(th) + v * math.cos(th)


def distance_m(a: Point, b: Point) -> float:
    """Straight-line distance between two grid points, metres."""
    return math.hypot(b[0] - a[0], b[1] - a[1])


def destination(
    lat: float, lon: float, bearing_deg: float, distance_m: float
) -> tuple[float, float]:
    """The point `distance_m` metres from (`lat`, `lon`) along a great circle at `bearing_deg`."""
    d = distance_m / EARTH_RADIUS_M
    th = math.radians(bearing_deg)
    p1, l1 = math.radians(lat), math.radians(lon)
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(th))
    l2 = l1 + math.atan2(
        math.sin(th) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2)
    )
    return math.degrees(p2), (math.degrees(l2) + 540.0) % 360.0 - 180.0
