"""Property tests: the indexed lookups equal brute-force loops over every fence and point."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely import Point

from geofence.fence import Fence, fence_to_feature, parse_fence
from geofence.geo import EARTH_RADIUS_M, haversine_m, metres_to_degrees
from geofence.index import FenceIndex

M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0
# Pairs whose exact distance is this close to the margin may fall either way (rounding).
TOLERANCE_M = 1e-6
SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def to_degrees(lat0: float, lon0: float, x_m: float, y_m: float) -> list[float]:
    """A point x_m east and y_m north of (lat0, lon0), as [lon, lat] (plane approximation)."""
    return [lon0 + x_m / (M_PER_DEG * math.cos(math.radians(lat0))), lat0 + y_m / M_PER_DEG]


@st.composite
def star_ring(
    draw: st.DrawFn, lat0: float, lon0: float, r_min: float, r_max: float, min_vertices: int
) -> list[list[float]]:
    """A simple closed ring around (lat0, lon0): vertices at increasing angles (gaps under
    pi). The closing position is a copy of the first, so a test may change one in place."""
    n = draw(st.integers(min_vertices, 12))
    jitters = draw(st.lists(st.floats(0.0, 0.4), min_size=n, max_size=n))
    radii = draw(st.lists(st.floats(r_min, r_max), min_size=n, max_size=n))
    ring = []
    for i in range(n):
        angle = 2.0 * math.pi * (i + jitters[i]) / n
        ring.append(to_degrees(lat0, lon0, radii[i] * math.cos(angle), radii[i] * math.sin(angle)))
    ring.append(list(ring[0]))
    return ring


@st.composite
def star_polygon(draw: st.DrawFn, lat0: float, lon0: float, scale_m: float) -> list[Any]:
    """Polygon coordinates: a star-shaped shell, sometimes with a hole around its centre."""
    if draw(st.booleans()):
        # With at least 6 vertices every shell edge stays 0.74 r_min from the centre.
        shell = draw(star_ring(lat0, lon0, 0.3 * scale_m, scale_m, 6))
        hole = draw(star_ring(lat0, lon0, 0.05 * scale_m, 0.2 * scale_m, 3))
        return [shell, hole]
    return [draw(star_ring(lat0, lon0, 0.3 * scale_m, scale_m, 3))]


@st.composite
def fence_feature(draw: st.DrawFn) -> dict[str, Any]:
    lat0 = draw(st.floats(-75.0, 75.0))
    lon0 = draw(st.floats(-170.0, 170.0))
    scale_m = draw(st.floats(30.0, 3000.0))
    shape = draw(st.sampled_from(["polygon", "circle", "multipolygon"]))
    kind = draw(st.sampled_from(["zone", "risk_site"]))
    if shape == "circle":
        geometry: dict[str, Any] = {"type": "Point", "coordinates": [lon0, lat0]}
        return {
            "type": "Feature",
            "geometry": geometry,
            "properties": {"kind": kind, "radius_m": scale_m},
        }
    if shape == "polygon":
        geometry = {"type": "Polygon", "coordinates": draw(star_polygon(lat0, lon0, scale_m))}
    else:
        parts = draw(st.integers(2, 3))
        polygons = []
        for k in range(parts):
            # Centres 2.5 scales apart: the parts (each within one scale of its centre) are
            # disjoint.
            lon_k, lat_k = to_degrees(lat0, lon0, 2.5 * scale_m * k, 0.0)
            polygons.append(draw(star_polygon(lat_k, lon_k, scale_m)))
        geometry = {"type": "MultiPolygon", "coordinates": polygons}
    return {"type": "Feature", "geometry": geometry, "properties": {"kind": kind}}


@st.composite
def fences_and_points(draw: st.DrawFn) -> tuple[list[Fence], np.ndarray, np.ndarray]:
    """A few fences clustered in one area (so they overlap) and points around and on them."""
    features = draw(st.lists(fence_feature(), min_size=1, max_size=6))
    fences: list[Fence] = []
    for i, feat in enumerate(features):
        fence = parse_fence(f"f{i}", feat)
        if i > 0 and draw(st.booleans()):
            # Next to the first fence, so that fences overlap and share candidates.
            fence = moved_next_to(fence, fences[0], draw)
        fences.append(fence)
    lats: list[float] = []
    lons: list[float] = []
    min_lon, min_lat, max_lon, max_lat = shapely.total_bounds([f.geometry for f in fences])
    pad_lat = (max_lat - min_lat) * 0.2 + 0.002
    pad_lon = (max_lon - min_lon) * 0.2 + 0.002
    n_random = draw(st.integers(1, 30))
    for _ in range(n_random):
        lats.append(draw(st.floats(min_lat - pad_lat, max_lat + pad_lat)))
        lons.append(draw(st.floats(min_lon - pad_lon, max_lon + pad_lon)))
    # Vertices and edge midpoints: on the boundary, where inside and near are most fragile.
    coords = shapely.get_coordinates([f.geometry for f in fences])
    picks = draw(st.lists(st.integers(0, len(coords) - 2), max_size=8))
    for j in picks:
        a, b = coords[j], coords[j + 1]
        t = draw(st.sampled_from([0.0, 0.5, draw(st.floats(0.0, 1.0))]))
        lons.append(float(a[0] + t * (b[0] - a[0])))
        lats.append(float(a[1] + t * (b[1] - a[1])))
    if draw(st.booleans()):
        lats.append(math.nan)
        lons.append(0.0)
    return fences, np.array(lats), np.array(lons)


def moved_next_to(fence: Fence, anchor: Fence, draw: st.DrawFn) -> Fence:
    """The same fence translated so that its centroid sits near the anchor's."""
    target = anchor.geometry.centroid
    here = fence.geometry.centroid
    a_lon, a_lat, b_lon, b_lat = anchor.geometry.bounds
    dx = target.x - here.x + draw(st.floats(-1.0, 1.0)) * (b_lon - a_lon)
    dy = target.y - here.y + draw(st.floats(-1.0, 1.0)) * (b_lat - a_lat)
    doc = fence_to_feature(fence)
    geometry = doc["geometry"]
    assert isinstance(geometry, dict)
    if geometry["type"] == "Point":
        lon, lat = geometry["coordinates"]
        geometry["coordinates"] = [lon + dx, lat + dy]
    else:
        shifted = shapely.affinity.translate(fence.geometry, dx, dy)
        geometry["coordinates"] = fence_to_feature(
            Fence(fence.fence_id, fence.name, fence.kind, None, None, shifted)
        )["geometry"]["coordinates"]  # type: ignore[index]
    return parse_fence(fence.fence_id, doc)


def tangent_distance_m(fence: Fence, lat0: float, lon0: float) -> float:
    """Exact distance from the point to the fence boundary in the point's tangent plane."""
    cos0 = max(math.cos(math.radians(lat0)), 1e-6)

    def to_plane(c: np.ndarray) -> np.ndarray:
        return np.column_stack([(c[:, 0] - lon0) * cos0 * M_PER_DEG, (c[:, 1] - lat0) * M_PER_DEG])

    return float(
        shapely.distance(shapely.transform(fence.geometry.boundary, to_plane), Point(0, 0))
    )


def brute_lookup(fences: list[Fence], lats: np.ndarray, lons: np.ndarray) -> set[tuple[int, int]]:
    pairs = set()
    for j, fence in enumerate(fences):
        for i in np.flatnonzero(shapely.contains_xy(fence.geometry, lons, lats)):
            pairs.add((int(i), j))
    return pairs


@SETTINGS
@given(fences_and_points())
def test_lookup_equals_brute_force(case: tuple[list[Fence], np.ndarray, np.ndarray]) -> None:
    fences, lats, lons = case
    index = FenceIndex.build(fences)
    point_idx, fence_idx = index.lookup(lats, lons)
    pairs = list(zip(point_idx.tolist(), fence_idx.tolist(), strict=True))
    assert pairs == sorted(set(pairs))
    assert set(pairs) == brute_lookup(fences, lats, lons)
    for i in range(len(lats)):
        expected = sorted(fences[j].fence_id for p, j in pairs if p == i)
        assert index.containing(float(lats[i]), float(lons[i])) == expected


@SETTINGS
@given(
    fences_and_points(),
    st.sampled_from([0.0, 5.0, 25.0, 100.0, 400.0]) | st.floats(0, 500),
    st.data(),
)
def test_lookup_margin_equals_brute_force(
    case: tuple[list[Fence], np.ndarray, np.ndarray], margin_m: float, data: st.DataObject
) -> None:
    fences, lats, lons = case
    # Points about one margin away from boundary vertices: where the degree bounds cannot
    # decide and the exact distance must.
    coords = shapely.get_coordinates([f.geometry for f in fences])
    extra_lats, extra_lons = [], []
    for j in data.draw(st.lists(st.integers(0, len(coords) - 1), max_size=10)):
        factor = data.draw(st.floats(0.998, 1.002) | st.floats(0.9, 1.1))
        bearing = data.draw(st.floats(0.0, 2.0 * math.pi))
        lon, lat = to_degrees(
            float(coords[j][1]),
            float(coords[j][0]),
            margin_m * factor * math.sin(bearing),
            margin_m * factor * math.cos(bearing),
        )
        extra_lats.append(lat)
        extra_lons.append(lon)
    lats = np.concatenate([lats, extra_lats])
    lons = np.concatenate([lons, extra_lons])
    index = FenceIndex.build(fences)
    found = index.lookup_margin(lats, lons, margin_m)
    got = {
        (p, f): (inside, near)
        for p, f, inside, near in zip(
            found.point_idx.tolist(),
            found.fence_idx.tolist(),
            found.inside.tolist(),
            found.near.tolist(),
            strict=True,
        )
    }
    assert len(got) == len(found)
    inside_pairs = brute_lookup(fences, lats, lons)
    for i in range(len(lats)):
        for j, fence in enumerate(fences):
            if math.isnan(lats[i]):
                assert (i, j) not in got
                continue
            distance_m = tangent_distance_m(fence, float(lats[i]), float(lons[i]))
            inside = (i, j) in inside_pairs
            near = distance_m <= margin_m
            if abs(distance_m - margin_m) <= TOLERANCE_M:
                if (i, j) in got:
                    assert got[i, j][0] == inside
                continue
            if inside or near:
                assert got.get((i, j)) == (inside, near), (i, j, distance_m, margin_m)
            else:
                assert (i, j) not in got, (i, j, distance_m, margin_m)
    # hits() is the same answer, grouped per point and sorted by fence id.
    hits = index.hits(lats, lons, margin_m)
    assert len(hits) == len(lats)
    for i, point_hits in enumerate(hits):
        expected = sorted(
            (fences[f].fence_id, inside, near) for (p, f), (inside, near) in got.items() if p == i
        )
        assert [(h.fence_id, h.inside, h.near) for h in point_hits] == expected


@SETTINGS
@given(st.lists(fence_feature(), min_size=1, max_size=8), st.data())
def test_edits_equal_a_fresh_build(features: list[dict[str, Any]], data: st.DataObject) -> None:
    fences = [parse_fence(f"f{i % 5}", feat) for i, feat in enumerate(features)]
    split = data.draw(st.integers(0, len(fences)))
    dropped = data.draw(st.sets(st.sampled_from([f"f{i}" for i in range(6)])))
    index = FenceIndex.build(fences[:split])
    before = index.fences
    edited = index.with_fences(fences[split:]).without(dropped)
    assert index.fences == before
    by_id = {f.fence_id: f for f in fences}
    expected = {k: v for k, v in by_id.items() if k not in dropped}
    assert dict(edited.by_id) == expected
    assert list(edited.ids) == [f.fence_id for f in edited.fences]


@SETTINGS
@given(
    st.floats(-89.99, 89.99),
    st.floats(-179.0, 179.0),
    st.floats(0.0, 50_000.0),
    st.floats(0.0, 360.0),
    st.floats(0.0, 1.0),
)
def test_metres_to_degrees_box_holds_the_disc(
    lat: float, lon: float, radius_m: float, bearing: float, fraction: float
) -> None:
    dlat, dlon = metres_to_degrees(lat, radius_m)
    distance = radius_m * fraction
    # Great-circle destination on the sphere (the haversine metric).
    phi1, lam1, theta = math.radians(lat), math.radians(lon), math.radians(bearing)
    delta = distance / EARTH_RADIUS_M
    phi2 = math.asin(
        math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(theta)
    )
    lam2 = lam1 + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(phi1),
        math.cos(delta) - math.sin(phi1) * math.sin(phi2),
    )
    lat2, lon2 = math.degrees(phi2), math.degrees(lam2)
    # The destination formula itself rounds by ~1e-12 degrees near the poles.
    tolerance_deg = 1e-10
    assert haversine_m(lat, lon, lat2, lon2) <= radius_m + 1e-4
    assert abs(lat2 - lat) <= dlat + tolerance_deg
    assert abs((lon2 - lon + 180.0) % 360.0 - 180.0) <= dlon + tolerance_deg
    # The tangent-plane disc: x = dlon cos(lat) R pi/180, y = dlat R pi/180.
    x_m, y_m = distance * math.sin(theta), distance * math.cos(theta)
    cos0 = max(math.cos(math.radians(lat)), 1e-6)
    assert abs(y_m / M_PER_DEG) <= dlat
    if dlon < 360.0:  # 360 means every longitude: the disc reaches over a pole
        assert abs(x_m / (M_PER_DEG * cos0)) <= dlon
