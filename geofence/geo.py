"""Distances and shapes on the Earth, in metres and WGS84 degrees (x = lon, y = lat).

Two metrics are used and each says which it is:
- great-circle distance on a sphere of radius `EARTH_RADIUS_M` (`haversine_m`), for "how far
  apart are these two fixes";
- the local tangent plane centred on a point (`tangent_plane_coords`), for "how far is this
  fix from that fence boundary". Within a few kilometres the two agree to well under 0.1 %.
Geodesic circles are built on the WGS84 ellipsoid (pyproj), so a radius is exact.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pyproj import Geod
from shapely import Polygon

EARTH_RADIUS_M = 6_371_008.8
"""Mean Earth radius (IUGG), metres."""

METRES_PER_DEGREE = EARTH_RADIUS_M * math.pi / 180.0
"""Length of one degree of arc on the sphere of radius `EARTH_RADIUS_M` (~111 195 m)."""

COS_LAT_MIN = 1e-6
"""Floor for cos(lat), so that metric <-> degree conversions stay finite at the poles."""

_WGS84 = Geod(ellps="WGS84")
# Relative slack that keeps bounding boxes safe against floating-point rounding.
_SLACK = 1e-9


def cos_lat(lat: float) -> float:
    """cos(lat) for lat in degrees, floored at `COS_LAT_MIN` near the poles."""
    return max(math.cos(math.radians(lat)), COS_LAT_MIN)


def cos_lat_np(lats: ArrayLike) -> NDArray[np.float64]:
    """Vectorized `cos_lat`."""
    return np.maximum(np.cos(np.radians(np.asarray(lats, dtype=np.float64))), COS_LAT_MIN)


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two WGS84 points given in degrees."""
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    s_dlat = math.sin((p2 - p1) * 0.5)
    s_dlon = math.sin(math.radians(lon2 - lon1) * 0.5)
    a = s_dlat * s_dlat + math.cos(p1) * math.cos(p2) * s_dlon * s_dlon
    return 2.0 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, a)))


def haversine_m_np(
    lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike
) -> NDArray[np.float64]:
    """Vectorized `haversine_m` (arguments broadcast), metres."""
    p1 = np.radians(np.asarray(lat1, dtype=np.float64))
    p2 = np.radians(np.asarray(lat2, dtype=np.float64))
    dlon = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    s_dlat = np.sin((p2 - p1) * 0.5)
    s_dlon = np.sin(dlon * 0.5)
    a = s_dlat * s_dlat + np.cos(p1) * np.cos(p2) * s_dlon * s_dlon
    result: NDArray[np.float64] = 2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(1.0, a)))
    return result


def metres_to_degrees(lat: float, metres: float) -> tuple[float, float]:
    """Half-size (dlat, dlon) in degrees of a box around a point at `lat` holding every point
    within `metres` of it, by great-circle distance and by the local tangent plane.

    Never too small: it covers both metrics, rounding, and the poles (dlon grows to 360, i.e.
    every longitude, where cos(lat) is floored). dlat is capped at 180 and dlon at 360.
    """
    if not metres >= 0.0 or math.isinf(metres):
        msg = f"metres must be finite and >= 0, got {metres!r}"
        raise ValueError(msg)
    arc = metres / EARTH_RADIUS_M  # radians
    dlat = math.degrees(arc)
    c = cos_lat(lat)
    tangent_dlon = dlat / c
    s = math.sin(min(arc, math.pi / 2))
    # The widest longitude of a spherical cap; a cap reaching a pole spans every longitude.
    sphere_dlon = math.degrees(math.asin(s / c)) if s < c else 360.0
    dlon = max(tangent_dlon, sphere_dlon)
    return (
        min(dlat * (1.0 + _SLACK) + 1e-12, 180.0),
        min(dlon * (1.0 + _SLACK) + 1e-12, 360.0),
    )


def metres_to_degrees_np(
    lats: ArrayLike, metres: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Vectorized `metres_to_degrees` over latitudes (one distance for all)."""
    dlat_s, _ = metres_to_degrees(0.0, metres)
    arc = metres / EARTH_RADIUS_M
    c = cos_lat_np(lats)
    tangent_dlon = math.degrees(arc) / c
    s = math.sin(min(arc, math.pi / 2))
    ratio = s / c
    sphere_dlon = np.where(ratio < 1.0, np.degrees(np.arcsin(np.minimum(ratio, 1.0))), 360.0)
    dlon = np.minimum(np.maximum(tangent_dlon, sphere_dlon) * (1.0 + _SLACK) + 1e-12, 360.0)
    dlat = np.full_like(dlon, dlat_s)
    return dlat, dlon


def tangent_plane_coords(
    lats: ArrayLike, lons: ArrayLike, lat0: ArrayLike, lon0: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(x, y) in metres of points in the tangent plane centred on (lat0, lon0), broadcast.

    x = (lon - lon0) * cos(lat0) * R * pi/180, y = (lat - lat0) * R * pi/180, with cos(lat0)
    floored by `cos_lat`. Longitudes are not wrapped at +-180 (fences never cross it).
    """
    lat0_a = np.asarray(lat0, dtype=np.float64)
    x = (
        (np.asarray(lons, dtype=np.float64) - np.asarray(lon0, dtype=np.float64))
        * cos_lat_np(lat0_a)
        * METRES_PER_DEGREE
    )
    y = (np.asarray(lats, dtype=np.float64) - lat0_a) * METRES_PER_DEGREE
    return x, y


def geodesic_circle(lat: float, lon: float, radius_m: float, segments: int = 64) -> Polygon:
    """A polygon with `segments` vertices exactly `radius_m` metres (WGS84 geodesic) from the
    centre, counter-clockwise, x = lon, y = lat.

    Raises ValueError for a bad centre or radius, or a circle that would cross the
    antimeridian or reach a pole (a lon/lat polygon cannot represent either).
    """
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):  # also rejects NaN
        msg = f"circle centre ({lat!r}, {lon!r}) is not a valid lat, lon"
        raise ValueError(msg)
    if not (math.isfinite(radius_m) and radius_m > 0.0):
        msg = f"circle radius_m must be finite and > 0, got {radius_m!r}"
        raise ValueError(msg)
    if segments < 3:
        msg = f"a circle needs at least 3 segments, got {segments}"
        raise ValueError(msg)
    pole_lat = 90.0 if lat >= 0.0 else -90.0
    _, _, to_pole_m = _WGS84.inv(lon, lat, lon, pole_lat)
    if to_pole_m <= radius_m:
        pole = "North" if pole_lat > 0 else "South"
        msg = (
            f"circle of radius {radius_m} m at ({lat}, {lon}) reaches the {pole} Pole "
            f"({to_pole_m:.0f} m away): use a polygon"
        )
        raise ValueError(msg)
    vertices = _circle_vertices(np.array([lat]), np.array([lon]), np.array([radius_m]), segments)
    lons = vertices[0, :, 0]
    if lons.max() > 180.0 or lons.min() < -180.0:
        msg = (
            f"circle of radius {radius_m} m at ({lat}, {lon}) crosses the antimeridian "
            "(longitude +-180): split it into two polygons"
        )
        raise ValueError(msg)
    return Polygon(vertices[0])


def geodesic_circles(
    lats: ArrayLike, lons: ArrayLike, radii_m: ArrayLike, segments: int = 64
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """The vertices of many `geodesic_circle`s in one pyproj call, bit for bit the same, as
    an array (circle, vertex, lon/lat), open; and whether each fits, i.e. neither reaches a pole
    nor crosses the antimeridian (`geodesic_circle` refuses those, saying why).

    Centres and radii must be ones `geodesic_circle` accepts: finite, in range, radius > 0.
    """
    lats_a = np.asarray(lats, dtype=np.float64)
    lons_a = np.asarray(lons, dtype=np.float64)
    radii_a = np.asarray(radii_m, dtype=np.float64)
    _, _, to_pole_m = _WGS84.inv(lons_a, lats_a, lons_a, np.where(lats_a >= 0.0, 90.0, -90.0))
    vertices = _circle_vertices(lats_a, lons_a, radii_a, segments)
    x = vertices[:, :, 0]
    fits = (np.asarray(to_pole_m) > radii_a) & (x.max(axis=1) <= 180.0) & (x.min(axis=1) >= -180.0)
    return vertices, fits


def _circle_vertices(
    lats: NDArray[np.float64],
    lons: NDArray[np.float64],
    radii_m: NDArray[np.float64],
    segments: int,
) -> NDArray[np.float64]:
    """(circle, vertex, lon/lat) of circles counter-clockwise from north, longitudes unwrapped
    around each centre. pyproj solves each vertex on its own and the rest is elementwise IEEE
    arithmetic, so a vertex does not depend on how many circles are computed together."""
    shape = (len(lats), segments)
    azimuths = -360.0 * np.arange(segments, dtype=np.float64) / segments
    centre = lons[:, np.newaxis]
    v_lons, v_lats, _ = _WGS84.fwd(
        np.full(shape, centre),
        np.full(shape, lats[:, np.newaxis]),
        np.full(shape, azimuths),
        np.full(shape, radii_m[:, np.newaxis]),
    )
    vertices = np.empty((*shape, 2), dtype=np.float64)
    vertices[:, :, 0] = centre + ((np.asarray(v_lons) - centre + 180.0) % 360.0 - 180.0)
    vertices[:, :, 1] = v_lats
    return vertices
